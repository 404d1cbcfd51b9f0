"""Clients that negotiate permessage-deflate get websockets' own per-connection encoder."""

from __future__ import annotations

import asyncio
import random

from wsfanout.policies import Batch, DropOldest

from .wsnet import Net, index_of, numbered

GUARD = 20.0


def message(i: int) -> str | bytes:
    """Alternate text and binary, compressible and not, small and large."""
    text = numbered(i, 40 + (i * 977) % 9000)
    if i % 3 == 2:
        return text.encode() + bytes(range(256)) * (i % 5)
    return text


def noisy(i: int) -> str:
    """A numbered text message that compresses badly, so a stall fills the buffers."""
    return numbered(i, 8) + random.Random(i).randbytes(150).hex()


async def test_a_compressing_client_receives_the_same_messages_as_a_plain_one(net: Net) -> None:
    total = 400
    async with asyncio.timeout(GUARD):
        deflate = await net.connect("deflate", compression="deflate", policy=DropOldest())
        plain = await net.connect("plain", policy=DropOldest())
        assert [type(e).__name__ for e in deflate.route.server_ws.protocol.extensions] == [
            "PerMessageDeflate"
        ]
        assert plain.route.server_ws.protocol.extensions == []
        for i in range(total):
            net.hub.publish(message(i))
            if i % 50 == 49:
                await deflate.received(i + 1)
        for client in (deflate, plain):
            await client.received(total)
            assert client.messages == [message(i) for i in range(total)], client


async def test_a_compressing_client_resumed_after_a_stall_decodes_every_frame(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        policy = DropOldest(max_messages=32)
        client = await net.connect("deflate", compression="deflate", policy=policy, stalled=True)
        burst = 1000
        for i in range(burst):
            net.hub.publish(noisy(i))
        assert client.sub.stats().queued_messages > 0
        client.read()
        await client.drained()
        received = client.indices()
        assert received == sorted(set(received))
        assert received[-32:] == list(range(burst - 32, burst))
        for got in client.texts():
            i = index_of(got)
            assert got == noisy(i)


async def test_batches_to_a_compressing_client_are_encoded_per_connection(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        policy = Batch(max_messages=10)
        client = await net.connect("deflate", compression="deflate", policy=policy, stalled=True)
        for i in range(500):
            net.hub.publish(noisy(i))
        client.read()
        await client.until(
            lambda: sum(frame.count("\n") + 1 for frame in client.texts()) == 500, "500 messages"
        )
        lines = [line for frame in client.texts() for line in frame.split("\n")]
        assert lines == [noisy(i) for i in range(500)]
        assert client.sub.stats().batched > 0
