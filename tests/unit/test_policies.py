"""The built-in policies as pure values: validation, repr, composition and decisions."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import attrs
import pytest

import wsfanout
import wsfanout.policies
from wsfanout import (
    NEUTRAL,
    Close,
    Composite,
    Decision,
    Policy,
    PolicyConflictError,
    PolicyError,
    Snapshot,
    as_policy,
)
from wsfanout.lowlevel import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MESSAGES,
    Arrival,
    BatchRule,
    FunctionPolicy,
    Overflow,
    Rules,
    resolve_rules,
)
from wsfanout.policies import (
    COMBINERS,
    DEFAULT_POLICY,
    Batch,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    SkipToLatest,
    Throttle,
)

CODES = "expected 1000-1003, 1007-1014 or 3000-4999"


def hold_one_second(snapshot: Snapshot) -> Decision:
    """A plain-function policy: write nothing until a second after now."""
    return Decision(send_at=snapshot.now + 1.0)


def namespace() -> dict[str, Any]:
    """What a user has after ``from wsfanout.policies import *`` plus the core names."""
    names: dict[str, Any] = {
        name: getattr(wsfanout.policies, name) for name in dir(wsfanout.policies)
    }
    names.update({name: getattr(wsfanout, name) for name in wsfanout.__all__})
    names["hold_one_second"] = hold_one_second
    return names


# -- validation -----------------------------------------------------------------------

SIZED = [DropOldest, DropNewest, ConflateByKey]


@pytest.mark.parametrize("cls", SIZED)
@pytest.mark.parametrize("field", ["max_messages", "max_bytes"])
@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "{field}=0 must be >= 1"),
        (-1, "{field}=-1 must be >= 1"),
        (True, "{field}=True must be an int >= 1"),
        (2.5, "{field}=2.5 must be an int >= 1"),
        (math.nan, "{field}=nan must be an int >= 1"),
        (math.inf, "{field}=inf must be an int >= 1"),
        ("8", "{field}='8' must be an int >= 1"),
    ],
)
def test_queue_stages_reject_bad_sizes(
    cls: type[Policy], field: str, value: object, message: str
) -> None:
    with pytest.raises(PolicyError, match="^" + re.escape(message.format(field=field)) + "$"):
        cls(**{field: value})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_messages": 0}, "max_messages=0 must be >= 1"),
        ({"max_messages": None}, "max_messages=None must be an int >= 1"),
        ({"max_bytes": -5}, "max_bytes=-5 must be >= 1"),
        ({"max_bytes": False}, "max_bytes=False must be an int >= 1"),
        ({"max_delay": -0.5}, "max_delay=-0.5 must be a finite number of seconds >= 0"),
        ({"max_delay": math.nan}, "max_delay=nan must be a finite number of seconds >= 0"),
        ({"max_delay": math.inf}, "max_delay=inf must be a finite number of seconds >= 0"),
        ({"max_delay": True}, "max_delay=True must be a number of seconds"),
        ({"max_delay": "1s"}, "max_delay='1s' must be a number of seconds"),
        (
            {"combine": "csv"},
            "combine='csv' is not a known combiner (expected one of ['json-array', 'lines'])",
        ),
        ({"combine": 3}, "combine=3 must be a combiner name or a callable"),
    ],
)
def test_batch_rejects_bad_parameters(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match="^" + re.escape(message) + "$"):
        Batch(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("rate", "message"),
    [
        (0, "rate=0 must be a finite number > 0"),
        (-2.0, "rate=-2.0 must be a finite number > 0"),
        (math.nan, "rate=nan must be a finite number > 0"),
        (math.inf, "rate=inf must be a finite number > 0"),
        (True, "rate=True must be a number per second"),
        ("10/s", "rate='10/s' must be a number per second"),
        (None, "rate=None must be a number per second"),
    ],
)
def test_throttle_rejects_bad_rates(rate: object, message: str) -> None:
    with pytest.raises(PolicyError, match="^" + re.escape(message) + "$"):
        Throttle(rate=rate)  # type: ignore[arg-type]


def test_throttle_requires_a_rate() -> None:
    with pytest.raises(TypeError, match="rate"):
        Throttle()  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_messages": 0}, "max_messages=0 must be >= 1"),
        ({"max_bytes": -1}, "max_bytes=-1 must be >= 1"),
        ({"max_buffer": 1.5}, "max_buffer=1.5 must be an int >= 1"),
        ({"max_lag": -1.0}, "max_lag=-1.0 must be a finite number of seconds >= 0"),
        ({"max_lag": math.nan}, "max_lag=nan must be a finite number of seconds >= 0"),
        ({"max_lag": math.inf}, "max_lag=inf must be a finite number of seconds >= 0"),
        ({"max_lag": True}, "max_lag=True must be a number of seconds"),
        ({"max_lag": 1.0, "grace": -0.1}, "grace=-0.1 must be a finite number of seconds >= 0"),
        ({"max_lag": 1.0, "grace": math.nan}, "grace=nan must be a finite number of seconds >= 0"),
        ({"max_lag": 1.0, "grace": None}, "grace=None must be a number of seconds"),
    ],
)
def test_disconnect_rejects_bad_thresholds(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match="^" + re.escape(message) + "$"):
        Disconnect(**kwargs)  # type: ignore[arg-type]


def test_disconnect_without_any_threshold_is_an_error() -> None:
    with pytest.raises(
        PolicyError,
        match=r"^Disconnect\(\) needs at least one of "
        r"max_messages, max_bytes, max_lag, max_buffer$",
    ):
        Disconnect()
    with pytest.raises(PolicyError, match=r"^Disconnect\(\) needs at least one of "):
        Disconnect(grace=1.0, code=4000)


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, -1])
def test_disconnect_rejects_close_codes_a_server_may_not_send(code: int) -> None:
    message = f"code={code} is not a close code a server may send ({CODES})"
    with pytest.raises(PolicyError, match="^" + re.escape(message) + "$"):
        Disconnect(max_lag=1.0, code=code)
    with pytest.raises(PolicyError, match="^" + re.escape(message) + "$"):
        Close(code)


@pytest.mark.parametrize("code", [1000, 1001, 1003, 1007, 1011, 1013, 1014, 3000, 4000, 4999])
def test_disconnect_accepts_sendable_close_codes(code: int) -> None:
    assert Disconnect(max_lag=1.0, code=code).code == code
    assert Close(code).code == code


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (True, "code=True must be an int close code"),
        ("1013", "code='1013' must be an int close code"),
        (1013.0, "code=1013.0 must be an int close code"),
    ],
)
def test_disconnect_rejects_close_codes_that_are_not_ints(code: object, message: str) -> None:
    with pytest.raises(PolicyError, match="^" + re.escape(message) + "$"):
        Disconnect(max_lag=1.0, code=code)  # type: ignore[arg-type]


def test_a_reason_of_123_utf8_bytes_fits_and_124_does_not() -> None:
    fits = "é" * 61 + "x"  # 2 * 61 + 1 = 123 bytes
    assert Disconnect(max_lag=1.0, reason=fits).reason == fits
    assert Close(1013, fits).reason == fits
    too_long = "é" * 62  # 124 bytes but only 62 characters
    message = f"reason={too_long!r} is 124 bytes in UTF-8; at most 123 fit a close frame"
    with pytest.raises(PolicyError, match="^" + re.escape(message) + "$"):
        Disconnect(max_lag=1.0, reason=too_long)
    with pytest.raises(PolicyError, match="^" + re.escape(message) + "$"):
        Close(1013, too_long)


def test_a_reason_must_be_a_str() -> None:
    with pytest.raises(PolicyError, match=r"^reason=b'slow' must be a str$"):
        Disconnect(max_lag=1.0, reason=b"slow")  # type: ignore[arg-type]


def test_an_empty_composite_is_an_error() -> None:
    with pytest.raises(
        PolicyError,
        match=r"^stages=\(\) must not be empty: a composed policy needs at least one stage$",
    ):
        Composite(())


def test_a_composite_holds_only_single_stages() -> None:
    nested = DropOldest() | Throttle(rate=1.0)
    with pytest.raises(
        PolicyError,
        match=r"^stages contains DropOldest\(\) \| Throttle\(rate=1\.0\), "
        r"which is not a single Policy stage$",
    ):
        Composite((nested,))
    with pytest.raises(PolicyError, match=r"^stages contains 'x', which is not a single"):
        Composite(("x",))  # type: ignore[arg-type]


def test_composing_with_something_not_callable_names_its_type() -> None:
    with pytest.raises(TypeError, match=r"^expected a Policy or a callable, not int$"):
        DropOldest() | 5  # type: ignore[operator]
    with pytest.raises(TypeError, match=r"^expected a Policy or a callable, not str$"):
        as_policy("DropOldest")  # type: ignore[arg-type]


def test_policies_are_frozen_values() -> None:
    policy = DropOldest(max_messages=3)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        policy.max_messages = 4  # type: ignore[misc]
    assert policy == DropOldest(max_messages=3)
    assert hash(policy) == hash(DropOldest(max_messages=3))
    assert policy != DropOldest(max_messages=4)


# -- repr is construction code ------------------------------------------------------------

BUILT_INS: list[Policy] = [
    DropOldest(),
    DropOldest(max_messages=256),
    DropOldest(max_bytes=65536),
    DropNewest(max_messages=8, max_bytes=1000),
    SkipToLatest(),
    ConflateByKey(),
    ConflateByKey(max_messages=100),
    Batch(),
    Batch(max_messages=4, max_bytes=4096, max_delay=0.05, combine="json-array"),
    Batch(combine="lines"),
    Throttle(rate=10.0),
    Throttle(rate=3),
    Disconnect(max_lag=5.0),
    Disconnect(max_messages=10, max_bytes=100, max_buffer=4096, max_lag=0.5, grace=1.5),
    Disconnect(max_messages=1, code=4000, reason="lagging, reconnect"),
    Disconnect(max_messages=1, reason='quote \' and "double" and é'),
    DEFAULT_POLICY,
]


@pytest.mark.parametrize("policy", BUILT_INS, ids=repr)
def test_repr_of_a_built_in_rebuilds_an_equal_policy(policy: Policy) -> None:
    rebuilt = eval(repr(policy), namespace())
    assert type(rebuilt) is type(policy)
    assert rebuilt == policy
    assert repr(rebuilt) == repr(policy)


def test_repr_names_only_parameters_that_differ_from_defaults() -> None:
    assert repr(DropOldest()) == "DropOldest()"
    assert repr(Batch(max_messages=16, combine="lines")) == "Batch()"
    assert repr(Batch(max_delay=0.25)) == "Batch(max_delay=0.25)"
    assert repr(Disconnect(max_lag=5.0, code=1013)) == "Disconnect(max_lag=5.0)"
    assert repr(Throttle(rate=2.0)) == "Throttle(rate=2.0)"


COMPOSITIONS: list[Policy] = [
    DropOldest(max_messages=256) | Disconnect(max_lag=5.0),
    SkipToLatest() | Throttle(rate=5.0),
    ConflateByKey(max_messages=50) | DropNewest() | Batch(max_delay=0.1) | Throttle(rate=2),
    DropOldest(max_messages=5) | DropOldest(max_bytes=100),
    Batch(combine="json-array") | Disconnect(max_buffer=1 << 20, code=4001, reason="slow"),
    hold_one_second | DropOldest(),
    DropNewest() | hold_one_second,
]


@pytest.mark.parametrize("policy", COMPOSITIONS, ids=repr)
def test_repr_of_a_composition_rebuilds_an_equal_composition(policy: Policy) -> None:
    rebuilt = eval(repr(policy), namespace())
    assert isinstance(rebuilt, Composite)
    assert rebuilt == policy
    assert rebuilt.stages == policy.stages
    assert repr(rebuilt) == repr(policy)


def test_repr_of_a_composition_joins_the_stages_with_a_bar() -> None:
    policy = DropOldest(max_messages=256) | Disconnect(max_lag=5.0) | hold_one_second
    assert repr(policy) == (
        "DropOldest(max_messages=256) | Disconnect(max_lag=5.0) | as_policy(hold_one_second)"
    )


# -- composition ----------------------------------------------------------------------


def test_composition_flattens_whatever_the_grouping() -> None:
    a, b, c = DropOldest(max_messages=10), Throttle(rate=2.0), Disconnect(max_lag=1.0)
    left = (a | b) | c
    right = a | (b | c)
    assert left.stages == right.stages == (a, b, c)
    assert left == right
    assert all(not isinstance(stage, Composite) for stage in left.stages)
    assert ((a | b) | (c | a)).stages == (a, b, c, a)


def test_a_single_policy_is_its_own_only_stage() -> None:
    policy = Throttle(rate=1.0)
    assert policy.stages == (policy,)


@pytest.mark.parametrize(
    ("first", "second", "what"),
    [
        (DropOldest(), DropNewest(), "decide what to evict when the queue is full"),
        (
            DropNewest(max_messages=3),
            DropOldest(max_bytes=9),
            "decide what to evict when the queue is full",
        ),
        (SkipToLatest(), ConflateByKey(), "decide what an arriving message replaces"),
        (
            ConflateByKey(max_messages=4),
            SkipToLatest(),
            "decide what an arriving message replaces",
        ),
        (Batch(), Batch(), "decide how messages are framed"),
        (Batch(max_messages=4), Batch(max_delay=0.5), "decide how messages are framed"),
    ],
    ids=repr,
)
def test_conflicting_stages_are_an_error_naming_both(
    first: Policy, second: Policy, what: str
) -> None:
    message = f"{first!r} and {second!r} both {what}; keep one of them"
    with pytest.raises(PolicyConflictError, match="^" + re.escape(message) + "$"):
        first | second


def test_a_conflict_is_found_among_other_stages_and_is_a_policy_error() -> None:
    message = "DropOldest(max_messages=5) and DropNewest() both decide what to evict"
    with pytest.raises(PolicyError, match="^" + re.escape(message)):
        DropOldest(max_messages=5) | Throttle(rate=1.0) | Disconnect(max_lag=1.0) | DropNewest()


def test_compatible_repeats_merge_their_bounds() -> None:
    policy = DropOldest(max_messages=5) | DropOldest(max_bytes=100)
    assert policy.rules() == Rules(max_messages=5, max_bytes=100, overflow=Overflow.DROP_OLDEST)
    tighter = DropOldest(max_messages=5, max_bytes=100) | DropOldest(max_messages=3, max_bytes=200)
    assert tighter.rules() == Rules(max_messages=3, max_bytes=100, overflow=Overflow.DROP_OLDEST)
    twice = SkipToLatest() | SkipToLatest()
    assert twice.rules() == Rules(arrival=Arrival.SKIP_TO_LATEST)


def test_bounds_of_different_stages_merge_to_the_minimum() -> None:
    policy = ConflateByKey(max_messages=50, max_bytes=10_000) | DropNewest(max_messages=20)
    assert policy.rules() == Rules(
        max_messages=20,
        max_bytes=10_000,
        overflow=Overflow.DROP_NEWEST,
        arrival=Arrival.CONFLATE_BY_KEY,
    )


def test_stages_without_queue_rules_leave_the_rules_undeclared() -> None:
    assert Throttle(rate=1.0).rules() == Rules()
    assert Disconnect(max_messages=3).rules() == Rules()
    assert (Throttle(rate=1.0) | Disconnect(max_lag=1.0)).rules() == Rules()


def test_batch_rule_carries_the_named_combiner() -> None:
    assert Batch(max_messages=4, max_bytes=99, combine="json-array").rules() == Rules(
        batch=BatchRule(4, 99, COMBINERS["json-array"])
    )
    assert COMBINERS["lines"]([b"a", b"b", b"c"]) == b"a\nb\nc"
    assert COMBINERS["json-array"]([b"1", b'{"a":2}']) == b'[1,{"a":2}]'


def test_batch_accepts_a_callable_combiner() -> None:
    def comma(payloads: Sequence[bytes]) -> bytes:
        return b",".join(payloads)

    rule = Batch(combine=comma).rules().batch
    assert rule is not None
    assert rule.combine is comma


def test_resolve_rules_fills_the_documented_defaults() -> None:
    assert resolve_rules(SkipToLatest()) == Rules(
        max_messages=DEFAULT_MAX_MESSAGES,
        max_bytes=DEFAULT_MAX_BYTES,
        overflow=Overflow.CLOSE,
        arrival=Arrival.SKIP_TO_LATEST,
    )
    assert (DEFAULT_MAX_MESSAGES, DEFAULT_MAX_BYTES) == (1024, 1024 * 1024)
    assert resolve_rules(DropOldest(max_messages=5)) == Rules(
        max_messages=5, max_bytes=DEFAULT_MAX_BYTES, overflow=Overflow.DROP_OLDEST
    )
    assert resolve_rules(DropNewest(max_bytes=10)) == Rules(
        max_messages=DEFAULT_MAX_MESSAGES, max_bytes=10, overflow=Overflow.DROP_NEWEST
    )
    assert resolve_rules(DEFAULT_POLICY) == Rules(
        max_messages=DEFAULT_MAX_MESSAGES, max_bytes=DEFAULT_MAX_BYTES, overflow=Overflow.CLOSE
    )


def test_eagerness_of_the_built_ins() -> None:
    assert DropOldest().eager
    assert DropNewest().eager
    assert SkipToLatest().eager
    assert ConflateByKey().eager
    assert Batch().eager
    assert not Batch(max_delay=0.1).eager
    assert not Throttle(rate=1.0).eager
    assert Disconnect(max_lag=1.0).eager
    assert not Disconnect(max_buffer=100).eager
    assert (DropOldest() | Disconnect(max_lag=1.0)).eager
    assert not (DropOldest() | Throttle(rate=1.0)).eager
    assert not (DropOldest() | hold_one_second).eager


# -- plain callables --------------------------------------------------------------------


def test_a_plain_callable_composes_on_either_side() -> None:
    right = DropOldest(max_messages=3) | hold_one_second
    left = hold_one_second | DropOldest(max_messages=3)
    assert right.stages == (DropOldest(max_messages=3), FunctionPolicy(hold_one_second))
    assert left.stages == (FunctionPolicy(hold_one_second), DropOldest(max_messages=3))
    snapshot = Snapshot(now=7.0, queued_messages=1)
    assert right.decide(snapshot) == Decision(send_at=8.0)
    assert left.decide(snapshot) == Decision(send_at=8.0)
    assert right.rules() == left.rules() == DropOldest(max_messages=3).rules()


def test_as_policy_wraps_a_callable_once_and_passes_policies_through() -> None:
    policy = DropOldest()
    assert as_policy(policy) is policy
    wrapped = as_policy(hold_one_second)
    assert isinstance(wrapped, FunctionPolicy)
    assert wrapped.decide(Snapshot(now=1.0)) == Decision(send_at=2.0)
    assert repr(wrapped) == "as_policy(hold_one_second)"


# -- decisions ----------------------------------------------------------------------------


def test_queue_stages_decide_nothing() -> None:
    snapshot = Snapshot(now=5.0, queued_messages=1000, queued_bytes=10**6, lag=99.0)
    for policy in [DropOldest(), DropNewest(), SkipToLatest(), ConflateByKey(), Batch()]:
        assert policy.decide(snapshot) == NEUTRAL


def test_throttle_sends_at_once_before_the_first_send() -> None:
    assert Throttle(rate=4.0).decide(Snapshot(now=10.0, queued_messages=3)) == NEUTRAL


def test_throttle_holds_until_one_interval_after_the_last_send() -> None:
    decision = Throttle(rate=4.0).decide(Snapshot(now=10.1, queued_messages=1, last_send=10.0))
    assert decision == Decision(send_at=10.25)
    assert decision.close is None
    late = Throttle(rate=4.0).decide(Snapshot(now=20.0, queued_messages=1, last_send=10.0))
    assert late.send_at == 10.25 < 20.0


def test_batch_without_delay_never_holds() -> None:
    snapshot = Snapshot(now=3.0, queued_messages=1, queued_bytes=5, lag=0.0)
    assert Batch(max_messages=8).decide(snapshot) == NEUTRAL


def test_batch_lingers_from_the_oldest_message_until_max_delay() -> None:
    policy = Batch(max_messages=4, max_delay=0.5)
    snapshot = Snapshot(now=10.0, queued_messages=2, queued_bytes=20, lag=0.25)
    assert policy.decide(snapshot) == Decision(
        send_at=10.25, recheck_messages=4, recheck_bytes=math.inf
    )
    with_bytes = Batch(max_messages=4, max_bytes=100, max_delay=0.5)
    assert with_bytes.decide(snapshot) == Decision(
        send_at=10.25, recheck_messages=4, recheck_bytes=100
    )


def test_batch_with_a_delay_holds_the_first_message_of_an_idle_subscriber() -> None:
    policy = Batch(max_messages=4, max_delay=0.5)
    assert policy.decide(Snapshot(now=10.0)) == Decision(
        send_at=10.5, recheck_messages=4, recheck_bytes=math.inf
    )


@pytest.mark.parametrize(
    "snapshot",
    [
        Snapshot(now=10.0, queued_messages=4, queued_bytes=20, lag=0.1),
        Snapshot(now=10.0, queued_messages=9, queued_bytes=20, lag=0.1),
        Snapshot(now=10.0, queued_messages=2, queued_bytes=100, lag=0.1),
    ],
)
def test_a_full_batch_leaves_at_once(snapshot: Snapshot) -> None:
    policy = Batch(max_messages=4, max_bytes=100, max_delay=0.5)
    assert policy.decide(snapshot) == NEUTRAL


@pytest.mark.parametrize(
    ("policy", "snapshot", "cause"),
    [
        (
            Disconnect(max_messages=3),
            Snapshot(now=1.0, queued_messages=4),
            "4 messages queued > max_messages=3",
        ),
        (
            Disconnect(max_bytes=100),
            Snapshot(now=1.0, queued_messages=1, queued_bytes=101),
            "101 bytes queued > max_bytes=100",
        ),
        (
            Disconnect(max_lag=2.0),
            Snapshot(now=5.0, queued_messages=1, lag=2.0),
            "lag 2.000s >= max_lag=2.0",
        ),
        (
            Disconnect(max_buffer=1000),
            Snapshot(now=1.0, write_buffer=1001),
            "1001 bytes in write buffer > max_buffer=1000",
        ),
    ],
)
def test_disconnect_closes_past_each_threshold(
    policy: Disconnect, snapshot: Snapshot, cause: str
) -> None:
    decision = policy.decide(snapshot)
    assert decision.close == Close(1013, "subscriber too slow")
    assert decision.close.cause == cause
    assert decision.memo is None


@pytest.mark.parametrize(
    ("policy", "snapshot", "expected"),
    [
        (
            Disconnect(max_messages=3),
            Snapshot(now=1.0, queued_messages=3),
            Decision(recheck_messages=4),
        ),
        (
            Disconnect(max_bytes=100),
            Snapshot(now=1.0, queued_messages=1, queued_bytes=100),
            Decision(recheck_bytes=101),
        ),
        (
            Disconnect(max_lag=2.0),
            Snapshot(now=5.0, queued_messages=1, lag=1.5),
            Decision(recheck_at=5.5),
        ),
        (
            # A lag with nothing queued cannot happen, and is not a breach.
            Disconnect(max_lag=2.0),
            Snapshot(now=5.0, queued_messages=0, lag=3.0),
            Decision(),
        ),
        (
            Disconnect(max_buffer=1000),
            Snapshot(now=1.0, write_buffer=1000),
            Decision(),
        ),
    ],
)
def test_disconnect_at_a_threshold_asks_to_recheck_when_it_could_be_crossed(
    policy: Disconnect, snapshot: Snapshot, expected: Decision
) -> None:
    assert policy.decide(snapshot) == expected


def test_disconnect_uses_its_code_and_reason() -> None:
    policy = Disconnect(max_messages=1, code=4000, reason="reconnect later")
    decision = policy.decide(Snapshot(now=0.0, queued_messages=2))
    assert decision.close == Close(4000, "reconnect later")


def test_disconnect_holds_a_breach_for_grace_then_closes() -> None:
    policy = Disconnect(max_messages=1, grace=2.0)
    first = policy.decide(Snapshot(now=10.0, queued_messages=2))
    assert first == Decision(recheck_at=12.0, memo=10.0)
    held = policy.decide(Snapshot(now=11.5, queued_messages=5, memo=first.memo))
    assert held == Decision(recheck_at=12.0, memo=10.0)
    closed = policy.decide(Snapshot(now=12.0, queued_messages=5, memo=held.memo))
    assert closed.close == Close(1013, "subscriber too slow")
    assert closed.close.cause == "5 messages queued > max_messages=1 for 2.000s"


def test_disconnect_forgives_a_hiccup_shorter_than_grace() -> None:
    policy = Disconnect(max_messages=1, grace=2.0)
    first = policy.decide(Snapshot(now=10.0, queued_messages=2))
    recovered = policy.decide(Snapshot(now=11.0, queued_messages=1, memo=first.memo))
    assert recovered.close is None
    assert recovered.memo is None
    again = policy.decide(Snapshot(now=13.0, queued_messages=2, memo=recovered.memo))
    assert again == Decision(recheck_at=15.0, memo=13.0)


def test_disconnect_grace_elapses_on_an_integer_clock() -> None:
    # A virtual clock may count in whole seconds; the breach's start must survive as memo.
    policy = Disconnect(max_messages=1, grace=2)
    first = policy.decide(Snapshot(now=10, queued_messages=2))
    assert first.memo == 10
    closed = policy.decide(Snapshot(now=12, queued_messages=2, memo=first.memo))
    assert closed.close == Close(1013, "subscriber too slow")


def test_a_composite_keeps_one_memo_per_deciding_stage() -> None:
    policy = (
        DropOldest(max_messages=100)
        | Disconnect(max_messages=1, grace=2.0)
        | Throttle(rate=1.0)
        | Disconnect(max_lag=1.0, grace=5.0, code=4001)
    )
    first = policy.decide(Snapshot(now=10.0, queued_messages=2, lag=1.0, last_send=9.5))
    assert first == Decision(send_at=10.5, recheck_at=12.0, memo=(10.0, None, 10.0))
    second = policy.decide(
        Snapshot(now=12.0, queued_messages=2, lag=3.0, last_send=9.5, memo=first.memo)
    )
    assert second.close == Close(1013, "subscriber too slow")
    assert second.memo == (None, None, 10.0)


def test_the_first_closing_stage_wins() -> None:
    policy = Disconnect(max_messages=1, code=4001) | Disconnect(max_messages=1, code=4002)
    assert policy.decide(Snapshot(now=0.0, queued_messages=2)).close == Close(
        4001, "subscriber too slow"
    )


def test_a_composite_joins_hold_times_and_rechecks() -> None:
    policy = Throttle(rate=2.0) | Batch(max_messages=8, max_delay=1.0) | Disconnect(max_lag=3.0)
    snapshot = Snapshot(now=10.0, queued_messages=2, queued_bytes=10, lag=0.25, last_send=9.0)
    assert policy.decide(snapshot) == Decision(
        send_at=10.75,  # Batch lingers longer than Throttle (9.5)
        recheck_at=12.75,  # Disconnect's lag deadline
        recheck_messages=8,  # Batch full
    )


def test_a_composite_of_stages_that_never_decide_is_neutral() -> None:
    policy = DropOldest() | Batch()
    assert policy.decide(Snapshot(now=1.0, queued_messages=5)) is NEUTRAL
