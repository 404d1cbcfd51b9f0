"""A real redis-server child process on 127.0.0.1, started and stopped by a test.

No persistence, loopback only, on a free port that stays the same across restarts, so
a test can kill Redis and start it again under its clients. Waiting is on the server's
own "Ready to accept connections" line, under a timeout that only guards against a
hang. ``RedisServer`` is for synchronous tests; ``AsyncRedisServer`` offers the same
methods to be awaited.
"""

from __future__ import annotations

import asyncio
import queue
import shutil
import signal
import subprocess
import threading

import pytest

from .ports import free_port

__all__ = ["GUARD", "AsyncRedisServer", "RedisServer"]

GUARD = 30.0
"""Seconds after which a wait is a hang: generous, never the expected duration."""

OPTIONS = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--protected-mode", "no")


class RedisServer:
    """A redis-server on a free port of 127.0.0.1 (or ``port``), which may be restarted."""

    def __init__(self, port: int | None = None) -> None:
        self.port = free_port() if port is None else port
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start redis-server and return once it accepts connections."""
        executable = shutil.which("redis-server")
        if executable is None:
            pytest.fail(
                "redis-server is not installed: `make test` installs Debian's redis-server, "
                "or run `apt-get install -y redis-server`"
            )
        popen = subprocess.Popen(
            [executable, "--port", str(self.port), *OPTIONS, "--loglevel", "notice"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.popen = popen
        lines: queue.Queue[bytes | None] = queue.Queue()

        def read() -> None:  # and keep reading, so that a full pipe never blocks the server
            assert popen.stdout is not None
            for line in popen.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, daemon=True).start()
        output: list[bytes] = []
        while True:
            line = lines.get(timeout=GUARD)
            if line is None:
                raise RuntimeError(f"redis-server exited: {b''.join(output).decode()}")
            output.append(line)
            if b"Ready to accept connections" in line:
                return

    def kill(self) -> None:
        """SIGKILL: the server vanishes without closing anything cleanly."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        self._end(signal.SIGTERM)

    def _end(self, signum: int) -> None:
        popen, self.popen = self.popen, None
        if popen is None:
            return
        if popen.poll() is None:
            popen.send_signal(signum)
        try:
            popen.wait(timeout=GUARD)
        except subprocess.TimeoutExpired:
            popen.kill()
            popen.wait()
        assert popen.stdout is not None
        popen.stdout.close()


class AsyncRedisServer(RedisServer):
    """The same server for asyncio tests: ``await server.start()`` and so on, run in a
    thread so the event loop (and the clients on it) keeps going meanwhile."""

    async def start(self) -> None:  # type: ignore[override]
        await asyncio.to_thread(RedisServer.start, self)

    async def kill(self) -> None:  # type: ignore[override]
        await asyncio.to_thread(RedisServer.kill, self)

    async def stop(self) -> None:  # type: ignore[override]
        await asyncio.to_thread(RedisServer.stop, self)
