"""What offsets, history and resuming cost per message, against publishing without them.

Run with ``make bench-history`` (``--help`` for the knobs). Every figure of a table is
measured in the same run, so the ratios compare like with like:

* **in process**, on connections whose transport discards writes (benchmarks/micro.py):
  ``Hub.publish`` with no history against a ``History(max_messages=1000)``, to 0 and to
  100 subscribers, raw and ``wsfanout.v1``; what an offset costs on its own
  (``Streams.advance``) and what keeping a message costs (``MemoryHistory.append``);
  a resume of 100 messages, and a storm of 1,000 clients resuming from one position
  against 1,000 clients from 1,000 positions (the same replay, no read shared), with
  the reads of history each made.
* **through Redis** (a redis-server of its own on a free port): messages per second
  and Redis' CPU per message, through ``RedisBackplane`` without and with a history
  (the Lua script that numbers, keeps, trims and publishes), against plain pipelined
  ``PUBLISH`` of the same payloads, the way the backplane published before messages
  had offsets; the latency from ``publish()`` to the hub's own delivery, which
  now goes through Redis; and the same storms on a hub that has just started (its own
  window empty), whose replays are read from Redis, at once or one after another.

Resume figures are the best of 3 (5 for one client) runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.typing import Subprotocol

from wsfanout import SUBPROTOCOL, History, Hub, Position, select_subprotocol
from wsfanout.backplane import RedisBackplane
from wsfanout.lowlevel import MemoryHistory, Streams, make_message
from wsfanout.policies import DropOldest

if __package__ in (None, ""):  # run as a script: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.micro import connections, per_call
else:
    from .micro import connections, per_call

HISTORY = History(max_messages=1000)
PAYLOAD = "x" * 256
ROOMY = DropOldest(max_messages=1_000_000, max_bytes=1 << 30)


# -- in process ---------------------------------------------------------------------------


async def publish_ns(clients: int, *, history: History | None, framing: str) -> float:
    """ns per ``publish()`` of one 256-byte message to ``clients`` subscribers."""
    hub = Hub(history=history, heartbeat=None)
    contexts = [hub.subscribe(ws, framing=framing, since=()) for ws in connections(clients)]
    for context in contexts:
        await context.__aenter__()
    result = await per_call(lambda: hub.publish(PAYLOAD, topic="t"), 2000) * 1e9
    await hub.aclose(timeout=0.1)
    return result


def loop_ns(fn: Callable[[int], object], count: int = 200_000) -> float:
    """ns per call of ``fn(i)``, best of five."""
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        for i in range(count):
            fn(i)
        best = min(best, (time.perf_counter() - t0) / count * 1e9)
    return best


def parts_ns() -> dict[str, float]:
    streams = Streams(lambda: "e0000000")
    history = MemoryHistory(HISTORY)
    messages = [
        make_message(PAYLOAD, seq=i, time=0.0, topic="t", offset=i + 1, epoch="e0000000")
        for i in range(200_000)
    ]
    return {
        "offset (Streams.advance)": loop_ns(lambda i: streams.advance("t")),
        "keep (MemoryHistory.append)": loop_ns(lambda i: history.append(messages[i], 0.0)),
        "v1 header, once per message": loop_ns(lambda i: messages[i].v1_payload, 100_000),
    }


def crowd_positions(clients: int, *, shared: bool) -> list[list[Position]]:
    """Each client's ``since``: all the same, or each its own (same work, no sharing).

    The positions name epochs the stream never had, so each client is replayed the stream
    from offset 1, as a client whose hub restarted is; the replay is the same work as
    from an offset, and ``shared=False`` changes only the epoch's name."""
    return [[Position("t", "elsewhere" if shared else f"elsewhere{i}", 1)] for i in range(clients)]


async def resume(hub: Hub, count: int, clients: int, *, shared: bool, at_once: bool) -> float:
    """µs per client: ``clients`` subscribe to ``hub`` (v1 framing) from positions
    ``count`` messages back, at once (all awaiting together) or one after another."""
    crowd = connections(clients)
    positions = crowd_positions(clients, shared=shared)
    contexts = [
        hub.subscribe(ws, framing="v1", since=since, topics=["t"])
        for ws, since in zip(crowd, positions, strict=True)
    ]
    replayed = hub.stats().replayed
    t0 = time.perf_counter()
    if at_once:
        await asyncio.gather(*(context.__aenter__() for context in contexts))
    else:
        for context in contexts:
            await context.__aenter__()
    elapsed = time.perf_counter() - t0
    replayed = hub.stats().replayed - replayed
    for context in contexts:
        await context.__aexit__(None, None, None)
    assert replayed == count * clients, (replayed, count, clients)
    return elapsed / clients * 1e6


async def best_of(runs: int, case: Callable[[], Awaitable[dict[str, float]]]) -> dict[str, float]:
    """The run with the lowest µs per client: the machine is shared, a run can stall."""
    results = [await case() for _ in range(runs)]
    return min(results, key=lambda r: r["us_per_client"])


async def resume_in_memory(count: int, clients: int, *, shared: bool) -> dict[str, float]:
    """A hub with its history in memory: µs per client and the reads of its history."""
    hub = Hub(history=History(max_messages=count + 10), heartbeat=None)
    for _ in range(count):
        hub.publish(PAYLOAD, topic="t")
    us = await resume(hub, count, clients, shared=shared, at_once=False)
    reads = hub.stats().history_reads
    await hub.aclose(timeout=0.1)
    return {"us_per_client": us, "reads": reads}


async def in_process() -> dict[str, Any]:
    publish: dict[str, float] = {}
    for clients in (0, 100):
        for framing in ("raw", "v1"):
            if clients == 0 and framing == "v1":
                continue
            for name, history in (("no history", None), ("history", HISTORY)):
                key = f"{clients} subscribers, {framing}, {name}"
                publish[key] = await publish_ns(clients, history=history, framing=framing)
    return {
        "publish_ns": publish,
        "parts_ns": parts_ns(),
        "resume": {
            "1 client": await best_of(5, lambda: resume_in_memory(100, 1, shared=True)),
            "1,000 clients, one position": await best_of(
                3, lambda: resume_in_memory(100, 1000, shared=True)
            ),
            "1,000 clients, 1,000 positions": await best_of(
                3, lambda: resume_in_memory(100, 1000, shared=False)
            ),
        },
    }


# -- through Redis ------------------------------------------------------------------------


class Redis:
    """A redis-server on a free port, with its CPU seconds so far."""

    def __init__(self) -> None:
        with socket.socket() as sock:  # a free port, the kernel's choice
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        executable = shutil.which("redis-server")
        if executable is None:
            raise SystemExit("redis-server is not installed (make bench-history installs it)")
        self.popen = subprocess.Popen(
            [executable, "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            if b"Ready to accept connections" in line:
                break

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def flush(self) -> None:
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "FLUSHALL"], check=True, capture_output=True
        )

    def stop(self) -> None:
        self.popen.terminate()
        self.popen.wait()


async def through_backplane(redis: Redis, history: History | None, count: int) -> dict[str, float]:
    """Messages per second and Redis µs per message, publishing ``count`` messages through
    a backplane until its own hub has been handed all of them."""
    redis.flush()
    backplane = RedisBackplane(redis.url, history=history, buffer=ROOMY, hub_id="bench")
    hub = Hub(backplane=backplane, heartbeat=None)
    await backplane.start()
    await backplane.wait_for(lambda h: h.connected, timeout=30)
    cpu, t0 = redis.cpu(), time.perf_counter()
    for _ in range(count):
        hub.publish(PAYLOAD, topic="t")
    await backplane.wait_for(lambda h: h.received >= count, timeout=120)
    elapsed, used = time.perf_counter() - t0, redis.cpu() - cpu
    await hub.aclose()
    return {"messages_per_s": count / elapsed, "redis_us_per_message": used / count * 1e6}


async def plain_publish(redis: Redis, count: int) -> dict[str, float]:
    """The same payloads as pipelined ``PUBLISH`` commands (512 a round trip), received
    by a subscriber: how the backplane published before messages had offsets."""
    import redis.asyncio as aredis

    redis.flush()
    publisher = aredis.Redis.from_url(redis.url)
    subscriber = aredis.Redis.from_url(redis.url)
    pubsub = subscriber.pubsub()
    await pubsub.subscribe("wsfanout:topic:t")
    await pubsub.get_message(timeout=5)
    payload = b"\x00WF\x01D" + bytes(30) + PAYLOAD.encode()

    async def receive() -> None:
        got = 0
        while got < count:
            message = await pubsub.get_message(timeout=5)
            if message is not None and message["type"] == "message":
                got += 1

    cpu, t0 = redis.cpu(), time.perf_counter()
    receiving = asyncio.create_task(receive())
    for start in range(0, count, 512):
        pipe = publisher.pipeline(transaction=False)
        for _ in range(min(512, count - start)):
            pipe.publish("wsfanout:topic:t", payload)
        await pipe.execute()
    await receiving
    elapsed, used = time.perf_counter() - t0, redis.cpu() - cpu
    await pubsub.aclose()  # type: ignore[no-untyped-call]
    await publisher.aclose()
    await subscriber.aclose()
    return {"messages_per_s": count / elapsed, "redis_us_per_message": used / count * 1e6}


async def own_latency(
    redis: Redis | None, history: History | None, samples: int
) -> dict[str, float]:
    """ms from ``publish()`` to the hub's own subscriber receiving it, one at a time:
    through Redis with a backplane (``redis``), written at once without."""
    backplane = None
    if redis is not None:
        redis.flush()
        backplane = RedisBackplane(redis.url, history=history, hub_id="latency")
    hub = Hub(backplane=backplane, heartbeat=None)
    if backplane is not None:
        await backplane.start()
        await backplane.wait_for(lambda h: h.connected, timeout=30)
    subscribed = asyncio.Event()

    async def handler(websocket: Any) -> None:
        async with hub.subscribe(websocket):
            subscribed.set()
            await websocket.wait_closed()

    times: list[float] = []
    async with serve(handler, "127.0.0.1", 0, select_subprotocol=select_subprotocol) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}", subprotocols=[Subprotocol(SUBPROTOCOL)]) as ws:
            await subscribed.wait()
            for _ in range(samples):
                t0 = time.perf_counter()
                hub.publish(PAYLOAD)
                await ws.recv()
                times.append((time.perf_counter() - t0) * 1e3)
    await hub.aclose()
    times.sort()
    return {"p50_ms": statistics.median(times), "p99_ms": times[int(len(times) * 0.99) - 1]}


async def resume_through_redis(
    redis: Redis, count: int, clients: int, *, shared: bool, at_once: bool
) -> dict[str, float]:
    """A storm on a hub that has just started (its own window is empty, as after a
    restart): every client's replay is read from Redis. µs per client, Redis reads."""
    redis.flush()
    history = History(max_messages=count + 10)
    publishing = RedisBackplane(redis.url, history=history, hub_id="w")
    writer = Hub(backplane=publishing, heartbeat=None)
    backplane = RedisBackplane(redis.url, history=history, hub_id="storm", timeout=60)
    hub = Hub(backplane=backplane, heartbeat=None)
    for one in (publishing, backplane):
        await one.start()
        await one.wait_for(lambda h: h.connected, timeout=30)
    for _ in range(count):
        writer.publish(PAYLOAD, topic="t")
    await backplane.wait_for(lambda h: h.received >= count, timeout=60)
    await writer.aclose()
    us = await resume(hub, count, clients, shared=shared, at_once=at_once)
    reads = backplane.health().reads
    await hub.aclose()
    return {"us_per_client": us, "reads": reads}


async def through_redis(count: int, samples: int) -> dict[str, Any]:
    redis = Redis()
    try:
        throughput = {
            "plain PUBLISH (no offsets)": await plain_publish(redis, count),
            "backplane, no history": await through_backplane(redis, None, count),
            "backplane, History(max_messages=1000)": await through_backplane(redis, HISTORY, count),
            "backplane, History(1000, max_bytes=64KiB, max_age=60)": await through_backplane(
                redis, History(max_messages=1000, max_bytes=65536, max_age=60.0), count
            ),
        }
        latency = {
            "hub alone": await own_latency(None, None, samples),
            "backplane, no history": await own_latency(redis, None, samples),
            "backplane, history": await own_latency(redis, HISTORY, samples),
        }
        storm = {
            "1 client": await best_of(
                5, lambda: resume_through_redis(redis, 100, 1, shared=True, at_once=True)
            ),
            "1,000 clients at once, one position": await best_of(
                3, lambda: resume_through_redis(redis, 100, 1000, shared=True, at_once=True)
            ),
            "1,000 clients one after another, one position": await best_of(
                3, lambda: resume_through_redis(redis, 100, 1000, shared=True, at_once=False)
            ),
            "1,000 clients at once, 1,000 positions": await best_of(
                3, lambda: resume_through_redis(redis, 100, 1000, shared=False, at_once=True)
            ),
        }
    finally:
        redis.stop()
    return {"throughput": throughput, "latency": latency, "resume": storm}


# -- output -----------------------------------------------------------------------------


def table(result: dict[str, Any]) -> str:
    lines = ["### history: offsets, history and resuming, in process", ""]
    publish = result["in_process"]["publish_ns"]
    lines += [
        "| publish() of 256 B to | no history ns | history ns | ratio |",
        "|---|---:|---:|---:|",
    ]
    for key in publish:
        if key.endswith("no history"):
            base = key.removesuffix(", no history")
            plain, kept = publish[key], publish[f"{base}, history"]
            lines.append(f"| {base} | {plain:.0f} | {kept:.0f} | {kept / plain:.2f} |")
    raw = publish["100 subscribers, raw, no history"]
    v1 = publish["100 subscribers, v1, no history"]
    lines += ["", f"v1 framing against raw, 100 subscribers, no history: {v1 / raw:.2f}", ""]
    lines += ["| part | ns |", "|---|---:|"]
    for part, ns in result["in_process"]["parts_ns"].items():
        lines.append(f"| {part} | {ns:.0f} |")
    lines += ["", "| resume of 100 messages, from memory | µs per client | history reads |"]
    lines += ["|---|---:|---:|"]
    for case, figures in result["in_process"]["resume"].items():
        lines.append(f"| {case} | {figures['us_per_client']:.0f} | {figures['reads']} |")
    if "redis" in result:
        redis = result["redis"]
        plain = redis["throughput"]["plain PUBLISH (no offsets)"]
        lines += [
            "",
            "### history: through Redis",
            "",
            "| publishing | messages/s | ratio | Redis µs/message | ratio |",
            "|---|---:|---:|---:|---:|",
        ]
        for case, figures in redis["throughput"].items():
            rate, cpu = figures["messages_per_s"], figures["redis_us_per_message"]
            base = plain["redis_us_per_message"]
            cpu_ratio = f"{cpu / base:.2f}" if base else "-"  # below a clock tick: rerun longer
            lines.append(
                f"| {case} | {rate:,.0f} | {rate / plain['messages_per_s']:.2f} "
                f"| {cpu:.1f} | {cpu_ratio} |"
            )
        lines += ["", "| publish() to own subscriber | p50 ms | p99 ms |", "|---|---:|---:|"]
        for case, figures in redis["latency"].items():
            lines.append(f"| {case} | {figures['p50_ms']:.3f} | {figures['p99_ms']:.3f} |")
        lines += [
            "",
            "| resume of 100 messages on a hub just started, from Redis "
            "| µs per client | Redis reads |",
            "|---|---:|---:|",
        ]
        for case, figures in redis["resume"].items():
            lines.append(f"| {case} | {figures['us_per_client']:.0f} | {figures['reads']} |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"in_process": await in_process()}
    if not args.no_redis:
        result["redis"] = await through_redis(args.messages, args.samples)
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=50_000, help="through Redis, per case")
    parser.add_argument("--samples", type=int, default=500, help="latency samples per case")
    parser.add_argument("--no-redis", action="store_true", help="the in-process part only")
    print(table(asyncio.run(main(parser.parse_args()))))
