"""``wsfanout serve``: a broadcast relay from standard input to WebSocket subscribers.

Theory of operation
-------------------
A thread reads standard input (a pipe, a file or a terminal alike) in chunks, splits
them into lines and hands each batch of lines to the event loop, waiting until the
loop has published them: the reader never runs ahead of the hub, and one handoff
carries many lines when input is fast. Every line is one message (text if it is
UTF-8, binary otherwise) published to every subscriber, each under the policy its
route gives it.

Who may subscribe is settled before the WebSocket upgrade: the token check runs in
``process_request`` (401 without a token, 403 with a wrong one), websockets' own
``origins`` check refuses foreign origins (403), and ``process_response`` caps the
number of admitted clients (503) once the handshake would otherwise succeed.

Shutdown stops accepting connections, then ``Hub.aclose`` sends every subscriber a
close frame (1000 after ``--exit-on-eof``, 1001 on a signal) and aborts those that
do not finish closing within ``close_timeout``, so a stalled client cannot hold the
exit up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import http
import json
import os
import signal
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from typing import IO

import attrs
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidOrigin
from websockets.http11 import Request, Response
from websockets.typing import Origin, Subprotocol

from ._hub import Hub
from ._routes import Routes
from .exceptions import HubClosedError

__all__ = ["ServeOptions", "run_server"]

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


@attrs.frozen(kw_only=True)
class ServeOptions:
    """Everything ``wsfanout serve`` was told, validated by the command line."""

    routes: Routes
    """Which policy each subscriber gets; ``--policy`` is a routing with a default only."""
    describe: str
    """What the listening line says about the policy: ``policy chat``, ``routes r.toml``."""
    host: str = "127.0.0.1"
    port: int = 8765
    origins: tuple[str | None, ...] | None = None
    token: str | None = None
    max_clients: int | None = None
    max_size: int = 4096
    exit_on_eof: bool = False
    wait_clients: int = 0
    key_field: str | None = None
    close_timeout: float = 2.0
    drain_timeout: float = 5.0
    quiet: bool = False


class _Log:
    """Lines for people on standard error, flushed at once so scripts can follow them."""

    def __init__(self, stream: IO[str], quiet: bool) -> None:
        self.stream = stream
        self.quiet = quiet

    def __call__(self, line: str, *, always: bool = False) -> None:
        if always or not self.quiet:
            print(f"wsfanout: {line}", file=self.stream, flush=True)


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


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


class _Gate:
    """Admission before the upgrade: the token, then the cap on clients."""

    def __init__(self, options: ServeOptions, log: _Log) -> None:
        self.token = None if options.token is None else options.token.encode()
        self.max_clients = options.max_clients
        self.admitted: set[ServerConnection] = set()
        self.log = log

    def _refuse(self, connection: ServerConnection, status: http.HTTPStatus, why: str) -> Response:
        request = connection.request
        path = redacted(request.path) if request is not None else "?"
        self.log(f"refused {_peer(connection)} {path}: {status.value} {why}")
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
            if isinstance(connection.protocol.handshake_exc, InvalidOrigin):
                origin = request.headers.get("Origin", "none")
                why = f"403 origin {origin} not allowed"
                self.log(f"refused {_peer(connection)} {redacted(request.path)}: {why}")
            return None
        if self.max_clients is None:
            return None
        if len(self.admitted) >= self.max_clients:
            return self._refuse(
                connection,
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                f"too many clients (max {self.max_clients})",
            )
        admitted = self.admitted
        admitted.add(connection)
        connection.connection_lost_waiter.add_done_callback(lambda _: admitted.discard(connection))
        return None


class _Relay:
    """The server's state: its hub, who is connected, and the end of input."""

    def __init__(self, options: ServeOptions, log: _Log) -> None:
        self.options = options
        self.log = log
        self.hub = Hub(close_timeout=options.close_timeout)
        self.enough_clients = asyncio.Event()
        self.eof = asyncio.Event()
        self.published = 0
        if options.wait_clients == 0:
            self.enough_clients.set()

    async def handler(self, connection: ServerConnection) -> None:
        assert connection.request is not None
        route = self.options.routes.route_for(connection.request, connection.subprotocol)
        who = f"{_peer(connection)} {redacted(connection.request.path)}"
        try:
            async with self.hub.subscribe(connection, policy=route.policy) as subscriber:
                self.log(f"client connected: {who} policy {route.policy_name}")
                if len(self.hub) >= self.options.wait_clients:
                    self.enough_clients.set()
                with contextlib.suppress(ConnectionClosed):
                    async for _ in connection:  # subscribers are not expected to talk
                        pass
        except HubClosedError:  # joined while shutting down
            return
        stats = subscriber.stats()
        close = f", closed: {stats.close.code} {stats.close.cause}" if stats.close else ""
        self.log(f"client disconnected: {who} sent {stats.sent}, dropped {stats.dropped}{close}")

    def publish_lines(self, lines: list[bytes]) -> None:
        hub = self.hub
        key_field = self.options.key_field
        for line in lines:
            if line.endswith(b"\r"):
                line = line[:-1]
            message: str | bytes
            try:
                message = line.decode()
            except UnicodeDecodeError:
                message = line
            key = None
            if key_field is not None and isinstance(message, str):
                key = _key_of(message, key_field)
            try:
                hub.publish(message, key=key)
            except HubClosedError:  # input still arriving while shutting down
                return
            self.published += 1

    async def drain(self) -> None:
        """Wait until no subscriber has anything queued, or ``drain_timeout`` passes."""
        # A subscriber has a relay task exactly while it has something queued (see
        # _relay.py), and nothing new is published after the end of input.
        relays = [sub._relay for sub in self.hub.subscribers if sub._relay is not None]
        if relays:
            await asyncio.wait(relays, timeout=self.options.drain_timeout)


def _key_of(line: str, field: str) -> str | None:
    """The conflation key of a JSON object line: the value of ``field``, if present."""
    if not line.startswith("{"):
        return None
    try:
        document = json.loads(line)
    except ValueError:
        return None
    if not isinstance(document, dict) or field not in document:
        return None
    value = document[field]
    return value if isinstance(value, str) else json.dumps(value)


def _read_input(fd: int, loop: asyncio.AbstractEventLoop, relay: _Relay) -> None:
    """Read lines from ``fd`` and publish them on ``loop``; runs in its own thread.

    It reads the file descriptor with ``os.read``, not through ``sys.stdin``: a thread
    blocked inside a buffered reader at exit would hold its lock while the interpreter
    shuts down.
    """

    def handoff(lines: list[bytes]) -> None:
        done: concurrent.futures.Future[None] = concurrent.futures.Future()

        def publish() -> None:
            try:
                relay.publish_lines(lines)
            finally:
                done.set_result(None)

        loop.call_soon_threadsafe(publish)
        done.result()

    pending = b""
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError as exc:  # no standard input at all (closed): end of input
                why = f"cannot read standard input: {exc.strerror or exc}"
                loop.call_soon_threadsafe(relay.log, why)
                break
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            if lines:
                handoff(lines)
        if pending:
            handoff([pending])
        loop.call_soon_threadsafe(relay.eof.set)
    except RuntimeError:  # the loop closed under us: the server is exiting
        return


def _select_subprotocol(
    routes: Routes,
) -> Callable[[ServerConnection, Sequence[Subprotocol]], Subprotocol | None] | None:
    wanted = routes.subprotocols
    if not wanted:
        return None

    def select(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        # Negotiate a subprotocol a route names; a client offering none is still welcome.
        for name in wanted:
            if name in offered:
                return Subprotocol(name)
        return None

    return select


def _listening(server: Server) -> str:
    urls = []
    for sock in server.sockets:
        host, port = sock.getsockname()[:2]
        urls.append(f"ws://[{host}]:{port}" if ":" in host else f"ws://{host}:{port}")
    return " ".join(urls)


async def run_server(options: ServeOptions, stdin: int, stdout: IO[str], stderr: IO[str]) -> int:
    """Serve until a signal, or the end of input with ``exit_on_eof``; return the exit code."""
    loop = asyncio.get_running_loop()
    log = _Log(stderr, options.quiet)
    relay = _Relay(options, log)
    gate = _Gate(options, log)
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if stop.is_set():  # a second signal: give up on a clean shutdown
            stderr.flush()
            os._exit(128 + signum)
        received.append(signum)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)

    origins: list[Origin | None] | None = None
    if options.origins is not None:
        origins = [None if o is None else Origin(o) for o in options.origins]
    server = await serve(
        relay.handler,
        options.host,
        options.port,
        origins=origins,
        process_request=gate.process_request,
        process_response=gate.process_response,
        select_subprotocol=_select_subprotocol(options.routes),
        subprotocols=[Subprotocol(name) for name in options.routes.subprotocols] or None,
        compression=None,
        max_size=options.max_size,
        close_timeout=options.close_timeout,
    )
    print(f"wsfanout: listening on {_listening(server)} ({options.describe})", file=stdout)
    stdout.flush()
    if options.host not in LOOPBACK and options.token is None:
        log(
            f"warning: listening on {options.host} without --token-env: anyone who can "
            "reach this port can subscribe",
            always=True,
        )

    async def feed() -> None:
        await relay.enough_clients.wait()
        thread = threading.Thread(
            target=_read_input,
            args=(stdin, loop, relay),
            name="wsfanout-stdin",
            daemon=True,
        )
        thread.start()
        await relay.eof.wait()
        log(f"end of input after {relay.published} messages")

    feeding = asyncio.create_task(feed())
    stopping = asyncio.create_task(stop.wait())
    waiting = {stopping, feeding} if options.exit_on_eof else {stopping}
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    code = 1001
    if not stop.is_set() and feeding.done():
        await relay.drain()
        code = 1000
    feeding.cancel()
    stopping.cancel()

    server.close(close_connections=False)
    await relay.hub.aclose(code=code, timeout=options.close_timeout)
    try:
        async with asyncio.timeout(options.close_timeout + 1.0):
            await server.wait_closed()
    except TimeoutError:
        for connection in server.all_connections:
            connection.transport.abort()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(signum)
    if received:
        log(f"stopped by {signal.Signals(received[0]).name}")
        return 130 if received[0] == signal.SIGINT else 0
    return 0
