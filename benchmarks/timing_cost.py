"""What the latency histograms cost a healthy publish, in instructions or in time.

``python -m benchmarks.timing_cost on|off [clients] [publishes]`` publishes to
``clients`` subscribers on discarding transports (``micro.py``'s), with the hub's
timings on or off, and prints the time per delivery. Wall-clock figures move with
the machine's load; instruction counts do not, so compare the two under callgrind::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python -m benchmarks.timing_cost on 100 2000     # then: off 100 2000

The difference of the two totals, divided by the publishes, is what timing one
publish costs; divided again by the clients, what it adds to one delivery.
"""

from __future__ import annotations

import asyncio
import sys
import time

from wsfanout import Hub

from .micro import connections


async def run(timings: bool, clients: int, publishes: int) -> float:
    hub = Hub(timings=timings)
    contexts = [hub.subscribe(ws) for ws in connections(clients)]
    for context in contexts:
        await context.__aenter__()
    text = "x" * 1024
    elapsed = 0.0
    for _ in range(publishes):
        start = time.perf_counter()
        hub.publish(text)
        elapsed += time.perf_counter() - start
        await asyncio.sleep(0)  # one publish per loop iteration, as in a real server
    await hub.aclose(timeout=0.1)
    return elapsed / publishes / clients * 1e9


def main(argv: list[str]) -> None:
    timings = {"on": True, "off": False}[argv[0]]
    clients = int(argv[1]) if len(argv) > 1 else 100
    publishes = int(argv[2]) if len(argv) > 2 else 2000
    ns = asyncio.run(run(timings, clients, publishes))
    print(f"timings {argv[0]}: {ns:.0f} ns per delivery ({clients} clients, {publishes} publishes)")


if __name__ == "__main__":
    main(sys.argv[1:])
