"""``wsfanout serve``: a broadcast relay from standard input to WebSocket subscribers.

Theory of operation
-------------------
Every line of standard input (``input.py``) is one message published to the
subscribers of its topic (every subscriber if it has none), each under the policy
its route gives it; ``POST /publish`` (``publish.py``) and Redis input channels
publish the same way. What a request gets is settled before the upgrade, by the
steps of one ``process_request`` chain and one ``process_response`` chain
(:func:`request_steps`, :func:`response_steps`): the publish endpoint, the token
check (``admission.py``), the topics a client may have (``topics.py``) and the cap
on clients. Where and how the server listens (TLS, a Unix socket, compression) is
``listen.py``'s; its options come from flags, the environment and a configuration
file (``options.py``); signals and start-up failures are ``process.py``'s.

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
import logging
import multiprocessing
import os
import socket
import threading
from collections.abc import Callable
from typing import IO, Any

import attrs
from websockets.asyncio.server import Server, ServerConnection, serve, unix_serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin, Subprotocol

from .._backplane.redis import RedisBackplane
from .._backplane.workers import WorkerPool
from .._core.errors import HubClosedError
from .._core.frames import SUBPROTOCOL
from .._core.history import History
from .._files.routes import Routes
from .._shell.hub import Hub
from .._shell.sockets import abort_with_reset
from .._shell.subscriber import Subscriber
from .admin import AdminServer, start_admin
from .admission import (
    HANDSHAKE_TIMEOUT,
    Gate,
    SelectSubprotocol,
    peer,
    redacted,
    redacted_url,
)
from .http import (
    ConnectionFactory,
    RequestStep,
    ResponseStep,
    ResponseSteps,
    Steps,
    log_refusals,
    only_get,
)
from .input import Publisher, follow_channels, redis_unreachable, start_input
from .listen import (
    ListenError,
    TLSContext,
    cannot_listen,
    check_socket_path,
    compression_settings,
    remove_socket,
    ws_url,
)
from .logs import NOTICE, DropSummary, LogSettings, event, install, log_closed, log_connected
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
from .publish import PublishEndpoint, PublishOff
from .topics import TopicGate, topics_of

__all__ = [
    "NAMESPACE",
    "Log",
    "ServeError",
    "ServeOptions",
    "request_steps",
    "response_steps",
    "run_server",
]


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
    unix: str | None = None
    """A Unix socket path to listen on instead of ``host`` and ``port``."""
    tls: TLSContext | None = None
    """Serve ``wss://`` with this context (``--tls-cert``, ``--tls-key``)."""
    compression: str = "shared"
    """``shared``, ``per-connection`` or ``off`` (see ``listen.COMPRESSION``)."""
    origins: tuple[str | None, ...] | None = None
    token: str | None = None
    max_clients: int | None = None
    max_size: int = 4096
    exit_on_eof: bool = False
    wait_clients: int = 0
    key_field: str | None = None
    topic_field: str | None = None
    http_publish: bool = False
    """Accept messages by ``POST /publish``."""
    publish_token: str | None = None
    """The publishers' own token; ``None``: the subscribers' ``token``, if any."""
    publish_max_size: int = 1024 * 1024
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
    """Redis pub/sub channels (or patterns) whose messages are published like lines of
    input, on the topic of the channel each came on."""
    history: History | None = None
    """How much of each topic is kept for clients that resume (in Redis with ``redis``)."""
    heartbeat: float | None = 15.0
    """Seconds a ``wsfanout.v1`` client may receive nothing before a heartbeat."""
    warnings: tuple[str, ...] = ()
    """Lines to log once the server listens (an unknown ``WSFANOUT_*`` variable)."""
    log: LogSettings | None = None
    """``--log-level`` and ``--log-format``; None: info, or notice with ``quiet``."""
    admin: tuple[str, int] | None = None
    """``--admin HOST:PORT``: where the admin listener (``admin.py``) serves, if at all."""

    @property
    def effective_publish_token(self) -> str | None:
        return self.publish_token if self.publish_token is not None else self.token


class Log:
    """The command's events, through the ``wsfanout.serve`` logger (see ``logs.py``).

    ``stream=None`` writes to ``sys.stderr`` of the process it runs in: a worker's log
    is pickled to it and installs ``settings`` there on first use. ``quiet`` without
    ``settings`` logs warnings only. A worker's lines name its process id.
    """

    def __init__(
        self,
        stream: IO[str] | None,
        quiet: bool,
        *,
        worker: bool = False,
        settings: LogSettings | None = None,
    ) -> None:
        self.stream = stream
        self.quiet = quiet
        self.worker = worker
        if settings is None:
            settings = LogSettings(level=NOTICE if quiet else logging.INFO)
        self.settings = attrs.evolve(settings, worker=worker)
        self.installed_in: int | None = None
        """The process that installed the settings (a worker's copy installs its own)."""
        self.logger = logging.getLogger("wsfanout.serve")
        if stream is not None:
            self._install()

    def _install(self) -> None:
        if self.installed_in != os.getpid():
            install(self.settings, self.stream)
            self.installed_in = os.getpid()

    def __call__(self, line: str, *, always: bool = False) -> None:
        """A line for people, at ``NOTICE`` level if ``always`` (shown with ``-q``), as a
        warning if it starts with ``warning:``."""
        self._install()
        level = NOTICE if always else logging.INFO
        if line.startswith("warning: "):
            line, level = line.removeprefix("warning: "), logging.WARNING
        self.logger.log(level, line)

    def event(
        self, name: str, message: str, *, level: int = logging.INFO, **fields: object
    ) -> None:
        """An event programs may read: ``message`` for people, ``fields`` in JSON lines."""
        self._install()
        self.logger.log(level, message, extra=event(name, **fields))


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
        self.drops: asyncio.Task[None] | None = None
        """The hub's drop summary (``logs.py``), started with the first client."""
        self.secret = secret
        """The token, hidden wherever it appears in a logged path."""

    async def __call__(self, hub: Hub, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        if self.drops is None:
            summary = DropSummary(self.log.logger, self.log.settings.drops_every)
            self.drops = asyncio.create_task(summary.run(hub, _who))
        route = self.routes.route_for(request, connection.subprotocol)
        topics = topics_of(route, request)  # checked before the upgrade (TopicGate)
        who, path = peer(connection), redacted(request.path, self.secret)
        name = route.policy_name or "custom"
        try:
            async with hub.subscribe(
                connection, policy=route.policy, topics=topics, policy_name=name, acks=True
            ) as subscriber:
                log_connected(self.log, connection, who, path, name, topics)
                if self.joined is not None:
                    self.joined(hub)
                with contextlib.suppress(ConnectionClosed):
                    async for message in connection:  # acknowledgements, if asked for
                        subscriber.hear(message)
        except HubClosedError:  # joined while shutting down
            return
        # Said once the connection is gone, and its place with it (--max-clients): a
        # client that reconnects on reading this line finds room.
        await connection.wait_closed()
        log_closed(self.log, connection, who, path, subscriber.stats())


def _who(subscriber: Subscriber) -> str:
    """A subscriber as log lines name it: its address and redacted path."""
    websocket = subscriber.websocket
    request = getattr(websocket, "request", None)
    path = redacted(request.path) if request is not None else ""
    return f"{peer(websocket)} {path}"  # type: ignore[arg-type]


def request_steps(
    options: ServeOptions, gate: Gate, publish: PublishEndpoint | None, log: Log
) -> list[RequestStep]:
    """``process_request``'s steps, in order: what answers a request before the upgrade.

    The publish endpoint has its own token rules, so it comes before the subscribers'
    token check; a route serving a file of its own would go there too.
    """
    secret = options.token
    return [
        publish if publish is not None else PublishOff(log, secret),
        only_get(log, secret),
        gate.process_request,  # serves /wsfanout.js first, then checks the token
    ]


def response_steps(options: ServeOptions, gate: Gate, log: Log) -> list[ResponseStep]:
    """``process_response``'s steps, in order; the cap on clients (which takes a place)
    comes last, once nothing else refuses."""
    secret = options.token
    return [
        log_refusals(log, secret),
        TopicGate(options.routes, log, secret),
        gate.process_response,
    ]


def _serve_options(
    options: ServeOptions, gate: Gate, publish: PublishEndpoint | None, log: Log
) -> dict[str, Any]:
    """websockets' ``serve()`` keyword arguments, the same for one server or N workers."""
    origins: list[Origin | None] | None = None
    if options.origins is not None:
        origins = [None if o is None else Origin(o) for o in options.origins]
    # What routes name first, then the wsfanout.v1 framing (docs/protocol.md).
    wanted = tuple(dict.fromkeys((*options.routes.subprotocols, SUBPROTOCOL)))
    body = options.publish_max_size if options.http_publish else 0
    return {
        "origins": origins,
        "process_request": Steps(request_steps(options, gate, publish, log)),
        "process_response": ResponseSteps(response_steps(options, gate, log)),
        "select_subprotocol": SelectSubprotocol(wanted),
        "subprotocols": [Subprotocol(name) for name in wanted],
        # Counted while it handshakes (--max-handshakes), and reading request bodies.
        "create_connection": ConnectionFactory(gate.handshakes, body).as_factory(),
        "ssl": options.tls,
        **compression_settings(options.compression),
        "max_size": options.max_size,
        "close_timeout": options.close_timeout,
        "open_timeout": options.handshake_timeout,
    }


def _listening(server: Server, options: ServeOptions) -> str:
    if options.unix is not None:
        return f"unix:{options.unix}"
    urls = []
    for sock in server.sockets:
        host, port = sock.getsockname()[:2]
        urls.append(ws_url(host, port, tls=options.tls is not None))
    return " ".join(urls)


@attrs.frozen
class _BindPublisher:
    """A worker's ``setup``: gives the publish endpoint a publisher on the worker's hub."""

    endpoint: PublishEndpoint
    options: ServeOptions
    log: Log

    def __call__(self, hub: Hub) -> None:
        self.endpoint.bind(Publisher(hub, None, self.options, self.log))


async def run_server(
    options: ServeOptions, stdin: int, stdout: IO[str] | None, stderr: IO[str]
) -> int:
    """Serve until a signal, or the end of input with ``exit_on_eof``; return the exit code.

    Raises :class:`ServeError` when it cannot start, :class:`ListenError` when it
    cannot listen where it was told.
    """
    if options.unix is not None:
        check_socket_path(options.unix)
    else:
        await _resolve(options.host, options.port)
    if options.redis is not None:
        why = await redis_unreachable(options.redis)
        if why is not None:
            raise ServeError(f"cannot reach Redis at {redacted_url(options.redis)}: {why}")
    signals = Signals(asyncio.get_running_loop(), stderr)
    quieter = OncePerInterval(Log(stderr, False, settings=options.log))
    quieter.install(asyncio.get_running_loop())
    try:
        if options.workers > 1:
            return await _run_pool(options, stdin, stdout, stderr, signals)
        return await _run_single(options, stdin, stdout, stderr, signals)
    finally:
        signals.remove()
        quieter.remove()


async def _resolve(host: str, port: int) -> None:
    """Refuse a host name that does not resolve before anything starts."""
    try:
        await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ListenError(cannot_listen(exc, f"{host}:{port}")) from None


async def _listen(
    handler: Callable[[ServerConnection], Any], options: ServeOptions, settings: dict[str, Any]
) -> Server:
    """Listen on the address or the Unix socket; ListenError if the system refuses."""
    where = f"unix:{options.unix}" if options.unix is not None else f"{options.host}:{options.port}"
    try:
        if options.unix is not None:
            return await unix_serve(handler, options.unix, **settings)
        return await serve(handler, options.host, options.port, **settings)
    except OSError as exc:
        raise ListenError(cannot_listen(exc, where)) from None


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
    parts = [options.describe, f"compression {options.compression}"]
    if options.http_publish:
        parts.append("POST /publish")
    if options.workers > 1:
        parts.append(f"{options.workers} workers")
    if options.redis is not None:
        parts.append(f"redis {redacted_url(options.redis)}")
    if options.input_channels:
        parts.append(f"input channel {', '.join(options.input_channels)}")
    if options.history is not None:
        parts.append(f"history {options.history.max_messages} messages a topic")
    return ", ".join(parts)


def _warn(options: ServeOptions, log: Log) -> None:
    """Say what the options leave open, and what they got wrong but could ignore."""
    for line in options.warnings:
        log(line, always=True)
    if options.unix is not None or options.host in LOOPBACK:
        return  # a Unix socket is guarded by its file's permissions
    if options.token is None:
        log(
            f"warning: listening on {options.host} without --token-env: anyone who can "
            "reach this port can subscribe",
            always=True,
        )
    if options.http_publish and options.effective_publish_token is None:
        log(
            f"warning: POST /publish on {options.host} without a token: anyone who can "
            "reach this port can publish",
            always=True,
        )


async def _run_single(
    options: ServeOptions, stdin: int, stdout: IO[str] | None, stderr: IO[str], signals: Signals
) -> int:
    """One process: its hub has the subscribers, and publishes the input."""
    log = Log(stderr, options.quiet, settings=options.log)
    backplane = None
    if options.redis is not None:
        backplane = RedisBackplane(options.redis, namespace=NAMESPACE, history=options.history)
    hub = Hub(
        close_timeout=options.close_timeout,
        backplane=backplane,
        history=options.history if backplane is None else None,
        heartbeat=options.heartbeat,
    )
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
    publish = None
    if options.http_publish:
        publish = PublishEndpoint(options.effective_publish_token, log, publisher)
    channels: asyncio.Task[None] | None = None
    server: Server | None = None
    inode: int | None = None
    code = 1001
    admin: AdminServer | None = None
    try:
        admin = await start_admin(options.admin, hub, log)
        await _start_backplane(backplane, options)
        channels = await _start_channels(options, publisher)

        async def handler(connection: ServerConnection) -> None:
            await subscribers(hub, connection)

        server = await _listen(handler, options, _serve_options(options, gate, publish, log))
        if options.unix is not None:
            inode = os.stat(options.unix).st_ino
        listening = _listening(server, options)
        described = _describe(options) + (f", admin {admin.url}" if admin is not None else "")
        announce(stdout, f"wsfanout: listening on {listening} ({described})", log)
        _warn(options, log)
        if admin is not None:
            admin.ready()

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
        if admin is not None:
            admin.stopping()  # /healthz: 503 from now on
        if server is not None:
            log(f"shutting down: closing {len(hub)} clients with {code}")
        await cancel(channels)
        await cancel(subscribers.drops)
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
        if options.unix is not None:
            remove_socket(options.unix, inode)
        if admin is not None:
            await admin.aclose()
    return signals.exit_code(log)


async def _run_pool(
    options: ServeOptions, stdin: int, stdout: IO[str] | None, stderr: IO[str], signals: Signals
) -> int:
    """N worker processes serve the clients; this one publishes the input through Redis."""
    assert options.redis is not None
    log = Log(stderr, options.quiet, settings=options.log)
    hub_id = f"{socket.gethostname()}/{os.getpid()}"
    backplane = RedisBackplane(
        options.redis, namespace=NAMESPACE, hub_id=hub_id, history=options.history
    )
    hub = Hub(backplane=backplane)
    publisher = Publisher(hub, backplane, options, log)
    worker_log = Log(None, options.quiet, worker=True, settings=options.log)
    slots = None
    if options.max_clients is not None:
        slots = multiprocessing.get_context("spawn").BoundedSemaphore(options.max_clients)
    gate = Gate(options, worker_log, slots)
    publish = setup = None
    if options.http_publish:
        publish = PublishEndpoint(options.effective_publish_token, worker_log)
        setup = _BindPublisher(publish, options, worker_log)
    pool = WorkerPool(
        options.workers,
        options.redis,
        host=options.host,
        port=options.port,
        namespace=NAMESPACE,
        hub_id=hub_id,
        handler=_Subscribers(options.routes, worker_log, secret=options.token),
        close_timeout=options.close_timeout,
        history=options.history,
        hub_heartbeat=options.heartbeat,
        serve_options=_serve_options(options, gate, publish, worker_log),
        setup=setup,
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
        except OSError as exc:  # reserving the port
            raise ListenError(cannot_listen(exc, f"{options.host}:{options.port}")) from None
        for process in pool.processes:
            watched.append(process.sentinel)
            loop.add_reader(process.sentinel, worker_ended, ended, process.pid)
        # Only now: a message published before every worker subscribed would miss some.
        channels = await _start_channels(options, publisher)
        if not signals.stop.is_set():
            url = ws_url(options.host, pool.port, tls=options.tls is not None)
            announce(stdout, f"wsfanout: listening on {url} ({_describe(options)})", log)
            _warn(options, log)
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
