"""``wsfanout serve --admin``: metrics, health, clients and the status page over HTTP,
503 while shutting down, and the addresses it refuses."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import urllib.parse

from cli_process import GUARD, Process, client

from harness.ports import free_port


def get(base: str, path: str) -> tuple[int, str, str]:
    """Status, content type and body of a GET."""
    address = urllib.parse.urlsplit(base)
    assert address.hostname is not None
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=GUARD)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        connection.close()


def listening(server: Process) -> tuple[str, str]:
    """The WebSocket URL and the admin URL of the listening line."""
    line = server.wait_for(
        r"^wsfanout: listening on (ws://\S+) \(policy chat, compression shared, admin (http://\S+)\)$"
    )
    return line[1], line[2]


def test_the_admin_listener_shows_clients_and_answers_503_while_shutting_down(
    wsfanout: type[Process],
) -> None:
    server = wsfanout(
        ["serve", "--policy", "chat", "--port", "0", "--admin", "0", "--close-timeout", "3s"]
    )
    url, admin = listening(server)
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", admin)
    assert get(admin, "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    with (
        client(url, "/reader?token=hidden", compression=None) as reader,
        client(url, "/stalled", compression=None, max_queue=1) as stalled,
    ):
        server.wait_for(r"client connected: .* /reader\?token=\*\*\* policy chat$")
        server.wait_for(r"client connected: .* /stalled policy chat$")
        server.feed("one\ntwo\nthree\n")
        assert [reader.recv(timeout=GUARD) for _ in range(3)] == ["one", "two", "three"]

        status, kind, text = get(admin, "/metrics")
        assert status == 200
        assert kind.startswith("text/plain; version=")
        assert 'wsfanout_subscribers{policy="chat"} 2.0' in text
        assert 'wsfanout_messages_offered_total{policy="chat"} 6.0' in text
        assert "hidden" not in text

        status, kind, body = get(admin, "/clients?sort=sent")
        assert (status, kind) == (200, "application/json")
        page = json.loads(body)
        assert page["subscribers"] == 2
        paths = sorted(c["path"] for c in page["clients"])
        assert paths == ["/reader?token=***", "/stalled"]
        assert {c["policy"] for c in page["clients"]} == {"chat"}
        assert "hidden" not in body

        status, kind, html = get(admin, "/")
        assert (status, kind) == (200, "text/html; charset=utf-8")
        assert "<title>wsfanout status</title>" in html

        # The stalled client does not answer the close: shutting down takes its time.
        server.signal(signal.SIGTERM)
        server.wait_for(r"^wsfanout: shutting down: closing 2 clients with 1001$")
        assert get(admin, "/healthz") == (503, "text/plain; charset=utf-8", "stopping\n")
        stalled.close_timeout = 0.1  # it reads nothing more, the server's close included
    assert server.exit_code() == 0
    assert server.rest()[-1] == "wsfanout: stopped by SIGTERM"


def test_admin_addresses_it_cannot_use_are_refused(wsfanout: type[Process]) -> None:
    bad = wsfanout(["serve", "--policy", "chat", "--admin", "nowhere"])
    assert bad.exit_code() == 2
    assert bad.rest()[-1] == (
        "wsfanout serve: error: argument --admin: 'nowhere' is not HOST:PORT "
        "(e.g. 127.0.0.1:9000, or 9000)"
    )
    ipv6 = wsfanout(["serve", "--policy", "chat", "--admin", "::1:9000"])
    assert ipv6.exit_code() == 2
    assert ipv6.rest()[-1].endswith("(write an IPv6 address in brackets)")
    workers = wsfanout(
        [
            *("serve", "--policy", "chat", "--admin", "9000"),
            *("--redis", "redis://127.0.0.1:1/0", "--workers", "2"),
        ]
    )
    assert workers.exit_code() == 2
    assert workers.rest()[-1] == (
        "wsfanout serve: error: --admin 127.0.0.1:9000: needs a single process, not "
        "--workers 2: each worker serves its own clients"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = wsfanout(
            ["serve", "--policy", "chat", "--port", str(free_port()), "--admin", str(port)]
        )
        assert busy.exit_code() == 1
        assert busy.rest()[-1] == (
            f"wsfanout serve: error: cannot listen on admin address 127.0.0.1:{port}: "
            "Address already in use"
        )


def test_an_admin_listener_on_every_interface_is_warned_about(wsfanout: type[Process]) -> None:
    server = wsfanout(["serve", "--policy", "chat", "--port", "0", "--admin", "0.0.0.0:0"])
    server.wait_for(
        r"^wsfanout: warning: the admin listener on 0\.0\.0\.0 has no authentication: "
        "anyone who can reach it sees every client's address and statistics$"
    )
    server.wait_for(
        r"^wsfanout: listening on ws://\S+ \(policy chat, compression shared, admin http://0\.0\.0\.0:\d+/\)$"
    )
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0
