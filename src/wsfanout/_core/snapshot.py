"""What a policy can see: an immutable view of one subscriber at one instant."""

from __future__ import annotations

import attrs

__all__ = ["Snapshot"]


@attrs.frozen(kw_only=True)
class Snapshot:
    """A subscriber's state as its policy sees it; time is data (``now``), never a clock read."""

    now: float
    """The clock, in seconds; monotonic, its origin arbitrary."""

    queued_messages: int = 0
    """Messages waiting in the subscriber's queue."""

    queued_bytes: int = 0
    """Payload bytes the queue references."""

    lag: float = 0.0
    """Seconds the subscriber has been missing messages: the age of the oldest message
    offered since its last write that it has not received, still queued or dropped
    since (with no drops, the age of the oldest queued message); 0.0 when caught up."""

    write_buffer: int = 0
    """Bytes waiting in the transport's write buffer (``transport.get_write_buffer_size()``)."""

    last_send: float | None = None
    """When a frame was last written to this subscriber; None before the first."""

    sent: int = 0
    """Messages written so far."""

    dropped: int = 0
    """Messages lost so far, for any reason (evicted, refused, skipped or conflated)."""

    drain_rate: float | None = None
    """Bytes per second leaving the transport's write buffer, measured on the slow path
    while the buffer held data, so the client (or the network) set the pace; None until
    the subscriber first fell behind. A subscriber that keeps up is never measured: its
    buffer never holds data long enough to tell (see :class:`~wsfanout.lowlevel.DrainMeter`).
    Where the shell reads ``TCP_INFO`` for the policy (Linux, a policy that decides per
    subscriber), it counts the bytes the client acknowledged instead, while the kernel
    held unsent bytes."""

    delivery_rate: float | None = None
    """The kernel's estimate of how fast it delivers this connection's bytes to the peer
    (``TCP_INFO``'s ``tcpi_delivery_rate`` on Linux), in bytes per second: its latest
    sample that the hub's sending did not limit (or a larger one that it did). Read with
    ``kernel_unsent``, in one system call, so only for a subscriber that is behind; None
    until then and where the platform does not report it. It measures the path, not the
    client's application: on a short link it stays of the order of the link however
    slowly the client reads (the client's kernel acknowledges what its application has
    not read), so a slow network shows here and a slow reader in ``drain_rate``."""

    memo: object = None
    """This policy's own state, as its previous :class:`Decision` left it (None at first)."""

    kernel_unsent: int | None = None
    """Bytes the kernel holds for this connection that it has not sent yet, below the
    write buffer (Linux: ``SIOCOUTQNSD``). Read only for a subscriber that is behind
    (something queued, or the write buffer over its low-water mark), never on the fast
    path; None there, and where the platform or the transport does not report it."""

    unacked: int | None = None
    """Payload bytes written that the client's application has not taken yet, from its
    acknowledgements (docs/protocol.md, "Acknowledgements"): beyond the write buffer and
    the kernel, what waits in the client's own buffers. Asked for only by a policy that
    reads it (``reads`` holds ``"unacked"``, as ``Adaptive``'s does), of a ``wsfanout.v1``
    client; None until the client first acknowledges, and for a client that does not."""

    ack_rate: float | None = None
    """Bytes per second the client's application takes, measured between its
    acknowledgements while it had frames waiting to be taken; None until then."""
