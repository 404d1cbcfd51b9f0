"""``wsfanout serve``: a broadcast relay from standard input to WebSocket subscribers.

Theory of operation
-------------------
A thread reads standard input (a pipe, a file or a terminal alike) in chunks, splits
them into lines and hands each batch of lines to the event loop, waiting until the
loop has published them: the reader never runs ahead of the hub, and one handoff
carries many lines when input is fast. Every line is one message (text if it is
UTF-8, binary otherwise) published to every subscriber, each under the policy its
route gives it. Messages of ``--input-channel`` Redis channels are published the same
way, one Redis message to one WebSocket message.

Who may subscribe is settled before the WebSocket upgrade: the token check runs in
``process_request`` (401 without a token, 403 with a wrong one), websockets' own
``origins`` check refuses foreign origins (403), and ``process_response`` caps the
number of admitted clients (503) once the handshake would otherwise succeed.

With ``--redis``, the hub has a :class:`RedisBackplane`: what this server publishes
also reaches every hub on that Redis, and what they publish reaches this server's
clients. Publishing then waits while the backplane's publish buffer is more than
half full (and Redis connected), so fast input slows down to what Redis takes
instead of overflowing the buffer. With ``--workers N`` (N >= 2), N worker processes
of a :class:`WorkerPool` serve the port and the clients; this process serves no one:
it reads the input and publishes it through its own hub, which has a backplane and
no subscribers, so every worker receives every message, in the order it was read.

Shutdown stops accepting connections, then ``Hub.aclose`` sends every subscriber a
close frame (1000 after ``--exit-on-eof``, 1001 on a signal) and aborts those that
do not finish closing within ``close_timeout``, so a stalled client cannot hold the
exit up. With workers, each worker does this for its own clients.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import http
import json
import multiprocessing
import os
import random
import signal
import socket
import sys
import threading
import urllib.parse
from collections.abc import Awaitable, Callable, Sequence
from typing import IO, Any, Protocol

import attrs
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidOrigin
from websockets.http11 import Request, Response
from websockets.typing import Origin, Subprotocol

from .._backplane.redis import RedisBackplane
from .._backplane.workers import WorkerPool
from .._core.errors import HubClosedError
from .._files.routes import Routes
from .._shell.hub import Hub

__all__ = ["NAMESPACE", "ServeError", "ServeOptions", "redacted_url", "run_server"]

LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})

NAMESPACE = "wsfanout"
"""The backplane's namespace: its Redis channels are ``wsfanout:*``."""

STARTUP_TIMEOUT = 30.0
"""Seconds to connect to Redis, subscribe and start the workers, once Redis answered."""

SLICE = 1024
"""Most lines published between two looks at the backplane's publish buffer."""
PACE_HIGH = 4096
"""Publishing waits while more messages than this wait for Redis (and Redis is
connected). Below the default buffer's 10,000 by more than a slice, so fast input
never makes the buffer drop."""
PACE_LOW = 1024
"""...until no more than this many wait."""

RETRY_DELAYS = (0.05, 2.0)
"""Reconnecting to an input channel waits from the first to the second, doubling."""


class ServeError(Exception):
    """The server cannot start (Redis unreachable, a worker that failed): exit 1."""


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
    redis: str | None = None
    """A Redis URL: the hub shares a backplane with every hub on that Redis."""
    workers: int = 1
    """Processes serving the port; 2 or more need ``redis`` and run a worker pool."""
    input_channels: tuple[str, ...] = ()
    """Redis pub/sub channels whose messages are published like lines of input."""


class _Log:
    """Lines for people on standard error, flushed at once so scripts can follow them.

    ``stream=None`` writes to ``sys.stderr`` of the process it runs in: a worker's log
    is pickled to it. A worker's lines name its process id.
    """

    def __init__(self, stream: IO[str] | None, quiet: bool, *, worker: bool = False) -> None:
        self.stream = stream
        self.quiet = quiet
        self.worker = worker

    def __call__(self, line: str, *, always: bool = False) -> None:
        if always or not self.quiet:
            tag = f"worker {os.getpid()}: " if self.worker else ""
            print(f"wsfanout: {tag}{line}", file=self.stream or sys.stderr, flush=True)


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


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        host = address[0]
        return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"
    return str(address)


class _Slots(Protocol):
    """Places for clients: a threading or a multiprocessing semaphore."""

    def acquire(self, block: bool = ..., /) -> bool: ...

    def release(self) -> None: ...


class _Gate:
    """Admission before the upgrade: the token, then the cap on clients.

    ``slots`` holds one place per client admitted; with workers it is a semaphore
    shared by every worker process, so the cap holds for the whole server.
    """

    def __init__(self, options: ServeOptions, log: _Log, slots: _Slots | None) -> None:
        self.token = None if options.token is None else options.token.encode()
        self.max_clients = options.max_clients
        self.slots = slots
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


class _Subscribers:
    """Serves one connection on a hub, under the policy its route gives, with log lines.

    A worker pool's handler (it is pickled to every worker), and the single server's.
    ``joined(hub)`` is called once each client is subscribed.
    """

    def __init__(
        self, routes: Routes, log: _Log, joined: Callable[[Hub], None] | None = None
    ) -> None:
        self.routes = routes
        self.log = log
        self.joined = joined

    async def __call__(self, hub: Hub, connection: ServerConnection) -> None:
        assert connection.request is not None
        route = self.routes.route_for(connection.request, connection.subprotocol)
        who = f"{_peer(connection)} {redacted(connection.request.path)}"
        try:
            async with hub.subscribe(connection, policy=route.policy) as subscriber:
                self.log(f"client connected: {who} policy {route.policy_name}")
                if self.joined is not None:
                    self.joined(hub)
                with contextlib.suppress(ConnectionClosed):
                    async for _ in connection:  # subscribers are not expected to talk
                        pass
        except HubClosedError:  # joined while shutting down
            return
        stats = subscriber.stats()
        close = f", closed: {stats.close.code} {stats.close.cause}" if stats.close else ""
        self.log(f"client disconnected: {who} sent {stats.sent}, dropped {stats.dropped}{close}")


class _SelectSubprotocol:
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


def _serve_options(options: ServeOptions, gate: _Gate) -> dict[str, Any]:
    """websockets' ``serve()`` keyword arguments, the same for one server or N workers."""
    origins: list[Origin | None] | None = None
    if options.origins is not None:
        origins = [None if o is None else Origin(o) for o in options.origins]
    wanted = options.routes.subprotocols
    return {
        "origins": origins,
        "process_request": gate.process_request,
        "process_response": gate.process_response,
        "select_subprotocol": _SelectSubprotocol(wanted) if wanted else None,
        "subprotocols": [Subprotocol(name) for name in wanted] or None,
        "compression": None,
        "max_size": options.max_size,
        "close_timeout": options.close_timeout,
    }


class _Publisher:
    """Publishes what comes in (lines of standard input, Redis channel messages) on a hub."""

    def __init__(
        self, hub: Hub, backplane: RedisBackplane | None, options: ServeOptions, log: _Log
    ) -> None:
        self.hub = hub
        self.backplane = backplane
        self.key_field = options.key_field
        self.log = log
        self.published = 0
        self.eof = asyncio.Event()

    def publish(self, data: bytes) -> bool:
        """Publish one message; False once the hub is closed."""
        message: str | bytes
        try:
            message = data.decode()
        except UnicodeDecodeError:
            message = data
        key = None
        if self.key_field is not None and isinstance(message, str):
            key = _key_of(message, self.key_field)
        try:
            self.hub.publish(message, key=key)
        except HubClosedError:  # input still arriving while shutting down
            return False
        self.published += 1
        return True

    async def publish_lines(self, lines: list[bytes]) -> None:
        for start in range(0, len(lines), SLICE):
            for line in lines[start : start + SLICE]:
                if not self.publish(line.removesuffix(b"\r")):
                    return
            await self.pace()

    async def pace(self) -> None:
        """Wait while too much waits for a connected Redis (see the module's docstring)."""
        backplane = self.backplane
        if backplane is None or backplane.health().buffered <= PACE_HIGH:
            return
        if backplane.connected:
            await backplane.wait_for(lambda h: not h.connected or h.buffered <= PACE_LOW)


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


def _read_input(fd: int, loop: asyncio.AbstractEventLoop, publisher: _Publisher) -> None:
    """Read lines from ``fd`` and publish them on ``loop``; runs in its own thread.

    It reads the file descriptor with ``os.read``, not through ``sys.stdin``: a thread
    blocked inside a buffered reader at exit would hold its lock while the interpreter
    shuts down.
    """

    def handoff(lines: list[bytes]) -> None:
        asyncio.run_coroutine_threadsafe(publisher.publish_lines(lines), loop).result()

    pending = b""
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError as exc:  # no standard input at all (closed): end of input
                why = f"cannot read standard input: {exc.strerror or exc}"
                loop.call_soon_threadsafe(publisher.log, why)
                break
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            if lines:
                handoff(lines)
        if pending:
            handoff([pending])
        loop.call_soon_threadsafe(publisher.eof.set)
    except (RuntimeError, concurrent.futures.CancelledError):  # the server is exiting
        return


async def _follow_channels(
    url: str, channels: tuple[str, ...], publisher: _Publisher, subscribed: asyncio.Event
) -> None:
    """Publish every message of the Redis ``channels``; resubscribe when Redis fails.

    Sets ``subscribed`` once Redis has confirmed every channel.
    """
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    log = publisher.log
    names = ", ".join(channels)
    client = aredis.Redis.from_url(
        url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=5.0, socket_keepalive=True
    )
    delay = RETRY_DELAYS[0]
    lost = False
    try:
        while True:
            pubsub = client.pubsub()
            confirmed = 0
            try:
                await pubsub.subscribe(*channels)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    if message["type"] == "message":
                        if not publisher.publish(message["data"]):
                            return
                        await publisher.pace()
                    elif message["type"] == "subscribe":
                        confirmed += 1
                        if confirmed == len(channels):
                            delay = RETRY_DELAYS[0]
                            subscribed.set()
                            if lost:
                                log(f"subscribed again to Redis channel {names}", always=True)
                                lost = False
            except Exception as exc:
                if not lost:
                    log(
                        f"warning: lost Redis channel {names} ({exc}); messages published "
                        "there meanwhile are lost; resubscribing",
                        always=True,
                    )
                    lost = True
            finally:
                with contextlib.suppress(Exception):  # the connection may already be broken
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            await asyncio.sleep(random.uniform(delay / 2, delay))  # backoff, jittered
            delay = min(delay * 2, RETRY_DELAYS[1])
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()


async def _redis_unreachable(url: str) -> str | None:
    """Why Redis at ``url`` does not answer a PING, or None if it does."""
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    client = aredis.Redis.from_url(
        url, retry=Retry(NoBackoff(), 0), socket_connect_timeout=5.0, socket_timeout=5.0
    )
    try:
        await client.ping()
    except Exception as exc:
        return str(exc) or type(exc).__name__
    finally:
        with contextlib.suppress(Exception):
            await client.aclose()
    return None


async def _within(awaitable: Awaitable[Any], what: str) -> None:
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            await awaitable
    except TimeoutError:
        raise ServeError(f"{what} within {STARTUP_TIMEOUT:g} s") from None


def _listening(server: Server) -> str:
    urls = []
    for sock in server.sockets:
        host, port = sock.getsockname()[:2]
        urls.append(_ws_url(host, port))
    return " ".join(urls)


def _ws_url(host: str, port: int) -> str:
    return f"ws://[{host}]:{port}" if ":" in host else f"ws://{host}:{port}"


class _Signals:
    """SIGINT and SIGTERM set :attr:`stop`; a second one exits at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stderr: IO[str]) -> None:
        self.loop = loop
        self.stderr = stderr
        self.stop = asyncio.Event()
        self.received: list[int] = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        if self.stop.is_set():  # a second signal: give up on a clean shutdown
            self.stderr.flush()
            os._exit(128 + signum)
        self.received.append(signum)
        self.stop.set()

    def remove(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.loop.remove_signal_handler(signum)

    def exit_code(self, log: _Log) -> int:
        if not self.received:
            return 0
        log(f"stopped by {signal.Signals(self.received[0]).name}")
        return 130 if self.received[0] == signal.SIGINT else 0


async def run_server(options: ServeOptions, stdin: int, stdout: IO[str], stderr: IO[str]) -> int:
    """Serve until a signal, or the end of input with ``exit_on_eof``; return the exit code.

    Raises :class:`ServeError` when it cannot start, OSError when it cannot listen.
    """
    if options.redis is not None:
        why = await _redis_unreachable(options.redis)
        if why is not None:
            raise ServeError(f"cannot reach Redis at {redacted_url(options.redis)}: {why}")
    signals = _Signals(asyncio.get_running_loop(), stderr)
    try:
        if options.workers > 1:
            return await _run_pool(options, stdin, stdout, stderr, signals)
        return await _run_single(options, stdin, stdout, stderr, signals)
    finally:
        signals.remove()


def _start_input(stdin: int, publisher: _Publisher) -> None:
    thread = threading.Thread(
        target=_read_input,
        args=(stdin, asyncio.get_running_loop(), publisher),
        name="wsfanout-stdin",
        daemon=True,
    )
    thread.start()


async def _start_backplane(backplane: RedisBackplane | None, options: ServeOptions) -> None:
    if backplane is None:
        return
    assert options.redis is not None
    await backplane.start()
    where = redacted_url(options.redis)
    await _within(backplane.wait_for(lambda h: h.connected), f"cannot connect to Redis at {where}")


async def _start_channels(
    options: ServeOptions, publisher: _Publisher
) -> asyncio.Task[None] | None:
    if not options.input_channels:
        return None
    assert options.redis is not None
    subscribed = asyncio.Event()
    task = asyncio.create_task(
        _follow_channels(options.redis, options.input_channels, publisher, subscribed)
    )
    names = ", ".join(options.input_channels)
    try:
        await _within(subscribed.wait(), f"cannot subscribe to Redis channel {names}")
    except ServeError:
        task.cancel()
        raise
    return task


def _describe(options: ServeOptions) -> str:
    parts = [options.describe]
    if options.workers > 1:
        parts.append(f"{options.workers} workers")
    if options.redis is not None:
        parts.append(f"redis {redacted_url(options.redis)}")
    if options.input_channels:
        parts.append(f"input channel {', '.join(options.input_channels)}")
    return ", ".join(parts)


def _warn_if_open(options: ServeOptions, log: _Log) -> None:
    if options.host not in LOOPBACK and options.token is None:
        log(
            f"warning: listening on {options.host} without --token-env: anyone who can "
            "reach this port can subscribe",
            always=True,
        )


async def _run_single(
    options: ServeOptions, stdin: int, stdout: IO[str], stderr: IO[str], signals: _Signals
) -> int:
    """One process: its hub has the subscribers, and publishes the input."""
    log = _Log(stderr, options.quiet)
    backplane = None
    if options.redis is not None:
        backplane = RedisBackplane(options.redis, namespace=NAMESPACE)
    hub = Hub(close_timeout=options.close_timeout, backplane=backplane)
    publisher = _Publisher(hub, backplane, options, log)
    enough_clients = asyncio.Event()
    if options.wait_clients == 0:
        enough_clients.set()

    def joined(hub: Hub) -> None:
        if len(hub) >= options.wait_clients:
            enough_clients.set()

    subscribers = _Subscribers(options.routes, log, joined)
    slots = None if options.max_clients is None else threading.BoundedSemaphore(options.max_clients)
    gate = _Gate(options, log, slots)
    channels: asyncio.Task[None] | None = None
    server: Server | None = None
    code = 1001
    try:
        await _start_backplane(backplane, options)
        channels = await _start_channels(options, publisher)

        async def handler(connection: ServerConnection) -> None:
            await subscribers(hub, connection)

        server = await serve(handler, options.host, options.port, **_serve_options(options, gate))
        print(f"wsfanout: listening on {_listening(server)} ({_describe(options)})", file=stdout)
        stdout.flush()
        _warn_if_open(options, log)

        async def feed() -> None:
            await enough_clients.wait()
            _start_input(stdin, publisher)
            await publisher.eof.wait()
            log(f"end of input after {publisher.published} messages")

        feeding = asyncio.create_task(feed())
        stopping = asyncio.create_task(signals.stop.wait())
        waiting = {stopping, feeding} if options.exit_on_eof else {stopping}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not signals.stop.is_set() and feeding.done():
            await _drain(hub, options.drain_timeout)
            code = 1000
        feeding.cancel()
        stopping.cancel()
    finally:
        await _cancel(channels)
        if server is not None:
            server.close(close_connections=False)
        await hub.aclose(code=code, timeout=options.close_timeout)
        if server is not None:
            try:
                async with asyncio.timeout(options.close_timeout + 1.0):
                    await server.wait_closed()
            except TimeoutError:
                for connection in server.all_connections:
                    connection.transport.abort()
    return signals.exit_code(log)


async def _drain(hub: Hub, timeout: float) -> None:
    """Wait until no subscriber has anything queued, or ``timeout`` passes."""
    # A subscriber has a relay task exactly while it has something queued (see
    # _relay.py), and nothing new is published after the end of input.
    relays = [sub._relay for sub in hub.subscribers if sub._relay is not None]
    if relays:
        await asyncio.wait(relays, timeout=timeout)


async def _run_pool(
    options: ServeOptions, stdin: int, stdout: IO[str], stderr: IO[str], signals: _Signals
) -> int:
    """N worker processes serve the clients; this one publishes the input through Redis."""
    assert options.redis is not None
    log = _Log(stderr, options.quiet)
    hub_id = f"{socket.gethostname()}/{os.getpid()}"
    backplane = RedisBackplane(options.redis, namespace=NAMESPACE, hub_id=hub_id)
    hub = Hub(backplane=backplane)
    publisher = _Publisher(hub, backplane, options, log)
    worker_log = _Log(None, options.quiet, worker=True)
    slots = None
    if options.max_clients is not None:
        slots = multiprocessing.get_context("spawn").BoundedSemaphore(options.max_clients)
    gate = _Gate(options, worker_log, slots)
    pool = WorkerPool(
        options.workers,
        options.redis,
        host=options.host,
        port=options.port,
        namespace=NAMESPACE,
        hub_id=hub_id,
        handler=_Subscribers(options.routes, worker_log),
        close_timeout=options.close_timeout,
        serve_options=_serve_options(options, gate),
    )
    loop = asyncio.get_running_loop()
    ended: asyncio.Future[int] = loop.create_future()
    channels: asyncio.Task[None] | None = None
    watched: list[int] = []
    try:
        await _start_backplane(backplane, options)
        try:
            await asyncio.to_thread(pool.start, timeout=STARTUP_TIMEOUT)
        except RuntimeError as exc:
            raise ServeError(f"the workers did not start: {exc}") from None
        for process in pool.processes:
            watched.append(process.sentinel)
            loop.add_reader(process.sentinel, _worker_ended, ended, process.pid)
        # Only now: a message published before every worker subscribed would miss some.
        channels = await _start_channels(options, publisher)
        if not signals.stop.is_set():
            url = _ws_url(options.host, pool.port)
            print(f"wsfanout: listening on {url} ({_describe(options)})", file=stdout)
            stdout.flush()
            _warn_if_open(options, log)
            _start_input(stdin, publisher)

            async def end_of_input() -> None:
                await publisher.eof.wait()
                log(f"end of input after {publisher.published} messages")

            reporting = asyncio.create_task(end_of_input())
            stopping = asyncio.create_task(signals.stop.wait())
            waiting: set[asyncio.Future[Any]] = {stopping, ended}
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            reporting.cancel()
            stopping.cancel()
    finally:
        for fd in watched:
            loop.remove_reader(fd)
        await _cancel(channels)
        await asyncio.to_thread(pool.stop, options.close_timeout + 5.0)
        await hub.aclose()
    if ended.done() and not signals.stop.is_set():
        log(f"worker {ended.result()} exited on its own; stopped the others", always=True)
        return 1
    return signals.exit_code(log)


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _worker_ended(ended: asyncio.Future[int], pid: int | None) -> None:
    if not ended.done():
        ended.set_result(pid or 0)
