"""The simulator drives the production Outbox as the hub and the relay do."""

import math

import pytest

from wsfanout import Close, Decision, Snapshot
from wsfanout.lowlevel import Batched, Outbox, Write, make_message
from wsfanout.policies import (
    Batch,
    Disconnect,
    DropOldest,
    SkipToLatest,
    Throttle,
)
from wsfanout.testing import (
    SETTLING,
    Advance,
    Client,
    Drain,
    GuaranteeViolation,
    Publish,
    Read,
    Schedule,
    Send,
    SimulationError,
    Simulator,
    Stall,
    check_guarantees,
    simulate,
)

from .broken import AsksAgainNow, HoldsAnHour

SMALL = Client(high=64, low=16)
"""A transport whose write buffer fills after a few small messages."""


def test_a_client_that_keeps_up_gets_everything_on_the_fast_path_without_a_relay() -> None:
    sim = Simulator()
    client = sim.join(DropOldest(max_messages=4))
    for n in range(50):
        sim.publish(f"m{n}")
        assert not sim.has_relay(client)
    trace = sim.trace.clients[client]
    assert trace.received == list(range(50))
    assert all(write.fast for write in trace.writes)


def test_a_stalled_client_queues_once_the_buffer_is_past_low_and_gets_a_relay() -> None:
    sim = Simulator()
    client = sim.join(DropOldest(max_messages=100), SMALL)
    sim.stall(client)
    for _ in range(10):
        sim.publish("12345678")  # a 10-byte frame
    trace = sim.trace.clients[client]
    fast = [write for write in trace.writes if write.fast]
    assert len(fast) == 2  # 0 and 10 bytes buffered are <= low=16; 20 is not
    assert sim.has_relay(client)
    # The relay wrote until the buffer passed high=64, then waits for it to drain.
    assert sim.transport(client).buffered == 70
    assert len(sim.outbox(client).queue) == 3
    assert all(write.buffered <= 64 for write in trace.writes)


def test_a_kernel_below_the_buffer_takes_its_low_water_mark_first() -> None:
    sim = Simulator()
    client = sim.join(DropOldest(max_messages=100), Client(high=64, low=16, notsent_lowat=50))
    sim.stall(client)
    for _ in range(20):
        sim.publish("12345678")  # a 10-byte frame
    transport = sim.transport(client)
    # The kernel took 50 bytes; the buffer filled over high as without it.
    assert (transport.kernel_unsent, transport.buffered) == (50, 70)
    assert len([write for write in sim.trace.clients[client].writes if write.fast]) == 7
    sample = sim.trace.clients[client].samples[-1]
    assert (sample.kernel_unsent, sample.write_buffer) == (50, 70)


def test_a_policy_behind_sees_what_the_simulated_kernel_holds() -> None:
    seen: list[int | None] = []

    def records(snapshot: Snapshot) -> Decision:
        seen.append(snapshot.kernel_unsent)
        return Decision()

    sim = Simulator()
    client = sim.join(records, Client(high=64, low=16, notsent_lowat=30))
    sim.stall(client)
    for _ in range(6):
        sim.publish("12345678")
    # Five on the fast path (the kernel takes three, the buffer two): not read there.
    assert seen[:5] == [None] * 5
    # The sixth is queued behind a full kernel and a buffer over low, then the relay asks.
    assert set(seen[5:]) == {30}
    assert sim.transport(client).kernel_unsent == 30


def test_the_relay_resumes_when_the_buffer_drains_to_low_and_ends_when_the_queue_is_empty() -> None:
    sim = Simulator()
    client = sim.join(DropOldest(max_messages=100), SMALL)
    sim.stall(client)
    for _ in range(10):
        sim.publish("12345678")
    sim.drain(client, 50)  # 70 -> 20 bytes: still over low=16, still paused
    assert len(sim.outbox(client).queue) == 3
    sim.drain(client, 4)  # 16 bytes: resume_writing, the relay writes the rest
    assert len(sim.outbox(client).queue) == 0
    assert not sim.has_relay(client)
    sim.read(client)
    assert sim.trace.clients[client].received == list(range(10))


def test_a_throttled_client_gets_one_frame_per_interval_of_virtual_time() -> None:
    sim = Simulator(start=1000.0)
    client = sim.join(Throttle(rate=2.0))
    for _ in range(5):
        sim.publish("x")
    sim.advance(10.0)
    times = [write.at for write in sim.trace.clients[client].writes]
    assert times == [1000.0, 1000.5, 1001.0, 1001.5, 1002.0]
    assert sim.now == 1010.0


def test_minutes_of_virtual_time_run_as_a_handful_of_events() -> None:
    sim = Simulator()
    client = sim.join(Throttle(rate=1.0) | DropOldest(max_messages=1000))
    sim.publish_many(("x", None, None) for _ in range(600))
    sim.advance(600.0)
    trace = sim.trace.clients[client]
    assert len(trace.received) == 600
    assert trace.deliveries[-1].at == 599.0


def test_a_policy_close_reaches_a_reading_client_as_its_close_code() -> None:
    sim = Simulator()
    client = sim.join(Disconnect(max_lag=1.0) | Throttle(rate=0.1))
    sim.publish("a")
    sim.publish("b")  # held by the throttle
    sim.advance(5.0)
    trace = sim.trace.clients[client]
    assert trace.closing is not None
    assert trace.closing.at == 1.0
    assert trace.closing.close == Close(1013, "subscriber too slow")
    assert trace.ended is not None
    assert (trace.ended.how, trace.ended.code, trace.ended.at) == ("closed", 1013, 1.0)
    assert not sim.attached(client)
    assert sim.outbox(client).stats(sim.now).disconnected == 1


def test_a_stalled_client_is_aborted_when_the_close_times_out() -> None:
    sim = Simulator(close_timeout=2.0)
    client = sim.join(Disconnect(max_messages=2), SMALL)
    sim.stall(client)
    for _ in range(20):
        sim.publish("12345678")
    trace = sim.trace.clients[client]
    assert trace.closing is not None
    sim.advance(10.0)
    assert trace.ended is not None
    assert (trace.ended.how, trace.ended.code, trace.ended.at) == ("aborted", 1006, 2.0)
    assert not sim.has_relay(client)


def test_a_hangup_loses_what_was_queued_and_buffered() -> None:
    sim = Simulator()
    client = sim.join(DropOldest(max_messages=100), SMALL)
    sim.stall(client)
    for _ in range(10):
        sim.publish("12345678")
    sim.hangup(client)
    stats = sim.outbox(client).stats(sim.now)
    assert stats.disconnected == 3
    assert stats.offered == stats.sent + stats.dropped
    assert sim.transport(client).buffered == 0
    assert sim.trace.clients[client].received == []
    assert not sim.has_relay(client)
    sim.publish("after")
    assert sim.outbox(client).stats(sim.now).offered == 10


def test_leaving_cancels_the_relay_and_discards_the_queue() -> None:
    sim = Simulator()
    client = sim.join(DropOldest(max_messages=100), SMALL)
    sim.stall(client)
    for _ in range(10):
        sim.publish("12345678")
    sim.leave(client)
    assert not sim.attached(client)
    assert not sim.has_relay(client)
    assert len(sim.outbox(client).queue) == 0
    sim.read(client)  # what was already buffered still arrives, then the close
    trace = sim.trace.clients[client]
    assert trace.received == list(range(7))
    assert trace.ended is not None
    assert trace.ended.code == 1000


def test_topics_route_messages_as_the_hub_does() -> None:
    sim = Simulator()
    everything = sim.join(DropOldest())
    prices = sim.join(DropOldest(), Client(topics={"prices"}))
    sim.publish("a", topic="prices")
    sim.publish("b", topic="news")
    sim.publish("c")
    assert sim.trace.clients[everything].received == [0, 1, 2]
    assert sim.trace.clients[prices].received == [0, 2]


def test_a_sent_message_survives_skip_to_latest() -> None:
    sim = Simulator()
    client = sim.join(SkipToLatest(), Client(high=0, low=0, rate=0))
    sim.publish("first")  # written: the buffer was empty
    sent = sim.send(client, "for you alone")
    sim.publish("second")
    sim.publish("third")
    sim.read(client)
    assert sim.trace.clients[client].received == [0, sent, 3]


def test_batched_frames_name_the_messages_they_carry() -> None:
    outbox = Outbox(Batch(max_messages=3), high=0, low=0)
    for seq in range(4):
        outbox.offer(make_message(f"m{seq}", seq=seq, time=0.0), 0.0, 1)
    action = outbox.next_action(0.0, 0)
    assert isinstance(action, Write)
    (frame,) = action.frames
    assert isinstance(frame, Batched)
    assert [part.seq for part in frame.parts] == [0, 1, 2]
    assert frame.seq == 0
    assert frame.payload == b"m0\nm1\nm2"


def test_the_simulator_records_batches_with_their_parts() -> None:
    trace = simulate(Batch(max_messages=3), Schedule([Stall(), Publish(n=7), Read()], [SMALL]))
    frames = [delivery.frame.seqs for delivery in trace.clients[0].deliveries]
    assert frames == [(0,), (1,), (2, 3, 4), (5, 6)]


def test_a_relay_that_spins_at_one_instant_is_reported_not_run_forever() -> None:
    sim = Simulator()
    client = sim.join(AsksAgainNow(), Client(high=0, low=0, rate=0))
    sim.publish("a")
    with pytest.raises(SimulationError, match=r"^the relay spun: 1000 turns at t=0\.0") as info:
        sim.publish("b")
    assert info.value.client == client


def test_simulate_runs_a_schedule_and_settles() -> None:
    schedule = Schedule(
        steps=[Stall(), Publish(n=10, size=8), Advance(3.0), Drain(nbytes=25), Send()],
        clients=[SMALL, Client(rate=100.0)],
    )
    trace = simulate(DropOldest(max_messages=5), schedule)
    assert trace.error is None
    assert trace.settled
    slow, steady = trace.clients
    assert steady.received == list(range(10))  # Send() went to client 0 alone
    # The burst is synchronous: 8 messages queued behind a buffer past low, 3 evicted.
    assert slow.received == [0, 1, 5, 6, 7, 8, 9, 10]
    assert slow.samples[-1].stats.dropped_oldest == 3
    assert {sample.step for sample in slow.samples} == {None, 0, 1, 2, 3, 4, SETTLING}


def test_a_disconnect_deadline_at_a_production_clock_value_does_not_spin() -> None:
    # Found by the property suite: at 1e6 seconds, the lag at Disconnect's own deadline
    # rounded to just under max_lag, and the relay asked again at the same instant forever.
    schedule = Schedule(
        steps=[Stall(), Publish(size=0), Publish(n=27, size=36), Publish(size=0), Advance(0.1)],
        clients=[Client(), Client(), Client()],
        start=1e6,
    )
    trace = check_guarantees(Disconnect(max_lag=0.1), schedule)
    closing = trace.clients[0].closing
    assert closing is not None
    assert closing.at == 1e6 + 0.1


def test_a_client_index_outside_the_simulation_is_an_error() -> None:
    sim = Simulator()
    with pytest.raises(IndexError, match=r"^client=0 is not one of the 0 clients$"):
        sim.stall(0)


def test_advancing_by_a_negative_time_is_an_error() -> None:
    sim = Simulator()
    with pytest.raises(ValueError, match=r"^seconds=-1\.0 must be a finite number >= 0$"):
        sim.advance(-1.0)
    assert sim.now == 0.0
    assert math.isfinite(sim.now)


def test_settling_gives_up_after_its_horizon_with_nothing_written() -> None:
    # A relay that asks to send an hour from now each time it is asked never writes:
    # settling stops one horizon after the last write instead of running on for ever.
    schedule = Schedule(steps=[Stall(), Publish(n=3, size=8)], clients=[SMALL])
    trace = simulate(HoldsAnHour(), schedule, settle_horizon=100.0)
    assert trace.error is None
    assert trace.gave_up == "nothing was written for 100.0s (the settling horizon)"
    assert trace.clients[0].samples[-1].queued_messages > 0
    with pytest.raises(GuaranteeViolation, match=r"the settling horizon"):
        check_guarantees(HoldsAnHour(), schedule)


def test_a_policy_that_writes_within_the_horizon_settles_completely() -> None:
    # Throttle writes once per 50 s: every write renews the horizon, so all of it drains.
    schedule = Schedule(steps=[Stall(), Publish(n=4, size=8)], clients=[SMALL])
    trace = simulate(Throttle(rate=0.02), schedule, settle_horizon=60.0)
    assert trace.gave_up is None
    assert trace.clients[0].samples[-1].queued_messages == 0
    assert trace.clients[0].received == [0, 1, 2, 3]


def test_a_settling_horizon_that_is_not_a_positive_number_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"^horizon=0\.0 must be a finite number"):
        Simulator().settle(0.0)
