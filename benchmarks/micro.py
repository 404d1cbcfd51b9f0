"""In-process measurements of wsfanout's own Python time, without sockets.

Connections are real websockets ``ServerConnection`` objects on a transport that
discards what it is given, so what is measured is the Python work per delivery that
sits on top of the system call: the part wsfanout can change. Three questions:

- per delivery: ``Hub.publish`` against ``broadcast()`` and a bare ``transport.write``
  loop (the floor), one message per loop iteration; and the same hub recording its
  latency histograms (``Hub(timings=True)``, as once metrics are registered), what
  timing each publish costs;
- topics: the cost of a publish to a topic with 10 subscribers while 0 or 10,000
  other subscribers listen to other topics (the index makes them cost nothing);
- queue depth: the cost of offering a message to a subscriber that fell behind, with
  0 to 1,000 messages already queued (constant: the queue is a dict in arrival order),
  without and with ``Notify()`` recording each message the queue drops;
- gap notices: a publish to subscribers that lose nothing under ``DropOldest | Notify()``
  against ``DropOldest`` alone (the same: ``Notify`` costs only when something is lost);
- catching up: one relay turn writing 64 queued messages under the default policy,
  per frame (the policy asked once per turn, or before every frame);
- batching: a whole ``Batch(max_messages=16, max_delay=0.01)`` cycle per delivered
  message (the publishes, the kicked subscribers' pass, the shared timer's pass), with
  1 and 4 messages per frame; the timer is run at once rather than after 10 ms.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from typing import Any

from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection, broadcast
from websockets.protocol import State
from websockets.server import ServerProtocol

from wsfanout import Hub, Policy
from wsfanout.lowlevel import Outbox, make_message
from wsfanout.policies import Batch, Disconnect, DropOldest, Notify

__all__ = ["run_micro"]


class DiscardingTransport(asyncio.Transport):
    """Accepts every write and keeps nothing: the buffer is always empty."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.closing = False

    def write(self, data: Any) -> None:
        self.writes += 1

    def get_write_buffer_size(self) -> int:
        return 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (8192, 32768)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def is_closing(self) -> bool:
        return self.closing

    def abort(self) -> None:
        self.closing = True

    def close(self) -> None:
        self.closing = True


def connections(count: int) -> list[ServerConnection]:
    result = []
    for _ in range(count):
        protocol = ServerProtocol()
        protocol.state = State.OPEN
        connection = ServerConnection(protocol, None)  # type: ignore[arg-type]
        # Connection's own connection_made: the server's would start a handler.
        Connection.connection_made(connection, DiscardingTransport())
        result.append(connection)
    return result


async def per_call(fn: Callable[[], object], calls: int) -> float:
    """Best of five: seconds per call, one call per loop iteration as in a real server."""
    for _ in range(calls // 4):
        fn()
        await asyncio.sleep(0)
    best = float("inf")
    for _ in range(5):
        elapsed = 0.0
        for _ in range(calls):
            t0 = time.perf_counter()
            fn()
            elapsed += time.perf_counter() - t0
            await asyncio.sleep(0)
        best = min(best, elapsed / calls)
    return best


async def hub_of(clients: int, policy: Policy | None = None, **options: Any) -> Hub:
    """A hub with ``clients`` subscribers on discarding transports, subscribed until it
    closes (the ``subscribe()`` contexts are kept on the hub's side of this module)."""
    hub = Hub(policy=policy, **options)
    contexts = [hub.subscribe(ws) for ws in connections(clients)]
    for context in contexts:
        await context.__aenter__()
    _SUBSCRIBED[hub] = contexts
    return hub


_SUBSCRIBED: dict[Hub, list[Any]] = {}
"""The open ``subscribe()`` contexts of each hub: dropped, they would unsubscribe."""


async def per_delivery(clients: int) -> dict[str, float]:
    hub = await hub_of(clients)
    # A connection has one subscription: the timed hub gets connections of its own.
    timed = await hub_of(clients, timings=True)
    conns = [subscriber.websocket for subscriber in hub.subscribers]
    text = "x" * 1024
    frame = b"\x81\x7e\x04\x00" + text.encode()

    def floor() -> None:
        for ws in conns:
            ws.transport.write(frame)

    result = {
        "wsfanout": await per_call(lambda: hub.publish(text), 200) / clients * 1e9,
        "wsfanout, timings on": await per_call(lambda: timed.publish(text), 200) / clients * 1e9,
        "broadcast": await per_call(lambda: broadcast(conns, text), 200) / clients * 1e9,
        "floor": await per_call(floor, 200) / clients * 1e9,
    }
    for one in (hub, timed):
        await one.aclose(timeout=0.1)
        _SUBSCRIBED.pop(one)
    return result


async def notify_per_delivery(clients: int) -> dict[str, float]:
    """ns per delivery to subscribers that keep up, with and without ``Notify()``,
    measured in turns so that both see the same machine."""
    plain = await hub_of(clients, DropOldest(max_messages=256))
    notifying = await hub_of(clients, DropOldest(max_messages=256) | Notify())
    text = "x" * 1024
    best = {"drop-oldest": float("inf"), "drop-oldest+notify": float("inf")}
    for _ in range(3):
        for name, hub in (("drop-oldest", plain), ("drop-oldest+notify", notifying)):
            ns = await per_call(functools.partial(hub.publish, text), 200) / clients * 1e9
            best[name] = min(best[name], ns)
    for hub in (plain, notifying):
        await hub.aclose(timeout=0.1)
        _SUBSCRIBED.pop(hub)
    return best


async def topics(others: int, *, timings: bool | None = None) -> float:
    """µs per publish to a topic of 10 subscribers, with ``others`` on other topics."""
    hub = Hub(timings=timings)
    for n, ws in enumerate(connections(10 + others)):
        topic = "news" if n < 10 else f"other-{n % 100}"
        await hub.subscribe(ws, topics=[topic]).__aenter__()
    result = await per_call(lambda: hub.publish("x" * 64, topic="news"), 500) * 1e6
    await hub.aclose(timeout=0.1)
    return result


async def batching(clients: int, per_frame: int) -> float:
    """ns per delivered message of a batch cycle: ``per_frame`` publishes, then the
    shared deadline's pass that writes every subscriber's batch (run at once)."""
    hub = Hub(policy=Batch(max_messages=16, max_delay=0.01))
    contexts = [hub.subscribe(ws) for ws in connections(clients)]  # kept: see above
    for context in contexts:
        await context.__aenter__()
    timers = hub._fanout.timers
    text = "x" * 1024

    async def cycle() -> float:
        t0 = time.perf_counter()
        for _ in range(per_frame):
            hub.publish(text)
        await asyncio.sleep(0)  # a pass over subscribers kicked, if any
        for key, handle in list(timers._handles.items()):
            handle.cancel()
            timers._fire(key)  # what the timer does when it is due
        return time.perf_counter() - t0

    for _ in range(20):
        await cycle()
    best = float("inf")
    for _ in range(5):
        total = 0.0
        for _ in range(50):
            total += await cycle()
        best = min(best, total / 50)
    await hub.aclose(timeout=0.1)
    return best / (clients * per_frame) * 1e9


def queue_depth(depth: int, notify: bool = False) -> float:
    """ns per offer to a subscriber whose queue already holds ``depth`` messages, each
    offer dropping the oldest (and, with ``notify``, recording it for a gap notice)."""
    policy: Policy = DropOldest(max_messages=depth + 1)
    if notify:
        policy = policy | Notify()
    outbox = Outbox(policy, high=32768, low=8192)
    seq = 0
    for seq in range(depth):
        outbox.offer(make_message("x", seq=seq, time=0.0, offset=seq + 1), 0.0, 10**9)
    messages = [
        make_message("x", seq=depth + n, time=0.0, offset=depth + n + 1) for n in range(20000)
    ]
    offer = outbox.offer
    t0 = time.perf_counter()
    for message in messages:
        offer(message, 0.0, 10**9)  # the buffer is full: queued, the oldest dropped
    return (time.perf_counter() - t0) / len(messages) * 1e9


def catch_up(frames: int) -> float:
    """ns per frame of one relay turn that writes ``frames`` queued messages at once (a
    subscriber catching up after its buffer drained), under the default policy."""
    outbox = Outbox(Disconnect(max_lag=30.0), high=1 << 30, low=8192)
    messages = [make_message("x" * 1024, seq=n, time=0.0) for n in range(frames)]
    best = float("inf")
    for _ in range(200):
        for message in messages:
            outbox.offer(message, 0.0, 10**9)  # the buffer is full: each one queued
        t0 = time.perf_counter()
        outbox.next_action(1.0, 0)  # the buffer drained: one turn writes them all
        best = min(best, time.perf_counter() - t0)
    return best / frames * 1e9


async def _main() -> dict[str, Any]:
    return {
        "per_delivery_ns": {n: await per_delivery(n) for n in (100, 1000)},
        "topic_publish_us": {n: await topics(n) for n in (0, 10000)},
        "topic_publish_timed_us": await topics(0, timings=True),
        "offer_ns_by_queue_depth": {n: queue_depth(n) for n in (0, 100, 1000)},
        "offer_notify_ns_by_queue_depth": {n: queue_depth(n, True) for n in (0, 100, 1000)},
        "notify_per_delivery_ns": await notify_per_delivery(1000),
        "batch_ns_by_per_frame": {k: await batching(1000, k) for k in (1, 4)},
        "catch_up_ns_per_frame": catch_up(64),
    }


def run_micro() -> dict[str, Any]:
    return asyncio.run(_main())


def table(result: dict[str, Any]) -> str:
    lines = [
        "### micro: wsfanout's Python time, on a transport that discards writes",
        "",
        "| measure | value |",
        "|---|---|",
    ]
    for clients, figures in result["per_delivery_ns"].items():
        for case, ns in figures.items():
            lines.append(f"| ns per delivery, {clients} clients, {case} | {ns:.0f} |")
    for others, us in result["topic_publish_us"].items():
        lines.append(f"| µs per publish to 10 subscribers, {others} on other topics | {us:.1f} |")
    timed = result["topic_publish_timed_us"]
    lines.append(
        f"| µs per publish to 10 subscribers, 0 on other topics, timings on | {timed:.1f} |"
    )
    for depth, ns in result["offer_ns_by_queue_depth"].items():
        lines.append(f"| ns per offer to a lagging subscriber, {depth} queued | {ns:.0f} |")
    for depth, ns in result.get("offer_notify_ns_by_queue_depth", {}).items():
        lines.append(
            f"| ns per offer to a lagging subscriber under Notify(), {depth} queued | {ns:.0f} |"
        )
    for case, ns in result.get("notify_per_delivery_ns", {}).items():
        lines.append(f"| ns per delivery, 1000 clients that lose nothing, {case} | {ns:.0f} |")
    for per_frame, ns in result.get("batch_ns_by_per_frame", {}).items():
        lines.append(
            f"| ns per delivery, 1000 clients, Batch(max_delay), {per_frame} per frame | {ns:.0f} |"
        )
    catching = result.get("catch_up_ns_per_frame")
    if catching is not None:
        lines.append(
            f"| ns per frame of a relay turn writing 64 queued messages, default policy "
            f"| {catching:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table(run_micro()))
