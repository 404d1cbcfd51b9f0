"""Adaptive: frames paced to the drain rate, one pace per level, at most one step per hold."""

from __future__ import annotations

import itertools
import math

import attrs
import pytest

from wsfanout import PolicyConflictError, PolicyError, Snapshot
from wsfanout.policies import Adaptive, Batch, ConflateByKey, Disconnect, SkipToLatest, Throttle
from wsfanout.testing import (
    Advance,
    BatchIntegrity,
    Client,
    LevelBound,
    Lossless,
    Publish,
    Read,
    Schedule,
    Simulator,
    StepsApart,
    check_guarantees,
)

PACED = Adaptive(interval=0.1, max_bytes=65_536, min_bytes=1_024)
STEADY = Adaptive(interval=0.1, max_bytes=65_536, min_bytes=1_024, drain=None)
"""Without the draining after an overshoot: what the tests of the other parts look at."""


def test_its_levels_are_quarter_octave_paces_from_a_full_frame_per_interval() -> None:
    paces = PACED.paces
    assert paces[0] == 655_360.0
    assert paces[1] == pytest.approx(655_360.0 / 2**0.25)
    assert paces[-1] == 1_000.0
    assert len(paces) == 39
    levels = PACED.level_policies()
    assert levels[0] == Batch(max_messages=1024, max_bytes=65_536)
    assert levels[1] == Batch(max_messages=1024, max_bytes=65_536) | Throttle(rate=10.0)
    # Below 1 KiB per interval, frames stay at 1 KiB and come less often.
    assert levels[-1] == Batch(max_messages=1024, max_bytes=1_024) | Throttle(rate=1_000.0 / 1_024)
    assert PACED.level_names()[:2] == ("unpaced", "655 kB/s")


def test_the_level_is_the_pace_nearest_to_a_fraction_of_the_drain_rate() -> None:
    assert PACED.target(None) == 0
    assert PACED.target(10e6) == 0  # faster than a full frame per interval: no pacing
    level = PACED.target(50_000.0)
    assert PACED.paces[level - 1] == pytest.approx(0.9 * 50_000, rel=0.1)
    assert PACED.target(1.0) == len(PACED.paces)


def test_it_steps_to_the_measured_pace_once_and_then_holds() -> None:
    first = STEADY.decide(Snapshot(now=5.0, queued_messages=40, drain_rate=50_000.0))
    assert first.step is not None
    assert (first.step.previous, first.step.level) == (0, STEADY.target(50_000.0))
    assert first.step.cause == "drain_rate 50000 B/s"
    again = STEADY.decide(
        Snapshot(now=5.5, queued_messages=40, drain_rate=20_000.0, memo=first.memo)
    )
    assert again.step is None  # within the hold
    later = STEADY.decide(
        Snapshot(now=6.0, queued_messages=40, drain_rate=20_000.0, memo=again.memo)
    )
    assert later.step is not None
    assert later.step.level == STEADY.target(20_000.0)


def test_a_reader_found_slower_than_it_was_sent_drains_first_then_gets_its_pace() -> None:
    # Unpaced, then measured: what it could not read waits unseen, so half its rate...
    first = PACED.decide(Snapshot(now=5.0, queued_messages=40, drain_rate=50_000.0))
    assert first.step is not None
    assert (first.step.previous, first.step.level) == (0, PACED.target(25_000.0 / 0.9))
    assert first.step.cause == "drain_rate 50000 B/s: draining what it fell behind on"
    # ... while measurements keep coming (the kernel holds unsent bytes: buffers full) ...
    memo = first.memo
    for now, rate in ((6.0, 49_000.0), (6.8, 51_000.0)):
        kept = PACED.decide(Snapshot(now=now, queued_messages=40, drain_rate=rate, memo=memo))
        assert kept.step is None
        memo = kept.memo
    early = PACED.decide(Snapshot(now=7.5, queued_messages=40, drain_rate=51_000.0, memo=memo))
    assert early.step is None  # less than a hold since the last measurement
    # ... and its pace once a hold passes without one.
    paced = PACED.decide(Snapshot(now=7.8, queued_messages=40, drain_rate=51_000.0, memo=memo))
    assert paced.step is not None
    assert paced.step.level == PACED.target(51_000.0)
    assert paced.step.cause == "drain_rate 51000 B/s"
    # Without draining (drain=None), the pace at once.
    assert STEADY.decide(Snapshot(now=5.0, drain_rate=50_000.0)).step == attrs.evolve(
        first.step,
        name=STEADY.level_names()[STEADY.target(50_000.0)],
        level=STEADY.target(50_000.0),
        cause="drain_rate 50000 B/s",
    )


def test_a_kernel_delivering_slower_than_the_buffer_drains_sets_the_pace() -> None:
    fast_buffer = Snapshot(now=5.0, queued_messages=40, drain_rate=500_000.0)
    slow_path = attrs.evolve(fast_buffer, delivery_rate=50_000.0)
    assert STEADY.decide(fast_buffer).step.level == STEADY.target(500_000.0)  # type: ignore[union-attr]
    assert STEADY.decide(slow_path).step.level == STEADY.target(50_000.0)  # type: ignore[union-attr]
    # A delivery rate above the drain rate (a short link, a slow reader) changes nothing.
    loopback = attrs.evolve(fast_buffer, drain_rate=50_000.0, delivery_rate=4e9)
    assert STEADY.decide(loopback).step.level == STEADY.target(50_000.0)  # type: ignore[union-attr]


def test_the_pace_holds_frames_apart_as_the_level_s_throttle_does() -> None:
    paced = STEADY.decide(
        Snapshot(now=5.0, queued_messages=40, drain_rate=50_000.0, last_send=4.99)
    )
    assert paced.send_at == pytest.approx(5.09)
    unpaced = STEADY.decide(Snapshot(now=5.0, queued_messages=40, last_send=4.99))
    assert unpaced.step is None
    assert unpaced.send_at == -math.inf


def test_without_a_new_measurement_it_probes_a_faster_pace_and_stays_there() -> None:
    memo = STEADY.decide(Snapshot(now=0.0, queued_messages=1, drain_rate=50_000.0)).memo
    level = STEADY.target(50_000.0)
    quiet = STEADY.decide(Snapshot(now=9.0, queued_messages=1, drain_rate=50_000.0, memo=memo))
    assert quiet.step is None
    assert quiet.recheck_at == 10.0
    probe = STEADY.decide(Snapshot(now=10.0, queued_messages=1, drain_rate=50_000.0, memo=memo))
    assert probe.step is not None
    assert probe.step.level == level - 1
    assert probe.step.cause == "no new drain rate for 10.0s: probing a faster pace"
    stays = STEADY.decide(
        Snapshot(now=12.0, queued_messages=1, drain_rate=50_000.0, memo=probe.memo)
    )
    assert stays.step is None
    measured = STEADY.decide(
        Snapshot(now=12.0, queued_messages=1, drain_rate=49_000.0, memo=probe.memo)
    )
    assert measured.step is not None
    assert measured.step.level == STEADY.target(49_000.0)
    never = Adaptive(probe=None, drain=None)
    memo = never.decide(Snapshot(now=0.0, queued_messages=1, drain_rate=50_000.0)).memo
    assert (
        never.decide(Snapshot(now=100.0, queued_messages=1, drain_rate=50_000.0, memo=memo)).step
        is None
    )


def test_it_batches_so_it_claims_the_batch_slot_and_declares_its_promises() -> None:
    with pytest.raises(PolicyConflictError, match="both decide how messages are framed"):
        PACED | Batch()
    policy = SkipToLatest() | PACED | Disconnect(max_lag=5.0)
    assert len(policy.level_policies()) == 40
    assert PACED.guarantees() == (
        StepsApart(hold=1.0),
        LevelBound(),
        BatchIntegrity(max_messages=1024, max_bytes=65_536),
        Lossless(),
    )
    assert repr(Adaptive(interval=0.05, probe=None)) == "Adaptive(interval=0.05, probe=None)"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval": 0}, r"^interval=0 must be a finite number of seconds > 0$"),
        ({"max_bytes": 0}, r"^max_bytes=0 must be >= 1$"),
        ({"min_bytes": 2_000, "max_bytes": 1_000}, r"^min_bytes=2000 must be <= max_bytes=1000$"),
        ({"fraction": 1.5}, r"^fraction=1.5 must be > 0 and <= 1$"),
        ({"drain": 0}, r"^drain=0 must be > 0 and <= 1, or None$"),
        ({"drain": "half"}, r"^drain='half' must be a number, or None$"),
        ({"probe": -1}, r"^probe=-1 must be a finite number of seconds > 0$"),
        ({"combine": "csv"}, r"^combine='csv' is not a known combiner"),
        ({"announce": 1}, r"^announce=1 must be True or False$"),
    ],
)
def test_wrong_parameters_are_refused_naming_them(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        Adaptive(**kwargs)  # type: ignore[arg-type]


def test_a_slow_reader_gets_fewer_fuller_frames_at_its_pace_and_a_fast_one_everything() -> None:
    """200 kB/s published (1000 updates of 200 bytes a second on 100 keys) to a reader of
    50 kB/s and to one that keeps up, on the simulator's virtual clock."""
    sim = Simulator()
    policy = ConflateByKey(max_messages=4096) | Adaptive(interval=0.1)
    slow = sim.join(policy, Client(high=32_768, low=8_192, rate=50_000))
    fast = sim.join(policy, Client(high=32_768, low=8_192))
    seq = 0
    for _ in range(500):  # 10 s
        sim.publish_many(("x" * 200, None, f"k{(seq := seq + 1) % 100}") for _ in range(20))
        sim.advance(0.02)
    trace = sim.trace.clients[slow]
    late = [w for w in trace.writes if w.at >= 2.0]
    sent = sum(len(frame.data) for w in late for frame in w.frames) / (sim.now - 2.0)
    assert 0.8 * 50_000 <= sent <= 1.2 * 50_000  # within 20% of the drain rate
    frames = sum(len(w.frames) for w in late) / (sim.now - 2.0)
    assert frames <= 11  # about one frame per interval
    ages = sorted(
        w.at - sim.trace.messages[seq].time for w in late for f in w.frames for seq in f.seqs
    )
    assert ages[int(0.99 * len(ages))] < 0.25
    steps = [s.at for s in trace.stepped]
    assert all(b - a >= 1.0 for a, b in itertools.pairwise(steps))
    # The one that keeps up is never paced: every update, each in its own frame.
    fast_stats = sim.outbox(fast).stats(sim.now)
    assert (fast_stats.level, fast_stats.steps_up, fast_stats.sent) == (0, 0, 10_000)
    assert fast_stats.frames == fast_stats.sent


def test_a_probe_found_too_fast_is_a_ceiling_for_a_while() -> None:
    probe = STEADY.probe
    assert probe is not None
    level = STEADY.target(50_000.0)
    memo = STEADY.decide(Snapshot(now=0.0, queued_messages=1, drain_rate=50_000.0)).memo
    up = STEADY.decide(Snapshot(now=probe, queued_messages=1, drain_rate=50_000.0, memo=memo))
    assert up.step is not None
    assert up.step.level == level - 1
    # The probe overshot: a measurement says the reader takes less, back to its pace.
    back = STEADY.decide(
        Snapshot(now=probe + 5, queued_messages=1, drain_rate=50_100.0, memo=up.memo)
    )
    assert back.step is not None
    assert back.step.level == level
    memo = back.memo
    # Probe periods later, no probe to the pace that overshot...
    for now in (probe * 3, probe * 5):
        quiet = STEADY.decide(Snapshot(now=now, queued_messages=1, drain_rate=50_100.0, memo=memo))
        assert quiet.step is None
        # ... and no recheck before the ceiling expires (one already due would spin the
        # relay: the hypothesis search of the mobile preset found that).
        assert quiet.recheck_at == probe + 5 + 6 * probe
        memo = quiet.memo
    # ... until the ceiling expires.
    later = probe + 5 + 6 * probe
    again = STEADY.decide(Snapshot(now=later, queued_messages=1, drain_rate=50_100.0, memo=memo))
    assert again.step is not None
    assert again.step.level == level - 1


def test_a_pace_that_drains_is_not_rechecked_before_its_draining_can_end() -> None:
    # Found by CI's 1,000 examples: draining (no probe) until a hold after the last
    # measurement, while the probe's recheck came due half a hold earlier, made the
    # relay ask again at the same instant for ever.
    schedule = Schedule(
        steps=[
            Read(rate=10.0),
            Publish(size=0),
            Publish(n=25, size=118),
            Publish(size=0),
            Read(rate=1000.0),
            Advance(seconds=3.0),
        ],
        clients=[Client(), Client()],
    )
    check_guarantees(Adaptive(interval=0.01, max_bytes=16, min_bytes=1, probe=0.5), schedule)
