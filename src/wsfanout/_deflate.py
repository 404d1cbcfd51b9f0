"""permessage-deflate frames compressed once per message and shared by connections.

With context takeover (websockets' default), a connection's compressor remembers the
messages it compressed before, so each connection compresses every message itself.
When the server negotiated ``server_no_context_takeover``, every message starts from
an empty compressor: the compressed bytes depend only on the message and on the
compression parameters, so one frame serves every connection that negotiated the same
parameters. This module names those parameters and produces the frame that
websockets' ``PerMessageDeflate.encode`` would produce for them, byte for byte.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import attrs
from websockets.extensions.base import Extension
from websockets.extensions.permessage_deflate import PerMessageDeflate

from ._frames import encode_frame

__all__ = ["DeflateParams", "shared_deflate"]


@attrs.frozen
class DeflateParams:
    """What determines a stateless permessage-deflate encoding: the server's window
    size and the other ``zlib.compressobj`` settings. Hashable, so frames can be cached
    per distinct value."""

    window_bits: int
    settings: tuple[tuple[str, Any], ...] = ()

    def frame(self, opcode: int, payload: bytes) -> bytes:
        """The compressed frame for ``payload`` under these parameters."""
        encoder = zlib.compressobj(wbits=-self.window_bits, **dict(self.settings))
        data = encoder.compress(payload) + encoder.flush(zlib.Z_SYNC_FLUSH)
        # A sync flush ends with an empty stored block, which RFC 7692 leaves out.
        return encode_frame(opcode, data[:-4], rsv1=True)


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
