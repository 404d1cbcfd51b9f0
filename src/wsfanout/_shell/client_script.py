"""The JavaScript client, served over plain HTTP by the WebSocket server itself.

``wsfanout.js`` ships as package data beside this package (``wsfanout/static/``);
:func:`client_script` is a websockets ``process_request`` hook that answers
``GET /wsfanout.js`` with it, gzipped when the browser accepts it, revalidated by its
ETag, and readable from any origin (module scripts are fetched with CORS), so a page
served elsewhere can ``import`` it from the wsfanout server.
"""

from __future__ import annotations

import email.utils
import functools
import gzip
import hashlib
import http
import importlib.resources

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

__all__ = ["CLIENT_SCRIPT_PATH", "client_script", "client_script_source"]

CLIENT_SCRIPT_PATH = "/wsfanout.js"
"""Where :func:`client_script` serves the JavaScript client."""


@functools.cache
def client_script_source() -> bytes:
    """The JavaScript client's source, as shipped in the package (UTF-8)."""
    return importlib.resources.files("wsfanout").joinpath("static/wsfanout.js").read_bytes()


@functools.cache
def _encoded() -> tuple[str, bytes]:
    source = client_script_source()
    etag = '"' + hashlib.sha256(source).hexdigest()[:20] + '"'
    return etag, gzip.compress(source, compresslevel=9, mtime=0)


def client_script(connection: ServerConnection, request: Request) -> Response | None:
    """websockets' ``process_request`` hook: the JavaScript client for a plain
    ``GET /wsfanout.js`` (the query string is ignored), ``None`` for any other request,
    which goes on to the WebSocket handshake.

    Call it first from a ``process_request`` of your own to combine the two.
    """
    if request.path.partition("?")[0] != CLIENT_SCRIPT_PATH or "Upgrade" in request.headers:
        return None
    etag, zipped = _encoded()
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Type", "text/javascript; charset=utf-8"),
            ("Cache-Control", "no-cache"),  # revalidated: a new wsfanout is seen at once
            ("ETag", etag),
            ("Vary", "Accept-Encoding"),
            ("Access-Control-Allow-Origin", "*"),
        ]
    )
    if etag in request.headers.get("If-None-Match", ""):
        status, body = http.HTTPStatus.NOT_MODIFIED, b""
    else:
        status, body = http.HTTPStatus.OK, client_script_source()
        if _accepts_gzip(request.headers.get("Accept-Encoding", "")):
            body = zipped
            headers["Content-Encoding"] = "gzip"
        headers["Content-Length"] = str(len(body))
    return Response(status.value, status.phrase, headers, body)


def _accepts_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value admits gzip (``gzip;q=0`` refuses it)."""
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip", "*"):
            quality = params.strip().removeprefix("q=").strip() if params else "1"
            try:
                return float(quality) > 0
            except ValueError:
                return False
    return False
