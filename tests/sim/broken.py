"""Deliberately broken policies and cores: each breaks one guarantee, and the toolkit
must catch it (a checker that cannot fail is worse than none)."""

from __future__ import annotations

import math
from typing import Any

import attrs

from wsfanout import Decision, History, Policy, Snapshot
from wsfanout.lowlevel import (
    Action,
    Batched,
    Held,
    MemoryHistory,
    Message,
    MessageQueue,
    Notice,
    Outbox,
    Overflow,
    Push,
    Rules,
    Write,
)
from wsfanout.policies import (
    Above,
    Batch,
    Below,
    ConflateByKey,
    Disconnect,
    DropOldest,
    Escalate,
    Level,
    Throttle,
    notice_json,
)
from wsfanout.testing import (
    BatchIntegrity,
    Bounded,
    DisconnectsWithin,
    GapsAnnounced,
    Guarantee,
    Lossless,
    MaxDrops,
    MaxSendRate,
    NewestDelivered,
    StepsApart,
)


@attrs.frozen(repr=False)
class LeakyBound(Policy):
    """Promises 10 messages but its queue rule allows 20."""

    eager = True

    def rules(self) -> Rules:
        return Rules(max_messages=20, overflow=Overflow.DROP_OLDEST)

    def guarantees(self) -> tuple[Guarantee, ...]:
        return (Bounded(max_messages=10),)


@attrs.frozen(repr=False)
class KeepsDropping(Policy):
    """Promises to close a subscriber past 2 drops in 10 s, but only ever drops."""

    eager = True

    def rules(self) -> Rules:
        return Rules(max_messages=2, overflow=Overflow.DROP_OLDEST)

    def guarantees(self) -> tuple[Guarantee, ...]:
        return (MaxDrops(count=2, window=10.0),)


@attrs.frozen(repr=False)
class LosesNewest(Policy):
    """Promises the newest value arrives, but refuses arrivals when one message is queued."""

    eager = True

    def rules(self) -> Rules:
        return Rules(max_messages=1, overflow=Overflow.DROP_NEWEST)

    def guarantees(self) -> tuple[Guarantee, ...]:
        return (NewestDelivered(),)


@attrs.frozen(repr=False)
class ConflatesTooMuch(ConflateByKey):
    """A per-key promise on a queue that also evicts the oldest key when full."""

    def rules(self) -> Rules:
        return attrs.evolve(super().rules(), max_messages=2, overflow=Overflow.DROP_OLDEST)


@attrs.frozen(repr=False)
class EagerThrottle(Throttle):
    """Claims to be eager, so the fast path writes without asking it: the rate breaks
    whenever the queue is empty."""

    eager = True


@attrs.frozen(repr=False)
class HalfThrottle(Policy):
    """Promises ``rate`` frames per second but spaces them for twice that."""

    rate: float = 10.0

    def decide(self, snapshot: Snapshot) -> Decision:
        if snapshot.last_send is None:
            return Decision()
        return Decision(send_at=snapshot.last_send + 0.5 / self.rate)

    def guarantees(self) -> tuple[Guarantee, ...]:
        return (MaxSendRate(self.rate),)


@attrs.frozen(repr=False)
class DropsButClaimsLossless(Policy):
    """Promises nothing is lost, with a queue that drops its oldest past 2 messages."""

    eager = True

    def rules(self) -> Rules:
        return Rules(max_messages=2, overflow=Overflow.DROP_OLDEST)

    def guarantees(self) -> tuple[Guarantee, ...]:
        return (Lossless(),)


@attrs.frozen(repr=False)
class NeverSends(Policy):
    """Holds every queued message forever: the queue never drains."""

    def decide(self, snapshot: Snapshot) -> Decision:
        return Decision(send_at=math.inf if snapshot.queued_messages else -math.inf)


@attrs.frozen(repr=False)
class HoldsAnHour(Policy):
    """Asks to send an hour from now each time it is asked: the relay wakes every hour
    and writes nothing. Settling gives up after one horizon instead of running on."""

    def decide(self, snapshot: Snapshot) -> Decision:
        return Decision(send_at=snapshot.now + 3600.0 if snapshot.queued_messages else -math.inf)


@attrs.frozen(repr=False)
class OverfullBatch(Batch):
    """Promises batches of 2 while its rule packs up to ``max_messages``."""

    def guarantees(self) -> tuple[Guarantee, ...]:
        return (BatchIntegrity(max_messages=2),)


@attrs.frozen(repr=False)
class ForgetfulDisconnect(Disconnect):
    """Decides like Disconnect but never asks to be woken: a lagging subscriber that
    receives nothing new is never closed."""

    def decide(self, snapshot: Snapshot) -> Decision:
        decision = super().decide(snapshot)
        return attrs.evolve(decision, recheck_at=math.inf)

    def guarantees(self) -> tuple[Guarantee, ...]:
        return (
            DisconnectsWithin(
                max_messages=self.max_messages, max_lag=self.max_lag, grace=self.grace
            ),
        )


# -- broken cores --------------------------------------------------------------------------


class ReorderingQueue(MessageQueue):
    """Hands out the newest queued message first."""

    def pop(self) -> Message:
        _, message = self._entries.popitem(last=True)
        self._forget(message)
        return message

    def peek(self) -> Message:
        return next(reversed(self._entries.values()))


class ReorderingOutbox(Outbox):
    """An outbox on a queue that reorders."""

    def __init__(self, policy: Policy, *, high: int, low: int, **probe: Any) -> None:
        super().__init__(policy, high=high, low=low, **probe)
        self.queue = ReorderingQueue(self.rules)


class DuplicatingOutbox(Outbox):
    """A relay step that writes the first frame of every write twice."""

    def next_action(self, now: float, write_buffer: int) -> Action:
        action = super().next_action(now, write_buffer)
        if isinstance(action, Write):
            return Write(action.frames[:1] + action.frames)
        return action


class GreedyOutbox(Outbox):
    """A relay that starts writing only at or under the high-water mark, as it should,
    then writes everything queued in that one go: the write buffer takes the queue."""

    def next_action(self, now: float, write_buffer: int) -> Action:
        action = super().next_action(now, write_buffer)
        if isinstance(action, Write) and self.queue and not self.control:
            rest = []
            while self.queue:
                rest.append(self._take_frame())
            return Write(action.frames + tuple(rest))
        return action


class HighBlindOutbox(Outbox):
    """A relay that ignores the high-water mark: writes into a full buffer."""

    def next_action(self, now: float, write_buffer: int) -> Action:
        return super().next_action(now, min(write_buffer, self.low))


class MiscountingOutbox(Outbox):
    """Counts one message too many as sent on every relay write."""

    def next_action(self, now: float, write_buffer: int) -> Action:
        action = super().next_action(now, write_buffer)
        if isinstance(action, Write):
            self.sent += 1
        return action


@attrs.frozen(repr=False)
class AsksAgainNow(Policy):
    """Asks to be rechecked at the very instant it decides, without deciding anything:
    on a stalled client the relay would wake, ask and wait again forever."""

    def decide(self, snapshot: Snapshot) -> Decision:
        return Decision(recheck_at=snapshot.now)


# -- broken ladders, folds and the cores that carry steps out ------------------------------


@attrs.frozen(repr=False)
class HastyEscalate(Escalate):
    """Steps as often as its short hold allows, but promises five seconds between steps."""

    def guarantees(self) -> tuple[Guarantee, ...]:
        return (StepsApart(hold=5.0),)


def concat(older: str | bytes, newer: str | bytes) -> str | bytes:
    """A reducer that keeps every update: the fold is visible in the payload."""
    return older + newer  # type: ignore[operator]


@attrs.frozen(repr=False)
class ForgetfulFold(ConflateByKey):
    """Promises the fold of every update of a key, but its queue keeps only the newest."""

    def rules(self) -> Rules:
        return attrs.evolve(super().rules(), reduce=None)


STEPPING = Escalate(
    levels=[
        Level(DropOldest(max_messages=32)),
        Level(
            DropOldest(max_messages=3),
            up=Above("queued_messages", 5),
            down=Below("queued_messages", 1),
        ),
    ],
    hold=0.01,
)
"""A ladder that steps often, between a bound of 32 messages and one of 3."""


class LazyReshapeQueue(MessageQueue):
    """Takes a level's rules without making what is queued fit them."""

    def reshape(self, rules: Rules) -> list[Message] | None:
        self.max_messages, self.max_bytes = rules.max_messages or 0, rules.max_bytes or 0
        return None


class ReversingReshapeQueue(MessageQueue):
    """Makes what is queued fit a level's rules, and reverses it."""

    def reshape(self, rules: Rules) -> list[Message] | None:
        left_over = super().reshape(rules)
        entries = list(self._entries.items())
        self._entries.clear()
        self._entries.update(reversed(entries))
        return left_over


class EchoingReshapeQueue(MessageQueue):
    """Queues again, at each step that leaves messages queued, the last message it
    handed out (a step that empties the queue would leave it stuck: Drains, not the
    duplicate this core is for)."""

    last: Message | None = None

    def pop(self) -> Message:
        message = self.last = super().pop()
        return message

    def reshape(self, rules: Rules) -> list[Message] | None:
        left_over = super().reshape(rules)
        last = self.last
        if last is not None and self._entries and last.seq not in self._entries:
            self._entries[last.seq] = last
            self.bytes += len(last.payload)
            if not last.droppable:
                self.pinned_messages += 1
                self.pinned_bytes += len(last.payload)
        return left_over


def _on(queue: type[MessageQueue]) -> type[Outbox]:
    class OutboxOn(Outbox):
        def __init__(self, policy: Policy, *, high: int, low: int, **probe: Any) -> None:
            super().__init__(policy, high=high, low=low, **probe)
            self.queue = queue(self.rules)

    OutboxOn.__name__ = f"OutboxOn{queue.__name__}"
    return OutboxOn


UnshapedOutbox = _on(LazyReshapeQueue)
ReversingStepOutbox = _on(ReversingReshapeQueue)
EchoingStepOutbox = _on(EchoingReshapeQueue)


# -- broken histories: each breaks Resumes() -------------------------------------------------


class OffByOneHistory(MemoryHistory):
    """Replays from the client's last offset, not after it: that message arrives twice."""

    def read(self, topic: str | None, after: int, last: int, now: float) -> Held:
        return super().read(topic, max(0, after - 1), last, now)


class ForgetfulHistory(MemoryHistory):
    """Leaves the newest message it holds out of a replay, and reports nothing."""

    def read(self, topic: str | None, after: int, last: int, now: float) -> Held:
        held = super().read(topic, after, last, now)
        return Held(held.messages[:-1], held.missing)


class OverTrimmingHistory(MemoryHistory):
    """Keeps one message fewer than its bound says (and honestly reports the rest)."""

    def __init__(self, limits: History) -> None:
        tighter = attrs.evolve(limits, max_messages=max(1, limits.max_messages - 1))
        super().__init__(tighter)


class SilentHistory(MemoryHistory):
    """Replays what it holds, but never reports what it no longer holds."""

    def read(self, topic: str | None, after: int, last: int, now: float) -> Held:
        return Held(super().read(topic, after, last, now).messages, ())


# -- broken gap notices and lossless lanes -------------------------------------------------


@attrs.frozen(repr=False)
class ClaimsNotices(DropOldest):
    """Promises gap notices but has no ``Notify`` stage: its losses go unannounced."""

    def guarantees(self) -> tuple[Guarantee, ...]:
        return (*super().guarantees(), GapsAnnounced())


class SilentOutbox(Outbox):
    """A queue that keeps no ledger: a ``Notify`` policy whose losses are never announced."""

    def __init__(self, policy: Policy, *, high: int, low: int, **probe: Any) -> None:
        super().__init__(policy, high=high, low=low, **probe)
        self.queue.ledger = None


class LateNoticeOutbox(Outbox):
    """Announces losses only once the queue is empty: messages published after a loss
    are written before its notice."""

    def _announce(self, now: float) -> None:
        if not self.queue:
            super()._announce(now)


class DoubleNoticeOutbox(Outbox):
    """Writes every notice twice."""

    def next_action(self, now: float, write_buffer: int) -> Action:
        action = super().next_action(now, write_buffer)
        if isinstance(action, Write) and any(isinstance(f, Notice) for f in action.frames):
            return Write(action.frames + action.frames)
        return action


class _RewritingOutbox(Outbox):
    """Replaces each notice it announces with what :meth:`rewrite` makes of it."""

    def _announce(self, now: float) -> None:
        before = len(self.control)
        super()._announce(now)
        for index in range(before, len(self.control)):
            frame = self.control[index]
            assert isinstance(frame, Notice)
            self.control[index] = self.rewrite(frame, now)

    def rewrite(self, frame: Notice, now: float) -> Notice:
        raise NotImplementedError


class OffByOneNoticeOutbox(_RewritingOutbox):
    """Announces every lost range one offset too far."""

    def rewrite(self, frame: Notice, now: float) -> Notice:
        ranges = [(a + 1, b + 1) for a, b in frame.notice.ranges]
        shifted = attrs.evolve(frame.notice, ranges=ranges)
        return Notice(shifted, notice_json(shifted), time=now)


class GarbledNoticeOutbox(_RewritingOutbox):
    """Writes notices whose payload is not what the stage's format makes of them."""

    def rewrite(self, frame: Notice, now: float) -> Notice:
        return Notice(frame.notice, '{"type":"gap"}', time=now)


class CarelessQueue(MessageQueue):
    """Makes room by evicting the oldest message, lossless or not."""

    def _make_room(self, message: Message, size: int) -> Push:
        entries = self._entries
        while entries and (len(entries) >= self.max_messages or self.bytes + size > self.max_bytes):
            self._lose(next(iter(entries)), "dropped_oldest")
            self.dropped_oldest += 1
        return Push.ACCEPTED


class CarelessOutbox(Outbox):
    """An outbox on a queue that evicts lossless messages."""

    def __init__(self, policy: Policy, *, high: int, low: int, **probe: Any) -> None:
        super().__init__(policy, high=high, low=low, **probe)
        self.queue = CarelessQueue(self.rules)


class BatchesLosslessOutbox(Outbox):
    """Packs all the messages of a relay write into one frame, lossless ones included."""

    def next_action(self, now: float, write_buffer: int) -> Action:
        action = super().next_action(now, write_buffer)
        if not isinstance(action, Write) or len(action.frames) < 2:
            return action
        parts = tuple(
            part
            for frame in action.frames
            for part in (frame.parts if isinstance(frame, Batched) else (frame,))
        )
        if any(part.control or part.opcode != parts[0].opcode for part in parts):
            return action
        # Counted as it is written, so that only the batching itself is wrong.
        self.frames -= len(action.frames) - 1
        self.batched += len(parts) - sum(
            len(frame.parts) for frame in action.frames if isinstance(frame, Batched)
        )
        payload = b"\n".join(part.payload for part in parts)
        return Write((Batched(parts[0].opcode, payload, parts=parts),))
