"""``wsfanout serve``'s logs: one JSON object per event with ``--log-format json`` (a
connect, each kind of refusal, a close with its code, cause and counts, drops
summarised at most once per interval per client), and ``-q``'s quiet."""

from __future__ import annotations

import datetime
import http.client
import itertools
import json
import re
import signal
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from cli_process import GUARD, Process, client, close_code
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin


def events(server: Process, name: str, count: int = 1, **match: object) -> list[dict[str, Any]]:
    """The next ``count`` JSON lines of event ``name`` whose fields include ``match``."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        line = server.wait_for(rf'^\{{.*"event": "{name}"').string
        record = json.loads(line)
        if all(record.get(key) == value for key, value in match.items()):
            found.append(record)
    return found


def plain_get(url: str, path: str) -> int:
    address = urllib.parse.urlsplit(url)
    assert address.hostname is not None
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=GUARD)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def test_json_logs_have_one_object_per_connect_refusal_and_close(
    wsfanout: type[Process],
) -> None:
    good = Origin("https://app.example.com")
    server = wsfanout(
        [
            *("serve", "--policy", "chat", "--port", "0", "--log-format", "json"),
            *("--token-env", "TOKEN", "--origin", good, "--max-clients", "1"),
        ],
        env={"TOKEN": "s3cret"},
    )
    url = server.listening()
    bearer = {"Authorization": "Bearer s3cret"}
    with client(url, "/room?token=s3cret", origin=good) as ws:
        (connect,) = events(server, "connect")
        assert connect["message"].startswith("client connected: 127.0.0.1:")
        assert (connect["level"], connect["logger"], connect["policy"]) == (
            "info",
            "wsfanout.serve",
            "chat",
        )
        assert connect["path"] == "/room?token=***"
        assert re.fullmatch(r"127\.0\.0\.1:\d+", connect["peer"])
        assert datetime.datetime.fromisoformat(connect["time"].replace("Z", "+00:00"))
        refusals: list[tuple[dict[str, Any], int, str]] = [
            ({"origin": good}, 401, "missing token"),
            ({"origin": good, "path": "/?token=nope"}, 403, "wrong token"),
            (
                {"origin": Origin("https://evil.example"), "additional_headers": bearer},
                403,
                "origin https://evil.example not allowed",
            ),
            ({"origin": good, "additional_headers": bearer}, 503, "too many clients (max 1)"),
        ]
        for kwargs, status, why in refusals:
            path = str(kwargs.pop("path", "/"))
            with pytest.raises(InvalidStatus):
                client(url, path, **kwargs).close()
            (refused,) = events(server, "refuse")
            assert (refused["status"], refused["reason"]) == (status, why)
        assert plain_get(url, "/page?token=s3cret") == 426
        (refused,) = events(server, "refuse")
        assert (refused["status"], refused["reason"], refused["path"]) == (
            426,
            "not a WebSocket request (missing Connection header)",
            "/page?token=***",
        )
        server.feed("hello\n")
        assert ws.recv(timeout=GUARD) == "hello"
        ws.close(4000, "leaving now")
    (closed,) = events(server, "close")
    assert {key: closed[key] for key in ("ended", "code", "cause", "offered", "sent")} == {
        "ended": "client",
        "code": 4000,
        "cause": "leaving now",
        "offered": 1,
        "sent": 1,
    }
    assert closed["dropped"] == 0
    assert closed["id"] == connect["id"]
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0
    lines = server.seen + server.rest()
    assert not [line for line in lines if "s3cret" in line or "nope" in line]
    for line in lines:
        if not line.startswith("wsfanout: listening on "):
            json.loads(line)  # every other line is one JSON object


def test_drops_are_summarised_at_most_once_per_interval_per_client(
    wsfanout: type[Process], tmp_path: Path
) -> None:
    policy = tmp_path / "lossy.toml"
    policy.write_text('[[stage]]\nkind = "drop-oldest"\nmax_messages = 4\n')
    server = wsfanout(
        [
            *("serve", "--policy", str(policy), "--port", "0"),
            *("--log-format", "json", "--log-drops-every", "200ms"),
        ]
    )
    url = server.listening()
    line = "x" * 65536 + "\n"
    with client(url, "/stalled", compression=None, max_queue=1) as stalled:
        (connect,) = events(server, "connect")
        stalled.close_timeout = 0.1  # it reads nothing: closing it must not wait
        summaries: list[dict[str, Any]] = []
        while len(summaries) < 3:
            server.feed(line * 100)
            summaries += events(server, "drops", id=connect["id"])
        times = [
            datetime.datetime.fromisoformat(s["time"].replace("Z", "+00:00")) for s in summaries
        ]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert min(gaps) >= 0.19, gaps  # the logging clock counts in milliseconds
        for summary in summaries:
            assert summary["dropped"] == summary["dropped_oldest"] > 0
            assert summary["interval"] == 0.2
            # the bound the policy keeps; fewer when the relay had just handed one to a
            # kernel buffer that still had room (default socket options hold megabytes)
            assert 0 <= summary["queued_messages"] <= 4
            assert summary["message"].startswith(
                f"client 127.0.0.1:{summary['client'].split(':')[1].split()[0]} /stalled "
                f"dropped {summary['dropped']} messages in the last 0.2 s (oldest "
            )
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0


def test_quiet_leaves_out_the_line_per_client_but_not_the_notices(
    wsfanout: type[Process],
) -> None:
    server = wsfanout(["serve", "--policy", "chat", "--port", "0", "-q"])
    url = server.listening()
    with client(url, "/quiet") as ws:
        server.feed("hi\n")
        assert ws.recv(timeout=GUARD) == "hi"
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0
    assert server.rest() == []  # no connect, close, shutting down or stopped line
    loud = wsfanout(["serve", "--policy", "chat", "--port", "0", "-q", "--log-level", "info"])
    url = loud.listening()
    with client(url, "/loud") as ws:
        loud.wait_for(r"^wsfanout: client connected: .* /loud policy chat$")
        ws.close()
    loud.wait_for(
        r"^wsfanout: client disconnected: .* /loud sent 0, dropped 0, closed by the "
        r"client: 1000 the client closed the connection$"
    )
    loud.signal(signal.SIGTERM)
    assert loud.exit_code() == 0


def test_a_client_cut_by_its_policy_is_logged_with_the_code_and_cause(
    wsfanout: type[Process], tmp_path: Path
) -> None:
    policy = tmp_path / "strict.toml"
    policy.write_text('[[stage]]\nkind = "disconnect"\nmax_messages = 2\n')
    server = wsfanout(["serve", "--policy", str(policy), "--port", "0", "--close-timeout", "1s"])
    url = server.listening()
    with client(url, "/strict", compression=None, max_queue=1) as ws:
        server.wait_for("client connected")
        ws.close_timeout = 0.1
        server.feed(("y" * 65536 + "\n") * 200)
        server.wait_for(
            r"^wsfanout: client disconnected: .* /strict sent \d+, dropped \d+, closed: 1013 "
            r"3 messages queued > max_messages=2$"
        )
        assert close_code(ws) in (1013, None)
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0
