"""``wsfanout serve`` as a browser uses it: a page of another origin imports the client
from the server, connects with a token, and receives stdin's lines with their offsets."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from .chromium import GUARD, Page

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "cli"))

from cli_process import Process


def page_of(port: int, token: str) -> str:
    """A page that imports the client from the server on ``port`` and follows it."""
    return f"""<!doctype html><meta charset="utf-8"><link rel="icon" href="data:,">
<script type="module">
  import {{ connect }} from "http://127.0.0.1:{port}/wsfanout.js";
  window.events = [];
  const client = connect("ws://127.0.0.1:{port}/feed?token={token}", {{ minDelay: 20 }});
  for (const type of ["open", "message", "gap", "close", "error"]) {{
    client.on(type, (event) => events.push({{ type, ...event }}));
  }}
  window.client = client;
</script>"""


@asynccontextmanager
async def another_origin(html: str) -> AsyncIterator[str]:
    """Serve ``html`` at / on another port of 127.0.0.1, another origin; yield its URL."""

    def process_request(connection: ServerConnection, request: Request) -> Response:
        response = connection.respond(HTTPStatus.OK, html)
        response.headers["Content-Type"] = "text/html; charset=utf-8"
        return response

    async def refuse(connection: ServerConnection) -> None:
        raise AssertionError("the page's server only serves the page")

    async with serve(refuse, "127.0.0.1", 0, process_request=process_request) as server:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


async def test_a_page_follows_wsfanout_serve_with_the_client_it_serves(page: Page) -> None:
    server = Process(
        ["serve", "--policy", "chat", "--port", "0", "--token-env", "T"], env={"T": "s3cret"}
    )
    try:
        url = await asyncio.to_thread(server.listening)
        port = urllib.parse.urlsplit(url).port
        assert port is not None
        async with asyncio.timeout(GUARD), another_origin(page_of(port, "s3cret")) as where:
            await page.goto(where)
            await page.wait_for("events.some((event) => event.type === 'open')")
            await asyncio.to_thread(
                server.wait_for, r"client connected: .* /feed\?token=\*\*\* policy chat$"
            )
            server.feed('first\n{"price": 2}\n')
            await page.wait_for("events.filter((event) => event.type === 'message').length >= 2")
            messages = await page.evaluate(
                "events.filter((event) => event.type === 'message')"
                ".map(({data, topic, offset}) => [data, topic, offset])"
            )
            assert messages == [["first", "", 1], [json.dumps({"price": 2}), "", 2]]
            server.signal(signal.SIGTERM)
            close = await page.wait_for("events.find((event) => event.type === 'close')")
            assert close["code"] == 1001
            assert close["delay"] >= 20  # it would reconnect to the next server
            await page.evaluate("client.close()")
            assert await page.evaluate("events.filter((e) => e.type === 'error')") == []
        assert await asyncio.to_thread(server.exit_code) == 0
    finally:
        server.stop()
