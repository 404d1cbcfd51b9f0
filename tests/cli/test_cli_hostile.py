"""``wsfanout serve`` against half-open handshakes and log floods (issue 12, item 4).

The server runs under a 256-descriptor limit, as the adversarial trial did; the
slowloris opens far more connections than that and never finishes a handshake.
"""

from __future__ import annotations

import contextlib
import errno
import socket
import struct

from cli_process import Process, client

SLOWLORIS = 600
"""Half-open connections opened: more than twice the server's descriptor limit."""


def half_open(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the rest
    return sock


def test_a_slowloris_under_a_low_descriptor_limit_cannot_keep_clients_out() -> None:
    server = Process(["serve", "--policy", "chat", "--port", "0"], max_descriptors=256)
    sockets: list[socket.socket] = []
    try:
        url = server.listening()
        port = int(url.rsplit(":", 1)[1])
        for _ in range(SLOWLORIS):
            # A socket the server cut before it was written is still hostile enough.
            with contextlib.suppress(OSError):
                sockets.append(half_open(port))
        # Every legitimate client gets in, within one handshake timeout, while the
        # slowloris holds its sockets open.
        for _ in range(10):
            with client(url) as ws:
                ws.ping().wait(timeout=3.0)
        for _ in range(10):
            server.wait_for(r"client (dis)?connected")
        server.signal()
        assert server.exit_code() == 0
        rest = server.rest()
        lines = server.seen + rest
        assert len(lines) < 40, f"{len(lines)} lines of log: {lines[:20]}"
        assert not any("Traceback" in line for line in lines), lines[:20]
        assert any("pending handshakes" in line for line in lines), lines
    finally:
        for sock in sockets:
            sock.close()
        if server.popen.poll() is None:
            server.popen.kill()


def test_a_ping_burst_then_a_reset_logs_one_line_not_hundreds() -> None:
    server = Process(["serve", "--policy", "chat", "--port", "0"])
    try:
        url = server.listening()
        for _ in range(3):
            with client(url) as ws:
                sock = ws.socket
                # 5,000 pings in one write, then a reset (SO_LINGER 0) before any pong
                # is read: the server's pongs fail once the reset arrives.
                frame = struct.pack("!BB", 0x89, 0x80) + b"\0\0\0\0"
                sock.sendall(frame * 5000)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            server.wait_for(r"client disconnected")
        server.signal()
        assert server.exit_code() == 0
        lines = server.seen + server.rest()
        sends = [line for line in lines if "socket.send() raised exception" in line]
        assert len(sends) <= 2, f"{len(sends)} lines: {sends[:5]}"
    finally:
        if server.popen.poll() is None:
            server.popen.kill()


def raw_request(port: int, path: str) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        return sock.recv(4096)


def test_the_token_is_redacted_wherever_a_client_puts_it() -> None:
    secret = "s3cret-Tok/en"
    quoted = "s3cret-Tok%2Fen"
    server = Process(
        ["serve", "--policy", "chat", "--port", "0", "--token-env", "FANOUT_TOKEN"],
        env={"FANOUT_TOKEN": secret},
    )
    try:
        url = server.listening()
        port = int(url.rsplit(":", 1)[1])
        paths = [
            f"/a?TOKEN={quoted}",  # refused (the query name is token, exactly): logged
            f"/room/{quoted}/x",  # a path segment
            f"/b?x=1#token={quoted}",  # a fragment
            f"/c?Token={quoted}&token=wrong",  # refused: a wrong token, beside the secret
        ]
        for path in paths:
            assert raw_request(port, path).startswith((b"HTTP/1.1 401", b"HTTP/1.1 403"))
        for _ in paths:
            server.wait_for(r"^wsfanout: refused ")
        with client(url, f"/room/{quoted}?token={quoted}") as ws:
            ws.ping().wait(timeout=3.0)
        server.wait_for(r"client connected")
        server.signal()
        lines = server.seen + server.rest()
        assert not [line for line in lines if secret in line or quoted in line], lines
        assert any("/room/***?token=***" in line for line in lines), lines
    finally:
        if server.popen.poll() is None:
            server.popen.kill()


def test_accept_out_of_descriptors_is_one_line_naming_the_limit() -> None:
    from wsfanout._cli.process import resource_exhaustion

    emfile = OSError(errno.EMFILE, "Too many open files")
    message = "socket.accept() out of system resource"
    line = resource_exhaustion({"message": message, "exception": emfile})
    assert line is not None
    assert "EMFILE" in line
    assert "ulimit -n" in line
    # Any other loop error keeps asyncio's report, traceback and all.
    reset = OSError(errno.ECONNRESET, "reset")
    assert resource_exhaustion({"message": "x", "exception": reset}) is None
    assert resource_exhaustion({"message": "x", "exception": ValueError("no errno")}) is None
    assert resource_exhaustion({"message": "x"}) is None
