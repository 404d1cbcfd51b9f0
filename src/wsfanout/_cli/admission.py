"""Who may subscribe, settled before the WebSocket upgrade.

The token check runs in ``process_request`` (401 without a token, 403 with a wrong
one), websockets' own ``origins`` check refuses foreign origins (403), and
``process_response`` caps the number of admitted clients (503) once the handshake
would otherwise succeed. Secrets never reach a log line: paths and Redis URLs are
redacted first.
"""

from __future__ import annotations

import hmac
import http
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import InvalidOrigin, InvalidUpgrade
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from .logs import log_refused

if TYPE_CHECKING:
    from .serve import Log, ServeOptions

__all__ = [
    "Gate",
    "SelectSubprotocol",
    "Slots",
    "peer",
    "presented_token",
    "redacted",
    "redacted_url",
]


def presented_token(request: Request) -> str | None:
    """The token a client presents: ``Authorization: Bearer ...`` or a ``token`` query parameter."""
    for value in request.headers.get_all("Authorization"):
        scheme, _, credentials = value.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    query = urllib.parse.urlsplit(request.path).query
    values = urllib.parse.parse_qs(query).get("token")
    return values[0] if values else None


def redacted(path: str) -> str:
    """The request path for logs, with a ``token`` query parameter's value hidden."""
    url = urllib.parse.urlsplit(path)
    if not url.query:
        return path
    pairs = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
    shown = [(name, "***" if name == "token" else value) for name, value in pairs]
    return urllib.parse.urlunsplit(url._replace(query=urllib.parse.urlencode(shown, safe="*")))


def redacted_url(url: str) -> str:
    """A Redis URL for logs, with its password hidden."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


class Slots(Protocol):
    """Places for clients: a threading or a multiprocessing semaphore."""

    def acquire(self, block: bool = ..., /) -> bool: ...

    def release(self) -> None: ...


class Gate:
    """Admission before the upgrade: the token, then the cap on clients.

    ``slots`` holds one place per client admitted; with workers it is a semaphore
    shared by every worker process, so the cap holds for the whole server.
    """

    def __init__(self, options: ServeOptions, log: Log, slots: Slots | None) -> None:
        self.token = None if options.token is None else options.token.encode()
        self.max_clients = options.max_clients
        self.slots = slots
        self.log = log

    def _refuse(self, connection: ServerConnection, status: http.HTTPStatus, why: str) -> Response:
        request = connection.request
        path = redacted(request.path) if request is not None else "?"
        log_refused(self.log, peer(connection), path, status.value, why)
        return connection.respond(status, f"{why}\n")

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if self.token is None:
            return None
        presented = presented_token(request)
        if presented is None:
            response = self._refuse(connection, http.HTTPStatus.UNAUTHORIZED, "missing token")
            response.headers["WWW-Authenticate"] = 'Bearer realm="wsfanout"'
            return response
        if not hmac.compare_digest(presented.encode(), self.token):
            return self._refuse(connection, http.HTTPStatus.FORBIDDEN, "wrong token")
        return None

    def process_response(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> Response | None:
        if response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS:
            failure = connection.protocol.handshake_exc
            who, path, status = peer(connection), redacted(request.path), response.status_code
            if isinstance(failure, InvalidOrigin):
                origin = request.headers.get("Origin", "none")
                log_refused(self.log, who, path, 403, f"origin {origin} not allowed")
            elif isinstance(failure, InvalidUpgrade):
                log_refused(self.log, who, path, status, "plain HTTP, not a WebSocket upgrade")
            elif failure is not None:
                log_refused(self.log, who, path, status, f"bad handshake: {failure}")
            return None
        slots = self.slots
        if slots is None:
            return None
        if not slots.acquire(False):
            return self._refuse(
                connection,
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                f"too many clients (max {self.max_clients})",
            )
        connection.connection_lost_waiter.add_done_callback(lambda _: slots.release())
        return None


class SelectSubprotocol:
    """Negotiates a subprotocol a route names; a client offering none is still welcome."""

    def __init__(self, wanted: tuple[str, ...]) -> None:
        self.wanted = wanted

    def __call__(
        self, connection: ServerConnection, offered: Sequence[Subprotocol]
    ) -> Subprotocol | None:
        for name in self.wanted:
            if name in offered:
                return Subprotocol(name)
        return None
