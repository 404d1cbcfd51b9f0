"""Pacing from the drain rate, measured: a real client reading at 50 kB/s under 200 kB/s.

Run with ``make bench-pacing`` (``--help`` for the knobs). One process runs a hub, its
websockets server and a publisher of ``--rate`` bytes per second (JSON updates of
``--size`` bytes on ``--keys`` keys, each carrying its publish time); a separate
process runs a websockets client (its defaults, default socket options) that reads
at most ``--read`` bytes per second: after each frame it sleeps until its reading is
back under that rate. Each case is one policy:

* ``adaptive``: ``ConflateByKey | Adaptive`` (the ``mobile`` preset's stages), paced
  from the drain rate the hub measures;
* ``batch``: ``ConflateByKey | Batch``, the same conflation and frames written as the
  write buffer drains, without pacing (what one would write without ``Adaptive``).

Per second, it prints what the hub wrote to the client's connection (kB/s), the drain
rate the hub measured, what the client read (kB/s), the ladder's level, and the p99 age
of what the client read in that second (read time minus publish time, on the machine's
monotonic clock, which both processes share). The summary says when the send rate
settled within 20% of the drain rate (and of the client's reading rate), the p99 age
before and after, and the shortest time between two steps against the hold; and from
t=2 (the issue's time to settle) the p99 age and the seconds within 20% of the reader.

``--notsent-lowat BYTES`` sets ``TCP_NOTSENT_LOWAT`` on the server's socket before it
subscribes; the hub sets it too, to 16384 by default (``Hub(notsent_lowat=...)``):
without it the kernel takes megabytes before the write buffer, which the hub
measures, holds anything.

A reader slowed by its network
------------------------------
``--network-rate BYTES`` slows the *network* instead of the reading: the client reads
all it gets, as fast as it can, and the link from the server to it carries at most
``BYTES`` per second, so the bottleneck is where the server's kernel sees it (the pace
of the acknowledgements, ``tcpi_delivery_rate``, unsent bytes). The client then runs in
a network namespace of its own (``ip netns add``), joined to this one by a veth pair
whose server side is shaped by a token bucket (``tc qdisc ... tbf``, rate counted on
whole Ethernet frames, a queue of ``--network-queue`` seconds at that rate); the
server listens on the veth's address, and nothing on ``lo`` or any other interface
changes. ``--congestion NAME`` sets ``TCP_CONGESTION`` on the server's socket for
that connection (``cubic``, ``bbr``, ...: what ``tcp_available_congestion_control``
lists); the machine's default otherwise. The summary then compares the send rate with
what the client read (the link's rate less the headers). This mode **needs root** and
``ip`` and ``tc`` (iproute2); it fails with a message saying which is missing or what
the kernel refused. The namespace and the veth pair (and with them the shaper) are
removed when the run ends, and at the start too in case an earlier run was killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from wsfanout import Hub, Policy, select_subprotocol
from wsfanout._shell import fanout as fanout_module
from wsfanout._shell import sockets as sockets_module
from wsfanout.client import Client, Received
from wsfanout.policies import Adaptive, Batch, ConflateByKey

TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
TCP_CONGESTION = getattr(socket, "TCP_CONGESTION", 13)
ROOT = Path(__file__).resolve().parent.parent
TICK = 0.02
"""Seconds between publishing bursts."""
SETTLE = 2
"""Seconds the issue allows the send rate to settle in."""


def policies(hold: float, probe: float | None = 10.0) -> dict[str, Policy]:
    return {
        "adaptive": ConflateByKey(max_messages=4096)
        | Adaptive(interval=0.1, hold=hold, probe=probe),
        "batch": ConflateByKey(max_messages=4096) | Batch(max_messages=1024, max_bytes=65536),
        "adaptive-acks": ConflateByKey(max_messages=4096)
        | Adaptive(interval=0.1, hold=hold, probe=probe),
    }


# -- a slow network: a namespace, a veth pair and a token bucket --------------------------

NAMESPACE = "wsfanout-pacing"
SERVER_LINK = "wsfp-srv"
CLIENT_LINK = "wsfp-cli"
SERVER_ADDRESS = "10.213.0.1"
CLIENT_ADDRESS = "10.213.0.2"
MTU = 1500
FRAME = MTU + 14
"""Bytes the token bucket counts per full segment: the IP packet and its Ethernet header."""
PAYLOAD = MTU - 20 - 32
"""TCP payload per full segment (IPv4 and TCP headers with timestamps)."""


class NetworkError(Exception):
    """The slow network could not be set up: a tool is missing, or a command failed."""


def _run(*command: str, check: bool = True) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as error:
        raise NetworkError(f"cannot run {command[0]}: {error}") from error
    if check and result.returncode:
        raise NetworkError(
            f"`{' '.join(command)}` failed with status {result.returncode}: "
            f"{result.stderr.strip() or result.stdout.strip()}"
        )
    return result.stdout


def network_commands(rate: float, queue: float) -> list[list[str]]:
    """The commands that make the slow link: ``rate`` bytes per second (whole Ethernet
    frames) from the server's side to the client's namespace, with a queue of ``queue``
    seconds at that rate in front of it (packets past it are dropped)."""
    burst = 2 * FRAME
    limit = max(round(rate * queue), 2 * FRAME)
    peer = ["peer", "name", CLIENT_LINK, "mtu", str(MTU)]
    bucket = ["rate", f"{round(rate * 8)}bit", "burst", str(burst), "limit", str(limit)]
    return [
        ["ip", "netns", "add", NAMESPACE],
        ["ip", "link", "add", SERVER_LINK, "mtu", str(MTU), "type", "veth", *peer],
        ["ip", "link", "set", CLIENT_LINK, "netns", NAMESPACE],
        ["ip", "address", "add", f"{SERVER_ADDRESS}/30", "dev", SERVER_LINK],
        ["ip", "link", "set", SERVER_LINK, "up"],
        ["ip", "-n", NAMESPACE, "address", "add", f"{CLIENT_ADDRESS}/30", "dev", CLIENT_LINK],
        ["ip", "-n", NAMESPACE, "link", "set", CLIENT_LINK, "up"],
        ["ip", "-n", NAMESPACE, "link", "set", "lo", "up"],
        ["tc", "qdisc", "add", "dev", SERVER_LINK, "root", "tbf", *bucket],
    ]


def remove_network() -> None:
    """Remove the namespace and the veth pair, whatever is left of them (deleting one
    end of a veth pair deletes both, and the shaper on it)."""
    _run("ip", "netns", "delete", NAMESPACE, check=False)
    _run("ip", "link", "delete", SERVER_LINK, check=False)


@contextlib.contextmanager
def slow_network(rate: float, queue: float) -> Iterator[None]:
    """The slow link for as long as the block runs; removed in any case after it."""
    missing = [tool for tool in ("ip", "tc") if shutil.which(tool) is None]
    if missing:
        raise NetworkError(
            f"--network-rate needs {' and '.join(missing)} (iproute2): not found on PATH"
        )
    if os.geteuid() != 0:
        raise NetworkError("--network-rate needs root: it adds a network namespace")
    remove_network()  # what a killed run may have left
    try:
        for command in network_commands(rate, queue):
            _run(*command)
        yield
    finally:
        remove_network()


def shaper_state() -> tuple[int, int]:
    """Bytes queued in the shaper now, and packets it dropped so far."""
    stats = json.loads(_run("tc", "-s", "-j", "qdisc", "show", "dev", SERVER_LINK))
    root = next(qdisc for qdisc in stats if qdisc.get("root"))
    return int(root.get("backlog", 0)), int(root.get("drops", 0))


# -- the client: a separate process, reading at a capped rate ------------------------------


BURST = 0.1
"""Seconds of reading a throttled client may bank while idle: what it reads at once
after a pause, beyond its rate."""


class Throttled:
    """Reading at ``rate`` bytes per second (0: unthrottled), with at most :data:`BURST`
    seconds of it banked: a reader that is idle for a while cannot then read faster than
    its rate for longer than that (its average since the start is not what it can take)."""

    def __init__(self, rate: float, start: float) -> None:
        self.rate = rate
        self.ready = start

    def took(self, size: int, now: float) -> float:
        """It read ``size`` bytes at ``now``: when it may read again."""
        if self.rate <= 0:
            return now
        self.ready = max(self.ready, now - BURST) + size / self.rate
        return self.ready


async def acking_client(host: str, port: int, read_rate: float, seconds: float) -> None:
    """As :func:`client`, with ``wsfanout.client``: ``wsfanout.v1``, acknowledging what
    the application has taken when the hub asks (docs/protocol.md, "Acknowledgements").
    A frame is taken when the loop asks for the next event, so the throttle's sleep is
    the application being busy."""
    lines = []
    async with Client(f"ws://{host}:{port}", compression=None, heartbeat_timeout=None) as ws:
        start = time.monotonic()
        throttle = Throttled(read_rate, start)
        async for event in ws:
            now = time.monotonic()
            if now - start > seconds:
                break
            if not isinstance(event, Received):
                continue
            data = event.data.encode() if isinstance(event.data, str) else event.data
            stamps = [json.loads(line)["t"] for line in data.split(b"\n")]
            lines.append(json.dumps({"at": now, "bytes": len(data), "stamps": stamps}))
            due = throttle.took(len(data), now)
            if due > now:
                await asyncio.sleep(due - now)
        acks = ws.stats().acks
    sys.stderr.write(f"client: {acks} acknowledgements sent\n")
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()


async def client(host: str, port: int, read_rate: float, seconds: float) -> None:
    """Read for ``seconds``, at most ``read_rate`` bytes per second (0: as fast as it
    can); then print one JSON line per frame read: its time, its size and the publish
    times of what it carried (kept until the end: writing to a pipe nobody reads yet
    would block the reading)."""
    lines = []
    async with connect(f"ws://{host}:{port}", compression=None) as websocket:
        start = time.monotonic()
        read = 0
        throttle = Throttled(read_rate, start)
        with contextlib.suppress(ConnectionClosed):
            async for frame in websocket:
                now = time.monotonic()
                if now - start > seconds:
                    break
                data = frame.encode() if isinstance(frame, str) else frame
                read += len(data)
                stamps = [json.loads(line)["t"] for line in data.split(b"\n")]
                lines.append(json.dumps({"at": now, "bytes": len(data), "stamps": stamps}))
                due = throttle.took(len(data), now)
                if due > now:
                    await asyncio.sleep(due - now)
    sys.stdout.write("".join(line + "\n" for line in lines))
    sys.stdout.flush()


# -- the server: a hub, a publisher, counters ----------------------------------------------


class Counted:
    """Counts what the hub wrote to one connection, per second: through the transport's
    write, and the system calls wsfanout makes itself on the socket while the transport
    buffers nothing (``os.write`` in ``_shell.fanout`` and ``_shell.sockets``)."""

    def __init__(self, transport: asyncio.Transport, start: float) -> None:
        self.transport = transport
        self.start = start
        self.written: dict[int, int] = {}
        self.write = transport.write
        transport.write = self.counting  # type: ignore[method-assign]
        self.fd = transport.get_extra_info("socket").fileno()
        self.modules = (fanout_module, sockets_module)
        self.os_write = os.write
        for module in self.modules:
            module.write = self.counting_os_write  # type: ignore[attr-defined]

    def count(self, size: int) -> None:
        second = int(time.monotonic() - self.start)
        self.written[second] = self.written.get(second, 0) + size

    def counting(self, data: bytes | bytearray | memoryview) -> None:
        self.count(len(data))
        self.write(data)

    def counting_os_write(self, fd: int, data: bytes | memoryview) -> int:
        sent = self.os_write(fd, data)
        if fd == self.fd:
            self.count(sent)
        return sent

    def restore(self) -> None:
        for module in self.modules:
            module.write = self.os_write  # type: ignore[attr-defined]


async def run_case(name: str, policy: Policy, args: argparse.Namespace) -> dict[str, Any]:
    hub = Hub()
    connected: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()
    samples: list[tuple[float, float | None, int]] = []
    shaper: list[tuple[float, int, int]] = []
    congestion: list[str] = []
    network = args.network_rate is not None
    host = SERVER_ADDRESS if network else "127.0.0.1"
    acks = name.endswith("-acks")

    async def handler(websocket: ServerConnection) -> None:
        sock = websocket.transport.get_extra_info("socket")
        if args.notsent_lowat:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, args.notsent_lowat)
        if args.congestion:
            sock.setsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, args.congestion.encode())
        congestion.append(
            sock.getsockopt(socket.IPPROTO_TCP, TCP_CONGESTION, 16).rstrip(b"\0").decode()
        )
        if acks:
            asyncio.get_running_loop().call_soon(connected.set_result, websocket)
            await hub.serve(websocket, policy=policy)
            return
        async with hub.subscribe(websocket, policy=policy):
            if not connected.done():
                connected.set_result(websocket)
            with contextlib.suppress(ConnectionClosed):
                async for _ in websocket:
                    pass

    async def watch_shaper() -> None:
        while True:
            backlog, drops = await asyncio.to_thread(shaper_state)
            shaper.append((time.monotonic() - start, backlog, drops))
            await asyncio.sleep(0.25)

    async with serve(
        handler, host, 0, compression=None, select_subprotocol=select_subprotocol
    ) as server:
        port = server.sockets[0].getsockname()[1]
        prefix = ["ip", "netns", "exec", NAMESPACE] if network else []
        proc = await asyncio.create_subprocess_exec(
            *prefix,
            sys.executable,
            "-m",
            "benchmarks.pacing",
            "--client",
            str(port),
            "--host",
            host,
            "--read",
            "0" if network else str(args.read),
            "--seconds",
            str(args.seconds),
            *(["--acks"] if acks else []),
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        websocket = await asyncio.wait_for(connected, 30)
        start = time.monotonic()
        counted = Counted(websocket.transport, start)
        watcher = asyncio.create_task(watch_shaper()) if network else None
        subscriber = hub.subscribers[0]
        per_tick = max(1, round(args.rate * TICK / args.size))
        padding = "x" * max(0, args.size - 60)
        sequence = 0
        next_tick = start
        while time.monotonic() - start < args.seconds and not subscriber.closed:
            for _ in range(per_tick):
                key = f"k{sequence % args.keys}"
                hub.publish(json.dumps({"k": key, "t": time.monotonic(), "p": padding}), key=key)
                sequence += 1
            stats = subscriber.stats()
            # With acknowledgements, the rate the client's application takes is what
            # the policy paces to; else the write buffer's drain rate.
            rate = stats.ack_rate if stats.ack_rate is not None else stats.drain_rate
            samples.append((time.monotonic() - start, rate, stats.level))
            next_tick += TICK
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        final = subscriber.stats()
        counted.restore()
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        output, _ = await proc.communicate()
        await hub.aclose(timeout=1.0)
    frames = [json.loads(line) for line in output.decode().splitlines() if line]
    result = summarize(name, policy, args, start, counted.written, samples, frames, final)
    result["congestion"] = congestion[0] if congestion else None
    add_shaper(result, shaper)
    return result


def add_shaper(result: dict[str, Any], shaper: list[tuple[float, int, int]]) -> None:
    """Add to each row the most bytes the shaper held in that second, and the packets
    it dropped in all."""
    for row in result["rows"]:
        held = [backlog for t, backlog, _ in shaper if row["t"] <= t < row["t"] + 1]
        row["shaper"] = max(held) / 1000 if held else None
    result["shaper_drops"] = shaper[-1][2] if shaper else None


def reference_rate(args: argparse.Namespace) -> float:
    """The reader's real pace, bytes per second: its reading rate, or with a slow
    network the link's TCP payload rate (the rate less the headers of full segments)."""
    if args.network_rate is not None:
        return float(args.network_rate * PAYLOAD / FRAME)
    return float(args.read)


def percentile(values: Sequence[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summarize(
    name: str,
    policy: Policy,
    args: argparse.Namespace,
    start: float,
    written: dict[int, int],
    samples: list[tuple[float, float | None, int]],
    frames: list[dict[str, Any]],
    final: Any,
) -> dict[str, Any]:
    seconds = int(args.seconds)
    read: dict[int, int] = {}
    ages: dict[int, list[float]] = {}
    for frame in frames:
        second = int(frame["at"] - start)
        read[second] = read.get(second, 0) + frame["bytes"]
        ages.setdefault(second, []).extend(frame["at"] - stamp for stamp in frame["stamps"])
    rows = []
    for second in range(seconds):
        in_second = [s for s in samples if second <= s[0] < second + 1]
        drain = in_second[-1][1] if in_second else None
        level = in_second[-1][2] if in_second else 0
        rows.append(
            {
                "t": second,
                "written": written.get(second, 0) / 1000,
                "drain": None if drain is None else drain / 1000,
                "read": read.get(second, 0) / 1000,
                "level": level,
                "p99_age": percentile(ages.get(second, []), 0.99),
            }
        )

    def within(row: dict[str, Any], reference: float | None) -> bool:
        return reference is not None and abs(row["written"] - reference) <= 0.2 * reference

    def settled(reference: Any) -> int | None:
        for first in range(seconds):
            if all(within(row, reference(row)) for row in rows[first:]):
                return first
        return None

    settle_drain = settled(lambda row: row["drain"])
    reading = reference_rate(args)
    settle_read = settled(lambda row: reading / 1000)
    levels = [(t, level) for t, _, level in samples]
    changes = [t for (_, before), (t, level) in itertools.pairwise(levels) if level != before]
    gaps = [b - a for a, b in itertools.pairwise(changes)]
    after = settle_read if settle_read is not None else seconds
    all_ages = [age for second in range(seconds) for age in ages.get(second, [])]
    late_ages = [age for second in range(after, seconds) for age in ages.get(second, [])]
    # The deadline for settling: how the rest of the run does after it.
    target_ages = [age for second in range(SETTLE, seconds) for age in ages.get(second, [])]
    on_pace = sum(within(row, reading / 1000) for row in rows[SETTLE:])
    return {
        "case": name,
        "policy": repr(policy),
        "limited_by": "network" if args.network_rate is not None else "reading",
        "reference_rate": reading,
        "rows": rows,
        "settled_on_drain": settle_drain,
        "settled_on_read": settle_read,
        "p99_age": percentile(all_ages, 0.99),
        "p99_age_settled": percentile(late_ages, 0.99),
        "p50_age_settled": percentile(late_ages, 0.5),
        "p99_age_from_settle": percentile(target_ages, 0.99),
        "seconds_on_pace_from_settle": on_pace,
        "steps": final.steps_up + final.steps_down,
        "min_step_gap": min(gaps) if gaps else None,
        "frames": final.frames,
        "sent": final.sent,
        "conflated": final.conflated,
    }


def report(result: dict[str, Any], hold: float) -> None:
    network = result["limited_by"] == "network"
    print(f"\n== {result['case']}: {result['policy']}")
    if network:
        print(
            f"limited by the network: {result['reference_rate'] / 1000:.1f} kB/s of TCP "
            f"payload, congestion control {result['congestion']}, "
            f"{result['shaper_drops']} packets dropped by the shaper"
        )
    print(
        f"{'t':>3} {'written kB/s':>12} {'drain kB/s':>10} {'read kB/s':>9} {'level':>5} "
        f"{'p99 age':>8}" + (f" {'shaper kB':>9}" if network else "")
    )
    for row in result["rows"]:
        drain = "-" if row["drain"] is None else f"{row['drain']:.1f}"
        shaper = (
            ""
            if not network
            else " " + (f"{'-':>9}" if row["shaper"] is None else f"{row['shaper']:>9.1f}")
        )
        print(
            f"{row['t']:>3} {row['written']:>12.1f} {drain:>10} {row['read']:>9.1f} "
            f"{row['level']:>5} {row['p99_age']:>7.3f}s{shaper}"
        )
    gap = result["min_step_gap"]
    reader = "the link's payload rate" if network else "the client's reading rate"
    print(
        f"settled within 20% of the drain rate from t={result['settled_on_drain']}, "
        f"of {reader} from t={result['settled_on_read']}; "
        f"p99 age {result['p99_age']:.3f}s overall, {result['p99_age_settled']:.3f}s "
        f"(p50 {result['p50_age_settled']:.3f}s) once settled; {result['steps']} steps, "
        f"shortest gap {'-' if gap is None else f'{gap:.2f}s'} (hold {hold}s); "
        f"{result['sent']} messages in {result['frames']} frames, "
        f"{result['conflated']} conflated"
    )
    print(
        f"from t={SETTLE}: p99 age {result['p99_age_from_settle']:.3f}s, "
        f"{result['seconds_on_pace_from_settle']} of {len(result['rows']) - SETTLE} seconds "
        f"within 20% of {reader}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=200_000, help="bytes published per second")
    parser.add_argument(
        "--read", type=float, default=50_000, help="bytes the client reads per second"
    )
    parser.add_argument("--size", type=int, default=200, help="bytes per message")
    parser.add_argument("--keys", type=int, default=100, help="distinct keys")
    parser.add_argument("--seconds", type=float, default=20.0, help="seconds per case")
    parser.add_argument("--hold", type=float, default=1.0, help="Adaptive's hold")
    parser.add_argument(
        "--probe", type=float, default=10.0, help="Adaptive's probe (0: never probe)"
    )
    parser.add_argument("--notsent-lowat", type=int, default=0, metavar="BYTES")
    parser.add_argument(
        "--network-rate",
        type=float,
        metavar="BYTES",
        help="slow the network to BYTES per second instead of the reading (needs root)",
    )
    parser.add_argument(
        "--network-queue",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="the slow link's queue, in seconds at its rate",
    )
    parser.add_argument(
        "--congestion", metavar="NAME", help="TCP_CONGESTION on the server's socket"
    )
    parser.add_argument("--case", action="append", choices=["adaptive", "batch", "adaptive-acks"])
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--acks", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client is not None:
        run = acking_client if args.acks else client
        asyncio.run(run(args.host, args.client, args.read, args.seconds))
        return 0
    if args.network_rate is not None and not args.network_rate > 0:
        parser.error(f"--network-rate must be > 0, not {args.network_rate!r}")
    if not args.network_queue > 0:
        parser.error(f"--network-queue must be > 0, not {args.network_queue!r}")
    results = []
    try:
        with contextlib.ExitStack() as stack:
            if args.network_rate is not None:
                stack.enter_context(slow_network(args.network_rate, args.network_queue))
            for name, policy in policies(args.hold, args.probe or None).items():
                if args.case and name not in args.case:
                    continue
                results.append(asyncio.run(run_case(name, policy, args)))
                if not args.json:
                    report(results[-1], args.hold)
    except NetworkError as error:  # setting the link up, or reading its shaper
        print(f"pacing: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
