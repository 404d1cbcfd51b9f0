"""What the shell does to sockets itself: what asyncio and websockets leave to the kernel.

Resetting instead of closing
----------------------------
``transport.abort()`` closes the socket. With unsent data in its send buffer the kernel
keeps the connection as an *orphan* until that data leaves, and a peer that holds its
socket open at a zero window never takes it: each cut stalled client then pins up to
its whole send buffer (megabytes with autotuning) of machine-wide TCP memory, until
``tcp_mem`` is reached and the kernel throttles every socket. With ``SO_LINGER`` on and
a linger time of 0, ``close()`` sends a reset and frees the buffer at once. A reset is
what a cut client is owed anyway: its data is being thrown away.

Writing straight to the socket
------------------------------
asyncio's own socket transport (``_SelectorSocketTransport``, the default loop's
transport for TCP and Unix sockets) writes in ``write()`` by sending at once when it
buffers nothing, and buffers only what the kernel did not take. Its Python-level
checks cost as much as the rest of a fast-path delivery, so the shell makes that same
system call itself (:func:`send_now`) while the transport is open and its buffer is
empty, and hands whatever the kernel did not take, and any error, to ``write()``: the
transport then buffers the rest (pausing the protocol over its high-water mark), or
fails the connection, as it would have. Its buffer and ``get_write_buffer_size()``
stay exactly what they would be. Any other transport (uvloop's, TLS, a test double)
is written through ``write()``.

The call is ``os.write()`` on the socket's file descriptor (on a connected socket,
``write(2)`` is ``send(2)`` without flags), at about 60% of ``socket.send()``'s cost.
It is safe while ``is_closing()`` is false, which the caller checks first: asyncio
closes the socket only in a callback scheduled after ``is_closing()`` turns true, so
the descriptor cannot have been closed and reused meanwhile. ``tests/unit/test_asyncio_contract.py``
checks what this relies on in asyncio.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import contextlib
import socket
import struct
from os import write

__all__ = ["abort_with_reset", "direct_fd", "send_now"]

_SOCKET_TRANSPORT: type | None = getattr(asyncio.selector_events, "_SelectorSocketTransport", None)
"""asyncio's own socket transport class, the one written to directly (None: no such class)."""

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


def direct_fd(transport: asyncio.BaseTransport) -> int | None:
    """The file descriptor :func:`send_now` writes to for ``transport``: that of asyncio's
    own socket transport, or None for any other transport (write through it)."""
    if type(transport) is not _SOCKET_TRANSPORT or transport.is_closing():
        return None
    fd: int = transport.get_extra_info("socket").fileno()
    return fd


def send_now(transport: asyncio.WriteTransport, fd: int, data: bytes) -> None:
    """Write ``data`` as ``transport.write()`` would, but with the system call made here:
    ``fd`` from :func:`direct_fd`, the transport open and its buffer empty.

    What the kernel does not take, and any error, go to ``write()``: it sends again
    (nothing was sent) and buffers the rest, or fails the connection with the error
    that send raises (``BrokenPipeError`` where the first raised
    ``ConnectionResetError``). ``Fanout.fan_out`` inlines this.
    """
    try:
        sent = write(fd, data)
    except OSError:
        sent = 0
    if sent != len(data):
        transport.write(memoryview(data)[sent:] if sent else data)
