"""Each built-in policy, end to end, on a client that stops reading and then resumes.

The burst of publishes runs without yielding, so while it lasts the stalled client's
relay cannot write: what the client finally receives is the prefix written before its
buffers filled, then whatever its queue held. That makes the expected stream exact.
"""

from __future__ import annotations

import asyncio
import json

import attrs
import pytest

from wsfanout import Policy
from wsfanout.lowlevel import Overflow, Rules
from wsfanout.policies import (
    Batch,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    SkipToLatest,
    Throttle,
)

from .wsnet import Client, Net, index_of, numbered

GUARD = 20.0
SIZE = 512
BURST = 600


def accounted(client: Client) -> bool:
    stats = client.sub.stats()
    return stats.offered == stats.sent + stats.dropped + stats.queued_messages


async def stall_burst_resume(net: Net, policy: Policy, keys: int = 0) -> Client:
    """Stall a client, publish BURST messages at once, resume it and read until drained."""
    client = await net.connect("resumed", policy=policy, stalled=True)
    for i in range(BURST):
        net.hub.publish(numbered(i, SIZE), key=f"k{i % keys}" if keys else None)
    assert client.sub.stats().queued_messages > 0, "the client never fell behind"
    client.read()
    await client.drained()
    assert accounted(client)
    return client


async def test_drop_oldest_delivers_the_prefix_then_the_newest_messages(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        client = await stall_burst_resume(net, DropOldest(max_messages=16))
        received = client.indices()
        prefix = len(received) - 16
        assert received == list(range(prefix)) + list(range(BURST - 16, BURST))
        stats = client.sub.stats()
        assert stats.dropped_oldest == stats.dropped == BURST - len(received)
        assert stats.peak_messages == 16


async def test_drop_newest_keeps_what_was_queued_and_refuses_the_rest(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        client = await stall_burst_resume(net, DropNewest(max_messages=16))
        received = client.indices()
        assert received == list(range(len(received)))
        assert received[-1] < BURST - 1
        stats = client.sub.stats()
        assert stats.dropped_newest == stats.dropped == BURST - len(received)
        assert stats.peak_messages == 16


async def test_skip_to_latest_delivers_the_prefix_then_only_the_newest(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        client = await stall_burst_resume(net, SkipToLatest())
        received = client.indices()
        assert received == [*range(len(received) - 1), BURST - 1]
        stats = client.sub.stats()
        assert stats.skipped == stats.dropped == BURST - len(received)
        assert stats.peak_messages == 1


async def test_conflate_by_key_delivers_the_newest_message_of_every_key(net: Net) -> None:
    keys = 5
    async with asyncio.timeout(GUARD):
        client = await stall_burst_resume(net, ConflateByKey(max_messages=8), keys=keys)
        received = client.indices()
        prefix = len(received) - keys
        assert received == list(range(prefix)) + list(range(BURST - keys, BURST))
        newest = {index % keys: index for index in received}
        assert newest == {i % keys: i for i in range(BURST - keys, BURST)}
        stats = client.sub.stats()
        assert stats.conflated == stats.dropped == BURST - len(received)
        assert stats.peak_messages <= keys


async def test_batch_frames_unpack_to_consecutive_messages_and_lose_none(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        client = await net.connect("batched", policy=Batch(max_messages=16), stalled=True)
        for i in range(BURST):
            net.hub.publish(numbered(i, SIZE))
        client.read()

        def unpacked() -> list[int]:
            return [index_of(line) for frame in client.texts() for line in frame.split("\n")]

        await client.until(lambda: len(unpacked()) == BURST, f"{BURST} unpacked messages")
        assert unpacked() == list(range(BURST))
        for frame in client.texts():
            lines = [index_of(line) for line in frame.split("\n")]
            assert len(lines) <= 16
            assert lines == list(range(lines[0], lines[0] + len(lines)))
        stats = client.sub.stats()
        assert stats.sent == BURST
        assert stats.frames == len(client.messages) < BURST
        assert stats.batched > 0
        assert accounted(client)


async def test_batch_with_max_delay_sends_full_batches_at_once_and_lingers_for_the_rest(
    net: Net,
) -> None:
    async with asyncio.timeout(GUARD):
        policy = Batch(max_messages=8, max_delay=0.05, combine="json-array")
        client = await net.connect("lingering", policy=policy)
        for i in range(20):
            net.hub.publish(json.dumps(i))
        await client.until(lambda: len(client.messages) == 3, "three frames")
        assert [json.loads(frame) for frame in client.texts()] == [
            list(range(8)),
            list(range(8, 16)),
            list(range(16, 20)),
        ]
        stats = client.sub.stats()
        assert (stats.sent, stats.frames, stats.batched) == (20, 3, 20)


async def test_drain_waits_for_a_lingering_batch_that_only_a_shared_timer_sends(
    net: Net,
) -> None:
    async with asyncio.timeout(GUARD):
        policy = Batch(max_messages=8, max_delay=0.05)
        client = await net.connect("lingering", policy=policy)
        for i in range(3):
            net.hub.publish(f"m{i}")
        # The batch waits on the hub's timers, with no relay task: drain sees it anyway.
        assert client.sub.stats().queued_messages == 3
        assert await net.hub.drain(timeout=GUARD)
        assert client.sub.stats().queued_messages == 0
        await client.until(lambda: len(client.messages) == 1, "one frame")
        assert client.texts() == ["m0\nm1\nm2"]


async def test_throttle_caps_the_frame_rate_and_skip_to_latest_still_ends_on_the_newest(
    net: Net,
) -> None:
    rate = 20.0
    async with asyncio.timeout(GUARD):
        # The pacer is an unthrottled client: the next message is published only once it
        # has the previous one, so publishing takes real time without any sleep.
        pacer = await net.connect("pacer", policy=DropOldest())
        throttled = await net.connect("throttled", policy=Throttle(rate=rate) | SkipToLatest())
        loop = asyncio.get_running_loop()
        start = loop.time()
        published = 0
        while loop.time() - start < 0.5 and published < 20_000:
            net.hub.publish(numbered(published))
            published += 1
            await pacer.received(published)
        await throttled.latest(lambda m: index_of(m) == published - 1, "the newest message")
        elapsed = loop.time() - start
        frames = len(throttled.messages)
        # One frame at once, then at most one per 1/rate seconds (loose by one frame).
        assert frames <= 2 + rate * elapsed, (frames, elapsed)
        assert frames < published
        received = throttled.indices()
        assert received == sorted(set(received))
        stats = throttled.sub.stats()
        assert stats.skipped == published - frames
        assert stats.frames == stats.sent == frames
        assert accounted(throttled)


async def test_disconnect_closes_a_stalled_client_and_records_why(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        policy = DropOldest(max_messages=64) | Disconnect(max_lag=0.2)
        fast = await net.connect("fast", policy=policy)
        stalled = await net.connect("stalled", policy=policy, stalled=True, topics={"all"})
        assert len(net.hub) == 2
        # More than the stalled client's socket buffers and write buffer can hold, so
        # messages stay queued, and age once the relay has filled the write buffer.
        published = 0
        for _ in range(300):
            net.hub.publish(numbered(published, SIZE), topic="all")
            published += 1
        assert stalled.sub.stats().queued_messages > 0

        # Until hub.serve returns for the stalled client, keep publishing to the fast one
        # only (so the stalled queue ages), and check at each step that from the moment
        # the policy closes the stalled subscriber, the hub no longer offers it anything.
        while not stalled.route.served.done() and published < 100_000:
            net.hub.publish(numbered(published, SIZE), topic="fast only")
            published += 1
            await fast.received(published)
            closed = stalled.sub.closed
            assert closed == (stalled.sub not in net.hub.subscribers), "closed yet subscribed"
            assert len(net.hub) == (1 if closed else 2)

        stats = await stalled.route.finished()
        assert stats.close is not None
        assert (stats.close.code, stats.close.reason) == (1013, "subscriber too slow")
        assert stats.close.cause.startswith("lag "), stats.close.cause
        assert stats.close.cause.endswith(" >= max_lag=0.2"), stats.close.cause
        assert stats.offered == 300
        assert stats.queued_messages == 0
        assert stats.offered == stats.sent + stats.dropped
        assert stats.disconnected > 0
        assert net.hub.subscribers == (fast.sub,)
        assert net.hub.stats().closed_by_policy == 1
        assert fast.indices() == list(range(published))


async def test_disconnect_sends_a_reading_client_its_close_code_and_reason(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        # The throttle holds the second message back, so it ages past max_lag while the
        # client reads normally: the close frame reaches a client that is listening.
        policy = Throttle(rate=1.0) | Disconnect(max_lag=0.1, reason="too slow, come back later")
        client = await net.connect("lagging", policy=policy)
        net.hub.publish("first")
        net.hub.publish("second")
        await client.ended()
        assert client.messages == ["first"]
        assert (client.close_code, client.close_reason) == (1013, "too slow, come back later")
        stats = await client.route.finished()
        assert stats.close is not None
        assert stats.close.code == 1013
        assert stats.close.cause.startswith("lag ")
        assert (stats.sent, stats.disconnected) == (1, 1)
        assert len(net.hub) == 0
        assert net.hub.stats().closed_by_policy == 1


@pytest.mark.parametrize(
    "policy",
    [DropOldest(max_messages=8), DropNewest(max_messages=8), SkipToLatest(), ConflateByKey()],
    ids=repr,
)
async def test_a_client_that_keeps_up_loses_nothing_under_any_dropping_policy(
    net: Net, policy: Policy
) -> None:
    async with asyncio.timeout(GUARD):
        client = await net.connect("reader", policy=policy)
        for i in range(300):
            net.hub.publish(numbered(i), key=f"k{i}")
            await client.received(i + 1)
        assert client.indices() == list(range(300))
        stats = client.sub.stats()
        assert (stats.sent, stats.dropped) == (300, 0)


@attrs.frozen
class KeepTen(Policy):
    """A user's policy that only declares queue rules: it never overrides decide()."""

    def rules(self) -> Rules:
        return Rules(max_messages=10, overflow=Overflow.DROP_OLDEST)


async def test_a_users_policy_that_only_declares_rules_delivers_and_bounds_the_queue(
    net: Net,
) -> None:
    async with asyncio.timeout(GUARD):
        assert not KeepTen().eager
        fast = await net.connect("fast", policy=KeepTen())
        stalled = await net.connect("stalled", policy=KeepTen(), stalled=True)
        for i in range(BURST):
            net.hub.publish(numbered(i, SIZE))
            if i % 10 == 9:
                # The fast client reads as it goes: a burst larger than its bound plus
                # the write limit and the kernel's low-water mark would be dropped.
                await fast.received(i + 1)
        await fast.received(BURST)
        assert fast.indices() == list(range(BURST))
        assert stalled.sub.stats().peak_messages == 10
        stalled.read()
        await stalled.drained()
        received = stalled.indices()
        assert received == list(range(len(received) - 10)) + list(range(BURST - 10, BURST))


async def test_drop_oldest_with_disconnect_max_lag_closes_a_client_stalled_under_steady_publishing(
    net: Net,
) -> None:
    async with asyncio.timeout(GUARD):
        # The README's composition, scaled down: 16 messages, 0.2 s.
        policy = DropOldest(max_messages=16) | Disconnect(max_lag=0.2)
        fast = await net.connect("fast", policy=policy)
        stalled = await net.connect("stalled", policy=policy, stalled=True)
        loop = asyncio.get_running_loop()
        start = loop.time()
        published = 0
        # Publishing paced by the fast client for 1 s, five times max_lag.
        while not stalled.sub.closed and loop.time() - start < 1.0 and published < 100_000:
            net.hub.publish(numbered(published, SIZE))
            published += 1
            await fast.received(published)
        assert stalled.sub.stats().sent < published // 2, "the client was not stalled"
        assert stalled.sub.closed, f"still open after {loop.time() - start:.2f}s of stall"
        stats = await stalled.route.finished()
        assert stats.close is not None
        assert stats.close.code == 1013
        assert stats.close.cause.startswith("lag "), stats.close.cause
        assert net.hub.stats().closed_by_policy == 1
