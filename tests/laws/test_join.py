"""The laws of :func:`join`: associative with NEUTRAL as identity; first close wins."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import attrs
from hypothesis import example, given, settings
from hypothesis import strategies as st

from wsfanout import NEUTRAL, Close, Decision
from wsfanout.lowlevel import join

from .strategies import decisions, joined_fields

LAWS = settings(max_examples=120, deadline=None)

Join = Callable[[Decision, Decision], Decision]


def associates(op: Join, a: Decision, b: Decision, c: Decision) -> bool:
    return joined_fields(op(op(a, b), c)) == joined_fields(op(a, op(b, c)))


@LAWS
@given(decisions, decisions, decisions)
@example(Decision(send_at=math.inf), Decision(send_at=-math.inf, recheck_at=-math.inf), NEUTRAL)
def test_join_is_associative(a: Decision, b: Decision, c: Decision) -> None:
    assert associates(join, a, b, c)
    # Which close wins must not depend on the grouping either (Close equality ignores cause).
    assert join(join(a, b), c).close is join(a, join(b, c)).close


@LAWS
@given(decisions)
def test_neutral_is_a_left_and_right_identity(decision: Decision) -> None:
    assert join(NEUTRAL, decision) == decision
    assert join(decision, NEUTRAL) == decision
    # A decision equal to NEUTRAL but not NEUTRAL itself is an identity of the joined fields.
    assert joined_fields(join(Decision(), decision)) == joined_fields(decision)
    assert joined_fields(join(decision, Decision())) == joined_fields(decision)


@LAWS
@given(decisions, decisions)
def test_join_takes_the_first_close_the_latest_hold_and_the_earliest_recheck(
    a: Decision, b: Decision
) -> None:
    joined = join(a, b)
    assert joined.close is (a.close if a.close is not None else b.close)
    assert joined.send_at == max(a.send_at, b.send_at)
    assert joined.recheck_at == min(a.recheck_at, b.recheck_at)
    assert joined.recheck_messages == min(a.recheck_messages, b.recheck_messages)
    assert joined.recheck_bytes == min(a.recheck_bytes, b.recheck_bytes)


@LAWS
@given(decisions, decisions)
def test_join_commutes_except_for_which_close_comes_first(a: Decision, b: Decision) -> None:
    assert attrs.evolve(joined_fields(join(a, b)), close=None) == attrs.evolve(
        joined_fields(join(b, a)), close=None
    )


@LAWS
@given(st.lists(decisions, max_size=6))
def test_a_fold_of_joins_keeps_the_first_close_in_order(many: list[Decision]) -> None:
    folded = functools.reduce(join, many, NEUTRAL)
    first = next((d.close for d in many if d.close is not None), None)
    assert folded.close is first


@LAWS
@given(decisions)
def test_join_is_idempotent_on_the_joined_fields(decision: Decision) -> None:
    assert joined_fields(join(decision, decision)) == joined_fields(decision)


def test_the_associativity_check_catches_a_join_that_averages() -> None:
    def averaging(left: Decision, right: Decision) -> Decision:
        return attrs.evolve(join(left, right), send_at=(left.send_at + right.send_at) / 2)

    a, b, c = Decision(send_at=0.0), Decision(send_at=4.0), Decision(send_at=8.0)
    assert associates(join, a, b, c)
    assert not associates(averaging, a, b, c)


def test_the_first_close_survives_a_later_one() -> None:
    first, second = Close(4001, "first"), Close(4002, "second")
    assert join(Decision(close=first), Decision(close=second)).close is first
    assert join(Decision(send_at=1.0), Decision(close=second)).close is second
