"""How many Prometheus series a hub exposes, with 1 and with 1,000 subscribers.

``python -m benchmarks.series [COUNTS...]`` connects that many real websockets
clients on 127.0.0.1 to a hub, under one policy name, publishes to them, closes one
(so ``wsfanout_subscribers_closed_total`` has a series), and counts the samples of
``register_metrics`` (the ``wsfanout_*`` families) and of the admin listener's whole
``/metrics`` (with the process's own metrics). docs/how-to/observability.md quotes it.
"""

from __future__ import annotations

import asyncio
import sys

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve

from wsfanout import Hub
from wsfanout._cli.admin import AdminServer
from wsfanout.metrics import register_metrics


def samples(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [s.name for f in text_string_to_metric_families(text) for s in f.samples]


async def count(clients: int) -> tuple[int, int]:
    hub = Hub()
    registry = CollectorRegistry()
    register_metrics(hub, registry)
    admin = AdminServer(hub)  # its registry: this hub's metrics and the process's
    joined = asyncio.Event()
    left = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        if len(hub) + 1 >= clients:
            joined.set()
        await hub.serve(ws, policy_name="chat")
        left.set()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        sockets: list[ClientConnection] = []
        for _ in range(clients):
            sockets.append(await connect(f"ws://127.0.0.1:{port}/", compression=None))
        await joined.wait()
        for n in range(10):
            hub.publish(f"message {n}")
        await sockets[0].close()
        await left.wait()
        ours = len(samples(registry))
        everything = len(samples(admin.registry))
        for ws in sockets[1:]:
            await ws.close()
    await hub.aclose()
    return ours, everything


def main(argv: list[str]) -> None:
    for clients in [int(a) for a in argv] or [1, 1000]:
        ours, everything = asyncio.run(count(clients))
        print(f"{clients} subscribers: {ours} wsfanout series, {everything} on the admin /metrics")


if __name__ == "__main__":
    main(sys.argv[1:])
