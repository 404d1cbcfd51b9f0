"""permessage-deflate frames compressed once per message and shared by connections.

With context takeover (websockets' default), a connection's compressor remembers the
messages it compressed before, so each connection compresses every message itself.
When the server negotiated ``server_no_context_takeover``, every message starts from
an empty compressor: the compressed bytes depend only on the message and on the
compression parameters, so one frame serves every connection that negotiated the same
parameters. This module names those parameters and produces the frame that
websockets' ``PerMessageDeflate.encode`` would produce for them, byte for byte.
Which connections qualify is the shell's question (``_shell/extensions.py``).
"""

from __future__ import annotations

import zlib
from typing import Any

import attrs

from .frames import encode_frame

__all__ = ["DeflateParams"]


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
