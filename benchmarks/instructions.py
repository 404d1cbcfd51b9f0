"""Instructions per operation, counted by callgrind: figures that a busy machine cannot skew.

``python -m benchmarks.instructions [N]`` runs each case once with N operations and once
with none under ``valgrind --tool=callgrind`` (Debian's ``valgrind``), and prints the
difference divided by N: the instructions one operation costs, start-up excluded (and
kept out of the garbage collector's way with ``gc.freeze()``, so that the modules a
version happens to import do not count). Copied into a checkout of an older commit, it
measures that commit the same way.

- ``publish``: a publish of 1 KiB to 100 subscribers that keep up, on transports that
  discard writes, under ``DropOldest(max_messages=256)``; ``publish-notify``: the same
  with ``| Notify()`` (nothing is lost, so nothing should change);
- ``offer``: an offer to a lagging subscriber with 100 messages queued, which drops its
  oldest; ``offer-notify``: the same under ``Notify()``, which records the loss.
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import subprocess
import sys
import tempfile

from wsfanout import Hub, Policy
from wsfanout.lowlevel import Outbox, make_message
from wsfanout.policies import DropOldest

try:
    from wsfanout.policies import Notify
except ImportError:  # a commit before Notify existed: measure the other cases there
    Notify = None  # type: ignore[assignment,misc]

from .micro import connections

CASES = ("publish", "publish-notify", "offer", "offer-notify")
_COLLECTED = re.compile(rb"Collected : (\d+)")


async def _publish(policy: Policy, count: int) -> None:
    hub = Hub(policy=policy)
    contexts = [hub.subscribe(ws) for ws in connections(100)]
    for context in contexts:
        await context.__aenter__()
    text = "x" * 1024
    gc.freeze()  # what was built so far is not the operation's: the collector skips it
    for _ in range(count):
        hub.publish(text)
        await asyncio.sleep(0)


def _offer(policy: Policy, count: int) -> None:
    outbox = Outbox(policy, high=32768, low=8192)
    for seq in range(100):
        outbox.offer(make_message("x", seq=seq, time=0.0, offset=seq + 1), 0.0, 10**9)
    gc.freeze()
    for n in range(count):
        message = make_message("x", seq=100 + n, time=0.0, offset=101 + n)
        outbox.offer(message, 0.0, 10**9)


def run_case(case: str, count: int) -> None:
    """Run ``case`` ``count`` times in this process (what callgrind measures)."""
    if case.startswith("publish"):
        policy: Policy = DropOldest(max_messages=256)
        asyncio.run(_publish(policy | Notify() if case.endswith("notify") else policy, count))
    else:
        policy = DropOldest(max_messages=101)
        _offer(policy | Notify() if case.endswith("notify") else policy, count)


def instructions(case: str, count: int) -> int:
    """Instructions callgrind counts for a whole run of ``case`` with ``count`` operations."""
    with tempfile.TemporaryDirectory() as folder:
        command = [
            "valgrind",
            "--tool=callgrind",
            f"--callgrind-out-file={os.path.join(folder, 'out')}",
            sys.executable,
            "-m",
            "benchmarks.instructions",
            "--run",
            case,
            str(count),
        ]
        # A fixed hash seed: otherwise dict and set layouts, and so the counts, vary by ~1%.
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        done = subprocess.run(command, capture_output=True, check=True, timeout=600, env=env)
    found = _COLLECTED.search(done.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no count: {done.stderr[-500:]!r}")
    return int(found[1])


def main(argv: list[str]) -> None:
    if argv[:1] == ["--run"]:
        run_case(argv[1], int(argv[2]))
        return
    count = int(argv[0]) if argv else 2000
    print("| case | instructions per operation |\n|---|---|")
    for case in CASES:
        if case.endswith("notify") and Notify is None:
            continue
        per_operation = (instructions(case, count) - instructions(case, 0)) // count
        print(f"| {case} | {per_operation:,} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
