"""The C load generator (benchmarks/loadgen.c) against a real hub, and against garbage.

Its counts are the 10,000-client benchmark's evidence, so it is run against a Hub on
127.0.0.1 (every record must arrive, in order, in the counts published), and against a
fake server whose bytes are not the hub's: it must exit with an error naming what is
wrong, never count garbage or wait for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from wire_helpers import TIMEOUT, c_loadgen

from benchmarks.payload import Payloads
from benchmarks.server import frame_of, serve_kwargs
from harness.polling import until
from wsfanout import Hub


@pytest.fixture(scope="module")
def loadgen() -> Path:
    return c_loadgen()


async def line_of(stream: asyncio.StreamReader) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        message: dict[str, Any] = json.loads(await stream.readline())
    return message


# Sizes whose frames take each of the three length encodings (7, 16 and 64 bits), and
# few enough of the largest that the default policy keeps every client.
@pytest.mark.parametrize(("size", "published"), [(100, 30), (1000, 30), (70_000, 4)])
async def test_every_record_a_hub_publishes_is_counted_in_order(
    loadgen: Path, size: int, published: int
) -> None:
    clients = 5
    hub = Hub()

    async def handler(ws: ServerConnection) -> None:
        await hub.serve(ws)

    async with serve(handler, "127.0.0.1", 0, **serve_kwargs("off")) as server:
        port = server.sockets[0].getsockname()[1]
        argv = [str(loadgen), "--port", str(port), "--clients", str(clients), "--size", str(size)]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            assert await line_of(proc.stdout) == {"event": "connected", "negotiated": 0}
            await until(lambda: len(hub) == clients, TIMEOUT)
            proc.stdin.write(b"go\n")
            await proc.stdin.drain()
            payloads = Payloads(size)
            for seq in range(published):
                hub.publish(payloads.make(seq))
            await until(lambda: hub.stats().sent == clients * published, TIMEOUT)
            # Closing every connection ends its run: its close frame follows the records.
            server.close()
            result = await line_of(proc.stdout)
            proc.stdin.write(b"stop\n")
            await proc.stdin.drain()
            async with asyncio.timeout(TIMEOUT):
                assert await proc.wait() == 0, await proc.stderr.read()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert result["loadgen"] == "c"
    assert result["healthy"] == clients
    assert result["records"] == clients * published
    assert result["records_min"] == result["records_max"] == published
    assert result["frames"] == clients * published
    assert result["out_of_order"] == 0
    assert result["closed"] == clients
    assert result["wire_bytes"] > clients * published * size
    assert 0 < result["latency_ms"]["p50"] <= result["latency_ms"]["p99"]
    assert result["latency_ms"]["p99"] <= result["latency_ms"]["max"]
    assert result["wall_s"] > 0
    assert 0 <= result["user_s"] + result["system_s"] <= result["cpu_s"] + 0.02


UPGRADED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
RECORD = Payloads(100).make(0).encode()


@pytest.fixture
def fake_server() -> Iterator[Callable[[bytes | None], int]]:
    """A server on 127.0.0.1 that reads one request and answers it with given bytes
    (``None``: closes the connection instead); returns its port."""
    listener = socket.create_server(("127.0.0.1", 0))
    threads: list[threading.Thread] = []

    def answer(reply: bytes | None) -> None:
        conn, _ = listener.accept()
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            if reply is None:
                return
            conn.sendall(reply)
            with contextlib.suppress(OSError):
                while conn.recv(4096):  # until the load generator has gone
                    pass

    def start(reply: bytes | None) -> int:
        thread = threading.Thread(target=answer, args=(reply,), daemon=True)
        thread.start()
        threads.append(thread)
        port: int = listener.getsockname()[1]
        return port

    yield start
    listener.close()
    for thread in threads:
        thread.join(TIMEOUT)
        assert not thread.is_alive()


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (b"SSH-2.0-OpenSSH_9.6\r\n\r\n", r'client 0: handshake refused: "SSH-2\.0-OpenSSH_9\.6"'),
        (None, "client 0: handshake: connection closed"),
        (UPGRADED + b"\x81\x05hello", "a frame of 5 bytes is not records of --size 100"),
        (UPGRADED + frame_of(RECORD, 0xC1), "reserved bits set in a frame"),
        (UPGRADED + b"\x81\x85abcd" + b"hello", "a masked frame"),
        (UPGRADED + frame_of(RECORD, 0x01), "a fragmented message"),
        (UPGRADED + frame_of(RECORD, 0x83), "unknown opcode 0x3"),
        (UPGRADED + b"\x81\x7f" + (1 << 40).to_bytes(8, "big"), "a frame of 1099511627776 bytes"),
        (UPGRADED + frame_of(RECORD[:5] + b"x" * 10 + RECORD[15:], 0x81), "the sequence number"),
        (UPGRADED + frame_of(RECORD + b" " + RECORD, 0x81), "not separated by newlines"),
    ],
)
def test_garbage_from_a_server_is_an_error_not_a_hang(
    loadgen: Path, fake_server: Callable[[bytes | None], int], reply: bytes | None, error: str
) -> None:
    port = fake_server(reply)
    argv = [str(loadgen), "--port", str(port), "--clients", "1", "--size", "100"]
    done = subprocess.run(argv, input=b"go\n", capture_output=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 1, done
    stderr = done.stderr.decode()
    assert stderr.startswith("loadgen.c: ")
    assert re.search(error, stderr), stderr
    assert b"result" not in done.stdout


def test_records_out_of_order_or_repeated_are_counted(
    loadgen: Path, fake_server: Callable[[bytes | None], int]
) -> None:
    payloads = Payloads(100)
    frames = b"".join(frame_of(payloads.make(seq).encode(), 0x81) for seq in (0, 2, 1, 1, 3))
    batch = frame_of(payloads.make(5).encode() + b"\n" + payloads.make(4).encode(), 0x81)
    port = fake_server(UPGRADED + frames + batch + frame_of(b"\x03\xe8", 0x88))
    argv = [str(loadgen), "--port", str(port), "--clients", "1", "--size", "100"]
    # It prints its result once the only connection is closed, and exits at the end of stdin.
    done = subprocess.run(argv, input=b"go\n", capture_output=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 0, done
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["records"] == result["records_min"] == result["records_max"] == 7
    assert result["frames"] == 6
    assert result["out_of_order"] == 3
    assert result["closed"] == 1


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--stalled", "5"], "--stalled=5: this generator runs healthy clients only"),
        (["--deflate"], "--deflate=on: this generator runs healthy clients only"),
        (["--churn", "2.5"], "--churn=2.5: this generator runs healthy clients only"),
        (["--slow", "3"], "--slow=3: this generator runs healthy clients only"),
        (["--clients", "ten"], "--clients=ten is not a whole number"),
        (["--size", "10"], "--size=10 must be >= 47"),
    ],
)
def test_what_it_does_not_do_is_refused_by_name(loadgen: Path, args: list[str], error: str) -> None:
    argv = [str(loadgen), "--port", "9", "--clients", "1", "--size", "100", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert done.returncode == 2
    assert error in done.stderr
