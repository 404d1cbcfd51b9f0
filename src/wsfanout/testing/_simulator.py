"""A deterministic simulator of subscribers, driving the production core on fake transports.

Theory of operation
-------------------
Each simulated subscriber is a real :class:`~wsfanout.lowlevel.Outbox` (the same
sans-I/O object ``Hub.publish`` and the relay drive, fast path included) on a
:class:`FakeTransport`, under a :class:`VirtualClock`. The simulator plays the I/O
shell's part exactly as the hub and the relay do, by the same rules (the core's shell
contract: what the outbox is told, corking, how to wait), and nothing more:

* ``publish`` offers the message to every attached subscriber whose topics match and
  performs the answer: ``WRITE`` writes at once (fast path), ``KICK`` starts or wakes the
  relay, ``CLOSE`` detaches the subscriber and lets its relay close it. Each public
  method is one loop iteration: a subscriber's second fast-path frame in one iteration
  (``publish_many``) is corked, and corked frames leave together when it ends, or as
  soon as they pass the low-water mark.
* a relay runs turns of :meth:`Outbox.next_action` until it must wait, as ``run_relay``
  does: it wakes on a kick, at the time it asked for, when a paused transport resumes
  (the buffer back at the low-water mark), or when the connection is lost.
* closing writes a close frame and waits ``close_timeout`` for the client to read it,
  then aborts, as ``close_connection`` does.
* with a ``history``, every published message is kept as the hub keeps it; a client that
  reconnects (:meth:`Simulator.reconnect`) is a new connection, a new trace, that resumes
  from the last offset it received of each topic: it is sent what it missed by the
  core's own plan (``plan_from``), as the hub sends it, before it joins the fan-out.

Time moves only in :meth:`Simulator.advance`, from one event to the next (a timer, a
transport resuming, a close frame read or timing out), so minutes of virtual time cost
only the events in them. Clients read at a scripted rate in between.

Settling (:meth:`Simulator.settle`, the end of every checked run) has a horizon: once
:data:`SETTLE_HORIZON` seconds of virtual time, or :data:`SETTLE_WAKEUPS` events, pass
with nothing written and no connection ending, it stops, and whatever is still queued
for a client that reads everything is a liveness failure. A core that holds a message
forever is reported after one horizon, not after settling until time runs out.

Everything observable is recorded in a :class:`Trace`: what was offered to each client,
every write with the buffer size it was made at, every frame the client finished
reading (with the messages it carried, and what each folds when a reducer merged
them), closes, every step of a ladder policy, and a :class:`Sample` of the
subscriber's state after every change. A client reads at its rate, in bytes per
second, so it has a drain rate the core measures as it does on a real connection.
The checkers in ``wsfanout.testing`` judge the trace; the simulator itself asserts
nothing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import attrs

from .._core.acks import ACK_INTERVAL
from .._core.contract import cork_is_full, plan_wait, write_buffer
from .._core.decision import Close, Decision, LevelStep
from .._core.history import History, MemoryHistory, Position, plan_from, wanted
from .._core.message import Batched, Merged, Message, make_control, make_message
from .._core.notices import GapNotice, Notice
from .._core.outbox import CloseAction, Offer, Outbox, Wait, Write
from .._core.policy import Policy, as_policy
from .._core.snapshot import Snapshot
from .._core.stats import SubscriberStats
from .._core.streams import NO_TOPIC, Streams
from ._clock import VirtualClock
from ._schedule import (
    Advance,
    Client,
    Drain,
    Hangup,
    Publish,
    Read,
    Reconnect,
    Schedule,
    Send,
    SetPolicy,
    Stall,
    Step,
)
from ._transport import FakeTransport

__all__ = [
    "ClientTrace",
    "Closing",
    "Delivery",
    "Ended",
    "Frame",
    "HistoryFactory",
    "OutboxFactory",
    "PolicyChange",
    "Sample",
    "SETTLE_HORIZON",
    "SETTLE_WAKEUPS",
    "SETTLING",
    "SimulationError",
    "Simulator",
    "Stepped",
    "Trace",
    "WriteEvent",
    "simulate",
]

OutboxFactory = Callable[..., Outbox]
"""``(policy, *, high, low, kernel_unsent) -> Outbox``: the core under test (a broken one,
in the toolkit's own tests); ``kernel_unsent`` is the probe of the simulated kernel."""

HistoryFactory = Callable[[History], MemoryHistory]
"""``(limits) -> MemoryHistory``: the history under test (a broken one, in the toolkit's
own tests)."""

MAX_TURNS_PER_INSTANT = 1000
"""Relay turns at one virtual instant before the simulator calls it a spin."""

SETTLING = -1
"""The step recorded for what happens in :meth:`Simulator.settle`, after the last step."""

MAX_EVENTS = 200_000
"""Events one :meth:`Simulator.advance` or :meth:`Simulator.settle` may process."""

SETTLE_HORIZON = 3600.0
"""Seconds of virtual time settling waits for something to be written (or a connection
to end) before it gives up: what is still queued then is a liveness failure. A policy
that legitimately holds a message longer (a ``Throttle`` slower than one frame an
hour) needs ``settle_horizon=`` raised."""

SETTLE_WAKEUPS = 10_000
"""Events settling processes in a row with nothing written before it gives up, so a
relay that wakes over and over without writing fails fast too."""


class SimulationError(Exception):
    """The simulated core did not settle: a relay spun at one instant, or events never ended."""

    def __init__(self, message: str, *, step: int | None, time: float, client: int | None):
        super().__init__(message)
        self.step = step
        self.time = time
        self.client = client


# -- the trace ---------------------------------------------------------------------------


@attrs.frozen
class Frame:
    """A frame as written to a client: the messages it carries (``seqs``), its payload and
    complete bytes, and when it was written. A ``control`` frame carries no message."""

    seqs: tuple[int, ...]
    opcode: int
    payload: bytes
    data: bytes
    written_at: float
    step: int | None
    control: bool = False
    folded: tuple[tuple[int, ...], ...] = ()
    """When a message it carries was merged by a reducer: for each message (in
    ``seqs``' order), the seqs of the published messages it folds; else ()."""
    parts: tuple[bytes, ...] = ()
    """With ``folded``: the payload of each message it carries, as written."""
    notice: GapNotice | None = None
    """The gap notice a control frame carries, if it is one (``Notify``)."""


@attrs.frozen
class CloseFrame:
    """A close frame as written to a client: its code, its reason and its bytes."""

    code: int
    reason: str
    data: bytes


@attrs.frozen
class WriteEvent:
    """One transport write: the frames, the buffer size it was made at, and whether it
    was the fast path (``publish`` writing at once)."""

    frames: tuple[Frame, ...]
    at: float
    step: int | None
    buffered: int
    fast: bool


@attrs.frozen
class Delivery:
    """A frame the client finished reading, and when."""

    frame: Frame
    at: float
    step: int | None


@attrs.frozen
class Sample:
    """A subscriber's state right after something changed it."""

    at: float
    step: int | None
    queued_messages: int
    queued_bytes: int
    lag: float
    write_buffer: int
    kernel_unsent: int
    """Bytes the simulated kernel holds below the write buffer, not yet read."""
    open: bool
    """Attached and not closing: the hub still offers it messages."""
    stats: SubscriberStats


@attrs.frozen
class Offered:
    """A message offered to a subscriber, and the outbox's answer."""

    seq: int
    at: float
    step: int | None
    outcome: Offer


@attrs.frozen
class Closing:
    """The outbox began closing the subscriber."""

    close: Close
    at: float
    step: int | None
    by_policy: bool


@attrs.frozen
class Stepped:
    """A ladder policy stepped between levels (``change``), at ``at``."""

    change: LevelStep
    at: float
    step: int | None


@attrs.frozen
class Ended:
    """The connection ended: ``how`` it ended and the close code the client saw."""

    how: Literal["closed", "aborted", "lost"]
    code: int
    at: float
    step: int | None


@attrs.frozen
class PolicyChange:
    """The client's policy was replaced (:meth:`Simulator.set_policy`)."""

    policy: Policy
    at: float
    step: int | None


@attrs.define(eq=False)
class ClientTrace:
    """Everything that happened to one client."""

    index: int
    policy: Policy
    client: Client
    offered: list[Offered] = attrs.Factory(list)
    writes: list[WriteEvent] = attrs.Factory(list)
    deliveries: list[Delivery] = attrs.Factory(list)
    samples: list[Sample] = attrs.Factory(list)
    closing: Closing | None = None
    ended: Ended | None = None
    stepped: list[Stepped] = attrs.Factory(list)
    """Every step of the client's ladder policy, in order."""
    acks: list[tuple[float, int]] = attrs.Factory(list)
    """Each acknowledgement the client sent (``Client(acks=True)``): when, and its ``n``."""
    joined_at: float = 0.0
    left_at: float | None = None
    """When the handler returned (:meth:`Simulator.leave`), if it did."""
    logical: int = -1
    """The schedule's client this connection is of (its ``index`` unless it reconnected)."""
    resumed_from: int | None = None
    """The connection of the same client before this one, if this one reconnected."""
    since: tuple[Position, ...] = ()
    """The positions it resumed from: the last offset received of each topic."""
    replayed: int = 0
    """How many of the first messages it was offered are the replay of what it missed."""
    joined_seq: int = 0
    """The seq the next message published when it joined would have had."""
    changes: list[PolicyChange] = attrs.Factory(list)
    """Each time its policy was replaced, in order; ``policy`` is the first one."""

    @property
    def policies(self) -> list[Policy]:
        """Every policy the client had, the first one first."""
        return [self.policy, *(change.policy for change in self.changes)]

    @property
    def received(self) -> list[int]:
        """The seqs of the messages the client read, in order, batches unpacked."""
        return [seq for delivery in self.deliveries for seq in delivery.frame.seqs]

    @property
    def offered_seqs(self) -> list[int]:
        return [offer.seq for offer in self.offered]

    @property
    def open(self) -> bool:
        """Never closed, never gone, never left: the hub still offers it messages."""
        return self.closing is None and self.ended is None and self.left_at is None


@attrs.define(eq=False)
class Trace:
    """What a simulation recorded: one :class:`ClientTrace` per client, every message by
    seq, and the error that stopped it, if any."""

    clients: list[ClientTrace] = attrs.Factory(list)
    messages: dict[int, Message] = attrs.Factory(dict)
    error: SimulationError | None = None
    settled: bool = False
    """True if the run ended with a settle phase (clients reading everything)."""
    history: History | None = None
    """The bound of the hub's history, if it kept one."""
    gave_up: str | None = None
    """Why settling stopped before nothing was left to happen (its horizon passed with
    nothing written), or None: then whatever is still queued is a liveness failure."""


# -- the simulator ------------------------------------------------------------------------

_READY, _WAITING, _CLOSING = "ready", "waiting", "closing"


class _Relay:
    __slots__ = ("drain", "state", "turns", "turns_at", "until")

    def __init__(self) -> None:
        self.state = _READY
        self.until = math.inf
        self.drain = False
        self.turns = 0
        self.turns_at = -math.inf


class _Subscriber:
    __slots__ = (
        "ack_due",
        "acked",
        "attached",
        "close_deadline",
        "close_frame",
        "connected",
        "held",
        "held_bytes",
        "index",
        "last_ack",
        "outbox",
        "relay",
        "taken",
        "tick",
        "topics",
        "trace",
        "transport",
    )

    def __init__(
        self,
        index: int,
        outbox: Outbox,
        transport: FakeTransport[Frame | CloseFrame],
        trace: ClientTrace,
    ) -> None:
        self.index = index
        self.outbox = outbox
        self.transport = transport
        self.trace = trace
        self.topics = trace.client.topics
        self.attached = True
        """The hub offers it messages."""
        self.connected = True
        """The connection is open for writing (no close frame sent, not lost)."""
        self.relay: _Relay | None = None
        self.close_frame: CloseFrame | None = None
        self.close_deadline = math.inf
        self.tick = -1
        """The loop iteration of its last fast-path write (corking)."""
        self.held: list[Message] = []
        """Fast-path messages corked until the iteration ends."""
        self.held_bytes = 0
        # Acknowledgements (a Client(acks=True) asked by its policy): frames read on this
        # connection, the count last acknowledged and when, and when the one owed is due.
        self.taken = 0
        self.acked = 0
        self.last_ack = -math.inf
        self.ack_due = math.inf

    @property
    def asked(self) -> bool:
        """The client is asked to acknowledge (the outbox counts for it)."""
        return self.outbox.acks is not None

    def write_buffer(self) -> int:
        """What the outbox is told, by the shell contract's rule."""
        transport = self.transport
        writable = self.connected and not transport.closed
        return write_buffer(writable, transport.buffered, self.held_bytes)


class Simulator:
    """A hub of simulated subscribers on a virtual clock; see the module docstring.

    Every public method is one thing happening, after which the event loop gets its turn
    (relays that were kicked run), as after a synchronous call in an asyncio program.
    """

    def __init__(
        self,
        *,
        start: float = 0.0,
        close_timeout: float = 5.0,
        outbox_factory: OutboxFactory = Outbox,
        cork: bool = True,
        history: History | None = None,
        history_factory: HistoryFactory = MemoryHistory,
    ) -> None:
        self.clock = VirtualClock(start)
        self.cork = cork
        """Cork a subscriber's further fast-path frames of one iteration, as ``Hub`` does."""
        self._tick = 0
        self._corked: list[_Subscriber] = []
        epochs = itertools.count(1)
        self.streams = Streams(lambda: f"sim{next(epochs)}")
        """Every topic's offsets, as the hub assigns them (deterministic epochs)."""
        self.close_timeout = close_timeout
        self.outbox_factory = outbox_factory
        self.trace = Trace(history=history)
        self.history = None if history is None else history_factory(history)
        """What the hub keeps of each topic for clients that resume (None: nothing)."""
        self._current: list[int] = []
        """For each schedule client, the index of its current connection."""
        self.step: int | None = None
        """The schedule step being run, recorded with every event."""
        self._subscribers: list[_Subscriber] = []
        self._seq = 0
        self._progress = 0
        """Writes, close frames and ended connections so far: what settling waits for."""

    # -- subscribers ----------------------------------------------------------------

    def join(
        self, policy: Policy | Callable[[Snapshot], Decision], client: Client | None = None
    ) -> int:
        """Subscribe a new client (by default ``Client()``) under ``policy``; return its index."""
        chosen = as_policy(policy)
        client = Client() if client is None else client
        logical = len(self._current)
        self._current.append(self._connect(chosen, client, logical).index)
        return logical

    def reconnect(self, client: int) -> int:
        """The client's connection is lost (if it was not already) and the client connects
        again, resuming from the last offset it received of each topic, as the Python and
        JavaScript clients do; return the index of the new connection's trace."""
        old = self._subscriber(client)
        if old.trace.ended is None:
            self._lost(old)
        since = self._positions(client)
        sub = self._connect(old.trace.policy, old.trace.client, client)
        sub.trace.resumed_from = old.index
        sub.trace.since = since
        self._current[client] = sub.index
        self._resume(sub, since)
        self._run_ready()
        return sub.index

    def _connect(self, policy: Policy, client: Client, logical: int) -> _Subscriber:
        index = len(self._subscribers)
        transport: FakeTransport[Frame | CloseFrame] = FakeTransport(
            high=client.high, low=client.low, rate=client.rate, notsent_lowat=client.notsent_lowat
        )
        outbox = self.outbox_factory(
            policy,
            high=client.high,
            low=client.low,
            kernel_unsent=lambda: transport.kernel_unsent,
        )
        trace = ClientTrace(
            index, policy, client, joined_at=self.clock.now, logical=logical, joined_seq=self._seq
        )
        self.trace.clients.append(trace)
        outbox.on_step = lambda change: trace.stepped.append(
            Stepped(change, self.clock.now, self.step)
        )
        sub = _Subscriber(index, outbox, transport, trace)
        self._subscribers.append(sub)
        self._ask_acks(sub)
        self._sample(sub)
        return sub

    def _ask_acks(self, sub: _Subscriber) -> None:
        """``Link.ask_acks``: ask a client that can answer (``Client(acks=True)``) while
        its policy reads acknowledgements, and stop asking when it no longer does."""
        request = sub.outbox.want_acks(sub.trace.client.acks, self.clock.now)
        if request is not None:
            if not sub.asked:
                sub.ack_due = math.inf  # nothing owed once it is told to stop
            self._send_control(sub, request)

    def _took(self, sub: _Subscriber, when: float) -> None:
        """The client read a frame at ``when``: acknowledge at once if its last
        acknowledgement is ``ACK_INTERVAL`` old, else owe one for when it is."""
        sub.taken += 1
        if sub.asked:
            self._acknowledge(sub, when)

    def _acknowledge(self, sub: _Subscriber, when: float) -> None:
        if sub.taken <= sub.acked:
            sub.ack_due = math.inf
            return
        due = sub.last_ack + ACK_INTERVAL
        if when < due:
            sub.ack_due = due
            return
        sub.acked, sub.last_ack, sub.ack_due = sub.taken, when, math.inf
        sub.trace.acks.append((when, sub.taken))
        if sub.outbox.acknowledge(sub.taken, when) is Offer.KICK:
            self._kick(sub)

    def _positions(self, client: int) -> tuple[Position, ...]:
        """The last offset the client received of each topic, over all its connections."""
        found: dict[str, Position] = {}
        messages = self.trace.messages
        for trace in self.trace.clients:
            if trace.logical != client:
                continue
            for seq in trace.received:
                message = messages[seq]
                if message.offset:
                    stream = NO_TOPIC if message.topic is None else message.topic
                    found[stream] = Position(stream, message.epoch, message.offset)
        return tuple(found.values())

    def _resume(self, sub: _Subscriber, since: tuple[Position, ...]) -> None:
        """``Hub._resume``: for each topic, the resume frame, the gap notice, the replay."""
        topics = sub.topics
        for position in wanted(since, topics):
            now = self.clock.now
            plan = plan_from(
                self.streams, self.history, position, every_topic=topics is None, now=now
            )
            if plan is None:
                continue
            self._send_control(sub, plan.frame)
            if plan.notice is not None:
                self._send_control(sub, plan.notice)
            for message in plan.replay(now):
                if sub.outbox.closing is None:
                    self._offer(sub, message, now)
                    sub.trace.replayed += 1

    def outbox(self, client: int) -> Outbox:
        """The core object of a client, for tests that look inside."""
        return self._subscriber(client).outbox

    def transport(self, client: int) -> FakeTransport[Frame | CloseFrame]:
        return self._subscriber(client).transport

    def attached(self, client: int) -> bool:
        """True while the hub offers this client messages."""
        return self._subscriber(client).attached

    def has_relay(self, client: int) -> bool:
        """True while the client has a relay (a task, in production)."""
        return self._subscriber(client).relay is not None

    @property
    def now(self) -> float:
        return self.clock.now

    @property
    def next_seq(self) -> int:
        """The seq the next message published or sent will have."""
        return self._seq

    # -- things that happen -----------------------------------------------------------

    def publish(
        self,
        data: str | bytes,
        *,
        topic: str | None = None,
        key: str | None = None,
        lossless: bool = False,
    ) -> int:
        """Publish one message (``lossless``: as ``Hub.publish`` does); return its seq."""
        seq = self._publish(data, topic=topic, key=key, lossless=lossless)
        self._run_ready()
        return seq

    def publish_many(
        self,
        messages: Iterable[tuple[str | bytes, str | None, str | None]],
        *,
        lossless: bool = False,
    ) -> None:
        """Publish ``(data, topic, key)`` messages back to back, no relay running between."""
        for data, topic, key in messages:
            self._publish(data, topic=topic, key=key, lossless=lossless)
        self._run_ready()

    def send(self, client: int, data: str | bytes) -> int:
        """``subscriber.send(data)``: to one client, never dropped by its policy."""
        sub = self._subscriber(client)
        now = self.clock.now
        message = make_message(data, seq=self._next_seq(), time=now, droppable=False)
        self.trace.messages[message.seq] = message
        if sub.outbox.closing is None:
            self._offer(sub, message, now)
        self._run_ready()
        return message.seq

    def send_control(self, client: int, data: str | bytes) -> None:
        """``Link.send_control(data)``: a control frame (a notice, a heartbeat) to one
        client, written before any later message and counted as none."""
        self._send_control(self._subscriber(client), data)
        self._run_ready()

    def _send_control(self, sub: _Subscriber, data: str | bytes) -> None:
        now = self.clock.now
        frame = make_control(data, time=now)
        buffered = sub.write_buffer()
        outcome = sub.outbox.send_control(frame, now, buffered)
        self._carry_out(sub, outcome, frame, buffered)
        self._sample(sub)

    def set_policy(self, client: int, policy: Policy | Callable[[Snapshot], Decision]) -> None:
        """``subscriber.policy = policy``: the client's queue is reshaped under it at once."""
        sub = self._subscriber(client)
        chosen = as_policy(policy)
        sub.trace.changes.append(PolicyChange(chosen, self.clock.now, self.step))
        if sub.outbox.closing is None and sub.attached:
            buffered = sub.write_buffer()
            outcome = sub.outbox.set_policy(chosen, self.clock.now, buffered)
            self._carry_out(sub, outcome, None, buffered)
            self._ask_acks(sub)
        self._sample(sub)
        self._run_ready()

    def read(self, client: int, rate: float = math.inf) -> None:
        """The client reads ``rate`` bytes per second from now on."""
        sub = self._subscriber(client)
        self._delivered(sub, sub.transport.set_rate(rate))
        self._after_read(sub)
        self._run_ready()

    def stall(self, client: int) -> None:
        """The client stops reading."""
        self.read(client, 0.0)

    def drain(self, client: int, nbytes: int) -> None:
        """The client reads ``nbytes`` at once."""
        sub = self._subscriber(client)
        self._delivered(sub, sub.transport.drain(nbytes))
        self._after_read(sub)
        self._run_ready()

    def hangup(self, client: int) -> None:
        """The client's connection is lost (``connection_lost``)."""
        sub = self._subscriber(client)
        if sub.trace.ended is None:
            self._lost(sub)
        self._run_ready()

    def leave(self, client: int) -> None:
        """The handler returns: the hub releases the subscriber (``Hub._release``), then
        the connection closes normally (1000) once the client reads what is buffered."""
        sub = self._subscriber(client)
        sub.attached = False
        relay = sub.relay
        if relay is not None and relay.state != _CLOSING:
            sub.relay = None  # cancelled
        sub.outbox.discard()
        if sub.trace.left_at is None:
            sub.trace.left_at = self.clock.now
        self._begin_close(sub, 1000, "")
        self._sample(sub)
        self._run_ready()

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass: clients read at their rates and timers fire, in order."""
        if not seconds >= 0 or not math.isfinite(seconds):
            raise ValueError(f"seconds={seconds!r} must be a finite number >= 0")
        self._run_ready()
        target = self.clock.now + seconds
        for _ in range(MAX_EVENTS):
            when = min(self._next_event(), target)
            self._move_to(when)
            if when >= target:
                for sub in self._subscribers:
                    self._sample(sub)
                return
        self._fail("events never ended while advancing", None)

    def settle(self, horizon: float = SETTLE_HORIZON) -> bool:
        """Publishing has stopped; every connected client reads everything. Run until
        nothing is left to happen, or until ``horizon`` seconds (or
        :data:`SETTLE_WAKEUPS` events) pass with nothing written and no connection
        ending (then ``trace.gave_up`` says so); return True if every open subscriber's
        queue emptied. What happens meanwhile is recorded at step :data:`SETTLING`."""
        if not horizon > 0 or not math.isfinite(horizon):
            raise ValueError(f"horizon={horizon!r} must be a finite number of seconds > 0")
        self.step = SETTLING
        for sub in self._subscribers:
            if sub.trace.ended is None:
                self._delivered(sub, sub.transport.set_rate(math.inf))
                self._after_read(sub)
        self._run_ready()
        progress = self._progress
        deadline = self.clock.now + horizon
        idle = 0
        for _ in range(MAX_EVENTS):
            when = self._next_event()
            if when == math.inf:
                break
            if when > deadline:
                self._move_to(deadline)
                self.trace.gave_up = f"nothing was written for {horizon!r}s (the settling horizon)"
                break
            self._move_to(when)
            if self._progress != progress:
                progress, idle = self._progress, 0
                deadline = self.clock.now + horizon
            else:
                idle += 1
                if idle >= SETTLE_WAKEUPS:
                    self.trace.gave_up = (
                        f"the relays woke {idle} times in a row without writing anything "
                        "(the settling horizon)"
                    )
                    break
        else:
            self._fail("events never ended while settling", None)
        for sub in self._subscribers:
            self._sample(sub)
        return all(not sub.outbox.queue for sub in self._subscribers if sub.outbox.closing is None)

    def run(self, step: Step) -> None:
        """Perform one schedule step."""
        run = _RUNNERS.get(type(step))
        if run is None:
            raise TypeError(f"{step!r} is not a step the simulator knows")
        run(self, step)

    # -- the hub's part ---------------------------------------------------------------

    def _next_seq(self) -> int:
        seq = self._seq
        self._seq += 1
        return seq

    def _publish(
        self, data: str | bytes, *, topic: str | None, key: str | None, lossless: bool = False
    ) -> int:
        now = self.clock.now
        stream = self.streams.advance(topic)
        message = make_message(
            data,
            seq=self._next_seq(),
            time=now,
            topic=topic,
            key=key,
            droppable=not lossless,
            offset=stream.last,
            epoch=stream.epoch,
        )
        self.trace.messages[message.seq] = message
        if self.history is not None:
            self.history.append(message, now)
        for sub in self._subscribers:
            if not sub.attached:
                continue
            if topic is not None and sub.topics is not None and topic not in sub.topics:
                continue
            self._offer(sub, message, now)
        return message.seq

    def _offer(self, sub: _Subscriber, message: Message, now: float) -> None:
        buffered = sub.write_buffer()
        outcome = sub.outbox.offer(message, now, buffered)
        sub.trace.offered.append(Offered(message.seq, now, self.step, outcome))
        self._carry_out(sub, outcome, message, buffered)
        self._sample(sub)

    def _carry_out(
        self, sub: _Subscriber, outcome: Offer, message: Message | None, buffered: int
    ) -> None:
        """What ``Link`` does with an outbox's answer: write ``message`` now, run the
        relay, or detach and let the relay close."""
        if outcome is Offer.WRITE:
            assert message is not None
            self._emit(sub, message, buffered)
        elif outcome is Offer.KICK:
            self._kick(sub)
        elif outcome is Offer.CLOSE:
            sub.attached = False
            self._kick(sub)
        self._note_closing(sub)

    def _emit(self, sub: _Subscriber, message: Message, buffered: int) -> None:
        """``Link.emit``: the first frame of the iteration at once, later ones corked."""
        if not self.cork:
            self._tick += 1
        if sub.tick != self._tick:
            sub.tick = self._tick
            self._write(sub, (message,), buffered, fast=True)
            return
        if not sub.held:
            self._corked.append(sub)
        sub.held.append(message)
        sub.held_bytes += len(message.frame)
        if cork_is_full(sub.held_bytes, sub.outbox.low):
            self._flush(sub)

    def _flush(self, sub: _Subscriber) -> None:
        """``Link.flush``: write the corked frames together, unless the connection ended."""
        held = sub.held
        if not held:
            return
        if sub.connected and not sub.transport.closed:
            self._write(sub, tuple(held), sub.transport.buffered, fast=True)
        sub.held = []
        sub.held_bytes = 0

    def _end_iteration(self) -> None:
        """The loop iteration is over: corked frames leave (``Corker.end_tick``)."""
        corked = self._corked
        if corked:
            self._corked = []
            for sub in corked:
                self._flush(sub)
        self._tick += 1

    def _kick(self, sub: _Subscriber) -> None:
        relay = sub.relay
        if relay is None:
            sub.relay = _Relay()
        elif relay.state == _WAITING:
            relay.state = _READY

    def _write(
        self, sub: _Subscriber, messages: tuple[Message, ...], buffered: int, *, fast: bool
    ) -> None:
        now = self.clock.now
        frames = tuple(
            Frame(
                _seqs(m),
                m.opcode,
                m.payload,
                m.frame,
                now,
                self.step,
                m.control,
                *_folds(m),
                m.notice if isinstance(m, Notice) else None,
            )
            for m in messages
        )
        sub.trace.writes.append(WriteEvent(frames, now, self.step, buffered, fast))
        self._progress += 1
        for frame in frames:
            self._delivered(sub, sub.transport.write(frame, len(frame.data)))

    def _delivered(
        self, sub: _Subscriber, items: Iterable[Frame | CloseFrame], at: float | None = None
    ) -> None:
        when = self.clock.now if at is None else at
        for item in items:
            if isinstance(item, Frame):
                sub.trace.deliveries.append(Delivery(item, when, self.step))
                self._took(sub, when)
            elif sub.trace.ended is None:
                self._end(sub, "closed", item.code, when)  # the client read it and answered

    def _after_read(self, sub: _Subscriber) -> None:
        relay = sub.relay
        if (
            relay is not None
            and relay.state == _WAITING
            and relay.drain
            and not sub.transport.paused
        ):
            relay.state = _READY  # resume_writing resolved the drain waiters
        self._sample(sub)

    def _lost(self, sub: _Subscriber) -> None:
        sub.transport.abort()
        self._end(sub, "lost", 1006, self.clock.now)
        relay = sub.relay
        if relay is not None:
            relay.state = _READY  # the relay wakes, sees the outbox gone and stops

    def _end(
        self, sub: _Subscriber, how: Literal["closed", "aborted", "lost"], code: int, at: float
    ) -> None:
        """The connection is over (``connection_lost``): the hub detaches and discards."""
        sub.attached = False
        sub.connected = False
        sub.held = []
        sub.held_bytes = 0
        sub.outbox.discard()
        sub.trace.ended = Ended(how, code, at, self.step)
        self._progress += 1
        relay = sub.relay
        if relay is not None and relay.state == _CLOSING:
            sub.relay = None  # wait_closed() returns
        self._sample(sub)

    def _note_closing(self, sub: _Subscriber) -> None:
        closing = sub.outbox.closing
        if closing is not None and sub.trace.closing is None and sub.trace.ended is None:
            sub.trace.closing = Closing(
                closing, self.clock.now, self.step, sub.outbox.closed_by_policy
            )

    # -- the relay's part -------------------------------------------------------------

    def _run_ready(self) -> None:
        self._end_iteration()
        for _ in range(MAX_EVENTS):
            ran = False
            now = self.clock.now
            for sub in self._subscribers:
                relay = sub.relay
                if relay is None:
                    continue
                if relay.state == _WAITING and relay.until <= now:
                    relay.state = _READY
                if relay.state == _READY:
                    self._turn(sub, relay)
                    ran = True
            if not ran:
                return
        self._fail("relays never went quiet", None)

    def _turn(self, sub: _Subscriber, relay: _Relay) -> None:
        now = self.clock.now
        if relay.turns_at != now:
            relay.turns_at, relay.turns = now, 0
        relay.turns += 1
        if relay.turns > MAX_TURNS_PER_INSTANT:
            self._fail(
                f"the relay spun: {MAX_TURNS_PER_INSTANT} turns at t={now!r} without time "
                f"moving (next_action keeps answering a wait that is already over)",
                sub.index,
            )
        outbox = sub.outbox
        transport = sub.transport
        while True:
            buffered = sub.write_buffer()
            action = outbox.next_action(now, buffered)
            self._note_closing(sub)
            if type(action) is Write:
                if sub.held:  # Link.write: corked frames go first
                    self._flush(sub)
                    buffered = sub.write_buffer()
                self._write(sub, action.frames, buffered, fast=False)
                relay.turns = 0
                self._sample(sub)
                continue
            if type(action) is Wait:
                plan = plan_wait(
                    action.until,
                    action.drain,
                    now,
                    writable=sub.connected and not transport.closed,
                    paused=transport.paused,
                )
                relay.state, relay.until, relay.drain = _WAITING, plan.until, plan.on_drain
            elif type(action) is CloseAction:
                sub.attached = False
                self._send_close(sub, relay, action.close)
            else:
                sub.relay = None
            self._sample(sub)
            return

    def _send_close(self, sub: _Subscriber, relay: _Relay, close: Close) -> None:
        """``close_connection``: a close frame, then ``close_timeout`` to finish, then abort."""
        relay.state = _CLOSING  # before the frame goes out: a client may read it at once
        if not self._begin_close(sub, close.code, close.reason):
            sub.relay = None

    def _begin_close(self, sub: _Subscriber, code: int, reason: str) -> bool:
        if not sub.connected or sub.transport.closed or sub.trace.ended is not None:
            return False
        frame = CloseFrame(code, reason, bytes(4) + reason.encode())
        self._progress += 1
        sub.connected = False  # the protocol is CLOSING: no more data frames
        sub.close_frame = frame
        sub.close_deadline = self.clock.now + self.close_timeout
        self._delivered(sub, sub.transport.write(frame, len(frame.data)))
        return True

    # -- time -----------------------------------------------------------------------

    def _next_event(self) -> float:
        now = self.clock.now
        soonest = math.inf
        for sub in self._subscribers:
            relay = sub.relay
            transport = sub.transport
            if relay is not None and relay.state == _WAITING:
                soonest = min(soonest, relay.until)
            if sub.trace.ended is not None:
                continue
            if sub.asked:
                # An acknowledging client's reads are events: each may be the ack its
                # relay waits for.
                soonest = min(soonest, sub.ack_due)
                if transport.unread and 0 < transport.rate < math.inf:
                    soonest = min(soonest, now + transport.seconds_until_next())
            close_frame = sub.close_frame
            if close_frame is not None:
                soonest = min(soonest, sub.close_deadline)
            if transport.closed or transport.rate == 0:
                continue
            if transport.paused:
                soonest = min(soonest, now + transport.seconds_until(transport.low))
            if close_frame is not None:
                soonest = min(soonest, now + transport.seconds_until_read(close_frame))
        return max(soonest, now)

    def _move_to(self, when: float) -> None:
        start = self.clock.now
        if when > start:
            for sub in self._subscribers:
                for item, at in sub.transport.read_for(start, when - start):
                    self._delivered(sub, (item,), at)
            self.clock.jump_to(when)
        for sub in self._subscribers:
            transport = sub.transport
            if sub.trace.ended is None and transport.rate > 0:
                # A due event too close to represent as a later float time: read up to it.
                if transport.paused and when + transport.seconds_until(transport.low) <= when:
                    self._delivered(sub, transport.drain(transport.buffered - transport.low))
                frame = sub.close_frame
                if frame is not None and when + transport.seconds_until_read(frame) <= when:
                    self._delivered(sub, transport.drain(transport.unread))
                if sub.asked and when + transport.seconds_until_next() <= when:
                    self._delivered(sub, transport.drain_next())
            if sub.trace.ended is None and sub.close_deadline <= when:
                transport.abort()
                self._end(sub, "aborted", 1006, when)
            if sub.asked and sub.ack_due <= when and sub.trace.ended is None:
                self._acknowledge(sub, when)
            self._after_read(sub)
        self._run_ready()

    # -- bookkeeping ------------------------------------------------------------------

    def _subscriber(self, client: int) -> _Subscriber:
        """The current connection of schedule client ``client``."""
        if not 0 <= client < len(self._current):
            raise IndexError(f"client={client!r} is not one of the {len(self._current)} clients")
        return self._subscribers[self._current[client]]

    def _sample(self, sub: _Subscriber) -> None:
        now = self.clock.now
        outbox = sub.outbox
        queue = outbox.queue
        sub.trace.samples.append(
            Sample(
                at=now,
                step=self.step,
                queued_messages=len(queue),
                queued_bytes=queue.bytes,
                lag=outbox.lag(now),
                write_buffer=sub.transport.buffered,
                kernel_unsent=sub.transport.kernel_unsent,
                open=sub.attached and outbox.closing is None,
                stats=outbox.stats(now),
            )
        )

    def _fail(self, message: str, client: int | None) -> None:
        raise SimulationError(message, step=self.step, time=self.clock.now, client=client)


def _seqs(message: Message) -> tuple[int, ...]:
    """The messages a written frame carries: none for a control frame."""
    if message.control:
        return ()
    if isinstance(message, Batched):
        return tuple(part.seq for part in message.parts)
    return (message.seq,)


def _folds(message: Message) -> tuple[tuple[tuple[int, ...], ...], tuple[bytes, ...]]:
    """A written frame's ``folded`` and ``parts``: empty unless a reducer merged one of
    the messages it carries."""
    parts = message.parts if isinstance(message, Batched) else (message,)
    if not any(isinstance(part, Merged) for part in parts):
        return (), ()
    folded = tuple(
        tuple(m.seq for m in part.folded) if isinstance(part, Merged) else (part.seq,)
        for part in parts
    )
    return folded, tuple(part.payload for part in parts)


# -- schedules -------------------------------------------------------------------------------


def _payload(seq: int, size: int, binary: bool) -> str | bytes:
    """A payload of exactly ``size`` bytes that names its message, for readable traces."""
    text = (f"#{seq}" + "." * size)[:size]
    return text.encode() if binary else text


def _run_publish(sim: Simulator, step: Publish) -> None:
    keys = step.keys
    first = sim.next_seq
    sim.publish_many(
        (
            (
                _payload(first + i, step.size, step.binary),
                step.topic,
                keys[i % len(keys)] if keys else None,
            )
            for i in range(step.n)
        ),
        lossless=step.lossless,
    )


def _run_set_policy(sim: Simulator, step: SetPolicy) -> None:
    sim.set_policy(step.client, step.policy)


def _run_send(sim: Simulator, step: Send) -> None:
    sim.send(step.client, _payload(sim.next_seq, step.size, False))


def _run_advance(sim: Simulator, step: Advance) -> None:
    sim.advance(step.seconds)


def _run_read(sim: Simulator, step: Read) -> None:
    sim.read(step.client, step.rate)


def _run_stall(sim: Simulator, step: Stall) -> None:
    sim.stall(step.client)


def _run_drain(sim: Simulator, step: Drain) -> None:
    sim.drain(step.client, step.nbytes)


def _run_hangup(sim: Simulator, step: Hangup) -> None:
    sim.hangup(step.client)


def _run_reconnect(sim: Simulator, step: Reconnect) -> None:
    sim.reconnect(step.client)


_RUNNERS: dict[type[Step], Callable[[Simulator, Any], None]] = {
    Publish: _run_publish,
    Send: _run_send,
    Advance: _run_advance,
    Read: _run_read,
    Stall: _run_stall,
    Drain: _run_drain,
    Hangup: _run_hangup,
    Reconnect: _run_reconnect,
    SetPolicy: _run_set_policy,
}
"""What each step does, as a table."""


def simulate(
    policy: Policy | Callable[[Snapshot], Decision],
    schedule: Schedule,
    *,
    settle: bool = True,
    close_timeout: float = 5.0,
    outbox_factory: OutboxFactory = Outbox,
    history: History | None = None,
    history_factory: HistoryFactory = MemoryHistory,
    settle_horizon: float = SETTLE_HORIZON,
) -> Trace:
    """Run ``schedule`` with every client under ``policy`` and return the trace.

    With ``settle`` (the default) the run ends as a liveness check does: publishing
    stops, every client still connected reads everything, and time runs until nothing
    is left to happen, or until ``settle_horizon`` seconds pass with nothing written
    (:meth:`Simulator.settle`). With ``history``, the hub keeps each topic's messages
    under that bound, for clients that reconnect. A :class:`SimulationError` is
    recorded in
    ``trace.error``.
    """
    sim = Simulator(
        start=schedule.start,
        close_timeout=close_timeout,
        outbox_factory=outbox_factory,
        history=history,
        history_factory=history_factory,
    )
    for client in schedule.clients:
        sim.join(policy, client)
    try:
        for index, step in enumerate(schedule.steps):
            sim.step = index
            sim.run(step)
        if settle:
            sim.settle(settle_horizon)
            sim.trace.settled = True
    except SimulationError as error:
        sim.trace.error = error
    return sim.trace
