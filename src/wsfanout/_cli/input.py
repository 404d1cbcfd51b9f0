"""What ``serve`` publishes: lines of standard input and messages of Redis channels.

A thread reads standard input (a pipe, a file or a terminal alike) in chunks, splits
them into lines and hands each batch of lines to the event loop, waiting until the
loop has published them: the reader never runs ahead of the hub, and one handoff
carries many lines when input is fast. Every line is one message (text if it is
UTF-8, binary otherwise). Messages of ``--input-channel`` Redis channels are
published the same way, one Redis message to one WebSocket message, on the topic
the channel names (a pattern's matching channel). With ``--topic-field`` and
``--key-field``, a JSON object line gives its message's topic and key. With a
backplane, publishing waits while its publish buffer is more than half full (and
Redis connected), so fast input slows down to what Redis takes instead of
overflowing the buffer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import random
import threading
from typing import TYPE_CHECKING

from .._backplane.redis import RedisBackplane
from .._core.errors import HubClosedError
from .._shell.hub import Hub

if TYPE_CHECKING:
    from .serve import Log, ServeOptions

__all__ = [
    "PACE_HIGH",
    "PACE_LOW",
    "Publisher",
    "field_of",
    "follow_channels",
    "is_pattern",
    "json_object",
    "key_of",
    "read_input",
    "redis_unreachable",
    "start_input",
]


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


class Publisher:
    """Publishes what comes in (lines of standard input, Redis channel messages) on a hub."""

    def __init__(
        self, hub: Hub, backplane: RedisBackplane | None, options: ServeOptions, log: Log
    ) -> None:
        self.hub = hub
        self.backplane = backplane
        self.key_field = options.key_field
        self.topic_field = options.topic_field
        self.log = log
        self.published = 0
        self.eof = asyncio.Event()

    def publish(
        self,
        data: bytes,
        *,
        topic: str | None = None,
        key: str | None = None,
        binary: bool = False,
        lossless: bool = False,
    ) -> int | None:
        """Publish one message (``lossless``: never dropped by a policy); how many
        subscribers it was offered to, or None once the hub is closed. A topic or key
        given wins over the one a field gives."""
        message: str | bytes = data
        if not binary:
            with contextlib.suppress(UnicodeDecodeError):
                message = data.decode()
        topic_field = self.topic_field if topic is None else None
        key_field = self.key_field if key is None else None
        if (topic_field or key_field) and isinstance(message, str):
            document = json_object(message)
            if document is not None:
                if topic_field is not None:
                    topic = field_of(document, topic_field)
                if key_field is not None:
                    key = field_of(document, key_field)
        try:
            offered = self.hub.publish(message, topic=topic, key=key, lossless=lossless)
        except HubClosedError:  # input still arriving while shutting down
            return None
        self.published += 1
        return offered

    async def publish_lines(self, lines: list[bytes]) -> None:
        for start in range(0, len(lines), SLICE):
            for line in lines[start : start + SLICE]:
                if self.publish(line.removesuffix(b"\r")) is None:
                    return
            await self.pace()

    async def pace(self) -> None:
        """Wait while too much waits for a connected Redis (see the module's docstring)."""
        backplane = self.backplane
        if backplane is None or backplane.health().buffered <= PACE_HIGH:
            return
        if backplane.connected:
            await backplane.wait_for(lambda h: not h.connected or h.buffered <= PACE_LOW)


def json_object(line: str) -> dict[str, object] | None:
    """A line's JSON object, or None if it is not one (only lines starting with ``{``
    are parsed)."""
    if not line.startswith("{"):
        return None
    try:
        document = json.loads(line)
    except ValueError:
        return None
    return document if isinstance(document, dict) else None


def field_of(document: dict[str, object], field: str) -> str | None:
    """A field of a JSON object as a topic or key: a string as it is, any other value
    as JSON (``7`` is ``"7"``); None if absent."""
    if field not in document:
        return None
    value = document[field]
    return value if isinstance(value, str) else json.dumps(value)


def key_of(line: str, field: str) -> str | None:
    """The conflation key of a JSON object line: the value of ``field``, if present."""
    document = json_object(line)
    return None if document is None else field_of(document, field)


def is_pattern(channel: str) -> bool:
    """Whether an input channel is a Redis glob pattern (subscribed with PSUBSCRIBE)."""
    return any(char in channel for char in "*?[")


def read_input(fd: int, loop: asyncio.AbstractEventLoop, publisher: Publisher) -> None:
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


async def follow_channels(
    url: str, channels: tuple[str, ...], publisher: Publisher, subscribed: asyncio.Event
) -> None:
    """Publish every message of the Redis ``channels`` (names or patterns) on the topic
    of the channel it came on; resubscribe when Redis fails.

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
                if names_only := [c for c in channels if not is_pattern(c)]:
                    await pubsub.subscribe(*names_only)
                if patterns := [c for c in channels if is_pattern(c)]:
                    await pubsub.psubscribe(*patterns)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    if message["type"] in ("message", "pmessage"):
                        topic = message["channel"].decode(errors="replace")
                        if publisher.publish(message["data"], topic=topic) is None:
                            return
                        await publisher.pace()
                    elif message["type"] in ("subscribe", "psubscribe"):
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


async def redis_unreachable(url: str) -> str | None:
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


def start_input(stdin: int, publisher: Publisher) -> None:
    thread = threading.Thread(
        target=read_input,
        args=(stdin, asyncio.get_running_loop(), publisher),
        name="wsfanout-stdin",
        daemon=True,
    )
    thread.start()
