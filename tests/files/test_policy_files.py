"""A policy file builds the policy code would build, and every mistake in one is named."""

import re
from pathlib import Path

import pytest

from wsfanout import PolicyFileError
from wsfanout._files.policy_files import parameters
from wsfanout.files import STAGE_KINDS, load_policy, load_policy_file, parse_policy
from wsfanout.policies import (
    Adaptive,
    Batch,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    Escalate,
    Notify,
    SkipToLatest,
    Throttle,
)

KINDS = (
    '"drop-oldest", "drop-newest", "skip-to-latest", "conflate-by-key", "batch", "throttle", '
    '"disconnect", "escalate", "adaptive", "notify"'
)


def test_the_issue_example_builds_the_policy_code_would_build() -> None:
    text = """
description = "Prices: only the newest quote per symbol matters; cut clients 5 s behind."
[[stage]]
kind = "conflate-by-key"
[[stage]]
kind = "throttle"
rate = 10
[[stage]]
kind = "disconnect"
max_lag = "5s"
"""
    assert parse_policy(text) == ConflateByKey() | Throttle(rate=10) | Disconnect(max_lag=5.0)


def test_one_stage_is_the_stage_itself_not_a_composition() -> None:
    assert parse_policy('[[stage]]\nkind = "skip-to-latest"\n') == SkipToLatest()


def test_every_parameter_is_read_with_its_unit() -> None:
    text = """
[[stage]]
kind = "batch"
max_messages = 32
max_bytes = "16KiB"
max_delay = "250ms"
combine = "json-array"
[[stage]]
kind = "drop-oldest"
max_messages = 100
max_bytes = "1MiB"
[[stage]]
kind = "throttle"
rate = "600/min"
[[stage]]
kind = "disconnect"
max_messages = 90
max_bytes = 500000
max_lag = "1m"
max_buffer = "256KiB"
grace = "2s"
code = 4000
reason = "too slow for this feed"
"""
    assert parse_policy(text) == (
        Batch(max_messages=32, max_bytes=16384, max_delay=0.25, combine="json-array")
        | DropOldest(max_messages=100, max_bytes=1048576)
        | Throttle(rate=10.0)
        | Disconnect(
            max_messages=90,
            max_bytes=500000,
            max_lag=60.0,
            max_buffer=262144,
            grace=2.0,
            code=4000,
            reason="too slow for this feed",
        )
    )


def test_the_registry_covers_every_built_in_and_every_parameter_has_a_kind() -> None:
    assert set(STAGE_KINDS.values()) == {
        DropOldest,
        DropNewest,
        SkipToLatest,
        ConflateByKey,
        Batch,
        Throttle,
        Disconnect,
        Escalate,
        Adaptive,
        Notify,
    }
    for kind in STAGE_KINDS:
        parameters(kind)  # raises KeyError if a constructor parameter has no value kind


def test_a_policy_file_is_found_by_path_and_named_after_its_stem(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('description = "mine"\n[[stage]]\nkind = "drop-newest"\nmax_messages = 5\n')
    loaded = load_policy_file(path)
    assert (loaded.name, loaded.description, loaded.policy) == (
        "prices",
        "mine",
        DropNewest(max_messages=5),
    )
    assert load_policy(str(path)) == DropNewest(max_messages=5)


def error(text: str, filename: str = "bad.toml") -> PolicyFileError:
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(text, filename=filename)
    return caught.value


def test_the_issue_example_of_a_bad_duration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "chat.toml").write_text(
        '[[stage]]\nkind = "drop-oldest"\n[[stage]]\nkind = "throttle"\nrate = 5\n'
        '[[stage]]\nkind = "disconnect"\nmax_lag = "5 seconds"\n'
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(
        PolicyFileError,
        match=r'^chat\.toml: stage\[2\]\.max_lag: "5 seconds" is not a duration '
        r'\(expected e\.g\. "250ms", "5s"\)$',
    ) as caught:
        load_policy("chat.toml")
    assert (caught.value.filename, caught.value.key) == ("chat.toml", "stage[2].max_lag")


def test_a_toml_syntax_error_keeps_its_line_and_column() -> None:
    with pytest.raises(
        PolicyFileError,
        match=r"^bad\.toml: not valid TOML: Invalid value \(at line 3, column 8\)$",
    ) as caught:
        parse_policy('description = "x"\n[[stage]]\nkind = \n', filename="bad.toml")
    assert (caught.value.line, caught.value.column) == (3, 8)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            'descripton = "x"\n[[stage]]\nkind = "skip-to-latest"\n',
            r'^bad\.toml: descripton: unknown key \(expected one of "description", "stage"\)$',
        ),
        (
            'description = 3\n[[stage]]\nkind = "skip-to-latest"\n',
            r"^bad\.toml: description: 3 is not a string$",
        ),
        (
            'description = "x"\n',
            r"^bad\.toml: stage: missing \(expected at least one \[\[stage\]\] table\)$",
        ),
        (
            "stage = []\n",
            r"^bad\.toml: stage: empty \(expected at least one \[\[stage\]\] table\)$",
        ),
        (
            '[stage]\nkind = "batch"\n',
            r'^bad\.toml: stage: \{kind = "batch"\} is not a list of stages '
            r"\(expected \[\[stage\]\] tables\)$",
        ),
        (
            "[[stage]]\nmax_messages = 3\n",
            rf"^bad\.toml: stage\[0\]\.kind: missing \(expected one of {KINDS}\)$",
        ),
        (
            '[[stage]]\nkind = "skip-to-latest"\n[[stage]]\nkind = "drop-old"\n',
            rf'^bad\.toml: stage\[1\]\.kind: "drop-old" is not a stage kind '
            rf"\(expected one of {KINDS}\)$",
        ),
        (
            '[[stage]]\nkind = "disconnect"\nmax_lagg = "5s"\n',
            r'^bad\.toml: stage\[0\]\.max_lagg: unknown key for "disconnect" \(expected one of '
            r'"kind", "max_messages", "max_bytes", "max_lag", "max_buffer", "grace", "code", '
            r'"reason"\)$',
        ),
        (
            '[[stage]]\nkind = "skip-to-latest"\nmax_messages = 3\n',
            r'^bad\.toml: stage\[0\]\.max_messages: unknown key for "skip-to-latest" '
            r'\(expected one of "kind"\)$',
        ),
        (
            '[[stage]]\nkind = "drop-oldest"\nmax_messages = "10"\n',
            r'^bad\.toml: stage\[0\]\.max_messages: "10" is not a count '
            r"\(expected an integer >= 1, e\.g\. 256\)$",
        ),
        (
            '[[stage]]\nkind = "drop-oldest"\nmax_messages = true\n',
            r"^bad\.toml: stage\[0\]\.max_messages: true is not a count "
            r"\(expected an integer >= 1, e\.g\. 256\)$",
        ),
        (
            '[[stage]]\nkind = "drop-oldest"\nmax_bytes = "64 kb?"\n',
            r'^bad\.toml: stage\[0\]\.max_bytes: "64 kb\?" is not a size '
            r'\(expected bytes, e\.g\. 65536, "64KiB", "1MiB"\)$',
        ),
        (
            '[[stage]]\nkind = "throttle"\nrate = "fast"\n',
            r'^bad\.toml: stage\[0\]\.rate: "fast" is not a rate '
            r'\(expected per second, e\.g\. 10, 0\.5 or "600/min"\)$',
        ),
        (
            '[[stage]]\nkind = "disconnect"\nmax_lag = 5\ncode = "1013"\n',
            r'^bad\.toml: stage\[0\]\.code: "1013" is not a close code '
            r"\(expected an integer, e\.g\. 1013\)$",
        ),
        (
            '[[stage]]\nkind = "disconnect"\nmax_lag = 5\nreason = 7\n',
            r"^bad\.toml: stage\[0\]\.reason: 7 is not a string "
            r'\(expected e\.g\. "subscriber too slow"\)$',
        ),
        (
            '[[stage]]\nkind = "batch"\ncombine = ["lines"]\n',
            r'^bad\.toml: stage\[0\]\.combine: \["lines"\] is not a combiner name '
            r'\(expected "json-array" or "lines"\)$',
        ),
    ],
)
def test_every_mistake_names_the_file_the_key_and_the_value(text: str, message: str) -> None:
    with pytest.raises(PolicyFileError, match=message):
        parse_policy(text, filename="bad.toml")


@pytest.mark.parametrize(
    ("text", "message", "key"),
    [
        (
            '[[stage]]\nkind = "drop-oldest"\nmax_messages = 0\n',
            r"^bad\.toml: stage\[0\]\.max_messages: max_messages=0 must be >= 1$",
            "stage[0].max_messages",
        ),
        (
            '[[stage]]\nkind = "throttle"\nrate = -1\n',
            r"^bad\.toml: stage\[0\]\.rate: rate=-1\.0 must be a finite number > 0$",
            "stage[0].rate",
        ),
        (
            '[[stage]]\nkind = "disconnect"\nmax_lag = "5s"\ncode = 1006\n',
            r"^bad\.toml: stage\[0\]\.code: code=1006 is not a close code a server may send "
            r"\(expected 1000-1003, 1007-1014 or 3000-4999\)$",
            "stage[0].code",
        ),
        (
            '[[stage]]\nkind = "batch"\ncombine = "csv"\n',
            r"^bad\.toml: stage\[0\]\.combine: combine='csv' is not a known combiner "
            r"\(expected one of \['json-array', 'lines'\]\)$",
            "stage[0].combine",
        ),
        (
            '[[stage]]\nkind = "disconnect"\ngrace = "1s"\n',
            r"^bad\.toml: stage\[0\]: Disconnect\(\) needs at least one of max_messages, "
            r"max_bytes, max_lag, max_buffer$",
            "stage[0]",
        ),
        (
            '[[stage]]\nkind = "drop-oldest"\n[[stage]]\nkind = "skip-to-latest"\n'
            '[[stage]]\nkind = "drop-newest"\n',
            r"^bad\.toml: stage\[2\]: DropOldest\(\) and DropNewest\(\) both decide what to "
            r"evict when the queue is full; keep one of them$",
            "stage[2]",
        ),
    ],
)
def test_a_policy_error_is_reraised_with_the_file_and_the_key(
    text: str, message: str, key: str
) -> None:
    with pytest.raises(PolicyFileError, match=message) as caught:
        parse_policy(text, filename="bad.toml")
    assert caught.value.key == key
    assert caught.value.__cause__ is not None


def test_an_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(
        PolicyFileError,
        match=r'^"chatt" is not a preset \(expected one of "chat", "dashboard", "event-feed", '
        r'"live-feed", "log-tail", "market-data", "mobile", "notifications"; or a path to a '
        r"\.toml file\)$",
    ):
        load_policy("chatt")


def test_a_missing_or_unreadable_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(PolicyFileError, match=rf"^{re.escape(str(missing))}: no such file$"):
        load_policy(missing)
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PolicyFileError, match=rf"^{re.escape(str(binary))}: not UTF-8 text$"):
        load_policy(binary)


def test_a_policy_file_error_is_a_policy_error() -> None:
    from wsfanout import PolicyError

    assert issubclass(PolicyFileError, PolicyError)
    assert issubclass(PolicyFileError, ValueError)


def test_load_policy_refuses_a_value_that_is_neither_name_nor_path() -> None:
    with pytest.raises(TypeError, match=r"^expected a preset name or a path, not int$"):
        load_policy(3)  # type: ignore[arg-type]
