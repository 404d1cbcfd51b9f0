"""What the tests of the JavaScript client share: a page that runs ``wsfanout.js`` and
records every event it raises, and two servers for it on 127.0.0.1.

- :func:`hub_site`: a real :class:`Hub` behind websockets' ``serve``, which picks the
  subscriber's topics from ``?topic=`` as an application would.
- :func:`script_site`: a websockets server that sends nothing of its own; the test
  sends exactly the frames of docs/protocol.md on each connection it accepts, for what
  the server side does not send yet (resume frames, heartbeats, gap notices).

Both serve the page at ``/page`` and the client at ``/wsfanout.js`` (with
:func:`wsfanout.client_script`, as ``wsfanout serve`` does), and refuse WebSocket
handshakes with 503 while ``refusing`` is set, so a test can hold a client off.
"""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from wsfanout import Hub, client_script, select_subprotocol

from .chromium import GUARD, Page

EVENTS = ("open", "message", "gap", "resume", "heartbeat", "control", "close", "error")

PAGE = f"""<!doctype html>
<meta charset="utf-8">
<title>wsfanout.js under test</title>
<link rel="icon" href="data:,">
<script type="module">
  import * as wsfanout from "/wsfanout.js";
  // Bytes become {{bytes: [...]}}, so that evaluate() can return them.
  const plain = (value) =>
    value instanceof ArrayBuffer ? {{ bytes: Array.from(new Uint8Array(value)) }}
    : value instanceof Uint8Array ? {{ bytes: Array.from(value) }}
    : value;
  window.wsfanout = wsfanout;
  window.events = [];
  window.start = (options = {{}}, path = "/feed") => {{
    const client = wsfanout.connect(path, options);
    for (const type of {json.dumps(EVENTS)}) {{
      client.on(type, (event) => {{
        const detail = {{ ...event, data: plain(event.data) }};
        events.push({{ type, at: performance.now(), detail }});
      }});
    }}
    window.client = client;
    return true;
  }};
  window.of = (type) => events.filter((event) => event.type === type);
  window.ready = true;
</script>
<p>wsfanout.js under test</p>
"""
"""``start(options)`` connects a client to ``/feed`` and records its events in ``events``
(each as ``{type, at, detail}``: ``at`` is the page's time in ms, ``detail`` the event
the client raised); ``of(type)`` filters them."""


class Site:
    """A websockets server on 127.0.0.1 serving the page, the client and a feed."""

    def __init__(self) -> None:
        self.port = 0
        self.refusing = False
        """While set, WebSocket handshakes are answered 503 (a server that is down)."""
        self.connections: asyncio.Queue[ServerConnection] = asyncio.Queue()
        """Each WebSocket connection accepted, in order."""
        self.handler: Callable[[ServerConnection], Awaitable[None]] = self.idle

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        script = client_script(connection, request)
        if script is not None:
            return script
        if request.path == "/page":
            response = connection.respond(HTTPStatus.OK, PAGE)
            response.headers["Content-Type"] = "text/html; charset=utf-8"
            return response
        if self.refusing:
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, "refusing\n")
        return None

    async def accept(self, connection: ServerConnection) -> None:
        self.connections.put_nowait(connection)
        await self.handler(connection)

    @staticmethod
    async def idle(connection: ServerConnection) -> None:
        """Keep the connection open, reading what the client sends, until it closes."""
        async for _ in connection:
            pass

    async def next_connection(self) -> ServerConnection:
        async with asyncio.timeout(GUARD):
            return await self.connections.get()


@asynccontextmanager
async def serving(site: Site, port: int = 0) -> AsyncIterator[Site]:
    async with serve(
        site.accept,
        "127.0.0.1",
        port,
        process_request=site.process_request,
        select_subprotocol=select_subprotocol,
    ) as server:
        site.port = server.sockets[0].getsockname()[1]
        yield site


@asynccontextmanager
async def hub_site(hub: Hub, port: int = 0) -> AsyncIterator[Site]:
    """``hub`` behind a server on ``port``; the hub is closed (1001) when the block ends."""
    site = Site()

    async def subscribe(connection: ServerConnection) -> None:
        topics = query(connection).get("topic")
        await hub.serve(connection, topics=topics)

    site.handler = subscribe
    async with serving(site, port):
        try:
            yield site
        finally:
            # A client that reconnects while the hub closes is refused (a failed attempt,
            # 1006 to the page) rather than served by a closed hub (1011): on a loaded
            # machine its backoff can end before the server stops listening.
            site.refusing = True
            await hub.aclose(timeout=1.0)


@asynccontextmanager
async def script_site(port: int = 0) -> AsyncIterator[Site]:
    """A server whose connections send only what the test sends on them."""
    async with serving(Site(), port) as site:
        yield site


@asynccontextmanager
async def connected(page: Page, **options: Any) -> AsyncIterator[tuple[Site, ServerConnection]]:
    """A scripted site, the page's client started on it with ``options``, and the
    server's side of its first connection; the block must end within :data:`GUARD`."""
    async with asyncio.timeout(GUARD), script_site() as site:
        await open_page(page, site)
        await start(page, **options)
        yield site, await site.next_connection()


def query(connection: ServerConnection) -> dict[str, list[str]]:
    """The query parameters of the connection's request."""
    assert connection.request is not None
    return urllib.parse.parse_qs(urllib.parse.urlsplit(connection.request.path).query)


def data(offset: int, epoch: str, topic: str | None, payload: str) -> str:
    """A ``wsfanout.v1`` data frame, written as docs/protocol.md shows it."""
    header: dict[str, Any] = {"o": offset, "e": epoch}
    if topic is not None:
        header["t"] = topic
    return json.dumps(header, separators=(",", ":")) + "\n" + payload


def control(**fields: Any) -> str:
    return json.dumps(fields, separators=(",", ":"))


async def open_page(page: Page, site: Site) -> None:
    await page.goto(site.url("/page"))
    await page.wait_for("window.ready")


async def start(page: Page, **options: Any) -> None:
    """Connect the page's client to the site with ``options`` (JSON values)."""
    assert await page.evaluate(f"start({json.dumps(options)})") is True


async def events(page: Page, kind: str) -> list[dict[str, Any]]:
    """The events of ``kind`` the page's client has raised so far."""
    found: list[dict[str, Any]] = await page.evaluate(
        f"of({json.dumps(kind)}).map((event) => event.detail)"
    )
    return found


async def wait_events(page: Page, kind: str, count: int) -> list[dict[str, Any]]:
    """Wait until the client has raised ``count`` events of ``kind``; return them all."""
    await page.wait_for(f"of({json.dumps(kind)}).length >= {count}")
    return await events(page, kind)


async def stats(page: Page) -> dict[str, int]:
    result: dict[str, int] = await page.evaluate("client.stats")
    return result
