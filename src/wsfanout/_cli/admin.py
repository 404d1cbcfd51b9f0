"""The admin listener: metrics, health, the subscribers and a live status page, over HTTP.

Theory of operation
-------------------
One websockets server on its own address (``wsfanout serve --admin HOST:PORT``, or
:func:`serve_admin` from a program) answers plain HTTP in ``process_request``:

* ``/metrics``: the hub's Prometheus metrics (``wsfanout.metrics``) and the
  process's own, in Prometheus' text format;
* ``/healthz``: 200 while the hub serves, 503 while it starts or shuts down;
* ``/clients``: JSON, the connected subscribers sorted by ``?sort=`` (lag by
  default), ``?offset=`` and ``?limit=`` as NATS' ``/connz`` pages them, and the
  subscribers closed most recently, with how and why;
* ``/``: the status page, whose script opens a WebSocket to ``/live``.

The status page is a wsfanout subscriber itself: ``/live`` subscribes it to a small
hub of its own under ``SkipToLatest``, and while anyone watches, a ticker publishes a
snapshot of the observed hub every ``interval`` (the totals, their rates and recent
history, each policy, the top subscribers by lag, the last ones closed). A page that
falls behind gets the newest snapshot and skips the stale ones, as a slow client of
any dashboard should. Nothing is computed while nobody watches.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import email.utils
import http
import importlib.resources
import json
import logging
import math
import os
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .. import __version__
from .._core.builtins import SkipToLatest
from .._core.errors import ConfigError, HubClosedError, invalid
from .._core.stats import (
    DROP_REASONS,
    ClosedSubscriber,
    PolicyStats,
    SubscriberStats,
    dropped_by_reason,
)
from .._core.validate import positive_seconds
from .._shell.hub import Hub
from .._shell.subscriber import Subscriber
from .admission import peer, redacted
from .process import ServeError

if TYPE_CHECKING:
    from .serve import Log

__all__ = [
    "LIVE_PATH",
    "SORTS",
    "AdminServer",
    "add_admin_argument",
    "parse_address",
    "split_address",
    "serve_admin",
    "start_admin",
]

logger = logging.getLogger("wsfanout.admin")

LIVE_PATH = "/live"
"""Where the status page's WebSocket subscribes."""

HISTORY = 120
"""Snapshots of the totals the sparklines show (two minutes at the default interval)."""

CLOSED_SHOWN = 20
"""Closed subscribers the status page lists, newest first."""

DEFAULT_LIMIT = 1024
"""``/clients`` without ``?limit=``: as NATS' ``/connz``."""


def _lag(stats: SubscriberStats, _: Subscriber) -> float:
    return stats.lag


SORTS: dict[str, Callable[[SubscriberStats, Subscriber], float]] = {
    "lag": _lag,
    "queued_bytes": lambda stats, _: stats.queued_bytes,
    "queued_messages": lambda stats, _: stats.queued_messages,
    "dropped": lambda stats, _: stats.dropped,
    "sent": lambda stats, _: stats.sent,
    "offered": lambda stats, _: stats.offered,
    "write_buffer": lambda _, subscriber: subscriber.write_buffer,
}
"""``/clients?sort=``: each key sorts the subscribers by it, largest first."""


def split_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT`` or ``PORT`` (on ``default_host``);
    raises ValueError whose message is the constraint broken."""
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError("is not HOST:PORT (write an IPv6 address in brackets)")
    try:
        number = int(port)
    except ValueError:
        raise ValueError("is not HOST:PORT (e.g. 127.0.0.1:9000, or 9000)") from None
    if not 0 <= number <= 65535:
        raise ValueError("has no port number in 0-65535")
    return host or default_host, number


def parse_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """:func:`split_address`, refusing a bad address with ``ConfigError("admin=...")``."""
    try:
        return split_address(text, default_host)
    except ValueError as exc:
        raise invalid("admin", text, str(exc), ConfigError) from None


def _response(status: http.HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def _text(status: http.HTTPStatus, text: str) -> Response:
    return _response(status, text.encode(), "text/plain; charset=utf-8")


def _json(value: object, status: http.HTTPStatus = http.HTTPStatus.OK) -> Response:
    body = json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    return _response(status, body, "application/json")


def _finite(value: float, digits: int = 6) -> float | None:
    return round(value, digits) if math.isfinite(value) else None


def _counts(stats: SubscriberStats | PolicyStats) -> dict[str, Any]:
    return {
        "offered": stats.offered,
        "sent": stats.sent,
        "frames": stats.frames,
        "batched": stats.batched,
        "dropped": stats.dropped,
        "dropped_by_reason": dropped_by_reason(stats),
        "queued_messages": stats.queued_messages,
        "queued_bytes": stats.queued_bytes,
    }


def client_json(subscriber: Subscriber, stats: SubscriberStats) -> dict[str, Any]:
    """One connected subscriber as ``/clients`` and the status page show it."""
    websocket = subscriber.websocket
    request = getattr(websocket, "request", None)
    topics = subscriber.topics
    return {
        "id": str(websocket.id),
        "remote": peer(websocket),  # type: ignore[arg-type]
        "path": redacted(request.path) if request is not None else "",
        "policy": subscriber.policy_name,
        "topics": None if topics is None else sorted(topics),
        **_counts(stats),
        "peak_messages": stats.peak_messages,
        "peak_bytes": stats.peak_bytes,
        "lag": round(stats.lag, 3),
        "write_buffer": subscriber.write_buffer,
    }


def closed_json(closed: ClosedSubscriber) -> dict[str, Any]:
    """One subscriber gone, as ``/clients`` and the status page show it."""
    return {
        "id": closed.id,
        "remote": closed.remote,
        "path": closed.path,
        "policy": closed.policy_name,
        "closed_at": round(closed.closed_at, 3),
        "ended": closed.ended,
        "code": closed.code,
        "cause": closed.cause,
        **_counts(closed.stats),
        "peak_messages": closed.stats.peak_messages,
    }


def _policy_json(name: str, stats: PolicyStats) -> dict[str, Any]:
    return {
        "name": name,
        "subscribers": stats.subscribers,
        "behind": stats.behind,
        "opened": stats.opened,
        **_counts(stats),
        "write_buffer": stats.write_buffer,
        "max_lag": round(stats.max_lag, 3),
        "closes": dict(stats.closes),
    }


def _query_int(query: dict[str, list[str]], name: str, default: int, minimum: int) -> int:
    values = query.get(name)
    if not values:
        return default
    try:
        value = int(values[-1])
    except ValueError:
        raise invalid(name, values[-1], "is not an integer", ConfigError) from None
    if value < minimum:
        raise invalid(name, value, f"must be >= {minimum}", ConfigError)
    return value


class AdminServer:
    """The admin listener of one hub; see the module docstring for what it serves.

    Start it with :meth:`start` (or :func:`serve_admin`); :meth:`ready` makes
    ``/healthz`` answer 200, :meth:`stopping` 503 again; :meth:`aclose` stops it.
    ``registry`` is the prometheus_client registry ``/metrics`` serves (by default a
    new one with this hub's metrics and the process's); ``top`` is how many
    subscribers the status page lists, by lag; ``interval`` the seconds between two
    snapshots it receives.
    """

    def __init__(
        self,
        hub: Hub,
        *,
        registry: Any = None,
        top: int = 100,
        interval: float = 1.0,
    ) -> None:
        if not isinstance(hub, Hub):
            raise TypeError(f"hub={hub!r} must be a Hub")
        if isinstance(top, bool) or not isinstance(top, int) or top < 1:
            raise invalid("top", top, "must be an int >= 1", ConfigError)
        self.hub = hub
        hub.monitor.start_timings()
        self._top = top
        self._interval = positive_seconds("interval", interval)
        self.registry = registry if registry is not None else _default_registry(hub)
        self._status = Hub(
            policy=SkipToLatest(), policy_name="status", closed_history=0, timings=False
        )
        """The hub the status pages subscribe to: each gets the newest snapshot only."""
        self.state = "starting"
        """``starting``, ``serving`` or ``stopping``: what ``/healthz`` reports."""
        self._history: collections.deque[dict[str, float]] = collections.deque(maxlen=HISTORY)
        self._previous: tuple[float, int, int] | None = None
        self._server: Server | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._watched = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0: any free port); see :attr:`url`."""
        self._server = await serve(
            self._page_socket,
            host,
            port,
            process_request=self._process_request,
            compression=None,
            max_size=4096,
        )
        self._ticker = asyncio.create_task(self._tick_while_watched())

    @property
    def port(self) -> int:
        """The port it listens on."""
        if self._server is None:
            raise RuntimeError("the admin listener is not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        """``http://HOST:PORT/``, the status page's address."""
        port = self.port  # RuntimeError before start()
        assert self._server is not None
        host = self._server.sockets[0].getsockname()[0]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/"

    def ready(self) -> None:
        """The hub serves: ``/healthz`` answers 200."""
        self.state = "serving"

    def stopping(self) -> None:
        """The hub shuts down: ``/healthz`` answers 503, and watching pages are told."""
        self.state = "stopping"
        self._publish_snapshot()

    async def aclose(self) -> None:
        """Close the status pages and stop listening."""
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self._status.aclose(timeout=1.0)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # -- HTTP -------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer every request but the status page's WebSocket (``/live``) in HTTP."""
        url = urllib.parse.urlsplit(request.path)
        if url.path == LIVE_PATH:
            # Browsers let any site open a WebSocket to 127.0.0.1: only the page this
            # listener served (same origin) may read the feed.
            origin = request.headers.get("Origin")
            if origin is not None and urllib.parse.urlsplit(origin).netloc != (
                request.headers.get("Host")
            ):
                return _text(http.HTTPStatus.FORBIDDEN, f"origin {origin} not allowed\n")
            return None  # the upgrade; a plain GET gets websockets' own 426
        try:
            if url.path == "/metrics":
                return self._metrics()
            if url.path == "/healthz":
                if self.state == "serving":
                    return _text(http.HTTPStatus.OK, "ok\n")
                return _text(http.HTTPStatus.SERVICE_UNAVAILABLE, f"{self.state}\n")
            if url.path == "/clients":
                query = urllib.parse.parse_qs(url.query)
                return _json(self._clients(query))
            if url.path in ("/", "/index.html"):
                page = importlib.resources.files(__package__).joinpath("status.html")
                return _response(http.HTTPStatus.OK, page.read_bytes(), "text/html; charset=utf-8")
        except ConfigError as exc:
            return _json({"error": str(exc)}, http.HTTPStatus.BAD_REQUEST)
        return _text(
            http.HTTPStatus.NOT_FOUND,
            "not found: try /, /metrics, /healthz or /clients\n",
        )

    def _metrics(self) -> Response:
        if self.registry is None:
            return _text(
                http.HTTPStatus.NOT_IMPLEMENTED,
                "/metrics needs prometheus-client: pip install 'wsfanout[metrics]'\n",
            )
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return _response(http.HTTPStatus.OK, generate_latest(self.registry), CONTENT_TYPE_LATEST)

    def _clients(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """What ``/clients`` answers for a parsed query string."""
        sort = query.get("sort", ["lag"])[-1]
        if sort not in SORTS:
            raise invalid("sort", sort, f"is not one of {', '.join(SORTS)}", ConfigError)
        limit = _query_int(query, "limit", DEFAULT_LIMIT, 1)
        offset = _query_int(query, "offset", 0, 0)
        rows = self._sorted(SORTS[sort])
        return {
            "now": round(time.time(), 3),
            "state": self.state,
            "subscribers": len(rows),
            "sort": sort,
            "offset": offset,
            "limit": limit,
            "clients": [client_json(s, stats) for stats, s in rows[offset : offset + limit]],
            "closed": [closed_json(c) for c in reversed(self.hub.monitor.closed)],
        }

    def _sorted(
        self, key: Callable[[SubscriberStats, Subscriber], float]
    ) -> list[tuple[SubscriberStats, Subscriber]]:
        rows = [(s.stats(), s) for s in self.hub.subscribers]
        rows.sort(key=lambda row: (-key(*row), str(row[1].websocket.id)))
        return rows

    # -- the status page ----------------------------------------------------------------

    async def _page_socket(self, connection: ServerConnection) -> None:
        # process_request let only LIVE_PATH through to the upgrade.
        self._watched.set()
        asyncio.get_running_loop().call_soon(self._publish_snapshot)  # the first, at once
        await self._status.serve(connection, policy_name="status")

    async def _tick_while_watched(self) -> None:
        while True:
            if not len(self._status):
                self._previous = None  # rates start again with the next watcher
                self._watched.clear()
                await self._watched.wait()
            await asyncio.sleep(self._interval)
            if len(self._status):
                self._publish_snapshot()

    def _publish_snapshot(self) -> None:
        """Send the watching pages a snapshot now (nothing if none watches)."""
        if len(self._status):
            with contextlib.suppress(HubClosedError):  # closing meanwhile
                self._status.publish(json.dumps(self._snapshot(), separators=(",", ":")))

    def _snapshot(self) -> dict[str, Any]:
        """What a status page receives: the observed hub now, and how it got here."""
        hub = self.hub
        policies = hub.monitor.policies()
        totals = _sum(policies.values())
        now = time.time()
        rates = {"sent": 0.0, "dropped": 0.0}
        if self._previous is not None:
            then, sent, dropped = self._previous
            elapsed = max(now - then, 1e-9)
            rates = {
                "sent": round((totals["sent"] - sent) / elapsed, 1),
                "dropped": round((totals["dropped"] - dropped) / elapsed, 1),
            }
            self._history.append({"t": round(now, 3), **rates})
        self._previous = (now, totals["sent"], totals["dropped"])
        rows = self._sorted(_lag)
        timings = hub.monitor.timings(policies=policies)
        health = getattr(hub.backplane, "health", None)
        backplane = None
        if callable(health):
            state = health()
            backplane = {
                "connected": state.connected,
                "reconnects": state.reconnects,
                "lost": state.lost,
                "dropped": state.dropped,
                "buffered": state.buffered,
                "peers": state.peers,
            }
        return {
            "time": round(now, 3),
            "version": __version__,
            "state": self.state,
            "interval": self._interval,
            "totals": totals,
            "rates": rates,
            "history": list(self._history),
            "policies": [_policy_json(name, stats) for name, stats in policies.items()],
            "subscribers": len(rows),
            "top": self._top,
            "clients": [client_json(s, stats) for stats, s in rows[: self._top]],
            "closed": [closed_json(c) for c in list(reversed(hub.monitor.closed))[:CLOSED_SHOWN]],
            "timings": None
            if timings is None
            else {
                "publish_p50": _finite(timings.publish.quantile(0.5)),
                "publish_p99": _finite(timings.publish.quantile(0.99)),
            },
            "backplane": backplane,
        }


def _sum(policies: Any) -> dict[str, Any]:
    totals: dict[str, Any] = {
        "subscribers": 0,
        "behind": 0,
        "opened": 0,
        "offered": 0,
        "sent": 0,
        "dropped": 0,
        "queued_messages": 0,
        "queued_bytes": 0,
        "write_buffer": 0,
        "closed_by_policy": 0,
        "max_lag": 0.0,
        "dropped_by_reason": dict.fromkeys(DROP_REASONS, 0),
    }
    for stats in policies:
        for field in totals:
            if field == "max_lag":
                totals[field] = max(totals[field], round(stats.max_lag, 3))
            elif field == "dropped_by_reason":
                for reason, count in dropped_by_reason(stats).items():
                    totals[field][reason] += count
            else:
                totals[field] += getattr(stats, field)
    return totals


def _default_registry(hub: Hub) -> Any:
    """This hub's metrics and the process's, or None without prometheus-client."""
    try:
        from prometheus_client import (
            CollectorRegistry,
            GCCollector,
            PlatformCollector,
            ProcessCollector,
        )
    except ImportError:
        return None
    from .._shell.metrics import register_metrics

    registry = CollectorRegistry()
    register_metrics(hub, registry)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


@contextlib.asynccontextmanager
async def serve_admin(
    hub: Hub,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    registry: Any = None,
    top: int = 100,
    interval: float = 1.0,
) -> AsyncIterator[AdminServer]:
    """Serve ``hub``'s admin listener on ``host:port`` for the ``async with`` block.

    It answers ``/healthz`` with 200 inside the block (503 before and after); the
    other parameters are :class:`AdminServer`'s.
    """
    admin = AdminServer(hub, registry=registry, top=top, interval=interval)
    await admin.start(host, port)
    admin.ready()
    try:
        yield admin
    finally:
        admin.stopping()
        await admin.aclose()


# -- the command line -------------------------------------------------------------------


def add_admin_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """``--admin HOST:PORT`` on ``parser``; ``what`` ends its help line."""
    parser.add_argument(
        "--admin",
        type=_address,
        metavar="HOST:PORT",
        help="serve /metrics, /healthz, /clients and a live status page at / on this "
        f"address (PORT alone: 127.0.0.1:PORT){what}",
    )


def _address(text: str) -> tuple[str, int]:
    try:
        return split_address(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r} {exc}") from None


async def start_admin(address: tuple[str, int] | None, hub: Hub, log: Log) -> AdminServer | None:
    """The admin listener ``--admin`` asks for, started (``/healthz`` 503 until
    :meth:`AdminServer.ready`), or None without ``--admin``."""
    if address is None:
        return None
    host, port = address
    admin = AdminServer(hub)
    try:
        await admin.start(host, port)
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ServeError(f"cannot listen on admin address {host}:{port}: {why}") from None
    if admin.registry is None:
        log("admin: /metrics needs prometheus-client: pip install 'wsfanout[metrics]'", always=True)
    if host not in ("127.0.0.1", "::1", "localhost"):
        log(
            f"warning: the admin listener on {host} has no authentication: anyone who can "
            "reach it sees every client's address and statistics",
        )
    return admin
