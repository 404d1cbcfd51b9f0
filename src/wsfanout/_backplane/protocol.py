"""What a hub needs from a backplane: the seam between one process and many."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .._core.message import Message
    from .._shell.hub import Hub

__all__ = ["Backplane"]


class Backplane(Protocol):
    """Carries a hub's publishes to other hubs and theirs back to it.

    The hub calls :meth:`bind` once, when it is created with ``backplane=``, then
    :meth:`forward` with every message it publishes (the hub delivers it to its own
    subscribers itself); ``forward`` must not block, nor raise for a backplane
    failure. Messages from other hubs go to ``Hub._deliver``, which offers them to
    local subscribers only. ``hub.aclose()`` calls :meth:`aclose`, which must be idempotent.
    """

    def bind(self, hub: Hub) -> None: ...

    def forward(self, message: Message) -> None: ...

    async def aclose(self) -> None: ...
