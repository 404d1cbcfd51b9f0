"""A lean load generator: many WebSocket clients on raw sockets in one epoll loop.

Each client does the opening handshake by hand, then reads frames with the least
parsing that yields what the benchmark needs: records per frame, their sequence
numbers and publish times (for end-to-end latency), and bytes on the wire. A
websockets client costs tens of microseconds per message; this costs a few, so the
generator is not what limits a run (it reports its own CPU to prove it).

Stalled clients set a small receive buffer, finish the handshake and never read again;
with ``--resume-after``, they keep default socket options and start reading that many
seconds after ``go``, counting the stale records they read first (published before
they resumed) until they reach fresh ones. Churning clients (``--churn``) connect, read
for a moment and leave, over and over. Slow clients (``--slow``) keep default socket
options and read at most ``--slow-rate`` bytes per second each, in small reads every
tick: a crowd of readers that are behind, not stalled (phones on a poor network).

Driven by ``benchmarks.run`` over stdin/stdout, one JSON object per line: it prints
``{"event": "connected"}``, waits for ``go``, reads until ``stop``, prints its result.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import resource
import select
import socket
import sys
import time
import zlib
from array import array

from .payload import SEQ, STAMP

_TAIL = b"\x00\x00\xff\xff"
_RECV = 1 << 18
_SLOW_TICK = 0.02
"""Seconds between the slow clients' reads."""


class Client:
    """One connection's parsing state and counters (``sock`` is None in tests)."""

    __slots__ = (
        "buf",
        "closed",
        "frames",
        "inflate",
        "last_seq",
        "nbytes",
        "out_of_order",
        "records",
        "resumed_at",
        "sock",
        "stale",
    )

    def __init__(self, sock: socket.socket | None, leftover: bytes, deflate: bool) -> None:
        self.sock = sock
        self.buf = bytearray(leftover)
        # One inflater per connection decodes both context takeover and not.
        self.inflate = zlib.decompressobj(wbits=-15) if deflate else None
        self.records = 0
        self.frames = 0
        self.nbytes = 0
        self.last_seq = -1
        self.out_of_order = 0
        self.closed = False
        self.resumed_at = 0
        """When a stalled client started reading (monotonic ns); 0 for the others."""
        self.stale = 0
        """Records published before ``resumed_at`` that it read after it."""


def feed(client: Client, data: bytes, now: int, size: int, latencies: array[int] | None) -> None:
    """Parse what arrived on one connection at ``now`` (ns): count frames and records,
    check sequence order, and record each record's latency into ``latencies``."""
    client.nbytes += len(data)
    buf = client.buf
    if buf:
        buf += data
        view: bytes | bytearray = buf
    else:
        view = data
    size1 = size + 1
    n = len(view)
    pos = 0
    while n - pos >= 2:
        first = view[pos]
        length = view[pos + 1] & 0x7F
        start = pos + 2
        if length == 126:
            start = pos + 4
            length = int.from_bytes(view[pos + 2 : start], "big")
        elif length == 127:
            start = pos + 10
            length = int.from_bytes(view[pos + 2 : start], "big")
        end = start + length
        if end > n:
            break
        pos = end
        opcode = first & 0x0F
        if opcode == 0x8:
            client.closed = True
            break
        if opcode not in (0x1, 0x2):
            continue
        payload = view[start:end]
        if first & 0x40:
            if client.inflate is None:
                raise ValueError("compressed frame on a connection without permessage-deflate")
            payload = client.inflate.decompress(payload + _TAIL)
        client.frames += 1
        records = (len(payload) + 1) // size1
        client.records += records
        if latencies is not None:
            for offset in range(0, records * size1, size1):
                seq = int(payload[offset + SEQ.start : offset + SEQ.stop])
                if seq <= client.last_seq:
                    client.out_of_order += 1
                client.last_seq = seq
                stamp = int(payload[offset + STAMP.start : offset + STAMP.stop])
                latencies.append(now - stamp)
                if stamp < client.resumed_at:
                    client.stale += 1
    if pos == n:
        if buf:
            buf.clear()
    elif buf:
        del buf[:pos]
    else:
        client.buf = bytearray(view[pos:])


def handshake(
    port: int, path: str, *, deflate: bool, rcvbuf: int | None, timeout: float = 30.0
) -> tuple[socket.socket, bytes, bool]:
    """Open a connection and upgrade it; return the socket, bytes read past the
    response, and whether permessage-deflate was negotiated."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(timeout)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if deflate:
        lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"handshake on {path}: connection closed: {response!r}")
        response += chunk
    head, _, rest = response.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"handshake on {path} refused: {head[:200]!r}")
    negotiated = b"permessage-deflate" in head.lower()
    sock.setblocking(False)
    return sock, rest, negotiated


def _recv(sock: socket.socket, size: int) -> bytes | None:
    """At most ``size`` bytes from ``sock``; None if none are there yet, b"" once closed."""
    try:
        return sock.recv(size)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return b""


class LoadGen:
    def __init__(self, args: argparse.Namespace) -> None:
        self.port: int = args.port
        self.size: int = args.size
        self.deflate: bool = args.deflate
        self.ep = select.epoll()
        self.clients: dict[int, Client] = {}
        self.stalled: list[socket.socket] = []
        self.stalled_rest: list[bytes] = []
        self.resume_after: float = args.resume_after
        self.resumed: dict[int, Client] = {}
        self.resumed_latencies = array("q")
        self.churning: dict[int, tuple[Client, float]] = {}
        self.churn_rate: float = args.churn
        self.churn_joins = 0
        self.latencies = array("q")
        self.negotiated = 0
        self.rng = random.Random(1)
        self.slow: list[Client] = []
        self.slow_rate: float = args.slow_rate

    def connect(self, healthy: int, stalled: int, slow: int = 0) -> None:
        # Interleave stalled clients so they are not all at one end of the server's loop.
        kinds = ["healthy"] * healthy + ["stalled"] * stalled + ["slow"] * slow
        random.Random(0).shuffle(kinds)
        for kind in kinds:
            if kind == "slow":
                sock, rest, negotiated = handshake(
                    self.port, "/", deflate=self.deflate, rcvbuf=None
                )
                self.slow.append(Client(sock, rest, negotiated))
            elif kind == "stalled":
                sock, rest, negotiated = handshake(
                    self.port,
                    "/stalled",
                    deflate=self.deflate,
                    rcvbuf=None if self.resume_after else 4096,
                )
                self.stalled.append(sock)
                self.stalled_rest.append(rest)
            else:
                sock, rest, negotiated = handshake(
                    self.port, "/", deflate=self.deflate, rcvbuf=None
                )
                client = Client(sock, rest, negotiated)
                self.clients[sock.fileno()] = client
                self.ep.register(sock.fileno(), select.EPOLLIN)
            self.negotiated += negotiated

    def run(self, control: int) -> tuple[float, float]:
        """Read until ``stop`` arrives on ``control``; return (cpu seconds, wall seconds)."""
        self.ep.register(control, select.EPOLLIN)
        cpu0, wall0 = time.process_time(), time.monotonic()
        next_churn = wall0 + (1 / self.churn_rate if self.churn_rate else float("inf"))
        resume_at = wall0 + self.resume_after if self.resume_after else float("inf")
        poll = self.ep.poll
        clients = self.clients
        pending = b""
        tick = _SLOW_TICK if self.slow else float("inf")
        next_slow = wall0 + tick
        slow_at = wall0
        while True:
            timeout = max(0.0, min(next_churn, resume_at, next_slow) - time.monotonic())
            for fd, _ in poll(min(timeout, 1.0)):
                client = clients.get(fd)
                if client is not None:
                    self.read(client, True)
                elif fd in self.resumed:
                    self.read(self.resumed[fd], True, self.resumed_latencies)
                elif fd in self.churning:
                    self.read(self.churning[fd][0], False)
                elif fd == control:
                    chunk = os.read(control, 4096)
                    pending += chunk
                    if b"stop" in pending or not chunk:
                        return time.process_time() - cpu0, time.monotonic() - wall0
            if time.monotonic() >= next_slow:
                now = time.monotonic()
                self.read_slowly(int(self.slow_rate * (now - slow_at)))
                slow_at = now
                next_slow = now + tick
            if self.churn_rate and time.monotonic() >= next_churn:
                self.churn()
                next_churn += 1 / self.churn_rate
            if time.monotonic() >= resume_at:
                self.resume()
                resume_at = float("inf")

    def resume(self) -> None:
        """Stalled clients start reading; what they read first was published before now."""
        now = time.monotonic_ns()
        for sock, rest in zip(self.stalled, self.stalled_rest, strict=True):
            client = Client(sock, rest, self.deflate)
            client.resumed_at = now
            self.resumed[sock.fileno()] = client
            self.ep.register(sock.fileno(), select.EPOLLIN)

    def churn(self) -> None:
        """One churning client leaves (if it has stayed long enough) and one joins."""
        now = time.monotonic()
        for fd, (client, since) in list(self.churning.items()):
            if now - since > 0.2:
                self.ep.unregister(fd)
                if client.sock is not None:
                    client.sock.close()
                del self.churning[fd]
                break
        sock, rest, _ = handshake(self.port, "/", deflate=self.deflate, rcvbuf=None)
        self.churning[sock.fileno()] = (Client(sock, rest, self.deflate), now)
        self.ep.register(sock.fileno(), select.EPOLLIN)
        self.churn_joins += 1

    def read_slowly(self, budget: int) -> None:
        """Each slow client reads at most ``budget`` bytes (what its rate allows since
        the last tick); what it does not read waits in the kernel, then on the server."""
        if budget <= 0:
            return
        now = time.monotonic_ns()
        for client in self.slow:
            sock = client.sock
            if client.closed or sock is None:
                continue
            data = _recv(sock, budget)
            if data is None:
                continue
            if not data:
                client.closed = True
                continue
            feed(client, data, now, self.size, None)

    def read(self, client: Client, measure: bool, latencies: array[int] | None = None) -> None:
        sock = client.sock
        assert sock is not None
        data = _recv(sock, _RECV)
        if data is None:
            return
        if not data:
            self.ep.unregister(sock.fileno())
            client.closed = True
            return
        if measure and latencies is None:
            latencies = self.latencies
        feed(client, data, time.monotonic_ns(), self.size, latencies if measure else None)

    def result(self, cpu: float, wall: float) -> dict[str, object]:
        clients = list(self.clients.values())
        records = [c.records for c in clients]
        lat = sorted(self.latencies)

        def pick(q: float) -> float | None:
            return lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6 if lat else None

        return {
            "event": "result",
            "healthy": len(clients),
            "stalled": len(self.stalled),
            "negotiated": self.negotiated,
            "records": sum(records),
            "records_min": min(records, default=0),
            "records_max": max(records, default=0),
            "frames": sum(c.frames for c in clients),
            "wire_bytes": sum(c.nbytes for c in clients),
            "out_of_order": sum(c.out_of_order for c in clients),
            "closed": sum(c.closed for c in clients),
            "churn_joins": self.churn_joins,
            "slow": len(self.slow),
            "slow_records": sum(c.records for c in self.slow),
            "slow_out_of_order": sum(c.out_of_order for c in self.slow),
            "slow_closed": sum(c.closed for c in self.slow),
            "stale_records": [c.stale for c in self.resumed.values()],
            "resumed_caught_up": sum(
                c.records > c.stale for c in self.resumed.values() if not c.closed
            ),
            "resumed_closed": sum(c.closed for c in self.resumed.values()),
            "latency_ms": {"p50": pick(0.50), "p99": pick(0.99), "max": pick(1.0)},
            "cpu_s": cpu,
            "wall_s": wall,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True, help="healthy clients")
    parser.add_argument("--stalled", type=int, default=0)
    parser.add_argument("--size", type=int, required=True, help="bytes per message")
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    parser.add_argument("--churn", type=float, default=0.0, help="joins per second")
    parser.add_argument(
        "--resume-after", type=float, default=0.0, help="seconds before stalled clients read"
    )
    parser.add_argument("--slow", type=int, default=0, help="clients that read slowly")
    parser.add_argument(
        "--slow-rate", type=float, default=0.0, help="bytes per second each slow client reads"
    )
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    gen = LoadGen(args)
    gen.connect(args.clients, args.stalled, args.slow)
    print(json.dumps({"event": "connected", "negotiated": gen.negotiated}), flush=True)
    control = sys.stdin.fileno()
    received = b""
    while b"go" not in received:
        chunk = os.read(control, 64)
        if not chunk:
            return
        received += chunk
    cpu, wall = gen.run(control)
    print(json.dumps(gen.result(cpu, wall)), flush=True)


if __name__ == "__main__":
    main()
