"""A hub's engine: its links by topic, its clock and sequence, and the fan-out loop.

Theory of operation
-------------------
``Hub.publish`` encodes a message once and hands it to :meth:`Fanout.deliver`, which
offers it to every link whose topics match (``topics.py``). For a link that keeps up,
the outbox answers ``WRITE`` and the frame goes straight to its transport in the same
call, as websockets' ``broadcast()`` does, with no task woken. Everything else
(queueing, eviction, throttling, closing) is the outbox's decision, carried out by
``Link.pump`` on a timer the links due at the same time share (``timers.py``), or by
that link's relay task while it must await a drain or a close.

Subscribers whose offers of a batch's first message took the same shared first turn,
on the same topics, form a cohort (``cohort.py``): the batch's later messages are
queued once, by its leader, and the others skip them until something reads their
outbox (``Link.outbox`` brings a member up to date first).

The same object is the hub's side of the backplane seam
(:class:`~wsfanout.backplane.Inbound`): with a backplane, every message (the hub's own
included) comes in through :meth:`Fanout.receive` with the offset and epoch the
backplane gave it, and :meth:`Fanout.lost` reports offsets that no hub can deliver.
With a history, every message of a stream is recorded (:meth:`Fanout.record`) as it is
delivered, for clients that resume.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections.abc import Callable
from os import write
from typing import TYPE_CHECKING

from websockets.protocol import State

from .._core.contract import BLOCKED
from .._core.control import gap_notice
from .._core.decision import LevelStep
from .._core.history import MemoryHistory, Range
from .._core.message import Message
from .._core.outbox import Offer
from .._core.streams import NO_TOPIC, Streams
from .cohort import Cohort
from .cork import Corker
from .link import Link
from .monitor import Timing
from .sockets import send_now
from .timers import Timers
from .topics import TopicIndex

__all__ = ["Fanout", "OnStep"]

if TYPE_CHECKING:
    from .subscriber import Subscriber

OnStep = Callable[["Subscriber", LevelStep], object]
"""``Hub(on_step=...)``: called with a subscriber and each step its ladder policy takes."""

OPEN = State.OPEN
WRITE = Offer.WRITE
KICK = Offer.KICK
CLOSE = Offer.CLOSE
WAIT = Offer.WAIT


def new_epoch() -> str:
    """A fresh epoch: 8 random letters and digits (a stream's history starts anew)."""
    return secrets.token_hex(4)


class Fanout:
    """Who gets a message, and the fast path that gives it to them."""

    __slots__ = (
        "closed",
        "cohort",
        "corker",
        "history",
        "index",
        "loop",
        "on_step",
        "seq",
        "streams",
        "timers",
        "timing",
    )

    def __init__(
        self,
        *,
        cork: bool,
        history: MemoryHistory | None = None,
        on_step: OnStep | None = None,
    ) -> None:
        self.index: TopicIndex[Link] = TopicIndex()
        self.corker = Corker(enabled=cork)
        self.timing: Timing | None = None
        """The hub's latency histograms, once it records them (``HubMonitor.start_timings``)."""
        self.seq = itertools.count()
        """Local sequence numbers: every message a link is offered has its own."""
        self.streams = Streams(new_epoch)
        """Every topic's epoch and last offset (docs/protocol.md)."""
        self.history = history
        """Each topic's recent messages, for clients that resume (None: none kept)."""
        self.closed = False
        """The hub is closed: it refuses new subscribers and messages from backplanes."""
        self.loop: asyncio.AbstractEventLoop | None = None
        self.on_step = on_step
        """The application's callback for ladder steps (``Hub(on_step=...)``), if any."""
        self.cohort: Cohort | None = None
        """The latest cohort formed (``cohort.py``), which links may still join."""
        self.timers = Timers()
        """Deadlines shared by the links waiting for a time (``timers.py``)."""

    def now(self) -> float:
        """The event loop's clock, which every message's ``time`` and every decision use."""
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
        return loop.time()

    def next_seq(self) -> int:
        return next(self.seq)

    # -- membership -------------------------------------------------------------------

    def attach(self, link: Link) -> None:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        self.index.add(link, link.topics)

    def detach(self, link: Link) -> None:
        """Stop offering messages to ``link``; idempotent."""
        if link.attached:
            link.settle()  # it is offered nothing more: a cohort's later messages neither
            if self.cohort is not None and self.cohort.leader is link:
                self.cohort = None
            link.attached = False
            self.index.discard(link, link.topics)

    def retopic(self, link: Link, topics: frozenset[str] | None) -> None:
        link.settle()  # offered other messages from now on than its cohort's
        if link.attached:
            self.index.move(link, link.topics, topics)
        link.topics = topics

    # -- delivering --------------------------------------------------------------------

    def deliver(self, msg: Message, now: float) -> int:
        """Offer ``msg`` to the links of its topic; return how many it was offered to."""
        timing = self.timing
        start = timing.clock() if timing is not None else 0.0
        topic = msg.topic
        index = self.index
        if topic is None:
            count = self.fan_out(msg, now, index.members)
        else:
            count = self.fan_out(msg, now, index.wildcard)
            listeners = index.by_topic.get(topic)
            if listeners:
                count += self.fan_out(msg, now, listeners)
        if timing is not None:
            timing.published(start, bool(self.corker.held))
        return count

    def record(self, msg: Message, now: float) -> None:
        """``msg`` is the newest of its stream: note it, and keep it if there is a history."""
        stream = self.streams.get(msg.topic)
        if stream is not None:
            stream.seq = msg.seq
        history = self.history
        if history is not None and msg.offset:
            history.append(msg, now)

    def receive(
        self,
        opcode: int,
        payload: bytes,
        topic: str | None,
        key: str | None,
        offset: int,
        epoch: str,
        lossless: bool = False,
    ) -> int:
        """A message from the backplane, numbered there: offer it to local subscribers
        (the Inbound seam). Offset 0 is a message in no stream (from a foreign client)."""
        if offset:
            _, changed = self.streams.place(topic, epoch, offset)
            if changed and self.history is not None:
                self.history.reset(topic)
        message = self.make(opcode, payload, topic, key, offset, epoch, lossless)
        now = message.time
        if offset:
            self.record(message, now)
        return self.deliver(message, now)

    def skip(self, topic: str | None, epoch: str, offset: int) -> bool:
        """If no subscriber here takes ``topic`` and there is no history to keep, note
        the message's place in its stream and return True: the backplane need not
        decode it (the Inbound seam). False: hand it over with :meth:`receive`."""
        if self.history is not None:
            return False
        index = self.index
        if topic is None:
            if index.members:
                return False
        elif index.wildcard or index.by_topic.get(topic):
            return False
        self.streams.place(topic, epoch, offset)
        return True

    def make(
        self,
        opcode: int,
        payload: bytes,
        topic: str | None,
        key: str | None,
        offset: int,
        epoch: str,
        lossless: bool = False,
    ) -> Message:
        """A message numbered by this hub, now (the Inbound seam)."""
        return Message(
            opcode,
            payload,
            seq=self.next_seq(),
            time=self.now(),
            topic=topic,
            key=key,
            droppable=not lossless,
            offset=offset,
            epoch=epoch,
        )

    def lost(self, topic: str | None, epoch: str, ranges: tuple[Range, ...]) -> None:
        """Offsets of ``topic`` that no history holds any more: tell the subscribers of
        the topic that read offsets (``wsfanout.v1``) with a gap notice (the Inbound seam)."""
        count = sum(last - first + 1 for first, last in ranges)
        if not count:
            return
        notice = gap_notice(NO_TOPIC if topic is None else topic, epoch, ranges, {"history": count})
        index = self.index
        if topic is None:
            targets = list(index.members)
        else:
            targets = [*index.wildcard, *index.by_topic.get(topic, ())]
        for link in targets:
            if link.v1:
                link.send_control(notice)

    def join(self, link: Link, lingered: object) -> None:
        """``link``'s offer took the shared first turn ``lingered``: make it a member of
        that turn's cohort, or its leader (``cohort.py``)."""
        cohort = self.cohort
        if cohort is None or cohort.token is not lingered:
            self.cohort = Cohort(lingered, link)
            link.cohort = self.cohort
        elif cohort.open and not cohort.tail and cohort.admits(link):
            # The tail is empty here by construction (a shared first turn is repeated
            # only within its message's fan-out): a member starts in the leader's state.
            link.cohort = cohort

    def fan_out(self, msg: Message, now: float, targets: dict[Link, None]) -> int:
        # The loop body runs once per subscriber per message: Link.offer, emit and
        # encode inlined, with attribute lookups that do not depend on the link hoisted,
        # the frame encoded on first need and nothing allocated per delivery. The
        # connection's state is contract.write_buffer's rule, written out.
        count = len(targets)  # before any of them closes and leaves
        closing: list[Link] | None = None
        # Plain connections written straight to their socket get the shared frame in a
        # second loop: a system call (loopback TCP runs the peer's receive path in it)
        # evicts the caches the next subscriber's bookkeeping needs, so deciding for
        # every subscriber first and then writing costs less than interleaving them.
        direct: list[Link] = []
        frame: bytes | None = None
        corker = self.corker
        if not corker.enabled:
            corker.tick += 1  # every publish its own tick: nothing is ever held back
        tick = corker.tick
        wrote = False
        for link in targets:
            try:
                cohort = link.cohort
                if cohort is not None:  # queued for the whole cohort at once (cohort.py)
                    if cohort.last is msg or cohort.take(msg):
                        continue
                    link.settle()
                transport = link.transport
                protocol = link.protocol
                fd = link.fd
                if protocol._state is not OPEN or protocol.expect_continuation_frame:
                    buffered = BLOCKED
                elif fd is not None:  # asyncio's socket transport: read as its write() does
                    if transport._closing:  # type: ignore[attr-defined]
                        buffered = BLOCKED
                    elif transport._buffer:  # type: ignore[attr-defined]
                        buffered = transport.get_write_buffer_size() + link.held_bytes
                        fd = None  # behind what the transport holds: through write()
                    else:
                        buffered = link.held_bytes
                elif transport.is_closing():
                    buffered = BLOCKED
                else:
                    buffered = transport.get_write_buffer_size() + link.held_bytes
                outbox = link._outbox
                outcome = outbox.offer(msg, now, buffered)
                if outcome is WRITE:
                    if link.plain:
                        if frame is None:
                            frame = msg.frame
                        data = frame
                    else:
                        data = link.encode(msg)
                    if link.tick == tick or link.held:
                        link.cork(data)  # behind a frame written this tick, or held ones
                    else:
                        link.tick = tick
                        wrote = True
                        if fd is None:
                            transport.write(data)
                        elif data is frame:
                            direct.append(link)
                        else:  # encoded for this connection alone (compression)
                            send_now(transport, fd, data)
                elif outcome is WAIT:
                    self.timers.at(link, outbox.until)
                    lingered = outbox.lingered
                    if lingered is not None:
                        self.join(link, lingered)
                elif outcome is KICK:
                    link.queued(buffered, now)
                elif outcome is CLOSE:
                    if closing is None:
                        closing = []
                    closing.append(link)
            except Exception:
                link.fail()
        if direct:
            assert frame is not None
            size = len(frame)
            for link in direct:  # sockets.send_now, inlined
                try:
                    try:
                        sent = write(link.fd, frame)  # type: ignore[arg-type]
                    except OSError:
                        sent = 0
                    if sent != size:
                        link.transport.write(memoryview(frame)[sent:] if sent else frame)
                except Exception:
                    link.fail()
        if wrote:
            corker.wrote()
        if closing is not None:
            for link in closing:
                link.closing()
        return count
