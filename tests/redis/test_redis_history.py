"""History in Redis Streams: kept and trimmed exactly, repairing what pub/sub loses, and
serving clients that resume; hubs in one process on a real redis-server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aredis
from redis_harness import (
    Reader,
    backplane_of,
    hub_on,
    running_redis,
    serving,
    wait_health,
)

from harness.redis_server import AsyncRedisServer
from wsfanout import History, Hub, Position
from wsfanout.backplane import BackplaneHealth, RedisBackplane
from wsfanout.exceptions import ConfigError


def connected(health: BackplaneHealth) -> bool:
    return health.connected


@contextlib.asynccontextmanager
async def admin(server: AsyncRedisServer) -> AsyncIterator[aredis.Redis]:
    client = aredis.Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()


async def entries(client: aredis.Redis, topic: str) -> list[tuple[int, bytes]]:
    """The stream of ``topic`` as Redis holds it: (offset, payload)."""
    found: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(  # type: ignore[assignment]
        f"wsfanout:history:{topic}"
    )
    return [(int(entry_id.split(b"-")[0]), fields[b"d"]) for entry_id, fields in found]


async def allow(client: aredis.Redis, user: str, enabled: bool) -> None:
    """Let ``user`` (password ``pw``) connect, or refuse its new connections."""
    await client.acl_setuser(
        user, enabled=enabled, passwords=["+pw"], keys=["*"], channels=["*"], commands=["+@all"]
    )


async def published(hub: Hub, count: int) -> BackplaneHealth:
    return await wait_health(hub, lambda h: h.published >= count and h.received >= count)


async def test_the_stream_keeps_exactly_the_newest_messages_within_each_bound() -> None:
    async with running_redis() as redis, admin(redis) as client:
        async with hub_on(redis.url, "A", history=History(max_messages=5)) as a:
            await wait_health(a, connected)
            for n in range(1, 13):
                a.publish(f"m{n}", topic="count")
            await published(a, 12)
            assert await entries(client, "count") == [(o, f"m{o}".encode()) for o in range(8, 13)]
        async with hub_on(redis.url, "B", history=History(max_messages=100, max_bytes=10)) as b:
            await wait_health(b, connected)
            for _ in range(7):
                b.publish("abcd", topic="bytes")  # 4 bytes each: two fit in 10
            b.publish("x" * 11, topic="bytes")  # alone larger than the bound: not kept
            await published(b, 8)
            assert await entries(client, "bytes") == []
            b.publish("abc", topic="bytes")
            await published(b, 9)
            assert await entries(client, "bytes") == [(9, b"abc")]
            assert await client.hget("wsfanout:bytes", "bytes") == b"3"
        assert await client.hget("wsfanout:offsets", "count") == b"12"


async def test_entries_older_than_max_age_are_trimmed_by_the_next_publish_or_read() -> None:
    # Aged entries are made by hand: entries 1..3 published long ago (t=0 in Redis' clock).
    async with running_redis() as redis, admin(redis) as client:
        await client.hset("wsfanout:epochs", "p", "e1")
        await client.hset("wsfanout:offsets", "p", 3)
        for offset in (1, 2, 3):
            await client.xadd(
                "wsfanout:history:p",
                {"t": 0, "h": b"\x01\xff\xff\xff\xff", "d": b"old"},
                id=f"{offset}-0",
            )
        async with hub_on(redis.url, "A", history=History(max_age=60.0)) as a:
            await wait_health(a, connected)
            recovered = await backplane_of(a).read("p", "e1", 0)
            assert (recovered.epoch, recovered.last, recovered.messages) == ("e1", 3, ())
            assert await entries(client, "p") == []
            a.publish("new", topic="p")
            await published(a, 1)
            assert await entries(client, "p") == [(4, b"new")]


async def test_a_gap_pubsub_caused_is_repaired_from_the_stream_exactly_once_in_order() -> None:
    async with running_redis() as redis, admin(redis) as client:
        await allow(client, "b", enabled=True)
        b_url = redis.url.replace("redis://", "redis://b:pw@")
        history = History(max_messages=1000)
        async with (
            hub_on(redis.url, "A", history=history) as a,
            hub_on(b_url, "B", history=history) as b,
            serving(b) as b_uri,
        ):
            for hub in (a, b):
                await wait_health(hub, connected)
            reader = Reader.connect(b_uri)
            a.publish("before", topic="t")
            await reader.wait(lambda r: len(r.received) == 1)
            # B's subscription is cut and B may not come back until told: what A publishes
            # meanwhile never reaches B through pub/sub.
            await allow(client, "b", enabled=False)
            await kill_subscription(client, "B")
            await wait_health(b, lambda h: not h.connected)
            for n in range(50):
                a.publish(json.dumps({"n": n}), topic="t")
            await wait_health(a, lambda h: h.received >= 51)
            assert backplane_of(b).health().received == 1
            await allow(client, "b", enabled=True)
            health = await wait_health(b, lambda h: h.connected and h.received >= 51)
            await reader.wait(lambda r: len(r.received) == 51)
            a.publish("after", topic="t")
            await reader.wait(lambda r: len(r.received) == 52)
            await reader.close()
    assert [m.offset for m in reader.received] == list(range(1, 53))
    assert [json.loads(m.data)["n"] for m in reader.received[1:51]] == list(range(50))
    assert (health.repaired, health.lost, health.reconnects) == (50, 0, 1)
    assert reader.gaps == []


async def test_what_the_stream_no_longer_holds_is_reported_to_subscribers_exactly() -> None:
    async with running_redis() as redis, admin(redis) as client:
        await allow(client, "b", enabled=True)
        b_url = redis.url.replace("redis://", "redis://b:pw@")
        history = History(max_messages=5)
        async with (
            hub_on(redis.url, "A", history=history) as a,
            hub_on(b_url, "B", history=history) as b,
            serving(b) as b_uri,
        ):
            for hub in (a, b):
                await wait_health(hub, connected)
            reader = Reader.connect(b_uri)
            a.publish("before", topic="t")
            await reader.wait(lambda r: len(r.received) == 1)
            await allow(client, "b", enabled=False)
            await kill_subscription(client, "B")
            await wait_health(b, lambda h: not h.connected)
            for n in range(20):
                a.publish(f"m{n}", topic="t")
            await wait_health(a, lambda h: h.received >= 21)
            await allow(client, "b", enabled=True)
            health = await wait_health(b, lambda h: h.connected and h.received >= 6)
            await reader.wait(lambda r: r.accounted() == 21)
            await reader.close()
    (gap,) = reader.gaps
    assert (gap.source, gap.ranges, gap.count, dict(gap.reasons)) == (
        "notice",
        ((2, 16),),
        15,
        {"history": 15},
    )
    assert [m.offset for m in reader.received] == [1, 17, 18, 19, 20, 21]
    assert (health.repaired, health.lost) == (5, 15)
    assert health.lost == reader.client.stats().lost


async def kill_subscription(client: aredis.Redis, hub_id: str) -> None:
    """Close the subscribed connection of hub ``hub_id`` from Redis' side."""
    listed = await client.client_list()
    ids = [
        entry["id"]
        for entry in listed
        if entry.get("name") == f"wsfanout-sub:{hub_id}" and entry.get("psub") == "1"
    ]
    assert ids, f"no subscription of {hub_id} in {listed}"
    for client_id in ids:
        await client.client_kill_filter(_id=client_id)


async def test_a_client_resuming_on_a_hub_that_never_saw_its_messages_reads_redis() -> None:
    history = History(max_messages=1000)
    async with running_redis() as redis:
        async with hub_on(redis.url, "A", history=history) as a:
            await wait_health(a, connected)
            for n in range(1, 11):
                a.publish(f"m{n}", topic="t")
            await published(a, 10)
            epoch = (await backplane_of(a).read("t", "", 0)).epoch
        # A new hub (a restarted process, say): its own window is empty.
        async with hub_on(redis.url, "B", history=history) as b, serving(b) as b_uri:
            await wait_health(b, connected)
            reader = Reader.connect(f"{b_uri}/topic/t", since=[Position("t", epoch, 4)])
            await reader.wait(lambda r: len(r.received) == 6)
            health = backplane_of(b).health()
            await reader.close()
    assert [(m.offset, m.data) for m in reader.received] == [(o, f"m{o}") for o in range(5, 11)]
    assert (health.resumes, health.reads) == (1, 1)
    assert reader.gaps == []


async def test_a_reconnect_storm_reads_history_once_per_starting_point() -> None:
    history = History(max_messages=1000)
    async with running_redis() as redis, admin(redis) as client:
        async with hub_on(redis.url, "A", history=history) as a:
            await wait_health(a, connected)
            for n in range(1, 21):
                a.publish(f"m{n}", topic="t")
            await published(a, 20)
            epoch = (await backplane_of(a).read("t", "", 0)).epoch
        async with hub_on(redis.url, "B", history=history) as b, serving(b) as b_uri:
            await wait_health(b, connected)
            # Redis holds every script back while the crowd arrives, so their reads overlap.
            await client.client_pause(30_000, all=False)
            try:
                crowd = [
                    Reader.connect(f"{b_uri}/topic/t", since=[Position("t", epoch, offset)])
                    for offset in [5] * 150 + [10] * 50
                ]
                await wait_health(b, lambda h: h.resumes >= 200)
            finally:
                await client.client_unpause()
            for reader in crowd:
                await reader.wait(lambda r: len(r.received) >= 10)
            health = backplane_of(b).health()
            for reader in crowd:
                await reader.close()
    assert (health.resumes, health.reads) == (200, 2)
    for reader in crowd[:150]:
        assert [m.offset for m in reader.received] == list(range(6, 21))
    for reader in crowd[150:]:
        assert [m.offset for m in reader.received] == list(range(11, 21))


def test_history_is_the_backplanes_setting_when_a_hub_has_one() -> None:
    backplane = RedisBackplane(hub_id="A", history=History(max_messages=10))
    with pytest.raises(ConfigError, match=r"^history=History\(max_messages=5\) is the backplane"):
        Hub(backplane=backplane, history=History(max_messages=5))
    assert Hub(backplane=backplane).history == History(max_messages=10)
    with pytest.raises(ConfigError, match=r"^history=100 must be a History\(\.\.\.\) or None$"):
        RedisBackplane(history=100)  # type: ignore[arg-type]
    assert repr(backplane) == (
        "RedisBackplane('redis://127.0.0.1:6379/0', namespace='wsfanout', hub_id='A', "
        "history=History(max_messages=10))"
    )


async def test_reads_of_one_place_at_once_share_one_read() -> None:
    history = History()
    async with running_redis() as redis, hub_on(redis.url, "A", history=history) as a:
        await wait_health(a, connected)
        for n in range(5):
            a.publish(str(n), topic="t")
        await published(a, 5)
        backplane = backplane_of(a)
        together = await asyncio.gather(*(backplane.read("t", "", 0) for _ in range(30)))
        assert {len(r.messages) for r in together} == {5}
        health = backplane.health()
    assert (health.resumes, health.reads) == (30, 1)


async def test_reads_of_one_place_one_after_another_share_one_read_until_it_moves_on() -> None:
    async with running_redis() as redis, hub_on(redis.url, "A", history=History()) as a:
        await wait_health(a, connected)
        for n in range(1, 6):
            a.publish(f"m{n}", topic="t")
        await published(a, 5)
        backplane = backplane_of(a)
        epoch = (await backplane.read("t", "", 0)).epoch
        crowd = [await backplane.read("t", epoch, 2) for _ in range(30)]
        assert {tuple(m.offset for m in r.messages) for r in crowd} == {(3, 4, 5)}
        # One copy of each message for all of them: its frames are encoded once.
        assert all(r.messages[0] is crowd[0].messages[0] for r in crowd)
        assert (backplane.health().resumes, backplane.health().reads) == (31, 2)
        # Once the stream moves on (a publish may trim it), the next client reads again.
        a.publish("m6", topic="t")
        await published(a, 6)
        later = await backplane.read("t", epoch, 2)
        assert [m.offset for m in later.messages] == [3, 4, 5, 6]
        assert (backplane.health().resumes, backplane.health().reads) == (32, 3)


async def redis_ms(client: aredis.Redis) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_a_read_kept_for_later_clients_is_not_served_once_its_oldest_has_aged_out() -> None:
    max_age = 60.0
    async with running_redis() as redis, admin(redis) as client:
        # Entry 1 ages out two seconds from now by Redis' clock, entry 2 much later.
        aged_at = await redis_ms(client) + 2000
        await client.hset("wsfanout:epochs", "p", "e1")
        await client.hset("wsfanout:offsets", "p", 2)
        for offset, t in ((1, aged_at - int(max_age * 1000)), (2, aged_at + 30_000)):
            await client.xadd(
                "wsfanout:history:p",
                {"t": t, "h": b"\x01\xff\xff\xff\xff", "d": f"m{offset}"},
                id=f"{offset}-0",
            )
        async with hub_on(redis.url, "A", history=History(max_age=max_age)) as a:
            await wait_health(a, lambda h: h.connected and h.topics >= 1)
            backplane = backplane_of(a)
            first = await backplane.read("p", "e1", 0)
            again = await backplane.read("p", "e1", 0)
            if await redis_ms(client) < aged_at - 500:  # not when the machine stalled that long
                assert backplane.health().reads == 1
            assert [m.offset for m in first.messages] == [1, 2]
            assert [m.offset for m in again.messages] == [1, 2]
            async with asyncio.timeout(10):
                while True:  # the clock passing is what this test is about
                    if await redis_ms(client) > aged_at:
                        break
                    await asyncio.sleep(0.05)
            aged = await backplane.read("p", "e1", 0)
    assert [m.offset for m in aged.messages] == [2]


def kept_by_bound(sizes: list[int], max_messages: int, max_bytes: int) -> list[int]:
    """The offsets a stream holds after each of ``sizes`` is appended and the oldest
    trimmed while over a bound: the model, written apart from the Lua script."""
    held: list[tuple[int, int]] = []
    for offset, size in enumerate(sizes, start=1):
        held.append((offset, size))
        while held and (len(held) > max_messages or sum(s for _, s in held) > max_bytes):
            held.pop(0)
    return [offset for offset, _ in held]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_the_stream_is_trimmed_exactly_however_many_entries_one_message_evicts(
    seed: int,
) -> None:
    # Mostly small messages and, now and then, one nearly the byte bound that evicts
    # dozens at once, or one larger than the bound that evicts everything, itself too.
    rng = random.Random(seed)
    sizes = [rng.choice([*range(1, 9)] * 12 + [250, 299, 301]) for _ in range(400)]
    bound = History(max_messages=60, max_bytes=300)
    async with (
        running_redis() as redis,
        admin(redis) as client,
        hub_on(redis.url, "A", history=bound) as a,
    ):
        await wait_health(a, connected)
        for size in sizes:
            a.publish("x" * size, topic="t")
        await published(a, len(sizes))
        held = await entries(client, "t")
        stored_bytes = int(await client.hget("wsfanout:bytes", "t") or 0)
    expected = kept_by_bound(sizes, 60, 300)
    assert [offset for offset, _ in held] == expected
    assert [len(payload) for _, payload in held] == [sizes[o - 1] for o in expected]
    assert stored_bytes == sum(sizes[o - 1] for o in expected)


async def test_a_storm_from_more_places_than_the_pool_has_connections_reads_them_all() -> None:
    # redis-py's pool opens at most 100 connections; 300 places are read, none fails.
    async with running_redis() as redis, hub_on(redis.url, "A", history=History()) as a:
        await wait_health(a, connected)
        for n in range(5):
            a.publish(str(n), topic="t")
        await published(a, 5)
        backplane = backplane_of(a)
        found = await asyncio.gather(*(backplane.read("t", f"other{i}", 0) for i in range(300)))
        health = backplane.health()
    assert {tuple(m.offset for m in r.messages) for r in found} == {(1, 2, 3, 4, 5)}
    assert (health.resumes, health.reads) == (300, 300)


async def test_a_resume_whose_read_fails_is_closed_to_come_back_not_told_of_a_loss() -> None:
    history = History(max_messages=1000)
    async with running_redis() as redis, admin(redis) as client:
        async with hub_on(redis.url, "A", history=history) as a:
            await wait_health(a, connected)
            for n in range(1, 11):
                a.publish(f"m{n}", topic="t")
            await published(a, 10)
            epoch = (await backplane_of(a).read("t", "", 0)).epoch
        async with hub_on(redis.url, "B", history=history, timeout=0.5) as b, serving(b) as uri:
            await wait_health(b, lambda h: h.connected and h.topics >= 1)
            # Redis holds back every script (reads too) longer than B waits for one.
            await client.client_pause(30_000, all=False)
            try:
                reader = Reader.connect(f"{uri}/topic/t", since=[Position("t", epoch, 4)])
                # Asked twice: the first read failed, and the client came back for more.
                await wait_health(b, lambda h: h.resumes >= 2)
            finally:
                await client.client_unpause()
            await reader.wait(lambda r: len(r.received) == 6)
            stats = b.stats()
            await reader.close()
    assert [(m.offset, m.data) for m in reader.received] == [(o, f"m{o}") for o in range(5, 11)]
    assert reader.gaps == []
    assert reader.client.stats().lost == 0
    assert stats.history_missed == 0


async def test_a_lossless_message_is_lossless_again_when_read_back_from_the_stream() -> None:
    async with running_redis() as redis:
        async with hub_on(redis.url, "A", history=History(max_messages=10)) as a:
            await wait_health(a, connected)
            a.publish("may go", topic="t")
            a.publish("must arrive", topic="t", lossless=True)
            await published(a, 2)
        # A hub that never saw them reads them from Redis, for a client that resumes.
        async with hub_on(redis.url, "B", history=History(max_messages=10)) as b:
            await wait_health(b, connected)
            epoch = (await backplane_of(b).read("t", "", 0)).epoch
            recovered = await backplane_of(b).read("t", epoch, 0)
    assert [(m.payload, m.droppable) for m in recovered.messages] == [
        (b"may go", True),
        (b"must arrive", False),
    ]
