"""Conditions: thresholds over snapshot fields, as values with construction-code reprs."""

from __future__ import annotations

import math

import attrs
import pytest

from wsfanout import PolicyError, Snapshot
from wsfanout._core import conditions
from wsfanout.policies import Above, AllOf, AnyOf, Below, Condition


def test_above_and_below_compare_the_field_and_never_hold_for_none() -> None:
    slow = Snapshot(now=10.0, queued_bytes=70_000, drain_rate=15_000.0)
    assert Above("queued_bytes", 65_536).holds(slow)
    assert not Above("queued_bytes", 70_000).holds(slow)  # strictly above
    assert Below("drain_rate", 20_000).holds(slow)
    assert not Below("drain_rate", 15_000).holds(slow)
    unmeasured = Snapshot(now=10.0)
    assert not Below("drain_rate", 20_000).holds(unmeasured)
    assert not Above("drain_rate", 0).holds(unmeasured)


def test_above_lag_holds_from_the_moment_the_deadline_passes_at_any_clock() -> None:
    # Deadlines, as the core computes recheck times: at 1e9 s, 1.3 - 0.3 is not 1.0.
    for now in (2.0, 1e6 + 0.3, 1e9 + 0.3):
        since = now - 1.0
        at_deadline = Snapshot(now=now, queued_messages=1, lag=now - since)
        assert Above("lag", 1.0).holds(at_deadline)
        recheck = Above("lag", 1.0).recheck(Snapshot(now=since, queued_messages=1, lag=0.0))
        woken = Snapshot(now=recheck.recheck_at, queued_messages=1, lag=recheck.recheck_at - since)
        assert Above("lag", 1.0).holds(woken)
    assert not Above("lag", 0.0).holds(Snapshot(now=5.0))  # caught up: no lag at all


def test_conditions_ask_to_be_rechecked_when_they_could_start_to_hold() -> None:
    behind = Snapshot(now=100.0, queued_messages=3, lag=0.25)
    assert Above("queued_messages", 48).recheck(behind).recheck_messages == 49
    assert Above("queued_bytes", 1000.5).recheck(behind).recheck_bytes == 1001
    assert Above("lag", 1.0).recheck(behind).recheck_at == 100.0 - 0.25 + 1.0
    assert Above("lag", 1.0).recheck(Snapshot(now=100.0)).recheck_at == math.inf
    assert Below("lag", 1.0).recheck(behind).recheck_at == math.inf
    either = Above("queued_messages", 48) | Above("lag", 1.0)
    assert (either.recheck(behind).recheck_messages, either.recheck(behind).recheck_at) == (
        49,
        100.75,
    )


def test_or_and_and_flatten_and_their_repr_is_the_code_that_builds_them() -> None:
    a, b, c = Above("lag", 1.0), Above("queued_messages", 48), Below("drain_rate", 20_000)
    assert a | b | c == AnyOf((a, b, c))
    assert (a & b) & c == AllOf((a, b, c))
    namespace = {"Above": Above, "Below": Below, "AnyOf": AnyOf, "AllOf": AllOf}
    for condition in (a, a | b & c, (a | b) & c, a & (b | c)):
        assert eval(repr(condition), namespace) == condition
    assert repr((a | b) & c) == (
        "(Above('lag', 1.0) | Above('queued_messages', 48)) & Below('drain_rate', 20000)"
    )
    behind = Snapshot(now=5.0, queued_messages=50, lag=2.0)
    assert (a | b).holds(behind)
    assert (a & b).holds(behind)
    assert not (b & c).holds(behind)
    assert (a | c).explain(behind) == "lag 2 > 1"


def test_a_condition_names_only_numeric_snapshot_fields() -> None:
    assert conditions.numeric_fields() == (
        "queued_messages",
        "queued_bytes",
        "lag",
        "write_buffer",
        "sent",
        "dropped",
        "drain_rate",
        "delivery_rate",
        "kernel_unsent",
        "unacked",
        "ack_rate",
    )
    with pytest.raises(PolicyError, match=r"^field='lagg' is not a numeric Snapshot field") as e:
        Above("lagg", 1.0)
    assert (e.value.name, e.value.value) == ("field", "lagg")
    with pytest.raises(PolicyError, match=r"^field='memo' is not a numeric Snapshot field"):
        Below("memo", 1)
    with pytest.raises(PolicyError, match=r"^value=inf must be finite$"):
        Above("lag", math.inf)
    with pytest.raises(PolicyError, match=r"^value='1s' must be a number$"):
        Above("lag", "1s")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a Condition, not int"):
        Above("lag", 1.0) | 3  # type: ignore[operator]


@attrs.frozen(kw_only=True)
class _KernelSnapshot(Snapshot):
    kernel_unsent: int | None = None
    """Bytes the kernel has not sent (the engine issue adds this field)."""


def test_a_numeric_field_added_to_the_snapshot_works_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(conditions, "Snapshot", _KernelSnapshot)
    assert "kernel_unsent" in conditions.numeric_fields()
    stuck = Above("kernel_unsent", 65_536)
    assert stuck.holds(_KernelSnapshot(now=1.0, kernel_unsent=70_000))
    assert not stuck.holds(_KernelSnapshot(now=1.0))  # not reported: no threshold crossed


def test_a_custom_condition_is_a_value_too() -> None:
    @attrs.frozen
    class Dropping(Condition):
        count: int

        def holds(self, snapshot: Snapshot) -> bool:
            return snapshot.dropped > self.count

        def explain(self, snapshot: Snapshot) -> str:
            return f"{snapshot.dropped} dropped"

    either = Dropping(10) | Above("lag", 5.0)
    assert either.holds(Snapshot(now=1.0, dropped=11))
    assert either.explain(Snapshot(now=1.0, dropped=11)) == "11 dropped"
