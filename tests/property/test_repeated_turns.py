"""A turn repeated for the next subscriber in the same state changes nothing.

When a publish reaches a thousand subscribers of one batching policy, each offer takes
the same first turn (the policy asked twice, the drain meter armed, a wait planned),
and when their shared deadline comes each takes the same write (the policy asked, the
whole queue in one frame). The outbox remembers the last such turn and lets the next
subscriber in the same state take it without asking (``Outbox._repeat_linger``,
``Outbox._repeat_flush``). Here three subscribers with one policy are told the same
things at the same instants, each with its own write buffer and each now and then told
something the others are not (a message, a control frame), once with the turns
repeated and once with every turn taken in full; what they answer, count and hold must
be the same after every step.
"""

from __future__ import annotations

from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

import wsfanout._core.outbox as outbox_module
from wsfanout import Decision, Policy, Snapshot
from wsfanout.lowlevel import Action, Message, Offer, Outbox, make_control, make_message
from wsfanout.policies import Batch, Disconnect, DropOldest, Notify, Throttle
from wsfanout.testing import policies

from .test_first_turn import HIGH, LOW, Shell, _state

N = 3


@attrs.frozen
class Publish:
    dt: float
    size: int
    key: str | None
    lossless: bool
    buffers: tuple[int, ...]
    to: tuple[bool, ...]


@attrs.frozen
class Turn:
    dt: float
    buffers: tuple[int, ...]


@attrs.frozen
class Control:
    dt: float
    to: int
    buffer: int


Op = Publish | Turn | Control


class Unrepeated(Outbox):
    """Takes every turn in full: nothing remembered reaches it, or comes from it."""

    def offer(self, message: Message, now: float, write_buffer: int) -> Offer:
        outbox_module._last_linger = outbox_module._last_flush = None
        try:
            return super().offer(message, now, write_buffer)
        finally:
            outbox_module._last_linger = outbox_module._last_flush = None

    def next_action(self, now: float, write_buffer: int) -> Action:
        outbox_module._last_linger = outbox_module._last_flush = None
        try:
            return super().next_action(now, write_buffer)
        finally:
            outbox_module._last_linger = outbox_module._last_flush = None


class AlwaysRepeated(Outbox):
    """Repeats the remembered write whenever the same messages are queued, whatever
    else differs (the last-send time a throttle reads, above all)."""

    def next_action(self, now: float, write_buffer: int) -> Action:
        flush = outbox_module._last_flush
        queue = self.queue
        if (
            flush is not None
            and flush.now == now
            and tuple(queue) == flush.messages
            and not self.control
            and self.closing is None
        ):
            count = queue.clear()
            self.sent += count
            self.frames += 1
            self.batched += count if count > 1 else 0
            self.last_send = now
            self._decision = None
            self._behind_since = None
            return flush.write
        return super().next_action(now, write_buffer)


def differences(policy: Policy, ops: list[Op], factory: type[Outbox] = Outbox) -> list[str]:
    """Run ``ops`` on ``N`` subscribers with turns repeated and on ``N`` without."""
    subjects = [Shell(factory(policy, high=HIGH, low=LOW), new=True) for _ in range(N)]
    references = [Shell(Unrepeated(policy, high=HIGH, low=LOW), new=True) for _ in range(N)]
    now = 1000.0
    found: list[str] = []
    for index, op in enumerate(ops):
        now += op.dt
        if isinstance(op, Publish):
            message = make_message(
                "x" * op.size, seq=index, time=now, key=op.key, droppable=not op.lossless
            )
            shown = [
                [
                    shell.offer(message, now, buffer) if to else None
                    for shell, buffer, to in zip(group, op.buffers, op.to, strict=True)
                ]
                for group in (subjects, references)
            ]
            buffers = op.buffers
        elif isinstance(op, Turn):
            shown = [
                [shell.turns(now, buffer) for shell, buffer in zip(group, op.buffers, strict=True)]
                for group in (subjects, references)
            ]
            buffers = op.buffers
        else:
            frame = make_control(f"control {index}", time=now)
            shown = [
                [_control(group[op.to], frame, now, op.buffer)] for group in (subjects, references)
            ]
            buffers = tuple(op.buffer for _ in range(N))
        new, old = shown
        if new != old:
            found.append(f"step {index} {op!r}: {old!r} in full, {new!r} repeated")
        for n in range(N):
            buffer = buffers[n]
            if _state(subjects[n].outbox, now, buffer) != _state(references[n].outbox, now, buffer):
                found.append(f"step {index} {op!r}: subscriber {n} differs")
            if subjects[n].owned != references[n].owned:
                found.append(f"step {index} {op!r}: a relay task owns subscriber {n} in one run")
        for shell in (*subjects, *references):
            found.extend(shell.problems)
        if found:
            break
    return found


def _control(shell: Shell, frame: Message, now: float, buffer: int) -> Any:
    outcome = shell.outbox.send_control(frame, now, buffer)
    if outcome is Offer.KICK and not shell.owned and buffer <= LOW:
        return ["KICK", *shell.turns(now, buffer)]
    return [outcome.name]


buffers = st.sampled_from((0, 0, 10, LOW, LOW + 1, HIGH, HIGH + 1))
each = st.tuples(*[buffers] * N)
delays = st.sampled_from((0.0, 0.0, 0.001, 0.004, 0.01, 0.05, 0.3, 2.0))
recipients = st.one_of(st.just((True,) * N), st.tuples(*[st.booleans()] * N))
ops = st.lists(
    st.one_of(
        st.builds(
            Publish,
            dt=delays,
            size=st.integers(min_value=1, max_value=300),
            key=st.sampled_from((None, None, "a", "b")),
            lossless=st.sampled_from((False, False, False, True)),
            buffers=st.one_of(st.just((0,) * N), each),
            to=recipients,
        ),
        st.builds(Turn, dt=delays, buffers=st.one_of(st.just((0,) * N), each)),
        st.builds(Control, dt=delays, to=st.integers(0, N - 1), buffer=buffers),
    ),
    max_size=40,
)

LINGERING = (
    Batch(max_messages=4, max_delay=0.01),
    Batch(max_messages=4, max_delay=0.01) | Notify(),
    DropOldest(max_messages=3) | Batch(max_messages=2, max_delay=0.004) | Notify(),
    Throttle(rate=100.0),
    Throttle(rate=100.0) | Batch(max_messages=8),
    Batch(max_messages=4, max_delay=0.01) | Disconnect(max_lag=0.3),
)


@given(st.sampled_from(LINGERING), ops)
def test_repeated_turns_change_nothing_for_a_lingering_policy(
    policy: Policy, steps: list[Op]
) -> None:
    assert differences(policy, steps) == []


@given(policies(max_messages=8, max_bytes=2048), ops)
def test_repeated_turns_change_nothing_for_any_policy(policy: Policy, steps: list[Op]) -> None:
    assert differences(policy, steps) == []


# -- the check catches what it must -------------------------------------------------


def test_a_write_repeated_for_a_subscriber_the_throttle_must_hold_is_caught() -> None:
    # All three hold one message; at t=0.12 subscriber 1, last written at t=0, may be
    # written, and subscriber 2, last written at t=0.05, must wait until t=0.15.
    policy = Throttle(rate=10.0)
    zero = (0,) * N
    steps: list[Op] = [
        Publish(0.0, 10, None, False, zero, (False, True, False)),
        Publish(0.05, 10, None, False, zero, (True, False, True)),
        Publish(0.02, 10, None, False, zero, (True,) * N),
        Turn(0.05, zero),
    ]
    assert differences(policy, steps) == []
    assert differences(policy, steps, AlwaysRepeated)


@attrs.frozen
class HoldsAfterLarge(Policy):
    """Writes large messages at once and remembers that it did (a memo); while it
    remembers, holds a small message for 10 ms; without a memo, lingers on anything
    small queued and writes an empty queue's message at once. A function of what it
    declares while its memo is None."""

    reads = frozenset(["now", "queued_messages", "queued_bytes", "memo"])

    def decide(self, snapshot: Snapshot) -> Decision:
        if snapshot.queued_bytes >= 100:
            return Decision(memo="large")
        if snapshot.memo == "large":
            return Decision(send_at=snapshot.now + 0.01)
        if snapshot.queued_messages:
            return Decision(send_at=snapshot.now + 0.01)
        return Decision()


def test_a_turn_asked_with_a_memo_is_not_repeated_for_a_subscriber_without_one() -> None:
    # Subscriber 0 alone wrote a large message and remembers it: offered a small one, it
    # holds it (asked with its memo), while the others, with none, write theirs at once.
    zero = (0,) * N
    steps: list[Op] = [
        Publish(0.0, 100, None, False, (LOW + 1, 0, 0), (True, False, False)),
        Turn(0.0, zero),
        Publish(1.0, 10, None, False, zero, (True,) * N),
        Turn(0.02, zero),
    ]
    assert differences(HoldsAfterLarge(), steps) == []


@attrs.frozen
class WritesWhenReminded(Policy):
    """Lingers for a second; once a message has waited 10 ms it asks to be reminded (a
    memo), and writes when asked again with that memo. A function of what it declares
    while its memo is None."""

    reads = frozenset(["now", "lag", "queued_messages", "memo"])

    def decide(self, snapshot: Snapshot) -> Decision:
        if snapshot.memo == "again":
            return Decision()
        if snapshot.queued_messages and snapshot.lag >= 0.01:
            return Decision(send_at=snapshot.now + 1.0, memo="again")
        if snapshot.queued_messages:
            return Decision(send_at=snapshot.now - snapshot.lag + 1.0)
        return Decision()


def test_a_write_asked_with_a_memo_is_not_repeated_for_a_subscriber_without_one() -> None:
    # All three hold the same message; a control frame makes subscriber 0 alone ask at
    # t=0.02, and remember. At t=0.03 it writes (asked with its memo); the others, asked
    # without one, wait.
    full = (LOW + 1,) * N
    steps: list[Op] = [
        Publish(0.0, 10, None, False, full, (True,) * N),
        Control(0.02, 0, 0),
        Turn(0.01, (0,) * N),
    ]
    assert differences(WritesWhenReminded(), steps) == []
