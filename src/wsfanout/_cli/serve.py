"""``wsfanout serve``: a broadcast relay from standard input to WebSocket subscribers.

Theory of operation
-------------------
Every line of standard input (``input.py``) is one message published to every
subscriber, each under the policy its route gives it; who may subscribe is settled
before the upgrade (``admission.py``); signals and start-up failures are
``process.py``'s.

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
import contextlib
import multiprocessing
import os
import socket
import sys
import threading
from collections.abc import Callable
from typing import IO, Any

import attrs
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin, Subprotocol

from .._backplane.redis import RedisBackplane
from .._backplane.workers import WorkerPool
from .._core.errors import HubClosedError
from .._core.frames import SUBPROTOCOL
from .._files.routes import Routes
from .._shell.hub import Hub
from .._shell.sockets import abort_with_reset
from .admission import (
    HANDSHAKE_TIMEOUT,
    Gate,
    SelectSubprotocol,
    peer,
    redacted,
    redacted_url,
)
from .input import Publisher, follow_channels, redis_unreachable, start_input
from .process import (
    STARTUP_TIMEOUT,
    OncePerInterval,
    ServeError,
    Signals,
    announce,
    cancel,
    within,
    worker_ended,
)

__all__ = ["NAMESPACE", "Log", "ServeError", "ServeOptions", "run_server"]


LOOPBACK = frozenset({"127.0.0.1", "::1", "localhost"})


NAMESPACE = "wsfanout"
"""The backplane's namespace: its Redis channels are ``wsfanout:*``."""


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
    max_handshakes: int | None = None
    """Opening handshakes under way at once; None: a quarter of the descriptor limit."""
    handshake_timeout: float = HANDSHAKE_TIMEOUT
    """Seconds a client gets to finish its opening handshake."""
    drain_timeout: float = 5.0
    quiet: bool = False
    redis: str | None = None
    """A Redis URL: the hub shares a backplane with every hub on that Redis."""
    workers: int = 1
    """Processes serving the port; 2 or more need ``redis`` and run a worker pool."""
    input_channels: tuple[str, ...] = ()
    """Redis pub/sub channels whose messages are published like lines of input."""


class Log:
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
            stream = self.stream or sys.stderr
            # One write per line, newline included: workers share one standard error,
            # and an unbuffered stream would write print()'s newline apart.
            stream.write(f"wsfanout: {tag}{line}\n")
            stream.flush()


class _Subscribers:
    """Serves one connection on a hub, under the policy its route gives, with log lines.

    A worker pool's handler (it is pickled to every worker), and the single server's.
    ``joined(hub)`` is called once each client is subscribed.
    """

    def __init__(
        self,
        routes: Routes,
        log: Log,
        joined: Callable[[Hub], None] | None = None,
        *,
        secret: str | None = None,
    ) -> None:
        self.routes = routes
        self.log = log
        self.joined = joined
        self.secret = secret
        """The token, hidden wherever it appears in a logged path."""

    async def __call__(self, hub: Hub, connection: ServerConnection) -> None:
        assert connection.request is not None
        route = self.routes.route_for(connection.request, connection.subprotocol)
        who = f"{peer(connection)} {redacted(connection.request.path, self.secret)}"
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


def _serve_options(options: ServeOptions, gate: Gate) -> dict[str, Any]:
    """websockets' ``serve()`` keyword arguments, the same for one server or N workers."""
    origins: list[Origin | None] | None = None
    if options.origins is not None:
        origins = [None if o is None else Origin(o) for o in options.origins]
    # What routes name first, then the wsfanout.v1 framing (docs/protocol.md).
    wanted = tuple(dict.fromkeys((*options.routes.subprotocols, SUBPROTOCOL)))
    return {
        "origins": origins,
        "process_request": gate.process_request,
        "process_response": gate.process_response,
        "select_subprotocol": SelectSubprotocol(wanted),
        "subprotocols": [Subprotocol(name) for name in wanted],
        "compression": None,
        "max_size": options.max_size,
        "close_timeout": options.close_timeout,
        "open_timeout": options.handshake_timeout,
        "create_connection": gate.handshakes.connection_class(),
    }


def _listening(server: Server) -> str:
    urls = []
    for sock in server.sockets:
        host, port = sock.getsockname()[:2]
        urls.append(_ws_url(host, port))
    return " ".join(urls)


def _ws_url(host: str, port: int) -> str:
    return f"ws://[{host}]:{port}" if ":" in host else f"ws://{host}:{port}"


async def run_server(
    options: ServeOptions, stdin: int, stdout: IO[str] | None, stderr: IO[str]
) -> int:
    """Serve until a signal, or the end of input with ``exit_on_eof``; return the exit code.

    Raises :class:`ServeError` when it cannot start, OSError when it cannot listen.
    """
    if options.redis is not None:
        why = await redis_unreachable(options.redis)
        if why is not None:
            raise ServeError(f"cannot reach Redis at {redacted_url(options.redis)}: {why}")
    signals = Signals(asyncio.get_running_loop(), stderr)
    quieter = OncePerInterval(Log(stderr, False))
    quieter.install(asyncio.get_running_loop())
    try:
        if options.workers > 1:
            return await _run_pool(options, stdin, stdout, stderr, signals)
        return await _run_single(options, stdin, stdout, stderr, signals)
    finally:
        signals.remove()
        quieter.remove()


async def _start_backplane(backplane: RedisBackplane | None, options: ServeOptions) -> None:
    if backplane is None:
        return
    assert options.redis is not None
    await backplane.start()
    where = redacted_url(options.redis)
    await within(backplane.wait_for(lambda h: h.connected), f"cannot connect to Redis at {where}")


async def _start_channels(options: ServeOptions, publisher: Publisher) -> asyncio.Task[None] | None:
    if not options.input_channels:
        return None
    assert options.redis is not None
    subscribed = asyncio.Event()
    task = asyncio.create_task(
        follow_channels(options.redis, options.input_channels, publisher, subscribed)
    )
    names = ", ".join(options.input_channels)
    try:
        await within(subscribed.wait(), f"cannot subscribe to Redis channel {names}")
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


def _warn_if_open(options: ServeOptions, log: Log) -> None:
    if options.host not in LOOPBACK and options.token is None:
        log(
            f"warning: listening on {options.host} without --token-env: anyone who can "
            "reach this port can subscribe",
            always=True,
        )


async def _run_single(
    options: ServeOptions, stdin: int, stdout: IO[str] | None, stderr: IO[str], signals: Signals
) -> int:
    """One process: its hub has the subscribers, and publishes the input."""
    log = Log(stderr, options.quiet)
    backplane = None
    if options.redis is not None:
        backplane = RedisBackplane(options.redis, namespace=NAMESPACE)
    hub = Hub(close_timeout=options.close_timeout, backplane=backplane)
    publisher = Publisher(hub, backplane, options, log)
    enough_clients = asyncio.Event()
    if options.wait_clients == 0:
        enough_clients.set()

    def joined(hub: Hub) -> None:
        if len(hub) >= options.wait_clients:
            enough_clients.set()

    subscribers = _Subscribers(options.routes, log, joined, secret=options.token)
    slots = None if options.max_clients is None else threading.BoundedSemaphore(options.max_clients)
    gate = Gate(options, log, slots)
    channels: asyncio.Task[None] | None = None
    server: Server | None = None
    code = 1001
    try:
        await _start_backplane(backplane, options)
        channels = await _start_channels(options, publisher)

        async def handler(connection: ServerConnection) -> None:
            await subscribers(hub, connection)

        server = await serve(handler, options.host, options.port, **_serve_options(options, gate))
        announce(stdout, f"wsfanout: listening on {_listening(server)} ({_describe(options)})", log)
        _warn_if_open(options, log)

        async def feed() -> None:
            await enough_clients.wait()
            start_input(stdin, publisher)
            await publisher.eof.wait()
            log(f"end of input after {publisher.published} messages")

        feeding = asyncio.create_task(feed())
        stopping = asyncio.create_task(signals.stop.wait())
        waiting = {stopping, feeding} if options.exit_on_eof else {stopping}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        if not signals.stop.is_set() and feeding.done():
            if options.drain_timeout > 0:
                await hub.drain(options.drain_timeout)
            code = 1000
        feeding.cancel()
        stopping.cancel()
    finally:
        await cancel(channels)
        if server is not None:
            server.close(close_connections=False)
        gate.handshakes.cut_all()  # no one is subscribed there: nothing to wait for
        await hub.aclose(code=code, timeout=options.close_timeout)
        if server is not None:
            try:
                async with asyncio.timeout(options.close_timeout + 1.0):
                    await server.wait_closed()
            except TimeoutError:
                for connection in server.all_connections:
                    abort_with_reset(connection.transport)
    return signals.exit_code(log)


async def _run_pool(
    options: ServeOptions, stdin: int, stdout: IO[str] | None, stderr: IO[str], signals: Signals
) -> int:
    """N worker processes serve the clients; this one publishes the input through Redis."""
    assert options.redis is not None
    log = Log(stderr, options.quiet)
    hub_id = f"{socket.gethostname()}/{os.getpid()}"
    backplane = RedisBackplane(options.redis, namespace=NAMESPACE, hub_id=hub_id)
    hub = Hub(backplane=backplane)
    publisher = Publisher(hub, backplane, options, log)
    worker_log = Log(None, options.quiet, worker=True)
    slots = None
    if options.max_clients is not None:
        slots = multiprocessing.get_context("spawn").BoundedSemaphore(options.max_clients)
    gate = Gate(options, worker_log, slots)
    pool = WorkerPool(
        options.workers,
        options.redis,
        host=options.host,
        port=options.port,
        namespace=NAMESPACE,
        hub_id=hub_id,
        handler=_Subscribers(options.routes, worker_log, secret=options.token),
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
            loop.add_reader(process.sentinel, worker_ended, ended, process.pid)
        # Only now: a message published before every worker subscribed would miss some.
        channels = await _start_channels(options, publisher)
        if not signals.stop.is_set():
            url = _ws_url(options.host, pool.port)
            announce(stdout, f"wsfanout: listening on {url} ({_describe(options)})", log)
            _warn_if_open(options, log)
            start_input(stdin, publisher)

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
        await cancel(channels)
        await asyncio.to_thread(pool.stop, options.close_timeout + 5.0)
        await hub.aclose()
    if ended.done() and not signals.stop.is_set():
        log(f"worker {ended.result()} exited on its own; stopped the others", always=True)
        return 1
    return signals.exit_code(log)
