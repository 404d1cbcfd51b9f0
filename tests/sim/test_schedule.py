"""Schedules are values whose repr is the code that builds them."""

import math

import pytest

import wsfanout.testing
from wsfanout.testing import (
    Advance,
    Client,
    Drain,
    Hangup,
    Publish,
    Read,
    Schedule,
    Send,
    Stall,
)

EXAMPLE = Schedule(
    steps=[
        Publish(n=3, size=16, keys=("a", "b"), topic="prices", binary=True),
        Stall(client=1),
        Advance(2.5),
        Read(rate=math.inf, client=1),
        Read(rate=100.0),
        Drain(nbytes=40),
        Send(client=1, size=0),
        Hangup(),
    ],
    clients=[Client(), Client(high=64, low=0, rate=0.0, topics={"prices"})],
    start=1e6,
)


def test_repr_is_construction_code() -> None:
    namespace = {"math": math, **vars(wsfanout.testing)}
    assert eval(repr(EXAMPLE), namespace) == EXAMPLE


def test_as_code_numbers_the_steps_and_runs() -> None:
    code = EXAMPLE.as_code()
    assert "        Stall(client=1),  # step 1\n" in code
    assert "Read(client=1)" in code  # math.inf is the default rate
    namespace = {"math": math, **vars(wsfanout.testing)}
    assert eval(code, namespace) == EXAMPLE


def test_defaults_are_left_out_of_the_repr() -> None:
    assert repr(Schedule([Publish(), Advance(1.0)])) == (
        "Schedule(steps=[Publish(), Advance(seconds=1.0)])"
    )
    assert repr(Read(rate=math.inf)) == "Read()"
    assert repr(Read(rate=5.0)) == "Read(rate=5.0)"


def test_a_step_naming_a_missing_client_is_an_error() -> None:
    with pytest.raises(
        ValueError, match=r"^steps\[0\]=Stall\(client=1\) names client 1, but the schedule has 1$"
    ):
        Schedule([Stall(client=1)])


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Publish(n=0), r"^n=0 must be an int >= 1$"),
        (lambda: Publish(size=-1), r"^size=-1 must be an int >= 0$"),
        (
            lambda: Publish(keys="abc"),
            r"^keys='abc' must be a collection of str, not a single str$",
        ),
        (lambda: Advance(-1.0), r"^seconds=-1\.0 must be a finite number of seconds >= 0$"),
        (lambda: Advance(math.inf), r"^seconds=inf must be a finite number of seconds >= 0$"),
        (lambda: Read(rate=-5), r"^rate=-5 must be bytes per second >= 0 \(or math\.inf\)$"),
        (lambda: Drain(nbytes=-1), r"^nbytes=-1 must be an int >= 0$"),
        (lambda: Client(high=4, low=8), r"^low=8 must be <= high=4$"),
        (
            lambda: Client(topics="news"),
            r"^topics='news' must be a collection of str, not a single str$",
        ),
        (lambda: Schedule(clients=[]), r"^clients=\(\) must name at least one client$"),
    ],
)
def test_bad_parameters_are_named_with_their_value(build: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()  # type: ignore[operator]


def test_a_schedule_accepts_only_steps() -> None:
    with pytest.raises(TypeError, match=r"^steps\[1\]='publish' is not a schedule step$"):
        Schedule([Publish(), "publish"])  # type: ignore[list-item]
