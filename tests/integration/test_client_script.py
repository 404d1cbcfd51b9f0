"""``client_script``: websockets serves the JavaScript client over plain HTTP, and every
other request goes on to the WebSocket handshake."""

from __future__ import annotations

import asyncio
import gzip
import http.client
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from wsfanout import CLIENT_SCRIPT_PATH, client_script, client_script_source

GUARD = 10.0


async def echo_path(connection: ServerConnection) -> None:
    assert connection.request is not None
    await connection.send(connection.request.path)


@asynccontextmanager
async def server() -> AsyncIterator[int]:
    async with serve(echo_path, "127.0.0.1", 0, process_request=client_script) as running:
        yield running.sockets[0].getsockname()[1]


def get(port: int, path: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP GET, as a browser fetching a script makes it."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=GUARD)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


async def test_the_script_is_served_as_javascript_that_any_origin_may_import() -> None:
    async with server() as port:
        status, headers, body = await asyncio.to_thread(get, port, CLIENT_SCRIPT_PATH)
    assert CLIENT_SCRIPT_PATH == "/wsfanout.js"
    assert status == 200
    assert body == client_script_source()
    assert body.startswith(b"// wsfanout.js: the browser client of the wsfanout.v1 protocol")
    assert headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Content-Length"] == str(len(body))
    assert headers["Cache-Control"] == "no-cache"
    assert "Content-Encoding" not in headers


async def test_the_script_is_gzipped_for_a_client_that_accepts_it() -> None:
    async with server() as port:
        accepted = await asyncio.to_thread(
            get, port, "/wsfanout.js?v=1", **{"Accept-Encoding": "gzip, deflate, br"}
        )
        refused = await asyncio.to_thread(
            get, port, "/wsfanout.js", **{"Accept-Encoding": "br, gzip;q=0"}
        )
    status, headers, body = accepted
    assert (status, headers["Content-Encoding"], headers["Vary"]) == (
        200,
        "gzip",
        "Accept-Encoding",
    )
    assert gzip.decompress(body) == client_script_source()
    assert len(body) < len(client_script_source()) / 2
    status, headers, body = refused
    assert "Content-Encoding" not in headers
    assert body == client_script_source()


async def test_a_cached_copy_is_revalidated_by_its_etag() -> None:
    async with server() as port:
        _, headers, _ = await asyncio.to_thread(get, port, CLIENT_SCRIPT_PATH)
        etag = headers["ETag"]
        same = await asyncio.to_thread(get, port, CLIENT_SCRIPT_PATH, **{"If-None-Match": etag})
        stale = await asyncio.to_thread(get, port, CLIENT_SCRIPT_PATH, **{"If-None-Match": '"x"'})
    assert etag.startswith('"')
    assert etag.endswith('"')
    assert (same[0], same[2]) == (304, b"")
    assert same[1]["ETag"] == etag
    assert (stale[0], stale[2]) == (200, client_script_source())


async def test_other_requests_go_on_to_the_websocket_handshake() -> None:
    async with server() as port:
        status, _, _ = await asyncio.to_thread(get, port, "/other")
        assert status == 426  # websockets: Upgrade Required
        # A WebSocket on the script's own path is a WebSocket, not the script.
        for path in ("/feed?topic=a", "/wsfanout.js"):
            async with connect(f"ws://127.0.0.1:{port}{path}", open_timeout=GUARD) as ws:
                assert await asyncio.wait_for(ws.recv(), GUARD) == path
