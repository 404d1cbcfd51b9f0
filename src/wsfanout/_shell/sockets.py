"""Socket options the shell sets itself: what asyncio and websockets leave to the kernel.

Resetting instead of closing
----------------------------
``transport.abort()`` closes the socket. With unsent data in its send buffer the kernel
keeps the connection as an *orphan* until that data leaves, and a peer that holds its
socket open at a zero window never takes it: each cut stalled client then pins up to
its whole send buffer (megabytes with autotuning) of machine-wide TCP memory, until
``tcp_mem`` is reached and the kernel throttles every socket. With ``SO_LINGER`` on and
a linger time of 0, ``close()`` sends a reset and frees the buffer at once. A reset is
what a cut client is owed anyway: its data is being thrown away.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct

__all__ = ["abort_with_reset"]

_LINGER_RESET = struct.pack("ii", 1, 0)
"""``struct linger`` with ``l_onoff`` 1 and ``l_linger`` 0: close() resets the connection."""


def abort_with_reset(transport: asyncio.WriteTransport) -> None:
    """Abort ``transport``, resetting its TCP connection so the kernel frees its buffers.

    Not a TCP socket (a Unix socket, a test double), or one already closed: a plain abort.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()
