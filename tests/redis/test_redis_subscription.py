"""The subscribed connection, read raw: what it does when the bytes on it are not RESP,
and when Redis refuses it, on a real redis-server (behind a proxy that can inject bytes
into what Redis sends)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import pytest
from redis_harness import GUARD, Reader, hub_on, running_redis, serving, wait_health

from harness.ports import free_port
from harness.redis_server import AsyncRedisServer
from wsfanout import History
from wsfanout._backplane.subscription import Subscription


class Proxy:
    """A TCP proxy in front of Redis on 127.0.0.1: ``inject()`` writes bytes to the
    clients of the connections that subscribed to a pattern, as if Redis sent them;
    while ``refusing``, new connections are closed at once."""

    def __init__(self, redis: AsyncRedisServer) -> None:
        self.redis = redis
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.refusing = False
        self.subscribed: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    def inject(self, data: bytes) -> None:
        assert self.subscribed, "no connection has subscribed through the proxy"
        for client in self.subscribed:
            client.write(data)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.close()
            return
        host, port = self.redis.url.removeprefix("redis://").split("/")[0].split(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, watch=writer), self._pump(up_reader, writer)
            )
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            if writer in self.subscribed:
                self.subscribed.remove(writer)
            for end in (writer, up_writer):
                end.close()

    async def _pump(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        watch: asyncio.StreamWriter | None = None,
    ) -> None:
        while data := await source.read(65536):
            if watch is not None and b"PSUBSCRIBE" in data and watch not in self.subscribed:
                self.subscribed.append(watch)
            sink.write(data)
            await sink.drain()
        sink.close()


@contextlib.asynccontextmanager
async def proxy_to(redis: AsyncRedisServer) -> AsyncIterator[Proxy]:
    proxy = Proxy(redis)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def test_bytes_that_are_not_resp_drop_the_subscription_then_it_repairs_every_topic(
    caplog: pytest.LogCaptureFixture,
) -> None:
    history = History(max_messages=100)
    async with (
        running_redis() as redis,
        proxy_to(redis) as proxy,
        hub_on(redis.url, "A", history=history) as a,
        hub_on(proxy.url, "B", history=history) as b,
        serving(b) as uri,
    ):
        for hub in (a, b):
            await wait_health(hub, lambda h: h.connected)
        readers = {topic: Reader.connect(f"{uri}/topic/{topic}") for topic in ("x", "y")}
        for reader in readers.values():
            await reader.wait(lambda r: len(r.events) == 1)  # the hello: subscribed
        for topic in readers:
            a.publish(f"{topic}1", topic=topic)
        for reader in readers.values():
            await reader.wait(lambda r: len(r.received) == 1)
        proxy.refusing = True  # B stays away while A publishes
        with caplog.at_level(logging.WARNING, logger="wsfanout.backplane"):
            proxy.inject(b"!garbage\r\n")
            await wait_health(b, lambda h: not h.connected)
        for n in (2, 3):
            for topic in readers:
                a.publish(f"{topic}{n}", topic=topic)
        await wait_health(a, lambda h: h.received == 6)
        proxy.refusing = False
        health = await wait_health(b, lambda h: h.connected and h.received == 6)
        for reader in readers.values():
            await reader.wait(lambda r: len(r.received) == 3)
            await reader.close()
    for topic, reader in readers.items():
        assert [(m.offset, m.data) for m in reader.received] == [
            (n, f"{topic}{n}") for n in (1, 2, 3)
        ]
        assert reader.gaps == []
    assert (health.reconnects, health.repaired, health.lost, health.malformed) == (1, 4, 0, 0)
    (warning,) = [r.getMessage() for r in caplog.records if "not RESP" in r.getMessage()]
    assert warning.startswith("B read bytes that are not RESP on its subscribed connection (")
    assert "starts with b'!', not an array (*), push (>), simple string (+) or error (-)); " in (
        warning
    )
    assert warning.endswith("reconnecting")


async def test_a_subscription_redis_refuses_names_the_command_and_the_reason() -> None:
    async with running_redis() as redis:
        url = redis.url.replace("redis://", "redis://nobody:wrong@")
        with pytest.raises(ConnectionError, match=r"^Redis refused AUTH: WRONGPASS "):
            await Subscription.open(
                url,
                client_name="test",
                patterns=(b"p:*",),
                channels=(),
                on_message=lambda *_: None,
                timeout=GUARD,
            )


async def test_a_subscription_confirms_hands_over_messages_and_answers_pings() -> None:
    got: list[tuple[bytes, bytes]] = []

    def on_message(channel: bytes, buffer: bytearray, _: memoryview, start: int, end: int) -> None:
        got.append((channel, bytes(buffer[start:end])))

    async with running_redis() as redis:
        subscription = await Subscription.open(
            redis.url,
            client_name="test",
            patterns=(b"p:*",),
            channels=(b"plain",),
            on_message=on_message,
            hold=frozenset({"psubscribe"}),
            timeout=GUARD,
        )
        try:
            confirmed = await subscription.reply(GUARD)
            assert confirmed is not None
            assert (confirmed.kind, confirmed.name, confirmed.count) == ("psubscribe", b"p:*", 1)
            subscription.release()
            confirmed = await subscription.reply(GUARD)
            assert confirmed is not None
            assert (confirmed.kind, confirmed.name, confirmed.count) == ("subscribe", b"plain", 2)
            reader, writer = await asyncio.open_connection("127.0.0.1", redis.port)
            writer.write(b"PUBLISH p:a one\r\nPUBLISH plain two\r\nPUBLISH other three\r\n")
            # Answered: Redis has queued the messages for the subscription already.
            assert await reader.readexactly(12) == b":1\r\n:1\r\n:0\r\n"
            writer.close()
            subscription.ping()
            pong = await subscription.reply(GUARD)  # it comes after them
        finally:
            subscription.close()
    assert pong is not None
    assert (pong.kind, pong.name) == ("pong", b"")
    assert got == [(b"p:a", b"one"), (b"plain", b"two")]
