"""Hostile policy and routing files: every failure is a one-line ``PolicyFileError``.

The cases the adversarial trial found (issue 12, item 7) are pinned one by one; then
hypothesis writes TOML documents shaped like policy and routing files (every stage
kind and parameter, values of every TOML type, hostile numbers and strings) and raw
text, and the loaders may only succeed or raise ``PolicyFileError`` naming the file
in one line of bounded length.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wsfanout._files.policy_files import MAX_MESSAGE, STAGE_KINDS, parameters
from wsfanout._files.units import show_toml
from wsfanout.exceptions import PolicyFileError
from wsfanout.files import parse_policy, parse_routes

FUZZ = settings(
    max_examples=300 if os.environ.get("CI") == "true" else 60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
"""Modest on purpose: about a second in dev, a few in CI."""

WSFANOUT = Path(sys.executable).parent / "wsfanout"

DIGITS = "9" * 1_000_000

PINNED = {
    "a throttle without rate": '[[stage]]\nkind = "throttle"\n',
    "an integer of 4,400 digits": f"[[stage]]\nkind = 'drop-oldest'\nmax_messages = {'9' * 4400}\n",
    "an integer of 4,000 digits": f"[[stage]]\nkind = 'drop-oldest'\nmax_messages = {'9' * 4000}\n",
    "5,000 levels of nesting": "description = " + "[" * 5000 + "]" * 5000 + "\n",
    "a million-digit size": f'[[stage]]\nkind = "drop-oldest"\nmax_bytes = "{DIGITS}KiB"\n',
    "a million-digit duration": f'[[stage]]\nkind = "disconnect"\nmax_lag = "{DIGITS}h"\n',
    "a million-digit rate": f'[[stage]]\nkind = "throttle"\nrate = "{DIGITS}/h"\n',
    "a size past 2**63": f'[[stage]]\nkind = "drop-oldest"\nmax_bytes = "{"9" * 30}"\n',
    "a megabyte of reason": (
        f'[[stage]]\nkind = "disconnect"\nmax_lag = 1\nreason = "{"x" * 2**20}"\n'
    ),
    "a key with a line feed": '[[stage]]\nkind = "batch"\n"max\\nmessages" = 3\n',
}

ROUTES_PINNED = {
    "a NUL in a policy path": 'default = "a\\u0000.toml"\n',
    "a NUL in a route's policy": 'default = "chat"\n[[route]]\npath = "/x"\npolicy = "x/\\u0000"\n',
    "3,000 levels of inline tables": (
        'default = "chat"\n[[route]]\npath = "/x"\npolicy = "chat"\nquery = '
        + "{a = " * 3000
        + '"1"'
        + "}" * 3000
        + "\n"
    ),
    "a header name of a megabyte": (
        f'default = "chat"\n[[route]]\npolicy = "chat"\nheader = {{ "{"h" * 2**20}" = 1 }}\n'
    ),
}


def assert_one_line_error(error: PolicyFileError, filename: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert len(message) <= MAX_MESSAGE + len(filename) + 100, len(message)
    assert message.startswith(filename) or filename in message
    assert error.filename == filename


@pytest.mark.parametrize("text", PINNED.values(), ids=PINNED.keys())
def test_each_hostile_policy_file_found_is_a_one_line_error(text: str) -> None:
    with pytest.raises(PolicyFileError) as caught:
        parse_policy(text, filename="hostile.toml")
    assert_one_line_error(caught.value, "hostile.toml")


def test_the_throttle_without_rate_names_the_missing_key() -> None:
    with pytest.raises(PolicyFileError, match=r"^t\.toml: stage\[0\]\.rate: missing: ") as caught:
        parse_policy(PINNED["a throttle without rate"], filename="t.toml")
    assert caught.value.key == "stage[0].rate"


@pytest.mark.parametrize("text", ROUTES_PINNED.values(), ids=ROUTES_PINNED.keys())
def test_each_hostile_routing_file_found_is_a_one_line_error(text: str) -> None:
    with pytest.raises(PolicyFileError) as caught:
        parse_routes(text, filename="routes.toml")
    assert_one_line_error(caught.value, "routes.toml")


# -- fuzzing -------------------------------------------------------------------------

NUMBERS = st.one_of(
    st.integers(min_value=-(2**64), max_value=2**64),
    st.floats(allow_nan=True, allow_infinity=True),
)
UNIT_STRINGS = st.builds(
    lambda number, unit: f"{number}{unit}",
    st.one_of(st.integers(min_value=0), st.text("0123456789.", max_size=40)),
    st.sampled_from(["", "ms", "s", "m", "h", "min", "KiB", "MiB", "kb", "/s", "/min", "x"]),
)
SCALARS = st.one_of(NUMBERS, st.booleans(), st.text(max_size=30), UNIT_STRINGS)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
PARAMETER_NAMES = sorted({name for kind in STAGE_KINDS for name in parameters(kind)})
STAGE_KEYS = st.one_of(st.sampled_from(["kind", *PARAMETER_NAMES]), st.text(max_size=10))


def toml_key(name: str) -> str:
    return json.dumps(name)  # a quoted key is any string, escaped as a basic string


def toml_value(value: object) -> str:
    return show_toml(value)


@st.composite
def policy_documents(draw: st.DrawFn) -> str:
    lines = []
    if draw(st.booleans()):
        lines.append(f"description = {toml_value(draw(SCALARS))}")
    for _ in range(draw(st.integers(0, 3))):
        lines.append("[[stage]]")
        if draw(st.integers(0, 9)):
            kind = draw(st.one_of(st.sampled_from(sorted(STAGE_KINDS)), st.text(max_size=8)))
            lines.append(f"kind = {toml_value(kind)}")
        keys = draw(st.dictionaries(STAGE_KEYS.filter(lambda k: k != "kind"), VALUES, max_size=4))
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in keys.items()]
    return "\n".join(lines) + "\n"


@st.composite
def routing_documents(draw: st.DrawFn) -> str:
    policy = st.one_of(st.sampled_from(["chat", "dashboard", "x.toml", "a/b"]), VALUES)
    lines = []
    if draw(st.integers(0, 9)):
        lines.append(f"default = {toml_value(draw(policy))}")
    for _ in range(draw(st.integers(0, 3))):
        lines.append("[[route]]")
        keys = st.one_of(
            st.sampled_from(["path", "query", "header", "subprotocol", "policy"]),
            st.text(max_size=8),
        )
        table = draw(st.dictionaries(keys, st.one_of(policy, VALUES), max_size=4))
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


def only_policy_file_errors(load: Callable[[str], object], text: str) -> None:
    try:
        load(text)
    except PolicyFileError as error:
        assert_one_line_error(error, "fuzz.toml")


@FUZZ
@given(policy_documents())
def test_a_policy_document_loads_or_is_a_one_line_policy_file_error(text: str) -> None:
    only_policy_file_errors(lambda t: parse_policy(t, filename="fuzz.toml"), text)


@FUZZ
@given(routing_documents())
def test_a_routing_document_loads_or_is_a_one_line_policy_file_error(text: str) -> None:
    only_policy_file_errors(lambda t: parse_routes(t, filename="fuzz.toml"), text)


@FUZZ
@given(st.text(max_size=200))
def test_raw_text_is_a_policy_or_a_one_line_policy_file_error(text: str) -> None:
    only_policy_file_errors(lambda t: parse_policy(t, filename="fuzz.toml"), text)
    only_policy_file_errors(lambda t: parse_routes(t, filename="fuzz.toml"), text)


# -- the command ---------------------------------------------------------------------


def run(
    *args: str, cwd: Path, stdout: int | None = subprocess.PIPE
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(WSFANOUT), *args],
        cwd=cwd,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )


def test_check_reports_each_hostile_file_in_one_line_and_checks_the_others(tmp_path: Path) -> None:
    names = []
    for n, text in enumerate(PINNED.values()):
        (tmp_path / f"h{n}.toml").write_text(text)
        names.append(f"h{n}.toml")
    result = run("check", *names, "chat", "/dev/zero", cwd=tmp_path)
    assert result.returncode == 2
    errors = result.stderr.splitlines()
    assert len(errors) == len(names) + 1, result.stderr[:2000]
    assert all(line.startswith("wsfanout check: error: ") for line in errors)
    assert errors[-1] == (
        "wsfanout check: error: /dev/zero: larger than 1048576 bytes: not a policy or routing file"
    )
    assert "chat (preset): ok" in result.stdout
    assert "Traceback" not in result.stderr


def test_check_list_into_a_reader_that_leaves_stops_quietly(tmp_path: Path) -> None:
    result = subprocess.run(
        f"{WSFANOUT} check --list | head -1; exit ${{PIPESTATUS[0]}}",
        shell=True,
        executable="/bin/bash",
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout == "Presets (--policy NAME, load_policy(NAME)):\n"
    assert result.stderr == ""
    # 141 (SIGPIPE) when head left before the listing was written; 0 when the whole
    # listing fit the pipe first: either way quietly, never an error or a traceback.
    assert result.returncode in (0, 141)
