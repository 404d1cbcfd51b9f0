"""10,000 clients on one hub: ``python -m benchmarks.scale [--quick]`` (``make bench-scale``).

One ``wsfanout.Hub`` (default policy, default socket options, compression off) in a
server process publishes 1 KiB messages at 10 per second to 10,000 connected clients
of a load generator (raw sockets in one epoll loop) in a process of their own, for a
minute: ``benchmarks/loadgen.c`` by default (built with ``make loadgen``, which this
runs), or ``--loadgen python`` for ``benchmarks.loadgen``, which needs most of a core
at 10,000 clients, a core the hub then lacks on a small machine. Both processes raise
their file-descriptor limit to the hard limit themselves; the run stops at once, naming
the limit, if that is too low.

What it reports: publish-to-receive latency (p50, p99, max) over every record every
client received; whether every client received every message in order; the server's
CPU per delivery; the RSS the connections added, per connection (websockets' connection
plus wsfanout's subscriber, as the process's resident memory grew while they
connected: allocator slack included, kernel socket buffers not); and the server's RSS
sampled every few seconds while it publishes, to show whether it stays flat.

``--quick`` runs 500 clients for 3 s (a smoke test). The exit status is 1 if a client
missed a message or got one out of order, 2 if the run could not be set up.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import os
import resource
import subprocess
import sys
import time
from array import array
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from websockets.asyncio.server import ServerConnection, serve

from wsfanout import Hub

from .payload import Payloads
from .run import RESULTS, ROOT, Child, machine
from .server import percentiles, read_line, rss, serve_kwargs

SPARE_FDS = 64
"""Descriptors a process needs beyond one per connection (stdio, epoll, listener...)."""

FLAT_MB = 1.0
"""RSS growth over the second half of the publishing below which the server is flat."""

LATENCY_TARGET_MS = 100.0

LOADGEN_C = ROOT / "build" / "loadgen"
"""The C load generator, built from ``benchmarks/loadgen.c`` by ``make loadgen``."""


def build_loadgen() -> Path:
    """Build the C load generator if its source changed (``make loadgen``); return its path.

    Raises ``SystemExit`` with make's output if it cannot be built.
    """
    done = subprocess.run(
        ["make", "--no-print-directory", "loadgen"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0 or not LOADGEN_C.exists():
        raise SystemExit(f"make loadgen failed: {(done.stdout + done.stderr).strip()[-2000:]}")
    return LOADGEN_C


def loadgen_command(kind: str) -> list[str]:
    """The command that starts the ``kind`` load generator (``c`` or ``python``)."""
    if kind == "c":
        return [str(build_loadgen())]
    if kind == "python":
        return [sys.executable, "-m", "benchmarks.loadgen"]
    raise SystemExit(f"--loadgen={kind!r} is not c or python")


def slab_bytes() -> int | None:
    """The kernel's slab memory, machine-wide (``Slab:`` of /proc/meminfo), if readable."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("Slab:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def raise_fd_limit(needed: int) -> dict[str, int]:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; return both, before and after.

    Raises ``SystemExit`` naming the limit if the hard limit is below ``needed``.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        raise SystemExit(
            f"RLIMIT_NOFILE: hard limit {hard} < {needed} descriptors needed "
            "(raise it as root: ulimit -Hn, or LimitNOFILE= for a service)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return {"soft_before": soft, "hard": hard, "soft_after": hard, "needed": needed}


# -- the server process -----------------------------------------------------------------


async def serve_hub(args: argparse.Namespace, limits: dict[str, int]) -> None:
    """Serve ``args.clients`` connections through one hub, publish, print what was
    measured, and wait for the driver's ``exit``."""
    loop = asyncio.get_running_loop()
    hub = Hub()

    async def handler(ws: ServerConnection) -> None:
        await hub.serve(ws)

    server = await serve(handler, "127.0.0.1", 0, **serve_kwargs("off"))
    port = server.sockets[0].getsockname()[1]
    gc.collect()
    rss_listening = rss()
    print(json.dumps({"event": "listening", "port": port}), flush=True)

    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await read_line(reader, "go", timeout=600)
    async with asyncio.timeout(120):
        # The hub counts a subscriber once serve() has registered it; nothing to await.
        while len(hub) < args.clients:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    gc.collect()
    rss_connected = rss()

    payloads = Payloads(args.size)
    timings = array("q")
    samples: list[tuple[float, int, float]] = []
    published = 0
    interval = 1 / args.rate

    async def sample() -> None:
        start = loop.time()
        while True:
            samples.append((loop.time() - start, rss(), time.process_time()))
            await asyncio.sleep(args.sample)

    async def publisher() -> None:
        nonlocal published
        perf = time.perf_counter_ns
        deadline = loop.time() + args.duration
        next_at = loop.time()
        while loop.time() < deadline:
            text = payloads.make(published)
            t0 = perf()
            hub.publish(text)
            timings.append(perf() - t0)
            published += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    sampler = asyncio.create_task(sample())
    cpu0, wall0 = time.process_time(), time.perf_counter()
    usage0 = resource.getrusage(resource.RUSAGE_SELF)
    await publisher()
    await asyncio.sleep(args.settle)  # the last message's deliveries are in its CPU time
    cpu = time.process_time() - cpu0
    usage1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter() - wall0
    sampler.cancel()
    stats = hub.stats()
    result = {
        "event": "result",
        "connected": len(hub),
        "published": published,
        "expected_published": round(args.duration * args.rate),
        "cpu_s": cpu,
        "user_s": usage1.ru_utime - usage0.ru_utime,
        "system_s": usage1.ru_stime - usage0.ru_stime,
        "wall_s": wall,
        "publish_us": percentiles(timings),
        "rss_listening": rss_listening,
        "rss_connected": rss_connected,
        "rss_samples": [(t, r, c - cpu0) for t, r, c in samples],
        "rss_end": rss(),
        "fd_limit": limits,
        "stats": {
            "sent": stats.sent,
            "frames": stats.frames,
            "dropped": stats.dropped,
            "closed_by_policy": stats.closed_by_policy,
        },
    }
    print(json.dumps(result), flush=True)
    # Stay up until the load generator has its result: a process that exits closes
    # every connection, which the load generator would count as closed by the server.
    await reader.readline()


def server_main(args: argparse.Namespace) -> None:
    limits = raise_fd_limit(args.clients + SPARE_FDS)
    with asyncio.Runner() as runner:
        runner.run(serve_hub(args, limits))
        os._exit(0)  # do not wait for ten thousand connections to close


# -- the judgement, pure -----------------------------------------------------------------


def delivery_problems(loaded: dict[str, Any], clients: int, published: int) -> list[str]:
    """What went wrong for the clients, from the load generator's result (empty: every
    one of ``clients`` received all ``published`` messages, in order, and stayed)."""
    problems = []
    if loaded["healthy"] != clients:
        problems.append(f"{loaded['healthy']} clients connected, {clients} expected")
    if published <= 0:
        problems.append("nothing was published")
    if loaded["records_min"] != published or loaded["records_max"] != published:
        problems.append(
            f"records per client from {loaded['records_min']} to {loaded['records_max']}, "
            f"{published} published"
        )
    if loaded["out_of_order"]:
        problems.append(f"{loaded['out_of_order']} records out of order")
    if loaded["closed"]:
        problems.append(f"{loaded['closed']} connections closed by the server")
    return problems


def memory_trend(
    samples: Sequence[Sequence[float]], duration: float
) -> dict[str, float | bool | None]:
    """The server's RSS at the start, halfway and at the end of the publishing (MB),
    and whether it was flat over the second half (growth below ``FLAT_MB``)."""
    during = [s for s in samples if s[0] <= duration + 1e-6]
    if len(during) < 3:
        return {"start_mb": None, "mid_mb": None, "end_mb": None, "flat": None}
    mid = min(during, key=lambda s: abs(s[0] - duration / 2))
    start, end = during[0][1] / 2**20, during[-1][1] / 2**20
    return {
        "start_mb": start,
        "mid_mb": mid[1] / 2**20,
        "end_mb": end,
        "growth_mb": end - start,
        "second_half_growth_mb": end - mid[1] / 2**20,
        "flat": end - mid[1] / 2**20 < FLAT_MB,
    }


def summarise(
    args: argparse.Namespace, served: dict[str, Any], loaded: dict[str, Any]
) -> dict[str, Any]:
    published = served["published"]
    deliveries = published * served["connected"]
    latency = loaded["latency_ms"]
    return {
        "clients": args.clients,
        "loadgen": args.loadgen,
        "rate": args.rate,
        "size": args.size,
        "duration": args.duration,
        "published": published,
        "published_ratio": published / served["expected_published"],
        "problems": delivery_problems(loaded, args.clients, published),
        "latency_ms": latency,
        "latency_target_met": latency["p99"] is not None and latency["p99"] <= LATENCY_TARGET_MS,
        "cpu_us_per_delivery": served["cpu_s"] / deliveries * 1e6 if deliveries else None,
        "user_us_per_delivery": served["user_s"] / deliveries * 1e6 if deliveries else None,
        "system_us_per_delivery": served["system_s"] / deliveries * 1e6 if deliveries else None,
        "server_cpu_pct": 100 * served["cpu_s"] / served["wall_s"],
        "loadgen_cpu_pct": 100 * loaded["cpu_s"] / loaded["wall_s"],
        # Only the C generator splits its CPU time (the rest of it is in the kernel).
        "loadgen_user_pct": 100 * loaded["user_s"] / loaded["wall_s"]
        if "user_s" in loaded
        else None,
        "publish_us": served["publish_us"],
        "rss_listening_mb": served["rss_listening"] / 2**20,
        "rss_connected_mb": served["rss_connected"] / 2**20,
        "rss_bytes_per_connection": (served["rss_connected"] - served["rss_listening"])
        / args.clients,
        "memory": memory_trend(served["rss_samples"], args.duration),
        "rss_samples": served["rss_samples"],
        "connect_s": loaded.get("connect_s"),
        "fd_limit": served["fd_limit"],
        "server_stats": served["stats"],
    }


def report(summary: dict[str, Any]) -> str:
    """The summary as text: the figures, then the RSS series."""
    s = summary
    lat, mem = s["latency_ms"], s["memory"]
    limits = s["fd_limit"]

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    lines = [
        f"### scale: {s['clients']} clients, {s['size']} B, {s['rate']:g} msg/s, "
        f"{s['duration']:g} s, one Hub, default policy, {s['loadgen']} load generator",
        "",
        "delivery: "
        + (
            "FAILED: " + "; ".join(s["problems"])
            if s["problems"]
            else "every client received every message in order"
        ),
        f"published: {s['published']} ({s['published_ratio']:.2f} of the schedule)",
        f"latency publish->receive: p50 {ms(lat['p50'])} ms, p99 {ms(lat['p99'])} ms, "
        f"max {ms(lat['max'])} ms (target p99 <= {LATENCY_TARGET_MS:g} ms: "
        f"{'met' if s['latency_target_met'] else 'NOT met'})",
        f"server CPU per delivery: {s['cpu_us_per_delivery']:.2f} µs "
        f"(user {s['user_us_per_delivery']:.2f}, system {s['system_us_per_delivery']:.2f}); "
        f"server {s['server_cpu_pct']:.0f}% of a core, load generator "
        f"{s['loadgen_cpu_pct']:.0f}% ({s['loadgen']}"
        + ("" if s["loadgen_user_pct"] is None else f", {s['loadgen_user_pct']:.0f}% in user space")
        + ")",
        f"publish() call: p50 {s['publish_us']['p50']:.0f} µs, p99 {s['publish_us']['p99']:.0f} µs",
        f"memory per idle connection (server RSS delta while they connected): "
        f"{s['rss_bytes_per_connection']:.0f} B "
        f"(RSS {s['rss_listening_mb']:.1f} MB listening, {s['rss_connected_mb']:.1f} MB connected)",
        "kernel slab growth per socket while connecting (machine-wide, two sockets per "
        "connection on loopback): "
        + (
            "-" if s.get("slab_bytes_per_socket") is None else f"{s['slab_bytes_per_socket']:.0f} B"
        ),
        f"server RSS while publishing: {mem['start_mb']:.1f} -> {mem['mid_mb']:.1f} -> "
        f"{mem['end_mb']:.1f} MB (second half {mem['second_half_growth_mb']:+.2f} MB: "
        f"{'flat' if mem['flat'] else 'NOT flat'}, threshold {FLAT_MB:g} MB)"
        if mem["flat"] is not None
        else "server RSS while publishing: too few samples",
        f"descriptors: soft limit {limits['soft_before']} raised to the hard limit "
        f"{limits['hard']}, {limits['needed']} needed per process",
        f"connecting took {s['connect_s']:.1f} s",
        "",
        "RSS samples (s, MB, server CPU s since the first publish):",
        "  " + ", ".join(f"{t:.1f}s {r / 2**20:.1f}MB {c:.2f}" for t, r, c in s["rss_samples"]),
    ]
    return "\n".join(lines)


# -- the driver ---------------------------------------------------------------------------


def drive(args: argparse.Namespace) -> dict[str, Any]:
    """Run one server and one load generator; return the summary."""
    py = sys.executable
    loadgen = loadgen_command(args.loadgen)
    common = ["--clients", str(args.clients), "--size", str(args.size)]
    server = Child(
        [
            py,
            "-m",
            "benchmarks.scale",
            "--serve",
            *common,
            "--rate",
            str(args.rate),
            "--duration",
            str(args.duration),
            "--sample",
            str(args.sample),
            "--settle",
            str(args.settle),
        ]
    )
    gen: Child | None = None
    try:
        port = server.receive(timeout=30)["port"]
        started, slab0 = time.monotonic(), slab_bytes()
        gen = Child([*loadgen, "--port", str(port), *common])
        gen.receive(timeout=60 + args.clients / 50)
        connect_s, slab1 = time.monotonic() - started, slab_bytes()
        gen.send("go")
        server.send("go")
        served = server.receive(timeout=180 + args.duration)
        gen.send("stop")
        loaded = gen.receive(timeout=300)  # sorting millions of latencies takes seconds
        server.send("exit")
    finally:
        server.close()
        if gen is not None:
            gen.close()
    loaded["connect_s"] = connect_s
    summary = summarise(args, served, loaded)
    # Both ends of every connection live on this machine, hence two sockets each.
    summary["slab_bytes_per_socket"] = (
        (slab1 - slab0) / (2 * args.clients) if slab0 is not None and slab1 is not None else None
    )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="500 clients, 3 s")
    parser.add_argument("--clients", type=int, help="connected clients (10000)")
    parser.add_argument("--duration", type=float, help="publishing seconds (60)")
    parser.add_argument("--rate", type=float, default=10.0, help="messages per second")
    parser.add_argument("--size", type=int, default=1024, help="bytes per message")
    parser.add_argument("--sample", type=float, help="seconds between RSS samples (5)")
    parser.add_argument("--settle", type=float, default=1.0, help="seconds after the last")
    parser.add_argument("--out", type=Path, help="JSON output path")
    parser.add_argument(
        "--loadgen", choices=("c", "python"), default="c", help="load generator (c)"
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.clients = args.clients or (500 if args.quick else 10_000)
    args.duration = args.duration or (3.0 if args.quick else 60.0)
    args.sample = args.sample or (0.5 if args.quick else 5.0)
    if args.serve:
        server_main(args)
        return 0
    load_before = os.getloadavg()
    try:
        # The load generator raises its own limit the same way; check for both here.
        raise_fd_limit(args.clients + SPARE_FDS)
        summary = drive(args)
    except (SystemExit, TimeoutError, RuntimeError) as exc:
        print(f"scale: {exc}", file=sys.stderr)
        return 2
    summary["command"] = " ".join(["python -m benchmarks.scale", *(argv or sys.argv[1:])])
    summary["machine"] = machine()
    # The machine may be shared: its load says how much of the wall-clock figures
    # (latency, publish time) is other work.
    summary["load_average"] = {"before": load_before, "after": os.getloadavg()}
    print(report(summary), flush=True)
    print("load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}".format(*load_before))
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS / f"{stamp}-scale-{args.clients}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))
    print(f"results: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
