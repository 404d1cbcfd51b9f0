"""Chromium against ``wsfanout serve`` started with nothing but its standard input."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as websockets_serve
from websockets.http11 import Request, Response

from .chromium import GUARD, Page

WSFANOUT = Path(sys.executable).parent / "wsfanout"


class Serve:
    """``wsfanout serve`` as a subprocess; its merged output read line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen: list[str] = []

    async def wait_for(self, pattern: str) -> re.Match[str]:
        assert self.process.stdout is not None
        async with asyncio.timeout(GUARD):
            while raw := await self.process.stdout.readline():
                line = raw.decode().rstrip("\n")
                self.seen.append(line)
                if match := re.search(pattern, line):
                    return match
        raise AssertionError(f"exited before printing {pattern!r}: {self.seen}")

    async def feed(self, lines: list[str]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("".join(f"{line}\n" for line in lines).encode())
        await self.process.stdin.drain()


@contextlib.asynccontextmanager
async def serve(*args: str) -> AsyncIterator[Serve]:
    process = await asyncio.create_subprocess_exec(
        WSFANOUT,
        "serve",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        yield Serve(process)
    finally:
        if process.returncode is None:
            process.terminate()
        async with asyncio.timeout(GUARD):
            await process.wait()


SOCKETS = """<!doctype html>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<script>
  window.sockets = {};
  for (const [name, path] of Object.entries(%(paths)s)) {
    const socket = new WebSocket("%(url)s" + path);
    const state = window.sockets[name] = {received: [], extensions: null, closed: null};
    socket.onopen = () => { state.extensions = socket.extensions; };
    socket.onmessage = (event) => { state.received.push(event.data); };
    socket.onclose = (event) => { state.closed = event.code; };
  }
</script>
"""


@contextlib.asynccontextmanager
async def page_site(url: str, paths: dict[str, str]) -> AsyncIterator[str]:
    """A page on another port of 127.0.0.1 that opens a socket to ``url`` + each path.

    Not a ``data:`` URL: Chromium blocks pages of no address from reaching the loopback.
    """
    html = SOCKETS % {"url": url, "paths": json.dumps(paths)}

    def answer(connection: ServerConnection, request: Request) -> Response:
        response = connection.respond(HTTPStatus.OK, html)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "text/html; charset=utf-8"
        return response

    async def never(connection: ServerConnection) -> None:  # pragma: no cover
        raise AssertionError("the page site has no WebSocket clients")

    async with websockets_serve(never, "127.0.0.1", 0, process_request=answer) as site:
        yield f"http://127.0.0.1:{site.sockets[0].getsockname()[1]}/"


def lines_to_send() -> list[str]:
    """Short and long lines, JSON and not, some far larger than the deflate window."""
    lines = []
    for n in range(300):
        room = ("a", "b")[n % 2]
        text = f"message {n} caf\u00e9 \u2603 " * (n * 37 % 900)
        lines.append(json.dumps({"room": room, "n": n, "text": text}, ensure_ascii=False))
    lines += ["plain text, no topic", "\u00e9" * 70_000]
    return lines


async def test_chromium_gets_shared_compression_and_every_line_intact(page: Page) -> None:
    async with serve("--port", "0", "--topic-field", "room") as server:
        found = await server.wait_for(r"^wsfanout: listening on (ws://\S+) \((.*)\)$")
        assert found[2] == "policy default, compression shared"
        async with page_site(found[1], {"all": "/", "b": "/?topic=b"}) as where:
            await page.goto(where)
        await server.wait_for(r"client connected: .* / policy default$")
        await server.wait_for(r"client connected: .* /\?topic=b policy default topics b$")
        extensions = await page.wait_for("window.sockets.all.extensions")
        # Chromium offers "permessage-deflate; client_max_window_bits"; the server's answer
        # takes no context over, so one compressed frame serves every such client.
        assert extensions == (
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=12; client_max_window_bits=12"
        )
        # The server logs a connection before the page's open event runs: wait for it.
        assert await page.wait_for("window.sockets.b.extensions") == extensions
        lines = lines_to_send()
        await server.feed(lines)
        await page.wait_for(f"window.sockets.all.received.length >= {len(lines)}")
        assert await page.evaluate("window.sockets.all.received") == lines
        expected_b = [line for line in lines if not line.startswith('{"room": "a"')]
        await page.wait_for(f"window.sockets.b.received.length >= {len(expected_b)}")
        assert await page.evaluate("window.sockets.b.received") == expected_b
        assert server.process.stdin is not None
        server.process.stdin.close()
        await server.wait_for(rf"end of input after {len(lines)} messages$")
        server.process.terminate()
        assert await page.wait_for("window.sockets.all.closed") == 1001
