"""The example of issue 4 runs as a user writes it, and hypothesis stays optional."""

import os
import subprocess
import sys
import textwrap

import attrs
from hypothesis import given

from wsfanout import Decision, Policy, Snapshot
from wsfanout.testing import Guarantee, MaxSendRate, Schedule, check_guarantees, schedules


@attrs.frozen(repr=False)
class MyPolicy(Policy):
    """A user's own policy: at most 4 frames a second, declared and therefore checked."""

    def decide(self, snapshot: Snapshot) -> Decision:
        if snapshot.last_send is None:
            return Decision()
        return Decision(send_at=snapshot.last_send + 0.25)

    def guarantees(self) -> tuple[Guarantee, ...]:
        return (MaxSendRate(rate=4.0),)


@given(schedules())
def test_my_policy_keeps_its_promises(schedule: Schedule) -> None:
    check_guarantees(MyPolicy(), schedule)


BLOCK_HYPOTHESIS = "import sys; sys.modules['hypothesis'] = None\n"
"""Makes ``import hypothesis`` raise ImportError, as if it were not installed."""


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_HYPOTHESIS + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        check=False,
    )


def test_wsfanout_imports_without_hypothesis() -> None:
    result = _run(
        """
        import wsfanout, wsfanout.policies
        from wsfanout.policies import SkipToLatest
        assert SkipToLatest().guarantees()
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def test_the_simulator_and_checkers_work_without_hypothesis() -> None:
    result = _run(
        """
        from wsfanout.policies import DropOldest
        from wsfanout.testing import Publish, Schedule, check_guarantees
        trace = check_guarantees(DropOldest(max_messages=4), Schedule([Publish(n=3)]))
        print(trace.clients[0].received)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[0, 1, 2]\n"


def test_the_strategies_say_which_extra_they_need() -> None:
    result = _run(
        """
        from wsfanout.testing import schedules
        """
    )
    assert result.returncode == 1
    assert result.stderr.rstrip().endswith(
        "ImportError: wsfanout.testing.schedules needs hypothesis: pip install 'wsfanout[testing]'"
    )
