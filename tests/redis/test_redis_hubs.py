"""Hubs in one process sharing a real redis-server, with real websockets clients."""

from __future__ import annotations

import asyncio
import json

import attrs
import pytest
import redis.asyncio as aredis
from redis_harness import (
    Collector,
    Reader,
    backplane_of,
    hub_on,
    running_redis,
    serving,
    wait_health,
)

from harness.polling import until
from wsfanout import Hub, Policy
from wsfanout._backplane.envelope import MAGIC
from wsfanout._backplane.redis import _finish
from wsfanout.backplane import BackplaneHealth, RedisBackplane
from wsfanout.exceptions import ConfigError, HubClosedError, PolicyError
from wsfanout.lowlevel import Rules
from wsfanout.policies import (
    Batch,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    SkipToLatest,
    Throttle,
)

GUARD = 30.0


def connected(health: BackplaneHealth) -> bool:
    return health.connected


async def test_a_hub_delivers_its_own_messages_through_redis_numbered_as_every_hub() -> None:
    async with (
        running_redis() as redis,
        hub_on(redis.url, "A") as a,
        hub_on(redis.url, "B") as b,
        serving(a) as a_uri,
        serving(b) as b_uri,
    ):
        for hub in (a, b):
            await wait_health(hub, connected)
        on_a, on_b = Reader.connect(a_uri), Reader.connect(b_uri)
        for reader in (on_a, on_b):
            await reader.client.wait_connected()
        await until_subscribed(a, b)
        for n in range(10):  # both hubs publish on one topic, interleaved
            a.publish(json.dumps({"from": "A", "n": n}), topic="t")
            b.publish(json.dumps({"from": "B", "n": n}), topic="t")
        for reader in (on_a, on_b):
            await reader.wait(lambda r: len(r.received) >= 20)
        health = await wait_health(a, lambda h: h.received >= 20)
        for reader in (on_a, on_b):
            await reader.close()
    # One numbering and one order for both hubs' subscribers, offsets 1..20, each once.
    assert [(m.offset, m.data) for m in on_a.received] == [
        (m.offset, m.data) for m in on_b.received
    ]
    assert [m.offset for m in on_a.received] == list(range(1, 21))
    assert len({m.epoch for m in on_a.received}) == 1
    sent = [json.loads(m.data) for m in on_a.received]
    assert [m["n"] for m in sent if m["from"] == "A"] == list(range(10))
    assert [m["n"] for m in sent if m["from"] == "B"] == list(range(10))
    # A's own ten came back from Redis, like B's: received counts both.
    assert (health.published, health.received, health.lost, health.repaired) == (10, 20, 0, 0)


async def until_subscribed(*hubs: Hub) -> None:
    """Each hub has a subscriber attached (the Reader's first connection)."""
    await until(lambda: all(len(hub) for hub in hubs), GUARD)


async def test_text_binary_and_topics_cross_and_namespaces_stay_apart() -> None:
    async with (
        running_redis() as redis,
        hub_on(redis.url, "A", namespace="one") as a,
        hub_on(redis.url, "B", namespace="one") as b,
        hub_on(redis.url, "C", namespace="two") as c,
        hub_on(redis.url, "D", namespace="two") as d,
        serving(b) as b_uri,
        serving(c) as c_uri,
    ):
        for hub in (a, b, c, d):
            await backplane_of(hub).wait_for(connected, timeout=GUARD)
        b_all, b_x = await Collector.connect(b_uri), await Collector.connect(f"{b_uri}/topic/x")
        c_all = await Collector.connect(c_uri)
        a.publish("text")
        a.publish(b"\x00\x01")
        a.publish("for x", topic="x")
        a.publish("for y", topic="y")
        await b_all.wait_count(4)
        # Redis ran A's publishes before D's: C's first message is D's, or crosstalk leaked.
        d.publish("from two")
        await c_all.wait_count(1)
        await b_x.wait_count(3)
        for hub in (a, b, c, d):
            await hub.aclose()
        for client in (b_all, b_x, c_all):
            await client.close()
    assert b_all.messages == ["text", b"\x00\x01", "for x", "for y"]
    assert b_x.messages == ["text", b"\x00\x01", "for x"]
    assert c_all.messages == ["from two"]


async def test_without_redis_publishes_wait_in_the_buffer_and_go_out_when_it_returns() -> None:
    async with (
        running_redis(started=False) as redis,
        hub_on(redis.url, "A", buffer=DropOldest(max_messages=5)) as a,
        serving(a) as uri,
    ):
        client = await Collector.connect(uri)
        for n in range(20):
            assert a.publish(json.dumps({"from": "A", "n": n})) == 1
        down = backplane_of(a).health()
        await redis.start()
        await client.wait_count(5)  # nothing is delivered before Redis numbers it
        health = await wait_health(a, lambda h: h.connected and h.published == 5)
        await a.aclose()
        await client.close()
    assert client.numbers("A") == list(range(15, 20))  # the newest five, as the buffer kept
    assert (down.connected, down.forwarded, down.buffered, down.dropped) == (False, 20, 5, 15)
    assert (down.published, down.received) == (0, 0)
    assert (health.forwarded, health.published, health.dropped, health.buffered) == (20, 5, 15, 0)


async def test_closing_the_hub_flushes_what_waits_for_redis() -> None:
    async with running_redis() as redis, hub_on(redis.url, "A") as a, hub_on(redis.url, "B") as b:
        for hub in (a, b):
            await backplane_of(hub).wait_for(connected, timeout=GUARD)
        for n in range(300):
            a.publish(str(n))
        await a.aclose()
        closed = backplane_of(a).health()
        received = await backplane_of(b).wait_for(lambda h: h.received >= 300, timeout=GUARD)
    assert (closed.published, closed.dropped, closed.buffered) == (300, 0, 0)
    assert closed.connected is False
    assert (received.received, received.lost) == (300, 0)


async def test_closing_without_redis_counts_the_unsent_messages_as_dropped() -> None:
    async with running_redis(started=False) as redis, hub_on(redis.url, "A") as a:
        for n in range(10):
            a.publish(str(n))
        await a.aclose()
        health = backplane_of(a).health()
        with pytest.raises(HubClosedError):
            a.publish("late")
    assert (health.forwarded, health.published, health.dropped, health.buffered) == (10, 0, 10, 0)


async def test_messages_from_other_redis_clients_reach_subscribers_as_they_are() -> None:
    async with (
        running_redis() as redis,
        hub_on(redis.url, "A") as a,
        serving(a) as uri,
    ):
        await backplane_of(a).wait_for(connected, timeout=GUARD)
        every, only_y = await Collector.connect(uri), await Collector.connect(f"{uri}/topic/y")
        client = aredis.Redis.from_url(redis.url)
        for channel, payload in [
            ("wsfanout:all", b"plain"),
            ("wsfanout:all", b"\xff\xfe"),
            ("wsfanout:topic:x", b"only x"),
            ("wsfanout:all", MAGIC + b"Z broken"),
            ("wsfanout:elsewhere", b"not a channel of ours"),
            ("wsfanout:all", b"end"),
        ]:
            await client.publish(channel, payload)
        await client.aclose()
        health = await backplane_of(a).wait_for(lambda h: h.received >= 4, timeout=GUARD)
        await every.wait_count(4)
        await only_y.wait_count(3)
        await a.aclose()
        for collector in (every, only_y):
            await collector.close()
    assert every.messages == ["plain", b"\xff\xfe", "only x", "end"]
    assert only_y.messages == ["plain", b"\xff\xfe", "end"]
    assert (health.received, health.malformed, health.lost, health.topics) == (4, 1, 0, 0)


async def test_closing_ends_a_task_that_swallowed_its_first_cancellation() -> None:
    reached = asyncio.Event()

    async def stubborn() -> None:
        try:
            reached.set()
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass  # what asyncio.wait_for does on 3.11 when its write completes meanwhile
        await asyncio.Event().wait()

    task = asyncio.create_task(stubborn())
    await reached.wait()
    async with asyncio.timeout(GUARD):
        await _finish([task])
    assert task.cancelled()


async def test_a_backplane_closes_promptly_at_any_point_of_connecting() -> None:
    async with running_redis() as redis:
        for turns in range(0, 60, 2):
            hub = Hub(backplane=RedisBackplane(redis.url, hub_id=f"A{turns}"))
            await backplane_of(hub).start()
            for _ in range(turns):  # let connecting and subscribing get this far
                await asyncio.sleep(0)
            async with asyncio.timeout(GUARD):
                await hub.aclose()
            assert backplane_of(hub).health().connected is False


async def test_wait_for_gives_up_after_its_timeout() -> None:
    async with running_redis(started=False) as redis, hub_on(redis.url, "A") as a:
        with pytest.raises(TimeoutError):
            await backplane_of(a).wait_for(connected, timeout=0.05)


# -- configuration errors ---------------------------------------------------------------


def test_every_name_the_backplane_module_exports_exists() -> None:
    import wsfanout.backplane

    for name in wsfanout.backplane.__all__:
        assert hasattr(wsfanout.backplane, name), name


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"url": 6379}, r"^url=6379 must be a str$"),
        (
            {"url": "http://127.0.0.1"},
            r"^url='http://127.0.0.1' must start with redis://, rediss:// or unix://$",
        ),
        (
            {"namespace": "a:b"},
            r"^namespace='a:b' must be letters, digits, '_', '.' or '-' "
            r"\(it prefixes Redis channel names\)$",
        ),
        ({"namespace": ""}, r"^namespace='' must be letters"),
        ({"hub_id": ""}, r"^hub_id='' must be a str of 1 to 255 bytes in UTF-8$"),
        ({"hub_id": "é" * 128}, r"^hub_id='é{128}' must be a str of 1 to 255 bytes in UTF-8$"),
        ({"heartbeat": 0}, r"^heartbeat=0 must be a finite number of seconds > 0$"),
        ({"heartbeat": "1s"}, r"^heartbeat='1s' must be a number of seconds$"),
        ({"timeout": float("inf")}, r"^timeout=inf must be a finite number of seconds > 0$"),
        (
            {"min_retry_delay": 3.0, "max_retry_delay": 2.0},
            r"^min_retry_delay=3.0 must be <= max_retry_delay=2.0$",
        ),
        ({"buffer": 100}, r"^buffer=100 must be a Policy such as DropOldest\(...\)$"),
        (
            {"buffer": Disconnect(max_lag=1.0)},
            r"^buffer=Disconnect\(max_lag=1.0\) decides from snapshots, which a publish "
            r"buffer never consults; use DropOldest\(...\) or DropNewest\(...\)$",
        ),
        (
            {"buffer": ConflateByKey()},
            r"^buffer=ConflateByKey\(\) must only bound the buffer and drop when full; "
            r"use DropOldest\(...\) or DropNewest\(...\)$",
        ),
        ({"buffer": SkipToLatest()}, r"^buffer=SkipToLatest\(\) must only bound"),
        ({"buffer": Batch() | DropOldest()}, r"^buffer=Batch\(\) \| DropOldest\(\) decides from"),
    ],
)
def test_bad_options_are_refused_naming_the_option_and_value(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        RedisBackplane(**options)  # type: ignore[arg-type]
    name, value = next(iter(options.items()))
    assert (refused.value.name, refused.value.value) == (name, value)
    # Only a bad buffer, which is a policy, is a PolicyError.
    assert isinstance(refused.value, PolicyError) == (name == "buffer")


@attrs.frozen
class OnlyBound(Policy):
    """Bounds the queue but chooses no overflow rule: a subscriber would be closed."""

    def rules(self) -> Rules:
        return Rules(max_messages=3)


def test_a_buffer_with_no_rule_for_dropping_is_refused() -> None:
    with pytest.raises(PolicyError, match=r"^buffer=OnlyBound\(\) must only bound the buffer"):
        RedisBackplane(buffer=OnlyBound())


def test_the_repr_is_construction_code() -> None:
    backplane = RedisBackplane(
        "redis://h:1/0", hub_id="w1", heartbeat=0.5, buffer=DropNewest(max_messages=9)
    )
    assert repr(backplane) == (
        "RedisBackplane('redis://h:1/0', namespace='wsfanout', hub_id='w1', "
        "buffer=DropNewest(max_messages=9), heartbeat=0.5)"
    )
    assert eval(repr(backplane)).hub_id == "w1"


def test_a_backplane_serves_one_hub_only() -> None:
    backplane = RedisBackplane(hub_id="A")
    Hub(backplane=backplane)
    with pytest.raises(ConfigError, match=r"^RedisBackplane\(.*\) is already the backplane"):
        Hub(backplane=backplane)


async def test_a_closed_backplane_cannot_start_again() -> None:
    backplane = RedisBackplane(hub_id="A")
    await backplane.aclose()
    with pytest.raises(HubClosedError, match=r"^start\(\) on a closed RedisBackplane$"):
        await backplane.start()


async def test_a_lossless_message_stays_lossless_on_the_other_hubs() -> None:
    async with (
        running_redis() as redis,
        hub_on(redis.url, "A") as a,
        hub_on(redis.url, "B") as b,
        serving(b) as uri,
    ):
        for hub in (a, b):
            await backplane_of(hub).wait_for(connected, timeout=GUARD)
        # On B the subscriber's greeting starts the throttle: what follows waits behind it
        # in a queue of two that drops the oldest, so only the lossless one survives.
        b.policy = Throttle(rate=4.0) | DropOldest(max_messages=2)
        client = await Collector.connect(uri)
        a.publish("must arrive", lossless=True)
        for n in range(5):
            a.publish(f"lossy {n}")
        a.publish("last")
        await client.wait_count(2)
        stats = b.stats()
        await a.aclose()
        await b.aclose()
        await client.close()
    assert client.messages == ["must arrive", "last"]
    assert stats.dropped_oldest == 5
