"""Who may subscribe, settled before the WebSocket upgrade.

The token check runs in ``process_request`` (401 without a token, 403 with a wrong
one), websockets' own ``origins`` check refuses foreign origins (403), and
``process_response`` caps the number of admitted clients (503) once the handshake
would otherwise succeed. Secrets never reach a log line: paths and Redis URLs are
redacted first. The JavaScript client (``GET /wsfanout.js``) is public and served
before any of this.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import http
import resource
import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from .._shell.client_script import client_script
from .._shell.sockets import abort_with_reset
from .logs import log_refused

if TYPE_CHECKING:
    from .serve import Log, ServeOptions

__all__ = [
    "HANDSHAKE_TIMEOUT",
    "Gate",
    "GuardedConnection",
    "Handshakes",
    "default_max_handshakes",
    "SelectSubprotocol",
    "Slots",
    "check_token",
    "peer",
    "presented_token",
    "redacted",
    "redacted_url",
    "refuse",
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


def redacted(path: str, secret: str | bytes | None = None) -> str:
    """The request path for logs, with what looks like a token hidden wherever it is.

    The value of a ``token`` parameter (any case) in the query or the fragment becomes
    ``***``, and so does the ``secret`` itself, as written or percent-encoded, in a
    path segment or anywhere else.
    """
    if secret:
        text = secret.decode() if isinstance(secret, bytes) else secret
        forms = {text, urllib.parse.quote(text, safe=""), urllib.parse.quote_plus(text)}
        for form in sorted(forms, key=len, reverse=True):
            path = path.replace(form, "***")
    url = urllib.parse.urlsplit(path)
    return urllib.parse.urlunsplit(
        url._replace(query=_redacted_pairs(url.query), fragment=_redacted_pairs(url.fragment))
    )


def _redacted_pairs(text: str) -> str:
    if "=" not in text:
        return text
    pairs = urllib.parse.parse_qsl(text, keep_blank_values=True)
    if not any(name.lower() == "token" for name, _ in pairs):
        return text
    shown = [(name, "***" if name.lower() == "token" else value) for name, value in pairs]
    return urllib.parse.urlencode(shown, safe="*")


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
    return str(address) or "unix"  # a Unix socket's peer has no address


def refuse(
    connection: ServerConnection,
    log: Log,
    status: http.HTTPStatus,
    why: str,
    secret: str | bytes | None = None,
) -> Response:
    """A plain text refusal, logged as ``refused PEER PATH: STATUS WHY`` with the path
    redacted (``secret`` hidden wherever it appears)."""
    request = connection.request
    path = redacted(request.path, secret) if request is not None else "?"
    log_refused(log, peer(connection), path, status.value, why)
    return connection.respond(status, f"{why}\n")


def check_token(
    connection: ServerConnection, request: Request, token: bytes, log: Log
) -> Response | None:
    """401 without a token, 403 with a wrong one (compared in constant time), else None."""
    presented = presented_token(request)
    if presented is None:
        response = refuse(connection, log, http.HTTPStatus.UNAUTHORIZED, "missing token", token)
        response.headers["WWW-Authenticate"] = 'Bearer realm="wsfanout"'
        return response
    if not hmac.compare_digest(presented.encode(), token):
        return refuse(connection, log, http.HTTPStatus.FORBIDDEN, "wrong token", token)
    return None


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
        limit = options.max_handshakes
        self.handshakes = Handshakes(default_max_handshakes() if limit is None else limit, log)
        self.slots = slots
        self.log = log

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        script = client_script(connection, request)
        if script is not None:
            return script
        if self.token is None:
            return None
        return check_token(connection, request, self.token, self.log)

    def process_response(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> Response | None:
        if response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS:
            return None  # refused by websockets itself: logged by http.log_refusals
        slots = self.slots
        if slots is None:
            return None
        if not slots.acquire(False):
            return refuse(
                connection,
                self.log,
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                f"too many clients (max {self.max_clients})",
                self.token,
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


HANDSHAKE_TIMEOUT = 3.0
"""Seconds a client gets to finish its opening handshake (websockets' default is 10)."""


def default_max_handshakes() -> int:
    """Pending handshakes allowed by default: a quarter of the descriptors this process
    may open (64 under a limit of 256), so half-open connections cannot starve the
    clients, the listening socket and Redis of descriptors; at least 16."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 65536
    return max(16, soft // 4)


class Handshakes:
    """The connections whose opening handshake is under way, at most ``limit`` of them.

    A connection past the limit makes room by cutting the oldest pending one (a reset):
    a legitimate client finishes its handshake in a round trip or two, so the oldest
    is, in all likelihood, a slowloris that opened it and never finished. Cuts are
    logged once per ``interval`` seconds with their count, not once per connection.
    """

    def __init__(self, limit: int, log: Log, interval: float = 10.0) -> None:
        self.limit = limit
        self.log = log
        self.interval = interval
        self.pending: dict[ServerConnection, None] = {}
        self.cut = 0
        self._unlogged = 0
        self._logged_at: float | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Pickled to each worker process, where it starts with nothing pending.
        return {"limit": self.limit, "log": self.log, "interval": self.interval}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["limit"], state["log"], state["interval"])  # type: ignore[misc]

    def begin(self, connection: ServerConnection) -> None:
        pending = self.pending
        while len(pending) >= self.limit:
            oldest = next(iter(pending))
            del pending[oldest]
            self.cut += 1
            self._unlogged += 1
            abort_with_reset(oldest.transport)
        pending[connection] = None
        if self._unlogged:
            self._report()

    def end(self, connection: ServerConnection) -> None:
        self.pending.pop(connection, None)

    def cut_all(self) -> None:
        """Shutting down: cut every pending handshake (nothing was subscribed on them)."""
        while self.pending:
            connection, _ = self.pending.popitem()
            abort_with_reset(connection.transport)

    def _report(self) -> None:
        now = asyncio.get_running_loop().time()
        if self._logged_at is not None and now - self._logged_at < self.interval:
            return
        self._logged_at = now
        self.log(
            f"cut {self._unlogged} pending handshakes, oldest first "
            f"(max {self.limit} pending; {self.cut} so far)",
            always=True,
        )
        self._unlogged = 0

    def connection_class(self) -> type[ServerConnection]:
        """websockets' ``create_connection``: connections counted while they handshake
        (a partial, not a class, so that it pickles to worker processes)."""
        return cast(type[ServerConnection], functools.partial(GuardedConnection, guard=self))


class GuardedConnection(ServerConnection):
    """A server connection counted in ``guard`` from accept to the handshake's end."""

    def __init__(self, *args: Any, guard: Handshakes, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.guard.begin(self)

    async def handshake(self, *args: Any, **kwargs: Any) -> None:
        try:
            await super().handshake(*args, **kwargs)
        finally:
            self.guard.end(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.end(self)
        super().connection_lost(exc)
