"""Policy files declare ladders, their conditions and reducers, and say what is wrong in them."""

from __future__ import annotations

import re

import attrs
import pytest

from wsfanout import PolicyError, PolicyFileError, Snapshot
from wsfanout._core import conditions
from wsfanout._files.conditions import (
    ConditionSyntaxError,
    format_condition,
    parse_condition,
)
from wsfanout.files import dump_policy, parse_policy
from wsfanout.policies import (
    Above,
    Adaptive,
    Below,
    ConflateByKey,
    Disconnect,
    DropOldest,
    Escalate,
    Level,
    SkipToLatest,
)

LADDER_FILE = """
description = "Normal, then conflated, then the oldest dropped."

[[stage]]
kind = "escalate"
hold = "2s"
announce = true

[[stage.level]]
name = "normal"

[[stage.level]]
name = "conflate"
up = "lag > 1s"
down = "lag < 250ms"

[[stage.level.stage]]
kind = "conflate-by-key"
reduce = "json-merge"

[[stage.level]]
name = "drop-oldest"
up = "queued_messages > 48 or drain_rate < 20kB/s"
down = "queued_messages < 8 and (drain_rate > 40kB/s or write_buffer < 1KiB)"

[[stage.level.stage]]
kind = "conflate-by-key"

[[stage.level.stage]]
kind = "drop-oldest"
max_messages = 64

[[stage]]
kind = "disconnect"
max_lag = "30s"
"""

LADDER = Escalate(
    levels=[
        Level(name="normal"),
        Level(
            ConflateByKey(reduce="json-merge"),
            up=Above("lag", 1.0),
            down=Below("lag", 0.25),
            name="conflate",
        ),
        Level(
            ConflateByKey() | DropOldest(max_messages=64),
            up=Above("queued_messages", 48) | Below("drain_rate", 20_000),
            down=Below("queued_messages", 8)
            & (Above("drain_rate", 40_000) | Below("write_buffer", 1024)),
            name="drop-oldest",
        ),
    ],
    hold=2.0,
    announce=True,
) | Disconnect(max_lag=30.0)


def test_a_ladder_in_a_file_builds_the_policy_code_would_build() -> None:
    assert parse_policy(LADDER_FILE) == LADDER


def test_adaptive_and_reducers_read_with_their_units() -> None:
    text = """
[[stage]]
kind = "conflate-by-key"
reduce = "sum"
[[stage]]
kind = "adaptive"
interval = "50ms"
max_bytes = "16KiB"
min_bytes = 512
combine = "json-array"
fraction = 0.8
hold = "2s"
probe = false
announce = true
"""
    assert parse_policy(text) == ConflateByKey(reduce="sum") | Adaptive(
        interval=0.05,
        max_bytes=16_384,
        min_bytes=512,
        combine="json-array",
        fraction=0.8,
        hold=2.0,
        probe=None,
        announce=True,
    )


@pytest.mark.parametrize(
    "policy",
    [
        LADDER,
        ConflateByKey(max_messages=4096) | Adaptive() | Disconnect(max_lag=30.0),
        SkipToLatest() | Adaptive(interval=0.25, probe=None, fraction=0.75),
        Escalate(levels=[Level(), Level(SkipToLatest(), up=Above("sent", 10))], hold=0.5),
    ],
    ids=repr,
)
def test_a_ladder_is_written_to_a_file_that_reads_back_as_it(policy: object) -> None:
    text = dump_policy(policy)  # type: ignore[arg-type]
    assert parse_policy(text) == policy


def test_conditions_read_and_write_in_each_field_s_unit() -> None:
    cases = {
        "lag > 1s": Above("lag", 1.0),
        "lag>250ms": Above("lag", 0.25),
        "queued_bytes > 64 KiB": Above("queued_bytes", 65_536),
        "queued_messages < 8": Below("queued_messages", 8),
        "drain_rate < 20kB/s": Below("drain_rate", 20_000),
        "drain_rate < 1.5MiB/s": Below("drain_rate", 1_572_864),
        "write_buffer > 4096": Above("write_buffer", 4096),
        "(lag > 1s or sent > 3) and dropped < 2": (Above("lag", 1.0) | Above("sent", 3))
        & Below("dropped", 2),
    }
    for text, condition in cases.items():
        assert parse_condition(text) == condition
        assert parse_condition(format_condition(condition)) == condition
    assert format_condition(Below("drain_rate", 20_000)) == "drain_rate < 20kB/s"
    assert format_condition(Above("queued_bytes", 65_536)) == "queued_bytes > 64KiB"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lagg > 1s", "'lagg' is not a snapshot field (expected one of queued_messages, "),
        ("lag >= 1s", "expected > or < after lag, not '>='"),
        ("lag = 1s", "expected > or < after lag, not '='"),
        ("lag > 64KiB", '\'64KiB\' is not a duration for lag (expected e.g. "250ms", "5s")'),
        ("queued_bytes > 5s", "'5s' is not a size for queued_bytes"),
        ("lag > 1s or", "it ends too soon"),
        ("(lag > 1s", "a parenthesis is not closed"),
        ("lag > 1s lag > 2s", "'1s lag' is not a duration for lag"),
        ("lag > 1s )", "unexpected ')' (expected and, or, or the end)"),
    ],
)
def test_a_wrong_condition_says_what_was_expected(text: str, message: str) -> None:
    with pytest.raises(ConditionSyntaxError, match=re.escape(message)):
        parse_condition(text)


def test_the_kernels_unsent_bytes_are_declared_in_their_unit() -> None:
    # Snapshot.kernel_unsent (the kernel-aware bounds) is thresholded in bytes.
    assert "kernel_unsent" in conditions.numeric_fields()
    assert parse_condition("kernel_unsent > 64KiB") == Above("kernel_unsent", 65_536)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[stage]]\nkind = "escalate"\n[[stage.level]]\n[[stage.level]]\nup = "lag >> 1s"\n',
            r'^ladder\.toml: stage\[0\]\.level\[1\]\.up: "lag >> 1s" is not a condition: '
            r"expected > or < after lag, not '>>'$",
        ),
        (
            '[[stage]]\nkind = "escalate"\n[[stage.level]]\nnam = "x"\n',
            r"^ladder\.toml: stage\[0\]\.level\[0\]\.nam: unknown key \(expected one of "
            r'"name", "up", "down", "stage"\)$',
        ),
        (
            '[[stage]]\nkind = "escalate"\n[[stage.level]]\n[[stage.level]]\n'
            '[[stage.level.stage]]\nkind = "skip-to-latest"\n',
            r"^ladder\.toml: stage\[0\]\.level: levels\[1\]=Level\(SkipToLatest\(\)\) needs an "
            r"up condition",
        ),
        (
            '[[stage]]\nkind = "escalate"\n[[stage.level]]\n[[stage.level]]\nup = "lag > 1s"\n'
            '[[stage.level.stage]]\nkind = "adaptive"\n',
            r"^ladder\.toml: stage\[0\]\.level\[1\]\.stage: policy=Adaptive\(\) steps between "
            r"levels itself; ladders do not nest$",
        ),
        (
            '[[stage]]\nkind = "escalate"\nhold = "0s"\n[[stage.level]]\n[[stage.level]]\n'
            'up = "lag > 1s"\n',
            r"^ladder\.toml: stage\[0\]\.hold: hold=0\.0 must be a finite number of seconds > 0$",
        ),
        (
            '[[stage]]\nkind = "escalate"\nlevel = 3\n',
            r"^ladder\.toml: stage\[0\]\.level: 3 is not a list of levels",
        ),
        (
            '[[stage]]\nkind = "conflate-by-key"\nreduce = "avg"\n',
            r"^ladder\.toml: stage\[0\]\.reduce: reduce='avg' is not a known reducer",
        ),
        (
            '[[stage]]\nkind = "adaptive"\nprobe = true\n',
            r"^ladder\.toml: stage\[0\]\.probe: true is not a duration or false \(expected e\.g\. "
            r'"10s", or false for none\)$',
        ),
        (
            '[[stage]]\nkind = "adaptive"\n[[stage]]\nkind = "batch"\n',
            r"^ladder\.toml: stage\[1\]: Adaptive\(\) and Batch\(\) both decide how messages are "
            r"framed",
        ),
    ],
)
def test_every_mistake_in_a_ladder_names_the_file_and_the_key(text: str, message: str) -> None:
    with pytest.raises(PolicyFileError, match=message):
        parse_policy(text, filename="ladder.toml")


def test_what_a_file_cannot_hold_is_refused_when_writing() -> None:
    def concat(older: str, newer: str) -> str:
        return older + newer

    with pytest.raises(PolicyError, match=r"^reduce=<function .*concat.*> is a function"):
        dump_policy(ConflateByKey(reduce=concat))

    @attrs.frozen
    class Never(conditions.Condition):
        def holds(self, snapshot: Snapshot) -> bool:
            return False

    custom = Escalate(levels=[Level(), Level(up=Never())])
    with pytest.raises(PolicyError, match=r"is not a built-in condition"):
        dump_policy(custom)
