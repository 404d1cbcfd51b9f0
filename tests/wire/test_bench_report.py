"""The benchmark's report of what a wsfanout case did: how much it batched (messages
per frame, from the hub's counters) and, with ``--split``, where its CPU went; shown
only for the cases that measure them."""

from __future__ import annotations

from typing import Any

from benchmarks.run import Cell, messages_per_frame, split_per_delivery, split_table, table
from benchmarks.server import Split


def row(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "case": "wsfanout-batch",
        "attempt": 1,
        "cpu_us_per_delivery": 4.0,
        "publisher_blocked": False,
        "publish_us": {"p50": 100.0, "p99": 200.0},
        "latency_ms": {"p50": 10.0, "p99": 20.0, "max": 30.0},
        "delivered_ratio": 1.0,
        "published_ratio": 1.0,
        "rss_peak_mb": 34.0,
        "held_per_stalled_kb": None,
        "server_held_peak_per_stalled_kb": None,
        "stale_median": None,
        "wire_bytes_per_delivery": 1026.0,
        "loadgen_cpu_pct": 40.0,
        "server_stats": {"sent": 2400, "frames": 440},
    }
    base.update(overrides)
    return base


def test_messages_per_frame_is_the_hubs_sent_over_frames() -> None:
    assert messages_per_frame(row()) == 2400 / 440


def test_a_case_without_the_hubs_counters_reports_none() -> None:
    assert messages_per_frame(row(case="broadcast", server_stats=None)) is None
    assert messages_per_frame(row(server_stats={})) is None
    assert messages_per_frame(row(server_stats={"sent": 0, "frames": 0})) is None


def test_the_cell_table_shows_it_in_its_own_column() -> None:
    cell = Cell("batch-200", 200, 1024, 400, 3.0, ["wsfanout-batch", "broadcast"])
    rows = [row(), row(case="broadcast", cpu_us_per_delivery=8.0, server_stats=None)]
    lines = table(cell, rows).splitlines()
    header = [name.strip() for name in lines[2].strip("|").split("|")]
    column = header.index("msg/frame")
    batch, broadcast = ([v.strip() for v in line.strip("|").split("|")] for line in lines[4:6])
    assert batch[column] == "5.45"
    assert broadcast[column] == "-"
    assert batch[header.index("vs bcast")] == "0.50"


def test_split_figures_are_per_delivery_and_absent_without_split() -> None:
    split = {"publish_s": 0.2, "deadline_s": 0.6, "publish_calls": 200.0, "deadline_calls": 190.0}
    figures = split_per_delivery(split, 100_000)
    assert figures == {
        "publish_cpu_us_per_delivery": 2.0,
        "deadline_cpu_us_per_delivery": 6.0,
    }
    assert split_per_delivery(None, 100_000) == {}
    assert split_per_delivery(split, 0) == {}


def test_the_split_table_leaves_the_rest_to_the_loop_and_skips_untimed_rows() -> None:
    timed = row(cpu_us_per_delivery=9.0, publish_cpu_us_per_delivery=2.5)
    timed["deadline_cpu_us_per_delivery"] = 6.0
    lines = split_table([timed, row(case="broadcast")]).splitlines()
    assert len(lines) == 3  # the header, its rule, the one timed row
    assert [v.strip() for v in lines[2].strip("|").split("|")] == [
        "wsfanout-batch",
        "9.00",
        "2.50",
        "6.00",
        "0.50",
    ]
    assert split_table([row(case="broadcast")]) == ""


def test_split_counts_the_wrapped_calls_and_their_cpu_and_resets() -> None:
    class Work:
        def run(self, n: int) -> int:
            return sum(i * i for i in range(n))

    split = Split()
    split.wrap(Work, "run", "publish")
    assert Work().run(200_000) == sum(i * i for i in range(200_000))  # still the method
    result = split.result()
    assert result["publish_calls"] == 1.0
    assert result["deadline_calls"] == 0.0
    assert result["publish_s"] > 0.0
    assert result["deadline_s"] == 0.0
    split.reset()
    assert split.result() == {
        "publish_s": 0.0,
        "deadline_s": 0.0,
        "publish_calls": 0.0,
        "deadline_calls": 0.0,
    }
