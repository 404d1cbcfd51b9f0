"""Does the backplane hold its rate? A publisher at a steady rate through Redis, a receiver.

Run with ``make bench-redis-rate`` (``ARGS="--rate 50000 --seconds 60"``; ``--help``).
Three processes beside redis-server: a publisher (a hub with a Redis backplane and no
subscribers, publishing ``--rate`` messages of ``--size`` bytes per second, paced every
10 ms, round-robin over ``--topics`` topics), a receiver (another hub on the same Redis,
whose subscribers take none of those topics, so its backplane skips them without
decoding; ``--mode decode`` gives it a history window instead, so every message is
decoded and kept), and this driver, which samples once a second Redis' output buffer
for each subscribed connection (``CLIENT LIST``: ``omem``, what Redis holds for a reader
that is behind; at 32 MB by default Redis closes the connection), both hubs' health
(received, lag, reconnects, lost) and Redis' count of connections it closed for their
output buffer (``INFO stats``). The publisher's own backplane receives every message
too (every hub subscribes to the namespace), so it is a second receiver.

A second part, in this process, times the receiver's path for a message of a topic
without local subscribers (``_on_payload`` with the skip) against a full decode, per
message, over a million calls.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import attrs
import redis.asyncio as aredis

from wsfanout import History, Hub
from wsfanout._backplane.envelope import STREAM, decode, encode_head
from wsfanout.backplane import RedisBackplane

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from benchmarks.redis_scaling import redis_server
else:
    from .redis_scaling import redis_server

GUARD = 60.0


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def hub_process(role: str, url: str, args: argparse.Namespace, pipe: Connection) -> None:
    history = History(max_messages=1000) if role == "receiver" and args.mode == "decode" else None
    backplane = RedisBackplane(url, hub_id=role, history=history)
    hub = Hub(backplane=backplane)
    await backplane.start()
    await backplane.wait_for(lambda h: h.connected, timeout=GUARD)
    pipe.send("ready")
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def stopped() -> None:
        if not stop.done():
            stop.set_result(None)

    loop.add_reader(pipe.fileno(), stopped)

    async def report() -> None:
        while not stop.done():
            pipe.send(attrs.asdict(backplane.health()))
            await asyncio.wait([stop], timeout=1.0)

    reporter = loop.create_task(report())
    if role == "publisher":
        payload = "x" * args.size
        topics = [f"t{n}" for n in range(args.topics)]
        per_tick = args.rate // 100
        start = loop.time()
        sent = 0
        while not stop.done() and loop.time() - start < args.seconds:
            due = int((loop.time() - start) * args.rate)
            while sent < due:
                batch = min(due - sent, per_tick * 4)
                for _ in range(batch):
                    hub.publish(payload, topic=topics[sent % len(topics)])
                    sent += 1
                await asyncio.sleep(0)
            await asyncio.wait([stop], timeout=0.01)
    await stop
    await reporter
    pipe.send(attrs.asdict(backplane.health()))
    await hub.aclose()


def hub_main(role: str, url: str, args: argparse.Namespace, pipe: Connection) -> None:
    asyncio.run(hub_process(role, url, args, pipe))


async def sample(client: aredis.Redis) -> dict[str, int]:
    """omem of each hub's subscribed connection, and Redis' output-buffer closes."""
    found: dict[str, int] = {}
    for entry in await client.client_list():
        name = entry.get("name", "")
        if name.startswith("wsfanout-sub:") and entry.get("psub") == "1":
            found[name.removeprefix("wsfanout-sub:")] = int(entry["omem"])
    stats = await client.info("stats")
    found["closed_for_buffer"] = int(stats.get("client_output_buffer_limit_disconnections", -1))
    return found


async def sustained(args: argparse.Namespace) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    with redis_server() as (url, redis_pid):
        pipes: dict[str, Connection] = {}
        processes = {}
        for role in ("receiver", "publisher"):
            ours, theirs = ctx.Pipe()
            process = ctx.Process(target=hub_main, args=(role, url, args, theirs), daemon=True)
            process.start()
            pipes[role], processes[role] = ours, process
            assert ours.poll(GUARD), f"{role} did not start"
            assert ours.recv() == "ready"
        admin = aredis.Redis.from_url(url)
        last: dict[str, dict[str, Any]] = {}
        peak_omem = {"receiver": 0, "publisher": 0}
        peak_lag = {"receiver": 0.0, "publisher": 0.0}
        cpu0 = {role: cpu_seconds(p.pid) for role, p in processes.items() if p.pid}
        cpu0["redis"] = cpu_seconds(redis_pid)
        start = time.monotonic()
        print(
            f"{'s':>3} {'published/s':>12} {'received/s':>11} {'recv omem MB':>13} "
            f"{'recv lag s':>11} {'pub lag s':>10} {'reconnects':>10} {'lost':>6}"
        )
        previous = {"published": 0, "received": 0}
        second = 0
        while time.monotonic() - start < args.seconds + 2:
            await asyncio.sleep(1.0)  # a sampling period, not a synchronisation
            second += 1
            for role, pipe in pipes.items():
                while pipe.poll():
                    last[role] = pipe.recv()
            buffers = await sample(admin)
            pub, rec = last.get("publisher", {}), last.get("receiver", {})
            for role in ("receiver", "publisher"):
                peak_omem[role] = max(peak_omem[role], buffers.get(role, 0))
                peak_lag[role] = max(peak_lag[role], last.get(role, {}).get("lag", 0.0))
            print(
                f"{second:>3} {pub.get('published', 0) - previous['published']:>12,} "
                f"{rec.get('received', 0) - previous['received']:>11,} "
                f"{buffers.get('receiver', 0) / 1e6:>13.1f} {rec.get('lag', 0.0):>11.3f} "
                f"{pub.get('lag', 0.0):>10.3f} "
                f"{rec.get('reconnects', 0) + pub.get('reconnects', 0):>10} "
                f"{rec.get('lost', 0):>6}",
                flush=True,
            )
            previous = {"published": pub.get("published", 0), "received": rec.get("received", 0)}
            closed = buffers["closed_for_buffer"]
        cpu = {role: cpu_seconds(p.pid) - cpu0[role] for role, p in processes.items() if p.pid}
        cpu["redis"] = cpu_seconds(redis_pid) - cpu0["redis"]
        for pipe in pipes.values():
            pipe.send("stop")
        final = {}
        for role, pipe in pipes.items():
            try:  # the hub's reports, then its last one as it closes, then EOF
                while pipe.poll(GUARD):
                    last[role] = pipe.recv()
            except (EOFError, ConnectionError):
                pass
            final[role] = last[role]
        for process in processes.values():
            process.join(GUARD)
        await admin.aclose()
    elapsed = args.seconds
    return {
        "rate": args.rate,
        "size": args.size,
        "seconds": args.seconds,
        "mode": args.mode,
        "published": final["publisher"]["published"],
        "published_per_s": round(final["publisher"]["published"] / elapsed),
        "received": final["receiver"]["received"],
        "skipped": final["receiver"]["skipped"],
        "receiver_reconnects": final["receiver"]["reconnects"],
        "publisher_reconnects": final["publisher"]["reconnects"],
        "lost": final["receiver"]["lost"],
        "dropped": final["publisher"]["dropped"],
        "closed_for_output_buffer": closed,
        "peak_omem_mb": {k: round(v / 1e6, 1) for k, v in peak_omem.items()},
        "peak_lag_s": {k: round(v, 3) for k, v in peak_lag.items()},
        "cpu_us_per_message": {
            k: round(v / max(1, final["publisher"]["published"]) * 1e6, 2) for k, v in cpu.items()
        },
    }


def skip_cost(calls: int = 1_000_000) -> dict[str, float]:
    """µs per message: the receiver's path for a topic nobody here takes, and a decode."""

    async def run() -> dict[str, float]:
        backplane = RedisBackplane("redis://127.0.0.1:1/0", hub_id="timing")
        hub = Hub(backplane=backplane)
        backplane._cursors.baseline({"t": ("e1", 0)})
        channel = b"wsfanout:topic:t"
        head = encode_head(1, None)
        payload = b"x" * 1024
        raws = [STREAM + f"e1 {n} ".encode() + head + payload for n in range(1, calls + 1)]
        on_payload = backplane._on_payload
        began = time.perf_counter()
        for raw in raws:
            on_payload(channel, raw)
        skipped = (time.perf_counter() - began) / calls * 1e6
        assert backplane.health().skipped == calls
        began = time.perf_counter()
        for raw in raws:
            decode(raw)
        decoded = (time.perf_counter() - began) / calls * 1e6
        await hub.aclose()
        return {"skip_us": round(skipped, 3), "decode_only_us": round(decoded, 3)}

    return asyncio.run(run())


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=50_000, help="messages per second")
    parser.add_argument("--size", type=int, default=1024, help="payload bytes")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--mode", choices=["skip", "decode"], default="skip")
    parser.add_argument("--only-skip-cost", action="store_true")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    print(json.dumps({"skip_cost": skip_cost()}), flush=True)
    if not arguments.only_skip_cost:
        print(json.dumps(asyncio.run(sustained(arguments))), flush=True)
