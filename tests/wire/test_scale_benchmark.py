"""The 10,000-client benchmark's judgement, and a smoke run of it at 200 clients.

Its verdict (every client received every message in order) is the evidence behind
the figures in docs/performance.md, so the checker is fed broken results it must
catch, and the whole driver (server process, load generator process) runs small, once with
each load generator (C and Python).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from wire_helpers import c_loadgen

from benchmarks.scale import delivery_problems, memory_trend, raise_fd_limit

ROOT = Path(__file__).resolve().parents[2]


def loaded(**changes: Any) -> dict[str, Any]:
    """A load generator's result for 100 clients that each received 50 records."""
    result = {
        "healthy": 100,
        "records_min": 50,
        "records_max": 50,
        "out_of_order": 0,
        "closed": 0,
    }
    return {**result, **changes}


def test_a_complete_ordered_run_has_no_problem() -> None:
    assert delivery_problems(loaded(), 100, 50) == []


@pytest.mark.parametrize(
    ("changes", "clients", "published", "expected"),
    [
        ({"records_min": 49}, 100, 50, "records per client from 49 to 50"),
        ({"records_max": 51}, 100, 50, "records per client from 50 to 51"),
        ({}, 100, 51, "51 published"),
        ({"out_of_order": 3}, 100, 50, "3 records out of order"),
        ({"closed": 1}, 100, 50, "1 connections closed"),
        ({"healthy": 99}, 100, 50, "99 clients connected, 100 expected"),
        ({"records_min": 0, "records_max": 0}, 100, 0, "nothing was published"),
    ],
)
def test_each_broken_run_is_caught(
    changes: dict[str, Any], clients: int, published: int, expected: str
) -> None:
    problems = delivery_problems(loaded(**changes), clients, published)
    assert any(expected in p for p in problems), problems


def test_memory_is_flat_only_if_the_second_half_does_not_grow() -> None:
    mb = 2**20
    flat = [(t, 100 * mb + (t < 1) * mb, 0.0) for t in range(11)]
    growing = [(t, 100 * mb + t * mb // 2, 0.0) for t in range(11)]
    assert memory_trend(flat, 10)["flat"] is True
    trend = memory_trend(growing, 10)
    assert trend["flat"] is False
    assert trend["second_half_growth_mb"] == pytest.approx(2.5)
    assert memory_trend(flat[:2], 10)["flat"] is None


@pytest.mark.skipif(
    resource.getrlimit(resource.RLIMIT_NOFILE)[1] == resource.RLIM_INFINITY,
    reason="no hard limit on descriptors here",
)
def test_a_hard_limit_below_the_need_is_named() -> None:
    with pytest.raises(SystemExit, match=r"RLIMIT_NOFILE: hard limit \d+ < 1000000000"):
        raise_fd_limit(10**9)


@pytest.mark.parametrize("loadgen", ["c", "python"])
def test_the_quick_run_delivers_every_message_in_order(tmp_path: Path, loadgen: str) -> None:
    if loadgen == "c":
        c_loadgen()  # built here, or the test skipped if no C compiler can be had
    out = tmp_path / "scale.json"
    command = [sys.executable, "-m", "benchmarks.scale", "--quick", "--clients", "200"]
    command += ["--duration", "2", "--loadgen", loadgen, "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    summary = json.loads(out.read_text())
    assert summary["problems"] == []
    assert summary["clients"] == 200
    assert summary["loadgen"] == loadgen
    assert summary["published"] == 20
    assert summary["server_stats"]["sent"] == 200 * 20
    assert summary["latency_ms"]["p50"] > 0
    assert summary["memory"]["flat"] is not None
    assert "every client received every message in order" in done.stdout
    assert f"{loadgen} load generator" in done.stdout
