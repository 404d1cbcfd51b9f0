"""Clients come and go, the hub closes, bad input is refused: the others never notice."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from wsfanout import NEUTRAL, Decision, HubClosedError, Snapshot, SubscriberStats, as_policy
from wsfanout.policies import Disconnect, DropOldest

from .wsnet import Client, Net, index_of, numbered, relay_tasks

GUARD = 20.0


def accounted(stats: SubscriberStats) -> bool:
    return stats.offered == stats.sent + stats.dropped + stats.queued_messages


async def test_aclose_with_a_stalled_client_finishes_within_its_timeout(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        fast = [await net.connect(f"fast{i}", policy=DropOldest(max_messages=64)) for i in range(2)]
        stalled = await net.connect("stalled", policy=DropOldest(max_messages=64), stalled=True)
        for i in range(300):
            net.hub.publish(numbered(i, 512))
        assert stalled.sub.stats().queued_messages > 0
        for client in fast:
            await client.received(300)

        loop = asyncio.get_running_loop()
        start = loop.time()
        async with asyncio.timeout(5.0):
            await net.hub.aclose(code=1001, timeout=0.5)
        took = loop.time() - start

        assert len(net.hub) == 0
        for client in fast:
            await client.ended()
            assert client.close_code == 1001
            assert client.indices() == list(range(300))
        stats = await stalled.route.finished()
        assert stats.close is not None
        assert (stats.close.code, stats.close.cause) == (1001, "hub closed")
        assert stats.disconnected > 0
        assert accounted(stats)
        assert net.hub.stats().closed_by_policy == 0
        assert relay_tasks() == []
        # The stalled client cannot finish the closing handshake: it is aborted once its
        # 0.5 s are up, and nothing else holds the shutdown (the slack absorbs a loaded
        # machine's scheduling, never a second close timeout).
        assert 0.5 - 0.01 <= took < 0.5 + 0.4, took


async def test_publish_after_aclose_raises_hub_closed_error(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        client = await net.connect("reader")
        await net.hub.aclose()
        await client.ended()
        with pytest.raises(HubClosedError, match=r"^publish\(\) on a closed hub$"):
            net.hub.publish("too late")
        assert client.messages == []


async def test_clients_that_vanish_mid_stream_do_not_disturb_the_others(net: Net) -> None:
    policy = DropOldest(max_messages=64)
    total, per_round = 1200, 40
    async with asyncio.timeout(GUARD):
        fast = [await net.connect(f"fast{i}", policy=policy) for i in range(2)]
        aborted = await net.connect("aborted", policy=policy)
        half_closed = await net.connect("half-closed", policy=policy)
        stalled = await net.connect("stalled-aborted", policy=policy, stalled=True)
        vanishing = [aborted, half_closed, stalled]

        published = 0
        for round_ in range(total // per_round):
            for _ in range(per_round):
                net.hub.publish(numbered(published, 512))
                published += 1
            if round_ == 5:
                # Gone without a closing handshake: a TCP reset, a FIN, a reset with a full queue.
                aborted.ws.transport.abort()
                half_closed.ws.transport.close()
                assert stalled.sub.stats().queued_messages > 0
                stalled.ws.transport.abort()
            for client in fast:
                await client.received(published)

        for client in vanishing:
            stats = await client.route.finished()
            assert stats.queued_messages == 0
            assert accounted(stats), stats
        assert len(net.hub) == 2
        assert set(net.hub.subscribers) == {client.sub for client in fast}
        assert relay_tasks() == []
        for client in fast:
            assert client.indices() == list(range(total))
        hub_stats = net.hub.stats()
        assert hub_stats.subscribers == 2
        assert hub_stats.offered == hub_stats.sent + hub_stats.dropped + hub_stats.queued_messages
        assert hub_stats.disconnected > 0


async def test_subscribers_join_and_leave_during_a_broadcast(net: Net) -> None:
    policy = DropOldest(max_messages=256)
    total, per_round = 1500, 25
    async with asyncio.timeout(GUARD):
        anchor = await net.connect("anchor", policy=policy)
        joining: list[asyncio.Task[Client]] = []
        leavers: list[Client] = []
        published = 0
        for round_ in range(total // per_round):
            for _ in range(per_round):
                net.hub.publish(numbered(published))
                published += 1
            if round_ % 6 == 1:
                # Connects while publishing goes on; it joins whenever its handshake ends.
                joining.append(asyncio.create_task(net.connect(f"joiner{round_}", policy=policy)))
            if round_ % 6 == 3:
                leaver = await net.connect(f"leaver{round_}", policy=policy, read=False)
                leaver.read(leave_after=50)
                leavers.append(leaver)
            await anchor.received(published)
        joiners = await asyncio.gather(*joining)
        for client in joiners:
            await client.received(1)
            await client.latest(lambda m: index_of(m) == total - 1, "the last message")
        for client in leavers:
            await client.ended()
            stats = await client.route.finished()
            assert accounted(stats)

        assert anchor.indices() == list(range(total))
        for client in [*joiners, *leavers]:
            received = client.indices()
            # Whenever it joined, a client receives every message from then on, in order.
            assert received == list(range(received[0], received[0] + len(received))), client
        for client in leavers:
            assert len(client.messages) == 50
            assert client.close_code == 1000
        assert len(net.hub) == 1 + len(joiners)
        assert set(net.hub.subscribers) == {anchor.sub, *(client.sub for client in joiners)}


@pytest.mark.parametrize(
    ("message", "name"), [(42, "int"), (None, "NoneType"), ({"a": 1}, "dict"), (1.5, "float")]
)
async def test_publishing_a_non_str_or_bytes_raises_type_error_and_affects_nobody(
    net: Net, message: object, name: str
) -> None:
    async with asyncio.timeout(GUARD):
        client = await net.connect("reader")
        net.hub.publish("before")
        with pytest.raises(TypeError, match=rf"^message must be str or bytes-like, not {name}$"):
            net.hub.publish(message)  # type: ignore[arg-type]
        net.hub.publish(b"after")
        await client.received(2)
        assert client.messages == ["before", b"after"]
        stats = client.sub.stats()
        assert (stats.offered, stats.sent) == (2, 2)


async def test_the_readme_example_runs_as_written(net: Net) -> None:
    # net's handler is the README's: hub.serve(websocket, policy=...) with the route's policy.
    async with asyncio.timeout(GUARD):
        clients = [
            await net.connect(
                f"browser{i}", policy=DropOldest(max_messages=256) | Disconnect(max_lag=5.0)
            )
            for i in range(3)
        ]
        for n in itertools.islice(itertools.count(), 100):
            assert net.hub.publish(json.dumps({"tick": n})) == 3
            for client in clients:
                await client.received(n + 1)
        for client in clients:
            assert [json.loads(m)["tick"] for m in client.texts()] == list(range(100))


async def test_messages_larger_than_the_write_limit_arrive_intact_and_in_order(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        fast = await net.connect("fast", policy=DropOldest(max_bytes=4 * 2**20))
        _, high = fast.route.write_limits()
        big = [(f"{i:03d}" * 70_000) if i % 2 else bytes([i]) * (high * 3 + i) for i in range(20)]
        for message in big:
            net.hub.publish(message)
        await fast.received(len(big))
        assert fast.messages == big
        stats = fast.sub.stats()
        assert (stats.sent, stats.dropped) == (20, 0)


def broken_policy(snapshot: Snapshot) -> Decision:
    raise RuntimeError("a bug in a user's policy")


async def test_a_policy_that_raises_costs_its_subscriber_alone_and_is_logged_once(
    net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    async with asyncio.timeout(GUARD):
        good = await net.connect("good")
        broken = await net.connect("broken", policy=as_policy(broken_policy))
        for i in range(100):
            assert net.hub.publish(numbered(i)) in {1, 2}
        await good.received(100)
        assert good.indices() == list(range(100))
        await broken.ended()
        assert broken.messages == []
        assert broken.close_code == 1006
        stats = await broken.route.finished()
        # Refused from the failure on, and the message whose delivery raised is lost
        # with the subscriber: the counts still add up.
        assert (stats.offered, stats.sent, stats.disconnected) == (100, 0, 100)
        assert stats.offered == stats.sent + stats.dropped + stats.queued_messages
        assert len(net.hub) == 1
        failures = [r for r in caplog.records if r.name == "wsfanout"]
        assert [r.getMessage() for r in failures] == [
            f"delivery to {broken.sub!r} failed; aborting its connection"
        ]
        assert failures[0].exc_info is not None
        assert isinstance(failures[0].exc_info[1], RuntimeError)
        caplog.clear()  # expected: the loop guard must not count it


def fails_when_behind(snapshot: Snapshot) -> Decision:
    if snapshot.queued_messages >= 2:
        raise RuntimeError("a bug on the slow path of a user's policy")
    return NEUTRAL


async def test_a_policy_that_raises_in_the_relay_costs_its_subscriber_alone(
    net: Net, caplog: pytest.LogCaptureFixture
) -> None:
    async with asyncio.timeout(GUARD):
        good = await net.connect("good")
        broken = await net.connect("broken", policy=as_policy(fails_when_behind), stalled=True)
        for i in range(300):
            net.hub.publish(numbered(i, 512))
        await good.received(300)
        stats = await broken.route.finished()
        assert stats.queued_messages == 0
        assert accounted(stats)
        assert relay_tasks() == []
        assert len(net.hub) == 1
        net.hub.publish(numbered(300, 512))
        await good.received(301)
        assert good.indices() == list(range(301))
        assert [r.getMessage() for r in caplog.records if r.name == "wsfanout"] == [
            f"relay failed for {broken.sub!r}; aborting the connection"
        ]
        caplog.clear()  # expected: the loop guard must not count it


async def test_bytes_like_messages_are_sent_as_binary_and_copied_once(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        fast = await net.connect("fast")
        stalled = await net.connect("stalled", policy=DropOldest(max_messages=4), stalled=True)
        buffer = bytearray(b"a" * 512)
        for i in range(300):
            buffer[:3] = f"{i:03d}".encode()
            net.hub.publish(buffer if i % 2 else memoryview(buffer))
        buffer[:] = b"z" * 512  # a caller reusing its buffer changes nothing queued
        stalled.read()
        await stalled.drained()
        await fast.received(300)
        expected = [f"{i:03d}".encode() + b"a" * 509 for i in range(300)]
        assert fast.messages == expected
        assert stalled.messages[-4:] == expected[-4:]


async def test_a_hundred_clients_each_receive_every_message_in_order(net: Net) -> None:
    async with asyncio.timeout(GUARD):
        clients = await asyncio.gather(
            *(net.connect(f"c{i}", policy=DropOldest(max_messages=64)) for i in range(100))
        )
        assert len(net.hub) == 100
        for round_ in range(10):
            for i in range(20):
                assert net.hub.publish(numbered(round_ * 20 + i)) == 100
            for client in clients:
                await client.received((round_ + 1) * 20)
        for client in clients:
            assert client.indices() == list(range(200))
        stats = net.hub.stats()
        assert (stats.sent, stats.dropped, stats.subscribers) == (20_000, 0, 100)
