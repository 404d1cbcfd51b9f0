"""Acknowledgements in the core: what a client's application has taken, and its rate."""

from __future__ import annotations

import math

import attrs
import pytest

from wsfanout import Close, ConfigError, Snapshot
from wsfanout._core.policy import reads_acks
from wsfanout.lowlevel import (
    AckWindow,
    Offer,
    Outbox,
    Wait,
    Write,
    ack_request,
    make_control,
    make_message,
    read_ack,
    window,
)
from wsfanout.policies import Above, Adaptive, Batch, ConflateByKey, DropOldest, Escalate, Level


def test_unacked_is_what_was_written_and_not_taken_once_the_client_is_heard() -> None:
    acks = AckWindow(base=3, now=0.0)  # three frames went out before the request
    for size in (100, 200, 300, 400):
        acks.wrote(size)
    assert [acks.unacked] == [None]  # it may not acknowledge at all
    assert acks.ack(3, 0.01)  # the client took what came before the request: news
    assert acks.unacked == 1000
    assert acks.ack(5, 0.05)
    assert (acks.acked, acks.acked_bytes, acks.unacked) == (2, 300, 700)
    assert not acks.ack(4, 0.06)  # overtaken by a later one: nothing changes
    assert acks.unacked == 700
    assert acks.ack(99, 0.1)  # more than was written: all of it
    assert (acks.acked, acks.unacked) == (4, 0)


def test_its_rate_comes_from_intervals_in_which_the_client_had_frames_waiting() -> None:
    acks = AckWindow(base=0, now=0.0)
    for _ in range(20):
        acks.wrote(1000)
    # Everything was written before this first acknowledgement, but nothing was known
    # to be waiting before it: it raises nothing (2 kB is no window's worth).
    assert acks.ack(2, 0.1)
    assert acks.rate is None
    # Frames written before the previous acknowledgement are still not taken: the
    # client was busy all along, so 5,000 bytes in 0.1 s is its rate.
    acks.ack(7, 0.2)
    assert acks.rate == pytest.approx(50_000.0)
    acks.ack(12, 0.3)
    assert acks.rate == pytest.approx(50_000.0)
    acks.ack(14, 0.4)  # slower: the average moves by 1 - exp(-0.1)
    assert acks.rate == pytest.approx(50_000.0 + (1 - math.exp(-0.1)) * (20_000.0 - 50_000.0))


def test_a_client_that_takes_all_it_is_given_raises_its_rate_only_by_full_windows() -> None:
    acks = AckWindow(base=0, now=0.0)
    acks.wrote(4000)
    acks.ack(1, 0.05)  # took everything: 80 kB/s of what it was given, less than a window
    assert acks.rate is None
    for _ in range(3):
        acks.wrote(4000)
    acks.ack(4, 0.1)  # 12 kB in 0.05 s, all it had, and at least a window: the window held it
    assert acks.rate == pytest.approx(240_000.0)
    assert window(acks.rate) == pytest.approx(24_000.0)
    acks.wrote(1000)
    acks.ack(5, 0.15)  # a small frame taken quickly says nothing of a faster reader
    assert acks.rate == pytest.approx(240_000.0)


def test_a_client_that_never_acknowledges_is_forgotten() -> None:
    acks = AckWindow(base=0, now=0.0)
    for _ in range(65_537):
        acks.wrote(1)
    assert acks.forgotten
    assert acks.unacked is None
    assert not acks.ack(10, 1.0)


def test_the_window_is_a_tenth_of_a_second_of_the_rate_and_never_under_4_kib() -> None:
    assert window(None) == 4096
    assert window(10_000.0) == 4096
    assert window(1_000_000.0) == pytest.approx(100_000.0)


def test_the_request_and_the_answer_as_the_protocol_writes_them() -> None:
    assert ack_request(0.05) == '{"type":"ack-request","interval":0.05}'
    assert ack_request(None) == '{"type":"ack-request","interval":null}'
    assert read_ack('{"type":"ack","n":12}') == 12
    assert read_ack('{"type": "ack", "n": 0}') == 0
    for other in ("hello", b'{"type":"ack","n":1}', '{"type":"acks","n":1}', "[1]", '"ack"'):
        assert read_ack(other) is None, other  # the application's, not the protocol's
    for n, shown in ((-3, "-3"), (1.5, "1.5"), ("7", "'7'"), (True, "True"), (None, "None")):
        text = '{"type":"ack","n":%s}' % ("true" if n is True else "null" if n is None else n)
        if isinstance(n, str):
            text = '{"type":"ack","n":"7"}'
        with pytest.raises(ConfigError, match=rf"^n={shown} is not a whole number >= 0$") as e:
            read_ack(text)
        assert (e.value.name, e.value.value) == ("n", n)


def _outbox() -> Outbox:
    return Outbox(ConflateByKey() | Adaptive(), high=65536, low=16384)


def test_the_outbox_counts_every_frame_from_the_request_on_and_holds_for_the_window() -> None:
    outbox = _outbox()
    assert outbox.offer(make_message("before", seq=0, time=0.0), 0.0, 0) is Offer.WRITE
    outbox.ask_acks(0.0)
    assert outbox.send_control(make_control(ack_request(0.05), time=0.0), 0.0, 0) is Offer.WRITE
    assert outbox.acks is not None
    assert (outbox.acks.base, outbox.acks.written) == (1, 1)
    assert outbox.acknowledge(2, 0.01) is Offer.NONE  # news, but nothing waits
    assert outbox.snapshot(0.01, 0).unacked == 0
    payload = "x" * 3000
    written = 0
    now = 0.02
    for seq in range(1, 10):
        outcome = outbox.offer(make_message(payload, seq=seq, time=now, key=str(seq)), now, 0)
        if outcome is Offer.WRITE:
            written += 1
        else:
            break
    # The fast path wrote until the client had a window's worth untaken (4 KiB): 2 frames.
    assert written == 2
    assert outbox.snapshot(now, 0).unacked == 6000
    action = outbox.next_action(now, 0)
    assert isinstance(action, Wait)
    assert action.until == math.inf
    # The client takes one: 3 kB untaken, under the window; the relay must ask again.
    assert outbox.acknowledge(3, 0.1) is Offer.KICK
    action = outbox.next_action(0.1, 0)
    assert isinstance(action, Write)
    assert outbox.acks.written == 1 + 2 + len(action.frames)


def test_a_stopped_window_fills_nothing_and_a_policy_not_reading_it_is_not_asked() -> None:
    outbox = _outbox()
    outbox.ask_acks(0.0)
    outbox.stop_acks()
    assert outbox.acks is None
    assert outbox.acknowledge(5, 0.1) is Offer.NONE
    assert outbox.snapshot(0.1, 0).unacked is None
    assert reads_acks(ConflateByKey() | Adaptive())
    assert not reads_acks(DropOldest() | Batch(max_delay=0.01))
    ladder = Escalate([Level(), Level(DropOldest(max_messages=8), up=Above("unacked", 262144))])
    assert reads_acks(ladder)
    assert not reads_acks(Escalate([Level(), Level(DropOldest(), up=Above("lag", 1.0))]))


def test_adaptive_paces_to_what_the_application_takes_and_holds_past_its_window() -> None:
    policy = Adaptive(interval=0.1, max_bytes=65_536, min_bytes=1_024)
    # The write buffer and the kernel say 5 MB/s (on a short link the client's kernel
    # takes all it is given); the client's application says 50 kB/s: that is the pace.
    seen = Snapshot(now=5.0, queued_messages=40, drain_rate=5e6, ack_rate=50_000.0, unacked=0)
    first = policy.decide(seen)
    assert first.step is not None
    assert first.step.level == policy.target(50_000.0)
    assert first.step.cause == "drain_rate 50000 B/s"
    # More than a window untaken: nothing goes until it acknowledges.
    full = Snapshot(now=5.2, queued_messages=40, ack_rate=50_000.0, unacked=5_001, memo=first.memo)
    assert policy.decide(full).send_at == math.inf
    under = Snapshot(now=5.2, queued_messages=40, ack_rate=50_000.0, unacked=4_999, memo=first.memo)
    assert policy.decide(under).send_at < math.inf
    # Measured from acknowledgements, an overshoot leaves nothing unseen: no draining.
    assert policy.decide(seen).step.cause == "drain_rate 50000 B/s"  # type: ignore[union-attr]


def test_a_client_that_acknowledges_is_paced_from_its_acknowledgements_alone() -> None:
    policy = Adaptive(interval=0.1, max_bytes=65_536, min_bytes=1_024)
    # The window held what was queued, so the write buffer drained nothing: its
    # measurement says nothing, and before the first rate from acknowledgements there
    # is no pace at all (a client that keeps up gets everything).
    held = Snapshot(now=1.0, queued_messages=40, drain_rate=900.0, delivery_rate=800.0, unacked=0)
    decision = policy.decide(held)
    assert decision.step is None
    again = policy.decide(attrs.evolve(held, now=2.5, memo=decision.memo, ack_rate=50_000.0))
    assert again.step is not None
    assert again.step.level == policy.target(50_000.0)


def test_want_acks_asks_while_the_policy_reads_them_and_the_client_can_answer() -> None:
    outbox = _outbox()
    assert outbox.want_acks(False, 0.0) is None  # a raw client cannot answer
    assert outbox.acks is None
    assert outbox.want_acks(True, 0.0) == ack_request(0.05)
    assert outbox.acks is not None
    assert outbox.want_acks(True, 0.1) is None  # asked already
    outbox.set_policy(DropOldest(), 0.2, 0)
    assert outbox.want_acks(True, 0.2) == ack_request(None)
    assert outbox.acks is None
    outbox.set_policy(ConflateByKey() | Adaptive(), 0.3, 0)
    outbox.close(Close(1001))
    assert outbox.want_acks(True, 0.3) is None  # nothing reaches a closing subscriber
