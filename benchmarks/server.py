"""One benchmark server process: a fan-out implementation under a timed publishing loop.

Every case serves the same workload on 127.0.0.1 and measures itself: CPU time of
this process (``time.process_time()``) from the first publish until the stream has
settled, wall time inside each publish call, resident memory, and what stalled
connections hold in their queues, their transports and the kernel (``SIOCOUTQ``). Every
socket keeps its default options, as a server set up from the README would: whatever
the kernel accepts for a client that stopped reading is counted, not hidden.

Driven by ``benchmarks.run`` over stdin/stdout, one JSON object per line: it prints
``{"event": "listening", "port": N}``, waits for ``go``, publishes, prints its result.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import itertools
import json
import os
import resource
import socket
import sys
import time
import tracemalloc
import zlib
from array import array
from collections.abc import Callable, Sequence
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory

from wsfanout import Hub, Policy
from wsfanout._shell.sockets import send_queue
from wsfanout.policies import Batch, DropOldest, SkipToLatest

from .payload import Payloads

PAGE = os.sysconf("SC_PAGE_SIZE")

RECOMMENDED_DEFLATE = dict(
    server_no_context_takeover=True,
    server_max_window_bits=12,
    client_max_window_bits=12,
    compress_settings={"memLevel": 5},
)
"""wsfanout's recommended permessage-deflate settings: websockets' defaults plus
``server_no_context_takeover``, so one compressed frame serves every connection."""


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def peak_rss() -> int:
    """VmHWM: unlike ru_maxrss, it is not inherited from the parent across exec."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def kernel_bytes(transport: asyncio.BaseTransport) -> int:
    """What the kernel holds in the transport's socket's send queue (0 if it cannot say)."""
    return send_queue(transport.get_extra_info("socket")) or 0


def serve_kwargs(compression: str) -> dict[str, Any]:
    """websockets' serve() arguments for a compression mode."""
    common: dict[str, Any] = {"ping_interval": None, "max_size": 2**20}
    if compression == "off":
        return {**common, "compression": None}
    if compression == "default":
        return {**common, "compression": "deflate"}
    if compression == "recommended":
        factory = ServerPerMessageDeflateFactory(**RECOMMENDED_DEFLATE)  # type: ignore[arg-type]
        return {**common, "compression": None, "extensions": [factory]}
    raise ValueError(f"compression={compression!r} is not off, default or recommended")


def frame_of(payload: bytes, first: int) -> bytes:
    """An unmasked server frame: ``first`` (FIN, RSV1 and the opcode) and ``payload``."""
    n = len(payload)
    if n < 126:
        header = bytes((first, n))
    elif n < 65536:
        header = bytes((first, 126)) + n.to_bytes(2, "big")
    else:
        header = bytes((first, 127)) + n.to_bytes(8, "big")
    return header + payload


class Case:
    """A fan-out implementation: how it serves connections and how it publishes."""

    is_async = False

    def __init__(self, compression: str) -> None:
        self.compression = compression
        self.stalled: list[asyncio.BaseTransport] = []

    async def start(self) -> int:
        raise NotImplementedError

    def connected(self) -> int:
        raise NotImplementedError

    def publish(self, text: str) -> None:
        raise NotImplementedError

    async def apublish(self, text: str) -> None:
        raise NotImplementedError

    def queued_bytes(self) -> int | None:
        """Bytes the implementation holds for stalled clients outside transports, if known."""
        return None

    def stats(self) -> dict[str, Any]:
        return {}

    async def stop(self) -> None:
        pass


class WebsocketsCase(Case):
    """Cases built on websockets' asyncio server with a plain set of connections."""

    def __init__(self, compression: str) -> None:
        super().__init__(compression)
        self.clients: set[ServerConnection] = set()
        self.server: Any = None

    async def start(self) -> int:
        self.server = await serve(self.handler, "127.0.0.1", 0, **serve_kwargs(self.compression))
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    def connected(self) -> int:
        return len(self.clients)

    def note(self, ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.path == "/stalled":
            self.stalled.append(ws.transport)

    async def handler(self, ws: ServerConnection) -> None:
        self.note(ws)
        self.clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            self.clients.discard(ws)

    async def stop(self) -> None:
        self.server.close()


class Plain(WebsocketsCase):
    """websockets alone, reading each connection as ``Hub.serve`` does: the baseline of
    the idle-memory cell."""

    async def handler(self, ws: ServerConnection) -> None:
        self.note(ws)
        self.clients.add(ws)
        try:
            async for _ in ws:
                pass
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(ws)


class Broadcast(WebsocketsCase):
    """websockets' ``broadcast()``: writes to every open connection, no backpressure."""

    def publish(self, text: str) -> None:
        broadcast(self.clients, text)


async def _send(ws: ServerConnection, text: str) -> None:
    with contextlib.suppress(ConnectionClosed):
        await ws.send(text)


class Naive(WebsocketsCase):
    """The documented naive loop: ``await ws.send()`` per client, one after the other."""

    is_async = True

    async def apublish(self, text: str) -> None:
        for ws in self.clients.copy():
            await _send(ws, text)


class TaskPerSend(WebsocketsCase):
    """The documented concurrent way: one task per client per message."""

    def publish(self, text: str) -> None:
        for ws in self.clients:
            asyncio.create_task(_send(ws, text))  # noqa: RUF006 - the documented pattern


class WaitAll(WebsocketsCase):
    """The documented ``asyncio.wait`` over one task per send, awaited by the publisher."""

    is_async = True

    async def apublish(self, text: str) -> None:
        if self.clients:
            await asyncio.wait([asyncio.create_task(_send(ws, text)) for ws in self.clients])


class QueueRelay(WebsocketsCase):
    """The documented per-client ``asyncio.Queue`` drained by a relay task."""

    def __init__(self, compression: str) -> None:
        super().__init__(compression)
        self.queues: dict[asyncio.Queue[str], bool] = {}

    def connected(self) -> int:
        return len(self.queues)

    async def handler(self, ws: ServerConnection) -> None:
        self.note(ws)
        queue: asyncio.Queue[str] = asyncio.Queue()
        relay = asyncio.create_task(self.relay(queue, ws))
        self.queues[queue] = ws.request is not None and ws.request.path == "/stalled"
        try:
            await ws.wait_closed()
        finally:
            del self.queues[queue]
            relay.cancel()

    async def relay(self, queue: asyncio.Queue[str], ws: ServerConnection) -> None:
        while True:
            text = await queue.get()
            await ws.send(text)

    def publish(self, text: str) -> None:
        for queue in self.queues:
            queue.put_nowait(text)

    def queued_bytes(self) -> int:
        return sum(q.qsize() for q, stalled in self.queues.items() if stalled) * SIZE


class PubSub(WebsocketsCase):
    """The documented publish-subscribe stream: a linked list of futures."""

    def __init__(self, compression: str) -> None:
        super().__init__(compression)
        self.waiter: asyncio.Future[tuple[str, Any]] | None = None

    async def start(self) -> int:
        self.waiter = asyncio.get_running_loop().create_future()
        return await super().start()

    async def handler(self, ws: ServerConnection) -> None:
        self.note(ws)
        self.clients.add(ws)
        try:
            waiter = self.waiter
            assert waiter is not None
            while True:
                text, waiter = await waiter
                await ws.send(text)
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(ws)

    def publish(self, text: str) -> None:
        waiter = self.waiter
        assert waiter is not None
        self.waiter = asyncio.get_running_loop().create_future()
        waiter.set_result((text, self.waiter))


class Floor(WebsocketsCase):
    """One frame encoded (and compressed) once, ``transport.write()`` to every connection.

    A reference for asyncio's Python transport, unsafe in general: no backpressure,
    no check of the connection's state, and with compression it is right only for
    connections that negotiated exactly RECOMMENDED_DEFLATE.
    """

    def publish(self, text: str) -> None:
        payload = text.encode()
        first = 0x81
        if self.compression == "recommended":
            encoder = zlib.compressobj(wbits=-12, memLevel=5)
            payload = (encoder.compress(payload) + encoder.flush(zlib.Z_SYNC_FLUSH))[:-4]
            first |= 0x40
        frame = frame_of(payload, first)
        for ws in self.clients:
            try:  # noqa: SIM105 - free in Python 3.11 unless it raises; suppress() is not
                ws.transport.write(frame)
            except RuntimeError:  # write() after write_eof(): a client that just left
                pass


class FloorDirect(WebsocketsCase):
    """One frame built once, ``os.write()`` straight to every connection's socket: the
    least any Python fan-out can cost per delivery (one system call from a Python loop).

    Unsafe in general, as ``floor``, and more: it ignores the transport's buffer, so
    bytes could interleave with what the transport holds. With ``mapped``, the loop
    itself runs in C (``map`` over ``os.write``): no Python bytecode per delivery.
    """

    mapped = False

    def __init__(self, compression: str) -> None:
        super().__init__(compression)
        self.fds: dict[ServerConnection, int] = {}

    async def handler(self, ws: ServerConnection) -> None:
        self.fds[ws] = ws.transport.get_extra_info("socket").fileno()
        try:
            await super().handler(ws)
        finally:
            del self.fds[ws]

    def publish(self, text: str) -> None:
        frame = frame_of(text.encode(), 0x81)
        fds = self.fds.values()
        if self.mapped:
            collections.deque(map(os.write, fds, itertools.repeat(frame)), maxlen=0)
            return
        for fd in fds:
            try:  # noqa: SIM105 - free in Python 3.11 unless it raises; suppress() is not
                os.write(fd, frame)
            except OSError:  # a client that just left, or a full socket buffer
                pass


class FloorMap(FloorDirect):
    mapped = True


class Wsfanout(Case):
    """wsfanout's Hub under one policy (``timings``: recording its latency histograms, as
    once metrics or an admin listener are on)."""

    def __init__(
        self,
        compression: str,
        policy: Policy | None,
        *,
        cork: bool = True,
        lowat: bool = True,
        timings: bool | None = None,
    ) -> None:
        super().__init__(compression)
        # lowat=False: the hub leaves every socket as it is (no TCP_NOTSENT_LOWAT).
        off: dict[str, Any] = {} if lowat else {"notsent_lowat": None}
        self.hub = Hub(policy=policy, cork=cork, timings=timings, **off)
        self.stalled_subscribers: list[Any] = []
        self.server: Any = None

    async def start(self) -> int:
        self.server = await serve(self.handler, "127.0.0.1", 0, **serve_kwargs(self.compression))
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def handler(self, ws: ServerConnection) -> None:
        if ws.request is not None and ws.request.path == "/stalled":
            self.stalled.append(ws.transport)
            async with self.hub.subscribe(ws) as subscriber:
                self.stalled_subscribers.append(subscriber)
                await ws.wait_closed()
        else:
            await self.hub.serve(ws)

    def connected(self) -> int:
        return len(self.hub)

    def publish(self, text: str) -> None:
        self.hub.publish(text)

    def queued_bytes(self) -> int:
        return sum(sub.stats().queued_bytes for sub in self.stalled_subscribers)

    def stats(self) -> dict[str, Any]:
        stats = self.hub.stats()
        return {
            "sent": stats.sent,
            "frames": stats.frames,
            "dropped": stats.dropped,
            "closed_by_policy": stats.closed_by_policy,
        }

    async def stop(self) -> None:
        self.server.close()


class Aiohttp(Case):
    """aiohttp's WebSocket server, published to with a loop of ``await send_str()``."""

    is_async = True

    def __init__(self, compression: str) -> None:
        super().__init__(compression)
        self.clients: set[Any] = set()
        self.runner: Any = None

    async def start(self) -> int:
        from aiohttp import web

        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse(compress=self.compression != "off")
            await ws.prepare(request)
            if request.path == "/stalled" and request.transport is not None:
                self.stalled.append(request.transport)
            self.clients.add(ws)
            try:
                async for _ in ws:
                    pass
            finally:
                self.clients.discard(ws)
            return ws

        app = web.Application()
        app.router.add_get("/", handler)
        app.router.add_get("/stalled", handler)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        sock = socket.create_server(("127.0.0.1", 0), backlog=1024)
        await web.SockSite(self.runner, sock).start()
        port: int = sock.getsockname()[1]
        return port

    def connected(self) -> int:
        return len(self.clients)

    async def apublish(self, text: str) -> None:
        for ws in self.clients.copy():
            with contextlib.suppress(ConnectionError):
                await ws.send_str(text)

    async def stop(self) -> None:
        await self.runner.cleanup()


class Picows(Case):
    """picows' server, published to with its synchronous ``send()`` per transport."""

    def __init__(self, compression: str) -> None:
        super().__init__(compression)
        self.clients: set[Any] = set()
        self.server: Any = None

    async def start(self) -> int:
        import picows

        case = self

        class Listener(picows.WSListener):
            def __init__(self, stalled: bool) -> None:
                self.is_stalled = stalled

            def on_ws_connected(self, transport: Any) -> None:
                if self.is_stalled:
                    case.stalled.append(transport.underlying_transport)
                case.clients.add(transport)

            def on_ws_disconnected(self, transport: Any) -> None:
                case.clients.discard(transport)

        def factory(request: Any) -> Listener:
            return Listener(request.path == b"/stalled")

        self.server = await picows.ws_create_server(factory, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        self.text = picows.WSMsgType.TEXT
        return port

    def connected(self) -> int:
        return len(self.clients)

    def publish(self, text: str) -> None:
        payload = text.encode()
        kind = self.text
        for transport in self.clients:
            transport.send(kind, payload)

    async def stop(self) -> None:
        self.server.close()


CASES: dict[str, Callable[[str], Case]] = {
    "wsfanout": lambda c: Wsfanout(c, None),
    "wsfanout-skip": lambda c: Wsfanout(c, SkipToLatest()),
    "wsfanout-skip-nolowat": lambda c: Wsfanout(c, SkipToLatest(), lowat=False),
    "wsfanout-batch": lambda c: Wsfanout(c, Batch(max_messages=16, max_delay=0.01)),
    "wsfanout-dropoldest": lambda c: Wsfanout(c, DropOldest(max_messages=64)),
    "wsfanout-dropoldest-nolowat": lambda c: Wsfanout(c, DropOldest(max_messages=64), lowat=False),
    "wsfanout-nocork": lambda c: Wsfanout(c, None, cork=False),
    "wsfanout-timed": lambda c: Wsfanout(c, None, timings=True),
    "websockets": Plain,
    "broadcast": Broadcast,
    "naive": Naive,
    "task": TaskPerSend,
    "wait": WaitAll,
    "queue": QueueRelay,
    "pubsub": PubSub,
    "aiohttp": Aiohttp,
    "picows": Picows,
    "floor": Floor,
    "floor-direct": FloorDirect,
    "floor-map": FloorMap,
}
"""Every case the harness knows, by name."""

SIZE = 0


def percentiles(samples: Sequence[int]) -> dict[str, float | None]:
    ordered = sorted(samples)
    if not ordered:
        return {"p50": None, "p99": None, "max": None}

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e3

    return {"p50": pick(0.5), "p99": pick(0.99), "max": pick(1.0)}


async def read_line(reader: asyncio.StreamReader, expected: str, timeout: float) -> None:
    line = await asyncio.wait_for(reader.readline(), timeout)
    if not line.startswith(expected.encode()):
        raise SystemExit(f"expected {expected!r} on stdin, got {line!r}")


class Split:
    """The server thread's CPU time (user and system) inside the hub's fan-out of each
    message and inside its deadline passes (``--split``): where a wsfanout case's CPU
    goes, between what ``publish()`` does at once and what the shared timers do later.
    It wraps two of the hub's internal methods in this process, at the cost of two
    clock reads per publish and per pass."""

    def __init__(self) -> None:
        self.ns = {"publish": 0, "deadline": 0}
        self.calls = {"publish": 0, "deadline": 0}

    def install(self) -> None:
        from wsfanout._shell.fanout import Fanout
        from wsfanout._shell.timers import Timers

        self.wrap(Fanout, "deliver", "publish")
        self.wrap(Timers, "_fire", "deadline")

    def wrap(self, cls: type, name: str, part: str) -> None:
        """Count the calls of ``cls.name`` and the thread's CPU time in them as ``part``."""
        original = getattr(cls, name)
        clock = time.thread_time_ns
        ns, calls = self.ns, self.calls

        def timed(*args: Any) -> Any:
            start = clock()
            try:
                return original(*args)
            finally:
                ns[part] += clock() - start
                calls[part] += 1

        setattr(cls, name, timed)

    def reset(self) -> None:
        for part in self.ns:
            self.ns[part] = self.calls[part] = 0

    def result(self) -> dict[str, float]:
        return {
            **{f"{part}_s": total / 1e9 for part, total in self.ns.items()},
            **{f"{part}_calls": float(n) for part, n in self.calls.items()},
        }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    global SIZE
    SIZE = args.size
    loop = asyncio.get_running_loop()
    case = CASES[args.case](args.compression)
    split = Split() if args.split and isinstance(case, Wsfanout) else None
    if split is not None:
        split.install()
    port = await case.start()
    if args.idle:
        gc.collect()
        tracemalloc.start()
        traced0 = tracemalloc.get_traced_memory()[0]
    print(json.dumps({"event": "listening", "port": port}), flush=True)

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await read_line(reader, "go", timeout=300)
    expected = args.clients
    async with asyncio.timeout(30):
        # Each implementation counts its own connections; polling reads them all alike.
        while case.connected() < expected:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    if args.idle:
        # Let every handler reach its steady state, then count what the connections hold.
        await asyncio.sleep(0.5)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - traced0
        tracemalloc.stop()
        return {
            "event": "result",
            "case": args.case,
            "compression": args.compression,
            "connected": case.connected(),
            "idle_bytes_per_connection": held / case.connected(),
        }

    payloads = Payloads(args.size)
    texts = [payloads.make(0)]  # warm the formatter
    del texts
    timings = array("q")
    rss_samples: list[tuple[float, int, int]] = []
    published = 0
    burst = args.burst
    interval = burst / args.rate

    def held_bytes() -> int:
        """Bytes held for stalled clients: their queues, transports' buffers and kernels."""
        buffered = sum(t.get_write_buffer_size() for t in case.stalled)  # type: ignore[attr-defined]
        kernel = sum(kernel_bytes(t) for t in case.stalled)
        return buffered + kernel + (case.queued_bytes() or 0)

    async def sample_rss() -> None:
        start = loop.time()
        while True:
            rss_samples.append((loop.time() - start, rss(), held_bytes()))
            await asyncio.sleep(0.25)

    measured_from = 0
    """How many were published during the warm-up, before CPU is counted."""

    async def publisher(duration: float) -> None:
        nonlocal published
        perf = time.perf_counter_ns
        make = payloads.make
        deadline = loop.time() + duration
        next_at = loop.time()
        while loop.time() < deadline:
            for _ in range(burst):
                text = make(published)
                t0 = perf()
                if case.is_async:
                    await case.apublish(text)
                else:
                    case.publish(text)
                timings.append(perf() - t0)
                published += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    if args.warmup:
        # Publish as the case will, so slow readers fall behind before CPU is counted.
        await publisher(args.warmup)
        measured_from = published
        del timings[:]
    rss0 = rss()
    if split is not None:
        split.reset()  # the warm-up's and the connections' time is not counted
    sampler = asyncio.create_task(sample_rss())
    cpu0, wall0 = time.process_time(), time.perf_counter()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    task = asyncio.create_task(publisher(args.duration))
    done, _ = await asyncio.wait([task], timeout=args.duration + 2.0)
    blocked = not done
    if blocked:
        task.cancel()
    elif task.exception() is not None:
        raise task.exception()  # type: ignore[misc]
    await asyncio.sleep(args.settle)
    cpu = time.process_time() - cpu0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter() - wall0
    rss1 = rss()
    sampler.cancel()
    stalled_buffers = [t.get_write_buffer_size() for t in case.stalled]  # type: ignore[attr-defined]
    stalled_kernels = [kernel_bytes(t) for t in case.stalled]
    result = {
        "event": "result",
        "case": args.case,
        "compression": args.compression,
        "loop": args.loop,
        "connected": case.connected(),
        "published": published,
        "published_measured": published - measured_from,
        "expected_published": int((args.duration + args.warmup) * args.rate),
        "publisher_blocked": blocked,
        "cpu_s": cpu,
        "user_s": usage1.ru_utime - usage0.ru_utime,
        "system_s": usage1.ru_stime - usage0.ru_stime,
        "wall_s": wall,
        "publish_us": percentiles(timings),
        "rss_start": rss0,
        "rss_end": rss1,
        "rss_peak": max(peak_rss(), rss1, *(r for _, r, _ in rss_samples)),
        "rss_samples": rss_samples,
        "stalled_write_buffers": sum(stalled_buffers),
        "stalled_kernel_bytes": sum(stalled_kernels),
        "stalled_queued_bytes": case.queued_bytes(),
        "stats": case.stats(),
    }
    if split is not None:
        result["split"] = split.result()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=sorted(CASES), required=True)
    parser.add_argument("--clients", type=int, required=True, help="connections to wait for")
    parser.add_argument("--size", type=int, required=True, help="bytes per message")
    parser.add_argument("--rate", type=float, required=True, help="messages per second")
    parser.add_argument("--burst", type=int, default=1, help="messages published back to back")
    parser.add_argument("--duration", type=float, required=True, help="publishing seconds")
    parser.add_argument("--settle", type=float, default=0.5, help="seconds after the last")
    parser.add_argument(
        "--warmup", type=float, default=0.0, help="seconds of publishing before measuring"
    )
    parser.add_argument("--compression", choices=["off", "default", "recommended"], default="off")
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--idle", action="store_true", help="measure idle connections only")
    parser.add_argument(
        "--split", action="store_true", help="time publish() and deadline passes (wsfanout)"
    )
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(run(args))
        print(json.dumps(result), flush=True)
        os._exit(0)  # do not wait for a thousand connections to close


if __name__ == "__main__":
    main()
