"""The how-to "Resume in a browser" works as it says: its server and its page, exactly
as the page lists them, in Chromium: messages shown with their offsets, a hole after a
cut reported, a restart reported, and a reload that resumes from the saved offsets."""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from .chromium import GUARD, Page

HOW_TO = Path(__file__).resolve().parents[2] / "docs" / "how-to" / "resume-in-a-browser.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def listing(language: str) -> str:
    """The how-to's only block of ``language``."""
    found: list[tuple[str, str]] = FENCE.findall(HOW_TO.read_text(encoding="utf-8"))
    (body,) = [body for lang, body in found if lang == language]
    return body


def how_to_server(page_file: Path) -> dict[str, Any]:
    """The how-to's server module, run, with its page saved in ``page_file``."""
    page_file.write_text(listing("html"), encoding="utf-8")
    namespace: dict[str, Any] = {"__name__": "resume_server"}
    exec(compile(listing("python"), str(HOW_TO), "exec"), namespace)
    namespace["PAGE"] = page_file
    return namespace


async def text(page: Page, element: str) -> str:
    found: str = await page.evaluate(f"document.getElementById({element!r}).textContent")
    return found


async def test_the_how_to_page_reports_a_cut_a_restart_and_resumes_after_a_reload(
    page: Page, tmp_path: Path
) -> None:
    server = how_to_server(tmp_path / "resume_page.html")
    joined: asyncio.Queue[ServerConnection] = asyncio.Queue()

    async def feed(websocket: ServerConnection) -> None:
        joined.put_nowait(websocket)
        await server["feed"](websocket)

    async def serving(port: int = 0) -> Any:
        return await serve(
            feed,
            "127.0.0.1",
            port,
            process_request=server["process_request"],
            select_subprotocol=server["select_subprotocol"],
        )

    async with asyncio.timeout(GUARD):
        running = await serving()
        port = running.sockets[0].getsockname()[1]
        hub = server["hub"]
        try:
            await page.goto(f"http://127.0.0.1:{port}/")
            first = await joined.get()
            await page.wait_for("document.getElementById('status').textContent === 'live'")
            for price in ("1.01", "1.02"):
                hub.publish(price, topic="prices")
            hub.publish("not for this page", topic="news")
            await page.wait_for("document.querySelectorAll('#prices li').length === 2")
            assert await text(page, "prices") == "2: 1.021: 1.01"
            # Cut off while three prices are published, then back.
            await first.close(1011, "cut")
            await page.wait_for(
                "document.getElementById('status').textContent.startsWith('reconnecting')"
            )
            second = await joined.get()
            assert second.request is not None
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(second.request.path).query)
            epoch = query["since"][0].split(":")[1]
            assert query == {"topic": ["prices"], "since": [f"prices:{epoch}:2"]}
            await page.wait_for("document.getElementById('status').textContent === 'live'")
            for price in ("1.03", "1.04", "1.05"):
                hub.publish(price, topic="prices")
            await page.wait_for("document.querySelectorAll('#prices li').length === 5")
            # The how-to's server keeps no history: it cannot replay, and says exactly
            # what the page missed in a gap notice.
            await second.close(1011, "cut")
            await page.wait_for(
                "document.getElementById('status').textContent.startsWith('reconnecting')"
            )
            for price in ("1.06", "1.07", "1.08"):
                hub.publish(price, topic="prices")  # nobody subscribed: missed
            third = await joined.get()
            await page.wait_for("document.getElementById('status').textContent === 'live'")
            assert third.request is not None
            hub.publish("1.09", topic="prices")
            await page.wait_for("document.getElementById('missed').textContent !== ''")
            assert await text(page, "missed") == "3 missed (notice); 3 in all"
            # A reload resumes from the offsets the page saved.
            await page.goto(f"http://127.0.0.1:{port}/")
            fourth = await joined.get()
            assert fourth.request is not None
            assert f"since=prices%3A{epoch}%3A9" in fourth.request.path
        finally:
            running.close()
            await hub.aclose(timeout=1.0)
            await running.wait_closed()
        # A restarted server: new streams, a new epoch.
        server["hub"] = hub = type(hub)()
        restarted = await serving(port)
        try:
            await joined.get()
            await page.wait_for("document.getElementById('status').textContent === 'live'")
            hub.publish("2.00", topic="prices")
            await page.wait_for(
                "document.getElementById('missed').textContent.startsWith('the server')"
            )
            assert await text(page, "missed") == "the server restarted; 0 in all"
        finally:
            restarted.close()
            await hub.aclose(timeout=1.0)
            await restarted.wait_closed()
