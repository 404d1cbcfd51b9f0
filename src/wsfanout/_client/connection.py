"""A client of the ``wsfanout.v1`` protocol that reconnects, resumes and counts every loss.

Theory of operation
-------------------
Pull-based: :meth:`Client.recv` reads the next frame only when the application asks
for an event, so a slow application slows the connection down (TCP pushes back on the
server, whose policy decides) instead of growing a buffer here. Each frame goes through
the :class:`~wsfanout._client.tracker.Tracker`, which turns it into events: a
:class:`Received` message, and a :class:`Gap` for every loss it reveals or the server
reports, in the order the client learnt of them.

It behaves as the JavaScript client does (docs/js-client.md), so the two count alike.
When a connection ends the client reconnects, unless the server's close code says not
to (``stop_codes``: 1008, refused) or the application closed it, after a full-jitter
exponential backoff: a random delay between ``min_delay`` and
``min(max_delay, min_delay * 2 ** (attempt + 1))``, so a crowd dropped at once does not
come back at once; a connection that brought a frame, or stayed open ``max_delay``,
starts the attempts over. It offers the ``wsfanout.v1`` subprotocol and resumes with a
``since`` query parameter per topic, the last offset received. A connection that
brings nothing (no message, no heartbeat) for ``heartbeat_timeout`` seconds is dead:
it is closed with 4000 and replaced.

Acknowledgements (docs/protocol.md): every frame :meth:`_take` hands over counts as
taken, from the connection's first. Once the server sent an ``ack-request``, an ack
of the count goes out at once when the last one is ``interval`` old, else a timer on
the loop sends it when it is: the timer runs whatever the application is doing,
waiting in ``ws.recv()`` included, so a server that holds frames until it hears is
answered, and the heartbeat deadline around ``ws.recv()`` is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import random
from collections import deque
from collections.abc import Iterable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import attrs
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from .._core.errors import ConfigError, invalid
from .._core.frames import SUBPROTOCOL
from .._core.history import Position
from .._core.validate import positive_seconds
from .tracker import Gap, Tracker

__all__ = ["STOP_CODES", "Client", "ClientStats", "Received"]

logger = logging.getLogger("wsfanout.client")

STOP_CODES = frozenset({1008})
"""Close codes after which the client does not reconnect: 1008, refused (by admission,
a bad ``since``), which asking again would not mend. Every other close reconnects."""

DEAD = 4000
"""The close code of a connection given up for bringing nothing within the timeout."""


@attrs.frozen
class Received:
    """A message the client received: its payload and where it stands in its stream.

    ``topic`` is None for a message published without one. A batch frame (several
    messages joined by the server's combiner) has one ``positions`` entry per message;
    ``offset`` and ``epoch`` are then its last one's. A message in no stream (sent to
    this client alone, or by a server in the raw framing) has offset 0.
    """

    data: str | bytes
    topic: str | None = None
    offset: int = 0
    epoch: str = ""
    key: str | None = None
    positions: tuple[Position, ...] = ()


@attrs.frozen(kw_only=True)
class ClientStats:
    """What a client received and lost, over all its connections."""

    received: int = 0
    """Messages received (each message of a batch counts), duplicates left out."""
    gaps: int = 0
    """Gap events: notices, holes in offsets, heartbeats past the last offset, epochs."""
    lost: int = 0
    """Messages reported lost, summed over the gaps that know their count."""
    recovered: int = 0
    """Messages reported lost, then received all the same (replayed after a reconnect):
    ``lost - recovered`` are gone for good."""
    duplicates: int = 0
    """Messages received again (not delivered a second time)."""
    errors: int = 0
    """Frames that did not parse as the protocol says (skipped)."""
    reconnects: int = 0
    """Connection attempts after the first."""
    epoch_changes: int = 0
    """Times a topic's stream changed epoch under the client (losses unknown)."""
    connections: int = 0
    """Connections opened."""
    timeouts: int = 0
    """Connections given up for bringing nothing within ``heartbeat_timeout``."""
    acks: int = 0
    """Acknowledgements sent (``{"type":"ack","n":N}``), when the server asked for them."""


Event = Received | Gap


class Client:
    """Receive from a wsfanout server, reconnecting and resuming, with every loss told.

    ``async with Client("ws://host:8765/feed", topics=["prices"]) as client:`` then
    ``async for event in client:`` yields :class:`Received` messages and :class:`Gap`
    events. ``topics`` (None: the server's default) become ``topic`` query parameters;
    ``since`` are positions to resume from at the first connection. ``min_delay`` and
    ``max_delay`` bound the reconnection backoff (seconds), ``heartbeat_timeout`` is how
    long a silent connection lives (None: forever), ``stop_codes`` the close codes that
    end the client. Other keyword arguments go to websockets' ``connect()``.
    """

    def __init__(
        self,
        url: str,
        *,
        topics: Iterable[str] | None = None,
        since: Iterable[Position] = (),
        min_delay: float = 0.5,
        max_delay: float = 20.0,
        heartbeat_timeout: float | None = 30.0,
        stop_codes: Iterable[int] = STOP_CODES,
        **options: Any,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise invalid("url", url, "must be a ws:// or wss:// URL", ConfigError)
        if isinstance(topics, str):
            raise invalid("topics", topics, "must be a collection of str", ConfigError)
        self.url = url
        self.topics = None if topics is None else tuple(topics)
        self.min_delay = positive_seconds("min_delay", min_delay)
        self.max_delay = positive_seconds("max_delay", max_delay)
        if self.min_delay > self.max_delay:
            raise invalid(
                "min_delay", min_delay, f"must be <= max_delay={max_delay!r}", ConfigError
            )
        self.heartbeat_timeout = (
            None
            if heartbeat_timeout is None
            else positive_seconds("heartbeat_timeout", heartbeat_timeout)
        )
        self.stop_codes = frozenset(stop_codes)
        self.options = options
        self.close_code: int | None = None
        """The close code of the last connection that ended (1006: it was lost)."""
        self._rng = random.Random()
        self._tracker = Tracker(since)
        self._events: deque[Event] = deque()
        self._ws: ClientConnection | None = None
        self._attempt = 0
        self._ended: BaseException | None = None
        self._closing = False
        self._connections = 0
        self._attempts = 0
        self._timeouts = 0
        self._errors = 0
        self._raw_received = 0
        self._opened_at = 0.0
        self._connected = asyncio.Event()
        # Acknowledgements, for the current connection (reset by _connect).
        self._taken = 0
        self._acked = 0
        self._ack_interval: float | None = None
        self._last_ack = -math.inf
        self._ack_timer: asyncio.TimerHandle | None = None
        self._ack_sends: set[asyncio.Task[None]] = set()
        self._acks = 0

    def __repr__(self) -> str:
        return f"<Client {self.url!r} {'connected' if self.connected else 'not connected'}>"

    # -- the application's side ---------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._ws is not None

    def positions(self) -> tuple[Position, ...]:
        """Where the client would resume from now, per topic."""
        return self._tracker.positions()

    def stats(self) -> ClientStats:
        tracked = self._tracker.stats()
        return ClientStats(
            received=tracked.received + self._raw_received,
            gaps=tracked.gaps,
            lost=tracked.lost,
            recovered=tracked.recovered,
            duplicates=tracked.duplicates,
            errors=self._errors,
            reconnects=max(0, self._attempts - 1),
            epoch_changes=tracked.epoch_changes,
            connections=self._connections,
            timeouts=self._timeouts,
            acks=self._acks,
        )

    async def recv(self) -> Event:
        """The next event, connecting or reconnecting as needed.

        Raises :class:`~websockets.exceptions.ConnectionClosed` once the client ends:
        closed by the application, or by the server with one of ``stop_codes``.
        """
        while not self._events:
            if self._ended is not None:
                raise self._ended
            await self._pump()
        return self._events.popleft()

    def __aiter__(self) -> Client:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.recv()
        except ConnectionClosed:
            raise StopAsyncIteration from None

    async def wait_connected(self) -> None:
        """Wait until a connection is open (events are read by :meth:`recv` meanwhile)."""
        await self._connected.wait()

    async def close(self) -> None:
        """Close the connection and end the client; idempotent."""
        self._closing = True
        self._stop_acks()
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()
            if self._ended is None:
                with contextlib.suppress(ConnectionClosed):
                    await ws.recv()
        if self._ack_sends:  # each ends once its frame is written or the connection closed
            await asyncio.gather(*self._ack_sends)
        if self._ended is None:
            self._ended = _closed_by_client()

    async def drop(self) -> None:
        """Abort the current connection as if the network failed; the client reconnects.
        For tests and demos of resuming."""
        ws = self._ws
        if ws is not None:
            ws.transport.abort()

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- connecting ---------------------------------------------------------------

    def resume_url(self) -> str:
        """The URL of the next connection: the topics, and a ``since`` per position."""
        parts = urlsplit(self.url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "since"]
        if self.topics is not None:
            query = [(k, v) for k, v in query if k != "topic"]
            query += [("topic", topic) for topic in self.topics]
        query += [("since", str(position)) for position in self._tracker.positions()]
        return urlunsplit(parts._replace(query=urlencode(query)))

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before reconnection attempt ``attempt`` (0, 1, 2, ... since the
        last good connection): uniform between ``min_delay`` and a ceiling that doubles
        from twice ``min_delay`` up to ``max_delay``."""
        ceiling = min(self.max_delay, self.min_delay * 2.0 ** min(attempt + 1, 60))
        return self._rng.uniform(self.min_delay, ceiling)

    async def _connect(self) -> ClientConnection:
        while True:
            if self._attempts:
                await asyncio.sleep(self.backoff(self._attempt))  # the backoff itself
                self._attempt += 1
            if self._closing:
                raise _closed_by_client()
            self._attempts += 1
            try:
                ws = await connect(
                    self.resume_url(), subprotocols=[Subprotocol(SUBPROTOCOL)], **self.options
                )
            except InvalidStatus as exc:
                status = exc.response.status_code
                if 400 <= status < 500 and status not in (408, 429):
                    raise  # refused: asking again would be refused again
                logger.info("connecting to %s failed (%s); retrying", self.url, exc)
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                logger.info("connecting to %s failed (%s); retrying", self.url, exc)
            else:
                self._connections += 1
                self._ws = ws
                self._opened_at = asyncio.get_running_loop().time()
                self._stop_acks()
                self._taken = self._acked = 0
                self._last_ack = -math.inf
                self._connected.set()
                return ws

    async def _pump(self) -> None:
        """Read one frame (connecting first if needed) and turn it into events."""
        ws = self._ws
        if ws is None:
            ws = await self._connect()
        try:
            async with asyncio.timeout(self.heartbeat_timeout):
                frame = await ws.recv()
        except TimeoutError:
            self._timeouts += 1
            logger.info("no frame from %s in %s s: reconnecting", self.url, self.heartbeat_timeout)
            self._lost(ws, DEAD)
            await _give_up(ws)
            return
        except ConnectionClosed as exc:
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            self._lost(ws, code)
            if self._closing or code in self.stop_codes:
                self._ended = exc
            return
        self._attempt = 0
        self._take(frame, ws.subprotocol == SUBPROTOCOL)
        self._ack_owed(ws)

    def _lost(self, ws: ClientConnection, code: int) -> None:
        if self._ws is ws:
            self._ws = None
            self._connected.clear()
            self._stop_acks()
        self.close_code = code
        # A connection that stayed open max_delay was good, even if it brought nothing.
        if asyncio.get_running_loop().time() - self._opened_at >= self.max_delay:
            self._attempt = 0

    # -- frames -------------------------------------------------------------------

    def _take(self, frame: str | bytes, v1: bool) -> None:
        """Hand a frame's events over: the frame is taken (counted for acks), whatever
        it carried, parsed or not."""
        self._taken += 1
        if not v1:
            self._raw_received += 1
            self._events.append(Received(frame))
            return
        cut = frame.find("\n") if isinstance(frame, str) else frame.find(b"\n")
        try:
            if cut < 0:
                self._control(json.loads(frame))
            else:
                self._data(json.loads(frame[:cut]), frame[cut + 1 :])
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            self._errors += 1
            logger.warning("skipped a frame from %s that did not parse: %s", self.url, exc)

    def _data(self, header: dict[str, Any], payload: str | bytes) -> None:
        if "b" in header:
            positions = [Position(str(t), str(e), int(o)) for o, e, t in header["b"]]
        elif "o" in header:
            positions = [Position(str(header.get("t", "")), str(header["e"]), int(header["o"]))]
        else:
            positions = []
        gaps: list[Gap] = []
        fresh = [p for p in positions if self._tracker.message(p, gaps)]
        self._events.extend(gaps)
        if positions and not fresh:
            return  # every message it carries was received already
        last = positions[-1] if positions else None
        topic = header.get("t") if "o" in header else (last.stream_topic if last else None)
        self._events.append(
            Received(
                payload,
                topic=topic,
                offset=last.offset if last else 0,
                epoch=last.epoch if last else "",
                key=header.get("k"),
                positions=tuple(positions),
            )
        )

    def _control(self, frame: dict[str, Any]) -> None:
        kind = frame["type"]
        gaps: list[Gap] = []
        if kind == "gap":
            self._tracker.notice(frame, gaps)
        elif kind == "heartbeat":
            self._tracker.heartbeat(frame, gaps)
        elif kind == "resume":
            self._tracker.resume(frame, gaps)
        elif kind == "ack-request":
            self._ack_request(frame)
        self._events.extend(gaps)

    # -- acknowledgements ---------------------------------------------------------

    def _ack_request(self, frame: dict[str, Any]) -> None:
        """Start, change or stop acknowledging; a malformed request changes nothing."""
        if "interval" not in frame:
            raise ValueError("ack-request has no interval")
        interval = frame["interval"]
        if interval is not None and (
            isinstance(interval, bool)
            or not isinstance(interval, int | float)
            or not math.isfinite(interval)
            or interval <= 0
        ):
            raise ValueError(f"ack-request interval={interval!r} is not a number > 0 or null")
        self._cancel_ack_timer()  # a timer armed for the old interval
        self._ack_interval = None if interval is None else float(interval)

    def _ack_owed(self, ws: ClientConnection) -> None:
        """Send the ack owed now if the last one is ``interval`` old, else arm the
        timer that sends it when it is."""
        interval = self._ack_interval
        if interval is None or self._taken <= self._acked or ws is not self._ws:
            return
        loop = asyncio.get_running_loop()
        now = loop.time()
        due = self._last_ack + interval
        if now >= due:
            self._send_ack(ws, now)
        elif self._ack_timer is None:
            # The loop may run a timer up to its clock resolution early: _ack_due then
            # finds it not due yet and arms it again.
            self._ack_timer = loop.call_at(due, self._ack_due, ws)

    def _ack_due(self, ws: ClientConnection) -> None:
        self._ack_timer = None
        self._ack_owed(ws)

    def _send_ack(self, ws: ClientConnection, now: float) -> None:
        self._acked = self._taken
        self._last_ack = now
        send = asyncio.create_task(self._write_ack(ws, self._taken))
        self._ack_sends.add(send)
        send.add_done_callback(self._ack_sends.discard)

    async def _write_ack(self, ws: ClientConnection, n: int) -> None:
        try:
            await ws.send(json.dumps({"type": "ack", "n": n}, separators=(",", ":")))
        except ConnectionClosed:
            return  # the connection's end, which recv() reports as such
        self._acks += 1

    def _cancel_ack_timer(self) -> None:
        if self._ack_timer is not None:
            self._ack_timer.cancel()
            self._ack_timer = None

    def _stop_acks(self) -> None:
        """The connection ended or is replaced: nothing more is owed on it."""
        self._cancel_ack_timer()
        self._ack_interval = None


async def _give_up(ws: ClientConnection) -> None:
    """Close a connection presumed dead with 4000, not waiting long for an answer."""
    try:
        async with asyncio.timeout(0.5):
            await ws.close(DEAD, "heartbeat timeout")
    except TimeoutError:
        ws.transport.abort()


def _closed_by_client() -> ConnectionClosed:
    from websockets.exceptions import ConnectionClosedOK
    from websockets.frames import Close

    return ConnectionClosedOK(Close(1000, ""), Close(1000, ""), True)
