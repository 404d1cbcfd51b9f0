"""Ladders, reducers and the drain rate with a real websockets server and real clients.

Default socket options: to put a client behind, a test publishes more than the kernel
buffers for a connection whose client does not read (about 4 MB on Linux loopback),
then lets the client read.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator

import pytest
from websockets.asyncio.server import serve

from wsfanout import Hub, LevelStep, Subscriber
from wsfanout.policies import (
    Above,
    Adaptive,
    Below,
    ConflateByKey,
    DropOldest,
    Escalate,
    Level,
    SkipToLatest,
)

from .wsnet import Net, index_of, numbered

FILLER = 32 * 1024
"""Bytes per filler message."""
BACKLOG = 8 * 1024 * 1024
"""Bytes of filler published to a client that does not read: more than the kernel takes."""
GUARD = 30.0


@pytest.fixture
async def stepping(
    loop_guard: None,
) -> AsyncIterator[tuple[Net, list[tuple[Subscriber, LevelStep]]]]:
    """A hub that records every step its subscribers' ladders take, on a real server."""
    steps: list[tuple[Subscriber, LevelStep]] = []
    network = Net(Hub(close_timeout=0.5, on_step=lambda sub, step: steps.append((sub, step))))
    server = await serve(network.handler, "127.0.0.1", 0, close_timeout=1.0)
    network.attach_server(server)
    try:
        yield network, steps
    finally:
        await network.shutdown()


def fall_behind(hub: Hub, first: int = 0) -> int:
    """Publish filler until the subscriber queues; return the next index."""
    index = first
    for _ in range(BACKLOG // FILLER):
        hub.publish(numbered(index, FILLER))
        index += 1
    return index


def is_notice(message: object) -> bool:
    return isinstance(message, str) and message.startswith('{"type":"level"')


async def test_an_escalated_client_is_told_of_each_step_and_so_is_the_application(
    stepping: tuple[Net, list[tuple[Subscriber, LevelStep]]],
) -> None:
    net, steps = stepping
    ladder = Escalate(
        levels=[
            Level(),
            Level(
                SkipToLatest(),
                up=Above("queued_messages", 5),
                down=Below("queued_messages", 1),
                name="latest",
            ),
        ],
        hold=0.2,
        announce=True,
    )
    client = await net.connect("phone", policy=ladder, read=False)
    last = fall_behind(net.hub)
    for index in range(last, last + 20):
        net.hub.publish(numbered(index, 64))
    newest = last + 19
    sub = client.sub
    assert sub.stats().level == 1  # behind: it skipped to the latest
    client.read()
    async with asyncio.timeout(GUARD):
        await client.until(
            lambda: sum(map(is_notice, client.messages)) == 2, "the steps up and down"
        )
    notices = [json.loads(m) for m in client.messages if is_notice(m)]
    assert notices == [
        {"type": "level", "level": 1, "name": "latest", "from": 0},
        {"type": "level", "level": 0, "name": "normal", "from": 1},
    ]
    data = [index_of(m) for m in client.messages if not is_notice(m)]
    assert data == sorted(set(data))  # in order, no duplicates, across the steps
    up = client.messages.index(next(m for m in client.messages if is_notice(m)))
    assert index_of(client.messages[up + 1]) == newest  # the latest follows the notice
    assert [(s, (step.previous, step.level)) for s, step in steps] == [
        (sub, (0, 1)),
        (sub, (1, 0)),
    ]
    stats = sub.stats()
    assert (stats.level, stats.steps_up, stats.steps_down) == (0, 1, 1)
    assert stats.skipped > 0


async def test_the_drain_rate_of_a_real_connection_is_measured_as_it_catches_up(
    net: Net,
) -> None:
    client = await net.connect("slow", policy=DropOldest(), read=False)
    fall_behind(net.hub)  # the kernel's buffers full, then the queue (1 MiB, the oldest go)
    assert client.sub.stats().queued_messages > 0
    assert client.sub.stats().drain_rate is None  # never waited for a drain yet
    client.read()
    async with asyncio.timeout(GUARD):
        await client.until(lambda: client.sub.stats().drain_rate is not None, "a drain rate")
        await client.drained()
    rate = client.sub.stats().drain_rate
    assert rate is not None
    assert rate > 0


async def test_a_reducer_folds_what_a_slow_client_missed_into_what_it_gets(net: Net) -> None:
    # DropOldest makes room for the updates by dropping the filler published first.
    policy = ConflateByKey(reduce="sum") | DropOldest()
    client = await net.connect("counter", policy=policy, read=False)
    fall_behind(net.hub)
    for _ in range(100):
        net.hub.publish(json.dumps({"views": 1, "page": "home"}), key="home")
    client.read()
    async with asyncio.timeout(GUARD):
        await client.until(
            lambda: (
                client.sub.stats().queued_messages == 0
                and len(client.messages) == client.sub.stats().sent
            ),
            "everything written",
        )
    counts = [json.loads(m) for m in client.messages if isinstance(m, str) and m[0] == "{"]
    assert sum(count["views"] for count in counts) == 100  # every update, folded
    assert len(counts) < 100
    assert all(count["page"] == "home" for count in counts)
    assert client.sub.stats().conflated == 100 - len(counts)


async def test_adaptive_gives_a_client_that_keeps_up_everything_in_order(net: Net) -> None:
    client = await net.connect("desk", policy=ConflateByKey() | Adaptive())
    for index in range(500):
        net.hub.publish(numbered(index, 200), key=f"k{index % 50}")
    async with asyncio.timeout(GUARD):
        await client.until(lambda: len(client.messages) == 500, "every message")
    assert client.indices() == list(range(500))
    stats = client.sub.stats()
    assert (stats.level, stats.steps_up, stats.conflated) == (0, 0, 0)


async def test_an_on_step_that_raises_is_logged_and_nothing_else_breaks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(subscriber: Subscriber, step: LevelStep) -> None:
        raise RuntimeError("the application's bug")

    network = Net(Hub(close_timeout=0.5, on_step=broken))
    server = await serve(network.handler, "127.0.0.1", 0, close_timeout=1.0)
    network.attach_server(server)
    try:
        ladder = Escalate(
            levels=[Level(), Level(SkipToLatest(), up=Above("queued_messages", 5))], hold=0.2
        )
        client = await network.connect("app", policy=ladder, read=False)
        last = fall_behind(network.hub)
        network.hub.publish(numbered(last, 64))
        with caplog.at_level(logging.ERROR, logger="wsfanout"):
            client.read()
            async with asyncio.timeout(GUARD):
                await client.until(
                    lambda: bool(client.messages) and index_of(client.messages[-1]) == last,
                    "the newest message",
                )
        assert "on_step raised for <Subscriber" in caplog.text
        assert "RuntimeError: the application's bug" in caplog.text
        assert client.sub.stats().steps_up == 1
    finally:
        await network.shutdown()
