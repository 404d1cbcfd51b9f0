"""Deliveries per second: one in-process hub against 1, 2 and 4 workers behind Redis.

Run with ``make bench-redis`` (``--help`` for the knobs). Every mode serves the same
clients the same messages:

* ``hub``: one process runs a hub, its websockets server and the publishing loop;
* ``N workers``: N processes share one port (``WorkerPool``, SO_REUSEPORT), each with
  a hub and a Redis backplane; this process publishes through its own backplane-only
  hub, so every message crosses Redis once per worker.

The clients live in one separate process on raw sockets: they do the opening
handshake by hand, then only count bytes (every frame has the same size), reading
every 10 ms in large chunks, so they cost little CPU. A run ends when every client
has every message; subscribers use ``DropOldest`` with a bound far above the run, so
nothing is dropped. Deliveries per second = clients x messages / seconds from the
first publish to the last byte. The redis-server, the clients and this process share
the machine with the workers, and with whatever else runs on it: the CPU time each
role spent per delivery, printed too, is the figure that other load barely moves.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import selectors
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from wsfanout import Hub
from wsfanout.backplane import RedisBackplane, WorkerPool
from wsfanout.policies import DropOldest

POLICY = DropOldest(max_messages=1_000_000, max_bytes=1 << 30)
"""Far above any run: every message reaches every client, as with a fast client."""

SERVE_OPTIONS: dict[str, Any] = {"compression": None, "ping_interval": None}
"""No keepalive pings: the clients only count bytes and never answer one, so websockets
would close them all after 40 s (a ping at 20 s, unanswered for 20 s: "keepalive ping
timeout"), and a ping's bytes would be counted as a message's."""

HELLO = "hello"
HELLO_FRAME = 2 + len(HELLO)
GUARD = 120.0
RESULTS = Path(__file__).with_name("results")


async def bench_handler(hub: Hub, websocket: ServerConnection) -> None:
    """Subscribe, say hello (the client then knows it is subscribed), keep reading."""
    async with hub.subscribe(websocket) as subscriber:
        subscriber.send(HELLO)
        with contextlib.suppress(ConnectionClosed):
            async for _ in websocket:
                pass


# -- the clients: one process, raw sockets, bytes counted ----------------------------------

REQUEST = (
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
PAUSE = 0.01
"""Seconds the clients let bytes pile up before reading: a few large reads cost far less
CPU than one small read per frame, and a sink must stay cheap to measure the server."""


def open_client(port: int) -> tuple[socket.socket, int]:
    """Connect and do the opening handshake; return the socket and the bytes read past it."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(REQUEST)
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("closed during the handshake")
        head += chunk
    if not head.startswith(b"HTTP/1.1 101"):
        raise ConnectionError(f"handshake failed: {head[:80]!r}")
    sock.setblocking(False)
    return sock, len(head) - head.index(b"\r\n\r\n") - 4


def read_until(
    selector: selectors.BaseSelector, counts: list[int], target: int, deadline: float
) -> None:
    """Read every socket until each has received ``target`` bytes."""
    buffer = bytearray(1 << 20)
    while min(counts) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sum(counts)} bytes received, {target * len(counts)} expected")
        if not selector.select(timeout=1.0):
            continue
        time.sleep(PAUSE)
        for key, _ in selector.select(timeout=0):
            sock, index = key.fileobj, key.data
            assert isinstance(sock, socket.socket)
            while True:
                try:
                    size = sock.recv_into(buffer)
                except BlockingIOError:
                    break
                if not size:
                    raise ConnectionError(f"client {index} closed after {counts[index]} bytes")
                counts[index] += size


def clients_main(port: int, clients: int, expected: int, pipe: Connection) -> None:
    selector = selectors.DefaultSelector()
    counts = []
    for index in range(clients):
        sock, extra = open_client(port)
        counts.append(extra)
        selector.register(sock, selectors.EVENT_READ, index)
    read_until(selector, counts, HELLO_FRAME, time.monotonic() + GUARD)
    pipe.send("ready")
    cpu = time.process_time()
    try:
        read_until(selector, counts, expected, time.monotonic() + GUARD)
        pipe.send(("done", time.monotonic(), sum(counts), time.process_time() - cpu))
    except (TimeoutError, ConnectionError) as exc:
        pipe.send(("failed", repr(exc), sum(counts), 0.0))
    for key in list(selector.get_map().values()):
        assert isinstance(key.fileobj, socket.socket)
        key.fileobj.close()


# -- one measured run ----------------------------------------------------------------------


def payload(n: int, size: int) -> str:
    return str(n).rjust(size, "x")


async def receive(pipe: Connection) -> object:
    return await asyncio.get_running_loop().run_in_executor(None, pipe.recv)


@contextlib.asynccontextmanager
async def clients_process(port: int, args: argparse.Namespace) -> AsyncIterator[Connection]:
    expected = HELLO_FRAME + args.messages * (2 + args.size)
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(target=clients_main, args=(port, args.clients, expected, sender))
    process.start()
    sender.close()
    try:
        if await receive(receiver) != "ready":
            raise RuntimeError("the clients did not connect")
        yield receiver
    finally:
        process.join(GUARD)
        if process.is_alive():
            process.kill()
            process.join()


async def publish_all(hub: Hub, args: argparse.Namespace, backplane: RedisBackplane | None) -> None:
    for start in range(0, args.messages, 100):
        for n in range(start, min(start + 100, args.messages)):
            hub.publish(payload(n, args.size))
        if backplane is not None and backplane.health().buffered > 20_000:
            await backplane.wait_for(lambda h: h.buffered < 5_000)
        await asyncio.sleep(0)  # let the event loop write


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Run:
    """One measured run: wall time and CPU seconds per role during it."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.cpu: dict[str, float] = {}
        self._before: dict[str, float] = {}
        self._started = 0.0

    def start(self, pids: dict[str, list[int]]) -> None:
        self._pids = pids
        self._before = {role: sum(map(cpu_seconds, ids)) for role, ids in pids.items()}
        self._process = time.process_time()
        self._started = time.monotonic()

    async def finish(self, pipe: Connection, args: argparse.Namespace) -> Run:
        report = await receive(pipe)
        assert isinstance(report, tuple)
        if report[0] != "done":
            raise RuntimeError(f"run failed: {report}")
        _, completed_at, received, client_cpu = report
        expected = args.clients * (HELLO_FRAME + args.messages * (2 + args.size))
        assert received == expected, f"{received} bytes received, {expected} expected"
        self.seconds = float(completed_at) - self._started
        for role, ids in self._pids.items():
            self.cpu[role] = sum(map(cpu_seconds, ids)) - self._before[role]
        self.cpu["publisher"] = time.process_time() - self._process
        self.cpu["clients"] = float(client_cpu)
        return self


async def run_hub(args: argparse.Namespace, redis_pid: int) -> Run:
    hub = Hub(policy=POLICY)

    async def handler(websocket: ServerConnection) -> None:
        await bench_handler(hub, websocket)

    run = Run()
    async with serve(handler, "127.0.0.1", 0, **SERVE_OPTIONS) as server:
        port = server.sockets[0].getsockname()[1]
        async with clients_process(port, args) as pipe:
            run.start({"redis": [redis_pid]})
            await publish_all(hub, args, None)
            await run.finish(pipe, args)
        await hub.aclose()
    return run


async def run_workers(workers: int, url: str, args: argparse.Namespace, redis_pid: int) -> Run:
    pool = WorkerPool(
        workers, url, port=0, policy=POLICY, handler=bench_handler, serve_options=SERVE_OPTIONS
    )
    await asyncio.to_thread(pool.start)
    run = Run()
    try:
        # Bytes bounded too: DropOldest's default max_bytes (1 MiB, 16,384 messages of 64 B)
        # dropped what waited beyond it, and the clients then waited for it in vain.
        buffer = DropOldest(max_messages=10**6, max_bytes=1 << 30)
        backplane = RedisBackplane(url, hub_id="publisher", buffer=buffer)
        hub = Hub(backplane=backplane)
        async with backplane:
            # pool.start() returned once every worker was subscribed.
            await backplane.wait_for(lambda h: h.connected, timeout=GUARD)
            async with clients_process(pool.port, args) as pipe:
                pids = [process.pid for process in pool.processes if process.pid is not None]
                run.start({"redis": [redis_pid], "workers": pids})
                await publish_all(hub, args, backplane)
                await run.finish(pipe, args)
            health = backplane.health()
            assert health.dropped == 0, health
    finally:
        await asyncio.to_thread(pool.stop)
    return run


# -- redis-server and the report -----------------------------------------------------------


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, int]]:
    executable = shutil.which("redis-server")
    if executable is None:
        sys.exit("redis-server is missing: make bench-redis installs it (Debian's redis-server)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    process = subprocess.Popen(
        [*command, "--appendonly", "no"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None
    for line in process.stdout:  # bounded by the server's start-up output
        if b"Ready to accept connections" in line:
            break
    else:
        sys.exit("redis-server did not start")
    try:
        yield f"redis://127.0.0.1:{port}/0", process.pid
    finally:
        process.terminate()
        process.wait(GUARD)


ROLES = ("publisher", "workers", "redis", "clients")


async def main(args: argparse.Namespace) -> None:
    deliveries = args.clients * args.messages
    print(
        f"{args.clients} clients x {args.messages} messages of {args.size} bytes = "
        f"{deliveries:,} deliveries per run; median of {args.repeat} runs; "
        f"{os.cpu_count()} CPUs"
    )
    print("load average before: {:.2f} {:.2f} {:.2f}\n".format(*os.getloadavg()))
    modes = [0, *args.workers]
    results = []
    with redis_server() as (url, redis_pid):
        for workers in modes:
            runs = []
            for _ in range(args.repeat):
                if workers == 0:
                    runs.append(await run_hub(args, redis_pid))
                else:
                    runs.append(await run_workers(workers, url, args, redis_pid))
            run = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]  # the median run
            label = "in-process hub" if workers == 0 else f"{workers} worker" + "s" * (workers > 1)
            results.append(
                {
                    "mode": label,
                    "workers": workers,
                    "seconds": run.seconds,
                    "rate": deliveries / run.seconds,
                    "cpu": {role: run.cpu.get(role, 0.0) for role in ROLES},
                    "all_seconds": [r.seconds for r in runs],
                }
            )
    base = float(results[0]["rate"])
    print(
        f"{'mode':<16}{'seconds':>8}{'deliveries/s':>14}{'ratio':>7}"
        f"{'server µs/delivery':>20}{'clients µs/delivery':>21}"
    )
    for row in results:
        rate = float(row["rate"])
        row["ratio"] = rate / base
        cpu = row["cpu"]
        assert isinstance(cpu, dict)
        server = (cpu["publisher"] + cpu["workers"] + cpu["redis"]) / deliveries * 1e6
        clients = cpu["clients"] / deliveries * 1e6
        row["server_us_per_delivery"], row["clients_us_per_delivery"] = server, clients
        print(
            f"{row['mode']:<16}{row['seconds']:>8.3f}{rate:>14,.0f}{rate / base:>7.2f}"
            f"{server:>20.2f}{clients:>21.2f}"
        )
    print("\nCPU seconds of the median run, by role (the in-process hub is the publisher):")
    print(f"{'mode':<16}" + "".join(f"{role:>11}" for role in ROLES))
    for row in results:
        cpu = row["cpu"]
        assert isinstance(cpu, dict)
        print(f"{row['mode']:<16}" + "".join(f"{cpu[role]:>11.2f}" for role in ROLES))
    load = os.getloadavg()
    print("\nload average after: {:.2f} {:.2f} {:.2f}".format(*load))
    RESULTS.mkdir(exist_ok=True)
    summary = {"options": vars(args), "cpus": os.cpu_count(), "load": load, "results": results}
    (RESULTS / "redis_scaling.json").write_text(json.dumps(summary, indent=2))


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--messages", type=int, default=5_000)
    parser.add_argument("--size", type=int, default=64, help="payload bytes (< 126)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    if not 1 <= args.size < 126:
        parser.error("--size must be from 1 to 125 bytes (one frame header size for all)")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
