"""The seam between one process and many: what a hub and a backplane give each other.

A hub gives its backplane an :class:`Inbound`, the hub's side of the seam, and calls
the backplane's :meth:`~Backplane.forward` with every message it publishes. The
backplane numbers every message in its topic's stream, the same on every hub, and
hands each one (the publishing hub's own included) to ``inbound.receive()`` with that
offset and epoch: a hub delivers nothing before its backplane has numbered it, so
every hub delivers a topic's messages in one order with one numbering. Neither side
sees the other's internals: a backplane never reaches into a hub, and a hub knows
nothing of Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    from .._core.history import History, Range
    from .._core.message import Message

__all__ = ["Backplane", "Inbound", "Recovered"]


class Inbound(Protocol):
    """The hub's side of the seam: how a backplane hands it messages and losses."""

    @property
    def closed(self) -> bool:
        """True once the hub is closed: deliver nothing more."""
        ...

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
        """Offer a message to this hub's subscribers of ``topic`` (``None``: all of them),
        as a Text (``opcode`` 1) or Binary (2) frame; ``key`` is its conflation key,
        ``offset`` and ``epoch`` its place in the topic's stream (0 and ``""``: in no
        stream), ``lossless`` what ``publish`` was given. Call in offset order per
        topic. Returns how many subscribers it was offered to."""
        ...

    def skip(self, topic: str | None, epoch: str, offset: int) -> bool:
        """A message at ``offset`` of ``epoch``, next in the stream of ``topic``: if this
        hub has nothing to do with it (no subscriber takes the topic, no history), note
        its place and return True, so the backplane need not decode it; False: hand it
        over with :meth:`receive`."""
        ...

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
        """A message of this hub (numbered by its local sequence) for a resuming client:
        what :meth:`Backplane.read` returns is made with this."""
        ...

    def lost(self, topic: str | None, epoch: str, ranges: tuple[Range, ...]) -> None:
        """Offsets of ``topic`` (inclusive ``(first, last)`` ranges) that this hub will
        never deliver: tell its subscribers. Call where they would have been delivered."""
        ...


@attrs.frozen
class Recovered:
    """What a backplane's history holds of one topic after an offset."""

    epoch: str
    """The stream's current epoch; ``""`` when the backplane knows no such stream."""
    last: int
    """The stream's last offset."""
    messages: tuple[Message, ...]
    """The messages held after the offset asked for (from 1, in another epoch), ascending."""


class Backplane(Protocol):
    """Numbers a hub's publishes and carries them to every hub, this one included.

    The hub calls :meth:`bind` once, when it is created with ``backplane=``, with its
    :class:`Inbound`; then :meth:`forward` with every message it publishes (not yet
    numbered: it delivers nothing itself). ``forward`` must not block, nor raise for a
    backplane failure. Every message numbered goes to ``inbound.receive()``.
    :meth:`read` serves clients that resume; :attr:`history` is its bound, which the
    hub's own window of recent messages follows. ``hub.aclose()`` calls :meth:`aclose`,
    which must be idempotent.
    """

    @property
    def history(self) -> History | None:
        """How much of each stream the backplane keeps (None: none)."""
        ...

    def bind(self, inbound: Inbound) -> None: ...

    def forward(self, message: Message) -> None: ...

    async def read(self, topic: str | None, epoch: str, after: int) -> Recovered:
        """What history holds of ``topic`` after offset ``after`` of ``epoch`` (from
        offset 1 if the stream is at another epoch or ``after`` is past its end),
        returned once this hub has been handed every message up to ``last``. Raises
        when it cannot tell (Redis failed, or the hub did not catch up in time): the hub
        then closes the resuming subscriber with 1013, to come back."""
        ...

    async def aclose(self) -> None: ...
