"""The backplane's subscribed connection to Redis, read raw.

Theory of operation
-------------------
redis-py's ``PubSub.get_message()`` costs about 15 µs a message (its parser, a dict
per message, a timeout per call): too slow for 50,000 messages/s, and a reader that
falls behind is cut by Redis at its pub/sub output limit. So the connection that
subscribes is ours: an asyncio :class:`asyncio.BufferedProtocol` receives into the
:class:`~wsfanout._backplane.resp.PushReader`'s buffer and, in the same callback,
hands every message of the chunk to ``on_message(channel, buffer, view, start,
end)`` (data in place; the callback copies what it keeps). Other frames (confirmations,
pongs) queue for :meth:`Subscription.reply`, which the receiving task awaits. After a
reply whose kind is in ``hold``, the protocol stops handing over messages and stops
reading until :meth:`Subscription.release`: the backplane compares its streams with
Redis' between the confirmation and the messages after it.

The connection speaks RESP2 (it never sends ``HELLO``). Commands and history reads
stay on redis-py, on other connections.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Callable
from typing import Any

from .resp import PushReader, Reply, RespError, command

__all__ = ["OnMessage", "Subscription"]

OnMessage = Callable[[bytes, bytearray, memoryview, int, int], None]
"""``on_message(channel, buffer, view, start, end)``: a message's data is
``buffer[start:end]``, valid during the call."""

_CERT_REQS = {
    "none": ssl.CERT_NONE,
    "optional": ssl.CERT_OPTIONAL,
    "required": ssl.CERT_REQUIRED,
}


def _tls(params: dict[str, Any]) -> ssl.SSLContext:
    """A TLS context from the ``ssl_*`` options of a ``rediss://`` URL, as redis-py reads them."""
    context = ssl.create_default_context(cafile=params.get("ssl_ca_certs"))
    certfile = params.get("ssl_certfile")
    if certfile:
        context.load_cert_chain(certfile, params.get("ssl_keyfile"))
    reqs = params.get("ssl_cert_reqs", "required")
    mode = _CERT_REQS.get(str(reqs).lower(), ssl.CERT_REQUIRED) if isinstance(reqs, str) else reqs
    if mode == ssl.CERT_NONE:
        context.check_hostname = False
    context.verify_mode = mode
    return context


class _Protocol(asyncio.BufferedProtocol):
    def __init__(self, reader: PushReader, on_message: OnMessage, hold: frozenset[str]) -> None:
        self.reader = reader
        self.on_message = on_message
        self.hold = hold
        self.transport: asyncio.Transport | None = None
        self.replies: collections.deque[Reply] = collections.deque()
        self.failure: BaseException | None = None
        self.held = False
        self.received = 0
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.reader.get_buffer()

    def buffer_updated(self, nbytes: int) -> None:
        self.reader.received(nbytes)
        self.received += nbytes
        self.drain()

    def drain(self) -> None:
        """Hand over every complete message, queue every reply, until held."""
        reader = self.reader
        on_message = self.on_message
        try:
            while not self.held:
                frame = reader.next()
                if frame is None:
                    return
                if type(frame) is tuple:
                    on_message(frame[0], reader.buffer, reader.view, frame[1], frame[2])
                    continue
                assert isinstance(frame, Reply)
                self.replies.append(frame)
                if frame.kind in self.hold:
                    self.held = True
                    if self.transport is not None:
                        self.transport.pause_reading()
                self.wake()
        except RespError as exc:
            self.fail(exc)

    def fail(self, exc: BaseException) -> None:
        if self.failure is None:
            self.failure = exc
        if self.transport is not None:
            self.transport.abort()
        self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.failure is None:
            self.failure = ConnectionError(
                f"Redis closed the subscribed connection ({exc or 'end of stream'})"
            )
        self.wake()

    def eof_received(self) -> bool | None:
        return None  # close the transport: connection_lost follows


class Subscription:
    """One raw, subscribed connection to Redis; made by :meth:`open`."""

    def __init__(self, protocol: _Protocol) -> None:
        self._protocol = protocol

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        client_name: str,
        patterns: tuple[bytes, ...],
        channels: tuple[bytes, ...],
        on_message: OnMessage,
        hold: frozenset[str] = frozenset(),
        timeout: float,
    ) -> Subscription:
        """Connect to ``url`` (as redis-py reads it), authenticate, name the connection,
        and subscribe; returns once Redis accepted the handshake, before the
        subscriptions are confirmed (see :meth:`reply`)."""
        from redis.asyncio.connection import parse_url  # the extra, imported when used

        params: dict[str, Any] = dict(parse_url(url))
        reader = PushReader(patterns[0] if len(patterns) == 1 else b"")
        protocol = _Protocol(reader, on_message, hold)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            if "path" in params:
                await loop.create_unix_connection(lambda: protocol, params["path"])
            else:
                tls = _tls(params) if url.startswith("rediss://") else None
                host, port = params.get("host", "localhost"), params.get("port", 6379)
                await loop.create_connection(lambda: protocol, host, port, ssl=tls)
            subscription = cls(protocol)
            try:
                asked: list[str] = []
                out = []
                password = params.get("password")
                if password is not None:
                    username = params.get("username")
                    auth = (username, password) if username else (password,)
                    out.append(command("AUTH", *auth))
                    asked.append("AUTH")
                out.append(command("CLIENT", "SETNAME", client_name))
                asked.append("CLIENT SETNAME")
                for pattern in patterns:
                    out.append(command("PSUBSCRIBE", pattern))
                for channel in channels:
                    out.append(command("SUBSCRIBE", channel))
                assert protocol.transport is not None
                protocol.transport.write(b"".join(out))
                for name in asked:
                    reply = await subscription.reply(None, errors=False)
                    assert reply is not None
                    if reply.kind == "error":
                        text = reply.name.decode(errors="replace")
                        raise ConnectionError(f"Redis refused {name}: {text}")
                    if reply.kind != "ok":
                        raise ConnectionError(f"Redis answered {name} with {reply!r}")
            except BaseException:
                subscription.close()
                raise
        return subscription

    @property
    def pending(self) -> int:
        """Bytes received that no frame has taken yet (held, or a frame in part)."""
        return self._protocol.reader.pending

    @property
    def received(self) -> int:
        """Bytes received on the connection so far: it is alive while this moves."""
        return self._protocol.received

    async def reply(self, timeout: float | None, *, errors: bool = True) -> Reply | None:
        """The next reply that is not a message, or None after ``timeout`` seconds
        without one; raises when the connection failed (a :class:`RespError` names
        bytes that were not RESP) or, if ``errors``, when Redis sent an error reply."""
        reply = await self._take(timeout)
        if errors and reply is not None and reply.kind == "error":
            raise ConnectionError(f"Redis sent an error: {reply.name.decode(errors='replace')}")
        return reply

    async def _take(self, timeout: float | None) -> Reply | None:
        protocol = self._protocol
        loop = asyncio.get_running_loop()
        while not protocol.replies:
            if protocol.failure is not None:
                raise protocol.failure
            waiter = protocol.waiter = loop.create_future()
            try:
                if timeout is None:
                    await waiter
                else:
                    done, _ = await asyncio.wait([waiter], timeout=timeout)
                    if not done:
                        return None
            finally:
                protocol.waiter = None
        return protocol.replies.popleft()

    def ping(self) -> None:
        """Send a PING: its ``"pong"`` reply comes after everything Redis sent before."""
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            transport.write(b"*1\r\n$4\r\nPING\r\n")

    def release(self) -> None:
        """Hand over the messages after a held reply, and read on."""
        protocol = self._protocol
        if not protocol.held:
            return
        protocol.held = False
        protocol.drain()
        if not protocol.held and protocol.transport is not None and protocol.failure is None:
            protocol.transport.resume_reading()

    def close(self) -> None:
        """Drop the connection at once (nothing is left to say to Redis)."""
        transport = self._protocol.transport
        if transport is not None:
            transport.abort()
