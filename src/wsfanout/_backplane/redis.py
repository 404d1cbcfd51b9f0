"""A backplane on Redis: every hub's messages numbered in one place, kept, and repaired.

Theory of operation
-------------------
Publishing. ``hub.publish()`` calls :meth:`RedisBackplane.forward`, which numbers the
message for this hub (1, 2, 3, ... in this backplane's run), encodes it once and
pushes it into the *publish buffer*, a bounded queue under a policy like a
subscriber's (``DropOldest`` by default). It never awaits. One sender task owns one
Redis connection: it takes messages from the buffer in order and runs the publish
script (``scripts.py``) once per batch, one batch at a time. The script gives each
message its topic's next offset, appends it to the topic's stream (the history,
trimmed exactly to its bound) and publishes it with its epoch and offset, atomically,
so offsets are the same on every hub. When Redis fails, the batch in flight goes back
to the head of the buffer (the script does not apply it twice) and the sender backs
off, doubling a jittered delay up to ``max_retry_delay``, while the buffer keeps what
fits and counts what it drops.

Delivering. The hub delivers nothing itself: a receiver task subscribes to the pattern
``<namespace>:*``, on a connection it reads raw (``subscription.py``: messages are
parsed in place in the receive buffer, not by redis-py, which costs too much per message
at tens of thousands a second), and hands every numbered message, this hub's own
included, to the hub's ``Inbound`` in offset order. Local subscribers therefore see the
same order and numbering as every other hub's, one Redis round trip after publishing;
while Redis is away, nothing is delivered, the publishes wait in the buffer; and the
sender publishes only while the receiver is subscribed, so a hub never misses its own
messages. The receiver's :class:`~wsfanout._backplane.cursors.Cursors` find every
message pub/sub lost: a gap in a topic's offsets, or, after each (re)subscription, a
stream that Redis has further than this hub (a snapshot of every topic's epoch and
offset). The gap is read back from the stream (*repaired*) while the topic's later
messages wait, then all are handed over in order; what the stream no longer holds is
reported to the hub (``Inbound.lost``), which tells its subscribers. Clients that resume
read the stream through :meth:`RedisBackplane.read`, one read (and one copy of its
messages) shared by every client that resumes from the same place, at once or later
while the stream has not moved on.

Channels. A message with no topic goes to ``<namespace>:all``, one with topic ``t``
to ``<namespace>:topic:t``; its stream is ``<namespace>:history:t`` (``""`` for no
topic). A liveness check (``PING`` on the subscribed connection every ``heartbeat``
seconds) finds a subscription that died without a word.
"""

from __future__ import annotations

import asyncio
import logging
import math
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
from .._core.history import History, check_history
from .._core.message import Message
from .._core.policy import Policy
from .._core.rules import Overflow, resolve_rules
from .._core.streams import NO_TOPIC
from .._core.validate import positive_seconds
from .cursors import Action, Cursors, Deliver, Lose, Reject, Repair
from .envelope import STREAM, Foreign, Numbered, decode, decode_head, decode_numbered, encode_head
from .protocol import Recovered
from .publish_buffer import PublishBuffer
from .resp import RespError
from .scripts import PUBLISH, PUBLISHER_TTL, READ, SNAPSHOT
from .subscription import Subscription

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

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
"""Most messages in one call of the publish script."""

PAGE = 1000
"""Most stream entries in one read."""

MAX_HUB_ID_BYTES = 255

_NAMESPACE = re.compile(r"[A-Za-z0-9_.\-]+")
_CACHE_LIMIT = 4096
_NOT_OURS = object()

Item = tuple[int, bytes, str | None, str | None, bool]
"""A message as the receiver holds it: opcode, payload, topic, key, lossless."""


@attrs.frozen(kw_only=True)
class BackplaneHealth:
    """A backplane's state and counters, in messages.

    On the publishing side, ``forwarded == published + dropped + buffered`` always. On
    the receiving side, ``lost`` is exact: offsets of the streams that pub/sub did not
    bring and that history no longer held when this hub repaired the gap.
    """

    connected: bool
    """Both the publishing and the subscribing connection to Redis are up."""
    reconnects: int
    """Times the backplane became connected again after losing a connection."""
    forwarded: int
    """Messages this hub published through the backplane (its last sequence number)."""
    published: int
    """Messages Redis numbered (acknowledged)."""
    dropped: int
    """Messages that never left: evicted from the full publish buffer, or there at close."""
    buffered: int
    """Messages in the publish buffer now: waiting, or in flight and not yet acknowledged."""
    received: int
    """Messages handed to this hub (its own included), live or repaired, and messages
    of other Redis clients."""
    repaired: int
    """Of ``received``: messages pub/sub lost that this hub read back from history."""
    lost: int
    """Messages pub/sub lost that history no longer held: reported to subscribers."""
    epoch_changes: int
    """Streams that started a new epoch under this hub (Redis lost its data)."""
    topics: int
    """Streams this hub follows."""
    resyncs: int
    """Times this hub compared its streams with Redis, after each (re)subscription."""
    resumes: int
    """Reads of history asked for by resuming clients (through :meth:`RedisBackplane.read`)."""
    reads: int
    """Reads of history made in Redis for them: one for all that asked for the same
    place, while it ran or later while the stream had not moved on."""
    peers: int
    """Other hubs subscribed to the namespace, as of the last count (at each subscription,
    then once per ``heartbeat``)."""
    malformed: int
    """Payloads in the namespace that carry the wire format's marker but do not parse."""
    skipped: int = 0
    """Of ``received``: messages for topics that no subscriber of this hub takes (and no
    history to keep), whose place in their stream was noted without decoding them."""
    lag: float = 0.0
    """Seconds the receiver is behind Redis: how long what Redis had sent it took to be
    read, measured by a ``PING`` on the subscribed connection once per ``heartbeat``
    (a ping still unanswered counts for how long it has waited)."""
    forged: int = 0
    """Numbered messages dropped because their offset was past the last one Redis had
    assigned in their stream: written on pub/sub by some client other than a hub's
    publish script (see the trust model in docs/how-to/redis.md)."""


MAX_CONCURRENT_READS = 16
"""History reads in Redis at once (Redis runs one at a time anyway); the rest wait."""
MAX_KEPT_READS = 256
"""Reads kept for clients resuming later from the same place (past it, the stale go)."""


@attrs.frozen
class _Read:
    """One read of a stream from one place, shared by the clients resuming from there."""

    epoch: str
    last: int
    messages: tuple[Message, ...]
    good_until: float
    """Loop time when its oldest message passes the age bound (inf without one)."""


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
    ``url`` and ``namespace``. ``history`` is how much of each topic's stream Redis
    keeps, to repair what pub/sub loses and for clients that resume (None: none; the
    hub keeps the same bound in memory for recent messages). ``hub_id`` names this hub
    in logs and in Redis (default: host, process id and a random suffix). ``buffer``
    bounds what waits for Redis. ``heartbeat`` is how often, in seconds, the subscribed
    connection is checked. Reconnection waits ``min_retry_delay`` doubling to
    ``max_retry_delay`` seconds; ``timeout`` bounds connecting and each command.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        namespace: str = "wsfanout",
        history: History | None = None,
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
        self._history = check_history(history)
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
        self.run = f"{time.time_ns():x}"
        """This run of the backplane: what Redis remembers applying is per run."""

        ns = namespace.encode()
        self._pattern = ns + b":*"
        self._presence = ns + b":hubs"
        """A channel every hub subscribes to and nobody publishes on: its subscribers
        are the hubs of the namespace (``PUBSUB NUMSUB``)."""
        self._peers = 0
        self._counting: asyncio.Task[None] | None = None
        self._all_channel = ns + b":all"
        self._topic_prefix = ns + b":topic:"
        self._keys = [ns + b":offsets", ns + b":epochs", ns + b":bytes"]
        self._publisher_key = ns + b":publisher:" + hub_id.encode()
        self._stream_prefix = ns + b":history:"
        self._channels: dict[str | None, tuple[bytes, bytes, bytes]] = {}
        self._topics: dict[bytes, object] = {}
        limits = self._history
        if limits is None:
            self._limits: tuple[int, int, int] = (0, 0, 0)
        else:
            max_age = 0 if limits.max_age is None else max(1, round(limits.max_age * 1000))
            self._limits = (limits.max_messages, limits.max_bytes or 0, max_age)

        self._inbound: Inbound | None = None
        self._cursors: Cursors[Item] = Cursors(history=limits is not None)
        self._baselined = False
        self._seq = 0
        self._published = 0
        self._received = 0
        self._discarded = 0
        self._malformed = 0
        self._skipped = 0
        self._ping_sent: float | None = None
        self._lag_seen = 0.0
        self._forged_logged = False
        self._reconnects = 0
        self._resyncs = 0
        self._resumes = 0
        self._history_reads = 0
        self._publishing = False
        self._subscribed = False
        self._connected = False
        self._ever_connected = False
        self._down_since: float | None = None
        self._dropped_when_down = 0
        self._closing = False
        self._listening = asyncio.Event()
        """Set while subscribed (streams resynced): only then does the sender publish, so
        nothing this hub publishes falls between two subscriptions."""
        self._sender: asyncio.Task[None] | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._repairs: set[asyncio.Task[None]] = set()
        self._reads: dict[tuple[str, str, int], asyncio.Task[_Read]] = {}
        self._kept: dict[tuple[str, str, int], _Read] = {}
        self._reading = asyncio.Semaphore(MAX_CONCURRENT_READS)
        """Reads in flight at most: a storm from many places must not take every
        connection the pool may open (the subscription needs one)."""
        """Reads that clients resuming later from the same place share, while good."""
        self._clients: list[Redis] = []
        self._reader: Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._wake: asyncio.Future[None] | None = None
        self._waiters: list[asyncio.Future[None]] = []

    def __repr__(self) -> str:
        args = [repr(self.url)]
        defaults: dict[str, Any] = {
            "history": None,
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
            if value != default:
                args.append(f"{name}={value!r}")
        return f"RedisBackplane({', '.join(args)})"

    @property
    def history(self) -> History | None:
        """How much of each topic's stream Redis keeps (None: none)."""
        return self._history

    def _client_name(self, role: str) -> str:
        """``CLIENT LIST`` names this hub's connections: ``wsfanout-sub:<hub id>``."""
        name = f"wsfanout-{role}:{self.hub_id}"
        # Redis refuses spaces and newlines in client names.
        return "".join(c if c.isprintable() and not c.isspace() else "_" for c in name)

    # -- the hub's side -------------------------------------------------------------

    def bind(self, inbound: Inbound) -> None:
        """Called by ``Hub(backplane=...)``: every message numbered goes to ``inbound``."""
        if self._inbound is not None and self._inbound is not inbound:
            raise ConfigError(f"{self!r} is already the backplane of another hub")
        self._inbound = inbound

    def forward(self, message: Message) -> None:
        """Queue ``message`` toward Redis; called by ``hub.publish()``, never blocks."""
        # Encoded before it is numbered: a message that cannot be sent takes no number.
        try:
            head = encode_head(message.opcode, message.key, lossless=not message.droppable)
        except UnicodeEncodeError:
            raise ValueError(f"key={message.key!r} has no UTF-8 form") from None
        try:
            self._names(message.topic)
        except UnicodeEncodeError:
            raise ValueError(f"topic={message.topic!r} has no UTF-8 form") from None
        if self._closing:
            self._seq += 1
            self._discarded += 1
            return
        self._seq = seq = self._seq + 1
        self._buffer.push(seq, message.topic, head, message.payload)
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        if self._waiters:
            self._changed()

    async def read(self, topic: str | None, epoch: str, after: int) -> Recovered:
        """What the stream of ``topic`` holds after ``after`` of ``epoch``, once this hub
        has been handed it. Reads from one place share one Redis read: those at once, and
        those later while the stream has not moved on and nothing read has aged out."""
        stream = NO_TOPIC if topic is None else topic
        key = (stream, epoch, after)
        self._resumes += 1
        if self._waiters:
            self._changed()
        read = self._kept.get(key)
        if read is not None and not self._still_good(stream, read):
            del self._kept[key]
            read = None
        if read is None:
            task = self._reads.get(key)
            if task is None:
                self._history_reads += 1
                task = asyncio.get_running_loop().create_task(self._read_once(key))
                self._reads[key] = task
                task.add_done_callback(lambda _: self._reads.pop(key, None))
            read = await asyncio.shield(task)
        if not read.epoch:
            return Recovered("", 0, ())
        position = await self._caught_up(stream, read.epoch)
        if position is None:
            # Not "no such stream": the caller must not take what Redis holds as lost.
            raise TimeoutError(
                f"{self.hub_id} did not reach epoch {read.epoch} of {stream!r} "
                f"within {self.timeout} s"
            )
        handed = min(read.last, position)  # what came later reaches the hub, and the client, live
        messages = read.messages
        if messages and messages[-1].offset > handed:
            messages = tuple(m for m in messages if m.offset <= handed)
        return Recovered(read.epoch, handed, messages)

    async def _read_once(self, key: tuple[str, str, int]) -> _Read:
        """Read the stream from ``key``'s place and make its messages, once for every
        client that resumes from there; keep the result while it stays good."""
        stream, epoch, after = key
        loop = asyncio.get_running_loop()
        started = loop.time()
        found_epoch, last, entries, fresh_for = await self._read_all(stream, epoch, after)
        inbound = self._inbound
        assert inbound is not None
        topic = stream if stream else None
        messages = tuple(
            inbound.make(opcode, payload, topic, name, offset, found_epoch, lossless)
            for offset, (opcode, payload, _, name, lossless) in entries
        )
        read = _Read(found_epoch, last, messages, started + fresh_for)
        if found_epoch:
            if len(self._kept) >= MAX_KEPT_READS:
                self._kept = {k: r for k, r in self._kept.items() if self._still_good(k[0], r)}
                if len(self._kept) >= MAX_KEPT_READS:
                    self._kept.clear()
            self._kept[key] = read
        return read

    def _still_good(self, stream: str, read: _Read) -> bool:
        """Whether ``read`` is still what Redis would answer: the stream has not moved
        past it (a publish may trim it) nor started a new epoch, and none of it has aged
        out (Redis trims by age when it is read)."""
        position = self._cursors.position(stream)
        return (
            position is not None
            and position[0] == read.epoch
            and position[1] <= read.last
            and asyncio.get_running_loop().time() < read.good_until
        )

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
        publisher = aredis.Redis.from_url(
            self.url, single_connection_client=True, client_name=self._client_name("pub"), **options
        )
        subscriber = aredis.Redis.from_url(
            self.url, client_name=self._client_name("sub"), **options
        )
        self._clients = [publisher, subscriber]
        self._reader = subscriber  # its pool serves reads too, on other connections
        self._scripts = {
            "publish": publisher.register_script(PUBLISH),
            "read": subscriber.register_script(READ),
            "snapshot": subscriber.register_script(SNAPSHOT),
        }
        loop = asyncio.get_running_loop()
        self._sender = loop.create_task(self._send_loop(publisher), name="wsfanout-redis-send")
        self._receiver = loop.create_task(self._receive_loop(), name="wsfanout-redis-receive")

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
        tasks = [self._sender, self._receiver, *self._repairs, *self._reads.values()]
        await _finish(task for task in tasks if task is not None)
        if self._buffer.in_doubt and self._clients:
            try:  # what Redis ran of the last batch reached the hubs: not dropped
                async with asyncio.timeout(min(timeout, self.timeout)):
                    await self._resolve(self._clients[0])
            except Exception:
                logger.debug("could not ask Redis what it applied", exc_info=True)
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
        cursors = self._cursors
        return BackplaneHealth(
            connected=self._connected,
            reconnects=self._reconnects,
            forwarded=self._seq,
            published=self._published,
            dropped=buffer.dropped + self._discarded,
            buffered=len(buffer),
            received=self._received,
            repaired=cursors.repaired_count,
            lost=cursors.lost,
            epoch_changes=cursors.epoch_changes,
            topics=len(cursors),
            resyncs=self._resyncs,
            resumes=self._resumes,
            reads=self._history_reads,
            peers=self._peers,
            malformed=self._malformed,
            forged=cursors.forged,
            skipped=self._skipped,
            lag=self._lag(),
        )

    def _lag(self) -> float:
        """The last lag measured, or how long the ping in flight has waited if longer."""
        sent = self._ping_sent
        if sent is None or not self._subscribed:
            return self._lag_seen
        return max(self._lag_seen, time.monotonic() - sent)

    async def wait_for(
        self, predicate: Callable[[BackplaneHealth], bool], timeout: float | None = None
    ) -> BackplaneHealth:
        """Wait until ``predicate(self.health())`` holds; checked at every change.

        Raises :class:`TimeoutError` after ``timeout`` seconds (None: no limit).
        """
        async with asyncio.timeout(timeout):
            while True:
                health = self.health()
                if predicate(health):
                    return health
                await self._change()

    async def _change(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
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

    def _names(self, topic: str | None) -> tuple[bytes, bytes, bytes]:
        """The stream name, channel and stream key of ``topic``."""
        names = self._channels.get(topic)
        if names is None:
            if len(self._channels) >= _CACHE_LIMIT:
                self._channels.clear()
            name = b"" if topic is None else topic.encode()
            channel = self._all_channel if topic is None else self._topic_prefix + name
            names = self._channels[topic] = (name, channel, self._stream_prefix + name)
        return names

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
        """Run the buffer through the publish script in order, until closed and drained.

        A batch whose call fails goes back to the head of the buffer, to be sent again
        after reconnecting; the script skips what it applied already.
        """
        loop = asyncio.get_running_loop()
        buffer = self._buffer
        script = self._scripts["publish"]
        maxn, maxb, maxage = self._limits
        prefix = STREAM
        if buffer.in_doubt:
            await self._resolve(client)
        while True:
            if not buffer.waiting:
                if self._closing:
                    return
                await self._idle(loop)
                continue
            if not self._listening.is_set():
                await self._listening.wait()
                continue
            batch = buffer.take(BATCH)
            keys: list[bytes] = [*self._keys, self._publisher_key]
            args: list[bytes | str | int] = [
                secrets.token_hex(4),
                self.run,
                batch[0][0],
                len(batch),
                maxn,
                maxb,
                maxage,
                PUBLISHER_TTL,
                prefix,
            ]
            for _, topic, head, payload in batch:
                name, channel, stream = self._names(topic)
                keys.append(stream)
                args += (name, channel, head, payload)
            try:
                await script(keys=keys, args=args, client=client)
            except BaseException:
                buffer.fail()  # Redis may have run it: ask, once connected again
                raise
            self._published += buffer.settle()
            if self._waiters:
                self._changed()

    async def _resolve(self, client: Redis) -> None:
        """Settle the batch in doubt: what Redis ran of it (the publish script keeps
        the last sequence number it applied for this run) is published, not dropped."""
        stored = await client.get(self._publisher_key) or b""
        text = stored if isinstance(stored, str) else stored.decode()
        run, _, seq = text.partition(" ")
        applied = int(seq) if run == self.run and seq.isdigit() else 0
        self._published += self._buffer.resolve(applied)
        if self._waiters:
            self._changed()

    async def _idle(self, loop: asyncio.AbstractEventLoop) -> None:
        wake: asyncio.Future[None] = loop.create_future()
        self._wake = wake
        try:
            await wake
        finally:
            self._wake = None

    # -- receiving ------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        loop = asyncio.get_running_loop()
        delay = self.min_retry_delay
        failures = 0
        while not self._closing:
            subscription: Subscription | None = None
            try:
                # Before subscribing: what this hub need not deliver, the first time.
                before = None if self._baselined else await self._snapshot()
                subscription = await Subscription.open(
                    self.url,
                    client_name=self._client_name("sub"),
                    patterns=(self._pattern,),
                    channels=(self._presence,),
                    on_message=self._on_message,
                    hold=frozenset({"psubscribe"}),
                    timeout=self.timeout,
                )
                pinged: int | None = None
                counted = -math.inf
                self._ping_sent = None
                while True:
                    now = loop.time()
                    if now - counted >= self.heartbeat and self._subscribed:
                        counted = now
                        self._count_peers()
                        if self._ping_sent is None:
                            # Its answer comes after all Redis sent before it: the lag.
                            self._ping_sent = time.monotonic()
                            subscription.ping()
                    reply = await subscription.reply(self.heartbeat)
                    if reply is None:
                        # Alive while bytes come (a receiver behind waits for its pong).
                        seen = subscription.received
                        if pinged is None:
                            subscription.ping()
                            pinged = seen
                        elif seen == pinged:
                            raise ConnectionError(f"no answer to a ping in {self.heartbeat} s")
                        else:
                            pinged = seen
                        continue
                    pinged = None
                    if reply.kind == "pong":
                        sent = self._ping_sent
                        if sent is not None:
                            self._lag_seen = time.monotonic() - sent
                            self._ping_sent = None
                            if self._waiters:
                                self._changed()
                    elif reply.kind == "psubscribe":
                        # Subscribed: whatever Redis has beyond this hub is repaired. The
                        # messages after the confirmation wait (held) until then.
                        after = await self._snapshot()
                        if before is not None:
                            self._cursors.baseline(before)
                            self._baselined = True
                        self._resyncs += 1
                        self._run(self._cursors.resync(after))
                        failures = 0
                        delay = self.min_retry_delay
                        self._subscribed = True
                        self._listening.set()
                        self._connection_changed()
                        subscription.release()
            except Exception as exc:
                self._listening.clear()
                if self._subscribed:
                    self._subscribed = False
                    self._connection_changed()
                failures += 1
                if isinstance(exc, RespError):
                    logger.warning(
                        "%s read bytes that are not RESP on its subscribed connection (%s); "
                        "reconnecting",
                        self.hub_id,
                        exc,
                    )
                else:
                    _log_failure("subscribe", self.hub_id, exc, failures)
            finally:
                if subscription is not None:
                    subscription.close()
            await asyncio.sleep(random.uniform(delay / 2, delay))
            delay = min(delay * 2, self.max_retry_delay)

    def _count_peers(self) -> None:
        """Count the other hubs of the namespace, in a task (the receiver must not wait)."""
        if self._counting is not None and not self._counting.done():
            return
        task = asyncio.get_running_loop().create_task(self._peer_count())
        self._counting = task
        self._repairs.add(task)  # ended with the repairs at close
        task.add_done_callback(self._repairs.discard)

    async def _peer_count(self) -> None:
        assert self._reader is not None
        try:
            ((_, subscribed),) = await self._reader.pubsub_numsub(self._presence)
        except Exception:
            logger.debug("counting the hubs of the namespace failed", exc_info=True)
            return
        peers = max(0, int(subscribed) - 1)
        if peers != self._peers:
            self._peers = peers
            if self._waiters:
                self._changed()

    async def _snapshot(self) -> dict[str, tuple[str, int]]:
        """Every stream's epoch and last offset in Redis, taken atomically."""
        offsets, epochs = await self._scripts["snapshot"](keys=self._keys[:2], client=self._reader)
        last = dict(zip(offsets[::2], offsets[1::2], strict=True))
        return {
            name.decode(): (epoch.decode(), int(last.get(name, 0)))
            for name, epoch in zip(epochs[::2], epochs[1::2], strict=True)
        }

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
        """One pub/sub payload as bytes (``_on_message`` on a buffer of its own)."""
        self._on_message(channel, raw, raw, 0, len(raw))

    def _on_message(
        self,
        channel: bytes,
        buffer: bytes | bytearray,
        view: bytes | memoryview,
        start: int,
        end: int,
    ) -> None:
        """A message of the subscription, its data at ``buffer[start:end]`` (in the
        connection's buffer: only the payload is copied, once, for the hub)."""
        try:
            inbound = self._inbound
            if inbound is None or inbound.closed:
                return
            topic = self._topics.get(channel, _NOT_OURS)
            if topic is _NOT_OURS:
                topic = self._topic_of(channel)
                if topic is _NOT_OURS:
                    return
            assert topic is None or isinstance(topic, str)
            if buffer.startswith(STREAM, start, end) and self._skip(
                topic, buffer, start, end, inbound
            ):
                return
            fields = decode_numbered(buffer, view, start, end)
            if fields is not None:
                epoch, offset, opcode, key, payload, lossless = fields
                stream = NO_TOPIC if topic is None else topic
                item: Item = (opcode, payload, topic, key, lossless)
                actions = self._cursors.live(stream, epoch, offset, item)
                if actions is None:
                    self._received += 1
                    inbound.receive(opcode, payload, topic, key, offset, epoch, lossless)
                else:
                    self._run(actions)
            else:
                self._on_other(channel, bytes(view[start:end]), topic, inbound)
            if self._waiters:
                self._changed()
        except Exception:
            logger.exception("%s could not deliver a message", self.hub_id)

    def _on_other(self, channel: bytes, raw: bytes, topic: str | None, inbound: Inbound) -> None:
        """A payload that is not a well-formed numbered message: another client's, as it
        is, or a malformed one, counted and logged."""
        decoded = decode(raw)
        if type(decoded) is Foreign:
            self._received += 1
            inbound.receive(decoded.opcode, decoded.payload, topic, None, 0, "")
        elif type(decoded) is Numbered:  # pragma: no cover - decode_numbered took these
            raise AssertionError(f"decode_numbered refused {raw[:64]!r}, which decodes")
        else:
            self._malformed += 1
            logger.warning("%s ignored a payload on %r: %s", self.hub_id, channel, decoded)

    def _skip(
        self, topic: str | None, buffer: bytes | bytearray, start: int, end: int, inbound: Inbound
    ) -> bool:
        """The next message of a stream that no subscriber of this hub takes: advance
        the stream from its epoch and offset alone, without decoding the rest (a hub
        subscribed to every topic of a busy namespace receives them all). Anything
        else (a gap, another epoch, a repair under way) takes the full path."""
        cursor = self._cursors.cursor(NO_TOPIC if topic is None else topic)
        if cursor is None or cursor.repairing:
            return False
        epoch = cursor.epoch
        offset = cursor.last + 1
        # "<epoch> <offset> ": the epoch must be the cursor's, the offset the next one.
        if not buffer.startswith(b"%s %d " % (epoch.encode(), offset), start + len(STREAM), end):
            return False
        if not inbound.skip(topic, epoch, offset):
            return False
        cursor.last = offset
        self._received += 1
        self._skipped += 1
        return True

    def _run(self, actions: list[Action[Item]]) -> None:
        """Carry out what the cursors decided, in order."""
        inbound = self._inbound
        for action in actions:
            if type(action) is Deliver:
                if inbound is None or inbound.closed:
                    continue
                opcode, payload, topic, key, lossless = action.item
                self._received += 1
                inbound.receive(opcode, payload, topic, key, action.offset, action.epoch, lossless)
            elif type(action) is Lose:
                assert isinstance(action, Lose)
                count = sum(last - first + 1 for first, last in action.ranges)
                logger.warning(
                    "%s lost %d messages of stream %r that history no longer held: %s",
                    self.hub_id,
                    count,
                    action.stream,
                    action.ranges,
                )
                if inbound is not None and not inbound.closed:
                    topic = action.stream if action.stream else None
                    inbound.lost(topic, action.epoch, action.ranges)
            elif type(action) is Reject:
                assert isinstance(action, Reject)
                # Once at warning level: a forger must not be able to flood the log.
                level = logging.DEBUG if self._forged_logged else logging.WARNING
                self._forged_logged = True
                logger.log(
                    level,
                    "%s dropped %d messages of stream %r numbered past its last offset %d "
                    "in Redis (%s): forged on pub/sub by a client that is not a hub; "
                    "counted in health().forged, not logged again",
                    self.hub_id,
                    len(action.offsets),
                    action.stream,
                    action.last,
                    ", ".join(map(str, action.offsets[:5])),
                )
            else:
                assert isinstance(action, Repair)
                task = asyncio.get_running_loop().create_task(self._repair(action))
                self._repairs.add(task)
                task.add_done_callback(self._repairs.discard)
        if self._waiters:
            self._changed()

    async def _repair(self, repair: Repair) -> None:
        """Read a gap back from the stream, retrying until it is read or moot."""
        delay = self.min_retry_delay
        while True:
            try:
                found, real = await self._read_range(
                    repair.stream, repair.epoch, repair.after, repair.upto
                )
                break
            except Exception as exc:
                if self._closing:
                    return
                _log_failure("repair from", self.hub_id, exc, 1)
                await asyncio.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, self.max_retry_delay)
        self._run(self._cursors.repaired(repair, found, real))

    async def _read_range(
        self, stream: str, epoch: str, after: int, upto: int
    ) -> tuple[list[tuple[int, Item]], tuple[str, int]]:
        """Entries ``(after, upto]`` of ``stream`` in ``epoch`` (none in another epoch),
        and the stream's epoch and last offset as Redis answered the first read."""
        found: list[tuple[int, Item]] = []
        real: tuple[str, int] | None = None
        while True:
            now, last, start, entries, _ = await self._read_page(stream, epoch, after, upto)
            if real is None:
                real = (now, last)
            if now != epoch or start != after or not entries or after >= upto:
                break
            found += entries
            after = entries[-1][0]
            if after >= upto:
                break
        return found, real

    async def _read_all(
        self, stream: str, epoch: str, after: int
    ) -> tuple[str, int, list[tuple[int, Item]], float]:
        """``(epoch, last, entries, fresh for)``: what the stream holds after ``after`` of
        ``epoch`` (from 0 if that position is not in it), every page of it, and the
        seconds until its oldest entry passes the age bound (inf without one)."""
        found_epoch, last, after, entries, fresh_for = await self._read_page(
            stream, epoch, after, 0
        )
        found = list(entries)
        while found and found[-1][0] < last:
            more_epoch, _, _, more, _ = await self._read_page(
                stream, found_epoch, found[-1][0], last
            )
            if more_epoch != found_epoch or not more:
                break
            found += more
        return found_epoch, last, found, fresh_for

    async def _read_page(
        self, stream: str, epoch: str, after: int, upto: int
    ) -> tuple[str, int, int, list[tuple[int, Item]], float]:
        _, _, key = self._names(stream if stream else None)
        maxn, maxb, maxage = self._limits
        async with self._reading:
            reply = await self._scripts["read"](
                keys=[*self._keys, key],
                args=[stream, epoch, after, upto, PAGE, maxn, maxb, maxage],
                client=self._reader,
            )
        found_epoch = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        topic = stream if stream else None
        entries: list[tuple[int, Item]] = []
        oldest: int | None = None
        for entry_id, fields in reply[3]:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            opcode, key_name, lossless, _ = decode_head(values[b"h"])
            offset = int(entry_id.split(b"-", 1)[0])
            entries.append((offset, (opcode, values[b"d"], topic, key_name, lossless)))
            if oldest is None:
                oldest = int(values[b"t"])
        fresh_for = math.inf
        if maxage and oldest is not None and len(reply) > 4:
            fresh_for = (oldest + maxage - int(reply[4])) / 1000
        return found_epoch, int(reply[1]), int(reply[2]), entries, fresh_for

    async def _caught_up(self, stream: str, epoch: str) -> int | None:
        """This hub's last offset of ``stream`` once it is in ``epoch`` (waiting for it at
        most ``timeout`` seconds); None if it is not."""
        try:
            async with asyncio.timeout(self.timeout):
                while True:
                    position = self._cursors.position(stream)
                    if position is not None and position[0] == epoch:
                        return position[1]
                    await self._change()
        except TimeoutError:
            return None


async def _finish(tasks: Iterable[asyncio.Task[Any]]) -> None:
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


def _log_failure(side: str, hub_id: str, exc: BaseException, failures: int) -> None:
    # The first failure of an outage is a warning; the retries after it are debug noise.
    level = logging.WARNING if failures == 1 else logging.DEBUG
    logger.log(level, "%s cannot %s through Redis (%s); retrying", hub_id, side, exc)
