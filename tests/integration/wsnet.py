"""A real websockets server running a hub, and real websockets clients, on 127.0.0.1.

Every client connects on a path of its own, and the server serves that path as its
:class:`Route` says: which policy and topics, or a custom handler body. A route's
``joined`` future resolves with the :class:`~wsfanout.Subscriber` once the hub has
attached the connection, and ``served`` with what ``hub.serve`` returned, so tests wait
on events, never on sleeps.

A **stalled** client has a 4 KiB receive buffer, ``max_queue=1`` (websockets stops
reading the socket after one unread message) and never calls ``recv()``: a client that
takes almost nothing, so a stall shows after a few messages rather than after the
hundreds of KiB a default client and its websockets buffers would take first. The
server side keeps its default socket options: the hub's ``TCP_NOTSENT_LOWAT`` is what
keeps its kernel from hiding the stall. Calling :meth:`Client.read` later resumes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Data

from wsfanout import Hub, Policy, Subscriber, SubscriberStats
from wsfanout._shell.hub import OnMessage
from wsfanout._shell.relay import run_relay

__all__ = [
    "STALLED_RCVBUF",
    "served",
    "Body",
    "Client",
    "LoopGuard",
    "Net",
    "Route",
    "index_of",
    "numbered",
    "relay_tasks",
]

STALLED_RCVBUF = 4096

Body = Callable[[Hub, "Route", ServerConnection], Awaitable[SubscriberStats]]
"""A custom handler body; it must resolve ``route.joined`` once subscribed."""


def numbered(index: int, size: int = 64) -> str:
    """A text message carrying ``index``, padded to ``size`` characters."""
    head = f"{index:07d}|"
    return head + "x" * max(0, size - len(head))


def index_of(message: Data) -> int:
    """The index carried by a message made by :func:`numbered`."""
    text = message if isinstance(message, str) else message.decode()
    return int(text.split("|", 1)[0])


def relay_tasks() -> list[asyncio.Task[Any]]:
    """Running tasks that execute wsfanout's relay."""
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "cr_code", None) is run_relay.__code__
    ]


class LoopGuard:
    """Catches what a test must not leave behind: running tasks, errors sent to the loop's
    exception handler (such as "Task exception was never retrieved"), and error logs from
    websockets or wsfanout (such as "connection handler failed").
    """

    grace = 2.0
    """Seconds that tasks still running at the end get to finish (cancelled ones, say)."""

    def __init__(self) -> None:
        self.reported: list[dict[str, Any]] = []
        self._loop = asyncio.get_running_loop()
        self._previous = self._loop.get_exception_handler()
        self._loop.set_exception_handler(lambda _, context: self.reported.append(context))

    async def verify(
        self, records: Iterable[logging.LogRecord], *, grace: float | None = None
    ) -> None:
        """Raise AssertionError naming what was left behind; restores the loop's handler."""
        try:
            current = asyncio.current_task()
            others = [task for task in asyncio.all_tasks() if task is not current]
            pending: set[asyncio.Task[Any]] = set()
            if others:
                # Tasks that were cancelled or are finishing their last step get the chance.
                timeout = self.grace if grace is None else grace
                _, pending = await asyncio.wait(others, timeout=timeout)
            # A task whose exception nobody retrieved reports it when it is collected.
            gc.collect()
        finally:
            self._loop.set_exception_handler(self._previous)
        assert not pending, f"tasks left running after the test: {pending}"
        assert not self.reported, f"errors reached the event loop: {self.reported}"
        logged = [
            f"{record.name}: {record.getMessage()}"
            for record in records
            if record.levelno >= logging.ERROR
            and record.name.split(".")[0] in {"websockets", "wsfanout"}
        ]
        assert not logged, f"errors were logged: {logged}"


class Route:
    """How the server serves one path, and what became of the connection on it."""

    def __init__(
        self,
        path: str,
        *,
        policy: Policy | None,
        topics: Iterable[str] | None,
        body: Body | None,
        on_message: OnMessage | None = None,
        policy_name: str | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.path = path
        self.policy = policy
        self.policy_name = policy_name
        self.topics = None if topics is None else frozenset(topics)
        self.body = body
        self.on_message = on_message
        self.joined: asyncio.Future[Subscriber] = loop.create_future()
        """The subscriber, once the hub has attached it."""
        self.served: asyncio.Future[SubscriberStats] = loop.create_future()
        """What the handler (``hub.serve``) returned, once it has returned."""
        self.websocket: ServerConnection | None = None

    def __repr__(self) -> str:
        return f"<Route {self.path}>"

    @property
    def server_ws(self) -> ServerConnection:
        assert self.websocket is not None, f"{self.path} has no server connection yet"
        return self.websocket

    async def finished(self) -> SubscriberStats:
        """Wait until the handler (``hub.serve``) has returned; return what it returned."""
        return await asyncio.shield(self.served)

    def write_buffer(self) -> int:
        """Bytes waiting in the server-side transport's write buffer now."""
        return self.server_ws.transport.get_write_buffer_size()

    def write_limits(self) -> tuple[int, int]:
        """The server-side transport's (low, high) write-buffer watermarks."""
        low, high = self.server_ws.transport.get_write_buffer_limits()
        return low, high


class Client:
    """A websockets client and what it has received so far."""

    def __init__(self, name: str, ws: ClientConnection, route: Route) -> None:
        self.name = name
        self.ws = ws
        self.route = route
        self.messages: list[Data] = []
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ended = False
        self._waiters: list[tuple[Callable[[], bool], str, asyncio.Future[None]]] = []

    def __repr__(self) -> str:
        return f"<Client {self.name} received={len(self.messages)}>"

    @property
    def sub(self) -> Subscriber:
        return self.route.joined.result()

    def texts(self) -> list[str]:
        assert all(isinstance(m, str) for m in self.messages)
        return [m for m in self.messages if isinstance(m, str)]

    def indices(self) -> list[int]:
        return [index_of(m) for m in self.messages]

    # -- reading ------------------------------------------------------------------------

    def read(self, *, leave_after: int | None = None) -> None:
        """Start reading everything (resumes a stalled client).

        With ``leave_after``, close the connection cleanly after that many messages
        (still consuming, unrecorded, what arrives during the closing handshake).
        """
        assert self._reader is None, f"{self} is already reading"
        self._reader = asyncio.get_running_loop().create_task(self._read(leave_after))

    async def _read(self, leave_after: int | None) -> None:
        closing: asyncio.Task[None] | None = None
        try:
            if leave_after == 0:
                closing = asyncio.get_running_loop().create_task(self.ws.close())
            async for message in self.ws:
                if closing is not None:
                    continue
                self.messages.append(message)
                self._check()
                if leave_after is not None and len(self.messages) >= leave_after:
                    closing = asyncio.get_running_loop().create_task(self.ws.close())
        except ConnectionClosed:
            pass
        finally:
            if closing is not None:
                await closing
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason
            self._ended = True
            self._check()

    async def ended(self) -> None:
        """Wait until the reader has stopped because the connection closed."""
        assert self._reader is not None, f"{self} is not reading"
        await asyncio.shield(self._reader)

    def _check(self) -> None:
        pending = []
        for predicate, what, future in self._waiters:
            if future.done():
                continue
            if predicate():
                future.set_result(None)
            elif self._ended:
                future.set_exception(
                    AssertionError(
                        f"{self.name}: connection closed ({self.close_code} "
                        f"{self.close_reason!r}) after {len(self.messages)} messages, "
                        f"while waiting for {what}"
                    )
                )
            else:
                pending.append((predicate, what, future))
        self._waiters = pending

    async def until(self, predicate: Callable[[], bool], what: str) -> None:
        """Wait until ``predicate()`` holds; it is checked on every message received."""
        if predicate():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((predicate, what, future))
        self._check()
        await future

    async def latest(self, predicate: Callable[[Data], bool], what: str) -> None:
        """Wait until the latest message received satisfies ``predicate``."""
        await self.until(lambda: bool(self.messages) and predicate(self.messages[-1]), what)

    async def received(self, count: int) -> None:
        """Wait until at least ``count`` messages have arrived."""
        await self.until(lambda: len(self.messages) >= count, f"{count} messages")

    async def drained(self) -> None:
        """Wait until every message the server wrote has arrived and nothing is queued.

        Counts messages, so it holds for policies that do not batch.
        """

        def done() -> bool:
            stats = self.sub.stats()
            return stats.queued_messages == 0 and len(self.messages) == stats.sent

        await self.until(done, "every queued message")


class Net:
    """A hub served by a real websockets server on 127.0.0.1, and its clients."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.routes: dict[str, Route] = {}
        self.clients: list[Client] = []
        self._server: Server | None = None
        self._names = itertools.count()

    @property
    def uri(self) -> str:
        assert self._server is not None
        host, port = self._server.sockets[0].getsockname()[:2]
        return f"ws://{host}:{port}"

    def attach_server(self, server: Server) -> None:
        self._server = server

    async def handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        route = self.routes[ws.request.path]
        route.websocket = ws
        try:
            if route.body is not None:
                stats = await route.body(self.hub, route, ws)
            else:
                # serve() attaches the subscriber before it first awaits, so a callback
                # scheduled now runs once it is attached.
                asyncio.get_running_loop().call_soon(self._joined, route, ws)
                stats = await self.hub.serve(
                    ws,
                    policy=route.policy,
                    topics=route.topics,
                    on_message=route.on_message,
                    policy_name=route.policy_name,
                )
        except BaseException as exc:
            if not route.joined.done():
                route.joined.set_exception(AssertionError(f"{route} failed before joining"))
            if isinstance(exc, asyncio.CancelledError):
                route.served.cancel()
            else:
                route.served.set_exception(exc)
            raise
        route.served.set_result(stats)

    def _joined(self, route: Route, ws: ServerConnection) -> None:
        if route.joined.done():
            return
        for sub in self.hub.subscribers:
            if sub.websocket is ws:
                route.joined.set_result(sub)
                return
        route.joined.set_exception(AssertionError(f"{route}: hub.serve did not attach it"))

    async def connect(
        self,
        name: str = "client",
        *,
        policy: Policy | None = None,
        topics: Iterable[str] | None = None,
        stalled: bool = False,
        read: bool | None = None,
        compression: str | None = None,
        body: Body | None = None,
        on_message: OnMessage | None = None,
        policy_name: str | None = None,
    ) -> Client:
        """Connect a client, wait until the hub has attached it, and return it.

        A ``stalled`` client does not read until :meth:`Client.read` is called; other
        clients read at once unless ``read=False``.
        """
        path = f"/{name}-{next(self._names)}"
        route = Route(
            path,
            policy=policy,
            topics=topics,
            body=body,
            on_message=on_message,
            policy_name=policy_name,
        )
        self.routes[path] = route
        if stalled:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
            sock.setblocking(False)
            assert self._server is not None
            await asyncio.get_running_loop().sock_connect(
                sock, self._server.sockets[0].getsockname()[:2]
            )
            ws = await connect(self.uri + path, sock=sock, max_queue=1, compression=compression)
        else:
            ws = await connect(self.uri + path, compression=compression)
        client = Client(name, ws, route)
        self.clients.append(client)
        await route.joined
        if read is None:
            read = not stalled
        if read:
            client.read()
        return client

    async def shutdown(self) -> None:
        """Abort the clients still open, close the hub and the server; surface handler errors."""
        for client in self.clients:
            client.ws.transport.abort()
        readers = [c._reader for c in self.clients if c._reader is not None]
        if readers:
            await asyncio.wait(readers, timeout=5.0)
        await self.hub.aclose(timeout=0.5)
        if self._server is not None:
            self._server.close()
            await asyncio.wait_for(self._server.wait_closed(), 5.0)
        for client in self.clients:
            await client.ws.wait_closed()
        for route in self.routes.values():
            if route.served.done() and not route.served.cancelled():
                route.served.result()  # a handler that failed fails the test here
            if route.joined.done() and not route.joined.cancelled():
                route.joined.exception()


@contextlib.asynccontextmanager
async def served(hub: Hub, **options: Any) -> AsyncIterator[Net]:
    """``hub`` behind a real server on 127.0.0.1 port 0 (``options`` are ``serve()``'s),
    its clients aborted, the hub and the server closed when the block ends."""
    network = Net(hub)
    server = await serve(network.handler, "127.0.0.1", 0, **{"close_timeout": 1.0, **options})
    network.attach_server(server)
    try:
        yield network
    finally:
        await network.shutdown()
