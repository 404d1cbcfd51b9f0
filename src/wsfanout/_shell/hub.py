"""The hub: where messages are published and subscribers come and go.

``Hub`` is the public face; its engine is a :class:`~wsfanout._shell.fanout.Fanout`
(who gets a message, and the fast path), and each subscriber is a
:class:`~wsfanout._shell.link.Link` (its outbox, connection and relay task) behind the
:class:`Subscriber` the application holds. The hub owns their lifecycle: attach on
subscribe, release when the handler returns, statistics of subscribers present and
past, and a shutdown that no stalled client can hold up.

Resuming (docs/protocol.md): a subscriber that says where it was (``since``) is sent,
for each topic, a ``resume`` frame, a gap notice for what history no longer holds and
the messages it missed, all before it joins the fan-out, so nothing live can come
first. From a history in memory that is synchronous; through a backplane, the hub
awaits the backplane's history, then adds what its own window holds beyond it. A
heartbeat task (one per hub) tells ``wsfanout.v1`` subscribers that have received
nothing for ``heartbeat`` seconds the last offset of their topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State
from websockets.typing import Data

from .._backplane.protocol import Backplane, Recovered
from .._core.builtins import DEFAULT_POLICY
from .._core.control import heartbeat_frame
from .._core.decision import Close, Decision
from .._core.errors import ConfigError, HubClosedError, invalid
from .._core.frames import FRAMINGS, SUBPROTOCOL
from .._core.history import (
    Held,
    History,
    MemoryHistory,
    Plans,
    Position,
    ResumePlan,
    check_history,
    missing_ranges,
    parse_since,
    plan_resume,
    resume_after,
    wanted,
)
from .._core.message import Message, encode_payload
from .._core.policy import Policy, as_policy
from .._core.snapshot import Snapshot
from .._core.stats import HubStats, SubscriberStats, add_stats
from .._core.validate import check_close, positive_seconds
from .fanout import Fanout, OnStep
from .link import Link
from .monitor import HubMonitor, Ledger
from .reading import gate_reading, is_gated, ungate_reading
from .sockets import NOTSENT_LOWAT
from .subscriber import Subscriber, check_topics

__all__ = ["DEFAULT_NOTSENT_LOWAT", "Hub", "OnMessage", "OnStep"]

DEFAULT_NOTSENT_LOWAT = 16384
"""``Hub(notsent_lowat=...)``'s default: unsent bytes the kernel may hold per TCP
subscriber before the rest waits in the write buffer, where its policy sees it."""

logger = logging.getLogger("wsfanout")

OPEN = State.OPEN

MAX_POSITIONS = 256
"""``since`` positions one connection may give."""

DEFAULT_HEARTBEAT = 15.0

POLICY_NAME_MAX = 256
"""Longest policy name (a policy file's path may be one): a label, not a place for data."""


def check_policy_name(name: object) -> str:
    """A policy name: a non-empty str of at most :data:`POLICY_NAME_MAX` printable characters."""
    if not isinstance(name, str) or not name or not name.isprintable():
        raise invalid("policy_name", name, "must be a non-empty printable str", ConfigError)
    if len(name) > POLICY_NAME_MAX:
        raise invalid(
            "policy_name", name, f"must be at most {POLICY_NAME_MAX} characters", ConfigError
        )
    return name


OnMessage = Callable[[Subscriber, Data], Awaitable[None]]
"""``Hub.serve``'s ``on_message``: called with each message the client sends."""


class Hub:
    """Fans messages out to WebSocket subscribers, each under its own policy.

    ``policy`` is the policy of subscribers that do not name one (by default
    :data:`~wsfanout.policies.DEFAULT_POLICY`). ``close_timeout`` bounds every close
    the hub performs, after which the transport is aborted. With a ``backplane``
    (see :mod:`wsfanout.backplane`), messages published on any hub sharing it reach
    the subscribers of every one of them, numbered by the backplane. ``cork`` (on by
    default) sends a burst of frames for one connection in one loop iteration as one
    write. ``history`` keeps each topic's recent messages for clients that resume
    (None, the default: none); with a backplane, history is the backplane's setting.
    ``heartbeat`` is how many seconds a ``wsfanout.v1`` subscriber may receive nothing
    before it is sent a heartbeat (None: never). ``on_step`` is called with the
    subscriber and the :class:`LevelStep` each time a ladder policy (``Escalate``,
    ``Adaptive``) steps, soon after the step. ``notsent_lowat`` (bytes, or None to
    leave sockets as they are) is the ``TCP_NOTSENT_LOWAT`` set on every subscribed TCP
    connection, so that what a stalled client cannot take waits where its policy sees
    it rather than in the kernel.

    ``policy_name`` names ``policy`` in :attr:`monitor` and metrics (subscribers that
    name their own policy take ``policy_name`` from :meth:`serve`); ``closed_history``
    is how many released subscribers :attr:`HubMonitor.closed` remembers;
    ``timings`` records the latency histograms (:meth:`HubMonitor.timings`): from the
    start (True), never (False), or once metrics or an admin listener ask (None).
    """

    def __init__(
        self,
        *,
        policy: Policy | None = None,
        close_timeout: float = 5.0,
        backplane: Backplane | None = None,
        cork: bool = True,
        history: History | None = None,
        heartbeat: float | None = DEFAULT_HEARTBEAT,
        on_step: OnStep | None = None,
        notsent_lowat: int | None = DEFAULT_NOTSENT_LOWAT,
        policy_name: str = "default",
        closed_history: int = 100,
        timings: bool | None = None,
    ) -> None:
        self.close_timeout = positive_seconds("close_timeout", close_timeout)
        if notsent_lowat is not None and (
            isinstance(notsent_lowat, bool)
            or not isinstance(notsent_lowat, int)
            or not 1 <= notsent_lowat <= 2**31 - 1
        ):
            raise invalid(
                "notsent_lowat",
                notsent_lowat,
                "must be a number of bytes >= 1, or None",
                ConfigError,
            )
        self.notsent_lowat = notsent_lowat
        if not isinstance(cork, bool):
            raise ConfigError(f"cork={cork!r} must be True or False", name="cork", value=cork)
        if on_step is not None and not callable(on_step):
            raise ConfigError(
                f"on_step={on_step!r} must be callable", name="on_step", value=on_step
            )
        history = check_history(history)
        if backplane is not None:
            if history is not None:
                raise invalid(
                    "history",
                    history,
                    "is the backplane's setting when a hub has one: pass it to the backplane",
                    ConfigError,
                )
            history = backplane.history
        self.history = history
        """How much of each topic the hub keeps for clients that resume (None: nothing)."""
        self.heartbeat = None if heartbeat is None else positive_seconds("heartbeat", heartbeat)
        if timings is not None and not isinstance(timings, bool):
            raise invalid("timings", timings, "must be True, False or None", ConfigError)
        if isinstance(closed_history, bool) or not isinstance(closed_history, int):
            raise invalid("closed_history", closed_history, "must be an int >= 0", ConfigError)
        if closed_history < 0:
            raise invalid("closed_history", closed_history, "must be >= 0", ConfigError)
        self.policy = DEFAULT_POLICY if policy is None else as_policy(policy)
        self.policy_name = check_policy_name(policy_name)
        self._live: set[Link] = set()
        """Every link not yet released, attached or not: what stats() and aclose() see."""
        self._ledger = Ledger(self._live, closed_history=closed_history)
        """The counters of released subscribers, how they ended, and the timings."""
        window = None if history is None else MemoryHistory(history)
        self._fanout = Fanout(cork=cork, history=window, on_step=on_step)
        self._monitor = HubMonitor(
            self._fanout,
            self._ledger,
            timings=timings,
            notsent_lowat=notsent_lowat if NOTSENT_LOWAT is not None else None,
            notsent_lowat_supported=NOTSENT_LOWAT is not None,
        )
        if timings:
            self._monitor.start_timings()
        self._resumed = 0
        self._replayed = 0
        self._history_missed = 0
        self._plans = Plans()
        """Resume plans shared by clients resuming from one position (a storm)."""
        self._beats: asyncio.Task[None] | None = None
        self._backplane = backplane
        if backplane is not None:
            backplane.bind(self._fanout)

    @property
    def backplane(self) -> Backplane | None:
        """The backplane this hub shares messages through, if any."""
        return self._backplane

    # -- publishing -----------------------------------------------------------------

    def publish(
        self,
        message: str | bytes | bytearray | memoryview,
        *,
        topic: str | None = None,
        key: str | None = None,
        lossless: bool = False,
    ) -> int:
        """Offer ``message`` to every subscriber of ``topic`` (all subscribers if None).

        A ``str`` is sent as a Text frame, bytes-like as Binary. ``key`` identifies what
        the message updates, for ``ConflateByKey``. A ``lossless`` message is never
        dropped, skipped, conflated or batched by any policy and keeps its place in
        publish order; a subscriber whose queue cannot hold it is closed (1013) rather
        than left without it. Never blocks, and never raises for one subscriber's
        failure. Returns how many subscribers it was offered to; with a backplane, how
        many of this hub's subscribers it is for: the backplane numbers it, then every
        hub, this one included, offers it to its own (lossless on every hub). Raises
        ``TypeError`` for a message that is neither, and ``ValueError`` for a ``str``
        with no UTF-8 form (a lone surrogate, such as ``"\\ud800"``); either way
        nothing is published and no offset is taken.
        """
        fanout = self._fanout
        if fanout.closed:
            raise HubClosedError("publish() on a closed hub")
        if topic is not None and not isinstance(topic, str):
            raise TypeError(f"topic={topic!r} must be a str or None")
        if key is not None and not isinstance(key, str):
            raise TypeError(f"key={key!r} must be a str or None")
        if lossless is not True and lossless is not False:
            raise TypeError(f"lossless={lossless!r} must be True or False")
        backplane = self._backplane
        # Encoded before the stream advances: a message refused here takes no offset.
        opcode, payload = encode_payload(message)
        if backplane is not None:
            msg = Message(
                opcode,
                payload,
                seq=0,
                time=fanout.now(),
                topic=topic,
                key=key,
                droppable=not lossless,
            )
            backplane.forward(msg)
            index = fanout.index
            if topic is None:
                return len(index.members)
            return len(index.wildcard) + len(index.by_topic.get(topic, ()))
        if not fanout.index.members and fanout.history is None:
            fanout.streams.advance(topic)  # the stream goes on without listeners
            return 0
        now = fanout.now()
        stream = fanout.streams.advance(topic)
        msg = Message(
            opcode,
            payload,
            seq=fanout.next_seq(),
            time=now,
            topic=topic,
            key=key,
            droppable=not lossless,
            offset=stream.last,
            epoch=stream.epoch,
        )
        fanout.record(msg, now)
        return fanout.deliver(msg, now)

    # -- subscribing ----------------------------------------------------------------

    async def serve(
        self,
        websocket: Connection,
        *,
        policy: Policy | None = None,
        topics: Iterable[str] | None = None,
        on_message: OnMessage | None = None,
        framing: str | None = None,
        since: Iterable[Position | str] | None = None,
        policy_name: str | None = None,
    ) -> SubscriberStats:
        """Subscribe ``websocket`` and relay to it until the connection closes.

        Keeps reading what the client sends, so close frames and pings are processed;
        each message goes to ``on_message(subscriber, message)`` if given. ``framing``
        is ``"raw"`` (payloads as published) or ``"v1"`` (each with its offset; see
        docs/protocol.md); by default ``"v1"`` if the connection negotiated the
        ``wsfanout.v1`` subprotocol, else ``"raw"``. ``since`` are the positions
        (``Position`` or ``"TOPIC:EPOCH:OFFSET"``) the subscriber resumes from, before
        it receives anything live; by default the request's ``since`` query parameters
        (a bad one closes the connection with 1008), ``()`` for none. ``policy_name``
        labels the subscriber in :attr:`monitor` and metrics: a preset or route name,
        one of a few (never a client id); by default the hub's ``policy_name`` without
        ``policy``, else ``"custom"``. Returns the subscriber's final statistics.
        """
        # Not through subscribe(): its context manager would cost every idle
        # subscriber about 500 bytes more (see docs/performance.md).
        link = self._open(websocket, policy, topics, framing, policy_name)
        link.hears_acks = True
        subscriber = link.subscriber
        try:
            await self._start(link, since)
            async for data in websocket:
                if link.hear(data):
                    continue
                if on_message is not None:
                    await on_message(subscriber, data)
        except ConnectionClosed:
            pass
        finally:
            await self._release(link)
        return subscriber.stats()

    @contextlib.asynccontextmanager
    async def subscribe(
        self,
        websocket: Connection,
        *,
        policy: Policy | None = None,
        topics: Iterable[str] | None = None,
        framing: str | None = None,
        since: Iterable[Position | str] | None = None,
        policy_name: str | None = None,
        acks: bool = False,
    ) -> AsyncIterator[Subscriber]:
        """Subscribe ``websocket`` for the duration of the ``async with`` block.

        The block must keep reading from the connection (or the connection stops
        processing close frames and pings); :meth:`serve` does that for you.
        ``framing``, ``since`` and ``policy_name`` are as for :meth:`serve`: the block
        starts once the subscriber has been sent what it missed. ``acks``: the block
        hands every message it reads to :meth:`Subscriber.hear`, so the hub may ask the
        client for acknowledgements (docs/protocol.md), as :meth:`serve` does.
        """
        if not isinstance(acks, bool):
            raise invalid("acks", acks, "must be True or False", ConfigError)
        link = self._open(websocket, policy, topics, framing, policy_name)
        link.hears_acks = acks
        try:
            await self._start(link, since)
            yield link.subscriber
        finally:
            await self._release(link)

    def _open(
        self,
        websocket: Connection,
        policy: Policy | None,
        topics: Iterable[str] | None,
        framing: str | None,
        policy_name: str | None = None,
    ) -> Link:
        fanout = self._fanout
        if fanout.closed:
            raise HubClosedError("subscribe() on a closed hub")
        if framing is None:
            framing = "v1" if websocket.subprotocol == SUBPROTOCOL else "raw"
        elif framing not in FRAMINGS:
            raise invalid(
                "framing", framing, f"is not a framing (expected one of {FRAMINGS})", ConfigError
            )
        if is_gated(websocket):
            raise ConfigError(
                f"websocket {websocket.id} is already subscribed (to this hub or another): "
                "a connection has one subscription, or each message would reach it twice",
                name="websocket",
                value=websocket,
            )
        chosen = self.policy if policy is None else as_policy(policy)
        if policy_name is None:
            name = self.policy_name if policy is None else "custom"
        else:
            name = check_policy_name(policy_name)
        link = Link(
            fanout,
            websocket,
            chosen,
            check_topics(topics),
            self.close_timeout,
            framing,
            policy_name=name,
            notsent_lowat=self.notsent_lowat,
        )
        link.attached = False  # until _start: resuming comes first
        self._live.add(link)
        gate_reading(websocket)
        websocket.connection_lost_waiter.add_done_callback(link.connection_lost)
        if websocket.protocol.state is not OPEN:
            link.connection_lost()
        return link

    async def _start(self, link: Link, since: Iterable[Position | str] | None) -> None:
        """Send what the subscriber missed (if it resumes), then let live messages in."""
        link.ask_acks()  # before anything else: the window counts every frame after it
        if since is None:
            try:
                positions = _requested(link.websocket)
            except ConfigError as exc:
                link.refuse(str(exc))
                return
        else:
            positions = _positions(since)
        if positions and link.outbox.closing is None:
            await self._resume(link, positions)
        if link.outbox.closing is None and not self._fanout.closed:
            link.attached = True
            link.joined_seq = self._fanout.next_seq()
            self._fanout.attach(link)
            if link.v1 and self.heartbeat is not None and self._beats is None:
                self._beats = asyncio.get_running_loop().create_task(
                    self._heartbeats(self.heartbeat), name="wsfanout-heartbeats"
                )

    # -- resuming -------------------------------------------------------------------

    async def _resume(self, link: Link, positions: list[Position]) -> None:
        resumed = wanted(positions, link.topics)
        fetched: dict[str, Recovered | None] = {}
        remote = [p for p in resumed if self._backplane is not None and not self._window_holds(p)]
        if remote:
            found = await asyncio.gather(*(self._fetch(p) for p in remote))
            fetched = {p.topic: recovered for p, recovered in zip(remote, found, strict=True)}
            if link.outbox.closing is None and None in found:
                # Told nothing rather than told that what the history holds is lost: it
                # comes back with backoff and resumes from where it was.
                link.close(Close(1013, "history unavailable", cause="reading history failed"))
        if link.outbox.closing is not None:
            return
        # From here until the link joins the fan-out nothing awaits, so the replay ends
        # exactly where the live messages it will be offered begin.
        plans = [self._plan(p, link, fetched.get(p.topic)) for p in resumed]
        self._resumed += 1
        for plan in plans:
            if plan is None:
                continue
            if link.v1:
                link.send_control(plan.frame)
                if plan.notice is not None:
                    link.send_control(plan.notice)
            self._history_missed += sum(last - first + 1 for first, last in plan.missing)
            self._replayed += len(plan.messages)
            now = self._fanout.now()
            for message in plan.replay(now):
                link.offer(message, now)

    async def _fetch(self, position: Position) -> Recovered | None:
        """What the backplane's history holds after ``position``; None if it failed."""
        assert self._backplane is not None
        try:
            return await self._backplane.read(
                position.stream_topic, position.epoch, position.offset
            )
        except Exception:
            logger.warning("reading history for %s failed", position, exc_info=True)
            return None

    def _plan(
        self, position: Position, link: Link, recovered: Recovered | None
    ) -> ResumePlan | None:
        """What to send for ``position``: from the backplane's history (``recovered``),
        then this hub's window of what came after; from the window alone when it holds
        everything (``recovered`` is None: not read)."""
        if recovered is None:
            return self._local_plan(position, link)
        if not recovered.epoch:
            return None  # no hub has ever published on this topic
        fanout = self._fanout
        topic = position.stream_topic
        stream = fanout.streams.get(topic)
        if stream is not None and stream.epoch != recovered.epoch:
            return self._local_plan(position, link)  # the stream moved on meanwhile
        messages = recovered.messages
        last = recovered.last
        window = fanout.history
        if stream is not None and stream.last > last:
            if window is not None:
                messages += window.read(topic, last, stream.last, fanout.now()).messages
            last = stream.last
        after = resume_after(position, recovered.epoch, last)
        messages = tuple(m for m in messages if m.offset > after)
        held = Held(messages, missing_ranges(after, last, (m.offset for m in messages)))
        return plan_resume(position, recovered.epoch, last, held)

    def _local_plan(self, position: Position, link: Link) -> ResumePlan | None:
        """From this hub's own streams and history, read once per starting point."""
        fanout = self._fanout
        return self._plans.plan(
            fanout.streams,
            fanout.history,
            position,
            every_topic=link.topics is None,
            now=fanout.now(),
        )

    def _window_holds(self, position: Position) -> bool:
        """This hub's own window holds everything after ``position``, of its epoch."""
        fanout = self._fanout
        stream = fanout.streams.get(position.stream_topic)
        if stream is None or stream.epoch != position.epoch or position.offset > stream.last:
            return False
        if position.offset == stream.last:
            return True
        window = fanout.history
        if window is None:
            return False
        first = window.first(position.stream_topic, fanout.now())
        return first is not None and first <= position.offset + 1

    # -- heartbeats -----------------------------------------------------------------

    async def _heartbeats(self, interval: float) -> None:
        """Every quarter interval, beat for each v1 subscriber idle for ``interval``."""
        fanout = self._fanout
        while True:
            await asyncio.sleep(interval / 4)  # the pace of checking, not a synchronisation
            now = fanout.now()
            for link in list(self._live):
                try:
                    if link.v1 and link.attached and link.idle_since() <= now - interval:
                        self._beat(link, now)
                except Exception:
                    link.fail("heartbeat to %s failed; aborting its connection")

    def _beat(self, link: Link, now: float) -> None:
        outbox = link.outbox
        if outbox.closing is not None or outbox.queue or outbox.control:
            return  # it has frames coming: they say more than a heartbeat would
        streams = self._fanout.streams
        offsets: dict[str, tuple[str, int]] = {}
        if link.topics is None:
            for name, stream in streams.items():
                if stream.seq >= link.joined_seq:
                    offsets[name] = (stream.epoch, stream.last)
        else:
            for name in (*link.topics, ""):
                found = streams.get(name)
                if found is not None and found.last:
                    offsets[name] = (found.epoch, found.last)
        link.beat_at = now
        link.send_control(heartbeat_frame(offsets))

    async def _release(self, link: Link) -> None:
        self._fanout.detach(link)
        relay = link.relay
        if relay is not None:
            if link.outbox.closing is not None:
                # The relay is closing the connection: bounded by close_timeout, let it end.
                await asyncio.shield(relay)
            else:
                relay.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay
        self._fanout.timers.discard(link)
        link.outbox.discard()
        ungate_reading(link.websocket)
        if link in self._live:
            self._live.discard(link)
            self._ledger.retire(link, self._fanout.now())

    # -- changing policies ----------------------------------------------------------

    def set_policy(
        self,
        policy: Policy | Callable[[Snapshot], Decision],
        *,
        current: Policy | None = None,
        topic: str | None = None,
        where: Callable[[Subscriber], bool] | None = None,
    ) -> int:
        """Give ``policy`` to the subscribers that match, while they run; return how many.

        A subscriber matches when every condition given holds: its policy equals
        ``current``, it receives ``topic`` (it subscribed to it, or to all topics), and
        ``where(subscriber)`` is true. With no condition every subscriber matches. Each
        one's queue is reshaped at once, as assigning :attr:`Subscriber.policy` does.
        The hub's default for new subscribers (``Hub.policy``) is not changed.
        """
        chosen = as_policy(policy)
        if current is not None and not isinstance(current, Policy):
            raise TypeError(f"current={current!r} must be a Policy or None")
        if topic is not None and not isinstance(topic, str):
            raise TypeError(f"topic={topic!r} must be a str or None")
        if where is not None and not callable(where):
            raise TypeError(f"where={where!r} must be a callable or None")
        changed = 0
        for link in list(self._fanout.index.members):
            if current is not None and link.outbox.policy != current:
                continue
            if topic is not None and link.topics is not None and topic not in link.topics:
                continue
            if where is not None and not where(link.subscriber):
                continue
            if link.outbox.closing is None:
                link.set_policy(chosen)
                changed += 1
        return changed

    # -- lifecycle and statistics ---------------------------------------------------

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        """Subscribers currently receiving messages."""
        return tuple(link.subscriber for link in self._fanout.index.members)

    @property
    def monitor(self) -> HubMonitor:
        """What the hub has seen, per policy name: for metrics and status pages."""
        return self._monitor

    def __len__(self) -> int:
        return len(self._fanout.index.members)

    def stats(self) -> HubStats:
        """Counters summed over every subscriber, present and past."""
        total = self._ledger.retired_total()
        max_lag = 0.0
        closed_by_policy = sum(self._ledger.closed_by_policy.values())
        now = self._fanout.now()
        for link in self._live:
            stats = link.outbox.stats(now)
            add_stats(total, stats)
            max_lag = max(max_lag, stats.lag)
            closed_by_policy += link.outbox.closed_by_policy
        return HubStats(
            subscribers=len(self),
            closed_by_policy=closed_by_policy,
            max_lag=max_lag,
            resumed=self._resumed,
            replayed=self._replayed,
            history_missed=self._history_missed,
            history_reads=self._plans.reads,
            notsent_lowat=self.notsent_lowat if NOTSENT_LOWAT is not None else None,
            notsent_lowat_supported=NOTSENT_LOWAT is not None,
            **{name: int(value) for name, value in total.items()},
        )

    async def drain(self, timeout: float | None = None) -> bool:
        """Wait until no subscriber has anything queued, or ``timeout`` seconds pass.

        Returns True if every queue emptied. Publishing meanwhile may keep a queue
        busy; a graceful shutdown drains after its last publish, then calls
        :meth:`aclose`.
        """
        if timeout is not None:
            timeout = positive_seconds("timeout", timeout)
        # A link with something queued has a relay task (awaiting a drain or a close)
        # or waits on the hub's timers (timers.py); look again whenever either moves.
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        timers = self._fanout.timers
        while True:
            relays: set[asyncio.Future[None]] = {
                link.relay for link in self._live if link.relay is not None
            }
            if not relays and not timers:
                return True
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                return False
            changed = timers.changed()
            try:
                await asyncio.wait(
                    {*relays, changed}, timeout=left, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                changed.cancel()

    async def aclose(
        self, code: int = 1001, reason: str = "", timeout: float | None = None
    ) -> None:
        """Close every subscriber with ``code`` and stop accepting new ones.

        Each connection gets a close frame and at most ``timeout`` seconds (default:
        ``close_timeout``) to finish the closing handshake; then its transport is
        aborted, so a stalled client cannot hold this up. Messages still queued are
        counted as ``disconnected``. A backplane is closed first, so nothing more arrives.
        """
        check_close(code, reason, ConfigError)
        deadline = self.close_timeout if timeout is None else positive_seconds("timeout", timeout)
        self._fanout.closed = True
        beats, self._beats = self._beats, None
        if beats is not None:
            beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beats
        if self._backplane is not None:
            await self._backplane.aclose()
        links = list(self._live)
        for link in links:
            link.close_timeout = deadline
            link.close(Close(code, reason, cause="hub closed"))
        relays = [link.relay for link in links if link.relay is not None]
        if relays:
            _, pending = await asyncio.wait(relays, timeout=deadline + 1.0)
            for task in pending:  # pragma: no cover - close_connection is itself bounded
                task.cancel()


def _requested(websocket: Connection) -> list[Position]:
    """The positions in the request's ``since`` query parameters."""
    request = websocket.request
    if request is None:
        return []
    query = urlsplit(request.path).query
    if "since" not in query:
        return []
    return _positions(value for name, value in parse_qsl(query) if name == "since")


def _positions(since: Iterable[Position | str]) -> list[Position]:
    if isinstance(since, (str, Position)):
        raise invalid("since", since, "must be a collection of positions", ConfigError)
    positions: dict[str, Position] = {}
    for item in since:
        position = item if isinstance(item, Position) else parse_since(item)
        if position.topic in positions:
            raise invalid("since", str(position), "names its topic twice", ConfigError)
        positions[position.topic] = position
        if len(positions) > MAX_POSITIONS:
            raise invalid(
                "since", str(position), f"is one position past {MAX_POSITIONS}", ConfigError
            )
    return list(positions.values())
