"""Stalled clients cost the others nothing: order, pace, and bounded memory on a real server."""

from __future__ import annotations

import asyncio
import inspect

from wsfanout import Hub
from wsfanout.lowlevel import DEFAULT_MAX_BYTES, DEFAULT_MAX_MESSAGES
from wsfanout.policies import DEFAULT_POLICY, DropOldest

from .wsnet import Net, numbered

GUARD = 20.0
"""Generous upper bound on a test's duration; it only stops a hung test."""

SIZE = 1024
MAX_MESSAGES = 64
MAX_BYTES = 48 * 1024


def stalled_policy() -> DropOldest:
    return DropOldest(max_messages=MAX_MESSAGES, max_bytes=MAX_BYTES)


async def test_fast_clients_receive_every_message_in_order_while_others_stall(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        fast = [await net.connect(f"fast{i}", policy=stalled_policy()) for i in range(3)]
        stalled = [
            await net.connect(f"stalled{i}", policy=stalled_policy(), stalled=True)
            for i in range(2)
        ]
        assert len(net.hub) == 5
        low, high = stalled[0].route.write_limits()
        peak_buffer = [0, 0]
        total, rounds = 1500, 30
        per_round = total // rounds
        published = 0
        for _ in range(rounds):
            for _ in range(per_round):
                assert net.hub.publish(numbered(published, SIZE)) == 5
                published += 1
                for i, client in enumerate(stalled):
                    peak_buffer[i] = max(peak_buffer[i], client.route.write_buffer())
            for client in fast:
                await client.received(published)

        for client in fast:
            assert client.indices() == list(range(total)), client
        frame = SIZE + 4  # a 1 KiB text frame's header is 4 bytes
        for i, client in enumerate(stalled):
            stats = client.sub.stats()
            assert stats.offered == total
            assert stats.offered == stats.sent + stats.dropped + stats.queued_messages
            assert stats.dropped_oldest > 0, "the stalled client never fell behind"
            assert stats.queued_messages > 0
            assert stats.peak_messages <= MAX_MESSAGES
            assert stats.peak_bytes <= MAX_BYTES
            # Nothing is written past the high-water mark: at most one frame crosses it.
            assert low < peak_buffer[i] <= high + frame, (low, high, peak_buffer[i])
            assert client.route.write_buffer() > low, "the stalled client's buffer drained"


def test_publish_is_a_plain_function_that_cannot_block() -> None:
    assert not inspect.iscoroutinefunction(Hub.publish)
    assert not inspect.isasyncgenfunction(Hub.publish)


async def test_a_burst_of_publishes_returns_without_yielding_while_clients_stall(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        stalled = [
            await net.connect(f"s{i}", policy=stalled_policy(), stalled=True) for i in range(3)
        ]
        loop = asyncio.get_running_loop()
        ran: list[int] = []
        # A callback scheduled before the burst runs only if the burst gives up the loop.
        loop.call_soon(lambda: ran.append(len(ran)))
        counts = [net.hub.publish(numbered(i, SIZE)) for i in range(2000)]
        assert ran == []
        assert counts == [3] * 2000
        for client in stalled:
            stats = client.sub.stats()
            assert stats.peak_messages <= MAX_MESSAGES
            assert stats.peak_bytes <= MAX_BYTES
            assert stats.offered == stats.sent + stats.dropped + stats.queued_messages == 2000


async def test_a_fast_client_has_message_k_before_message_k_plus_w_is_published(net: Net) -> None:
    window = 32
    total = 1200
    async with asyncio.timeout(GUARD):
        fast = [await net.connect(f"fast{i}", policy=stalled_policy()) for i in range(2)]
        stalled = [
            await net.connect(f"stalled{i}", policy=stalled_policy(), stalled=True)
            for i in range(2)
        ]
        waits = 0
        for k in range(total):
            if k >= window:
                # Message k - window must have arrived before message k is published.
                for client in fast:
                    if len(client.messages) <= k - window:
                        waits += 1
                        await client.received(k - window + 1)
            net.hub.publish(numbered(k, SIZE))
        for client in fast:
            await client.received(total)
            assert client.indices() == list(range(total))
        assert waits > 0, "the publisher never had to wait: the window was not exercised"
        for client in stalled:
            assert client.sub.stats().dropped_oldest > 0


async def test_a_stalled_client_under_the_default_policy_is_closed_when_its_queue_overflows(
    net: Net,
) -> None:
    size = 512
    async with asyncio.timeout(GUARD):
        fast = await net.connect("fast")
        stalled = await net.connect("stalled", stalled=True)
        assert stalled.sub.policy == DEFAULT_POLICY
        published = 0
        while not stalled.sub.closed and published < 5000:
            net.hub.publish(numbered(published, size))
            published += 1
        assert stalled.sub.closed, "the default bound never applied"
        assert len(net.hub) == 1
        net.hub.publish(numbered(published, size))
        published += 1

        stats = await stalled.route.finished()
        assert stats.close is not None
        assert (stats.close.code, stats.close.reason) == (1013, "queue full")
        assert stats.close.cause == (
            f"a {size}-byte message did not fit: {DEFAULT_MAX_MESSAGES} messages, "
            f"{DEFAULT_MAX_MESSAGES * size} bytes queued "
            f"(max_messages={DEFAULT_MAX_MESSAGES}, max_bytes={DEFAULT_MAX_BYTES})"
        )
        assert stats.peak_messages == DEFAULT_MAX_MESSAGES
        assert stats.offered == published - 1 == stats.sent + stats.disconnected
        assert net.hub.stats().closed_by_policy == 1
        await fast.received(published)
        assert fast.indices() == list(range(published))
