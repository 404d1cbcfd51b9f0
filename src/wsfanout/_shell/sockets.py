"""What the shell does to sockets itself, where asyncio and websockets leave them to
the kernel: what the kernel holds for a subscriber's TCP connection, how a cut one is
reset, and writing straight to asyncio's socket.

Bounding what the kernel holds
------------------------------
Below asyncio's write buffer, which an outbox sees, the kernel keeps a send buffer of
its own: on Linux up to ``tcp_wmem``'s maximum (4 MiB by default) per socket, all of it
accepted before asyncio's buffer grows at all, and none of it visible to a policy. For
a client that stopped reading, that is megabytes "sent" that it will read, stale, if it
ever resumes.

``TCP_NOTSENT_LOWAT`` (Linux, macOS) bounds only the part the kernel has not sent yet:
past the mark the socket stops accepting data, so what a stalled client cannot take
stays in asyncio's buffer, where the outbox sees it and the policy acts. Bytes in
flight are not limited, so a long fat link keeps its throughput (a small ``SO_SNDBUF``
would cap it). The kernel still fills the segment it is building before it refuses
more, so it may hold up to about one segment past the mark (about 50 KiB measured on
Linux loopback, where segments are large).

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

The kernel probes take a socket (or asyncio's ``TransportSocket``), stand alone, and
answer ``None`` or ``False`` where the platform or the socket cannot tell: a Unix
socket, a closed one, a system without the option.
"""

from __future__ import annotations

import asyncio
import asyncio.selector_events
import contextlib
import socket
import struct
import sys
from os import write
from typing import Any

import attrs

from .._core.drain import KernelView

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "NOTSENT_LOWAT",
    "TcpInfo",
    "abort_with_reset",
    "direct_fd",
    "is_tcp",
    "kernel_unsent",
    "kernel_view",
    "send_now",
    "send_queue",
    "set_notsent_lowat",
    "tcp_info",
]

NOTSENT_LOWAT: int | None = getattr(
    socket, "TCP_NOTSENT_LOWAT", 0x201 if sys.platform == "darwin" else None
)
"""The ``TCP_NOTSENT_LOWAT`` option number on this platform, or None where it has none."""

_SOCKET_TRANSPORT: type | None = getattr(asyncio.selector_events, "_SelectorSocketTransport", None)
"""asyncio's own socket transport class, the one written to directly (None: no such class)."""

_LINUX = sys.platform.startswith("linux")
# ioctl requests of <linux/sockios.h>: bytes in the send queue (sent but unacknowledged,
# and unsent), and the unsent bytes alone.
_SIOCOUTQ = 0x5411
_SIOCOUTQNSD = 0x894B
# struct tcp_info of <linux/tcp.h>: byte offsets of the fields read here.
_APP_LIMITED = 7  # the byte holding tcpi_delivery_rate_app_limited, its lowest bit
_RTT = 68  # __u32 tcpi_rtt, microseconds
_BYTES_ACKED = 120  # __u64 tcpi_bytes_acked (Linux 4.1)
_NOTSENT = 144  # __u32 tcpi_notsent_bytes (Linux 4.6)
_DELIVERY_RATE = 160  # __u64 tcpi_delivery_rate, bytes per second (Linux 4.9)
_SND_WND = 228  # __u32 tcpi_snd_wnd, the peer's receive window in bytes (Linux 5.4)
_TCP_INFO_SIZE = 232


def is_tcp(sock: Any) -> bool:
    """Whether ``sock`` is a TCP socket (IPv4 or IPv6); False for Unix sockets and the rest."""
    try:
        return sock.type == socket.SOCK_STREAM and sock.family in (
            socket.AF_INET,
            socket.AF_INET6,
        )
    except (AttributeError, OSError):
        return False


def set_notsent_lowat(sock: Any, nbytes: int) -> bool:
    """Set ``TCP_NOTSENT_LOWAT`` to ``nbytes`` on a TCP socket; True if it took effect.

    False, and the socket untouched, where the platform has no such option, for a
    socket that is not TCP, or when the kernel refuses it.
    """
    if NOTSENT_LOWAT is None or not is_tcp(sock):
        return False
    try:
        sock.setsockopt(socket.IPPROTO_TCP, NOTSENT_LOWAT, nbytes)
    except OSError:
        return False
    return True


@attrs.frozen
class TcpInfo:
    """What Linux's ``TCP_INFO`` says about a connection's sending side."""

    notsent_bytes: int
    """Bytes the kernel holds that it has not sent yet (``tcpi_notsent_bytes``)."""
    delivery_rate: int | None
    """Bytes per second the peer acknowledged in the latest sample of the sending rate
    (``tcpi_delivery_rate``); None on kernels older than 4.9."""
    delivery_rate_app_limited: bool
    """The sample was limited by the sender having nothing to send, not by the path or
    the peer: a low ``delivery_rate`` then says nothing about how fast the peer reads."""
    rtt: float
    """The smoothed round-trip time, in seconds (``tcpi_rtt``)."""
    bytes_acked: int
    """Bytes the peer acknowledged since the connection began (``tcpi_bytes_acked``)."""
    snd_wnd: int | None
    """The receive window the peer last advertised, in bytes (``tcpi_snd_wnd``); None on
    kernels older than 5.4."""


def _tcp_info_bytes(sock: Any) -> bytes | None:
    """``TCP_INFO`` as the kernel returns it (Linux), or None where it cannot tell."""
    if not _LINUX or not is_tcp(sock):
        return None
    try:
        raw: bytes = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
    except OSError:
        return None
    return raw


def tcp_info(sock: Any) -> TcpInfo | None:
    """The kernel's view of a TCP connection (Linux), or None where it cannot tell."""
    raw = _tcp_info_bytes(sock)
    if raw is None or len(raw) < _NOTSENT + 4:
        return None
    (notsent,) = struct.unpack_from("I", raw, _NOTSENT)
    (rtt,) = struct.unpack_from("I", raw, _RTT)
    (acked,) = struct.unpack_from("Q", raw, _BYTES_ACKED)
    rate: int | None = None
    if len(raw) >= _DELIVERY_RATE + 8:
        (rate,) = struct.unpack_from("Q", raw, _DELIVERY_RATE)
    window: int | None = None
    if len(raw) >= _SND_WND + 4:
        (window,) = struct.unpack_from("I", raw, _SND_WND)
    return TcpInfo(
        notsent_bytes=notsent,
        delivery_rate=rate,
        delivery_rate_app_limited=bool(raw[_APP_LIMITED] & 1),
        rtt=rtt / 1e6,
        bytes_acked=acked,
        snd_wnd=window,
    )


def kernel_view(sock: Any) -> KernelView | None:
    """What the kernel says of ``sock`` for the outbox, from one ``TCP_INFO`` read (Linux):
    its unsent bytes, delivery rate and bytes acknowledged; None where it cannot tell.
    About 3 µs, read off the fast path at most once a relay turn (``SIOCOUTQNSD`` alone:
    about 2 µs), so not rate-limited."""
    raw = _tcp_info_bytes(sock)
    if raw is None:
        return None
    if len(raw) < _DELIVERY_RATE + 8:
        return None if len(raw) < _NOTSENT + 4 else KernelView(unsent=_U32(raw, _NOTSENT)[0])
    return KernelView(
        unsent=_U32(raw, _NOTSENT)[0],
        delivery_rate=float(_U64(raw, _DELIVERY_RATE)[0]),
        app_limited=bool(raw[_APP_LIMITED] & 1),
        acked=_U64(raw, _BYTES_ACKED)[0],
    )


# Precompiled: tcp_info's format-string unpacking costs as much as the system call.
_U32 = struct.Struct("I").unpack_from
_U64 = struct.Struct("Q").unpack_from


def _ioctl_int(sock: Any, request: int) -> int | None:
    if not _LINUX or fcntl is None:
        return None
    buffer = bytearray(4)
    with contextlib.suppress(OSError, ValueError):
        fcntl.ioctl(sock.fileno(), request, buffer)
        value: int = struct.unpack("i", buffer)[0]
        return value
    return None


def kernel_unsent(sock: Any) -> int | None:
    """Bytes the kernel holds for ``sock`` that it has not sent yet (Linux's
    ``SIOCOUTQNSD``), or None where it cannot tell. One system call."""
    return _ioctl_int(sock, _SIOCOUTQNSD) if is_tcp(sock) else None


def send_queue(sock: Any) -> int | None:
    """Every byte the kernel holds in ``sock``'s send queue, sent but unacknowledged or
    not sent yet (Linux's ``SIOCOUTQ``), or None where it cannot tell."""
    return _ioctl_int(sock, _SIOCOUTQ) if is_tcp(sock) else None


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
