"""The drain rate: measured on the slow path from what the shell reports, never on the fast path."""

from __future__ import annotations

import math

import pytest

from wsfanout.lowlevel import DrainMeter, KernelView, Outbox, Wait, Write, make_message
from wsfanout.policies import DropOldest, Throttle
from wsfanout.testing import Client, Simulator


def test_a_backlogged_wait_measures_what_left_the_buffer() -> None:
    meter = DrainMeter()
    meter.arm(10.0, 30_000, drain=False)
    assert meter.observe(10.5, 5_000) == 50_000.0  # 25 kB in half a second, still backlogged
    meter.arm(10.5, 30_000, drain=True)
    # A second sample moves the average by 1 - exp(-elapsed / 1 s).
    rate = meter.observe(11.5, 20_000)
    assert rate == pytest.approx(50_000 + (1 - math.exp(-1.0)) * (10_000 - 50_000))
    assert meter.samples == 2


def test_a_buffer_that_emptied_only_ever_raises_the_estimate() -> None:
    meter = DrainMeter()
    meter.arm(0.0, 10_000, drain=False)
    assert meter.observe(1.0, 0) is None  # emptied: at least 10 kB/s, but not a measure
    meter.arm(1.0, 10_000, drain=False)
    meter.observe(2.0, 5_000)
    assert meter.rate == 5_000.0
    meter.arm(2.0, 20_000, drain=False)
    assert meter.observe(3.0, 0) == 20_000.0  # emptied faster than the estimate: raised
    meter.arm(3.0, 1_000, drain=False)
    assert meter.observe(4.0, 0) == 20_000.0  # slower but emptied: says nothing
    assert meter.samples == 1


def test_samples_that_cannot_be_a_drain_are_ignored() -> None:
    meter = DrainMeter()
    meter.observe(1.0, 100)  # not armed
    meter.arm(1.0, 100, drain=False)
    assert meter.observe(1.0, 50) is None  # no time passed
    meter.arm(1.0, 100, drain=False)
    assert meter.observe(2.0, 500) is None  # the buffer grew: something else wrote
    assert meter.samples == 0


def test_a_subscriber_that_keeps_up_is_never_measured() -> None:
    outbox = Outbox(DropOldest(max_messages=8), high=1000, low=100)
    for seq in range(100):
        outbox.offer(make_message("x", seq=seq, time=0.0), 0.0, 0)
    assert outbox.stats(0.0).sent == 100
    assert outbox.snapshot(0.0, 0).drain_rate is None
    assert outbox.stats(0.0).drain_rate is None


def test_the_relay_measures_between_a_wait_and_its_next_turn() -> None:
    outbox = Outbox(Throttle(rate=1.0), high=1000, low=100)
    outbox.offer(make_message("a" * 400, seq=0, time=0.0), 0.0, 0)  # written at once
    outbox.offer(make_message("b" * 400, seq=1, time=0.0), 0.0, 400)  # held a second
    assert outbox.next_action(0.0, 400) == Wait(1.0, drain=False)
    action = outbox.next_action(1.0, 150)  # 250 bytes left the buffer in that second
    assert isinstance(action, Write)
    assert outbox.snapshot(1.0, 550).drain_rate == 250.0


@pytest.mark.parametrize("rate", [10_000.0, 50_000.0])
def test_a_simulated_reader_drains_at_its_rate_and_the_core_measures_it(rate: float) -> None:
    sim = Simulator()
    client = sim.join(DropOldest(max_messages=10_000), Client(high=32_768, low=8_192, rate=rate))
    for _ in range(400):  # 200 kB/s for 8 s
        sim.publish_many(("x" * 200, None, None) for _ in range(20))
        sim.advance(0.02)
    measured = sim.outbox(client).stats(sim.now).drain_rate
    assert measured is not None
    assert measured == pytest.approx(rate, rel=0.02)


# -- what the kernel says (KernelView, from TCP_INFO in the shell) -------------------------


def test_with_the_kernel_a_sample_counts_what_the_peer_acknowledged() -> None:
    meter = DrainMeter()
    # The kernel takes the buffer's bytes in steps of its low-water mark: the buffer's
    # drop (30 kB) is not what reached the client (50 kB acknowledged in that second).
    meter.arm(0.0, 30_000, drain=False, kernel=KernelView(unsent=16_384, acked=100_000))
    rate = meter.observe(1.0, 0, KernelView(unsent=16_384, acked=150_000))
    assert rate == 50_000.0
    assert meter.samples == 1


def test_a_sample_waiting_at_one_end_counts_and_one_waiting_at_neither_does_not() -> None:
    meter = DrainMeter()
    # Nothing waited, at either end: the peer acknowledged what it was given at once.
    meter.arm(0.0, 0, drain=False, kernel=KernelView(unsent=0, acked=0))
    assert meter.observe(0.1, 0, KernelView(unsent=0, acked=400_000)) is None
    # The kernel held unsent bytes at the start; the window opened and took them all.
    meter.arm(1.0, 0, drain=False, kernel=KernelView(unsent=16_384, acked=400_000))
    assert meter.observe(2.0, 0, KernelView(unsent=0, acked=440_000)) == 40_000.0
    # Waiting at the end only (the peer's window closed meanwhile): counts too.
    meter.arm(2.0, 0, drain=False, kernel=KernelView(unsent=0, acked=440_000))
    rate = meter.observe(3.0, 0, KernelView(unsent=8_000, acked=480_000))
    assert rate == pytest.approx(40_000.0)
    assert meter.samples == 2
    # A sample that waited at neither end never raises the estimate, however fast.
    meter.arm(3.0, 0, drain=False, kernel=KernelView(unsent=0, acked=480_000))
    assert meter.observe(3.01, 0, KernelView(unsent=0, acked=980_000)) == pytest.approx(40_000.0)


def test_without_acknowledged_bytes_the_buffer_is_measured_as_before() -> None:
    meter = DrainMeter()
    meter.arm(0.0, 30_000, drain=False, kernel=KernelView(unsent=16_384))
    assert meter.observe(0.5, 5_000, KernelView(unsent=16_384)) == 50_000.0


def test_the_delivery_rate_kept_is_one_the_sender_did_not_limit() -> None:
    meter = DrainMeter()
    assert meter.delivery_rate is None
    meter.kernel(KernelView(unsent=0))
    assert meter.delivery_rate is None  # the kernel did not say
    meter.kernel(KernelView(delivery_rate=2e6, app_limited=True))
    assert meter.delivery_rate == 2e6  # limited by the sender, but better than nothing
    meter.kernel(KernelView(delivery_rate=1e6, app_limited=True))
    assert meter.delivery_rate == 2e6  # a lower bound below the one kept says nothing
    meter.kernel(KernelView(delivery_rate=5e5))
    assert meter.delivery_rate == 5e5  # not limited by the sender: replaces it
    meter.kernel(KernelView(delivery_rate=8e5, app_limited=True))
    assert meter.delivery_rate == 8e5  # the peer is at least that fast
    # Observing a sample keeps the delivery rate too, armed or not.
    meter.observe(1.0, 0, KernelView(delivery_rate=3e5))
    assert meter.delivery_rate == 3e5
