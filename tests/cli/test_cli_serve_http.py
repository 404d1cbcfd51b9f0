"""``POST /publish`` with a real ``curl``, and what the listener answers over plain HTTP."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import urllib.parse

import pytest
from cli_process import GUARD, Process, client, one_client_per_worker
from websockets.exceptions import InvalidStatus

from harness.redis_server import RedisServer

CURL = shutil.which("curl")


def curl_command() -> str:
    assert CURL is not None, "curl is missing: make debian-packages installs it"
    return CURL


def curl(url: str, *args: str) -> tuple[int, str]:
    """``curl`` as a user would run it: the HTTP status and the body it printed."""
    done = subprocess.run(
        [curl_command(), "-sS", "-o", "-", "-w", "\n%{http_code}", *args, url],
        capture_output=True,
        text=True,
        timeout=GUARD,
        check=True,
    )
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body.removesuffix("\n")  # the line ending every answer has


def http_url(ws_url: str, path: str) -> str:
    return "http" + ws_url.removeprefix("ws") + path


def test_curl_publishes_to_the_clients_of_a_topic(wsfanout: type[Process]) -> None:
    server = wsfanout(["serve", "--port", "0", "--http-publish", "--key-field", "k"])
    url = server.listening()
    publish = http_url(url, "/publish")
    with client(url, "/?topic=news") as news, client(url, "/") as everyone:
        server.wait_for(r"client connected: .* /\?topic=news ")
        server.wait_for(r"client connected: .* / policy ")
        assert curl(publish + "?topic=news", "-X", "POST", "-d", "hello news") == (
            200,
            '{"offered": 2}',
        )
        assert news.recv(timeout=GUARD) == "hello news"
        assert everyone.recv(timeout=GUARD) == "hello news"
        assert curl(publish, "-H", "Wsfanout-Topic: sports", "-d", "goal") == (
            200,
            '{"offered": 1}',
        )
        assert everyone.recv(timeout=GUARD) == "goal"
        # Binary as declared; a body that is not UTF-8 is binary anyway.
        assert curl(
            publish, "-H", "Content-Type: application/octet-stream", "--data-binary", "text"
        ) == (200, '{"offered": 2}')
        assert news.recv(timeout=GUARD) == b"text"
        assert everyone.recv(timeout=GUARD) == b"text"
        payload = bytes(range(256)) * 40  # 10 KiB, sent once the server says to continue
        done = subprocess.run(
            [
                *(
                    curl_command(),
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--data-binary",
                    "@-",
                ),
                *("-H", "Expect: 100-continue", publish + "?topic=news"),
            ],
            input=payload,
            capture_output=True,
            timeout=GUARD,
            check=True,
        )
        assert done.stdout == b"200"
        assert news.recv(timeout=GUARD) == payload
        assert everyone.recv(timeout=GUARD) == payload
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0


REFUSALS = [
    (["-X", "POST"], "", 400, "empty body (expected the message as the request body)"),
    (
        ["-d", "x"],
        "?lossless=maybe",
        400,
        "lossless='maybe' is not a boolean (expected true or false, 1 or 0)",
    ),
    (["-d", "x"], "?topic=", 400, "topic is empty (expected a name, or no topic at all)"),
    (["-d", "x"], "?topic=a&topic=b", 400, "topic is given 2 times (expected at most once)"),
    ([], "", 405, "method GET not allowed (expected POST, with the message as body)"),
    (["-H", "Transfer-Encoding: chunked", "-d", "x"], "", 411, "give a Content-Length, not chunks"),
    (["-d", "x" * 2000], "", 413, "message too large (2000 bytes; at most 1024)"),
]


def test_a_bad_publish_is_refused_with_its_reason_and_publishes_nothing(
    wsfanout: type[Process],
) -> None:
    server = wsfanout(["serve", "--port", "0", "--http-publish", "--publish-max-size", "1KiB"])
    url = server.listening()
    with client(url, "/") as ws:
        server.wait_for("client connected")
        for args, query, status, why in REFUSALS:
            assert curl(http_url(url, "/publish" + query), *args) == (status, why), why
            line = server.wait_for(r"refused 127\.0\.0\.1:\d+ /publish\S*: (.*)$")[1]
            assert line == f"{status} {why}"
        assert curl(http_url(url, "/publish"), "-d", "x" * 1024) == (200, '{"offered": 1}')
        assert ws.recv(timeout=GUARD) == "x" * 1024  # the first message it receives
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0


def test_a_lossless_publish_is_published_lossless(wsfanout: type[Process]) -> None:
    # What lossless means for a subscriber is tested on the hub; here: the flag is read
    # (as a parameter or a header) and the message goes out.
    server = wsfanout(["serve", "--port", "0", "--http-publish"])
    url = server.listening()
    publish = http_url(url, "/publish")
    with client(url, "/") as ws:
        server.wait_for("client connected")
        assert curl(publish + "?lossless=true", "-d", "must arrive") == (200, '{"offered": 1}')
        assert curl(publish, "-H", "Wsfanout-Lossless: 1", "-d", "too") == (200, '{"offered": 1}')
        assert ws.recv(timeout=GUARD) == "must arrive"
        assert ws.recv(timeout=GUARD) == "too"
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0


def test_publishers_need_the_subscribers_token_or_their_own(wsfanout: type[Process]) -> None:
    server = wsfanout(
        ["serve", "--port", "0", "--token-env", "SUB_TOKEN", "--http-publish"],
        env={"SUB_TOKEN": "sub-s3cret"},
    )
    url = server.listening()
    publish = http_url(url, "/publish")
    with client(url, "/?token=sub-s3cret") as ws:
        server.wait_for("client connected")
        assert curl(publish, "-d", "x")[0] == 401
        assert curl(publish, "-d", "x", "-H", "Authorization: Bearer nope")[0] == 403
        assert curl(publish + "?token=sub-s3cret", "-d", "one") == (200, '{"offered": 1}')
        assert curl(publish, "-d", "two", "-H", "Authorization: Bearer sub-s3cret")[0] == 200
        assert [ws.recv(timeout=GUARD), ws.recv(timeout=GUARD)] == ["one", "two"]
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0

    server = wsfanout(
        ["serve", "--port", "0", "--token-env", "SUB_TOKEN", "--publish-token-env", "PUB_TOKEN"],
        env={"SUB_TOKEN": "sub-s3cret", "PUB_TOKEN": "pub-s3cret"},
    )
    url = server.listening()
    publish = http_url(url, "/publish")
    with client(url, "/?token=sub-s3cret") as ws:
        server.wait_for("client connected")
        assert curl(publish + "?token=sub-s3cret", "-d", "x")[0] == 403
        assert curl(publish + "?token=pub-s3cret", "-d", "three")[0] == 200
        assert ws.recv(timeout=GUARD) == "three"
        with pytest.raises(InvalidStatus) as refused:  # and it opens no subscription
            client(url, "/?token=pub-s3cret").close()
        assert refused.value.response.status_code == 403
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0
    assert not [line for line in server.seen + server.rest() if "s3cret" in line]


def test_plain_http_is_answered_and_logged(wsfanout: type[Process]) -> None:
    server = wsfanout(["serve", "--port", "0"])
    url = server.listening()
    status, body = curl(http_url(url, "/"))
    assert status == 426
    assert "You need a WebSocket client" in body
    assert server.wait_for(r"refused 127\.0\.0\.1:\d+ /: (.*)$")[1] == (
        "426 not a WebSocket request (missing Connection header)"
    )
    assert curl(http_url(url, "/publish"), "-d", "x") == (
        404,
        "POST /publish is off (start serve with --http-publish)",
    )
    server.wait_for(r"refused .* /publish: 404 POST /publish is off")
    assert curl(http_url(url, "/feed"), "-d", "x") == (
        405,
        "method POST not allowed (expected GET, a WebSocket upgrade)",
    )
    server.wait_for(r"refused .* /feed: 405 method POST not allowed")
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0


def raw_request(url: str, head: str, body: bytes = b"") -> bytes:
    """Send ``head`` (and ``body`` once the server asks for it), return the whole answer."""
    address = urllib.parse.urlsplit(url)
    assert address.hostname is not None
    assert address.port is not None
    with socket.create_connection((address.hostname, address.port), timeout=GUARD) as sock:
        sock.sendall(head.encode())
        if body:
            interim = sock.recv(4096)
            assert interim == b"HTTP/1.1 100 Continue\r\n\r\n", interim
            sock.sendall(body + b"GET / HTTP/1.1\r\n\r\n")  # and junk after it, not read
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_a_request_body_is_read_once_after_100_continue(wsfanout: type[Process]) -> None:
    server = wsfanout(["serve", "--port", "0", "--http-publish"])
    url = server.listening()
    with client(url, "/") as ws:
        server.wait_for("client connected")
        head = (
            "POST /publish?key=k HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            "Expect: 100-continue\r\n\r\n"
        )
        answer = raw_request(url, head, b"hello")
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
        assert answer.endswith(b'\r\n\r\n{"offered": 1}\n')
        assert ws.recv(timeout=GUARD) == "hello"
        # Two different lengths are a smuggling attempt, not a message.
        head = "POST /publish HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"
        assert raw_request(url, head).startswith(b"HTTP/1.1 400 Bad Request\r\n")
        server.wait_for(r"refused .* /publish: 400 invalid Content-Length")
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0


def test_curl_publishes_to_the_clients_of_every_worker(
    wsfanout: type[Process], redis_server: RedisServer
) -> None:
    scaling = ["--redis", redis_server.url, "--workers", "2"]
    server = wsfanout(["serve", "--port", "0", "--http-publish", *scaling])
    url = server.listening()
    with contextlib.ExitStack() as stack:
        clients = one_client_per_worker(server, url, 2, stack)
        for n in range(4):  # whichever worker answers, every worker's clients receive
            status, body = curl(http_url(url, "/publish"), "-d", f"m{n}")
            assert status == 200
            assert json.loads(body)["offered"] >= 1
            for ws in clients:
                assert ws.recv(timeout=GUARD) == f"m{n}"
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0
