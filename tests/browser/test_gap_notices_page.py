"""The browser snippet of docs/how-to/gap-notices.md (wsfanout.js), run in a headless
Chromium against a real hub: it reports each loss the server announces, and finds the
ones it does not."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from wsfanout import Hub, Policy, client_script, select_subprotocol
from wsfanout.policies import DropOldest, Notify, Throttle

from .chromium import GUARD, Page

HOW_TO = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "gap-notices.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def snippet() -> str:
    """The how-to's browser snippet, exactly as printed."""
    blocks = [body for lang, body in FENCE.findall(HOW_TO.read_text()) if lang == "js"]
    (page,) = [block for block in blocks if "wsfanout.js" in block]
    return str(page)


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>gap notices</title>
<link rel="icon" href="data:,">
<script>
  window.data = [];
  window.gaps = [];
  window.show = (data, offset) => window.data.push([data, offset]);
  window.warn = (topic, ranges, source, reasons) =>
    window.gaps.push(reasons ? { topic, ranges, source, reasons } : { topic, ranges, source });
</script>
<script type="module">
%s
</script>
"""

FEEDS: dict[str, Policy] = {
    # Everything after the first message waits behind the throttle in a queue of two.
    "notify": DropOldest(max_messages=2) | Throttle(rate=20.0) | Notify(),
    "silent": DropOldest(max_messages=2) | Throttle(rate=20.0),
}


class Site:
    def __init__(self, hub: Hub, policy: Policy) -> None:
        self.hub = hub
        self.policy = policy
        self.port = 0
        self.joined: asyncio.Queue[str] = asyncio.Queue()

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        script = client_script(connection, request)
        if script is not None or not request.path.startswith("/page"):
            return script
        response = connection.respond(HTTPStatus.OK, PAGE % snippet())
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "text/html; charset=utf-8"
        return response

    async def handler(self, websocket: ServerConnection) -> None:
        asyncio.get_running_loop().call_soon(self.joined.put_nowait, str(websocket.subprotocol))
        await self.hub.serve(websocket, policy=self.policy)


@asynccontextmanager
async def site_of(hub: Hub, policy: Policy) -> AsyncIterator[Site]:
    site = Site(hub, policy)
    async with serve(
        site.handler,
        "127.0.0.1",
        0,
        process_request=site.process_request,
        select_subprotocol=select_subprotocol,
    ) as server:
        site.port = server.sockets[0].getsockname()[1]
        try:
            yield site
        finally:
            await hub.aclose(timeout=1.0)


async def run_feed(page: Page, feed: str) -> tuple[list[object], list[object]]:
    hub = Hub()
    async with asyncio.timeout(GUARD), site_of(hub, FEEDS[feed]) as site:
        await page.goto(f"http://127.0.0.1:{site.port}/page")
        assert await site.joined.get() == "wsfanout.v1"
        for n in range(1, 11):
            hub.publish(f"price {n}", topic="prices")
        await page.wait_for("window.data.length >= 3")
        return await page.evaluate("window.data"), await page.evaluate("window.gaps")


async def test_the_page_reports_each_announced_loss_once(page: Page) -> None:
    data, gaps = await run_feed(page, "notify")
    assert data == [["price 1", 1], ["price 9", 9], ["price 10", 10]]
    assert gaps == [
        {
            "topic": "prices",
            "ranges": [[2, 8]],
            "source": "notice",
            "reasons": {"dropped_oldest": 7},
        }
    ]


async def test_the_page_finds_a_loss_nobody_announced(page: Page) -> None:
    data, gaps = await run_feed(page, "silent")
    assert data == [["price 1", 1], ["price 9", 9], ["price 10", 10]]
    assert gaps == [{"topic": "prices", "ranges": [[2, 8]], "source": "offsets"}]
