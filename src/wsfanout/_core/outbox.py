"""The sans-I/O core of one subscriber: a queue, its policy and the actions they imply.

Theory of operation
-------------------
The outbox never awaits and never reads a clock: every input carries ``now`` and the
transport's write-buffer size (worked out by the shell as ``contract.py`` says), and
every output is an action for the I/O shell (the relay, or ``Hub.publish`` on the fast
path) to perform at once. The testing toolkit drives the same object with a fake
transport and a virtual clock.

Two inputs:

* :meth:`Outbox.offer` at publish. **Fast path**: with an empty queue, a write buffer
  at or under the low-water mark and a policy that says "send now" (an ``eager``
  policy says so without being asked), the answer is ``WRITE``: the caller writes the
  message immediately, no task wakes. Otherwise the message enters the queue under the
  policy's rules, and the answer tells the caller whether the relay must run (``KICK``)
  or the subscriber must be closed (``CLOSE``).
* :meth:`Outbox.next_action` from the relay: write these frames, wait (for the buffer
  to drain and/or until a time), close, or stop (``IDLE``: the queue is empty and the
  relay task can end, so only subscribers that fell behind have a task). A ``Write``
  marked ``idle`` leaves nothing to do: the next turn would answer ``IDLE``, so the
  relay may stop without asking.

A shell that runs the relay's first turn within the offer's call (the hub does, for a
message the policy holds on purpose: a batch lingering, a throttle's slot) may let the
offer take that turn (:attr:`Outbox.takes_turn`): the offer that queued the first
message, after the policy said to hold it, asks the policy again about the queue as it
now is (the answer about the empty queue is never reused for the wait), arms the drain
meter as the turn would, and answers ``WAIT`` with the time (:attr:`Outbox.until`),
or ``KICK`` with any other action kept for the shell's very next :meth:`next_action`.
The policy sees the same snapshots, as often, either way.

Subscribers of one policy mostly take the same turns at the same instants: a publish
reaches a thousand of them with empty queues, and their batches fall due together.
For a policy whose decisions are shared (it declares what it reads, ``Policy.reads``),
the outbox remembers the last first turn that planned a wait (:class:`_Linger`) and
the last turn that wrote a whole queue in one frame (:class:`_Flush`), with what their
asks were keyed by; the next subscriber in the same state at the same instant, down
to the messages queued, the drain sample and the losses to announce, takes the same
turn without asking again: the same counts, the same answer, the same state after it.

Control frames (a gap notice, a heartbeat, a resume frame: docs/protocol.md) are not
messages: :meth:`Outbox.send_control` puts one in the *control lane*, which no policy
sees and no message counter counts, and which is written before any later message.
While the lane holds anything the fast path is off (``fast_limit`` is -1, under any
buffer size), so a message published meanwhile cannot overtake it. Gap notices
(``Notify``) use the same lane: while the queue's ledger holds a loss not yet announced
the fast path is off too, and the ledger becomes notices in the lane as soon as the
relay may write, so every loss is announced before any later message.

A policy may be replaced while it runs (:meth:`Outbox.set_policy`): the queue is
reshaped under the new rules at once, the counters go on, and the new policy decides
from the next snapshot on.

A message leaves the queue only in the action that writes it, so order holds when the
fast path and the relay alternate: the fast path is taken only when the queue is empty.
Writes stop once the buffer passes the high-water mark, and nothing is written while it
is over, so a stalled client holds at most its queue bound plus one write limit: the
high-water mark and the frame that crossed it (the relay counts each frame with its
header, so a write of many small frames stops there too).

Below the write buffer, the kernel holds bytes of its own. A policy that decides sees
them on the slow path only: the shell may give the outbox a probe (``kernel``, one
read of what the kernel says as a :class:`KernelView`, or ``kernel_unsent``, the
unsent bytes alone), which it calls at most once per relay turn, for a subscriber that
is behind, never on the fast path.

Two things ride on the relay's turns, never on the fast path. The write buffer's size
at each turn (and what the kernel says, with a ``kernel`` probe) feeds a
:class:`DrainMeter` (``drain.py``), whose rates are the snapshot's ``drain_rate`` and
``delivery_rate``. And a *ladder* policy (``Escalate``, ``Adaptive``) may answer with a
:class:`LevelStep`: the outbox then switches the queue to that level's rules at once
(:meth:`MessageQueue.reshape`, the same reshape :meth:`Outbox.set_policy` uses; a
smaller bound evicts as its overflow rule says, never a lossless message, or closes),
announces the losses of the old level first, counts the step, puts its notice in the
control lane if the ladder announces steps, and calls :attr:`Outbox.on_step`. Above its
first level a ladder is also asked when the queue empties, and the relay waits for the
time it names (the end of its hold), so that a subscriber that caught up steps back down.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import attrs

from .acks import ACK_INTERVAL, AckWindow
from .control import ack_request
from .decision import NEUTRAL, Close, Decision, LevelStep
from .drain import DrainMeter, KernelView
from .frames import frame_size
from .message import Batched, Message, make_control
from .notices import Notice
from .policy import Policy, decides, is_steady, reads_acks, shared_reads
from .queue import MessageQueue, Push, Run
from .rules import Rules, resolve_rules
from .snapshot import Snapshot
from .stats import SubscriberStats

__all__ = ["IDLE", "Action", "CloseAction", "Idle", "Offer", "Outbox", "Wait", "Write"]


class Offer(enum.Enum):
    NONE = 0
    """Queued or refused; nothing for the caller to do."""
    WRITE = 1
    """Write the message now (fast path); it is already counted as sent."""
    KICK = 2
    """The relay must run now: start it if absent, wake it if waiting."""
    CLOSE = 3
    """The subscriber is closing; the relay performs the close."""
    WAIT = 4
    """Queued, and the relay's turn taken already: it waits until :attr:`Outbox.until`,
    for that time alone. Only to a shell that set :attr:`Outbox.takes_turn`."""


_WRITE = Offer.WRITE  # read once: an enum member lookup costs more than the whole fast path
_KICK = Offer.KICK
_NONE = Offer.NONE
_WAIT = Offer.WAIT
_OVERFLOW = Push.OVERFLOW


@attrs.frozen
class Write:
    """Write these frames now, in order, in one transport write.

    ``idle``: nothing is left to do after it (nothing queued or waiting in the control
    lane, no ladder to ask): asked again before anything else happens, the outbox would
    answer :data:`IDLE`, so the caller may stop without asking.
    """

    frames: tuple[Message, ...]
    idle: bool = False


@attrs.frozen
class Wait:
    """Wait until ``until`` (same clock), a kick, or, with ``drain``, the buffer draining."""

    until: float
    drain: bool


@attrs.frozen
class CloseAction:
    """Close the connection with this code and reason, then stop."""

    close: Close


@attrs.frozen
class Idle:
    """Nothing queued: the relay may stop. The only instance is :data:`IDLE`."""


IDLE = Idle()

Action = Write | Wait | CloseAction | Idle

QUEUE_FULL = "queue full"


class Outbox:
    """One subscriber's queue, policy and counters; see the module docstring for the protocol."""

    __slots__ = (
        "_acks",
        "_asked",
        "_batch",
        "_behind_since",
        "_close_emitted",
        "_decide",
        "_decision",
        "_drain",
        "_eager",
        "_ladder",
        "_memo",
        "_planned",
        "_probe",
        "_share_mode",
        "_shared",
        "_steady",
        "batched",
        "closed_by_policy",
        "closing",
        "control",
        "control_bytes",
        "control_frames",
        "disconnected",
        "fast_limit",
        "fast_max",
        "frames",
        "high",
        "last_send",
        "lingered",
        "low",
        "offered",
        "on_step",
        "policy",
        "queue",
        "rules",
        "sent",
        "steps_down",
        "steps_up",
        "takes_turn",
        "until",
    )

    _decide: Callable[[Snapshot], Decision] | None
    _asked: tuple[float, int, int, int] | None  # what the standing decision was asked about
    _decision: Decision | None
    _memo: object
    _planned: Action | Exception | None

    def __init__(
        self,
        policy: Policy,
        *,
        high: int,
        low: int,
        kernel_unsent: Callable[[], int | None] | None = None,
        kernel: Callable[[], KernelView | None] | None = None,
    ) -> None:
        if not 0 <= low <= high:
            raise ValueError(f"write limits (high={high}, low={low}) need 0 <= low <= high")
        rules = resolve_rules(policy)
        self.queue = MessageQueue(rules)
        self.high = high
        self.low = low
        self.fast_limit = low
        """The write buffer up to which a message may take the fast path: ``low``, or -1
        while a control frame or a gap notice waits (nothing may overtake it)."""
        self.fast_max = self.queue.max_bytes
        """The largest payload the fast path writes: the queue's byte bound, so a message
        the queue would refuse is refused (or closes the subscriber) on the fast path too,
        and what the fast path writes is bounded by what the queue could have held."""
        # A list, not a deque: 56 bytes against 760 for every idle subscriber, and the
        # lane is appended to and emptied from the front a write at a time.
        self.control: list[Message] = []
        """Control frames waiting to be written before any later message."""
        self.control_bytes = 0
        self.control_frames = 0
        """Control frames written so far (not counted as messages, nor as ``frames``)."""
        self.on_step: Callable[[LevelStep], None] | None = None
        """Called with each :class:`LevelStep` as it is taken (the shell tells the
        application); it must not call back into this outbox."""
        self.takes_turn: Callable[[], bool] | None = None
        """Set by a shell that runs the relay's first turn within the offer's call (the
        hub does): called when an offer has queued the first message after the policy
        said to hold it, True when the shell would now call :meth:`next_action` with
        the same ``now`` and write buffer before anything else. The offer then takes
        that turn itself: ``WAIT`` when it waits for a time alone, else ``KICK`` with
        the turn's action kept for that very call. The policy is asked as often, with
        the same snapshots, as without."""
        self.until = math.inf
        """The time the last offer that answered ``WAIT`` waits for."""
        self.lingered: object = None
        """After an offer that answered ``WAIT``: the shared first turn it took (the same
        object for every subscriber that took it, in the same state after it), or None
        if the turn was this subscriber's own. The hub groups subscribers by it."""
        self._planned = None  # the turn an offer took, for next_action (or what it raised)
        self._drain: DrainMeter | None = None  # made on the first wait: the slow path
        self._acks: AckWindow | None = None  # while the client is asked to acknowledge
        self.steps_up = 0
        """Steps a ladder took to a higher level (across policy changes: a counter)."""
        self.steps_down = 0
        """Steps a ladder took back down."""
        self._adopt(policy, rules)
        # What the kernel says, read only when a snapshot is built off the fast path.
        self._probe = (
            kernel if kernel is not None or kernel_unsent is None else _unsent(kernel_unsent)
        )
        self.last_send: float | None = None
        # Publish time of the oldest message offered since the last write that the
        # subscriber has not received, queued or dropped since; None when caught up.
        self._behind_since: float | None = None
        self.offered = 0
        self.sent = 0
        self.frames = 0
        self.batched = 0
        self.disconnected = 0
        self.closing: Close | None = None
        # True when the policy or an overflowing queue closed the subscriber.
        self.closed_by_policy = False
        self._close_emitted = False

    # -- inputs ---------------------------------------------------------------------

    def offer(self, message: Message, now: float, write_buffer: int) -> Offer:
        """A message for this subscriber; see :class:`Offer` for what the caller must do."""
        self.offered += 1
        if self.closing is not None:
            self.disconnected += 1
            return Offer.NONE
        queue = self.queue
        asked = False
        # Hot path (once per subscriber per publish): queue._entries, not the queue's
        # Python-level __bool__. The one friend pair of the package (tests/test_layout.py).
        # fast_limit is low, or -1 while a control frame waits: one comparison for both.
        if (
            write_buffer <= self.fast_limit
            and not queue._entries
            and len(message.payload) <= self.fast_max
        ):
            if self._eager:
                self.sent += 1
                self.frames += 1
                self.last_send = now
                return _WRITE
            shared = self._shared
            if shared is not None:
                linger = _last_linger
                if linger is not None and linger.message is message and linger.shared is shared:
                    repeated = self._repeat_linger(linger, now, write_buffer)
                    if repeated is not None:
                        return repeated
            behind, fresh = self._behind_since, self._memo is None  # as the ask sees them
            try:
                decision = self._ask(now, write_buffer, None)
            except Exception:
                # The policy raised: the shell discards this subscriber; the message,
                # neither sent nor queued, is counted as lost with it.
                self.disconnected += 1
                raise
            if decision.close is not None:
                self.disconnected += 1
                return self._begin_close(decision.close)
            if decision.send_at <= now and not self.control:  # an announced step goes first
                self.sent += 1
                self.frames += 1
                self.last_send = now
                self._decision = None  # last_send changed: ask again next time
                if self._acks is not None:
                    self._acks.wrote(len(message.payload))
                return Offer.WRITE
            asked = True
        was_empty = not queue._entries
        pushed = queue.push(message)
        if pushed is _OVERFLOW:
            self.disconnected += 1
            return self._begin_close(Close(1013, QUEUE_FULL, cause=self._overflow_cause(message)))
        # Only a subscriber whose policy announces losses has a ledger, and only a loss
        # fills it: nothing more to test for anyone else.
        ledger = queue.ledger
        weight = 0 if ledger is None else ledger.weight
        unannounced = weight > 0
        if unannounced:
            if weight + self.control_bytes > queue.max_bytes:  # _notices_overflow(), inlined
                return self._begin_close(Close(1013, QUEUE_FULL, cause=self._notices_cause()))
            self.fast_limit = -1  # no message may overtake the notice
        if not queue._entries:
            if pushed is Push.REFUSED and self._decide is not None:
                # A message too big for the byte bound, refused at an empty queue: no
                # recheck condition can announce this drop, so tell the policy now (it
                # may be counting drops). Rare: only oversize messages come here.
                decision = self._ask(now, write_buffer, self._kernel())
                if decision.close is not None:
                    return self._begin_close(decision.close)
            # The relay writes the notice of a refusal that left nothing queued.
            return Offer.KICK if unannounced else Offer.NONE
        if was_empty:
            self._behind_since = queue.oldest_time
        if self._decide is not None:
            standing = self._decision
            if not asked and (
                was_empty
                or standing is None
                or len(queue._entries) >= standing.recheck_messages
                or queue.bytes >= standing.recheck_bytes
            ):
                decision = self._ask(now, write_buffer, self._kernel())
                if decision.close is not None:
                    return self._begin_close(decision.close)
                return Offer.KICK
            if asked and not unannounced:
                takes_turn = self.takes_turn
                if takes_turn is not None and takes_turn():
                    outcome = self._first_turn(now, write_buffer)
                    self.lingered = None
                    # Both asks shared (no memo before either) and no memo left after.
                    if (
                        outcome is _WAIT
                        and self._shared is not None
                        and fresh
                        and decision.memo is None
                        and self._memo is None
                    ):
                        self._remember_linger(message, now, write_buffer, behind)
                    return outcome
        return _KICK if was_empty else _NONE

    def offer_behind(self, message: Message) -> bool:
        """Queue ``message`` behind others without the write buffer, if :meth:`offer`
        would neither ask the policy nor make room for it (a batch filling up, say):
        then it does what that offer does, which answers ``NONE``. False: nothing is
        done, and the caller makes the full offer."""
        queue = self.queue
        entries = queue._entries
        if not entries or self.closing is not None or queue.arrival is not None:
            return False
        ledger = queue.ledger
        if ledger is not None and ledger.weight:
            return False
        count = len(entries) + 1
        total = queue.bytes + len(message.payload)
        if count > queue.max_messages or total > queue.max_bytes:
            return False  # push() would make room: evictions, a refusal, an overflow
        if self._decide is not None:
            standing = self._decision
            if (
                standing is None
                or count >= standing.recheck_messages
                or total >= standing.recheck_bytes
            ):
                return False  # offer() would ask, with the write buffer
        self.offered += 1
        queue.push(message)
        return True

    def offer_run(self, run: Run) -> None:
        """Offer ``run``'s messages, which :meth:`offer_behind` queued one by one for a
        subscriber in this one's state (the same queue, bounds and standing decision):
        the same answers here, taken at once."""
        self.offered += len(run)
        self.queue.push_run(run)

    def _remember_linger(
        self, message: Message, now: float, write_buffer: int, behind: float | None
    ) -> None:
        """The offer of ``message`` has just taken a first turn that waits: the next
        subscriber offered it in the same state may take the same turn without asking
        (:class:`_Linger`)."""
        global _last_linger
        mode = self._share_mode
        _last_linger = _Linger(
            message,
            self._shared,  # type: ignore[arg-type]
            now,
            behind,
            self.last_send if mode & _SHARE_LAST_SEND else None,
            write_buffer if mode & _SHARE_WRITE_BUFFER else None,
            self._decision,  # type: ignore[arg-type]
            self._behind_since,
            self.until,
        )
        self.lingered = _last_linger

    def _repeat_linger(self, linger: _Linger, now: float, write_buffer: int) -> Offer | None:
        """The first turn :meth:`_remember_linger` kept, taken again by this subscriber
        if both asks of the policy would see what they saw (the same instant, policy,
        message and shared fields), the shell takes the turn, and nothing else would
        differ (no drain sample begun, no loss to announce); None: take it in full."""
        mode = self._share_mode
        if (
            linger.now != now
            or self._memo is not None
            or self._behind_since != linger.behind
            or (mode & _SHARE_LAST_SEND and self.last_send != linger.last_send)
            or (mode & _SHARE_WRITE_BUFFER and write_buffer != linger.write_buffer)
        ):
            return None
        meter = self._drain
        if meter is not None and meter.armed:
            return None
        queue = self.queue
        ledger = queue.ledger
        if ledger is not None and ledger.weight:
            return None
        takes_turn = self.takes_turn
        if takes_turn is None or not takes_turn():
            return None
        # What the full turn does, given what it would find: the message queued (the
        # same rules accept it into an empty queue), the second answer kept, the drain
        # meter armed, the wait planned.
        queue.push(linger.message)
        self._behind_since = linger.behind_after
        decision = linger.decision
        self._decision = decision
        self._asked = (now, write_buffer, len(queue._entries), queue.bytes)
        if meter is None:
            meter = self._drain = DrainMeter()
        meter.arm(now, write_buffer, drain=False)
        self.until = linger.until
        self.lingered = linger
        return _WAIT

    def _first_turn(self, now: float, write_buffer: int) -> Offer:
        """The relay's first turn, taken by the offer that has just queued the first
        message: the shell would take it at once (:attr:`takes_turn`). The same turn as
        :meth:`next_action`'s, whose first steps are known here: nothing to announce,
        a buffer under ``low``, and a standing decision about the empty queue, which
        never holds for the queue as it is now."""
        meter = self._drain
        if self.control or (meter is not None and meter.armed):
            return _KICK  # a step's notice to write, a drain sample to take: next_action
        try:
            view = None if self._shared is not None else self._view()  # _kernel(), inlined
            decision = self._ask(now, write_buffer, view)
            action = self._act(decision, now, write_buffer, view, True)
        except Exception as exc:
            # The policy raised: raised from next_action, as it would have been there.
            self._planned = exc
            return _KICK
        if type(action) is Wait and not action.drain and action.until < math.inf:
            self.until = action.until
            return _WAIT
        self._planned = action
        return _KICK

    def send_control(self, frame: Message, now: float, write_buffer: int) -> Offer:
        """A control frame for this subscriber, to be written before any later message.

        ``WRITE``: write it now (nothing waits, the buffer is drained); ``KICK``: it waits
        in the control lane and the relay must run; ``CLOSE``: control frames backed up
        past the queue's byte bound (a client that reads nothing), so the subscriber is
        closing; ``NONE``: the subscriber is closing already and the frame is dropped.
        """
        if self.closing is not None:
            return Offer.NONE
        if write_buffer <= self.fast_limit and not self.queue:
            self.control_frames += 1
            if self._acks is not None:
                self._acks.wrote(len(frame.payload))
            return Offer.WRITE
        self._announce(now)  # losses recorded before this frame are announced before it
        self.control.append(frame)
        self.control_bytes += len(frame.payload)
        self.fast_limit = -1
        if self.control_bytes > self.queue.max_bytes:
            cause = (
                f"{len(self.control)} control frames, {self.control_bytes} bytes, waited "
                f"to be written (max_bytes={self.queue.max_bytes})"
            )
            return self._begin_close(Close(1013, QUEUE_FULL, cause=cause))
        return Offer.KICK

    def want_acks(self, answers: bool, now: float) -> str | None:
        """The shell's rule for acknowledgements (docs/protocol.md): a client that can
        answer (``answers``: ``wsfanout.v1``, its messages read by the hub) is asked
        while its policy reads them (:func:`~wsfanout._core.policy.reads_acks`), and told
        to stop once it no longer does. Returns the control frame to send now with
        :meth:`send_control` (the counting has begun or ended), or None."""
        if self.closing is not None:
            return None
        wanted = answers and reads_acks(self.policy)
        if wanted and self._acks is None:
            self.ask_acks(now)
            return ack_request(ACK_INTERVAL)
        if not wanted and self._acks is not None:
            self.stop_acks()
            return ack_request(None)
        return None

    def ask_acks(self, now: float) -> None:
        """The shell is about to send the client an ``ack-request`` (docs/protocol.md)
        with :meth:`send_control`: count every frame written from it on."""
        self._acks = AckWindow(self.frames + self.control_frames, now)
        self._eager = self._eagerness()

    def stop_acks(self) -> None:
        """The client is no longer asked to acknowledge: forget what it said."""
        self._acks = None
        self._eager = self._eagerness()

    @property
    def acks(self) -> AckWindow | None:
        """What the client's acknowledgements say, while it is asked for them."""
        return self._acks

    def acknowledge(self, n: int, now: float) -> Offer:
        """The client says its application has taken ``n`` frames since the connection
        opened. ``KICK`` when that is news and messages wait: the policy, which may have
        been holding them for it, must be asked again."""
        acks = self._acks
        if acks is None or not acks.ack(n, now) or self.closing is not None:
            return Offer.NONE
        if not self.queue:
            return Offer.NONE
        self._decision = None
        return Offer.KICK

    def next_action(self, now: float, write_buffer: int) -> Action:
        """What the relay must do now. Call again after performing it."""
        planned = self._planned
        if planned is not None:  # the turn the offer took (takes_turn)
            self._planned = None
            if isinstance(planned, Exception):
                raise planned
            return planned
        if self.closing is not None:
            if self._close_emitted:
                return IDLE
            self._close_emitted = True
            return CloseAction(self.closing)
        meter = self._drain
        view: KernelView | None = None
        looked = False  # the kernel is read at most once a turn: nothing is written meanwhile
        if meter is not None and meter.armed:
            view, looked = self._kernel(), True
            meter.observe(now, write_buffer, view)
        queue = self.queue
        control = self.control
        if write_buffer <= self.high:
            ledger = queue.ledger
            if ledger is not None and ledger.weight:
                self._announce(now)
            if control:
                return self._write_control(write_buffer)
        if not queue._entries:
            return self._idle(now, write_buffer)
        shared = self._shared
        if shared is not None:
            flush = _last_flush
            if flush is not None and flush.shared is shared and flush.now == now:
                repeated = self._repeat_flush(flush, now, write_buffer)
                if repeated is not None:
                    return repeated
        if self._decide is None:
            decision = NEUTRAL
        elif self._holds(now, write_buffer):
            # Asked at this instant about this buffer, and told to wait: an answer that
            # still stands (the offer just asked; the relay's first turn plans the wait).
            decision = self._decision  # type: ignore[assignment]
        else:
            if not looked:
                view, looked = self._kernel(), True
            behind, last_send = self._behind_since, self.last_send  # as the ask saw them
            fresh = self._memo is None  # the ask is shared, keyed as _Flush records
            decision = self._ask(now, write_buffer, view)
            action = self._act(decision, now, write_buffer, view, looked)
            if (
                shared is not None
                and fresh
                and decision.memo is None
                and type(action) is Write
                and len(action.frames) == 1
                and not queue._entries
            ):
                self._remember_flush(action, now, write_buffer, behind, last_send)
            return action
        return self._act(decision, now, write_buffer, view, looked)

    def _remember_flush(
        self,
        write: Write,
        now: float,
        write_buffer: int,
        behind: float | None,
        last_send: float | None,
    ) -> None:
        """A turn has just asked the shared decisions and written the whole queue in
        one frame: the next subscriber holding the same messages in the same state at
        the same instant may take the same turn without asking (:class:`_Flush`)."""
        global _last_flush
        frame = write.frames[0]
        mode = self._share_mode
        _last_flush = _Flush(
            self._shared,  # type: ignore[arg-type]
            now,
            frame.parts if isinstance(frame, Batched) else (frame,),
            behind,
            last_send if mode & _SHARE_LAST_SEND else None,
            write_buffer if mode & _SHARE_WRITE_BUFFER else None,
            write,
        )

    def _repeat_flush(self, flush: _Flush, now: float, write_buffer: int) -> Write | None:
        """The write :meth:`_remember_flush` kept, taken again by this subscriber if the
        policy would be asked what it was asked (the same instant, policy, queue and
        shared fields), the frame would take the whole queue again, and the write would
        leave the same idleness; None: take the turn in full. The caller has taken the
        drain sample and found no control frame or loss waiting."""
        queue = self.queue
        entries = queue._entries
        mode = self._share_mode
        messages = flush.messages
        if (
            write_buffer > self.high
            or self.control
            or self._memo is not None
            or self._acks is not None
            or self.fast_limit < 0
            or self._behind_since != flush.behind
            or len(entries) != len(messages)
            or (mode & _SHARE_LAST_SEND and self.last_send != flush.last_send)
            or (mode & _SHARE_WRITE_BUFFER and write_buffer != flush.write_buffer)
        ):
            return None
        standing = self._decision
        if standing is not None and self._asked is not None and self._asked[0] == now:
            return None  # asked at this instant already: _holds() may keep that answer
        ledger = queue.ledger
        if (ledger is not None and ledger.weight) or tuple(entries.values()) != messages:
            return None
        # What the full turn does: the shared decision asked about this queue (and
        # forgotten once written), the whole queue taken in one frame, counted.
        self._asked = (now, write_buffer, len(entries), queue.bytes)
        self._decision = None
        count = queue.clear()
        self.sent += count
        self.frames += 1
        if count > 1:
            self.batched += count
        self.last_send = now
        self._behind_since = None
        return flush.write

    def _act(
        self,
        decision: Decision,
        now: float,
        write_buffer: int,
        view: KernelView | None,
        looked: bool,
    ) -> Action:
        """The rest of a turn of :meth:`next_action`: what ``decision`` means now; the
        kernel is read at most once a turn (``view``, when it has been: ``looked``)."""
        queue = self.queue
        control = self.control
        if decision.close is not None:
            self._begin_close(decision.close)
            self._close_emitted = True
            return CloseAction(decision.close)
        if control and write_buffer <= self.high:  # the decision announced a step
            return self._write_control(write_buffer)
        if not queue._entries:  # a step's smaller bound emptied it
            return self._idle(now, write_buffer)
        if write_buffer > self.high:
            self._arm(now, write_buffer, drain=True, kernel=view if looked else self._kernel())
            return _wait(decision.recheck_at, True)
        if decision.send_at > now:
            self._arm(now, write_buffer, drain=False, kernel=view if looked else self._kernel())
            return _wait(min(decision.send_at, decision.recheck_at), False)
        frames = []
        buffered = write_buffer
        acks = self._acks
        while True:
            frame = self._take_frame()
            frames.append(frame)
            if acks is not None:
                acks.wrote(len(frame.payload))  # before the next ask: the window counts it
            buffered += frame_size(len(frame.payload))
            self.last_send = now
            if not queue._entries or buffered > self.high:
                break
            if self._decide is not None:
                if self._steady and decision.memo is None:
                    continue  # the decision to write stands for what the write leaves
                try:
                    decision = self._ask(now, buffered, view)
                except Exception:
                    # The policy raised mid-write: the frames taken were never written.
                    self._unsend(frames)
                    raise
                if decision.close is not None:
                    # Close now, after the frames already taken: a later decision might
                    # not say so again (the new level of a step cannot hold what is
                    # queued), and a subscriber whose step just lost messages must not
                    # stay open past the losses that made its policy close.
                    self._begin_close(decision.close)
                    break
                # A step may announce itself (control) or evict what was left (queue).
                if decision.send_at > now or control or not queue._entries:
                    break
        if self._decide is not None:
            self._decision = None
        # Messages evicted later were queued now, so none is older than this.
        self._behind_since = queue.oldest_time if queue._entries else None
        ladder = self._ladder
        ledger = queue.ledger
        # What the next turn would find: nothing queued, announced or to announce, no
        # ladder above its first level to ask, no close to emit (and no drain sample:
        # a write never arms the meter). Then it answers IDLE, whatever the buffer.
        idle = (
            not queue._entries
            and not control
            and self.fast_limit >= 0
            and self.closing is None
            and (ladder is None or not ladder.level or self._decide is None)
            and (ledger is None or not ledger.weight)
        )
        return _write(tuple(frames), idle)

    def set_policy(self, policy: Policy, now: float, write_buffer: int) -> Offer:
        """Replace the policy while the subscriber runs; see :class:`Offer` for what the
        caller must do (never ``WRITE``).

        The queue is reshaped under the new rules at once, as if what is queued arrived
        again in order: a smaller bound evicts or refuses as the new policy says, or
        closes the subscriber (``CLOSE``) when it says so or when what may not be
        evicted does not fit. Losses recorded so far are announced in the old policy's
        format; counters, ``lag`` and ``last_send`` go on; the new policy's memo starts
        empty. ``KICK`` when something waits: the relay must plan again.
        """
        if self.closing is not None:
            self._adopt(policy, resolve_rules(policy))
            return Offer.NONE
        rules = resolve_rules(policy)
        self._announce(now)
        self._adopt(policy, rules)
        queue = self.queue
        left_over = queue.reshape(rules)
        self.fast_max = queue.max_bytes
        if left_over is not None:
            self.disconnected += len(left_over)
            cause = (
                f"the new policy's bound (max_messages={queue.max_messages}, "
                f"max_bytes={queue.max_bytes}) cannot hold the lossless messages queued"
            )
            return self._begin_close(Close(1013, QUEUE_FULL, cause=cause))
        ledger = queue.ledger
        if ledger is not None and ledger.weight:
            if self._notices_overflow():
                return self._begin_close(Close(1013, QUEUE_FULL, cause=self._notices_cause()))
            self.fast_limit = -1
        if not queue:
            self._behind_since = None
        elif self._decide is not None:
            decision = self._ask(now, write_buffer, self._kernel())
            if decision.close is not None:
                return self._begin_close(decision.close)
        return Offer.KICK if queue or self.fast_limit < 0 else Offer.NONE

    def _write_control(self, write_buffer: int) -> Write:
        # Control frames go alone, ahead of any message; no policy holds them back.
        # Like messages, a write stops after the frame that crosses the high-water
        # mark: the rest wait in the lane for the buffer to drain.
        control = self.control
        buffered = write_buffer
        count = 0
        for frame in control:
            count += 1
            buffered += frame_size(len(frame.payload))
            if buffered > self.high:
                break
        written = tuple(control[:count])
        del control[:count]
        if self._acks is not None:
            for frame in written:
                self._acks.wrote(len(frame.payload))
        self.control_bytes -= sum(len(frame.payload) for frame in written)
        self.control_frames += count
        if not control:
            self.fast_limit = self.low
        return Write(written)

    def _idle(self, now: float, write_buffer: int) -> Action:
        """Nothing queued: stop, unless control frames wait for the buffer to drain, or
        a ladder above its first level wants to be asked again (to step down)."""
        if self.control or self.fast_limit < 0:
            # Control frames and notices wait for the buffer to drain; messages may
            # still make the policy close the subscriber meanwhile.
            return Wait(math.inf, drain=True)
        if self.level and self._decide is not None:  # above a ladder's first level
            decision = self._ask(now, write_buffer, self._kernel())
            if decision.close is not None:
                self._begin_close(decision.close)
                self._close_emitted = True
                return CloseAction(decision.close)
            if self.control:  # the step down is announced
                if write_buffer <= self.high:
                    return self._write_control(write_buffer)
                return Wait(math.inf, drain=True)
            if self.level and decision.recheck_at < math.inf:
                return Wait(decision.recheck_at, drain=False)
        return IDLE

    def _arm(
        self, now: float, write_buffer: int, *, drain: bool, kernel: KernelView | None
    ) -> None:
        """The relay waits with messages queued: what leaves the buffer meanwhile drains."""
        meter = self._drain
        if meter is None:
            meter = self._drain = DrainMeter()
        meter.arm(now, write_buffer, drain=drain, kernel=kernel)

    def close(self, close: Close) -> bool:
        """Begin closing for a reason outside the policy; False if already closing."""
        if self.closing is not None:
            return False
        self._begin_close(close)
        self.closed_by_policy = False
        return True

    def discard(self) -> None:
        """The connection is gone: whatever is still queued is lost."""
        self.disconnected += self.queue.clear()
        self._clear_control()
        if self.closing is None:
            self._close_emitted = True
            self.closing = _GONE

    # -- views ----------------------------------------------------------------------

    def lag(self, now: float) -> float:
        """Seconds this subscriber has been missing messages; 0.0 when caught up.

        The age of the oldest message offered since the last write that it has not
        received, whether still queued or dropped since. With nothing dropped, that is
        the age of the oldest queued message; with drops it keeps growing while the
        client makes no progress, so a stalled client under ``DropOldest`` or
        ``SkipToLatest`` still reaches ``Disconnect(max_lag=...)``.
        """
        since = self._behind_since
        if since is None or not self.queue:
            return 0.0
        return max(0.0, now - since)

    def snapshot(self, now: float, write_buffer: int) -> Snapshot:
        """What the policy would see now, what the kernel says read from the probe."""
        return self._snapshot(now, write_buffer, self._view())

    def _snapshot(self, now: float, write_buffer: int, kernel: KernelView | None) -> Snapshot:
        queue = self.queue
        meter = self._drain
        acks = self._acks
        return Snapshot(
            now=now,
            queued_messages=len(queue),
            queued_bytes=queue.bytes,
            lag=self.lag(now),
            write_buffer=write_buffer,
            last_send=self.last_send,
            sent=self.sent,
            dropped=self.dropped,
            memo=self._memo,
            drain_rate=None if meter is None else meter.rate,
            delivery_rate=None if meter is None else meter.delivery_rate,
            kernel_unsent=None if kernel is None else kernel.unsent,
            unacked=None if acks is None else acks.unacked,
            ack_rate=None if acks is None else acks.rate,
        )

    @property
    def level(self) -> int:
        """The ladder's level in force; 0 for a policy without levels."""
        ladder = self._ladder
        return 0 if ladder is None else ladder.level

    @property
    def dropped(self) -> int:
        q = self.queue
        return q.dropped_oldest + q.dropped_newest + q.skipped + q.conflated + self.disconnected

    def stats(self, now: float) -> SubscriberStats:
        queue = self.queue
        return SubscriberStats(
            offered=self.offered,
            sent=self.sent,
            frames=self.frames,
            batched=self.batched,
            dropped_oldest=queue.dropped_oldest,
            dropped_newest=queue.dropped_newest,
            skipped=queue.skipped,
            conflated=queue.conflated,
            disconnected=self.disconnected,
            queued_messages=len(queue),
            queued_bytes=queue.bytes,
            peak_messages=queue.peak_messages,
            peak_bytes=queue.peak_bytes,
            lag=self.lag(now),
            close=None if self.closing is _GONE else self.closing,
            level=self.level,
            steps_up=self.steps_up,
            steps_down=self.steps_down,
            drain_rate=None if self._drain is None else self._drain.rate,
            unacked=None if self._acks is None else self._acks.unacked,
            ack_rate=None if self._acks is None else self._acks.rate,
        )

    # -- internals ------------------------------------------------------------------

    def _eagerness(self) -> bool:
        """Whether the fast path may write without asking: the policy (a ladder's level)
        says "send now" to an empty queue, or never decides; never while the client is
        asked for acknowledgements, which a policy that decides may hold for."""
        if self._decide is None:
            return True
        if self._acks is not None:
            return False
        ladder = self._ladder
        return ladder.eager[ladder.level] if ladder is not None else self.policy.eager

    def _adopt(self, policy: Policy, rules: Rules) -> None:
        """Take ``policy`` (whose resolved rules are ``rules``) as the one to consult."""
        self.policy = policy
        self.rules = rules
        self._batch = rules.batch
        self._decide = policy.decide if decides(policy) else None
        levels = policy.level_policies()
        # A ladder's levels and where it stands (a new policy starts at its first level);
        # None without levels (one slot, so a subscriber without a ladder pays a pointer).
        self._ladder: _Ladder | None = _Ladder(levels) if len(levels) > 1 else None
        self._eager = self._eagerness()
        reads = shared_reads(policy) if self._decide is not None else None
        self._shared = None if reads is None else _shared_decisions(policy)
        self._share_mode = (_SHARE_LAST_SEND if "last_send" in (reads or ()) else 0) | (
            _SHARE_WRITE_BUFFER if "write_buffer" in (reads or ()) else 0
        )
        self._steady = is_steady(policy)  # read only while _decide is set
        self._decision = None
        self._asked = None
        self._memo = None

    def _announce(self, now: float) -> None:
        """Turn the losses not yet announced into gap notices at the head of the lane."""
        ledger = self.queue.ledger
        if ledger is None or not ledger.weight:
            return
        notify = self.rules.notify
        assert notify is not None  # a queue keeps a ledger only under a notify rule
        for notice in ledger.take():
            frame = Notice(notice, notify(notice), time=now)
            self.control.append(frame)
            self.control_bytes += len(frame.payload)
        self.fast_limit = -1

    def _notices_overflow(self) -> bool:
        ledger = self.queue.ledger
        return ledger is not None and ledger.weight + self.control_bytes > self.queue.max_bytes

    def _notices_cause(self) -> str:
        ledger = self.queue.ledger
        weight = 0 if ledger is None else ledger.weight
        return (
            f"gap notices of about {weight} bytes waited to be written "
            f"(max_bytes={self.queue.max_bytes})"
        )

    def _kernel(self) -> KernelView | None:
        """What the kernel says, for the policy: not read (a syscall) for one that
        declared it does not look (a shared decision)."""
        return None if self._shared is not None else self._view()

    def _view(self) -> KernelView | None:
        """What the kernel says, read from the probe; its delivery rate is kept."""
        probe = self._probe
        if probe is None:
            return None
        view = probe()
        if view is not None and view.delivery_rate is not None:
            meter = self._drain
            if meter is None:
                meter = self._drain = DrainMeter()
            meter.kernel(view)
        return view

    def _ask(self, now: float, write_buffer: int, kernel: KernelView | None) -> Decision:
        decision = self._consult(now, write_buffer, kernel)
        if decision.step is None:
            return decision
        dropped = self.dropped
        decision = self._step(decision, now)
        if self.dropped > dropped and decision.close is None:
            # The step itself lost messages, all at once: stages that count losses (a
            # drop budget) see them now, before anything else is offered or written.
            again = self._consult(now, write_buffer, kernel)
            decision = again if again.step is None else self._step(again, now)
        return decision

    def _consult(self, now: float, write_buffer: int, kernel: KernelView | None) -> Decision:
        assert self._decide is not None
        shared = self._shared
        queue = self.queue
        queued = len(queue._entries)
        size = queue.bytes
        if shared is not None and self._memo is None:
            # What the policy reads, and nothing else: subscribers that agree on it share
            # the decision (the queue's length and bytes and the oldest message's time
            # give the lag).
            mode = self._share_mode
            key = (
                now,
                queued,
                size,
                self._behind_since,
                self.last_send if mode & _SHARE_LAST_SEND else None,
                write_buffer if mode & _SHARE_WRITE_BUFFER else None,
            )
            decision = shared.get(key)
            if decision is None:
                decision = self._decide(self._snapshot(now, write_buffer, None))
                if decision.memo is None and decision.step is None:
                    if len(shared) >= _SHARED_ENTRIES:
                        shared.clear()  # keys hold the clock: the old ones never recur
                    shared[key] = decision
        else:
            decision = self._decide(self._snapshot(now, write_buffer, kernel))
        self._decision = decision
        self._asked = (now, write_buffer, queued, size)  # a policy changes no queue
        self._memo = decision.memo
        return decision

    def _holds(self, now: float, write_buffer: int) -> bool:
        """True when the standing decision was made at ``now`` about this very queue and
        write buffer, and says to wait: asking again would show the policy what it has
        just seen. A decision that writes is never reused (the policy is asked before
        every write), nor one that stepped, nor one made before the message that came
        since (the fast path asks about an empty queue, before it queues the message)."""
        standing = self._decision
        if (
            standing is None
            or standing.step is not None
            or standing.send_at <= now
            or standing.recheck_at <= now
        ):
            return False
        queue = self.queue
        return self._asked == (now, write_buffer, len(queue._entries), queue.bytes)

    def _step(self, decision: Decision, now: float) -> Decision:
        """Take the decision's step: the new level's rules, counted, announced, told."""
        step = decision.step
        assert step is not None
        ladder = self._ladder
        if ladder is None or not 0 <= step.level < len(ladder.rules) or step.level == self.level:
            count = 1 if ladder is None else len(ladder.rules)
            raise ValueError(
                f"{self.policy!r} stepped from level {self.level} to {step.level}, "
                f"but it has {count} level{'s' if count > 1 else ''}"
            )
        if step.level > ladder.level:
            self.steps_up += 1
        else:
            self.steps_down += 1
        ladder.level = step.level
        self._announce(now)  # losses so far, in the old level's format
        rules = self.rules = ladder.rules[step.level]
        self._batch = rules.batch
        self._eager = self._eagerness()
        # The same reshape as set_policy: what is queued arrives again under the level's
        # rules; a lossless message is never evicted, and one that cannot fit closes.
        left_over = self.queue.reshape(rules)
        self.fast_max = self.queue.max_bytes  # the fast path refuses what this level would
        if left_over is not None:
            self.disconnected += len(left_over)  # out of the queue: lost with the close
        if step.announce:
            notice = make_control(step.notice(), time=now)
            self.control.append(notice)
            self.control_bytes += len(notice.payload)
            self.fast_limit = -1
        self._announce(now)  # what the step itself evicted, after the step's own notice
        if self.on_step is not None:
            self.on_step(step)
        if left_over is None or decision.close is not None:
            return decision
        q = self.queue
        messages = len(q) + len(left_over)
        size = q.bytes + sum(len(m.payload) for m in left_over)
        cause = (
            f"level {step.level} ({step.name}) holds at most {q.max_messages} messages and "
            f"{q.max_bytes} bytes; {messages} messages, {size} bytes queued could not fit"
        )
        return attrs.evolve(decision, close=Close(1013, QUEUE_FULL, cause=cause))

    def _begin_close(self, close: Close) -> Offer:
        self.closing = close
        self.closed_by_policy = True
        self.disconnected += self.queue.clear()
        self._clear_control()
        return Offer.CLOSE

    def _clear_control(self) -> None:
        self.control.clear()
        self.control_bytes = 0
        self.fast_limit = self.low
        if self.queue.ledger is not None:
            self.queue.ledger.clear()  # no notice can reach a subscriber that is closing

    def _overflow_cause(self, message: Message) -> str:
        q = self.queue
        return (
            f"a {len(message.payload)}-byte message did not fit: {len(q)} messages, "
            f"{q.bytes} bytes queued (max_messages={q.max_messages}, max_bytes={q.max_bytes})"
        )

    def _unsend(self, frames: list[Message]) -> None:
        """Count frames taken from the queue but not written as lost, not sent."""
        for frame in frames:
            parts = len(frame.parts) if isinstance(frame, Batched) else 1
            self.sent -= parts
            self.disconnected += parts
            self.frames -= 1
            if parts > 1:
                self.batched -= parts

    def _take_frame(self) -> Message:
        queue = self.queue
        batch = self._batch
        if batch is None:
            first = queue.pop()
            self.sent += 1
            self.frames += 1
            return first
        limit = batch.max_bytes if batch.max_bytes is not None else math.inf
        parts = queue.pop_batch(batch.max_messages, limit)
        first = parts[0]
        count = len(parts)
        self.sent += count
        self.frames += 1
        if count == 1:
            return first
        self.batched += count
        together = tuple(parts)
        global _last_batched
        combine = batch.combine
        last = _last_batched
        # Subscribers whose batches are due at once mostly hold the same messages: the
        # frame (combined, and later encoded and compressed) is made once for them all.
        if last is not None and last[0] is combine and last[1].parts == together:
            return last[1]
        frame = Batched(first.opcode, combine([part.payload for part in parts]), parts=together)
        _last_batched = (combine, frame)
        return frame


def _wait(until: float, drain: bool) -> Wait:
    """``Wait(until, drain)``; subscribers due at once share one (a frozen value)."""
    global _last_wait
    last = _last_wait
    if last is not None and last.until == until and last.drain is drain:
        return last
    wait = _last_wait = Wait(until, drain)
    return wait


def _write(frames: tuple[Message, ...], idle: bool) -> Write:
    """``Write(frames, idle)``; subscribers written the same frames share one."""
    global _last_write
    last = _last_write
    if last is not None and last.idle is idle and last.frames == frames:
        return last
    write = _last_write = Write(frames, idle)
    return write


_last_wait: Wait | None = None
_last_write: Write | None = None


class _Ladder:
    """A ladder policy's levels, resolved once, and the level the subscriber is at."""

    __slots__ = ("eager", "level", "rules")

    def __init__(self, levels: tuple[Policy, ...]) -> None:
        self.rules = tuple(resolve_rules(level) for level in levels)
        self.eager = tuple(level.eager or not decides(level) for level in levels)
        self.level = 0


_GONE = Close(1001, "", cause="connection lost")


class _Linger(NamedTuple):
    """A first turn that planned a wait (:meth:`Outbox._first_turn`), as the offer of
    ``message`` took it for one subscriber: what both asks were keyed by (``now``, the
    empty queue's ``behind``, the shared fields), and what the turn left behind. A
    named tuple, not an attrs value: one is made on every first turn taken in full, at
    half the cost."""

    message: Message
    shared: dict[_SharedKey, Decision]
    now: float
    behind: float | None
    last_send: float | None
    write_buffer: int | None
    decision: Decision
    behind_after: float | None
    until: float


class _Flush(NamedTuple):
    """A turn that wrote a subscriber's whole queue in one frame after asking the
    shared decisions: what the ask was keyed by (``now``, the queue's ``messages``,
    ``behind`` and the shared fields), and the write (a named tuple, as :class:`_Linger`)."""

    shared: dict[_SharedKey, Decision]
    now: float
    messages: tuple[Message, ...]
    behind: float | None
    last_send: float | None
    write_buffer: int | None
    write: Write


_last_flush: _Flush | None = None
"""The last such write; subscribers due at the same instant with the same messages
take it again (:meth:`Outbox._repeat_flush`)."""

_last_linger: _Linger | None = None
"""The last first turn that waited; subscribers offered the same message at the same
instant in the same state take it again (:meth:`Outbox._repeat_linger`)."""

_last_batched: tuple[Callable[[Sequence[bytes]], bytes], Batched] | None = None
"""The last batched frame made, with its combiner: the next subscriber whose batch
holds the very same messages shares it (messages compare by identity)."""

_SHARE_LAST_SEND = 1
_SHARE_WRITE_BUFFER = 2
_SHARED_ENTRIES = 64
"""Decisions kept per policy: a few instants' worth (keys hold the clock)."""

_SharedKey = tuple[float, int, int, "float | None", "float | None", "int | None"]
_SHARED: dict[Policy, dict[_SharedKey, Decision]] = {}
"""Shared decisions by policy (equal policies share: they are pure values)."""


def _shared_decisions(policy: Policy) -> dict[_SharedKey, Decision] | None:
    """The table of decisions shared by every subscriber of ``policy``; None for a
    policy that cannot be a key (an unhashable parameter)."""
    try:
        table = _SHARED.get(policy)
    except TypeError:
        return None
    if table is None:
        if len(_SHARED) >= 1024:
            _SHARED.clear()  # a process making policies without end: start again
        table = _SHARED[policy] = {}
    return table


def _unsent(probe: Callable[[], int | None]) -> Callable[[], KernelView | None]:
    """A ``kernel`` probe from a ``kernel_unsent`` one: the unsent bytes, nothing else."""

    def kernel() -> KernelView | None:
        unsent = probe()
        return None if unsent is None else KernelView(unsent=unsent)

    return kernel
