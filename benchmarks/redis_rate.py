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
import socket
import sys
import time
from multiprocessing.connection import Connection
from typing import Any

import attrs
import redis.asyncio as aredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from wsfanout import History, Hub
from wsfanout._backplane.envelope import STREAM, decode, encode_head
from wsfanout._backplane.subscription import Subscription
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


def fake_redis(messages: int, size: int, topics: int, rate: int, pipe: Connection) -> None:
    """A stand-in for Redis that answers a subscription with ``messages`` numbered
    messages (what a hub's publish script sends, over ``topics`` topics), ``rate`` a
    second in bursts every 10 ms as Redis sends a publisher's batches (0: as fast as
    the reader takes them), then a pong saying "end"; in RESP3 pushes after ``HELLO 3``.
    One connection after another; it prepares the bytes before listening."""
    head = encode_head(1, None)
    payload = b"x" * size
    frames = []
    for n in range(messages):
        channel = b"wsfanout:topic:t%d" % (n % topics)
        data = STREAM + b"e1 %d " % (n // topics + 1) + head + payload
        frames.append(
            b"4\r\n$8\r\npmessage\r\n$10\r\nwsfanout:*\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n"
            % (len(channel), channel, len(data), data)
        )
    per_tick = max(1, rate // 100) if rate else messages
    bursts: dict[bytes, list[bytes]] = {}
    for kind in (b"*", b">"):  # RESP2 arrays, RESP3 pushes
        bursts[kind] = [
            kind + kind.join(frames[n : n + per_tick]) for n in range(0, messages, per_tick)
        ]
        bursts[kind][-1] += kind + b"2\r\n$4\r\npong\r\n$3\r\nend\r\n"
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        pipe.send(listener.getsockname()[1])
        while True:
            connection, _ = listener.accept()
            with connection:
                serve_one(connection, bursts, 0.01 if rate else 0.0)


def take_command(pending: bytearray) -> list[bytes] | None:
    """The first whole command (a RESP array of bulk strings) of ``pending``, removed."""
    crlf = pending.find(b"\r\n")
    if crlf < 0:
        return None
    at, args = crlf + 2, []
    for _ in range(int(pending[1:crlf])):
        crlf = pending.find(b"\r\n", at)
        if crlf < 0:
            return None
        start = crlf + 2
        stop = start + int(pending[at + 1 : crlf])
        if stop + 2 > len(pending):
            return None
        args.append(bytes(pending[start:stop]))
        at = stop + 2
    del pending[:at]
    return args


def serve_one(connection: socket.socket, bursts: dict[bytes, list[bytes]], tick: float) -> None:
    """OK to every command until PSUBSCRIBE (``HELLO 3``: RESP3 from then on), then its
    confirmation and the bursts, one every ``tick`` seconds."""
    pending = bytearray()
    kind = b"*"
    while chunk := connection.recv(65536):
        pending += chunk
        while (args := take_command(pending)) is not None:
            name = args[0].upper()
            if name == b"HELLO":
                kind = b">" if args[1:2] == [b"3"] else b"*"
                proto = b"%1\r\n" if kind == b">" else b"*2\r\n"
                connection.sendall(proto + b"$5\r\nproto\r\n:%s\r\n" % args[1])
                continue
            if name != b"PSUBSCRIBE":
                connection.sendall(b"+OK\r\n")  # CLIENT SETNAME, CLIENT SETINFO
                continue
            connection.sendall(kind + b"3\r\n$10\r\npsubscribe\r\n$10\r\nwsfanout:*\r\n:1\r\n")
            start = time.monotonic()
            for n, burst in enumerate(bursts[kind]):
                wait = start + n * tick - time.monotonic()
                if wait > 0:
                    time.sleep(wait)  # pacing the stand-in's output, not a synchronisation
                connection.sendall(burst)
            while connection.recv(65536):  # until the reader hangs up
                pass
            return


PATHS = ("redis-py get_message, RESP3 (before)", "redis-py get_message, RESP2", "raw subscription")


def receive_cost(
    messages: int = 200_000, size: int = 1024, topics: int = 100, rate: int = 0
) -> dict[str, Any]:
    """µs of the receiving process per message, through redis-py's ``get_message()`` (the
    receiver before, in RESP3 as redis-py 8 speaks by default, and in RESP2) and
    through the raw subscription, for a hub whose
    subscribers take none of the topics (skip) and one with a history window (decode),
    from a stand-in for Redis in another process sending ``rate`` messages a second
    (0: as fast as they are read)."""
    ctx = multiprocessing.get_context("spawn")
    ours, theirs = ctx.Pipe()
    server = ctx.Process(
        target=fake_redis, args=(messages, size, topics, rate, theirs), daemon=True
    )
    server.start()
    assert ours.poll(GUARD * 2), "the stand-in for Redis did not start"
    url = f"redis://127.0.0.1:{ours.recv()}/0"

    async def one(path: str, mode: str) -> float:
        history = History(max_messages=1000) if mode == "decode" else None
        backplane = RedisBackplane(url, hub_id="cost", history=history)
        hub = Hub(backplane=backplane)
        backplane._cursors.baseline({f"t{n}": ("e1", 0) for n in range(topics)})
        began = time.process_time()
        if path.startswith("redis-py"):
            # The receiver before the raw subscription: its client's options, its loop
            # (RESP3, redis-py's default, or RESP2).
            client = aredis.Redis.from_url(
                url,
                protocol=3 if "RESP3" in path else 2,
                client_name="cost",
                retry=Retry(NoBackoff(), 0),
                socket_connect_timeout=backplane.timeout,
                socket_timeout=backplane.timeout,
            )
            pubsub = client.pubsub()
            await pubsub.psubscribe(b"wsfanout:*")
            on_payload = backplane._on_payload
            while True:
                message = await pubsub.get_message(timeout=backplane.heartbeat)
                assert message is not None
                if message["type"] == "pmessage":
                    on_payload(message["channel"], message["data"])
                elif message["type"] == "pong":
                    break
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await client.aclose()
        else:
            subscription = await Subscription.open(
                url,
                client_name="cost",
                patterns=(b"wsfanout:*",),
                channels=(),
                on_message=backplane._on_message,
                timeout=GUARD,
            )
            while (reply := await subscription.reply(GUARD)) is not None:
                if reply.kind == "pong":
                    break
            subscription.close()
        spent = time.process_time() - began
        health = backplane.health()
        assert health.received == messages, (path, mode, health)
        assert health.skipped == (messages if mode == "skip" else 0), health
        await hub.aclose()
        return round(spent / messages * 1e6, 2)

    async def run() -> dict[str, Any]:
        return {
            path: {mode: await one(path, mode) for mode in ("skip", "decode")} for path in PATHS
        }

    try:
        costs = asyncio.run(run())
        return {"messages": messages, "size": size, "rate": rate, "us_per_message": costs}
    finally:
        server.terminate()
        server.join(GUARD)


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=50_000, help="messages per second")
    parser.add_argument("--size", type=int, default=1024, help="payload bytes")
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--topics", type=int, default=100)
    parser.add_argument("--mode", choices=["skip", "decode"], default="skip")
    parser.add_argument("--only-skip-cost", action="store_true")
    parser.add_argument(
        "--only-costs", action="store_true", help="the per-message costs alone, no Redis"
    )
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse()
    print(json.dumps({"skip_cost": skip_cost()}), flush=True)
    if not arguments.only_skip_cost:
        for rate in (0, arguments.rate):
            cost = receive_cost(size=arguments.size, rate=rate)
            print(json.dumps({"receive_cost": cost}), flush=True)
    if not (arguments.only_skip_cost or arguments.only_costs):
        print(json.dumps(asyncio.run(sustained(arguments))), flush=True)
