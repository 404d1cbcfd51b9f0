"""docs/how-to/observability.md lists every metric family with its type and labels,
as ``wsfanout.metrics.METRICS`` declares them, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

from wsfanout.metrics import METRICS

PAGE = Path(__file__).resolve().parent.parent / "docs" / "how-to" / "observability.md"

ROW = re.compile(r"^\| `wsfanout_(\w+)` \| (\w+) \|([^|]*)\|", re.MULTILINE)


def table_problems(text: str) -> list[str]:
    """How the page's metric table differs from METRICS."""
    documented = {}
    for name, kind, labels in ROW.findall(text):
        documented[name] = (kind, tuple(re.findall(r"`(\w+)`", labels)))
    declared = {metric.name: (metric.kind, metric.labels) for metric in METRICS}
    problems = [f"{name}: not documented" for name in declared if name not in documented]
    problems += [f"{name}: not a metric" for name in documented if name not in declared]
    problems += [
        f"{name}: documented as {documented[name]}, is {declared[name]}"
        for name in declared
        if name in documented and documented[name] != declared[name]
    ]
    return problems


def test_the_page_documents_every_metric_with_its_type_and_labels() -> None:
    assert table_problems(PAGE.read_text(encoding="utf-8")) == []


def test_the_check_catches_a_missing_a_mistyped_and_an_unknown_metric() -> None:
    text = PAGE.read_text(encoding="utf-8")
    broken = (
        text.replace("| `wsfanout_subscribers` | gauge |", "| `wsfanout_subscribers` | counter |")
        .replace("| `wsfanout_info` | gauge | `version` |", "| `wsfanout_inf` | gauge | |")
        .replace(
            "| `wsfanout_queued_bytes` | gauge | `policy` |",
            "| `wsfanout_queued_bytes` | gauge | |",
        )
    )
    assert table_problems(broken) == [
        "info: not documented",
        "inf: not a metric",
        "subscribers: documented as ('counter', ('policy',)), is ('gauge', ('policy',))",
        "queued_bytes: documented as ('gauge', ()), is ('gauge', ('policy',))",
    ]
