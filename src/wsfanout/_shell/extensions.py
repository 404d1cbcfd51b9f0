"""Which connections can share compressed frames: websockets' extensions, read once.

A connection whose only extension is websockets' own permessage-deflate, negotiated
with ``server_no_context_takeover``, compresses every message from an empty state, so
one compressed frame (:class:`DeflateParams`) serves all such connections alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import PerMessageDeflate

from .._core.deflate import DeflateParams

__all__ = ["shared_deflate"]


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
