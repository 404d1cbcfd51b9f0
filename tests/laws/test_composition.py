"""The laws of ``|``: grouping does not matter, bounds are the minimum, the first close wins."""

from __future__ import annotations

import functools

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsfanout import NEUTRAL, Close, Decision, Policy, PolicyConflictError, Snapshot
from wsfanout.lowlevel import DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGES, Rules, join, resolve_rules
from wsfanout.policies import ConflateByKey, Disconnect, DropOldest, Throttle

from .strategies import SENDABLE_CODES, closes, decisions, joined_fields, policies, snapshots

LAWS = settings(max_examples=100, deadline=None)


@attrs.frozen
class Constant(Policy):
    """A stage that always decides the same thing; a probe for the composition rule."""

    decision: Decision

    def decide(self, snapshot: Snapshot) -> Decision:
        return self.decision


@attrs.frozen
class Inert(Policy):
    """A stage that declares no rules and decides nothing (so it always says "send now")."""

    eager = True


def compose(*stages: Policy) -> Policy:
    return functools.reduce(lambda left, right: left | right, stages)


def run(policy: Policy, sequence: list[Snapshot]) -> list[Decision]:
    """Ask ``policy`` about each snapshot in turn, handing its memo forward as the core does."""
    memo: object = None
    answers = []
    for snapshot in sequence:
        decision = policy.decide(attrs.evolve(snapshot, memo=memo))
        memo = decision.memo
        answers.append(decision)
    return answers


@LAWS
@given(policies, policies, policies, st.lists(snapshots(), min_size=1, max_size=4))
def test_composition_is_associative_in_rules_and_decisions(
    a: Policy, b: Policy, c: Policy, sequence: list[Snapshot]
) -> None:
    try:
        left = (a | b) | c
    except PolicyConflictError:
        # Either grouping meets the same pair of conflicting stages, perhaps at another step.
        with pytest.raises(PolicyConflictError):
            a | (b | c)
        return
    right = a | (b | c)
    assert left.stages == right.stages == (a, b, c)
    assert left.rules() == right.rules()
    assert resolve_rules(left) == resolve_rules(right)
    assert left.eager == right.eager
    assert run(left, sequence) == run(right, sequence)


@LAWS
@given(st.lists(policies, min_size=1, max_size=4), snapshots())
def test_a_composite_decides_the_join_of_its_stages(
    stages: list[Policy], snapshot: Snapshot
) -> None:
    try:
        policy = compose(*stages)
    except PolicyConflictError:
        return
    expected = functools.reduce(join, (stage.decide(snapshot) for stage in stages), NEUTRAL)
    assert joined_fields(policy.decide(snapshot)) == joined_fields(expected)


@LAWS
@given(policies, snapshots())
def test_an_inert_stage_is_an_identity_of_composition(policy: Policy, snapshot: Snapshot) -> None:
    for composed in (policy | Inert(), Inert() | policy):
        assert composed.rules() == policy.rules()
        assert composed.eager == policy.eager
        assert joined_fields(composed.decide(snapshot)) == joined_fields(policy.decide(snapshot))


bounded = st.one_of(
    st.builds(
        DropOldest,
        max_messages=st.none() | st.integers(1, 10_000),
        max_bytes=st.none() | st.integers(1, 1 << 24),
    ),
    st.builds(
        ConflateByKey,
        max_messages=st.none() | st.integers(1, 10_000),
        max_bytes=st.none() | st.integers(1, 1 << 24),
    ),
    st.builds(
        Disconnect,
        max_messages=st.integers(1, 10),
        max_bytes=st.integers(1, 10),
    ),
    st.builds(Throttle, rate=st.floats(0.1, 100.0)),
)


def bounds_are_the_minimum(policy: Policy, stages: list[Policy]) -> bool:
    """The bound law: the queue bounds of ``policy`` are the least its queue stages declare."""
    # Disconnect's thresholds only watch; they are not queue bounds.
    declared = [stage for stage in stages if isinstance(stage, DropOldest | ConflateByKey)]
    messages = [s.max_messages for s in declared if s.max_messages is not None]
    byte_counts = [s.max_bytes for s in declared if s.max_bytes is not None]
    rules = resolve_rules(policy)
    return (
        rules.max_messages == min(messages, default=DEFAULT_MAX_MESSAGES)
        and rules.max_bytes == min(byte_counts, default=DEFAULT_MAX_BYTES)
        and policy.rules().max_messages == min(messages, default=None)
    )


@LAWS
@given(st.lists(bounded, min_size=1, max_size=6))
def test_merged_bounds_are_the_minimum_of_the_declared_ones(stages: list[Policy]) -> None:
    assert bounds_are_the_minimum(compose(*stages), stages)


def test_the_bound_law_catches_a_merge_that_takes_the_maximum() -> None:
    @attrs.frozen
    class MaxMerge(Policy):
        """A wrong composite: keeps the loosest bound."""

        parts: tuple[DropOldest, ...]

        def rules(self) -> Rules:
            return Rules(max_messages=max(p.max_messages or 0 for p in self.parts))

    stages: list[Policy] = [DropOldest(max_messages=5), DropOldest(max_messages=50)]
    assert bounds_are_the_minimum(compose(*stages), stages)
    wrong = MaxMerge((DropOldest(max_messages=5), DropOldest(max_messages=50)))
    assert not bounds_are_the_minimum(wrong, stages)


@LAWS
@given(policies)
def test_every_policy_has_a_finite_bound_and_an_overflow_rule(policy: Policy) -> None:
    declared = policy.rules()
    rules = resolve_rules(policy)
    assert rules.max_messages == (declared.max_messages or DEFAULT_MAX_MESSAGES)
    assert rules.max_bytes == (declared.max_bytes or DEFAULT_MAX_BYTES)
    assert rules.overflow is not None


@LAWS
@given(policies)
def test_a_policy_composed_with_itself_keeps_its_rules_unless_it_batches(policy: Policy) -> None:
    if policy.rules().batch is not None:
        with pytest.raises(PolicyConflictError):
            policy | policy
        return
    assert (policy | policy).rules() == policy.rules()


@LAWS
@given(st.lists(st.none() | closes, min_size=1, max_size=6), snapshots())
def test_the_first_close_in_stage_order_wins(
    closes_in_order: list[Close | None], snapshot: Snapshot
) -> None:
    policy = compose(*(Constant(Decision(close=close)) for close in closes_in_order))
    first = next((close for close in closes_in_order if close is not None), None)
    assert policy.decide(snapshot).close is first


@LAWS
@given(
    st.lists(
        st.tuples(st.integers(1, 100), st.sampled_from(SENDABLE_CODES)), min_size=1, max_size=5
    ),
    st.integers(0, 150),
)
def test_the_first_breached_disconnect_in_stage_order_closes(
    ladder: list[tuple[int, int]], queued: int
) -> None:
    stages = [Disconnect(max_messages=limit, code=code) for limit, code in ladder]
    decision = compose(*stages).decide(Snapshot(now=1.0, queued_messages=queued))
    breached = [stage for stage in stages if queued > (stage.max_messages or 0)]
    if not breached:
        assert decision.close is None
        return
    assert decision.close == Close(breached[0].code, breached[0].reason)
    assert decision.close.cause == (
        f"{queued} messages queued > max_messages={breached[0].max_messages}"
    )


@LAWS
@given(st.lists(decisions, min_size=1, max_size=5), snapshots())
def test_a_composite_of_constant_stages_joins_them_in_order(
    answers: list[Decision], snapshot: Snapshot
) -> None:
    policy = compose(*(Constant(answer) for answer in answers))
    assert joined_fields(policy.decide(snapshot)) == joined_fields(
        functools.reduce(join, answers, NEUTRAL)
    )
