"""Hubs in separate processes behind one real redis-server, with real clients on each.

Each node (redis_node.py) runs a hub and a websockets server; a node's messages are
``{"from": hub id, "n": k}`` with k = 1, 2, 3, ... The clients are the Python client
(``wsfanout.client``): they speak ``wsfanout.v1``, reconnect and resume. Each test checks
the promise of the history issue: every message reaches every client exactly once, in
order, or is reported to it with its exact range, and what clients report lost is what
the hubs counted.
"""

from __future__ import annotations

import json
from collections import defaultdict

from redis_harness import Node, Reader, nodes, running_redis

from harness.ports import free_port
from wsfanout.client import Received

CONNECTED = {"connected": True}
BATCH = 512
"""The publish script's batch: at most this many were in flight when Redis died."""


def by_stream(reader: Reader) -> dict[tuple[str | None, str], list[int]]:
    """Offsets received per (topic, epoch), in arrival order."""
    found: dict[tuple[str | None, str], list[int]] = defaultdict(list)
    for message in reader.received:
        found[(message.topic, message.epoch)].append(message.offset)
    return found


def numbers(messages: list[Received], sender: str) -> list[int]:
    decoded = [json.loads(message.data) for message in messages]
    return [m["n"] for m in decoded if m["from"] == sender]


def assert_exactly_once_or_reported(reader: Reader) -> None:
    """Within each epoch: offsets ascending, each once, and with the gap notices the
    server sent they leave no hole after the first one received (a hole the client
    found itself is a loss nobody reported)."""
    assert [g for g in reader.gaps if g.source in ("offsets", "heartbeat")] == []
    lost: dict[tuple[str, str], set[int]] = defaultdict(set)
    for gap in reader.gaps:
        for first, last in gap.ranges:
            lost[(gap.topic, gap.epoch)].update(range(first, last + 1))
    for (topic, epoch), offsets in by_stream(reader).items():
        assert offsets == sorted(set(offsets)), f"{topic}/{epoch}: out of order or twice"
        reported = lost[(topic or "", epoch)]
        assert not reported & set(offsets), f"{topic}/{epoch}: received and reported lost"
        covered = set(offsets) | reported
        assert covered >= set(range(min(offsets), max(offsets) + 1)), f"{topic}/{epoch}: a hole"


async def test_messages_published_on_either_hub_reach_every_client_numbered_alike() -> None:
    async with running_redis() as redis, nodes(redis.url, ("A", ()), ("B", ())) as (a, b):
        for node in (a, b):
            await node.wait(equals=CONNECTED)
        readers = {
            (node.hub_id, path): node.reader(path)
            for node in (a, b)
            for path in ("/", "/topic/x", "/topic/y")
        }
        for reader in readers.values():  # each got its greeting: subscribed
            await reader.wait(lambda r: len(r.events) >= 1)
        await a.publish(300)
        await b.publish(300)
        await a.publish(100, topic="x")
        await b.publish(1, topic="y")
        await b.wait(at_least={"received": 701})
        await a.wait(at_least={"received": 701})
        expected = {"/": 701, "/topic/x": 700, "/topic/y": 601}
        for (_, path), reader in readers.items():
            count = expected[path]
            await reader.wait(lambda r: len(r.received) >= count)  # noqa: B023 - awaited here
        health_a, health_b = await a.health(), await b.health()
        for reader in readers.values():
            await reader.close()
        await a.stop()
        await b.stop()

    for (_, path), reader in readers.items():
        assert len(reader.received) == expected[path]
        assert numbers(reader.received, "A") == list(
            range(1, 301 + (100 if path != "/topic/y" else 0))
        )
        assert_exactly_once_or_reported(reader)
    # Both hubs' subscribers of a path got the same numbering, in the same order.
    for path in expected:
        on_a, on_b = readers[("A", path)], readers[("B", path)]
        assert [(m.topic, m.offset, m.data) for m in on_a.received] == [
            (m.topic, m.offset, m.data) for m in on_b.received
        ]
    assert [m.offset for m in readers[("A", "/topic/x")].received if m.topic == "x"] == list(
        range(1, 101)
    )
    assert (health_a["received"], health_a["lost"], health_a["published"]) == (701, 0, 400)
    assert (health_b["received"], health_b["lost"], health_b["published"]) == (701, 0, 301)


async def test_redis_killed_mid_stream_then_restarted_loses_nothing_silently() -> None:
    specs = ("A", ("--buffer", "50", "--history", "100000")), ("B", ("--history", "100000"))
    async with running_redis() as redis, nodes(redis.url, *specs) as (a, b):
        for node in (a, b):
            await node.wait(equals=CONNECTED)
        on_a, on_b = a.reader(), b.reader()
        for reader in (on_a, on_b):
            await reader.wait(lambda r: len(r.events) >= 1)
        await a.command(op="stream", interval=0.001)
        await b.wait(at_least={"received": 100})

        await redis.kill()
        for node in (a, b):
            await node.wait(equals={"connected": False})
        # A keeps publishing while Redis is away; its buffer of 50 overflows.
        forwarded = (await a.health())["forwarded"]
        await a.wait(at_least={"forwarded": forwarded + 300})

        await redis.start()  # empty: every stream starts a new epoch
        for node in (a, b):
            await node.wait(equals=CONNECTED, at_least={"reconnects": 1})
        received = (await b.health())["received"]
        await b.wait(at_least={"received": received + 100})  # the stream flows again
        total = (await a.command(op="stop"))["n"]
        await a.wait(equals={"buffered": 0})
        for reader in (on_a, on_b):
            await reader.wait(
                lambda r: bool(r.received) and numbers(r.received[-1:], "A") == [total]
            )
        health_a, health_b = await a.health(), await b.health()
        for reader in (on_a, on_b):
            await reader.close()
        await a.stop()
        await b.stop()

    for reader, health in ((on_a, health_a), (on_b, health_b)):
        assert_exactly_once_or_reported(reader)
        epochs = list(dict.fromkeys(m.epoch for m in reader.received))
        assert len(epochs) == 2, epochs
        old = [m for m in reader.received if m.epoch == epochs[0]]
        new = [m for m in reader.received if m.epoch == epochs[1]]
        (change,) = [g for g in reader.gaps if g.source == "epoch"]
        assert change.previous is not None
        assert (change.previous.epoch, change.epoch, change.count) == (epochs[0], epochs[1], None)
        assert change.previous.offset == reader.received[len(old) - 1].offset
        # Nothing was lost that a history held: no known loss, on either side.
        assert reader.client.stats().lost == health["lost"] == 0
        assert health["epoch_changes"] == reader.client.stats().epoch_changes == 1

        # The new epoch: every message A published after the restart, from offset 1.
        assert [m.offset for m in new] == list(range(1, len(new) + 1))
        sent_new = numbers(new, "A")
        assert sent_new == list(range(sent_new[0], total + 1))
        # Between the epochs: what A's buffer dropped, and at most the batch in flight.
        sent_old = numbers(old, "A")
        assert sent_old == list(range(sent_old[0], sent_old[-1] + 1))
        missing = sent_new[0] - sent_old[-1] - 1
        assert health_a["dropped"] - BATCH <= missing <= health_a["dropped"] + BATCH
        assert missing >= 0 or -missing <= BATCH  # a batch applied twice, across epochs
    assert health_a["dropped"] >= 250
    assert health_a["forwarded"] == total
    assert health_a["published"] + health_a["dropped"] + health_a["buffered"] == total


async def test_a_hub_process_restarted_resumes_its_clients_from_redis() -> None:
    port = free_port()
    specs = ("A", ("--history", "100000")), ("B", ("--history", "100000", "--port", str(port)))
    async with running_redis() as redis, nodes(redis.url, *specs) as (a, b):
        for node in (a, b):
            await node.wait(equals=CONNECTED)
        readers = [b.reader(max_delay=0.1) for _ in range(20)]
        for reader in readers:
            await reader.wait(lambda r: len(r.events) >= 1)
        await a.command(op="stream", interval=0.002)
        for reader in readers:
            await reader.wait(lambda r: len(r.received) >= 20)

        await b.kill()  # the process vanishes; its clients reconnect to its successor
        await a.wait(at_least={"received": (await a.health())["received"] + 200})
        successor = await Node.start(redis.url, "B", "--history", "100000", "--port", str(port))
        try:
            await successor.wait(equals=CONNECTED)
            for reader in readers:
                await reader.wait(lambda r: r.client.stats().reconnects >= 1)
            total = (await a.command(op="stop"))["n"]
            for reader in readers:
                await reader.wait(
                    lambda r: bool(r.received) and numbers(r.received[-1:], "A") == [total]
                )
            health = await successor.health()
            stats = await successor.stats()
            for reader in readers:
                await reader.close()
        finally:
            await successor.stop()
        await a.stop()

    for reader in readers:
        assert_exactly_once_or_reported(reader)
        sent = numbers(reader.received, "A")
        assert sent == list(range(sent[0], total + 1)), "a message missed or repeated"
        assert reader.gaps == []
        assert reader.client.stats().lost == 0
    assert stats["resumed"] == len(readers)
    assert health["resumes"] == len(readers)
    assert 1 <= health["reads"] <= len(readers)


async def test_clients_away_while_publishing_get_all_they_missed_or_its_exact_range() -> None:
    async with running_redis() as redis, nodes(redis.url, ("A", ("--history", "100"))) as (a,):
        await a.wait(equals=CONNECTED)
        near, far = a.reader(), a.reader()
        for reader in (near, far):
            await reader.wait(lambda r: len(r.events) >= 1)
        await a.command(op="stream", interval=0.002)
        for reader in (near, far):
            await reader.wait(lambda r: len(r.received) >= 10)
        # Both go away; one comes back within the history, the other long after.
        (near_at,), (far_at,) = near.client.positions(), far.client.positions()
        for reader in (near, far):
            await reader.close()
        start = (await a.health())["received"]
        await a.wait(at_least={"received": start + 50})
        near = a.reader(since=[near_at])
        await a.wait(at_least={"received": start + 400})
        far = a.reader(since=[far_at])
        total = (await a.command(op="stop"))["n"]
        for reader in (near, far):
            await reader.wait(
                lambda r: bool(r.received) and numbers(r.received[-1:], "A") == [total]
            )
        stats = await a.stats()
        for reader in (near, far):
            await reader.close()
        await a.stop()

    assert near.gaps == []
    assert near.received[0].offset == near_at.offset + 1
    (gap,) = far.gaps
    assert (gap.source, dict(gap.reasons)) == ("notice", {"history": gap.count})
    assert gap.ranges[0][0] == far_at.offset + 1
    assert far.received[0].offset == gap.ranges[-1][1] + 1
    for reader in (near, far):
        assert_exactly_once_or_reported(reader)
        assert numbers(reader.received, "A")[-1] == total
    assert stats["history_missed"] == gap.count == far.client.stats().lost
    assert stats["resumed"] == 2
