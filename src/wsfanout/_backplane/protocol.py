"""The seam between one process and many: what a hub and a backplane give each other.

A hub gives its backplane an :class:`Inbound`, the hub's side of the seam, and calls
the backplane's :meth:`~Backplane.forward` with every message it publishes. Neither
sees the other's internals: a backplane never reaches into a hub, and a hub knows
nothing of Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .._core.message import Message

__all__ = ["Backplane", "Inbound"]


class Inbound(Protocol):
    """The hub's side of the seam: how a backplane hands it messages of other hubs."""

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
        lossless: bool = False,
    ) -> int:
        """Offer a message of another hub to this hub's subscribers of ``topic``
        (``None``: all of them), as a Text (``opcode`` 1) or Binary (2) frame; ``key``
        is its conflation key, ``lossless`` what ``publish`` was given. Returns how many
        subscribers it was offered to."""
        ...


class Backplane(Protocol):
    """Carries a hub's publishes to other hubs and theirs back to it.

    The hub calls :meth:`bind` once, when it is created with ``backplane=``, with its
    :class:`Inbound`; then :meth:`forward` with every message it publishes (the hub
    delivers it to its own subscribers itself). ``forward`` must not block, nor raise
    for a backplane failure. Messages from other hubs go to ``inbound.receive()``.
    ``hub.aclose()`` calls :meth:`aclose`, which must be idempotent.
    """

    def bind(self, inbound: Inbound) -> None: ...

    def forward(self, message: Message) -> None: ...

    async def aclose(self) -> None: ...
