"""What the opening handshake negotiated, as the shell needs it.

A connection whose only extension is websockets' own permessage-deflate, negotiated
with ``server_no_context_takeover``, compresses every message from an empty state, so
one compressed frame (:class:`DeflateParams`) serves all such connections alike. A
connection that negotiated the ``wsfanout.v1`` subprotocol gets that framing.
"""

from __future__ import annotations

from collections.abc import Sequence

from websockets.asyncio.server import ServerConnection
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.typing import Subprotocol

from .._core.deflate import DeflateParams
from .._core.frames import SUBPROTOCOL

__all__ = ["select_subprotocol", "shared_deflate"]


def select_subprotocol(
    connection: ServerConnection, subprotocols: Sequence[Subprotocol]
) -> Subprotocol | None:
    """websockets' ``select_subprotocol`` for a server of raw and ``wsfanout.v1`` clients:
    the ``wsfanout.v1`` framing for a client that offers it, none for one that does not.

    websockets' own choice refuses a client that offers no subprotocol when the server
    lists some; ``serve(handler, ..., select_subprotocol=select_subprotocol)`` admits both.
    """
    return Subprotocol(SUBPROTOCOL) if SUBPROTOCOL in subprotocols else None


def shared_deflate(extensions: Sequence[Extension]) -> DeflateParams | None:
    """The parameters under which a connection's frames can be shared, or ``None`` if
    its encoding is stateful (context takeover) or not permessage-deflate alone."""
    if len(extensions) != 1:
        return None
    extension = extensions[0]
    # Exactly websockets' class: a subclass may encode differently.
    if type(extension) is not PerMessageDeflate or not extension.local_no_context_takeover:
        return None
    params = DeflateParams(
        extension.local_max_window_bits, tuple(sorted(extension.compress_settings.items()))
    )
    # One object per distinct value: subscribers share it, and cache lookups hit by identity.
    return _INTERNED.setdefault(params, params)


_INTERNED: dict[DeflateParams, DeflateParams] = {}
