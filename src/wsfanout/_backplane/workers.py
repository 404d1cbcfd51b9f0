"""Several worker processes serving one port, their hubs joined by a Redis backplane.

Theory of operation
-------------------
The parent reserves the port with a socket that has ``SO_REUSEPORT`` set, bound but
never listening, so port 0 becomes one concrete port that every worker can share and
no other program can take. It then starts N processes with the ``spawn`` method (no
inherited event loop, threads or sockets). Each runs a :class:`Hub` with its own
:class:`RedisBackplane` and a websockets server on the same host and port with
``reuse_port=True``: the kernel spreads new connections across the workers, and the
backplane carries every publish to all of them. Each worker reports through a pipe
when it listens and when its backplane is connected. SIGTERM or SIGINT makes a worker
stop accepting connections, close its hub (clients get 1001, and one that does not
finish closing within ``close_timeout`` is cut) and exit 0. A worker also stops when
its parent dies, so a killed parent never leaves workers holding the port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType, TracebackType
from typing import Any

import attrs
from websockets.asyncio.server import ServerConnection, serve

from .._core.errors import ConfigError, invalid
from .._core.history import History
from .._core.policy import Policy
from .._core.validate import positive_seconds
from .._shell.hub import Hub
from .._shell.sockets import abort_with_reset
from .redis import RedisBackplane

__all__ = ["Handler", "WorkerPool", "run_workers"]

logger = logging.getLogger("wsfanout.backplane")

Handler = Callable[[Hub, ServerConnection], Awaitable[None]]
"""Serves one connection on a worker's hub; a module-level function (it is pickled)."""

LISTENING = "listening"
CONNECTED = "connected"

_SET_BY_POOL = frozenset({"handler", "host", "port", "reuse_port", "sock"})


async def subscribe_all(hub: Hub, websocket: ServerConnection) -> None:
    """The default handler: subscribe to every topic under the hub's policy."""
    await hub.serve(websocket)


@attrs.frozen(kw_only=True)
class WorkerOptions:
    """What every worker process needs; pickled to each of them."""

    url: str
    host: str
    port: int
    namespace: str
    hub_id: str
    heartbeat: float
    policy: Policy | None
    handler: Handler
    close_timeout: float = 5.0
    serve_options: Mapping[str, Any] = attrs.field(factory=dict)
    history: History | None = None
    hub_heartbeat: float | None = 15.0
    setup: Callable[[Hub], None] | None = None


class WorkerPool:
    """Starts and stops N worker processes sharing ``host:port`` and a Redis backplane.

    ``with WorkerPool(4, "redis://127.0.0.1:6379/0", port=8765) as pool:`` returns once
    every worker listens and is connected to Redis; leaving the block stops them.
    ``port=0`` picks a free port, then found in :attr:`port`. Workers' hubs are named
    ``<hub_id>-<index>``; ``policy`` is their subscribers' default policy,
    ``handler(hub, websocket)`` serves each connection (default: every topic) and
    ``close_timeout`` bounds each client's close when a worker stops. ``history`` is
    the backplanes' (what Redis keeps of each topic for clients that resume) and
    ``hub_heartbeat`` the hubs' (``Hub(heartbeat=...)``).
    ``serve_options`` are more keyword arguments of websockets' ``serve()``
    (``origins``, ``max_size``, ``process_request``, ...); like ``handler``, they are
    pickled to each worker. ``setup(hub)``, if given, runs in each worker once its hub
    exists, before it listens (to hand the hub to what ``serve_options`` hold, such as
    an endpoint that publishes).
    """

    def __init__(
        self,
        workers: int,
        url: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        namespace: str = "wsfanout",
        hub_id: str | None = None,
        heartbeat: float = 1.0,
        policy: Policy | None = None,
        handler: Handler = subscribe_all,
        close_timeout: float = 5.0,
        serve_options: Mapping[str, Any] | None = None,
        history: History | None = None,
        hub_heartbeat: float | None = 15.0,
        setup: Callable[[Hub], None] | None = None,
    ) -> None:
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise invalid("workers", workers, "must be an int >= 1", ConfigError)
        if not hasattr(socket, "SO_REUSEPORT"):  # pragma: no cover - Linux and BSDs have it
            raise invalid(
                "workers", workers, "needs SO_REUSEPORT, which this platform lacks", ConfigError
            )
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise invalid("port", port, "must be an int from 0 to 65535", ConfigError)
        positive_seconds("close_timeout", close_timeout)
        extra = dict(serve_options or {})
        taken = sorted(_SET_BY_POOL.intersection(extra))
        if taken:
            raise invalid(
                "serve_options",
                extra,
                f"may not set {', '.join(taken)}: "
                f"the pool sets {'it' if len(taken) == 1 else 'them'}",
                ConfigError,
            )
        # Construct one backplane here so that bad options fail in the parent, not N times.
        probe = RedisBackplane(
            url, namespace=namespace, hub_id=hub_id, heartbeat=heartbeat, history=history
        )
        if hub_heartbeat is not None:
            positive_seconds("hub_heartbeat", hub_heartbeat)
        self.workers = workers
        self.host = host
        self._requested_port = port
        self._options = WorkerOptions(
            url=url,
            host=host,
            port=port,
            namespace=namespace,
            hub_id=hub_id or f"{socket.gethostname()}/{os.getpid()}",
            heartbeat=probe.heartbeat,
            policy=policy,
            handler=handler,
            close_timeout=float(close_timeout),
            serve_options=extra,
            history=history,
            hub_heartbeat=hub_heartbeat,
            setup=setup,
        )
        self._reservation: socket.socket | None = None
        self._processes: list[BaseProcess] = []
        self._pipes: list[Connection] = []

    @property
    def port(self) -> int:
        """The port every worker listens on (known once :meth:`start` returned)."""
        return self._options.port

    @property
    def processes(self) -> tuple[BaseProcess, ...]:
        return tuple(self._processes)

    def start(self, *, connected: bool = True, timeout: float = 60.0) -> None:
        """Start the workers; return once each listens (and, if ``connected``, once each
        backplane is connected to Redis). Raises RuntimeError if one dies first."""
        if self._processes:
            raise RuntimeError("the worker pool is already started")
        self._reserve()
        context = multiprocessing.get_context("spawn")
        for index in range(self.workers):
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_worker_main,
                args=(index, self._options, sender),
                name=f"wsfanout-worker-{index}",
                daemon=True,
            )
            process.start()
            sender.close()
            self._processes.append(process)
            self._pipes.append(receiver)
        try:
            self._await_reports({LISTENING, CONNECTED} if connected else {LISTENING}, timeout)
        except BaseException:
            self.stop()
            raise

    def _reserve(self) -> None:
        family, kind, proto, _, address = socket.getaddrinfo(
            self.host, self._requested_port, type=socket.SOCK_STREAM
        )[0]
        if self._requested_port != 0:
            # SO_REUSEPORT would let us share a port another program of this user already
            # holds with SO_REUSEPORT (another pool): bind it plainly first, so a port in
            # use fails with EADDRINUSE as it does for a single server.
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind(address)
        reservation = socket.socket(family, kind, proto)
        reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reservation.bind(address)
        self._reservation = reservation
        self._options = attrs.evolve(self._options, port=reservation.getsockname()[1])

    def _await_reports(self, wanted: set[str], timeout: float) -> None:
        missing = {(index, report) for index in range(self.workers) for report in wanted}
        by_pipe = dict(zip(self._pipes, range(self.workers), strict=True))
        by_sentinel = {process.sentinel: i for i, process in enumerate(self._processes)}
        deadline = time.monotonic() + timeout
        while missing:
            ready = wait([*by_pipe, *by_sentinel], timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                raise RuntimeError(f"workers did not report {sorted(missing)} in {timeout} s")
            for item in ready:
                if isinstance(item, int):
                    index = by_sentinel[item]
                    self._processes[index].join()
                    code = self._processes[index].exitcode
                    raise RuntimeError(
                        f"worker {index} exited with code {code} before it was ready"
                    )
                assert isinstance(item, Connection)
                try:
                    report, index = item.recv()
                except EOFError:
                    del by_pipe[item]
                    continue
                missing.discard((index, report))

    def wait(self) -> None:
        """Block until any worker exits (normally never, unless stopped)."""
        if self._processes:
            wait([process.sentinel for process in self._processes])

    def stop(self, timeout: float = 10.0) -> list[int | None]:
        """SIGTERM every worker, wait up to ``timeout`` seconds, then kill; return exit codes."""
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        for process in self._processes:
            process.join(timeout)
            if process.is_alive():  # pragma: no cover - a worker stuck past its close timeout
                process.kill()
                process.join()
        codes = [process.exitcode for process in self._processes]
        for pipe in self._pipes:
            pipe.close()
        if self._reservation is not None:
            self._reservation.close()
        self._processes, self._pipes, self._reservation = [], [], None
        return codes

    def __enter__(self) -> WorkerPool:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_workers(
    workers: int,
    url: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    namespace: str = "wsfanout",
    policy: Policy | None = None,
    handler: Handler = subscribe_all,
    close_timeout: float = 5.0,
    serve_options: Mapping[str, Any] | None = None,
) -> int:
    """Serve ``host:port`` with ``workers`` processes until SIGINT or SIGTERM.

    Messages reach the workers through Redis: publish from any process with a hub on
    the same ``url`` and ``namespace``, or with ``PUBLISH <namespace>:all payload``.
    Returns 0 after a requested stop, 1 if a worker ended on its own (so a supervisor
    restarts the whole service). Blocks; call it from a program's main thread, under
    ``if __name__ == "__main__":`` since workers are spawned, which imports the main
    module again.
    """
    pool = WorkerPool(
        workers,
        url,
        host=host,
        port=port,
        namespace=namespace,
        policy=policy,
        handler=handler,
        close_timeout=close_timeout,
        serve_options=serve_options,
    )

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    requested = False
    try:
        pool.start(connected=False)
        logger.info("%d workers serving %s:%d", workers, host, pool.port)
        pool.wait()
        logger.error("a worker exited on its own; stopping the others")
    except KeyboardInterrupt:
        requested = True
    finally:
        pool.stop(close_timeout + 5.0)
        signal.signal(signal.SIGTERM, previous)
    return 0 if requested else 1


def _worker_main(index: int, options: WorkerOptions, pipe: Connection) -> None:
    asyncio.run(_serve(index, options, pipe))


async def _serve(index: int, options: WorkerOptions, pipe: Connection) -> None:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _resolve, stop)
    parent = multiprocessing.parent_process()
    if parent is not None:  # readable once the parent is gone, however it died
        loop.add_reader(parent.sentinel, _resolve, stop)
    backplane = RedisBackplane(
        options.url,
        namespace=options.namespace,
        hub_id=f"{options.hub_id}-{index}",
        heartbeat=options.heartbeat,
        history=options.history,
    )
    hub = Hub(
        policy=options.policy,
        backplane=backplane,
        close_timeout=options.close_timeout,
        heartbeat=options.hub_heartbeat,
    )
    if options.setup is not None:
        options.setup(hub)
    await backplane.start()

    async def handler(websocket: ServerConnection) -> None:
        await options.handler(hub, websocket)

    async def report_connected() -> None:
        await backplane.wait_for(lambda health: health.connected)
        _report(pipe, CONNECTED, index)

    settings: dict[str, Any] = {"compression": None, **options.serve_options}
    server = await serve(handler, options.host, options.port, reuse_port=True, **settings)
    _report(pipe, LISTENING, index)
    reporter = loop.create_task(report_connected())
    await stop  # connected to Redis or not: a worker serves its clients either way
    reporter.cancel()
    server.close(close_connections=False)  # accept no one new; the hub closes the rest
    await hub.aclose()
    try:
        async with asyncio.timeout(options.close_timeout + 1.0):
            await server.wait_closed()
    except TimeoutError:  # a connection that never became a subscriber
        for connection in server.all_connections:
            abort_with_reset(connection.transport)
    pipe.close()


def _report(pipe: Connection, report: str, index: int) -> None:
    with contextlib.suppress(OSError):  # the parent stopped listening: nothing to tell
        pipe.send((report, index))


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
