"""A backplane on Redis pub/sub: a message published on any hub reaches every hub.

Theory of operation
-------------------
Publishing. ``hub.publish()`` delivers to its own subscribers at once, then calls
:meth:`RedisBackplane.forward`, which numbers the message (1, 2, 3, ... in this
backplane's epoch), encodes it into its Redis payload once and pushes it into the
*publish buffer*, a bounded queue under a policy like a subscriber's (``DropOldest``
by default). It never awaits. One sender task owns one Redis connection: it takes
messages from the buffer in order and pipelines a ``PUBLISH`` for each, one pipeline
at a time, so Redis sees them in publish order; every ``heartbeat`` seconds it adds a
heartbeat carrying the highest sequence number settled (acknowledged or dropped).
When Redis fails, the batch in flight goes back to the head of the buffer (a repeat
is harmless: receivers drop sequence numbers they have seen) and the sender backs
off, doubling a jittered delay up to ``max_retry_delay``, while the buffer keeps what
fits and counts what it drops.

Receiving. A receiver task subscribes to the pattern ``<namespace>:*`` on a second
connection. A payload that starts with this backplane's own prefix is its own echo
and is skipped: the hub delivered it locally already. Any other hub's message is
checked against that hub's sequence (:class:`GapCounter`: gaps are counted as lost,
repeats are dropped) and handed to the hub's local fan-out with a local ``seq``.

Channels. A message with no topic goes to ``<namespace>:all``, one with topic ``t``
to ``<namespace>:topic:t``, heartbeats to ``<namespace>:heartbeat``. Every hub hears
every channel of its namespace, since exact loss counting needs each peer's whole
sequence; a topic nobody subscribes to locally costs a dictionary lookup.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

import attrs

from .._core.builtins import DropOldest
from .._core.errors import ConfigError, HubClosedError, invalid
from .._core.message import Message
from .._core.policy import Policy
from .._core.rules import Overflow, resolve_rules
from .._core.validate import positive_seconds
from .envelope import (
    MAGIC,
    MAX_HUB_ID_BYTES,
    Data,
    Foreign,
    Heartbeat,
    decode,
    encode_data,
    encode_heartbeat,
    prefixes,
)
from .gaps import STALE, GapCounter
from .publish_buffer import PublishBuffer

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from .protocol import Inbound

try:
    import redis.asyncio as aredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ImportError:  # pragma: no cover - exercised only without the extra
    aredis = None  # type: ignore[assignment]

__all__ = ["DEFAULT_BUFFER", "BackplaneHealth", "RedisBackplane"]

logger = logging.getLogger("wsfanout.backplane")

DEFAULT_BUFFER = DropOldest(max_messages=10_000, max_bytes=16 * 1024 * 1024)
"""The publish buffer's default policy: while Redis is away, keep the newest 10,000
messages (at most 16 MiB of payload) and count the ones dropped."""

BATCH = 512
"""Most messages in one pipeline."""

_NAMESPACE = re.compile(r"[A-Za-z0-9_.\-]+")
_CACHE_LIMIT = 4096
_NOT_OURS = object()


@attrs.frozen(kw_only=True)
class BackplaneHealth:
    """A backplane's state and counters, in messages.

    On the publishing side, ``forwarded == published + dropped + buffered`` always.
    ``lost`` is exact: the sum of the sequence gaps seen in other hubs' streams.
    """

    connected: bool
    """Both the publishing and the subscribing connection to Redis are up."""
    reconnects: int
    """Times the backplane became connected again after losing a connection."""
    forwarded: int
    """Messages this hub published through the backplane (its last sequence number)."""
    published: int
    """Messages Redis acknowledged."""
    dropped: int
    """Messages that never left: evicted from the full publish buffer, or there at close."""
    buffered: int
    """Messages in the publish buffer now: waiting, or in flight and not yet acknowledged."""
    received: int
    """Messages from other hubs (and from other Redis clients) delivered to this hub."""
    lost: int
    """Messages of other hubs that their sequence numbers show never arrived here."""
    peers: int
    """Other hubs heard from (by message or heartbeat)."""
    malformed: int
    """Payloads in the namespace that carry the wire format's marker but do not parse."""


def _check_buffer(buffer: object) -> PublishBuffer:
    if not isinstance(buffer, Policy):
        raise invalid("buffer", buffer, "must be a Policy such as DropOldest(...)")
    if any(type(stage).decide is not Policy.decide for stage in buffer.stages):
        raise invalid(
            "buffer",
            buffer,
            "decides from snapshots, which a publish buffer never consults; "
            "use DropOldest(...) or DropNewest(...)",
        )
    rules = resolve_rules(buffer)
    if rules.overflow is Overflow.CLOSE or rules.arrival is not None or rules.batch is not None:
        raise invalid(
            "buffer",
            buffer,
            "must only bound the buffer and drop when full; use DropOldest(...) or DropNewest(...)",
        )
    assert rules.max_messages is not None
    assert rules.max_bytes is not None
    assert rules.overflow is not None
    return PublishBuffer(rules.max_messages, rules.max_bytes, rules.overflow)


def _default_hub_id() -> str:
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


class RedisBackplane:
    """Connects hubs in any number of processes through one Redis server.

    ``Hub(backplane=RedisBackplane(url))``, started with ``async with backplane:`` or
    :meth:`start`; ``hub.aclose()`` closes it. Hubs reach each other when they share
    ``url`` and ``namespace``. ``hub_id`` names this hub in logs and on the wire
    (default: host, process id and a random suffix); restarting with the same id
    starts a new epoch. ``buffer`` bounds what waits for Redis. ``heartbeat`` is how
    often, in seconds, this hub tells the others how far its stream has gone, so a
    loss at its end is noticed. Reconnection waits ``min_retry_delay`` doubling to
    ``max_retry_delay`` seconds; ``timeout`` bounds connecting and each command.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "wsfanout",
        hub_id: str | None = None,
        buffer: Policy = DEFAULT_BUFFER,
        heartbeat: float = 1.0,
        min_retry_delay: float = 0.05,
        max_retry_delay: float = 2.0,
        timeout: float = 5.0,
    ) -> None:
        if aredis is None:  # pragma: no cover - exercised only without the extra
            raise ImportError("RedisBackplane needs redis-py: pip install 'wsfanout[redis]'")
        if not isinstance(url, str):
            raise invalid("url", url, "must be a str", ConfigError)
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise invalid("url", url, "must start with redis://, rediss:// or unix://", ConfigError)
        if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
            raise invalid(
                "namespace",
                namespace,
                "must be letters, digits, '_', '.' or '-' (it prefixes Redis channel names)",
                ConfigError,
            )
        if hub_id is None:
            hub_id = _default_hub_id()
        elif not isinstance(hub_id, str) or not 1 <= len(hub_id.encode()) <= MAX_HUB_ID_BYTES:
            raise invalid("hub_id", hub_id, "must be a str of 1 to 255 bytes in UTF-8", ConfigError)
        self._buffer = _check_buffer(buffer)
        self.heartbeat = positive_seconds("heartbeat", heartbeat)
        self.min_retry_delay = positive_seconds("min_retry_delay", min_retry_delay)
        self.max_retry_delay = positive_seconds("max_retry_delay", max_retry_delay)
        if self.min_retry_delay > self.max_retry_delay:
            raise invalid(
                "min_retry_delay",
                min_retry_delay,
                f"must be <= max_retry_delay={max_retry_delay!r}",
                ConfigError,
            )
        self.timeout = positive_seconds("timeout", timeout)
        self.url = url
        self.namespace = namespace
        self.hub_id = hub_id
        self.buffer = buffer
        self.epoch = time.time_ns()
        """This run's epoch: a restarted hub with the same ``hub_id`` starts a new sequence."""

        built = prefixes(hub_id, self.epoch)
        self._data_prefix = built.data
        self._heartbeat_prefix = built.heartbeat
        self._own_tail = built.data[len(MAGIC) + 1 :]
        ns = namespace.encode()
        self._pattern = ns + b":*"
        self._all_channel = ns + b":all"
        self._topic_prefix = ns + b":topic:"
        self._heartbeat_channel = ns + b":heartbeat"
        self._channels: dict[str, bytes] = {}
        self._topics: dict[bytes, object] = {}

        self._inbound: Inbound | None = None
        self._gaps = GapCounter()
        self._seq = 0
        self._published = 0
        self._received = 0
        self._discarded = 0
        self._malformed = 0
        self._reconnects = 0
        self._publishing = False
        self._subscribed = False
        self._connected = False
        self._ever_connected = False
        self._down_since: float | None = None
        self._dropped_when_down = 0
        self._closing = False
        self._sender: asyncio.Task[None] | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._clients: list[Redis] = []
        self._wake: asyncio.Future[None] | None = None
        self._waiters: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        args = [repr(self.url)]
        defaults: dict[str, Any] = {
            "namespace": "wsfanout",
            "buffer": DEFAULT_BUFFER,
            "heartbeat": 1.0,
            "min_retry_delay": 0.05,
            "max_retry_delay": 2.0,
            "timeout": 5.0,
        }
        args.append(f"namespace={self.namespace!r}")
        args.append(f"hub_id={self.hub_id!r}")
        for name, default in defaults.items():
            value = getattr(self, name)
            if name != "namespace" and value != default:
                args.append(f"{name}={value!r}")
        return f"RedisBackplane({', '.join(args)})"

    # -- the hub's side -------------------------------------------------------------

    def bind(self, inbound: Inbound) -> None:
        """Called by ``Hub(backplane=...)``: messages from other hubs go to ``inbound``."""
        if self._inbound is not None and self._inbound is not inbound:
            raise ConfigError(f"{self!r} is already the backplane of another hub")
        self._inbound = inbound

    def forward(self, message: Message) -> None:
        """Queue ``message`` toward Redis; called by ``hub.publish()``, never blocks."""
        if self._closing:
            self._seq += 1
            self._discarded += 1
            return
        self._seq = seq = self._seq + 1
        payload = encode_data(
            self._data_prefix,
            seq,
            message.opcode,
            message.key,
            message.payload,
            lossless=not message.droppable,
        )
        self._buffer.push(seq, self._channel(message.topic), payload)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        if self._waiters:
            self._changed()

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting, in the background: returns at once, even if Redis is down."""
        if self._closing:
            raise HubClosedError(f"start() on a closed {type(self).__name__}")
        if self._sender is not None:
            return
        options: dict[str, Any] = {
            "retry": Retry(NoBackoff(), 0),  # retrying is ours, with backoff, in the tasks
            "socket_connect_timeout": self.timeout,
            "socket_timeout": self.timeout,
        }
        publisher = aredis.Redis.from_url(self.url, single_connection_client=True, **options)
        subscriber = aredis.Redis.from_url(self.url, **options)
        self._clients = [publisher, subscriber]
        loop = asyncio.get_running_loop()
        self._sender = loop.create_task(self._send_loop(publisher), name="wsfanout-redis-send")
        self._receiver = loop.create_task(
            self._receive_loop(subscriber), name="wsfanout-redis-receive"
        )

    async def aclose(self, timeout: float = 2.0) -> None:
        """Stop: flush the publish buffer for at most ``timeout`` seconds if connected.

        Messages still buffered after that are counted as ``dropped``. Idempotent.
        """
        if self._closing:
            return
        self._closing = True
        sender = self._sender
        if sender is not None and self._publishing:
            wake = self._wake
            if wake is not None and not wake.done():
                wake.set_result(None)
            await asyncio.wait([sender], timeout=timeout)
        await _finish(task for task in (self._sender, self._receiver) if task is not None)
        left = self._buffer.clear()
        if left:
            self._discarded += left
            logger.warning("%s closed with %d messages unsent", self.hub_id, left)
        for client in self._clients:
            try:
                await client.aclose()
            except Exception:  # closing a broken connection may fail; nothing is left to do
                logger.debug("closing a Redis client failed", exc_info=True)
        self._publishing = self._subscribed = False
        self._connection_changed()

    async def __aenter__(self) -> RedisBackplane:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- health ---------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    def health(self) -> BackplaneHealth:
        buffer = self._buffer
        return BackplaneHealth(
            connected=self._connected,
            reconnects=self._reconnects,
            forwarded=self._seq,
            published=self._published,
            dropped=buffer.dropped + self._discarded,
            buffered=len(buffer),
            received=self._received,
            lost=self._gaps.lost,
            peers=self._gaps.peers,
            malformed=self._malformed,
        )

    async def wait_for(
        self, predicate: Callable[[BackplaneHealth], bool], timeout: float | None = None
    ) -> BackplaneHealth:
        """Wait until ``predicate(self.health())`` holds; checked at every change.

        Raises :class:`TimeoutError` after ``timeout`` seconds (None: no limit).
        """
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                health = self.health()
                if predicate(health):
                    return health
                waiter: asyncio.Future[None] = loop.create_future()
                self._waiters.append(waiter)
                try:
                    await waiter
                finally:
                    if waiter in self._waiters:
                        self._waiters.remove(waiter)

    def _changed(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def _connection_changed(self) -> None:
        connected = self._publishing and self._subscribed and not self._closing
        if connected and not self._connected:
            if self._ever_connected:
                self._reconnects += 1
                loop = asyncio.get_running_loop()
                away = loop.time() - (self._down_since or loop.time())
                dropped = self.health().dropped - self._dropped_when_down
                logger.warning(
                    "%s reconnected to Redis after %.1f s; %d messages dropped from the "
                    "publish buffer meanwhile",
                    self.hub_id,
                    away,
                    dropped,
                )
            else:
                logger.info("%s connected to Redis at %s", self.hub_id, self.url)
            self._ever_connected = True
        elif not connected and self._connected and not self._closing:
            self._down_since = asyncio.get_running_loop().time()
            self._dropped_when_down = self.health().dropped
        self._connected = connected
        self._changed()

    # -- publishing -----------------------------------------------------------------

    def _channel(self, topic: str | None) -> bytes:
        if topic is None:
            return self._all_channel
        channel = self._channels.get(topic)
        if channel is None:
            if len(self._channels) >= _CACHE_LIMIT:
                self._channels.clear()
            channel = self._channels[topic] = self._topic_prefix + topic.encode()
        return channel

    async def _send_loop(self, client: Redis) -> None:
        delay = self.min_retry_delay
        failures = 0
        while not self._closing:
            try:
                await client.ping()
            except Exception as exc:
                if self._closing:
                    return
                failures += 1
                _log_failure("publish", self.hub_id, exc, failures)
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, self.max_retry_delay)
                continue
            failures = 0
            delay = self.min_retry_delay
            self._publishing = True
            self._connection_changed()
            try:
                await self._pump(client)
                return
            except Exception as exc:
                self._publishing = False
                self._connection_changed()
                if self._closing:
                    return
                failures = 1
                _log_failure("publish", self.hub_id, exc, failures)

    async def _pump(self, client: Redis) -> None:
        """Write the buffer to Redis in order, with heartbeats, until closed and drained.

        A batch whose pipeline fails goes back to the head of the buffer, to be sent
        again after reconnecting; receivers drop whatever part of it arrived twice.
        """
        loop = asyncio.get_running_loop()
        buffer = self._buffer
        next_beat = loop.time()  # a heartbeat at once: receivers learn of a tail loss sooner
        while True:
            if not buffer.waiting:
                if self._closing:
                    beat = encode_heartbeat(self._heartbeat_prefix, self._seq)
                    await client.publish(self._heartbeat_channel, beat)
                    return
                idle = next_beat - loop.time()
                if idle > 0:
                    await self._idle(loop, idle)
                    continue
            pipe = client.pipeline(transaction=False)
            for _, channel, payload in buffer.take(BATCH):
                pipe.publish(channel, payload)
            now = loop.time()
            if now >= next_beat:
                beat = encode_heartbeat(self._heartbeat_prefix, buffer.settled(self._seq))
                pipe.publish(self._heartbeat_channel, beat)
                next_beat = now + self.heartbeat
            try:
                await pipe.execute()
            except BaseException:
                buffer.requeue()
                raise
            self._published += buffer.settle()
            if self._waiters:
                self._changed()

    async def _idle(self, loop: asyncio.AbstractEventLoop, seconds: float) -> None:
        wake: asyncio.Future[None] = loop.create_future()
        self._wake = wake
        timer = loop.call_later(seconds, _resolve, wake)
        try:
            await wake
        finally:
            timer.cancel()
            self._wake = None

    # -- receiving ------------------------------------------------------------------

    async def _receive_loop(self, client: Redis) -> None:
        delay = self.min_retry_delay
        failures = 0
        while not self._closing:
            pubsub = client.pubsub()
            try:
                await pubsub.psubscribe(self._pattern)
                while True:
                    message = await pubsub.get_message(timeout=None)
                    if message is None:
                        continue
                    kind = message["type"]
                    if kind == "pmessage":
                        try:
                            self._on_payload(message["channel"], message["data"])
                        except Exception:
                            logger.exception("%s could not deliver a message", self.hub_id)
                    elif kind == "psubscribe":
                        failures = 0
                        delay = self.min_retry_delay
                        self._subscribed = True
                        self._connection_changed()
            except Exception as exc:
                if self._subscribed:
                    self._subscribed = False
                    self._connection_changed()
                failures += 1
                _log_failure("subscribe", self.hub_id, exc, failures)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except Exception:  # the connection is already broken
                    logger.debug("closing a pubsub failed", exc_info=True)
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self.max_retry_delay)

    def _topic_of(self, channel: bytes) -> object:
        """The local topic of a data channel (None: all), or _NOT_OURS."""
        topic = self._topics.get(channel, _NOT_OURS)
        if topic is _NOT_OURS:
            if channel == self._all_channel:
                topic = None
            elif channel.startswith(self._topic_prefix):
                try:
                    topic = channel[len(self._topic_prefix) :].decode()
                except UnicodeDecodeError:
                    return _NOT_OURS
            else:
                return _NOT_OURS
            if len(self._topics) >= _CACHE_LIMIT:
                self._topics.clear()
            self._topics[channel] = topic
        return topic

    def _on_payload(self, channel: bytes, raw: bytes) -> None:
        if raw.startswith(self._own_tail, len(MAGIC) + 1) and raw.startswith(MAGIC):
            return  # our own echo: the hub delivered it when it was published
        inbound = self._inbound
        if inbound is None or inbound.closed:
            return
        decoded = decode(raw)
        kind = type(decoded)
        if kind is Heartbeat:
            assert isinstance(decoded, Heartbeat)
            lost = self._gaps.heartbeat(decoded.hub_id, decoded.epoch, decoded.seq)
            if lost:
                _log_loss(self.hub_id, decoded.hub_id, lost, decoded.seq, "heartbeat")
            if self._waiters:
                self._changed()
            return
        topic = self._topic_of(channel)
        if topic is _NOT_OURS:
            return
        assert topic is None or isinstance(topic, str)
        if kind is Data:
            assert isinstance(decoded, Data)
            lost = self._gaps.data(decoded.hub_id, decoded.epoch, decoded.seq)
            if lost == STALE:
                return
            if lost:
                _log_loss(self.hub_id, decoded.hub_id, lost, decoded.seq - 1, "message")
            message = decoded.payload
            opcode, key, lossless = decoded.opcode, decoded.key, decoded.lossless
        elif kind is Foreign:
            assert isinstance(decoded, Foreign)
            message, opcode, key, lossless = decoded.payload, decoded.opcode, None, False
        else:
            self._malformed += 1
            logger.warning("%s ignored a payload on %r: %s", self.hub_id, channel, decoded)
            if self._waiters:
                self._changed()
            return
        self._received += 1
        inbound.receive(opcode, message, topic, key, lossless)
        if self._waiters:
            self._changed()


async def _finish(tasks: Iterable[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until they end.

    One ``cancel()`` is not enough on Python 3.11: redis-py writes through
    ``asyncio.wait_for``, which swallows a cancellation arriving just as the write
    completes (CPython gh-86296, fixed in 3.12), and the task reads on. So cancel
    again until it ends.
    """
    pending = {task for task in tasks if not task.done()}
    for _ in range(200):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.05)
    if pending:  # pragma: no cover - would need a task that ignores 200 cancellations
        logger.error("backplane tasks did not stop: %s", pending)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _log_failure(side: str, hub_id: str, exc: BaseException, failures: int) -> None:
    # The first failure of an outage is a warning; the retries after it are debug noise.
    level = logging.WARNING if failures == 1 else logging.DEBUG
    logger.log(level, "%s cannot %s through Redis (%s); retrying", hub_id, side, exc)


def _log_loss(hub_id: str, peer: str, lost: int, last: int, seen: str) -> None:
    logger.warning(
        "%s lost %d messages from %s (up to seq %d, found by a %s)", hub_id, lost, peer, last, seen
    )
