"""The fake transport: a write buffer with asyncio's watermark semantics and a scripted reader."""

import math

import pytest

from wsfanout.testing import FakeTransport


def test_a_client_that_keeps_up_receives_each_write_at_once() -> None:
    transport: FakeTransport[str] = FakeTransport(high=10, low=5)
    assert transport.write("a", 100) == ["a"]
    assert transport.buffered == 0
    assert not transport.paused


def test_writes_pause_over_high_and_resume_at_low() -> None:
    transport: FakeTransport[str] = FakeTransport(high=10, low=4, rate=0)
    transport.write("a", 6)
    assert not transport.paused
    transport.write("b", 6)
    assert transport.paused
    assert transport.get_write_buffer_size() == 12
    assert transport.drain(7) == ["a"]
    assert transport.paused  # 5 bytes left, still over low=4
    assert transport.drain(1) == []
    assert not transport.paused
    assert transport.drain(10) == ["b"]
    assert transport.buffered == 0


def test_a_reader_at_a_rate_finishes_frames_at_the_times_the_rate_implies() -> None:
    transport: FakeTransport[str] = FakeTransport(high=100, low=0, rate=10.0)
    transport.write("a", 5)
    transport.write("b", 10)
    finished = transport.read_for(start=100.0, seconds=1.0)
    assert finished == [("a", 100.5)]
    assert transport.buffered == 5
    assert transport.seconds_until_read("b") == pytest.approx(0.5)
    assert transport.read_for(start=101.0, seconds=0.5) == [("b", 101.5)]


def test_fractional_rates_accumulate_credit_instead_of_losing_bytes() -> None:
    transport: FakeTransport[str] = FakeTransport(high=100, low=0, rate=0.3)
    transport.write("a", 3)
    done = []
    for tick in range(10):
        done += transport.read_for(start=float(tick), seconds=1.0)
    assert [item for item, _ in done] == ["a"]
    assert transport.buffered == 0


def test_seconds_until_the_buffer_is_down_to_low() -> None:
    transport: FakeTransport[str] = FakeTransport(high=10, low=2, rate=4.0)
    transport.write("a", 20)
    assert transport.paused
    wait = transport.seconds_until(transport.low)
    assert wait == pytest.approx(4.5)
    transport.read_for(start=0.0, seconds=wait)
    assert transport.buffered == 2
    assert not transport.paused


def test_a_stalled_reader_never_gets_there() -> None:
    transport: FakeTransport[str] = FakeTransport(high=10, low=2, rate=0)
    transport.write("a", 20)
    assert transport.seconds_until(2) == math.inf
    assert transport.read_for(start=0.0, seconds=3600.0) == []


def test_reading_at_infinite_rate_empties_the_buffer_now() -> None:
    transport: FakeTransport[str] = FakeTransport(high=10, low=2, rate=0)
    transport.write("a", 20)
    assert transport.set_rate(math.inf) == ["a"]
    assert not transport.paused


def test_abort_loses_what_was_buffered_and_refuses_writes() -> None:
    transport: FakeTransport[str] = FakeTransport(high=10, low=2, rate=0)
    transport.write("a", 3)
    assert transport.abort() == ["a"]
    assert transport.buffered == 0
    with pytest.raises(RuntimeError, match=r"^write\(\) on a closed transport$"):
        transport.write("b", 1)


def test_watermarks_and_rate_are_validated() -> None:
    with pytest.raises(ValueError, match=r"^write limits \(high=1, low=2\) need 0 <= low <= high$"):
        FakeTransport(high=1, low=2)
    with pytest.raises(ValueError, match=r"^rate=-1 must be a number of bytes per second >= 0$"):
        FakeTransport(high=1, low=0, rate=-1)


def test_the_kernel_takes_up_to_its_low_water_mark_before_the_buffer_grows() -> None:
    transport: FakeTransport[str] = FakeTransport(high=10, low=4, rate=0, notsent_lowat=8)
    transport.write("a", 6)
    assert (transport.kernel_unsent, transport.buffered, transport.unread) == (6, 0, 6)
    transport.write("b", 6)
    assert (transport.kernel_unsent, transport.buffered) == (8, 4)
    assert not transport.paused
    transport.write("c", 7)
    assert (transport.kernel_unsent, transport.buffered) == (8, 11)
    assert transport.paused
    # Reading empties the kernel, which refills from the buffer at once.
    assert transport.drain(6) == ["a"]
    assert (transport.kernel_unsent, transport.buffered) == (8, 5)
    assert transport.paused  # 5 bytes in the buffer, over low=4
    assert transport.drain(1) == []
    assert not transport.paused
    assert transport.drain(100) == ["b", "c"]
    assert (transport.kernel_unsent, transport.buffered, transport.unread) == (0, 0, 0)


def test_the_buffer_drains_to_low_after_the_kernel_is_read_too() -> None:
    transport: FakeTransport[str] = FakeTransport(high=10, low=2, rate=4.0, notsent_lowat=8)
    transport.write("a", 28)
    assert transport.buffered == 20
    wait = transport.seconds_until(transport.low)
    assert wait == pytest.approx(4.5)  # 18 bytes to read, as without a kernel
    transport.read_for(start=0.0, seconds=wait)
    assert (transport.buffered, transport.kernel_unsent) == (2, 8)


def test_an_abort_loses_what_the_kernel_held_too() -> None:
    transport: FakeTransport[str] = FakeTransport(high=10, low=2, rate=0, notsent_lowat=8)
    transport.write("a", 5)
    assert transport.abort() == ["a"]
    assert (transport.kernel_unsent, transport.buffered, transport.unread) == (0, 0, 0)


@pytest.mark.parametrize("value", [-1, 1.5, True])
def test_a_kernel_low_water_mark_must_be_a_whole_number_of_bytes(value: object) -> None:
    with pytest.raises(ValueError, match=rf"^notsent_lowat={value!r} must be an int >= 0$"):
        FakeTransport(high=10, low=2, notsent_lowat=value)  # type: ignore[arg-type]
