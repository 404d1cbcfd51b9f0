"""One hub process for the Redis tests: a websockets server and a Redis backplane.

Usage: python redis_node.py --redis URL --hub-id NAME [--heartbeat S] [--buffer N]
                             [--drop-newest] [--history N] [--port P]

Prints ``listening PORT`` once it serves, and exits cleanly when its standard input
closes. Paths: ``/`` subscribes to every topic, ``/topic/NAME`` to one; ``/control``
is not a subscriber: it takes JSON commands and answers each with one JSON message:

- ``{"op": "publish", "count": N, "topic": T}``: publish N messages ``{"from": hub id,
  "n": k}``, k counting on from the last one this node published;
- ``{"op": "stream", "interval": S}``: publish one such message every S seconds until
  ``{"op": "stop"}``;
- ``{"op": "wait", "equals": {...}, "at_least": {...}, "timeout": S}``: answer once the
  backplane's health has those values (``"a+b"`` sums two counters);
- ``{"op": "health"}``; every answer carries the backplane's health and the hub's
  statistics (``stats``).

``--history N`` keeps N messages of each topic's stream in Redis; ``--port P`` serves a
given port (a restarted node takes its predecessor's). Clients may offer ``wsfanout.v1``
and resume with ``since`` query parameters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from typing import Any
from urllib.parse import urlsplit

import attrs
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from wsfanout import History, Hub, select_subprotocol
from wsfanout.backplane import BackplaneHealth, RedisBackplane
from wsfanout.policies import DropNewest, DropOldest


async def subscribe_by_path(hub: Hub, websocket: ServerConnection) -> None:
    """Subscribe to every topic at ``/``, to one at ``/topic/NAME``; say "hello <pid>" first.

    Also the handler of the worker pool tests (a module-level function, so it pickles).
    """
    assert websocket.request is not None
    path = urlsplit(websocket.request.path).path
    topics = frozenset({path.removeprefix("/topic/")}) if path.startswith("/topic/") else None
    async with hub.subscribe(websocket, topics=topics) as subscriber:
        subscriber.send(f"hello {os.getpid()}")
        with contextlib.suppress(ConnectionClosed):
            async for _ in websocket:
                pass


def meets(health: BackplaneHealth, equals: dict[str, Any], at_least: dict[str, int]) -> bool:
    values = attrs.asdict(health)
    if any(values[name] != value for name, value in equals.items()):
        return False
    return all(
        sum(values[part] for part in name.split("+")) >= value for name, value in at_least.items()
    )


class Node:
    def __init__(self, hub: Hub, backplane: RedisBackplane, hub_id: str) -> None:
        self.hub = hub
        self.backplane = backplane
        self.hub_id = hub_id
        self.published = 0
        self.stream: asyncio.Task[None] | None = None

    def publish(self, topic: str | None = None) -> None:
        self.published += 1
        self.hub.publish(json.dumps({"from": self.hub_id, "n": self.published}), topic=topic)

    async def streaming(self, interval: float) -> None:
        while True:
            self.publish()
            await asyncio.sleep(interval)  # the load's pace, not a synchronisation

    async def handle(self, command: dict[str, Any]) -> dict[str, Any]:
        op = command["op"]
        if op == "publish":
            for _ in range(command["count"]):
                self.publish(command.get("topic"))
        elif op == "stream":
            self.stream = asyncio.create_task(self.streaming(command["interval"]))
        elif op == "stop":
            assert self.stream is not None
            self.stream.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.stream
        elif op == "wait":
            equals, at_least = command.get("equals", {}), command.get("at_least", {})
            await self.backplane.wait_for(
                lambda health: meets(health, equals, at_least), timeout=command["timeout"]
            )
        elif op != "health":
            raise ValueError(f"unknown op {op!r}")
        stats = attrs.asdict(self.hub.stats(), recurse=False)
        return {
            "op": op,
            "health": attrs.asdict(self.backplane.health()),
            "stats": {k: v for k, v in stats.items() if isinstance(v, (int, float))},
            "n": self.published,
        }

    async def control(self, websocket: ServerConnection) -> None:
        await websocket.send("ready")
        async for data in websocket:
            try:
                reply = await self.handle(json.loads(data))
            except Exception as exc:
                reply = {"op": "error", "error": repr(exc)}
            await websocket.send(json.dumps(reply))

    async def handler(self, websocket: ServerConnection) -> None:
        assert websocket.request is not None
        path = websocket.request.path
        if path == "/control":
            with contextlib.suppress(ConnectionClosed):
                await self.control(websocket)
            return
        await subscribe_by_path(self.hub, websocket)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--hub-id", required=True)
    parser.add_argument("--heartbeat", type=float, default=0.1)
    parser.add_argument("--buffer", type=int, default=10_000)
    parser.add_argument("--drop-newest", action="store_true")
    parser.add_argument("--history", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format=f"{args.hub_id} %(name)s: %(message)s")
    policy = DropNewest if args.drop_newest else DropOldest
    backplane = RedisBackplane(
        args.redis,
        hub_id=args.hub_id,
        heartbeat=args.heartbeat,
        buffer=policy(max_messages=args.buffer),
        history=History(max_messages=args.history) if args.history else None,
        max_retry_delay=0.2,
        timeout=2.0,
    )
    hub = Hub(backplane=backplane, close_timeout=2.0)
    node = Node(hub, backplane, args.hub_id)
    loop = asyncio.get_running_loop()
    stdin_closed = loop.create_future()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        await reader.read()
        stdin_closed.set_result(None)

    watcher = asyncio.create_task(watch_stdin())
    await backplane.start()
    async with serve(
        node.handler,
        "127.0.0.1",
        args.port,
        compression=None,
        select_subprotocol=select_subprotocol,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        print(f"listening {port}", flush=True)
        await stdin_closed
        if node.stream is not None:
            node.stream.cancel()
        await hub.aclose()
    await watcher


if __name__ == "__main__":
    asyncio.run(main())
