"""The browser harness itself: a page on a real hub, and the failures its checks must catch."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import urllib.parse
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus
from pathlib import Path

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from harness.ports import free_port
from wsfanout import Hub

from .chromium import (
    GUARD,
    VIEWPORT,
    BrowserError,
    Chromium,
    ConsoleMessage,
    JavaScriptError,
    Page,
    UncaughtPageErrors,
)

TESTS = Path(__file__).resolve().parent.parent

SUBSCRIBER_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>wsfanout subscriber</title>
<link rel="icon" href="data:,">
<script>
  window.received = [];
  window.closedWith = null;
  const socket = new WebSocket(`ws://${location.host}/`);
  socket.onopen = () => { window.extensions = socket.extensions; };
  socket.onmessage = (event) => { window.received.push(event.data); };
  socket.onclose = (event) => { window.closedWith = {code: event.code, clean: event.wasClean}; };
</script>
<p>Subscribed to the hub.</p>
"""
"""A page that subscribes to the hub it was served by and keeps every message."""


class Site:
    """A hub behind a websockets server on 127.0.0.1 port 0, which also serves
    :data:`SUBSCRIBER_PAGE` over plain HTTP at ``/page``."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.port = 0
        self.joined: asyncio.Queue[ServerConnection] = asyncio.Queue()
        """Server-side connections, each put once the hub has attached it."""

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path != "/page":
            return None
        response = connection.respond(HTTPStatus.OK, SUBSCRIBER_PAGE)
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "text/html; charset=utf-8"
        return response

    async def handler(self, websocket: ServerConnection) -> None:
        # serve() attaches the subscriber before it first awaits, so this runs after.
        asyncio.get_running_loop().call_soon(self.joined.put_nowait, websocket)
        await self.hub.serve(websocket)


@asynccontextmanager
async def site_of(hub: Hub) -> AsyncIterator[Site]:
    """Serve ``hub`` and its page until the block ends, then close the hub and the server."""
    site = Site(hub)
    async with serve(site.handler, "127.0.0.1", 0, process_request=site.process_request) as server:
        site.port = server.sockets[0].getsockname()[1]
        try:
            yield site
        finally:
            await hub.aclose(timeout=1.0)


def message(index: int) -> str:
    """Numbered JSON messages, some of them long and compressible (several deflate blocks)."""
    return json.dumps({"n": index, "text": f"message {index} " * (index * 37 % 700)})


def data_url(html: str) -> str:
    return "data:text/html;charset=utf-8," + urllib.parse.quote(html)


def png_size_and_first_pixel(png: bytes) -> tuple[int, int, tuple[int, ...]]:
    """Width, height and the top-left pixel of a PNG that Chromium wrote (8-bit RGB/RGBA).

    The first pixel of the first row is stored as is whatever the row's filter.
    """
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    position, idat, header = 8, b"", b""
    while position < len(png):
        (length,) = struct.unpack(">I", png[position : position + 4])
        kind = png[position + 4 : position + 8]
        body = png[position + 8 : position + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        position += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8, f"bit depth {depth}"
    assert colour in (2, 6), f"colour type {colour}: not RGB or RGBA"
    channels = 3 if colour == 2 else 4
    rows = zlib.decompress(idat)
    return width, height, tuple(rows[1 : 1 + channels])


# -- a page on a real hub -------------------------------------------------------------


async def test_a_page_receives_every_published_message_in_order(page: Page) -> None:
    messages = [message(i) for i in range(200)]
    hub = Hub()
    async with asyncio.timeout(GUARD), site_of(hub) as site:
        await page.goto(site.url("/page"))
        await site.joined.get()
        for text in messages:
            assert hub.publish(text) == 1
        await page.wait_for(f"window.received.length >= {len(messages)}")
        await hub.aclose()
        closed = await page.wait_for("window.closedWith")
        assert closed == {"code": 1001, "clean": True}
        assert await page.evaluate("window.received") == messages


async def test_chromium_negotiates_permessage_deflate_with_a_websockets_server(
    page: Page,
) -> None:
    hub = Hub()
    async with asyncio.timeout(GUARD), site_of(hub) as site:
        await page.goto(site.url("/page"))
        server_side = await site.joined.get()
        assert server_side.request is not None
        assert server_side.response is not None
        offered = server_side.request.headers["Sec-WebSocket-Extensions"]
        accepted = server_side.response.headers["Sec-WebSocket-Extensions"]
        # What Chromium 156 and websockets 17 settle on, recorded here for the record.
        assert offered == "permessage-deflate; client_max_window_bits"
        assert accepted == (
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12"
        )
        assert [extension.name for extension in server_side.protocol.extensions] == [
            "permessage-deflate"
        ]
        assert await page.wait_for("window.extensions") == accepted
        # A compressed message far larger than the window decodes to the same text.
        assert hub.publish(message(699)) == 1
        assert await page.wait_for("window.received[0]") == message(699)


# -- what the page reports ------------------------------------------------------------


async def test_evaluate_returns_json_values_and_awaits_promises(page: Page) -> None:
    assert await page.evaluate("({a: [1, 2.5, 'three', null, true]})") == {
        "a": [1, 2.5, "three", None, True]
    }
    assert await page.evaluate("undefined") is None
    assert await page.evaluate("new Promise(resolve => setTimeout(() => resolve(7), 1))") == 7


async def test_console_messages_are_recorded_in_order_with_their_type(page: Page) -> None:
    await page.goto(
        data_url(
            "<script>console.log('hello', 1, {a: 2}, [3, 4]);"
            "console.warn('careful'); console.error('bad')</script>"
        )
    )
    await page.settle()
    assert page.console == [
        ConsoleMessage("log", "hello 1 {a: 2} [3, 4]"),
        ConsoleMessage("warning", "careful"),
        ConsoleMessage("error", "bad"),
    ]


async def test_the_screenshot_is_a_png_of_the_viewport(page: Page, tmp_path: Path) -> None:
    await page.goto(data_url("<body style='margin: 0; background: rgb(255, 0, 0)'>"))
    shot = await page.screenshot(tmp_path / "page.png")
    width, height, pixel = png_size_and_first_pixel(shot.read_bytes())
    assert (width, height) == VIEWPORT
    assert pixel[:3] == (255, 0, 0)


async def test_a_full_page_screenshot_covers_the_whole_page(page: Page, tmp_path: Path) -> None:
    await page.goto(data_url("<body style='margin: 0'><div style='height: 2000px'></div>"))
    shot = await page.screenshot(tmp_path / "page.png", full_page=True)
    width, height, _ = png_size_and_first_pixel(shot.read_bytes())
    assert (width, height) == (VIEWPORT[0], 2000)


# -- the checks catch what they are for -----------------------------------------------

BROKEN_PAGES = {
    "a throw in a script": "<script>throw new Error('boom in a script')</script>",
    "a throw in a timer": (
        "<script>setTimeout(() => { window.done = true; throw new Error('boom in a timer') })"
        "</script>"
    ),
    "an unhandled rejection": (
        "<script>Promise.reject(new Error('boom in a promise')); window.done = true</script>"
    ),
}


@pytest.mark.parametrize("html", BROKEN_PAGES.values(), ids=BROKEN_PAGES.keys())
async def test_an_uncaught_error_in_the_page_fails_the_check(page: Page, html: str) -> None:
    await page.goto(data_url(html))
    if "window.done" in html:
        await page.wait_for("window.done")
    await page.settle()
    with pytest.raises(UncaughtPageErrors, match="boom in a"):
        page.check_errors()
    assert len(page.take_errors()) == 1
    page.check_errors()  # taken: the fixture's own check at the end passes


async def test_an_error_the_page_catches_is_not_reported(page: Page) -> None:
    await page.goto(data_url("<script>try { throw new Error('caught') } catch {}</script>"))
    await page.settle()
    page.check_errors()
    assert page.errors == []


async def test_evaluate_raises_what_the_page_threw_without_a_page_error(page: Page) -> None:
    with pytest.raises(JavaScriptError, match="Error: thrown by evaluate"):
        await page.evaluate("throw new Error('thrown by evaluate')")
    await page.settle()
    assert page.errors == []


async def test_wait_for_fails_when_the_condition_never_holds(page: Page) -> None:
    await page.evaluate("console.log('still waiting'); 0")
    with pytest.raises(TimeoutError, match=r"(?s)'window\.never' still false.*still waiting"):
        await page.wait_for("window.never", timeout=0.2)


async def test_goto_fails_when_nothing_listens(page: Page) -> None:
    with pytest.raises(BrowserError, match="ERR_CONNECTION_REFUSED"):
        await page.goto(f"http://127.0.0.1:{free_port()}/")


FIXTURE_CONFTEST = "from browser.conftest import browser, page  # the fixtures under test\n"

FIXTURE_USERS = """
async def test_a_page_that_throws(page):
    await page.goto("data:text/html,<script>throw new Error('boom for the fixture')</script>")


async def test_a_page_that_does_not_throw(page):
    await page.goto("data:text/html,<p>fine</p>")
"""


def test_the_page_fixture_fails_a_test_whose_page_threw(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(FIXTURE_CONFTEST)
    (tmp_path / "test_users.py").write_text(FIXTURE_USERS)
    # Chromium's socket paths must stay short: its profile goes in a fresh short folder.
    scratch = Path(tempfile.mkdtemp(prefix="wsfanout-"))
    try:
        run = subprocess.run(
            [
                sys.executable,
                *("-m", "pytest", "-p", "no:cacheprovider", "-o", "asyncio_mode=auto"),
                *("-o", "asyncio_default_fixture_loop_scope=function", str(tmp_path)),
            ],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(TESTS), "TMPDIR": str(scratch)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 1, run.stdout + run.stderr
        assert "ERROR at teardown of test_a_page_that_throws" in run.stdout, run.stdout
        assert "Error: boom for the fixture" in run.stdout
        assert run.stdout.splitlines()[-1].strip("= ").startswith("2 passed, 1 error")
        # Its Chromium was stopped and its profile removed, though a test failed.
        assert list(scratch.iterdir()) == []
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


# -- the process ----------------------------------------------------------------------


def processes_using(profile: Path) -> list[int]:
    """Live (not zombie) processes whose command line names ``profile``: every Chromium
    process does, through --user-data-dir or, for crashpad, its database under it."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if str(profile).encode() in command and state != "Z":
            found.append(int(entry.name))
    return found


def test_stopping_chromium_ends_all_its_processes_and_removes_its_profile() -> None:
    chromium = Chromium()
    chromium.start()
    try:
        assert chromium.profile is not None
        profile = chromium.profile
        assert len(processes_using(profile)) >= 3  # browser, zygotes, crashpad...
    finally:
        chromium.stop()
    assert processes_using(profile) == []
    assert not profile.exists()


def test_chromium_quits_by_itself_when_its_lifeline_closes() -> None:
    chromium = Chromium()
    chromium.start()
    try:
        assert chromium.process is not None
        assert chromium._lifeline is not None
        os.close(chromium._lifeline)  # what the kernel does if this process dies
        chromium._lifeline = None
        assert chromium.process.wait(timeout=GUARD) == 0
    finally:
        chromium.stop()
