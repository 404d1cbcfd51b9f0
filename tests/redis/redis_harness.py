"""What the Redis tests run on: a real redis-server, hub processes and real clients.

Everything here waits on events (a line printed by a process, a count reached, a
reply to a command), each under a timeout that only guards against a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from redis_node import subscribe_by_path
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from harness.redis_server import AsyncRedisServer
from wsfanout import Hub, select_subprotocol
from wsfanout.backplane import BackplaneHealth, RedisBackplane
from wsfanout.client import Client, Gap, Received

GUARD = 30.0
"""Seconds after which a wait is a hang: generous, never the expected duration."""

NODE = Path(__file__).with_name("redis_node.py")


@contextlib.asynccontextmanager
async def running_redis(*, started: bool = True) -> AsyncIterator[AsyncRedisServer]:
    """A redis-server on a free port, stopped afterwards (``started=False``: not yet)."""
    server = AsyncRedisServer()
    if started:
        await server.start()
    try:
        yield server
    finally:
        await server.stop()


class Collector:
    """A real websockets client that records every message it receives, in order."""

    def __init__(self, websocket: ClientConnection, pid: int) -> None:
        self.websocket = websocket
        self.pid = pid
        """The server process that subscribed us."""
        self.messages: list[str | bytes] = []
        self._target = 0
        self._reached = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    @classmethod
    async def connect(cls, uri: str) -> Collector:
        """Connect and return once the server has subscribed us (it says "hello <pid>")."""
        websocket = await connect(uri, compression=None)
        async with asyncio.timeout(GUARD):
            hello = await websocket.recv()
        assert isinstance(hello, str), hello
        assert hello.startswith("hello "), hello
        return cls(websocket, int(hello.split()[1]))

    async def _run(self) -> None:
        try:
            async for message in self.websocket:
                self.messages.append(message)
                if len(self.messages) >= self._target:
                    self._reached.set()
        except ConnectionClosed:
            pass
        self._reached.set()  # the connection ended: waiting longer cannot help

    async def wait_count(self, count: int) -> list[str | bytes]:
        """Wait until ``count`` messages arrived; fails if the connection ends first."""
        async with asyncio.timeout(GUARD):
            while len(self.messages) < count:
                self._target = count
                self._reached.clear()
                if self._task.done():
                    break
                await self._reached.wait()
        assert len(self.messages) >= count, f"{len(self.messages)} < {count} messages"
        return self.messages

    def numbers(self, sender: str) -> list[int]:
        """The sequence numbers of the messages ``sender`` published, as received."""
        decoded = [json.loads(message) for message in self.messages]
        return [message["n"] for message in decoded if message["from"] == sender]

    async def close(self) -> None:
        await self.websocket.close()
        await self._task


class Node:
    """A hub with a Redis backplane and a websockets server, in its own process.

    Driven through a control connection (see redis_node.py); it exits when its
    standard input closes, so it never outlives the test.
    """

    def __init__(self, process: asyncio.subprocess.Process, port: int, hub_id: str) -> None:
        self.process = process
        self.port = port
        self.hub_id = hub_id
        self.uri = f"ws://127.0.0.1:{port}"
        self._control: ClientConnection | None = None

    @classmethod
    async def start(cls, redis_url: str, hub_id: str, *options: str) -> Node:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(NODE),
            *("--redis", redis_url, "--hub-id", hub_id, *options),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        async with asyncio.timeout(GUARD):
            line = await process.stdout.readline()
        if not line.startswith(b"listening "):
            process.kill()
            await process.wait()
            raise RuntimeError(f"node {hub_id} did not start: {line!r}")
        node = cls(process, int(line.split()[1]), hub_id)
        node._control = await connect(f"{node.uri}/control", compression=None)
        async with asyncio.timeout(GUARD):
            assert await node._control.recv() == "ready"
        return node

    async def command(self, **command: Any) -> dict[str, Any]:
        assert self._control is not None
        await self._control.send(json.dumps(command))
        async with asyncio.timeout(GUARD + 5):
            reply: dict[str, Any] = json.loads(await self._control.recv())
        if reply["op"] == "error":
            raise AssertionError(f"{self.hub_id}: {reply['error']}")
        return reply

    async def health(self) -> dict[str, Any]:
        return (await self.command(op="health"))["health"]  # type: ignore[no-any-return]

    async def wait(self, **condition: Any) -> dict[str, Any]:
        """Wait until the node's backplane health meets ``condition`` (see redis_node.py)."""
        reply = await self.command(op="wait", timeout=GUARD, **condition)
        return reply["health"]  # type: ignore[no-any-return]

    async def publish(self, count: int, topic: str | None = None) -> dict[str, Any]:
        return await self.command(op="publish", count=count, topic=topic)

    async def stats(self) -> dict[str, Any]:
        """The hub's statistics (``Hub.stats()``: resumed, history_missed, ...)."""
        return (await self.command(op="health"))["stats"]  # type: ignore[no-any-return]

    def reader(self, path: str = "/", **options: Any) -> Reader:
        """A Python client of this node (``wsfanout.client``), read into a list."""
        return Reader.connect(f"{self.uri}{path}", **options)

    async def kill(self) -> None:
        """SIGKILL: the hub process vanishes, its clients' connections break."""
        self.process.kill()
        await self.process.wait()
        if self._control is not None:
            self._control.transport.abort()

    async def client(self, path: str = "/") -> Collector:
        return await Collector.connect(f"{self.uri}{path}")

    async def stop(self, *, check: bool = True) -> None:
        """Close standard input: the node closes its hub (clients get 1001) and exits."""
        if self._control is not None:
            await self._control.close()
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            async with asyncio.timeout(GUARD):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        if check:
            assert self.process.returncode == 0, f"{self.hub_id} exited {self.process.returncode}"


@contextlib.asynccontextmanager
async def nodes(redis_url: str, *specs: tuple[str, tuple[str, ...]]) -> AsyncIterator[list[Node]]:
    """Start one node per ``(hub_id, options)`` and stop them all afterwards."""
    started: list[Node] = []
    try:
        for hub_id, options in specs:
            started.append(await Node.start(redis_url, hub_id, *options))
        yield started
    finally:
        for node in started:
            if node.process.returncode is None:
                await node.stop(check=False)


@contextlib.asynccontextmanager
async def serving(hub: Hub) -> AsyncIterator[str]:
    """Serve ``hub`` on a free port of 127.0.0.1; yields its ws:// URI."""

    async def handler(websocket: ServerConnection) -> None:
        await subscribe_by_path(hub, websocket)

    async with serve(
        handler, "127.0.0.1", 0, compression=None, select_subprotocol=select_subprotocol
    ) as server:
        yield f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}"


@contextlib.asynccontextmanager
async def hub_on(url: str, hub_id: str, **options: Any) -> AsyncIterator[Hub]:
    """A started hub with a Redis backplane (quick heartbeats and retries), closed after."""
    backplane = RedisBackplane(url, hub_id=hub_id, heartbeat=0.1, max_retry_delay=0.2, **options)
    hub = Hub(backplane=backplane, close_timeout=2.0)
    await backplane.start()
    try:
        yield hub
    finally:
        await hub.aclose()


def backplane_of(hub: Hub) -> RedisBackplane:
    backplane = hub.backplane
    assert isinstance(backplane, RedisBackplane)
    return backplane


async def wait_health(hub: Hub, predicate: Callable[[BackplaneHealth], bool]) -> BackplaneHealth:
    return await backplane_of(hub).wait_for(predicate, timeout=GUARD)


class Reader:
    """A :class:`~wsfanout.client.Client` read by a task into a list of events, so tests
    wait on counts of what arrived."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.events: list[Received | Gap] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    @classmethod
    def connect(cls, uri: str, **options: Any) -> Reader:
        options.setdefault("min_delay", 0.02)
        options.setdefault("max_delay", 0.2)
        return cls(Client(uri, **options))

    async def _run(self) -> None:
        async for event in self.client:
            self.events.append(event)
            self._changed.set()
        self._changed.set()

    @property
    def received(self) -> list[Received]:
        """What arrived of the streams (the "hello" greeting, in no stream, left out)."""
        return [e for e in self.events if isinstance(e, Received) and e.offset]

    @property
    def gaps(self) -> list[Gap]:
        return [e for e in self.events if isinstance(e, Gap)]

    def payloads(self) -> list[str | bytes]:
        return [e.data for e in self.received]

    def accounted(self) -> int:
        """Messages received or reported lost with a count."""
        return len(self.received) + sum(g.count or 0 for g in self.gaps)

    async def wait(self, condition: Callable[[Reader], bool]) -> None:
        async with asyncio.timeout(GUARD):
            while not condition(self):
                if self._task.done():
                    self._task.result()
                    raise AssertionError("the client ended before the condition held")
                self._changed.clear()
                await self._changed.wait()

    async def close(self) -> None:
        await self.client.close()
        await self._task
