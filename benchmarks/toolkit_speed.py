"""How long wsfanout.testing takes to report two broken policies, shrinking included.

Issue 11 item 5: a policy that holds every write for an hour, and one that drops while
declaring ``Lossless()``, each found and shrunk with the local ``dev`` profile's 50
examples. Prints the seconds each took and the shrunk schedule's length::

    .venv/bin/python -m benchmarks.toolkit_speed
"""

from __future__ import annotations

import math
import time

import attrs
from hypothesis import given, settings

from wsfanout import Decision, Policy, Snapshot
from wsfanout.lowlevel import Overflow, Rules
from wsfanout.testing import (
    Guarantee,
    GuaranteeViolation,
    Lossless,
    Schedule,
    check_guarantees,
    schedules,
)


@attrs.frozen(repr=False)
class HoldsAnHour(Policy):
    """Asks to send an hour from now, every time it is asked: nothing is ever written."""

    def decide(self, snapshot: Snapshot) -> Decision:
        return Decision(send_at=snapshot.now + 3600.0 if snapshot.queued_messages else -math.inf)


@attrs.frozen(repr=False)
class DropsButClaimsLossless(Policy):
    """Promises nothing is lost, with a queue that drops its oldest past 2 messages."""

    eager = True

    def rules(self) -> Rules:
        return Rules(max_messages=2, overflow=Overflow.DROP_OLDEST)

    def guarantees(self) -> tuple[Guarantee, ...]:
        return (Lossless(),)


def time_to_report(policy: Policy) -> tuple[float, int]:
    """Seconds until hypothesis reports ``policy`` broken, and the shrunk schedule's steps."""

    @settings(max_examples=50, deadline=None, database=None)
    @given(schedules())
    def test_policy(schedule: Schedule) -> None:
        check_guarantees(policy, schedule)

    start = time.perf_counter()
    try:
        test_policy()
    except GuaranteeViolation as error:
        return time.perf_counter() - start, len(error.schedule.steps)
    raise AssertionError(f"{policy!r} was not reported")


def main() -> None:
    for policy in (HoldsAnHour(), DropsButClaimsLossless()):
        seconds, steps = time_to_report(policy)
        print(f"{policy!r}: reported in {seconds:.1f} s, shrunk to {steps} steps")


if __name__ == "__main__":
    main()
