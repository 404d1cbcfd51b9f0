"""The control lane: frames that are no message (gap notices, heartbeats, resume frames)
go out before any later message, bypass every policy and are counted as no message."""

from __future__ import annotations

import math

from wsfanout.lowlevel import (
    IDLE,
    CloseAction,
    Offer,
    Outbox,
    Wait,
    Write,
    make_control,
    make_message,
)
from wsfanout.policies import DEFAULT_POLICY, Disconnect, DropOldest, Throttle
from wsfanout.testing import Client, Simulator, check_trace

HIGH, LOW = 1000, 100


def message(seq: int, size: int = 10) -> object:
    return make_message("x" * size, seq=seq, time=0.0)


def test_a_control_frame_to_an_idle_subscriber_is_written_at_once_and_counted_apart() -> None:
    outbox = Outbox(DEFAULT_POLICY, high=HIGH, low=LOW)
    assert outbox.send_control(make_control('{"type":"gap"}', time=0.0), 0.0, 0) is Offer.WRITE
    stats = outbox.stats(0.0)
    assert (stats.offered, stats.sent, stats.frames, stats.dropped) == (0, 0, 0, 0)
    assert outbox.control_frames == 1


def test_a_control_frame_goes_before_messages_queued_earlier_or_later() -> None:
    outbox = Outbox(DropOldest(max_messages=10), high=HIGH, low=LOW)
    assert outbox.offer(make_message("a", seq=1, time=0.0), 0.0, 500) is Offer.KICK
    notice = make_control("notice", time=0.0)
    assert outbox.send_control(notice, 0.0, 500) is Offer.KICK
    # Nothing may overtake the waiting control frame, not even on an empty buffer.
    assert outbox.offer(make_message("b", seq=2, time=0.0), 0.0, 0) is not Offer.WRITE
    first = outbox.next_action(0.0, 0)
    assert first == Write((notice,))
    second = outbox.next_action(0.0, 0)
    assert isinstance(second, Write)
    assert [frame.seq for frame in second.frames] == [1, 2]
    assert outbox.next_action(0.0, 0) is IDLE
    assert outbox.stats(0.0).sent == 2


def test_the_fast_path_resumes_once_the_control_lane_is_written() -> None:
    outbox = Outbox(DEFAULT_POLICY, high=HIGH, low=LOW)
    assert outbox.send_control(make_control("n", time=0.0), 0.0, LOW + 1) is Offer.KICK
    assert outbox.offer(make_message("held", seq=1, time=0.0), 0.0, 0) is not Offer.WRITE
    assert isinstance(outbox.next_action(0.0, 0), Write)  # the control frame
    assert isinstance(outbox.next_action(0.0, 0), Write)  # the message queued behind it
    assert outbox.next_action(0.0, 0) is IDLE
    assert outbox.offer(make_message("fast", seq=2, time=0.0), 0.0, 0) is Offer.WRITE


def test_no_policy_holds_a_control_frame_back() -> None:
    outbox = Outbox(Throttle(rate=1.0), high=HIGH, low=LOW)
    outbox.offer(make_message("a", seq=1, time=0.0), 0.0, 0)  # written: the throttle starts
    outbox.offer(make_message("b", seq=2, time=0.0), 0.0, 0)  # queued behind the throttle
    throttled = outbox.next_action(0.0, 0)
    assert isinstance(throttled, Wait)
    assert throttled.until > 0.0
    outbox.send_control(make_control("n", time=0.0), 0.0, 0)
    assert isinstance(outbox.next_action(0.0, 0), Write)


def test_over_the_high_water_mark_control_frames_wait_and_the_policy_may_still_close() -> None:
    outbox = Outbox(Disconnect(max_lag=1.0), high=HIGH, low=LOW)
    outbox.send_control(make_control("n", time=0.0), 0.0, HIGH + 1)
    assert outbox.next_action(0.0, HIGH + 1) == Wait(math.inf, drain=True)
    outbox.offer(make_message("old", seq=1, time=0.0), 0.0, HIGH + 1)
    action = outbox.next_action(5.0, HIGH + 1)
    assert isinstance(action, CloseAction)
    assert action.close.code == 1013
    assert not outbox.control, "closing drops what was waiting"


def test_control_frames_that_back_up_past_the_byte_bound_close_the_subscriber() -> None:
    outbox = Outbox(DropOldest(max_bytes=100), high=HIGH, low=LOW)
    outcomes = [
        outbox.send_control(make_control("n" * 40, time=0.0), 0.0, HIGH + 1) for _ in range(3)
    ]
    assert outcomes == [Offer.KICK, Offer.KICK, Offer.CLOSE]
    assert outbox.closing is not None
    assert "3 control frames, 120 bytes" in outbox.closing.cause
    assert outbox.send_control(make_control("late", time=0.0), 0.0, 0) is Offer.NONE


def test_the_simulator_delivers_control_frames_first_and_the_guarantees_still_hold() -> None:
    sim = Simulator()
    client = sim.join(DropOldest(max_messages=10), Client(high=HIGH, low=LOW, rate=0.0))
    seqs = [sim.publish("x" * 400) for _ in range(4)]  # the last waits: over high
    sim.send_control(client, "notice")
    sim.read(client)
    deliveries = sim.trace.clients[client].deliveries
    controls = [n for n, d in enumerate(deliveries) if d.frame.control]
    assert len(controls) == 1
    assert sim.trace.clients[client].received == seqs
    # The control frame came after what was already written, before what was queued.
    written_before = sum(1 for d in deliveries[: controls[0]] if not d.frame.control)
    assert 0 < written_before < len(seqs)
    sim.settle()
    sim.trace.settled = True
    assert check_trace(sim.trace) == []
