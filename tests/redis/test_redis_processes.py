"""Hubs in separate processes behind one real redis-server, with real clients on each.

Each node (redis_node.py) runs a hub and a websockets server; a node's messages are
``{"from": hub id, "n": k}`` with k = 1, 2, 3, ..., which is also its backplane
sequence number, so a client's list shows exactly which messages it missed.
"""

from __future__ import annotations

from redis_harness import nodes, running_redis

CONNECTED = {"connected": True}


async def test_messages_published_on_either_hub_reach_every_client_in_order() -> None:
    async with running_redis() as redis, nodes(redis.url, ("A", ()), ("B", ())) as (a, b):
        for node in (a, b):
            await node.wait(equals=CONNECTED, at_least={"peers": 1})
        a_all, a_x, a_y = await a.client(), await a.client("/topic/x"), await a.client("/topic/y")
        b_all, b_x, b_y = await b.client(), await b.client("/topic/x"), await b.client("/topic/y")
        await a.publish(300)
        await b.publish(300)
        await a.publish(100, topic="x")
        await b.publish(1, topic="y")
        await b.wait(at_least={"received": 400})
        await a.wait(at_least={"received": 301})
        for client in (a_all, b_all):
            await client.wait_count(701)
        for client in (a_x, b_x):
            await client.wait_count(700)
        for client in (a_y, b_y):
            await client.wait_count(601)
        health_a, health_b = await a.health(), await b.health()
        await a.stop()
        await b.stop()

    # A message without a topic goes to every subscriber, one with a topic to its own.
    # Exact lengths: a hub's own echo from Redis is not delivered a second time.
    for client in (a_all, b_all):
        assert client.numbers("A") == list(range(1, 401))
        assert client.numbers("B") == list(range(1, 302))
        assert len(client.messages) == 701
    for client in (a_x, b_x):
        assert client.numbers("A") == list(range(1, 401))
        assert client.numbers("B") == list(range(1, 301))
        assert len(client.messages) == 700
    for client in (a_y, b_y):
        assert client.numbers("A") == list(range(1, 301))
        assert client.numbers("B") == list(range(1, 302))
        assert len(client.messages) == 601
    assert (health_a["received"], health_a["lost"]) == (301, 0)
    assert (health_b["received"], health_b["lost"]) == (400, 0)
    assert health_a["published"] == health_a["forwarded"] == 400


async def test_redis_restart_mid_stream_keeps_local_delivery_and_counts_losses_exactly() -> None:
    specs = ("A", ("--buffer", "50")), ("B", ())
    async with running_redis() as redis, nodes(redis.url, *specs) as (a, b):
        for node in (a, b):
            await node.wait(equals=CONNECTED, at_least={"peers": 1})
        a_client, b_client = await a.client(), await b.client()
        await a.command(op="stream", interval=0.001)
        await b.wait(at_least={"received": 100})

        await redis.kill()
        for node in (a, b):
            await node.wait(equals={"connected": False})
        # A keeps publishing while Redis is away; its buffer of 50 overflows.
        forwarded = (await a.health())["forwarded"]
        await a.wait(at_least={"forwarded": forwarded + 300})
        await a_client.wait_count(forwarded + 300)  # local delivery goes on meanwhile

        await redis.start()
        for node in (a, b):
            await node.wait(equals=CONNECTED, at_least={"reconnects": 1})
        received = (await b.health())["received"]
        await b.wait(at_least={"received": received + 100})  # the stream flows again
        total = (await a.command(op="stop"))["n"]
        # Everything A published is accounted for at B: arrived, or counted lost.
        health_b = await b.wait(at_least={"received+lost": total})
        health_a = await a.health()
        await a_client.wait_count(total)
        await b_client.wait_count(health_b["received"])
        await a.stop()
        await b.stop()

    assert a_client.numbers("A") == list(range(1, total + 1))
    got = b_client.numbers("A")
    assert got == sorted(set(got)), "B's client got A's messages out of order or twice"
    assert len(got) == health_b["received"]
    assert health_b["lost"] == total - len(got)  # exactly the gaps in what B's client got
    assert health_b["received"] + health_b["lost"] == total
    assert health_a["dropped"] >= 250
    assert health_b["lost"] >= health_a["dropped"]
    assert health_a["forwarded"] == total
    assert health_a["published"] + health_a["dropped"] + health_a["buffered"] == total


async def test_a_loss_at_the_end_of_a_stream_is_found_by_the_heartbeat() -> None:
    # DropNewest keeps the first 10 of the second burst: the 90 after them are lost at the
    # tail, where no later message shows the gap. Only A's heartbeat can reveal them.
    specs = ("A", ("--buffer", "10", "--drop-newest")), ("B", ())
    async with running_redis() as redis, nodes(redis.url, *specs) as (a, b):
        for node in (a, b):
            await node.wait(equals=CONNECTED, at_least={"peers": 1})
        b_client = await b.client()
        await a.publish(10)
        await b.wait(at_least={"received": 10})

        await redis.kill()
        await a.wait(equals={"connected": False})
        await a.publish(100)
        health_a = await a.health()
        assert (health_a["buffered"], health_a["dropped"]) == (10, 90)

        await redis.start()
        for node in (a, b):
            await node.wait(equals=CONNECTED, at_least={"reconnects": 1})
        health_b = await b.wait(at_least={"received+lost": 110})
        await b_client.wait_count(health_b["received"])
        await a.stop()
        await b.stop()

    got = b_client.numbers("A")
    assert got[:10] == list(range(1, 11))
    assert got == sorted(set(got))
    assert set(got) <= set(range(1, 21)), "a message the buffer refused was delivered"
    assert health_b["lost"] == 110 - len(got) >= 90


async def test_redis_down_at_start_blocks_neither_publish_nor_local_delivery() -> None:
    async with (
        running_redis(started=False) as redis,
        nodes(redis.url, ("A", ()), ("B", ())) as (a, b),
    ):
        a_client = await a.client()
        health = await a.publish(20)
        assert health["health"]["connected"] is False
        await a_client.wait_count(20)  # delivered locally at once, with no Redis at all

        await redis.start()
        for node in (a, b):
            await node.wait(equals=CONNECTED, at_least={"peers": 1})
        b_client = await b.client()
        health_a = await a.wait(at_least={"published": 20})
        await a.publish(20)
        await b_client.wait_count(20)
        await a_client.wait_count(40)
        await a.stop()
        await b.stop()

    assert health_a["reconnects"] == 0  # a first connection is not a reconnection
    assert a_client.numbers("A") == list(range(1, 41))
    assert b_client.numbers("A") == list(range(21, 41))
