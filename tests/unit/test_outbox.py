"""Outbox, the sans-I/O core of one subscriber, driven by a fake transport and a virtual clock.

No asyncio: the test plays the I/O shell. It performs each action the outbox returns
(writing frames to :class:`FakeTransport`), moves :class:`VirtualClock` by hand, and sets
the write-buffer size the outbox sees. After every step the accounting identity
``offered == sent + dropped + queued`` is checked.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import attrs
import pytest

from wsfanout import NEUTRAL, Close, Decision, Policy, Snapshot, SubscriberStats
from wsfanout._core.frames import encode_frame
from wsfanout.lowlevel import (
    BLOCKED,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MESSAGES,
    IDLE,
    OP_BINARY,
    OP_TEXT,
    Action,
    CloseAction,
    KernelView,
    Message,
    Offer,
    Outbox,
    Wait,
    Write,
    make_message,
)
from wsfanout.policies import (
    DEFAULT_POLICY,
    Batch,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    SkipToLatest,
    Throttle,
)

HIGH = 100
LOW = 25


class VirtualClock:
    """Time that moves only when told to, and never backwards."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"time can't go backwards (advance({seconds}))")
        self.now += seconds

    def jump(self, until: float) -> None:
        self.advance(until - self.now)


class FakeTransport:
    """A transport whose write buffer only empties when the test drains it."""

    def __init__(self) -> None:
        self.buffered = 0
        self.written: list[Message] = []

    def write(self, frame: Message) -> None:
        self.written.append(frame)
        self.buffered += len(frame.frame)

    def drain(self) -> None:
        self.buffered = 0

    @property
    def payloads(self) -> list[bytes]:
        return [frame.payload for frame in self.written]


class Shell:
    """Plays the I/O shell around one Outbox and checks its accounting after every step."""

    def __init__(self, policy: Policy, *, high: int = HIGH, low: int = LOW) -> None:
        self.outbox = Outbox(policy, high=high, low=low)
        self.transport = FakeTransport()
        self.clock = VirtualClock()
        self._seq = itertools.count(1)

    def publish(
        self, data: str | bytes = b"x", *, key: str | None = None, droppable: bool = True
    ) -> Offer:
        message = make_message(
            data, seq=next(self._seq), time=self.clock.now, key=key, droppable=droppable
        )
        offer = self.outbox.offer(message, self.clock.now, self.transport.buffered)
        if offer is Offer.WRITE:
            self.transport.write(message)
        self.check_accounting()
        return offer

    def step(self, write_buffer: int | None = None) -> Action:
        """Ask for the next action and perform it, as the relay does."""
        buffered = self.transport.buffered if write_buffer is None else write_buffer
        action = self.outbox.next_action(self.clock.now, buffered)
        if isinstance(action, Write):
            for frame in action.frames:
                self.transport.write(frame)
        self.check_accounting()
        return action

    def stats(self) -> SubscriberStats:
        return self.outbox.stats(self.clock.now)

    def check_accounting(self) -> None:
        stats = self.stats()
        assert stats.offered == stats.sent + stats.dropped + stats.queued_messages, stats

    def stall(self) -> None:
        """Fill the write buffer past the high-water mark."""
        self.transport.buffered = HIGH + 1


# -- the shell itself -----------------------------------------------------------------------


def test_the_accounting_check_catches_a_message_counted_twice() -> None:
    shell = Shell(DropOldest())
    shell.publish()
    shell.outbox.sent += 1
    with pytest.raises(AssertionError):
        shell.check_accounting()


def test_the_virtual_clock_refuses_to_go_backwards() -> None:
    clock = VirtualClock(5.0)
    with pytest.raises(ValueError, match=r"^time can't go backwards \(advance\(-1\.0\)\)$"):
        clock.advance(-1.0)
    assert clock.now == 5.0


def test_write_limits_must_be_ordered() -> None:
    with pytest.raises(ValueError, match=r"^write limits \(high=1, low=2\) need 0 <= low <= high$"):
        Outbox(DropOldest(), high=1, low=2)
    with pytest.raises(
        ValueError, match=r"^write limits \(high=5, low=-1\) need 0 <= low <= high$"
    ):
        Outbox(DropOldest(), high=5, low=-1)


def test_the_outbox_resolves_its_policys_rules() -> None:
    outbox = Outbox(DEFAULT_POLICY, high=HIGH, low=LOW)
    assert outbox.queue.max_messages == DEFAULT_MAX_MESSAGES
    assert outbox.queue.max_bytes == DEFAULT_MAX_BYTES


# -- the fast path ----------------------------------------------------------------------------


def test_an_idle_subscriber_gets_the_message_written_at_once() -> None:
    shell = Shell(DropOldest())
    assert shell.publish(b"hello") is Offer.WRITE
    assert shell.transport.payloads == [b"hello"]
    assert shell.step() is IDLE
    stats = shell.stats()
    assert (stats.offered, stats.sent, stats.frames, stats.queued_messages) == (1, 1, 1, 0)
    assert stats.peak_messages == 0
    assert shell.outbox.last_send == 0.0


def test_the_fast_path_holds_with_the_buffer_at_the_low_water_mark() -> None:
    shell = Shell(DropOldest())
    shell.transport.buffered = LOW
    assert shell.publish() is Offer.WRITE


def test_a_buffer_over_the_low_water_mark_queues_the_message() -> None:
    shell = Shell(DropOldest())
    shell.transport.buffered = LOW + 1
    assert shell.publish(b"a") is Offer.KICK
    assert shell.transport.written == []
    assert shell.stats().queued_messages == 1


def test_kick_comes_only_when_the_queue_stops_being_empty() -> None:
    shell = Shell(DropOldest())
    shell.transport.buffered = LOW + 1
    assert [shell.publish() for _ in range(3)] == [Offer.KICK, Offer.NONE, Offer.NONE]
    assert isinstance(shell.step(), Write)
    assert shell.stats().queued_messages == 0
    assert [shell.publish() for _ in range(2)] == [Offer.KICK, Offer.NONE]


def test_a_nonempty_queue_disables_the_fast_path_so_order_holds() -> None:
    shell = Shell(DropOldest())
    shell.transport.buffered = LOW + 1
    shell.publish(b"1")
    shell.publish(b"2")
    shell.transport.drain()
    assert shell.publish(b"3") is Offer.NONE  # queued behind 1 and 2, not written ahead
    assert isinstance(shell.step(), Write)
    assert shell.transport.payloads == [b"1", b"2", b"3"]
    assert shell.publish(b"4") is Offer.WRITE
    assert shell.transport.payloads == [b"1", b"2", b"3", b"4"]


def test_a_blocked_connection_queues_and_waits() -> None:
    shell = Shell(DropOldest())
    shell.transport.buffered = BLOCKED
    assert shell.publish() is Offer.KICK
    assert shell.step() == Wait(math.inf, drain=True)


# -- writing from the queue ------------------------------------------------------------------


def test_frames_are_corked_into_one_write_until_the_buffer_passes_high() -> None:
    shell = Shell(DropOldest())
    shell.transport.buffered = LOW + 1  # 26
    for n in range(10):
        shell.publish(bytes([n]) * 20)
    action = shell.step()
    # Each 20-byte message is a 22-byte frame: 26 + 3 * 22 = 92 <= 100, the fourth
    # frame takes it past: four frames.
    assert isinstance(action, Write)
    assert [frame.seq for frame in action.frames] == [1, 2, 3, 4]
    assert shell.transport.buffered > HIGH
    assert shell.step() == Wait(math.inf, drain=True)
    assert shell.stats().queued_messages == 6
    shell.transport.drain()
    action = shell.step()
    assert isinstance(action, Write)
    # From empty: 4 * 22 = 88 <= 100, the fifth takes it past; the last goes alone.
    assert [frame.seq for frame in action.frames] == [5, 6, 7, 8, 9]
    shell.transport.drain()
    action = shell.step()
    assert isinstance(action, Write)
    assert [frame.seq for frame in action.frames] == [10]
    assert shell.step() is IDLE
    assert shell.transport.payloads == [bytes([n]) * 20 for n in range(10)]


def test_a_write_of_many_empty_frames_stops_at_high_too() -> None:
    # Frames are counted with their headers: 2 bytes each for an empty payload, so a
    # write stops after 51 of them, not after the whole queue.
    shell = Shell(DropOldest())
    shell.stall()
    for _ in range(200):
        shell.publish(b"")
    shell.transport.drain()
    action = shell.step()
    assert isinstance(action, Write)
    assert len(action.frames) == 51
    assert shell.transport.buffered == 102


def test_nothing_is_written_while_the_buffer_is_over_high() -> None:
    shell = Shell(DropOldest())
    shell.stall()
    shell.publish()
    for _ in range(3):
        assert shell.step() == Wait(math.inf, drain=True)
    assert shell.transport.written == []


def test_a_waiting_relay_is_told_when_to_recheck() -> None:
    shell = Shell(DropOldest() | Disconnect(max_lag=5.0))
    shell.clock.advance(2.0)
    shell.stall()
    shell.publish()
    assert shell.step() == Wait(7.0, drain=True)


def test_an_empty_queue_lets_the_relay_stop() -> None:
    shell = Shell(DropOldest())
    assert shell.step() is IDLE


# -- throttling ---------------------------------------------------------------------------


def test_a_non_eager_policy_is_consulted_on_the_fast_path() -> None:
    shell = Shell(Throttle(rate=2.0) | DropOldest())
    assert shell.publish(b"1") is Offer.WRITE  # first send: nothing to throttle
    shell.clock.jump(0.1)
    assert shell.publish(b"2") is Offer.KICK  # 0.5 s must pass since the last send
    assert shell.transport.payloads == [b"1"]
    assert shell.step() == Wait(0.5, drain=False)
    shell.clock.jump(0.5)
    action = shell.step()
    assert isinstance(action, Write)
    assert shell.transport.payloads == [b"1", b"2"]
    shell.clock.jump(1.25)
    assert shell.publish(b"3") is Offer.WRITE  # 0.75 s since the last send


def test_throttle_writes_one_frame_per_interval() -> None:
    shell = Shell(Throttle(rate=4.0) | DropOldest())
    shell.publish(b"0")
    for n in range(1, 4):
        shell.publish(bytes([n]))
    for n in range(1, 4):
        wait = shell.step()
        assert isinstance(wait, Wait)
        assert wait == Wait(n * 0.25, drain=False)
        shell.clock.jump(wait.until)
        action = shell.step()
        assert isinstance(action, Write)
        assert len(action.frames) == 1
    assert shell.step() is IDLE
    assert shell.stats().sent == 4


def test_throttle_with_skip_to_latest_ends_on_the_newest_value() -> None:
    shell = Shell(Throttle(rate=1.0) | SkipToLatest())
    shell.publish(b"a")
    for value in (b"b", b"c", b"d"):
        shell.publish(value)
    assert shell.step() == Wait(1.0, drain=False)
    shell.clock.jump(1.0)
    assert isinstance(shell.step(), Write)
    assert shell.transport.payloads == [b"a", b"d"]
    assert shell.stats().skipped == 2


def test_an_eager_policy_is_not_asked_on_the_fast_path() -> None:
    @attrs.frozen(repr=False)
    class WouldClose(Policy):
        """Claims to be eager but would close: the fast path must not ask it."""

        eager = True

        def decide(self, snapshot: Snapshot) -> Decision:
            return Decision(close=Close(4000, "asked"))

    shell = Shell(WouldClose() | DropOldest())
    assert shell.publish() is Offer.WRITE
    shell.stall()
    assert shell.publish() is Offer.CLOSE
    assert shell.step() == CloseAction(Close(4000, "asked"))


def test_a_plain_function_that_holds_sends_through_the_queue() -> None:
    asked: list[Snapshot] = []

    def hold_until_two(snapshot: Snapshot) -> Decision:
        asked.append(snapshot)
        return Decision(send_at=2.0)

    shell = Shell(DropOldest() | hold_until_two)
    assert shell.publish() is Offer.KICK
    assert asked == [Snapshot(now=0.0)]
    assert shell.step() == Wait(2.0, drain=False)
    shell.clock.jump(2.0)
    assert isinstance(shell.step(), Write)
    assert shell.stats().sent == 1


def test_a_plain_function_that_closes_on_the_fast_path_loses_only_that_message() -> None:
    def refuse(snapshot: Snapshot) -> Decision:
        return Decision(close=Close(4003, "no"))

    shell = Shell(refuse | DropOldest())
    assert shell.publish() is Offer.CLOSE
    stats = shell.stats()
    assert (stats.offered, stats.sent, stats.disconnected) == (1, 0, 1)
    assert stats.close == Close(4003, "no")
    assert shell.step() == CloseAction(Close(4003, "no"))
    assert shell.step() is IDLE


# -- batching -----------------------------------------------------------------------------


def test_batch_combines_queued_messages_into_lines() -> None:
    shell = Shell(Batch(max_messages=3) | DropOldest())
    shell.stall()
    for text in ("a", "b", "c", "d"):
        shell.publish(text)
    shell.transport.drain()
    action = shell.step()
    assert isinstance(action, Write)
    assert [frame.payload for frame in action.frames] == [b"a\nb\nc", b"d"]
    assert [frame.opcode for frame in action.frames] == [OP_TEXT, OP_TEXT]
    assert action.frames[0].frame == encode_frame(OP_TEXT, b"a\nb\nc")
    assert action.frames[0].seq == 1
    stats = shell.stats()
    assert (stats.sent, stats.frames, stats.batched) == (4, 2, 3)


def test_batch_combines_into_a_json_array() -> None:
    shell = Shell(Batch(combine="json-array") | DropOldest())
    shell.stall()
    shell.publish('{"x":1}')
    shell.publish("2")
    shell.transport.drain()
    action = shell.step()
    assert isinstance(action, Write)
    assert [frame.payload for frame in action.frames] == [b'[{"x":1},2]']


def test_batch_uses_a_callable_combiner() -> None:
    def reverse(payloads: Sequence[bytes]) -> bytes:
        return b"|".join(reversed(payloads))

    shell = Shell(Batch(combine=reverse) | DropOldest())
    shell.stall()
    for data in (b"1", b"2", b"3"):
        shell.publish(data)
    shell.transport.drain()
    action = shell.step()
    assert isinstance(action, Write)
    assert [frame.payload for frame in action.frames] == [b"3|2|1"]
    assert action.frames[0].opcode == OP_BINARY


def test_batch_never_mixes_text_and_binary_in_one_frame() -> None:
    shell = Shell(Batch() | DropOldest())
    shell.stall()
    for data in ("a", "b", b"c", b"d", "e"):
        shell.publish(data)
    shell.transport.drain()
    action = shell.step()
    assert isinstance(action, Write)
    assert [(frame.opcode, frame.payload) for frame in action.frames] == [
        (OP_TEXT, b"a\nb"),
        (OP_BINARY, b"c\nd"),
        (OP_TEXT, b"e"),
    ]
    stats = shell.stats()
    assert (stats.sent, stats.frames, stats.batched) == (5, 3, 4)


def test_a_lone_message_of_another_kind_is_not_batched() -> None:
    shell = Shell(Batch() | DropOldest())
    shell.stall()
    for data in ("a", b"b", "c"):
        shell.publish(data)
    shell.transport.drain()
    action = shell.step()
    assert isinstance(action, Write)
    assert [frame.payload for frame in action.frames] == [b"a", b"b", b"c"]
    assert shell.stats().batched == 0


def test_batch_max_bytes_caps_the_payloads_in_one_frame() -> None:
    shell = Shell(Batch(max_messages=10, max_bytes=6) | DropOldest())
    shell.stall()
    for data in (b"aa", b"bb", b"cc", b"dd", b"eeeeeeee"):
        shell.publish(data)
    shell.transport.drain()
    shell.transport.buffered = 0
    action = shell.step(write_buffer=0)
    assert isinstance(action, Write)
    # 2 + 2 + 2 = 6 fits; the fourth would make 8. An oversize message still leaves alone.
    assert [frame.payload for frame in action.frames] == [b"aa\nbb\ncc", b"dd", b"eeeeeeee"]


def test_batch_max_messages_caps_one_frame() -> None:
    shell = Shell(Batch(max_messages=2) | DropOldest(), high=10_000)
    shell.transport.buffered = LOW + 1
    for n in range(5):
        shell.publish(str(n))
    action = shell.step()
    assert isinstance(action, Write)
    assert [frame.payload for frame in action.frames] == [b"0\n1", b"2\n3", b"4"]


def test_batch_with_a_delay_lingers_until_the_batch_fills() -> None:
    shell = Shell(Batch(max_messages=3, max_delay=0.5) | DropOldest())
    shell.stall()
    shell.publish("a")
    shell.transport.drain()
    assert shell.step() == Wait(0.5, drain=False)
    shell.clock.jump(0.25)
    assert shell.publish("b") is Offer.NONE
    assert shell.step() == Wait(0.5, drain=False)
    assert shell.publish("c") is Offer.KICK  # the batch is full: the relay must run now
    action = shell.step()
    assert isinstance(action, Write)
    assert [frame.payload for frame in action.frames] == [b"a\nb\nc"]


def test_batch_with_a_delay_sends_a_partial_batch_after_max_delay() -> None:
    shell = Shell(Batch(max_messages=3, max_delay=0.5) | DropOldest())
    shell.stall()
    shell.publish("a")
    shell.clock.jump(0.125)
    shell.publish("b")
    shell.transport.drain()
    wait = shell.step()
    assert wait == Wait(0.5, drain=False)
    shell.clock.jump(0.5)
    action = shell.step()
    assert isinstance(action, Write)
    assert [frame.payload for frame in action.frames] == [b"a\nb"]


def test_batch_with_a_delay_lingers_for_an_idle_subscriber_too() -> None:
    shell = Shell(Batch(max_messages=3, max_delay=0.5) | DropOldest())
    assert shell.publish("a") is Offer.KICK
    assert shell.transport.written == []
    assert shell.step() == Wait(0.5, drain=False)
    shell.clock.jump(0.25)
    shell.publish("b")
    shell.clock.jump(0.5)
    action = shell.step()
    assert isinstance(action, Write)
    assert [frame.payload for frame in action.frames] == [b"a\nb"]


# -- closing ------------------------------------------------------------------------------


def test_disconnect_closes_when_the_queue_crosses_its_threshold() -> None:
    shell = Shell(Disconnect(max_messages=2) | DropOldest(max_messages=10))
    shell.stall()
    assert [shell.publish() for _ in range(2)] == [Offer.KICK, Offer.NONE]
    assert shell.publish() is Offer.CLOSE
    stats = shell.stats()
    assert stats.close == Close(1013, "subscriber too slow")
    assert stats.close.cause == "3 messages queued > max_messages=2"
    assert (stats.offered, stats.disconnected, stats.queued_messages) == (3, 3, 0)
    assert shell.outbox.closed_by_policy
    assert shell.step() == CloseAction(Close(1013, "subscriber too slow"))
    assert shell.step() is IDLE


def test_disconnect_closes_when_the_lag_deadline_passes() -> None:
    shell = Shell(DropOldest() | Disconnect(max_lag=1.0, code=4000, reason="behind"))
    shell.stall()
    assert shell.publish() is Offer.KICK
    wait = shell.step()
    assert wait == Wait(1.0, drain=True)
    shell.clock.jump(1.0)
    assert shell.step() == CloseAction(Close(4000, "behind"))
    stats = shell.stats()
    assert stats.close is not None
    assert stats.close.cause == "lag 1.000s >= max_lag=1.0"
    assert stats.disconnected == 1


def test_disconnect_grace_holds_then_closes() -> None:
    shell = Shell(Disconnect(max_messages=2, grace=1.0) | DropOldest(max_messages=10))
    shell.stall()
    assert [shell.publish() for _ in range(3)] == [Offer.KICK, Offer.NONE, Offer.KICK]
    assert shell.step() == Wait(1.0, drain=True)
    shell.clock.jump(0.5)
    shell.publish()
    assert shell.step() == Wait(1.0, drain=True)
    shell.clock.jump(1.0)
    action = shell.step()
    assert isinstance(action, CloseAction)
    assert action == CloseAction(Close(1013, "subscriber too slow"))
    assert action.close.cause == "4 messages queued > max_messages=2 for 1.000s"


def test_disconnect_grace_forgives_a_subscriber_that_catches_up() -> None:
    shell = Shell(Disconnect(max_messages=2, grace=1.0) | DropOldest(max_messages=10))
    shell.stall()
    for _ in range(3):
        shell.publish()
    assert shell.step() == Wait(1.0, drain=True)
    shell.clock.jump(0.5)
    shell.transport.drain()
    assert isinstance(shell.step(), Write)
    assert shell.stats().queued_messages == 0
    shell.clock.jump(2.0)
    shell.stall()
    for _ in range(3):
        shell.publish()
    # A new breach: the grace starts again at 2.0.
    assert shell.step() == Wait(3.0, drain=True)
    shell.clock.jump(2.75)
    assert isinstance(shell.step(), Wait)
    shell.clock.jump(3.0)
    assert isinstance(shell.step(), CloseAction)


def test_disconnect_rechecks_on_offer_when_bytes_cross_the_threshold() -> None:
    shell = Shell(Disconnect(max_bytes=10) | DropOldest())
    shell.stall()
    assert shell.publish(b"12345") is Offer.KICK
    assert shell.publish(b"12345") is Offer.NONE
    assert shell.publish(b"1") is Offer.CLOSE
    assert shell.stats().close == Close(1013, "subscriber too slow")


def test_disconnect_on_the_write_buffer_is_consulted_on_the_fast_path() -> None:
    shell = Shell(Disconnect(max_buffer=LOW - 5) | DropOldest())
    assert shell.publish() is Offer.WRITE
    shell.transport.buffered = LOW - 4
    assert shell.publish() is Offer.CLOSE
    assert shell.stats().close is not None


def test_overflow_under_the_default_policy_closes_with_queue_full() -> None:
    shell = Shell(DEFAULT_POLICY)
    shell.stall()
    big = bytes(600 * 1024)
    assert shell.publish(big) is Offer.KICK
    assert shell.publish(big) is Offer.CLOSE
    stats = shell.stats()
    assert stats.close == Close(1013, "queue full")
    assert stats.close.cause == (
        "a 614400-byte message did not fit: 1 messages, 614400 bytes queued "
        "(max_messages=1024, max_bytes=1048576)"
    )
    assert (stats.offered, stats.sent, stats.disconnected) == (2, 0, 2)
    assert shell.outbox.closed_by_policy
    assert shell.step() == CloseAction(Close(1013, "queue full"))


def test_overflow_counts_messages_too() -> None:
    shell = Shell(ConflateByKey(max_messages=3))
    shell.stall()
    for key in "abc":
        shell.publish(key=key)
    assert shell.publish(key="a") is Offer.NONE  # conflated: still fits
    assert shell.publish(key="d") is Offer.CLOSE
    stats = shell.stats()
    assert (stats.offered, stats.conflated, stats.disconnected) == (5, 1, 4)


def test_offers_after_closing_are_counted_as_disconnected() -> None:
    shell = Shell(DropOldest())
    shell.stall()
    shell.publish()
    assert shell.outbox.close(Close(1001, "going away"))
    assert not shell.outbox.close(Close(1000))
    assert not shell.outbox.closed_by_policy
    assert shell.publish() is Offer.NONE
    assert shell.publish() is Offer.NONE
    stats = shell.stats()
    assert (stats.offered, stats.sent, stats.disconnected) == (3, 0, 3)
    assert stats.close == Close(1001, "going away")
    assert shell.step() == CloseAction(Close(1001, "going away"))
    assert shell.step() is IDLE


def test_discard_counts_what_was_queued_as_disconnected() -> None:
    shell = Shell(DropOldest())
    shell.publish()
    shell.stall()
    for _ in range(3):
        shell.publish()
    shell.outbox.discard()
    shell.check_accounting()
    stats = shell.stats()
    assert (stats.offered, stats.sent, stats.disconnected, stats.queued_messages) == (4, 1, 3, 0)
    assert stats.close is None  # lost, not closed by anyone
    assert shell.step() is IDLE
    assert shell.publish() is Offer.NONE
    assert shell.stats().disconnected == 4


def test_discard_after_a_close_keeps_the_close() -> None:
    shell = Shell(DropOldest())
    shell.outbox.close(Close(1001))
    shell.outbox.discard()
    assert shell.stats().close == Close(1001)


# -- statistics ---------------------------------------------------------------------------


def test_stats_count_messages_and_frames_apart() -> None:
    shell = Shell(Batch(max_messages=4) | DropOldest(max_messages=6))
    shell.publish("fast")
    shell.stall()
    for n in range(8):
        shell.publish(str(n))
    shell.clock.jump(1.5)
    stats = shell.stats()
    assert stats.lag == 1.5
    assert (stats.queued_messages, stats.queued_bytes) == (6, 6)
    assert (stats.peak_messages, stats.peak_bytes) == (6, 6)
    assert stats.dropped_oldest == 2
    shell.transport.drain()
    shell.step(write_buffer=0)
    stats = shell.stats()
    assert stats == SubscriberStats(
        offered=9,
        sent=7,
        frames=3,
        batched=6,
        dropped_oldest=2,
        peak_messages=6,
        peak_bytes=6,
    )
    assert stats.dropped == 2


def test_stats_count_refusals_and_skips_by_reason() -> None:
    newest = Shell(DropNewest(max_messages=1))
    newest.stall()
    for _ in range(3):
        newest.publish()
    assert newest.stats().dropped_newest == 2
    skip = Shell(SkipToLatest())
    skip.stall()
    for _ in range(3):
        skip.publish()
    assert skip.stats().skipped == 2
    assert skip.stats().dropped == 2


def test_the_snapshot_shows_what_the_policy_sees() -> None:
    shell = Shell(DropOldest())
    shell.publish(b"12")
    shell.clock.jump(1.0)
    shell.stall()
    shell.publish(b"345")
    shell.clock.jump(3.0)
    assert shell.outbox.snapshot(shell.clock.now, 77) == Snapshot(
        now=3.0,
        queued_messages=1,
        queued_bytes=3,
        lag=2.0,
        write_buffer=77,
        last_send=0.0,
        sent=1,
        dropped=0,
    )


@attrs.frozen
class Records(Policy):
    """Holds nothing, decides nothing; remembers the kernel's unsent bytes it was shown."""

    seen: list[int | None] = attrs.field(factory=list, eq=False)

    def decide(self, snapshot: Snapshot) -> Decision:
        self.seen.append(snapshot.kernel_unsent)
        return NEUTRAL


class Probe:
    """The shell's kernel probe: counts its calls, answers what the test sets."""

    def __init__(self, answer: int | None = 4096) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self) -> int | None:
        self.calls += 1
        return self.answer


def test_the_kernel_is_read_for_a_policy_asked_about_a_subscriber_behind() -> None:
    probe = Probe()
    policy = Records()
    outbox = Outbox(policy, high=HIGH, low=LOW, kernel_unsent=probe)
    message = make_message(b"x" * 10, seq=1, time=0.0)
    assert outbox.offer(message, 0.0, HIGH + 1) is Offer.KICK  # queued: the policy is asked
    assert policy.seen == [4096]
    assert probe.calls == 1
    assert outbox.snapshot(0.0, HIGH + 1).kernel_unsent == 4096
    assert probe.calls == 2


def test_the_kernel_is_read_once_per_relay_turn_whatever_it_writes() -> None:
    probe = Probe()
    policy = Records()
    outbox = Outbox(policy, high=HIGH, low=LOW, kernel_unsent=probe)
    for seq in range(5):
        outbox.offer(make_message(b"x", seq=seq, time=0.0), 0.0, HIGH + 1)
    calls = probe.calls
    action = outbox.next_action(0.0, 0)
    assert isinstance(action, Write)
    assert len(action.frames) == 5
    assert probe.calls == calls + 1  # asked before each of the 5 frames, read once
    assert policy.seen[-5:] == [4096] * 5


def test_the_kernel_is_never_read_on_the_fast_path() -> None:
    probe = Probe()
    policy = Records()
    outbox = Outbox(policy, high=HIGH, low=LOW, kernel_unsent=probe)
    for seq in range(3):  # a non-eager policy is asked on the fast path, without it
        assert outbox.offer(make_message(b"x", seq=seq, time=0.0), 0.0, 0) is Offer.WRITE
    assert policy.seen == [None, None, None]
    eager = Outbox(DropOldest(), high=HIGH, low=LOW, kernel_unsent=probe)
    for seq in range(3):
        assert eager.offer(make_message(b"x", seq=seq, time=0.0), 0.0, 0) is Offer.WRITE
    assert eager.offer(make_message(b"x", seq=3, time=0.0), 0.0, HIGH + 1) is Offer.KICK
    action = eager.next_action(0.0, 0)  # a policy that never decides is never asked
    assert isinstance(action, Write)
    assert [frame.seq for frame in action.frames] == [3]
    assert probe.calls == 0


def test_a_platform_that_cannot_tell_shows_none() -> None:
    policy = Records()
    outbox = Outbox(policy, high=HIGH, low=LOW, kernel_unsent=Probe(None))
    outbox.offer(make_message(b"x", seq=1, time=0.0), 0.0, HIGH + 1)
    unprobed = Outbox(Records(), high=HIGH, low=LOW)
    assert policy.seen == [None]
    assert unprobed.snapshot(0.0, 0).kernel_unsent is None


class ViewProbe:
    """The shell's ``TCP_INFO`` probe: counts its calls, answers the view the test sets."""

    def __init__(self, answer: KernelView | None) -> None:
        self.answer = answer
        self.calls = 0

    def __call__(self) -> KernelView | None:
        self.calls += 1
        return self.answer


@attrs.frozen
class RecordsRates(Policy):
    """Holds nothing, decides nothing; remembers the kernel's figures it was shown."""

    seen: list[tuple[int | None, float | None]] = attrs.field(factory=list, eq=False)

    def decide(self, snapshot: Snapshot) -> Decision:
        self.seen.append((snapshot.kernel_unsent, snapshot.delivery_rate))
        return NEUTRAL


def test_one_kernel_read_gives_a_policy_behind_unsent_bytes_and_the_delivery_rate() -> None:
    probe = ViewProbe(KernelView(unsent=4096, delivery_rate=2e6, acked=10_000))
    policy = RecordsRates()
    outbox = Outbox(policy, high=HIGH, low=LOW, kernel=probe)
    assert outbox.offer(make_message(b"x", seq=0, time=0.0), 0.0, 0) is Offer.WRITE
    assert policy.seen == [(None, None)]  # the fast path reads nothing
    assert outbox.offer(make_message(b"x", seq=1, time=0.0), 0.0, HIGH + 1) is Offer.KICK
    assert policy.seen[-1] == (4096, 2e6)
    assert probe.calls == 1
    assert outbox.snapshot(0.0, HIGH + 1).delivery_rate == 2e6
    # A wait with the buffer over the mark, then its drain: the turn that ends the wait
    # reads the kernel once, for the sample and the decision alike.
    assert outbox.next_action(0.0, HIGH + 1) == Wait(math.inf, drain=True)
    calls = probe.calls
    probe.answer = KernelView(unsent=16_384, delivery_rate=3e6, acked=60_000)
    action = outbox.next_action(1.0, LOW)
    assert isinstance(action, Write)
    assert probe.calls == calls + 1
    assert policy.seen[-1] == (16_384, 3e6)
    assert outbox.stats(1.0).drain_rate == 50_000.0  # 50 kB acknowledged in the second


def test_an_unsent_bytes_probe_still_serves_and_no_probe_gives_no_delivery_rate() -> None:
    policy = RecordsRates()
    outbox = Outbox(policy, high=HIGH, low=LOW, kernel_unsent=Probe(4096))
    outbox.offer(make_message(b"x", seq=1, time=0.0), 0.0, HIGH + 1)
    assert policy.seen == [(4096, None)]
    assert Outbox(RecordsRates(), high=HIGH, low=LOW).snapshot(0.0, 0).delivery_rate is None


def test_an_undroppable_message_survives_a_full_queue_of_droppable_ones() -> None:
    shell = Shell(DropNewest(max_messages=2))
    shell.stall()
    shell.publish(b"a")
    shell.publish(b"b")
    assert shell.publish(b"mine", droppable=False) is Offer.NONE
    shell.transport.drain()
    shell.step(write_buffer=0)
    assert shell.transport.payloads == [b"b", b"mine"]
    assert shell.stats().dropped_oldest == 1


def test_a_policy_that_decides_nothing_keeps_the_neutral_decision() -> None:
    shell = Shell(DropOldest() | Batch())
    assert shell.outbox.policy.decide(shell.outbox.snapshot(0.0, 0)) is NEUTRAL
    shell.stall()
    shell.publish()
    assert shell.step() == Wait(math.inf, drain=True)


def test_lag_of_a_stalled_subscriber_keeps_growing_while_drop_oldest_evicts() -> None:
    shell = Shell(DropOldest(max_messages=2) | Disconnect(max_lag=5.0))
    shell.stall()
    for _ in range(10):
        shell.publish()
        shell.clock.advance(1.0)
    # The two queued messages are 1 s and 2 s old, but the client has missed data for 10 s.
    assert shell.stats().queued_messages == 2
    assert shell.stats().lag == 10.0
    action = shell.step()
    assert isinstance(action, CloseAction)
    assert action.close.cause == "lag 10.000s >= max_lag=5.0"


def test_lag_restarts_from_the_oldest_queued_message_after_a_write() -> None:
    shell = Shell(DropOldest(max_messages=3))
    shell.stall()
    for _ in range(6):
        shell.publish(b"y" * 60)
        shell.clock.advance(1.0)
    assert shell.stats().lag == 6.0
    shell.transport.drain()
    shell.step()  # writes two 60-byte frames, passing the high-water mark
    assert shell.stats().queued_messages == 1
    assert shell.stats().lag == 1.0
    shell.transport.drain()
    shell.step()
    assert shell.stats().lag == 0.0


def test_lag_of_a_slow_subscriber_without_drops_is_the_age_of_its_oldest_message() -> None:
    shell = Shell(DropNewest(max_messages=10))
    shell.stall()
    shell.publish()
    shell.clock.advance(2.0)
    shell.publish()
    shell.clock.advance(1.5)
    assert shell.stats().lag == 3.5
    assert shell.outbox.snapshot(shell.clock.now, shell.transport.buffered).lag == 3.5
