"""A subscriber's link to its connection: what the shell holds for one subscriber.

The application holds a :class:`~wsfanout.Subscriber`; the hub, its fast path and the
relay hold the :class:`Link` behind it: the outbox, the connection and its transport,
the frames corked for it, and its relay task. Every step the shell takes for one
subscriber is a method here, written once; ``Fanout.fan_out`` inlines :meth:`offer`
for speed (``tests/unit/test_fast_path.py`` checks that both write the same).
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import TYPE_CHECKING

from websockets.asyncio.connection import Connection
from websockets.protocol import State

from .._core.contract import BLOCKED, cork_is_full, plan_wait, write_buffer
from .._core.control import read_ack
from .._core.decision import Close, LevelStep
from .._core.drain import KernelView
from .._core.errors import ConfigError
from .._core.frames import OP_TEXT
from .._core.message import Message, make_control
from .._core.outbox import Action, CloseAction, Offer, Outbox, Wait, Write
from .._core.policy import Policy
from .._core.validate import MAX_REASON_BYTES
from .extensions import shared_deflate
from .relay import run_relay
from .sockets import (
    abort_with_reset,
    direct_fd,
    is_tcp,
    kernel_view,
    send_now,
    set_notsent_lowat,
)

if TYPE_CHECKING:
    from .cohort import Cohort
    from .fanout import Fanout
    from .subscriber import Subscriber

__all__ = ["Link"]

logger = logging.getLogger("wsfanout")

OPEN = State.OPEN


class Link:
    """One subscriber's outbox, connection, corked frames and relay task.

    Internal to the shell: its attributes are the shell's interface, read by the fast
    path, the relay and the hub (never by applications, which hold the subscriber).
    """

    # Slots keep the attributes the fast path reads in the object itself: one memory
    # block per subscriber instead of two, which shows at thousands of subscribers.
    __slots__ = (
        "_outbox",
        "attached",
        "beat_at",
        "close_timeout",
        "cohort",
        "deflate",
        "due",
        "fanout",
        "fd",
        "flush_waiting",
        "hears_acks",
        "held",
        "held_bytes",
        "joined_seq",
        "plain",
        "policy_name",
        "protocol",
        "relay",
        "sock",
        "stateful",
        "subscriber",
        "tick",
        "topics",
        "transport",
        "v1",
        "wake",
        "websocket",
    )

    def __init__(
        self,
        fanout: Fanout,
        websocket: Connection,
        policy: Policy,
        topics: frozenset[str] | None,
        close_timeout: float,
        framing: str = "raw",
        policy_name: str = "custom",
        notsent_lowat: int | None = None,
    ) -> None:
        from .subscriber import Subscriber  # the handle wraps the link it is given

        self.fanout = fanout
        self.websocket = websocket
        self.transport = websocket.transport
        self.fd = direct_fd(websocket.transport)
        """The socket written to directly while the transport buffers nothing, or None:
        always through the transport (``sockets.py``)."""
        self.protocol = websocket.protocol
        low, high = websocket.transport.get_write_buffer_limits()
        # A TCP connection's kernel holds unsent bytes below the write buffer: bound them
        # with the low-water mark, and let a policy that decides read what is left.
        sock = websocket.transport.get_extra_info("socket")
        self.sock = sock if is_tcp(sock) else None
        """The connection's TCP socket (asyncio's ``TransportSocket``), or None."""
        if self.sock is not None and notsent_lowat is not None:
            set_notsent_lowat(self.sock, notsent_lowat)
        probe = self.kernel_view if self.sock is not None else None
        self._outbox = Outbox(policy, high=high, low=low, kernel=probe)
        self.cohort: Cohort | None = None
        """The cohort this link is a member of, while it is (``cohort.py``)."""
        self.topics = topics
        self.policy_name = policy_name
        """The label of this subscriber's policy in the hub's monitor and metrics."""
        self.attached = True
        """Offered messages: in the fan-out's index, until closing or gone."""
        self.relay: asyncio.Task[None] | None = None
        """The relay task, while the subscriber is behind or closing."""
        self.wake: asyncio.Future[None] | None = None
        """What the relay waits on, while it waits."""
        self.due: int | None = None
        """The hub's deadline (``timers.py``) this link waits for, if it waits for one."""
        self.close_timeout = close_timeout
        # How frames are encoded for this connection, fixed by the handshake and its
        # framing: a shared frame (no extension), a shared compressed frame
        # (permessage-deflate without context takeover), or websockets' own
        # per-connection encoder; in the raw framing or the wsfanout.v1 one.
        extensions = websocket.protocol.extensions
        self.v1 = framing == "v1"
        self.deflate = shared_deflate(extensions)
        self.stateful = bool(extensions) and self.deflate is None
        self.plain = not extensions and not self.v1
        """The fast path's case: the message's one shared frame, as published."""
        # Corking (see cork.py): the tick this connection was last written in, and
        # the frames held since, to leave in one write when the iteration ends.
        self.tick = -1
        self.held: list[bytes] | None = None  # a list only while frames are held
        self.held_bytes = 0
        self.flush_waiting = False
        self.joined_seq = 0
        """The hub's sequence number when the link joined the fan-out."""
        self.beat_at = fanout.now()
        """When a control frame was last sent (at first: when the link was made)."""
        self.hears_acks = False
        """The hub reads this connection (``Hub.serve``), so it can hear acknowledgements."""
        self.subscriber: Subscriber = Subscriber(self)
        if fanout.on_step is not None:
            self._outbox.on_step = self.stepped
        self._outbox.takes_turn = self.takes_turn

    @property
    def outbox(self) -> Outbox:
        """The subscriber's outbox, with everything offered to it so far (a member of a
        cohort leaves it first)."""
        if self.cohort is not None:
            self.settle()
        return self._outbox

    def settle(self) -> None:
        """Leave the cohort: be offered the messages its leader queued meanwhile."""
        cohort = self.cohort
        if cohort is None:
            return
        self.cohort = None
        if cohort.leader is self:
            cohort.open = False  # its state is about to change: no longer the members'
            return
        if cohort.tail:
            self._outbox.offer_run(cohort.tail)

    def __repr__(self) -> str:
        return f"<Subscriber {self.websocket.id} {self._outbox.policy!r}>"  # no settling

    # -- what the outbox is told ----------------------------------------------------

    def write_buffer(self) -> int:
        """The connection's state as the outbox takes it (``contract.write_buffer``)."""
        protocol = self.protocol
        writable = (
            protocol.state is OPEN
            and not protocol.expect_continuation_frame
            and not self.transport.is_closing()
        )
        return write_buffer(writable, self.transport.get_write_buffer_size(), self.held_bytes)

    def idle_since(self) -> float:
        """When the subscriber was last sent anything, message or control frame."""
        last_send = self.outbox.last_send
        return self.beat_at if last_send is None else max(last_send, self.beat_at)

    def kernel_view(self) -> KernelView | None:
        """What the kernel says of this connection (one ``TCP_INFO`` read), if it says."""
        return kernel_view(self.sock)

    # -- the fast path's steps, readable ---------------------------------------------

    def offer(self, message: Message, now: float) -> None:
        """Offer ``message`` to this subscriber alone and carry out the answer.
        ``Fanout.fan_out`` inlines this for a whole fan-out, where subscribers in a
        cohort share their offers (``cohort.py``)."""
        buffered = self.write_buffer()
        outbox = self.outbox  # for this subscriber alone: out of a cohort, joining none
        outcome = outbox.offer(message, now, buffered)
        if outcome is Offer.WRITE:
            self.emit(self.encode(message))
        elif outcome is Offer.WAIT:
            self.fanout.timers.at(self, outbox.until)
        elif outcome is Offer.KICK:
            self.queued(buffered, now)
        elif outcome is Offer.CLOSE:
            self.closing()

    def takes_turn(self) -> bool:
        """Whether :meth:`queued` would pump this link at once (the outbox asks, to take
        the relay's turn within the offer): no relay task owns it, and no fragmented
        send is under way. The offer that asks has a buffer under the low-water mark."""
        return self.relay is None and self.websocket.send_in_progress is None

    def encode(self, message: Message) -> bytes:
        """The bytes of ``message`` on this connection; shared unless the connection
        compresses with context takeover. Call only to write the result, in order."""
        if self.plain:
            return message.frame
        if not self.stateful:
            if self.v1:
                return message.v1_frame(self.deflate)
            assert self.deflate is not None  # not plain: an extension, shared deflate
            return message.deflated(self.deflate)
        # Context takeover: the encoder is stateful per connection, websockets encodes.
        payload = message.v1_payload if self.v1 else message.payload
        opcode = message.v1_opcode if self.v1 else message.opcode
        protocol = self.protocol
        if opcode == OP_TEXT:
            protocol.send_text(payload)
        else:
            protocol.send_binary(payload)
        return b"".join(protocol.data_to_send())

    def emit(self, data: bytes) -> None:
        """Write a fast-path frame now, or cork it behind one written this iteration."""
        corker = self.fanout.corker
        if not corker.enabled:
            corker.tick += 1
        if self.tick != corker.tick and not self.held:
            self.tick = corker.tick
            self.send(data)
            corker.wrote()
        else:
            self.cork(data)  # behind a frame written this iteration, or frames held

    def cork(self, data: bytes) -> None:
        """Hold ``data`` until the iteration ends, or write all that is held if it is full."""
        held = self.held
        if not held:
            self.fanout.corker.held.append(self)
            held = self.held = []
        held.append(data)
        self.held_bytes += len(data)
        if cork_is_full(self.held_bytes, self._outbox.low):  # writing: not in a cohort
            self.flush()

    def flush(self) -> None:
        """Write the corked frames in one call, unless they must wait or be dropped."""
        held = self.held
        if not held:
            return
        if self.protocol.state is OPEN and not self.transport.is_closing():
            sending = self.websocket.send_in_progress
            if sending is not None:
                # The application began a fragmented send() after these frames were
                # corked: they follow it, never interleave with its fragments.
                if not self.flush_waiting:
                    self.flush_waiting = True
                    sending.add_done_callback(self._flush_after_send)
                return
            self.send(held[0] if len(held) == 1 else b"".join(held))
        # Otherwise a close frame may already be out: nothing may follow it.
        self.held = None
        self.held_bytes = 0

    def _flush_after_send(self, _: object) -> None:
        self.flush_waiting = False
        self.flush()

    # -- the relay's steps -----------------------------------------------------------

    def write(self, frames: tuple[Message, ...]) -> None:
        """Write frames the relay took from the queue, after any corked ones."""
        if self.held:
            self.flush()
        if len(frames) == 1:
            data = self.encode(frames[0])
        else:
            data = b"".join([self.encode(frame) for frame in frames])
        held = self.held
        if held:  # still held behind a fragmented send(): keep the order
            held.append(data)
            self.held_bytes += len(data)
        else:
            self.send(data)

    def send(self, data: bytes) -> None:
        """Write ``data`` to the connection now: straight to its socket while the
        transport buffers nothing (``sockets.send_now``), else through the transport."""
        transport = self.transport
        fd = self.fd
        if fd is not None and not transport.get_write_buffer_size() and not transport.is_closing():
            send_now(transport, fd, data)
        else:
            transport.write(data)

    def send_control(self, data: str | bytes) -> None:
        """Write a control frame (a notice, a heartbeat) before any later message, now if
        nothing waits, else through the relay; it is dropped if the subscriber closes."""
        now = self.fanout.now()
        self.beat_at = now
        frame = make_control(data, time=now)
        outcome = self.outbox.send_control(frame, now, self.write_buffer())
        if outcome is Offer.WRITE:
            self.emit(self.encode(frame))
        elif outcome is Offer.KICK:
            self.kick()
        elif outcome is Offer.CLOSE:
            self.closing()

    def ask_acks(self) -> None:
        """Ask the client for acknowledgements (docs/protocol.md) if its policy reads
        them and it can answer (``wsfanout.v1``, read by the hub); stop asking if not."""
        request = self.outbox.want_acks(self.v1 and self.hears_acks, self.fanout.now())
        if request is not None:
            self.send_control(request)  # a request is the first frame the window counts

    def hear(self, data: str | bytes) -> bool:
        """True if ``data``, a message from the client, is its acknowledgement
        (docs/protocol.md), taken here; a malformed one closes the connection with 1008,
        naming what was wrong. Only a ``wsfanout.v1`` client's messages can be."""
        if not self.v1:
            return False
        try:
            n = read_ack(data)
        except ConfigError as exc:
            self.refuse(f"ack {exc}")
            return True
        if n is None:
            return False
        if self.outbox.acknowledge(n, self.fanout.now()) is Offer.KICK:
            self.kick()
        return True

    def stepped(self, step: LevelStep) -> None:
        """The ladder stepped: tell the application once the current call is over, so
        its callback never runs inside ``publish()``'s loop over subscribers."""
        callback = self.fanout.on_step
        if callback is not None:
            asyncio.get_running_loop().call_soon(self._tell, callback, step)

    def _tell(self, callback: Callable[[Subscriber, LevelStep], object], step: LevelStep) -> None:
        try:
            callback(self.subscriber, step)
        except Exception:
            logger.exception("on_step raised for %s (%r)", self, step)

    def set_policy(self, policy: Policy) -> None:
        """Replace the policy now; the outbox reshapes the queue, and its answer is
        carried out here (the relay plans again, or the subscriber closes)."""
        try:
            outcome = self.outbox.set_policy(policy, self.fanout.now(), self.write_buffer())
        except Exception:  # the new policy raised: as on publish, this subscriber alone ends
            self.fail("changing the policy of %s failed; aborting its connection")
            return
        if outcome is Offer.KICK:
            self.kick()
        elif outcome is Offer.CLOSE:
            self.closing()
            return
        self.ask_acks()

    def kick(self) -> None:
        """The outbox has work: wake the relay task if there is one; start it to close or
        to await a full write buffer; else pump this link once the loop iteration's
        callbacks have run (``timers.py``), where the relay's first turn used to be."""
        if self.relay is not None:
            if self.wake is not None and not self.wake.done():
                self.wake.set_result(None)
        elif self.outbox.closing is not None or self.write_buffer() > self.outbox.high:
            self.start_relay()
        else:
            self.fanout.timers.soon(self)

    def queued(self, buffered: int, now: float) -> None:
        """An offer at ``now`` with ``buffered`` bytes waiting queued a message and kicked.

        Under the low-water mark the policy held it on purpose (a batch lingering, a
        throttle's slot): pump now, so the link takes its deadline on the hub's timers
        in this very call. Over the high-water mark a relay task awaits the drain. In
        between the relay's first turn comes after this loop iteration, as always.
        """
        if self.relay is not None:
            if self.wake is not None and not self.wake.done():
                self.wake.set_result(None)
        elif buffered > self.outbox.high:
            self.start_relay()
        elif buffered <= self.outbox.low:
            self.pump(now, buffered)
        else:
            self.fanout.timers.soon(self)

    def start_relay(self, first: Action | None = None) -> None:
        """Hand this link to a relay task, for what must be awaited; ``first`` is an
        action already taken from the outbox, performed before asking it again."""
        self.fanout.timers.discard(self)
        self.relay = asyncio.get_running_loop().create_task(run_relay(self, first))

    def pump(self, now: float, buffered: int | None = None) -> None:
        """The relay's turns, without awaiting: write what is due, then wait for the next
        deadline on the hub's shared timers (no task, no wake of one), or hand over to a
        relay task for what must be awaited (a drain, a fragmented send, a close).
        ``buffered`` is :meth:`write_buffer` when the caller has just read it."""
        if self.relay is not None:
            return  # the task owns the outbox until it ends
        outbox = self.outbox
        ws = self.websocket
        first: Action | None = None
        try:
            while outbox.closing is None and ws.send_in_progress is None:
                if buffered is None:
                    buffered = self.write_buffer()
                action = outbox.next_action(now, buffered)
                if type(action) is Write:
                    self.write(action.frames)
                    timing = self.fanout.timing
                    if timing is not None:
                        timing.left_queue(self.policy_name, action.frames, now)
                    if action.idle:
                        return  # the next turn would answer IDLE: not asked
                    buffered = None  # it changed
                elif type(action) is Wait:
                    until = action.until
                    if action.drain:  # plan_wait's first rule, (until, no drain), read inline
                        plan = plan_wait(
                            until, True, now, writable=buffered != BLOCKED, paused=ws.paused
                        )
                        if plan.on_drain:
                            break
                        until = plan.until
                    if until == math.inf:
                        break
                    self.fanout.timers.at(self, until)
                    return
                elif type(action) is CloseAction:
                    first = action  # taken: the relay performs it
                    break
                else:
                    return
        except Exception:
            self.fail("relay failed for %s; aborting the connection")
            return
        self.start_relay(first)

    # -- ending ----------------------------------------------------------------------

    def closing(self) -> None:
        """The outbox decided to close: stop receiving and let the relay close."""
        self.fanout.detach(self)
        self.kick()

    def refuse(self, why: str) -> None:
        """The client asked for something the protocol does not allow: close with 1008,
        the reason ``why`` (cut to what a close frame holds), and log it."""
        logger.info("%s refused: %s", self, why)
        reason = why.encode()[:MAX_REASON_BYTES].decode(errors="ignore")
        self.close(Close(1008, reason, cause=why))

    def close(self, close: Close) -> None:
        """Close for a reason outside the policy (the hub closing)."""
        if self.outbox.close(close):
            self.closing()

    def fail(self, message: str = "delivery to %s failed; aborting its connection") -> None:
        """Delivery raised: log it, abort the connection and refuse further messages.

        Call from an ``except`` block, so the log has the traceback; ``message`` has
        one ``%s``, for this subscriber.
        """
        logger.exception(message, self)
        self.outbox.discard()
        abort_with_reset(self.transport)

    def connection_lost(self, _: object = None) -> None:
        """websockets' ``connection_lost_waiter`` is done: nothing more can be written."""
        self.held = None
        self.held_bytes = 0
        self.fanout.detach(self)
        self.fanout.timers.discard(self)
        self.outbox.discard()
        if self.wake is not None and not self.wake.done():
            self.wake.set_result(None)
