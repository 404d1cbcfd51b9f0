"""Forged backplane traffic: a Redis client that is not a hub publishes, on a topic's
channel, a message in wsfanout's format numbered far ahead of the topic's real offset.
The hub must not report a loss for it nor take the genuine messages after it for
repeats; it drops the forgery, counts it and logs it once. On a real redis-server."""

from __future__ import annotations

import logging

import pytest
import redis.asyncio as aredis
from redis_harness import Reader, backplane_of, hub_on, running_redis, serving, wait_health

from wsfanout import History
from wsfanout._backplane.envelope import STREAM, encode_head
from wsfanout._core.frames import OP_TEXT


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
        health = backplane_of(hub).health()
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
