"""``wsfanout serve`` end to end: a subprocess, real clients on 127.0.0.1, no sleeps."""

from __future__ import annotations

import http.client
import json
import re
import signal
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from cli_process import GUARD, Process, client, close_code, stalled_client
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from wsfanout import client_script_source


class _Epoch:
    """Equal to any epoch: eight letters and digits."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and re.fullmatch(r"[a-z0-9]{8}", other) is not None


ANY_EPOCH = _Epoch()


def test_lines_from_stdin_reach_a_connected_client(wsfanout: type[Process]) -> None:
    server = wsfanout(["serve", "--policy", "chat", "--port", "0"])
    url = server.listening()
    with client(url, "/room?token=s3cret") as ws:
        server.wait_for(r"client connected: 127\.0\.0\.1:\d+ /room\?token=\*\*\* policy chat$")
        server.feed("a\nb\n")
        assert [ws.recv(timeout=GUARD), ws.recv(timeout=GUARD)] == ["a", "b"]
        server.feed("caf\xe9 \r\n")
        assert ws.recv(timeout=GUARD) == "caf\xe9 "
        server.end_input()
        server.wait_for(r"end of input after 3 messages$")
        # Without --exit-on-eof the server keeps serving: a new client is still admitted.
        with client(url, "/late") as late:
            server.wait_for(r"client connected: .* /late policy chat$")
            server.signal(signal.SIGTERM)
            assert close_code(late) == 1001
        assert close_code(ws) == 1001
    assert server.exit_code() == 0
    assert not [line for line in server.rest() if "Traceback" in line]


def test_printf_into_serve_reaches_a_client_then_closes_with_1000(
    wsfanout: type[Process],
) -> None:
    server = wsfanout(
        ["serve", "--policy", "chat", "--port", "0", "--wait-clients", "1", "--exit-on-eof"],
        shell="printf 'a\\nb\\n'",
    )
    url = server.listening()
    with client(url) as ws:
        assert [ws.recv(timeout=GUARD), ws.recv(timeout=GUARD)] == ["a", "b"]
        assert close_code(ws) == 1000
    assert server.exit_code() == 0


def test_serve_serves_the_javascript_client_without_a_token(wsfanout: type[Process]) -> None:
    server = wsfanout(
        ["serve", "--policy", "chat", "--port", "0", "--token-env", "FANOUT_TOKEN"],
        env={"FANOUT_TOKEN": "s3cret"},
    )
    port = urllib.parse.urlsplit(server.listening()).port
    assert port is not None
    script = http.client.HTTPConnection("127.0.0.1", port, timeout=GUARD)
    script.request("GET", "/wsfanout.js")
    response = script.getresponse()
    assert response.status == 200
    assert response.getheader("Content-Type") == "text/javascript; charset=utf-8"
    assert response.read() == client_script_source()
    script.close()
    feed = http.client.HTTPConnection("127.0.0.1", port, timeout=GUARD)
    feed.request("GET", "/feed")  # anything else still needs the token
    assert feed.getresponse().status == 401
    feed.close()
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0


def test_serve_frames_messages_for_a_client_that_offers_wsfanout_v1(
    wsfanout: type[Process],
) -> None:
    server = wsfanout(["serve", "--policy", "chat", "--port", "0"])
    url = server.listening()
    with client(url, subprotocols=[Subprotocol("wsfanout.v1")]) as framed, client(url) as raw:
        server.wait_for("client connected")
        server.wait_for("client connected")
        server.feed("a\n")
        assert framed.subprotocol == "wsfanout.v1"
        frame = framed.recv(timeout=GUARD)
        assert isinstance(frame, str)
        header, payload = frame.split("\n")
        assert json.loads(header) == {"o": 1, "e": ANY_EPOCH}
        assert payload == "a"
        assert raw.recv(timeout=GUARD) == "a"
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0


def test_serve_asks_a_v1_client_of_an_adaptive_policy_to_acknowledge(
    wsfanout: type[Process],
) -> None:
    server = wsfanout(["serve", "--policy", "mobile", "--port", "0"])
    url = server.listening()
    v1 = [Subprotocol("wsfanout.v1")]
    with client(url, subprotocols=v1) as acking, client(url, subprotocols=v1) as wrong:
        for ws in (acking, wrong):
            assert ws.recv(timeout=GUARD) == '{"type":"ack-request","interval":0.05}'
        server.wait_for("client connected")
        server.wait_for("client connected")
        acking.send('{"type":"ack","n":1}')
        wrong.send('{"type":"ack","n":"all"}')
        assert (close_code(wrong), wrong.close_reason) == (
            1008,
            "ack n='all' is not a whole number >= 0",
        )
        server.feed("a\n")
        frame = acking.recv(timeout=GUARD)
        assert isinstance(frame, str)
        assert frame.split("\n")[1] == "a"
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0


def test_a_client_sending_more_than_max_size_is_closed_with_1009(
    wsfanout: type[Process],
) -> None:
    server = wsfanout(["serve", "--policy", "dashboard", "--port", "0", "--max-size", "1KiB"])
    url = server.listening()
    with client(url) as ws:
        server.wait_for("client connected")
        ws.send("x" * 1024)  # at the limit: accepted
        ws.send("x" * 1025)
        assert close_code(ws) == 1009
    assert server.wait_for(r"client disconnected: 127\.0\.0\.1:\d+ / (.*)$")[1] == (
        "sent 0, dropped 0, closed: 1009 message too big: frame exceeds limit of 1024 bytes "
        "(max_size)"
    )
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0


def test_strangers_are_refused_while_admitted_clients_keep_receiving(
    wsfanout: type[Process],
) -> None:
    good = Origin("https://app.example.com")
    server = wsfanout(
        [
            "serve",
            "--policy",
            "notifications",
            "--port",
            "0",
            "--token-env",
            "FANOUT_TOKEN",
            "--origin",
            good,
            "--max-clients",
            "2",
        ],
        env={"FANOUT_TOKEN": "s3cret\n"},  # a token file's trailing newline
    )
    url = server.listening()
    bearer = {"Authorization": "Bearer s3cret"}
    with (
        client(url, "/a", origin=good, additional_headers=bearer) as first,
        client(url, "/b?token=s3cret", origin=good) as second,
    ):
        server.wait_for(r"client connected: .* /a policy")
        server.wait_for(r"client connected: .* /b\?token=\*\*\* policy")
        refusals: list[tuple[dict[str, Any], str]] = [
            ({"origin": good}, "401 missing token"),
            (
                {"origin": good, "additional_headers": {"Authorization": "Bearer nope"}},
                "403 wrong token",
            ),
            ({"origin": good, "path": "/?token=nope"}, "403 wrong token"),
            (
                {"origin": Origin("https://evil.example"), "additional_headers": bearer},
                "403 origin https://evil.example not allowed",
            ),
            ({"additional_headers": bearer}, "403 origin none not allowed"),
            ({"origin": good, "additional_headers": bearer}, "503 too many clients (max 2)"),
        ]
        for kwargs, why in refusals:
            path = str(kwargs.pop("path", "/"))
            with pytest.raises(InvalidStatus) as refused:
                client(url, path, **kwargs).close()
            assert refused.value.response.status_code == int(why[:3]), why
            line = server.wait_for(r"refused 127\.0\.0\.1:\d+ /\S*: (.*)$")
            assert line[1] == why
        server.feed("still here\n")
        assert first.recv(timeout=GUARD) == "still here"
        assert second.recv(timeout=GUARD) == "still here"
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0
    assert not [line for line in server.seen + server.rest() if "s3cret" in line or "nope" in line]


def test_a_place_freed_by_a_client_that_left_is_given_to_the_next(
    wsfanout: type[Process],
) -> None:
    server = wsfanout(["serve", "--policy", "chat", "--port", "0", "--max-clients", "1"])
    url = server.listening()
    with client(url, "/first"):
        server.wait_for("client connected: .* /first")
    server.wait_for("client disconnected: .* /first")
    with client(url, "/second") as ws:
        server.wait_for("client connected: .* /second")
        server.feed("hello\n")
        assert ws.recv(timeout=GUARD) == "hello"
    server.signal(signal.SIGINT)
    assert server.exit_code() == 130


def test_sigterm_exits_promptly_with_a_stalled_client_connected(
    wsfanout: type[Process], tmp_path: Path
) -> None:
    (tmp_path / "roomy.toml").write_text(
        '[[stage]]\nkind = "drop-newest"\nmax_messages = 100000\nmax_bytes = "256MiB"\n'
    )
    server = wsfanout(
        [
            "serve",
            "--policy",
            str(tmp_path / "roomy.toml"),
            "--port",
            "0",
            "--close-timeout",
            "500ms",
        ]
    )
    url = server.listening()
    stalled = stalled_client(url)
    with stalled, client(url, "/fast") as fast:
        server.wait_for("client connected: .* /stalled")
        server.wait_for("client connected: .* /fast")
        line = "x" * 4000
        server.feed(f"{line}\n" * 500 + "last\n")  # 2 MB the stalled client never reads
        while fast.recv(timeout=GUARD) != "last":
            pass
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert close_code(fast) == 1001
        assert server.exit_code() == 0
        assert time.monotonic() - started < 5.0, "the stalled client held the exit up"


def test_a_routing_file_gives_each_client_its_policy(
    wsfanout: type[Process], tmp_path: Path
) -> None:
    (tmp_path / "routes.toml").write_text(
        'default = "dashboard"\n'
        '[[route]]\npath = "/prices/*"\npolicy = "market-data"\n'
        '[[route]]\nsubprotocol = "chat.v1"\npolicy = "chat"\n'
    )
    server = wsfanout(["serve", "--routes", str(tmp_path / "routes.toml"), "--port", "0"])
    url = server.listening()
    with (
        client(url, "/prices/EURUSD") as prices,
        client(url, "/room", subprotocols=[Subprotocol("x.v9"), Subprotocol("chat.v1")]) as chat,
        client(url, "/other", subprotocols=[Subprotocol("x.v9")]) as other,
    ):
        server.wait_for(r"client connected: .* /prices/EURUSD policy market-data$")
        server.wait_for(r"client connected: .* /room policy chat$")
        server.wait_for(r"client connected: .* /other policy dashboard$")
        assert (chat.subprotocol, other.subprotocol) == ("chat.v1", None)
        server.feed("tick\n")
        assert [ws.recv(timeout=GUARD) for ws in (prices, chat, other)] == ["tick"] * 3
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0


def test_a_client_that_resumes_gets_what_it_missed_from_serve_history(
    wsfanout: type[Process],
) -> None:
    server = wsfanout(["serve", "--policy", "chat", "--port", "0", "--history", "3"])
    line = server.wait_for(r"^wsfanout: listening on (ws://\S+) \((.*)\)$")
    url = line[1]
    assert line[2] == "policy chat, compression shared, history 3 messages a topic"
    with client(url, subprotocols=[Subprotocol("wsfanout.v1")]) as ws:
        server.wait_for(r"client connected: ")
        server.feed("one\n")
        header, payload = str(ws.recv(timeout=GUARD)).split("\n", 1)
        assert payload == "one"
        epoch = json.loads(header)["e"]
    server.wait_for(r"client disconnected: ")
    with client(url, "/watch") as watcher:
        server.wait_for(r"client connected: .* /watch policy chat$")
        server.feed("two\nthree\nfour\nfive\n")  # published while it is away; history keeps 3
        # Once another client has them, they are published, and in history: resume then.
        assert [watcher.recv(timeout=GUARD) for _ in range(4)] == ["two", "three", "four", "five"]
        since = urllib.parse.quote(f":{epoch}:1")
        with client(url, f"/?since={since}", subprotocols=[Subprotocol("wsfanout.v1")]) as ws:
            frames = [str(ws.recv(timeout=GUARD)) for _ in range(5)]
    assert json.loads(frames[0]) == {
        "type": "resume", "e": epoch, "since": 1, "replay": [3, 5], "complete": False,
    }  # fmt: skip
    assert json.loads(frames[1])["ranges"] == [[2, 2]]
    assert [frame.split("\n", 1)[1] for frame in frames[2:]] == ["three", "four", "five"]


def test_history_bounds_without_history_are_a_usage_error(wsfanout: type[Process]) -> None:
    server = wsfanout(["serve", "--policy", "chat", "--history-age", "5s"])
    assert server.exit_code() == 2
    assert "--history-age 5s: needs --history N" in "".join(server.rest())
