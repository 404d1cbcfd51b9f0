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
before and after, and the shortest time between two steps against the hold.

``--notsent-lowat BYTES`` sets ``TCP_NOTSENT_LOWAT`` on the server's socket before it
subscribes; the hub sets it too, to 16384 by default (``Hub(notsent_lowat=...)``):
without it the kernel takes megabytes before the write buffer, which the hub
measures, holds anything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from wsfanout import Hub, Policy
from wsfanout._shell import fanout as fanout_module
from wsfanout._shell import sockets as sockets_module
from wsfanout.policies import Adaptive, Batch, ConflateByKey

TCP_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", 25)
ROOT = Path(__file__).resolve().parent.parent
TICK = 0.02
"""Seconds between publishing bursts."""


def policies(hold: float, probe: float | None = 10.0) -> dict[str, Policy]:
    return {
        "adaptive": ConflateByKey(max_messages=4096)
        | Adaptive(interval=0.1, hold=hold, probe=probe),
        "batch": ConflateByKey(max_messages=4096) | Batch(max_messages=1024, max_bytes=65536),
    }


# -- the client: a separate process, reading at a capped rate ------------------------------


async def client(port: int, read_rate: float, seconds: float) -> None:
    """Read for ``seconds``, at most ``read_rate`` bytes per second; then print one JSON
    line per frame read: its time, its size and the publish times of what it carried
    (kept until the end: writing to a pipe nobody reads yet would block the reading)."""
    lines = []
    async with connect(f"ws://127.0.0.1:{port}", compression=None) as websocket:
        start = time.monotonic()
        read = 0
        with contextlib.suppress(ConnectionClosed):
            async for frame in websocket:
                now = time.monotonic()
                if now - start > seconds:
                    break
                data = frame.encode() if isinstance(frame, str) else frame
                read += len(data)
                stamps = [json.loads(line)["t"] for line in data.split(b"\n")]
                lines.append(json.dumps({"at": now, "bytes": len(data), "stamps": stamps}))
                # Throttled reading: the next read waits until the average is back
                # under read_rate.
                due = start + read / read_rate
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

    async def handler(websocket: ServerConnection) -> None:
        if args.notsent_lowat:
            sock = websocket.transport.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, TCP_NOTSENT_LOWAT, args.notsent_lowat)
        async with hub.subscribe(websocket, policy=policy):
            if not connected.done():
                connected.set_result(websocket)
            with contextlib.suppress(ConnectionClosed):
                async for _ in websocket:
                    pass

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "benchmarks.pacing",
            "--client",
            str(port),
            "--read",
            str(args.read),
            "--seconds",
            str(args.seconds),
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        websocket = await asyncio.wait_for(connected, 30)
        start = time.monotonic()
        counted = Counted(websocket.transport, start)
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
            samples.append((time.monotonic() - start, stats.drain_rate, stats.level))
            next_tick += TICK
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
        final = subscriber.stats()
        counted.restore()
        output, _ = await proc.communicate()
        await hub.aclose(timeout=1.0)
    frames = [json.loads(line) for line in output.decode().splitlines() if line]
    return summarize(name, policy, args, start, counted.written, samples, frames, final)


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
    settle_read = settled(lambda row: args.read / 1000)
    levels = [(t, level) for t, _, level in samples]
    changes = [t for (_, before), (t, level) in itertools.pairwise(levels) if level != before]
    gaps = [b - a for a, b in itertools.pairwise(changes)]
    after = settle_read if settle_read is not None else seconds
    all_ages = [age for second in range(seconds) for age in ages.get(second, [])]
    late_ages = [age for second in range(after, seconds) for age in ages.get(second, [])]
    return {
        "case": name,
        "policy": repr(policy),
        "rows": rows,
        "settled_on_drain": settle_drain,
        "settled_on_read": settle_read,
        "p99_age": percentile(all_ages, 0.99),
        "p99_age_settled": percentile(late_ages, 0.99),
        "p50_age_settled": percentile(late_ages, 0.5),
        "steps": final.steps_up + final.steps_down,
        "min_step_gap": min(gaps) if gaps else None,
        "frames": final.frames,
        "sent": final.sent,
        "conflated": final.conflated,
    }


def report(result: dict[str, Any], hold: float) -> None:
    print(f"\n== {result['case']}: {result['policy']}")
    print(
        f"{'t':>3} {'written kB/s':>12} {'drain kB/s':>10} {'read kB/s':>9} {'level':>5} "
        f"{'p99 age':>8}"
    )
    for row in result["rows"]:
        drain = "-" if row["drain"] is None else f"{row['drain']:.1f}"
        print(
            f"{row['t']:>3} {row['written']:>12.1f} {drain:>10} {row['read']:>9.1f} "
            f"{row['level']:>5} {row['p99_age']:>7.3f}s"
        )
    gap = result["min_step_gap"]
    print(
        f"settled within 20% of the drain rate from t={result['settled_on_drain']}, "
        f"of the client's reading rate from t={result['settled_on_read']}; "
        f"p99 age {result['p99_age']:.3f}s overall, {result['p99_age_settled']:.3f}s "
        f"(p50 {result['p50_age_settled']:.3f}s) once settled; {result['steps']} steps, "
        f"shortest gap {'-' if gap is None else f'{gap:.2f}s'} (hold {hold}s); "
        f"{result['sent']} messages in {result['frames']} frames, "
        f"{result['conflated']} conflated"
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
    parser.add_argument("--case", action="append", choices=["adaptive", "batch"])
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client is not None:
        asyncio.run(client(args.client, args.read, args.seconds))
        return 0
    results = []
    for name, policy in policies(args.hold, args.probe or None).items():
        if args.case and name not in args.case:
            continue
        results.append(asyncio.run(run_case(name, policy, args)))
        if not args.json:
            report(results[-1], args.hold)
    if args.json:
        print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
