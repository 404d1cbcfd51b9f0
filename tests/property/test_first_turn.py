"""The relay's first turn taken by the offer (``Outbox.takes_turn``), and ``Write.idle``,
change nothing a shell or a client can see.

The hub runs the relay's first turn within ``publish()`` when an offer queues the first
message of a batch or a throttle slot. With ``takes_turn`` set, the offer takes that
turn itself and answers ``WAIT`` (or ``KICK``, with the turn kept for the next
``next_action``); a shell that stops after a ``Write`` marked ``idle`` does not ask
again. Here two outboxes with the same policy are told the same things, one the hub's
way before (``KICK``, then the pump's ``next_action`` turns, asking again after every
write) and one the new way; what they answer, what they count, what the policy sees
and what the drain meter measured must be the same after every step, and whenever a
write says ``idle``, the next turn of the first one must answer ``IDLE``.
"""

from __future__ import annotations

import math
from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

from wsfanout import Policy
from wsfanout.lowlevel import (
    IDLE,
    Action,
    Batched,
    CloseAction,
    Message,
    Offer,
    Outbox,
    Wait,
    Write,
    make_message,
)
from wsfanout.policies import Batch, Disconnect, DropOldest
from wsfanout.testing import policies

LOW, HIGH = 64, 1024


@attrs.frozen
class Publish:
    dt: float
    size: int
    key: str | None
    lossless: bool
    buffer: int


@attrs.frozen
class Turn:
    """A shared timer firing, or the relay task's turn: turns until it must wait."""

    dt: float
    buffer: int


Op = Publish | Turn


class Shell:
    """The hub's part for one outbox, as ``Link`` plays it (no sockets): ``owned`` while
    a relay task would own it (a close, a drain, a wait without end)."""

    def __init__(self, outbox: Outbox, new: bool) -> None:
        self.outbox = outbox
        self.new = new
        self.owned = False
        self.problems: list[str] = []
        if new:
            outbox.takes_turn = lambda: not self.owned

    def offer(self, message: Message, now: float, buffer: int) -> list[Any]:
        outcome = self.outbox.offer(message, now, buffer)
        if outcome is Offer.WAIT:
            assert self.new
            return ["KICK", _show(Wait(self.outbox.until, False))]
        if outcome is Offer.KICK:
            if not self.owned and buffer <= LOW:  # Link.queued: pump now
                return ["KICK", *self.turns(now, buffer)]
            return ["KICK"]
        if outcome is Offer.CLOSE:
            self.owned = True
        return [outcome.name]

    def turns(self, now: float, buffer: int) -> list[Any]:
        """``Link.pump`` (and the relay's loop): turns until a wait, a close or the end."""
        shown: list[Any] = []
        idle = False
        for _ in range(1000):
            action: Action = self.outbox.next_action(now, buffer)
            if idle:
                if action is not IDLE:
                    self.problems.append(f"a Write said idle, then {action!r}")
                return shown
            shown.append(_show(action))
            if type(action) is Write:
                buffer += sum(len(frame.frame) for frame in action.frames)
                if action.idle and self.new:
                    return shown
                idle = action.idle
                continue
            if type(action) is Wait:
                self.owned = action.drain or action.until == math.inf
            elif type(action) is CloseAction:
                self.owned = True
            else:
                self.owned = False
            return shown
        raise AssertionError("the turns never ended")


def _show(action: Action) -> Any:
    if type(action) is Write:
        frames = tuple(
            (f.opcode, f.payload, [p.seq for p in f.parts] if isinstance(f, Batched) else f.seq)
            for f in action.frames
        )
        return ("write", frames, action.idle)
    return action


def _state(outbox: Outbox, now: float, buffer: int) -> Any:
    meter = outbox._drain
    return (
        outbox.stats(now),
        outbox.snapshot(now, buffer),
        [m.seq for m in outbox.queue],
        [(m.opcode, m.payload) for m in outbox.control],
        None if meter is None else (meter.rate, meter.samples, meter.armed),
    )


def differences(policy: Policy, ops: list[Op], factory: type[Outbox] = Outbox) -> list[str]:
    """Run ``ops`` on the hub's way before and on the new way; what differs."""
    before = Shell(Outbox(policy, high=HIGH, low=LOW), new=False)
    after = Shell(factory(policy, high=HIGH, low=LOW), new=True)
    now = 1000.0
    found: list[str] = []
    for index, op in enumerate(ops):
        now += op.dt
        if isinstance(op, Publish):
            message = make_message(
                "x" * op.size, seq=index, time=now, key=op.key, droppable=not op.lossless
            )
            old, new = before.offer(message, now, op.buffer), after.offer(message, now, op.buffer)
        else:
            old, new = before.turns(now, op.buffer), after.turns(now, op.buffer)
        if old != new:
            found.append(f"step {index} {op!r}: {old!r} before, {new!r} now")
        if _state(before.outbox, now, op.buffer) != _state(after.outbox, now, op.buffer):
            found.append(f"step {index} {op!r}: the outboxes differ")
        if before.owned != after.owned:
            found.append(f"step {index} {op!r}: a relay task owns one of them only")
        found.extend(before.problems + after.problems)
        if found:
            break
    return found


buffers = st.sampled_from((0, 10, LOW, LOW + 1, HIGH, HIGH + 1))
delays = st.sampled_from((0.0, 0.0, 0.001, 0.004, 0.01, 0.05, 0.3, 2.0))
ops = st.lists(
    st.one_of(
        st.builds(
            Publish,
            dt=delays,
            size=st.integers(min_value=1, max_value=300),
            key=st.sampled_from((None, "a", "b")),
            lossless=st.booleans(),
            buffer=buffers,
        ),
        st.builds(Turn, dt=delays, buffer=buffers),
    ),
    max_size=40,
)


@given(policies(max_messages=8, max_bytes=2048), ops)
def test_the_offer_taking_the_first_turn_changes_nothing(policy: Policy, steps: list[Op]) -> None:
    assert differences(policy, steps) == []


@given(ops)
def test_the_same_for_a_lingering_batch(steps: list[Op]) -> None:
    assert differences(Batch(max_messages=4, max_delay=0.01), steps) == []


# -- the check catches what it must -------------------------------------------------


class StaleFirstTurn(Outbox):
    """Plans the wait from the fast path's ask about the empty queue, without asking
    about the queue holding the message (the attempt docs/performance.md says was wrong)."""

    def _first_turn(self, now: float, write_buffer: int) -> Offer:
        standing = self._decision
        assert standing is not None
        self.until = min(standing.send_at, standing.recheck_at)
        self._arm(now, write_buffer, drain=False, kernel=None)
        return Offer.WAIT


class AlwaysIdle(Outbox):
    """Says every write leaves nothing to do."""

    def next_action(self, now: float, write_buffer: int) -> Action:
        action = super().next_action(now, write_buffer)
        return Write(action.frames, idle=True) if type(action) is Write else action


def test_a_wait_planned_on_the_empty_queue_is_caught() -> None:
    # Disconnect(max_lag=...) rechecks only with something queued: the wait is shorter.
    policy = Batch(max_messages=4, max_delay=1.0) | Disconnect(max_lag=0.5)
    assert differences(policy, [Publish(0.0, 10, None, False, 0)]) == []
    assert differences(policy, [Publish(0.0, 10, None, False, 0)], StaleFirstTurn)


def test_a_write_wrongly_said_idle_is_caught() -> None:
    # Over the high-water mark after two frames: the third waits for the next write.
    steps: list[Op] = [
        *[Publish(0.0, 600, None, False, HIGH + 1) for _ in range(3)],
        Turn(0.1, 0),
    ]
    assert differences(DropOldest(), steps) == []
    assert differences(DropOldest(), steps, AlwaysIdle)
