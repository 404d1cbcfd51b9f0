"""Run ``wsfanout`` as a subprocess and follow what it prints, without sleeping.

Also the clients the tests connect to it; the redis-server for ``serve --redis`` and
free ports come from the shared ``harness`` package.
A module of its own (not conftest.py) so that tests import it by a name no other
test folder's conftest can shadow.
"""

from __future__ import annotations

import base64
import contextlib
import os
import queue
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

WSFANOUT = Path(sys.executable).parent / "wsfanout"
GUARD = 15.0
"""Seconds after which a wait is a failure; never a way to let time pass."""


class Process:
    """A running ``wsfanout``: its merged stdout and stderr are read line by line."""

    def __init__(
        self,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        shell: str = "",
        max_descriptors: int | None = None,
    ) -> None:
        command: str | list[str] = [str(WSFANOUT), *args]
        if shell:
            command = f"{shell} | {WSFANOUT} {' '.join(args)}"
        self.popen = subprocess.Popen(
            command,
            shell=bool(shell),
            stdin=None if shell else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            preexec_fn=None if max_descriptors is None else _limit_descriptors(max_descriptors),
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first line from now on that matches ``pattern``."""
        while True:
            try:
                line = self.lines.get(timeout=GUARD)
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern!r} in {GUARD} s: {self.seen}"
                ) from None
            if line is None:
                raise AssertionError(f"exited before printing {pattern!r}: {self.seen}")
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def wait_for_each(self, *patterns: str) -> None:
        """Lines matching every one of ``patterns``, in any order (several processes
        print them, so their order is not the order of events)."""
        waiting = list(patterns)
        while waiting:
            line = self.wait_for("|".join(f"(?:{pattern})" for pattern in waiting)).string
            waiting = [pattern for pattern in waiting if not re.search(pattern, line)]

    def listening(self) -> str:
        return self.wait_for(r"^wsfanout: listening on (ws://\S+)")[1]

    def feed(self, text: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(text.encode())
        self.popen.stdin.flush()

    def end_input(self) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.close()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.popen.send_signal(signum)

    def exit_code(self) -> int:
        return self.popen.wait(timeout=GUARD)

    def stop(self) -> None:
        """Kill the process if it still runs, reap it and close its pipes."""
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=GUARD)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                stream.close()

    def rest(self) -> list[str]:
        """Every line printed after the last one waited for, once the process has exited."""
        self.exit_code()
        lines = []
        while (line := self.lines.get(timeout=GUARD)) is not None:
            lines.append(line)
        return lines


def _limit_descriptors(limit: int) -> Any:
    def apply() -> None:  # in the child, before it runs wsfanout
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


def client(url: str, path: str = "/", **kwargs: Any) -> ClientConnection:
    ws: ClientConnection = connect(url + path, open_timeout=GUARD, close_timeout=GUARD, **kwargs)
    return ws


def one_client_per_worker(
    server: Process, url: str, workers: int, stack: contextlib.ExitStack, query: str = ""
) -> list[ClientConnection]:
    """One client on each of ``workers`` worker processes, each with ``query`` (such as
    ``?topic=a``): clients connect until each worker has one (the kernel picks the
    worker; at most 64 tries), the others stay open in ``stack``."""
    chosen: dict[int, ClientConnection] = {}
    for n in range(64):
        path = f"/w{n}{query}"
        ws = stack.enter_context(client(url, path))
        found = server.wait_for(rf"worker (\d+): client connected: \S+ {re.escape(path)} ")
        chosen.setdefault(int(found[1]), ws)
        if len(chosen) == workers:
            return list(chosen.values())
    raise AssertionError(f"64 clients, all on workers {sorted(chosen)}")


def close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes; the code it sent."""
    try:
        while True:
            ws.recv(timeout=GUARD)
    except ConnectionClosed as closed:
        return None if closed.rcvd is None else closed.rcvd.code


def stalled_client(url: str, path: str = "/stalled") -> socket.socket:
    """Open a WebSocket by hand, then never read nor answer again."""
    address = urllib.parse.urlsplit(url)
    assert address.hostname is not None
    assert address.port is not None
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(GUARD)
    sock.connect((address.hostname, address.port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET {path} HTTP/1.1\r\nHost: {address.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    response = b""
    while not response.endswith(b"\r\n\r\n"):  # byte by byte: leave any frame unread
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock
