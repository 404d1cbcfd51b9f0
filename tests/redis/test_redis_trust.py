"""Forged backplane traffic: a Redis client that is not a hub publishes, on a topic's
channel, a message in wsfanout's format numbered far ahead of the topic's real offset.
The hub must not report a loss for it nor take the genuine messages after it for
repeats; it drops the forgery, counts it and logs it once. On a real redis-server."""

from __future__ import annotations

import logging
import os
import signal

import pytest
import redis.asyncio as aredis
from redis_harness import Reader, backplane_of, hub_on, running_redis, serving, wait_health

from harness.redis_server import AsyncRedisServer
from wsfanout import History, Hub
from wsfanout._backplane.envelope import STREAM, encode_head
from wsfanout._core.frames import OP_TEXT
from wsfanout.backplane import RedisBackplane
from wsfanout.client import Received
from wsfanout.policies import DropOldest


def forged(epoch: bytes, offset: int, text: str) -> bytes:
    return STREAM + epoch + f" {offset} ".encode() + encode_head(OP_TEXT, None) + text.encode()


@pytest.mark.parametrize("history", [History(max_messages=100), None], ids=["history", "none"])
async def test_a_message_numbered_far_ahead_is_dropped_and_the_stream_goes_on(
    history: History | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="wsfanout.backplane")
    async with (
        running_redis() as redis,
        hub_on(redis.url, "A", history=history) as hub,
        serving(hub) as uri,
    ):
        await wait_health(hub, lambda h: h.connected)
        reader = Reader.connect(uri)
        hub.publish("m1", topic="t")
        await reader.wait(lambda r: len(r.received) == 1)
        forger = aredis.Redis.from_url(redis.url)
        try:
            epoch = await forger.hget("wsfanout:epochs", "t")
            assert isinstance(epoch, bytes)
            for offset in (1_000_000, 2_000_000_000):
                # Redis has sent it to the hub before it answers: it arrives first.
                assert await forger.publish("wsfanout:topic:t", forged(epoch, offset, "fake"))
                hub.publish(f"after {offset}", topic="t")
            await reader.wait(lambda r: len(r.received) == 3)
        finally:
            await forger.aclose()
        # The second forgery may have waited behind the first one's check: its own check
        # can end after the genuine messages went.
        health = await wait_health(hub, lambda h: h.forged == 2)
        await reader.close()
    assert [(m.offset, m.data) for m in reader.received] == [
        (1, "m1"),
        (2, "after 1000000"),
        (3, "after 2000000000"),
    ]
    assert reader.gaps == []
    assert (health.forged, health.lost, health.received) == (2, 0, 3)
    warnings = [r for r in caplog.records if "forged" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


# -- counts that add up (issue 12, item 6) ----------------------------------------------


async def test_a_key_with_no_utf8_form_takes_no_sequence_number_and_no_offset() -> None:
    async with (
        running_redis() as redis,
        hub_on(redis.url, "A", history=History(max_messages=10)) as a,
        hub_on(redis.url, "B", history=History(max_messages=10)) as b,
        serving(b) as uri,
    ):
        for hub in (a, b):
            await wait_health(hub, lambda h: h.connected)
        reader = Reader.connect(uri)
        a.publish("m1", topic="t")
        await reader.wait(lambda r: len(r.received) == 1)
        with pytest.raises(ValueError, match="key"):
            a.publish("bad key", topic="t", key="\ud800")
        with pytest.raises(ValueError, match="topic"):
            a.publish("bad topic", topic="\ud800")
        a.publish("m2", topic="t")
        await reader.wait(lambda r: len(r.received) == 2)
        health = await wait_health(a, lambda h: h.published == 2)
        await reader.close()
        received = backplane_of(b).health()
    assert [(m.offset, m.data) for m in reader.received] == [(1, "m1"), (2, "m2")]
    assert reader.gaps == []
    assert (health.forwarded, health.published, health.dropped, health.buffered) == (2, 2, 0, 0)
    assert (received.lost, received.malformed) == (0, 0)


async def test_a_batch_that_timed_out_in_a_stall_but_reached_redis_is_not_counted_dropped() -> None:
    # Redis stalls (SIGSTOP) with a batch written to it: the call times out, and while
    # the hub reconnects its buffer fills. Redis then runs the batch after all. Those
    # messages reached every subscriber: they are published, not dropped.
    async with running_redis() as redis:
        backplane = RedisBackplane(
            redis.url,
            hub_id="A",
            history=History(max_messages=100),
            buffer=DropOldest(max_messages=10),
            timeout=0.3,  # the publishing call gives up
            heartbeat=30.0,  # and the subscription does not notice the stall
            max_retry_delay=0.2,
        )
        hub = Hub(backplane=backplane, close_timeout=2.0)
        await backplane.start()
        try:
            async with serving(hub) as uri:
                await run_the_stall(redis, hub, uri)
        finally:
            await hub.aclose()


async def run_the_stall(redis: AsyncRedisServer, hub: Hub, uri: str) -> None:
    await wait_health(hub, lambda h: h.connected)
    reader = Reader.connect(uri)
    hub.publish("m0", topic="t")
    await reader.wait(lambda r: len(r.received) == 1)
    assert redis.popen is not None
    os.kill(redis.popen.pid, signal.SIGSTOP)
    try:
        for n in range(1, 6):
            hub.publish(f"m{n}", topic="t")
        await wait_health(hub, lambda h: not h.connected)
        for n in range(6, 16):
            hub.publish(f"m{n}", topic="t")
    finally:
        os.kill(redis.popen.pid, signal.SIGCONT)
    health = await wait_health(hub, lambda h: h.connected and h.buffered == 0)
    await reader.wait(lambda r: r.accounted() >= 16 - health.dropped)
    await reader.close()
    payloads = [m.data for m in reader.received]
    assert payloads[:6] == [f"m{n}" for n in range(6)]  # the batch Redis ran after all
    assert health.forwarded == health.published + health.dropped + health.buffered
    assert health.published == len(payloads) == 16 - health.dropped
    assert health.dropped == 0  # ten waited beside the batch in doubt: all fit


# -- the receiver under load (issue 17) -------------------------------------------------


async def test_messages_for_topics_without_local_subscribers_are_skipped_then_followed() -> None:
    async with (
        running_redis() as redis,
        hub_on(redis.url, "A") as a,
        hub_on(redis.url, "B") as b,
        serving(b) as uri,
    ):
        for hub in (a, b):
            await wait_health(hub, lambda h: h.connected)
        for n in range(1, 6):
            a.publish(f"t{n}", topic="t")
        skipped = await wait_health(b, lambda h: h.received == 5)
        # The first message of a stream new to the hub takes the full path: it starts
        # the stream's cursor. The next ones are only counted.
        assert (skipped.skipped, skipped.lost, skipped.topics) == (4, 0, 1)
        # A subscriber of the topic arrives: the next message is delivered in its place.
        reader = Reader.connect(uri + "/topic/t")
        await reader.wait(lambda r: any(isinstance(e, Received) for e in r.events))  # hello
        a.publish("t6", topic="t")
        a.publish("u1", topic="u")  # still nobody's: u2 is skipped
        a.publish("u2", topic="u")
        await reader.wait(lambda r: len(r.received) == 1)
        health = await wait_health(b, lambda h: h.received == 8)
        await reader.close()
    assert [(m.offset, m.data) for m in reader.received] == [(6, "t6")]
    assert reader.gaps == []
    assert (health.skipped, health.lost, health.repaired) == (5, 0, 0)


async def test_the_receivers_lag_behind_redis_is_measured() -> None:
    async with running_redis() as redis, hub_on(redis.url, "A") as hub:
        health = await wait_health(hub, lambda h: h.connected and h.lag > 0)
    assert 0 < health.lag < 1.0  # one ping on a quiet loopback connection
