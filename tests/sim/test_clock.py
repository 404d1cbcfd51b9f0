"""The virtual clock: time moves only when told, and never backwards."""

import math

import pytest

from wsfanout.testing import VirtualClock


def test_time_stands_still_until_told_to_move() -> None:
    clock = VirtualClock(10.0)
    assert clock.now == clock() == 10.0
    assert clock.advance(2.5) == 12.5
    assert clock.jump_to(20.0) == 20.0
    assert clock.now == 20.0


def test_jumping_to_the_present_is_allowed() -> None:
    clock = VirtualClock(3.0)
    assert clock.jump_to(3.0) == 3.0


def test_time_cannot_go_backwards() -> None:
    clock = VirtualClock(5.0)
    with pytest.raises(ValueError, match=r"^time can't go backwards: when=4\.0 < now=5\.0$"):
        clock.jump_to(4.0)
    assert clock.now == 5.0


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf])
def test_advancing_by_a_negative_or_non_finite_amount_is_an_error(seconds: float) -> None:
    clock = VirtualClock()
    with pytest.raises(ValueError, match=r"^seconds=.* must be a finite number >= 0$"):
        clock.advance(seconds)
    assert clock.now == 0.0


def test_a_clock_cannot_start_at_infinity() -> None:
    with pytest.raises(ValueError, match=r"^start=inf must be a finite number of seconds$"):
        VirtualClock(math.inf)


def test_repr_is_construction_code_for_the_current_time() -> None:
    clock = VirtualClock(1.0)
    clock.advance(1.0)
    assert repr(clock) == "VirtualClock(start=2.0)"
