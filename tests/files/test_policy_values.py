"""Durations, sizes and rates are read as people write them, and written back exactly."""

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wsfanout._files.units import format_duration, format_size
from wsfanout.files import parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("100ms", 0.1),
        ("5s", 5.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("1m", 60.0),
        ("2min", 120.0),
        ("1h", 3600.0),
        (" 5 s ", 5.0),
        (3, 3.0),
        (0.25, 0.25),
    ],
)
def test_durations_are_read_as_people_write_them(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5", "5 seconds", "5S", "-1s", "1e3s", "", "s", True, None])
def test_a_duration_without_a_known_unit_is_refused(text: object) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(repr(text))} is not a duration$"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64KiB", 65536),
        ("1MiB", 1048576),
        ("2GiB", 2 * 1024**3),
        ("64kB", 64000),
        ("1MB", 1000000),
        ("512", 512),
        ("512B", 512),
        ("1.5KiB", 1536),
        ("64 kib", 65536),
        (4096, 4096),
    ],
)
def test_sizes_are_read_as_people_write_them(text: object, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["64 kb?", "1.1B", "1 MiBs", "KiB", "-1KiB", 1.5, False])
def test_a_size_that_is_not_a_whole_number_of_bytes_is_refused(text: object) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(repr(text))} is not a size$"):
        parse_size(text)


@pytest.mark.parametrize(
    ("seconds", "written"),
    [(0.25, "250ms"), (0.1, "100ms"), (5.0, "5s"), (90.0, "90s"), (120.0, "2m"), (0.0, "0s")],
)
def test_durations_are_written_with_a_readable_unit(seconds: float, written: str) -> None:
    assert format_duration(seconds) == written


def test_sizes_are_written_in_binary_units_when_whole() -> None:
    assert [format_size(n) for n in (65536, 1048576, 1000, 1536)] == ["64KiB", "1MiB", 1000, 1536]


@given(st.floats(min_value=0, max_value=1e9, allow_nan=False))
def test_every_written_duration_reads_back_exactly(seconds: float) -> None:
    written = format_duration(seconds)
    assert parse_duration(written) == seconds
    assert math.copysign(1, parse_duration(written)) == 1


@given(st.integers(min_value=1, max_value=2**50))
def test_every_written_size_reads_back_exactly(size: int) -> None:
    assert parse_size(format_size(size)) == size
