"""``wsfanout check``, ``--help`` everywhere, and flags that refuse to be given wrong."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cli_process import WSFANOUT
from websockets.datastructures import Headers
from websockets.http11 import Request

from wsfanout._cli.admission import presented_token, redacted
from wsfanout._cli.main import describe_policy, main
from wsfanout.files import preset_names

GOOD = (
    '[[stage]]\nkind = "drop-oldest"\nmax_messages = 64\n'
    '[[stage]]\nkind = "disconnect"\nmax_lag = "5s"\n'
)
BAD = '[[stage]]\nkind = "disconnect"\nmax_lag = "5 seconds"\n'


def test_check_prints_the_resolved_policy_and_its_bound(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "good.toml").write_text(GOOD)
    assert main(["check", str(tmp_path / "good.toml")]) == 0
    out = capsys.readouterr().out
    assert f"{tmp_path / 'good.toml'}: ok\n" in out
    assert "  policy:     DropOldest(max_messages=64) | Disconnect(max_lag=5.0)\n" in out
    assert "  bound:      64 messages or 1MiB queued; when full: drop the oldest\n" in out


def test_check_reports_every_bad_file_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("good.toml").write_text(GOOD)
    Path("bad.toml").write_text(BAD)
    assert main(["check", "bad.toml", "good.toml", "missing.toml", "chatt"]) == 2
    captured = capsys.readouterr()
    assert "good.toml: ok" in captured.out
    assert captured.err.splitlines() == [
        'wsfanout check: error: bad.toml: stage[0].max_lag: "5 seconds" is not a duration '
        '(expected e.g. "250ms", "5s")',
        "wsfanout check: error: missing.toml: no such file",
        'wsfanout check: error: "chatt" is not a preset (expected one of "chat", "dashboard", '
        '"event-feed", "live-feed", "log-tail", "market-data", "mobile", "notifications"; '
        "or a path to a .toml file)",
    ]


def test_check_reads_routing_files_and_presets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "routes.toml").write_text(
        'default = "dashboard"\n[[route]]\npath = "/prices/*"\npolicy = "market-data"\n'
    )
    assert main(["check", str(tmp_path / "routes.toml"), "chat"]) == 0
    out = capsys.readouterr().out
    assert "routes.toml: ok (routing file)\n" in out
    assert '  route[0]: path = "/prices/*" -> market-data\n' in out
    assert "    arrival:    conflate-by-key\n" in out
    assert "  default: * -> dashboard\n" in out
    assert "chat (preset): ok\n" in out


def test_check_list_shows_every_preset_and_stage_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--list"]) == 0
    out = capsys.readouterr().out
    for name in preset_names():
        assert f"\n  {name}\n" in out
    assert "  conflate-by-key ConflateByKey: max_messages, max_bytes, reduce\n" in out
    assert "  escalate        Escalate: level, hold, announce\n" in out
    assert "  disconnect      Disconnect: max_messages, max_bytes, max_lag, max_buffer" in out


def test_check_shows_the_guarantees_a_policy_declares() -> None:
    from wsfanout.policies import DropNewest, SkipToLatest, Throttle

    assert not any(line.startswith("guarantees") for line in describe_policy(DropNewest()))
    lines = describe_policy(SkipToLatest() | Throttle(rate=5.0))
    assert lines[-2:] == ["guarantees: NewestDelivered()", "            MaxSendRate(rate=5.0)"]


def test_check_as_a_command_exits_non_zero_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text(BAD)
    result = subprocess.run(
        [WSFANOUT, "check", "bad.toml"], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("wsfanout check: error: bad.toml: stage[0].max_lag: ")
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("command", [[], ["serve"], ["demo"], ["check"]])
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*command, "--help"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: wsfanout {' '.join(command)}".rstrip())


def test_python_dash_m_is_the_same_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wsfanout", "--version"], capture_output=True, text=True, timeout=30
    )
    assert (result.returncode, result.stdout.split()[0]) == (0, "wsfanout")


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "serve" in capsys.readouterr().err


SERVE = ["serve", "--policy", "chat"]


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (
            [*SERVE, "--unix", "/tmp/x.sock", "--port", "9000"],
            {},
            "serve: error: --port 9000: give --unix PATH or a host and port, not both",
        ),
        (
            [*SERVE, "--tls-cert", "cert.pem"],
            {},
            "serve: error: --tls-cert cert.pem: needs --tls-key FILE too",
        ),
        (
            [*SERVE, "--compression", "zip"],
            {},
            "serve: error: argument --compression: 'zip' is not one of shared, per-connection, off",
        ),
        (
            [*SERVE, "--publish-token-env", "WSFANOUT_TEST_EMPTY", "--no-http-publish"],
            {"WSFANOUT_TEST_EMPTY": "x"},
            "serve: error: --publish-token-env WSFANOUT_TEST_EMPTY: needs --http-publish, "
            "which is off",
        ),
        (
            SERVE,
            {"WSFANOUT_PORT": "http"},
            "serve: error: WSFANOUT_PORT='http' is not a port number",
        ),
        (
            SERVE,
            {"WSFANOUT_EXIT_ON_EOF": "sometimes"},
            "serve: error: WSFANOUT_EXIT_ON_EOF='sometimes' is not a boolean (expected true or "
            "false, 1 or 0, yes or no, on or off)",
        ),
        (
            ["serve"],
            {"WSFANOUT_POLICY": "chat", "WSFANOUT_ROUTES": "r.toml"},
            "serve: error: WSFANOUT_POLICY and WSFANOUT_ROUTES: give one of them, not both",
        ),
        (
            [*SERVE, "--routes", "r.toml"],
            {},
            "serve: error: argument --routes: not allowed with argument --policy",
        ),
        (
            [*SERVE, "--max-clients", "0"],
            {},
            "serve: error: argument --max-clients: '0' must be >= 1",
        ),
        (
            [*SERVE, "--max-clients", "many"],
            {},
            "serve: error: argument --max-clients: 'many' is not an integer",
        ),
        (
            [*SERVE, "--port", "70000"],
            {},
            "serve: error: argument --port: '70000' is not a port number (0-65535; 0 picks one)",
        ),
        (
            [*SERVE, "--max-size", "0"],
            {},
            "serve: error: argument --max-size: '0' must be >= 1 byte",
        ),
        (
            [*SERVE, "--max-size", "lots"],
            {},
            "serve: error: argument --max-size: 'lots' is not a size "
            '(expected e.g. 4096, "4KiB", "1MiB")',
        ),
        (
            [*SERVE, "--close-timeout", "0s"],
            {},
            "serve: error: argument --close-timeout: '0s' must be > 0",
        ),
        (
            [*SERVE, "--origin", "example.com"],
            {},
            "serve: error: argument --origin: 'example.com' is not an origin (expected "
            'scheme://host[:port], e.g. https://example.com, or "none" to admit clients that '
            "send no Origin)",
        ),
        (
            [*SERVE, "--token-env", "WSFANOUT_TEST_UNSET"],
            {},
            "serve: error: --token-env WSFANOUT_TEST_UNSET: that environment variable is not set",
        ),
        (
            [*SERVE, "--token-env", "WSFANOUT_TEST_EMPTY"],
            {"WSFANOUT_TEST_EMPTY": " "},
            "serve: error: --token-env WSFANOUT_TEST_EMPTY: that environment variable is empty",
        ),
        (
            [*SERVE, "--key-field", ""],
            {},
            "serve: error: argument --key-field: '' is empty (expected a field name)",
        ),
        (["demo", "--clients", "0"], {}, "demo: error: argument --clients: '0' must be >= 1"),
        (
            ["demo", "--duration", "soon"],
            {},
            "demo: error: argument --duration: 'soon' is not a duration "
            '(expected e.g. "250ms", "5s" or 5)',
        ),
        (["check"], {}, "check: error: expected FILE... or --list"),
        (
            [*SERVE, "--host", ""],
            {},
            "serve: error: argument --host: '' is empty "
            "(expected an address; 0.0.0.0 means every interface)",
        ),
    ],
)
def test_a_flag_given_wrong_is_a_usage_error_never_silently_off(
    args: list[str],
    env: dict[str, str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("WSFANOUT_TEST_UNSET", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: wsfanout ")
    assert err.splitlines()[-1] == f"wsfanout {message}"


def test_a_bad_policy_for_serve_is_an_error_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.toml").write_text(BAD)
    assert main(["serve", "--policy", str(tmp_path / "bad.toml")]) == 2
    assert capsys.readouterr().err == (
        f'wsfanout serve: error: {tmp_path / "bad.toml"}: stage[0].max_lag: "5 seconds" is '
        'not a duration (expected e.g. "250ms", "5s")\n'
    )


def test_a_port_in_use_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--policy", "chat", "--port", str(port)]) == 1
    assert capsys.readouterr().err == (
        f"wsfanout serve: error: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    )


def test_tokens_are_taken_from_the_header_or_the_query_and_never_logged() -> None:
    def request(path: str, **headers: str) -> Request:
        return Request(path, Headers(headers))

    assert presented_token(request("/", Authorization="Bearer abc")) == "abc"
    assert presented_token(request("/", Authorization="bearer  abc ")) == "abc"
    assert presented_token(request("/?token=q1&x=2")) == "q1"
    assert presented_token(request("/", Authorization="Basic dXNlcg==")) is None
    assert presented_token(request("/x")) is None
    assert redacted("/room?token=s3cret&x=1") == "/room?token=***&x=1"
    assert redacted("/room") == "/room"
    assert redacted("/room?TOKEN=s3cret#token=s3cret") == "/room?TOKEN=***#token=***"
    assert redacted("/s3cret/x?k=s3cret%2F", "s3cret/") == "/***x?k=***"


def test_key_field_takes_the_key_of_json_object_lines_only() -> None:
    from wsfanout._cli.input import key_of

    assert key_of('{"symbol": "EURUSD", "bid": 1.08}', "symbol") == "EURUSD"
    assert key_of('{"symbol": 7}', "symbol") == "7"
    assert key_of('{"other": "x"}', "symbol") is None
    assert key_of("symbol=EURUSD", "symbol") is None
    assert key_of("{not json", "symbol") is None


def test_check_shows_the_paces_of_an_adaptive_preset_and_its_acknowledgements(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["check", "mobile"]) == 0
    out = capsys.readouterr().out
    assert "  ladder:     40 levels, at most one step per 1s; steps not announced\n" in out
    assert "    after 10s without a new drain rate: a faster pace\n" in out
    assert (
        "    a wsfanout.v1 client is asked to acknowledge; once it does, paced from\n"
        "      what it takes, frames held while more than 100ms of that (4KiB at least) "
        "is untaken\n"
    ) in out
