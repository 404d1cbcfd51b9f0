"""Live prices broadcast to browsers, each under a slow-client policy (docs/tutorial.md).

Run ``python examples/tutorial_server.py`` and open http://localhost:8765/ in a browser.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections.abc import Callable
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from wsfanout import Hub, Policy
from wsfanout.policies import ConflateByKey, Disconnect

PAGE = Path(__file__).with_name("tutorial_page.html").read_text(encoding="utf-8")
SYMBOLS = ("ACME", "GLOBEX", "INITECH", "UMBRELLA", "WONKA")

# Keep only the newest price per symbol for a client that falls behind, and close a
# client that leaves more than 16 KiB unread for ten seconds.
POLICY = ConflateByKey() | Disconnect(max_buffer=16_384, grace=10.0)


async def publish_prices(hub: Hub, interval: float) -> None:
    """Move one price at random every ``interval`` seconds and publish it, forever."""
    prices = dict.fromkeys(SYMBOLS, 100.0)
    for seq in itertools.count():
        symbol = random.choice(SYMBOLS)
        prices[symbol] = round(prices[symbol] * random.uniform(0.995, 1.005), 2)
        update = {"symbol": symbol, "price": prices[symbol], "seq": seq}
        hub.publish(json.dumps(update), key=symbol)
        await asyncio.sleep(interval)


def statistics(hub: Hub) -> str:
    """The hub's totals and each connected client's counters, as JSON."""
    clients = {}
    for subscriber in hub.subscribers:
        stats = subscriber.stats()
        request = subscriber.websocket.request
        path = request.path if request is not None else "?"
        clients[f"{path} {subscriber.websocket.id.hex[:8]}"] = {
            "sent": stats.sent,
            "conflated": stats.conflated,
            "queued": stats.queued_messages,
            "peak": stats.peak_messages,
        }
    totals = hub.stats()
    summary = {
        "subscribers": totals.subscribers,
        "sent": totals.sent,
        "conflated": totals.conflated,
        "closed_by_policy": totals.closed_by_policy,
    }
    return json.dumps({"hub": summary, "clients": clients}, indent=1)


def announce(port: int) -> None:
    print(f"Serving on http://localhost:{port}/ (Ctrl-C to stop)")


async def main(
    host: str = "localhost",
    port: int = 8765,
    *,
    policy: Policy = POLICY,
    interval: float = 0.005,
    on_ready: Callable[[int], None] = announce,
) -> None:
    hub = Hub(policy=policy)

    async def handler(websocket: ServerConnection) -> None:
        # Relay prices to this client until it leaves or its policy closes it.
        await hub.serve(websocket)

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        # Plain HTTP for the page and the statistics; any other path is a WebSocket.
        if request.path == "/stats":
            return connection.respond(200, statistics(hub))
        if request.path == "/":
            response = connection.respond(200, PAGE)
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "text/html; charset=utf-8"
            return response
        return None

    # compression=None: every client then receives the very same frame bytes.
    async with serve(handler, host, port, process_request=process_request, compression=None) as s:
        on_ready(s.sockets[0].getsockname()[1])
        try:
            await publish_prices(hub, interval)
        finally:
            # Close every client with 1001, aborting those that cannot take a close frame.
            await hub.aclose()


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
