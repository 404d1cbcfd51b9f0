"""What wsfanout relies on in websockets beyond its documented API, checked on a real connection.

wsfanout writes frames straight to a connection's transport, joins its flow-control
waiters and reads its protocol state (see ``_hub.py``, ``_subscriber.py``,
``_relay.py``). None of that is documented by websockets, so pyproject.toml pins the
major version and this module fails with a plain explanation if an upgrade changes it.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import importlib.metadata
import socket
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.protocol import Protocol, State

from wsfanout._core.frames import encode_frame
from wsfanout.lowlevel import OP_BINARY, OP_TEXT

GUARD = 10.0
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
VERSION = importlib.metadata.version("websockets")


def contract(holds: bool, what: str) -> None:
    """Fail with an explanation, not a bare assert, when websockets changed."""
    if not holds:
        pytest.fail(
            f"websockets {VERSION} broke an assumption of wsfanout: {what}. Review the "
            "modules that use it before widening the pin in pyproject.toml.",
            pytrace=False,
        )


@contextlib.asynccontextmanager
async def connection(
    *, compression: str | None = None, stalled: bool = False
) -> AsyncIterator[tuple[ServerConnection, ClientConnection]]:
    """A server connection on 127.0.0.1 and its client; ``stalled`` shrinks both buffers."""
    accepted: asyncio.Future[ServerConnection] = asyncio.get_running_loop().create_future()
    release = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        if stalled:
            sock = ws.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        accepted.set_result(ws)
        await release.wait()

    async with serve(handler, "127.0.0.1", 0, compression=compression) as server:
        host, port = server.sockets[0].getsockname()[:2]
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if stalled:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
        client = await connect(
            f"ws://{host}:{port}",
            sock=sock,
            compression=compression,
            max_queue=1 if stalled else 16,
        )
        try:
            yield await accepted, client
        finally:
            client.transport.abort()
            release.set()
            await client.wait_closed()


def check_pin(dependencies: list[str], version: str) -> None:
    """The websockets requirement exists once, has an upper bound and admits ``version``."""
    pins = [Requirement(d) for d in dependencies if Requirement(d).name == "websockets"]
    contract(len(pins) == 1, f"pyproject.toml pins websockets exactly once (got {dependencies})")
    (pin,) = pins
    contract(
        any(spec.operator in {"<", "<=", "=="} for spec in pin.specifier),
        f"the pin websockets{pin.specifier} has an upper bound",
    )
    contract(pin.specifier.contains(version), f"{version} is within websockets{pin.specifier}")


def test_installed_websockets_is_within_the_pinned_range() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    check_pin(dependencies, VERSION)


@pytest.mark.parametrize(
    ("dependencies", "version", "complaint"),
    [
        (["websockets>=17.0,<18"], "18.0", r"18\.0 is within websockets<18,>=17\.0"),
        (["websockets>=17.0"], "17.4", r"the pin websockets>=17\.0 has an upper bound"),
        (["attrs"], "17.4", r"pins websockets exactly once"),
    ],
)
def test_the_pin_check_catches_a_bad_pin(
    dependencies: list[str], version: str, complaint: str
) -> None:
    with pytest.raises(pytest.fail.Exception, match=complaint):
        check_pin(dependencies, version)


def check_connection(ws: ServerConnection) -> None:
    """The attributes the hub, subscribers and relays read on an open connection."""
    protocol = getattr(ws, "protocol", None)
    contract(isinstance(protocol, Protocol), "Connection.protocol is a sans-I/O Protocol")
    assert isinstance(protocol, Protocol)
    contract(protocol.state is State.OPEN, "Connection.protocol.state is State.OPEN when open")
    contract(
        isinstance(getattr(protocol, "extensions", None), list),
        "protocol.extensions is a list (empty without permessage-deflate)",
    )
    for method in ("send_text", "send_binary", "send_close", "data_to_send"):
        contract(callable(getattr(protocol, method, None)), f"Protocol.{method}() exists")
    transport = getattr(ws, "transport", None)
    contract(isinstance(transport, asyncio.Transport), "Connection.transport is a Transport")
    assert isinstance(transport, asyncio.Transport)
    low, high = transport.get_write_buffer_limits()
    contract(0 <= low <= high, "transport.get_write_buffer_limits() returns (low, high)")
    contract(
        hasattr(ws, "send_in_progress") and ws.send_in_progress is None,
        "Connection.send_in_progress is None when no fragmented message is being sent",
    )
    contract(getattr(ws, "paused", None) is False, "Connection.paused is False when writable")
    waiters = getattr(ws, "drain_waiters", None)
    contract(
        isinstance(waiters, collections.abc.MutableSequence) and len(waiters) == 0,
        "Connection.drain_waiters is an empty mutable sequence of futures (append/remove)",
    )
    lost = getattr(ws, "connection_lost_waiter", None)
    contract(
        isinstance(lost, asyncio.Future) and not lost.done(),
        "Connection.connection_lost_waiter is a pending Future while connected",
    )
    contract(callable(getattr(ws, "send_data", None)), "Connection.send_data() exists")
    # The read gate (_shell/reading.py) swaps the connection's class for a subclass that
    # overrides these asyncio protocol callbacks, and defers to websockets' own read
    # flow control, whose state it reads.
    for method in ("data_received", "resume_writing", "connection_lost"):
        contract(
            callable(getattr(type(ws), method, None)),
            f"Connection.{method}() is a method of the connection's class",
        )
    contract(
        hasattr(ws, "__dict__"),
        "Connection instances have a __dict__ (the read gate keeps its state there and "
        "swaps the instance's class)",
    )
    contract(
        isinstance(getattr(getattr(ws, "recv_messages", None), "paused", None), bool),
        "Connection.recv_messages.paused is a bool (websockets' own read flow control)",
    )


async def test_a_server_connection_exposes_what_the_hub_reads() -> None:
    async with asyncio.timeout(GUARD), connection() as (ws, _):
        check_connection(ws)
        assert ws.protocol.extensions == []


@pytest.mark.parametrize(
    ("attribute", "replacement", "complaint"),
    [
        ("drain_waiters", None, r"drain_waiters is an empty mutable sequence"),
        ("paused", 0, r"Connection\.paused is False when writable"),
        ("send_in_progress", "busy", r"send_in_progress is None"),
        ("connection_lost_waiter", None, r"connection_lost_waiter is a pending Future"),
        ("send_data", None, r"send_data\(\) exists"),
        ("recv_messages", None, r"recv_messages\.paused is a bool"),
    ],
)
async def test_the_connection_check_catches_a_changed_attribute(
    monkeypatch: pytest.MonkeyPatch, attribute: str, replacement: object, complaint: str
) -> None:
    async with asyncio.timeout(GUARD), connection() as (ws, _):
        monkeypatch.setattr(ws, attribute, replacement)
        with pytest.raises(pytest.fail.Exception, match=rf"^websockets .* broke .*{complaint}"):
            check_connection(ws)
        monkeypatch.undo()


async def test_protocol_frames_match_wsfanout_frames_and_reach_the_client() -> None:
    async with asyncio.timeout(GUARD), connection() as (ws, client):
        ws.protocol.send_text(b"hello")
        text = ws.protocol.data_to_send()
        contract(
            text == [encode_frame(OP_TEXT, b"hello")],
            "protocol.send_text() + data_to_send() give the unmasked frame wsfanout encodes",
        )
        ws.protocol.send_binary(b"\x00\x01" * 70_000)
        binary = ws.protocol.data_to_send()
        contract(
            binary == [encode_frame(OP_BINARY, b"\x00\x01" * 70_000)],
            "protocol.send_binary() + data_to_send() give wsfanout's frame (64-bit length)",
        )
        ws.transport.write(b"".join(text + binary))
        contract(await client.recv() == "hello", "a frame written to the transport is received")
        contract(await client.recv() == b"\x00\x01" * 70_000, "a 64-bit length frame is received")

        ws.protocol.send_binary(b"via send_data")
        ws.send_data()
        contract(
            await client.recv() == b"via send_data",
            "Connection.send_data() writes protocol.data_to_send() to the transport",
        )

        ws.protocol.send_close(1013, "try later")
        ws.send_data()
        contract(ws.protocol.state is State.CLOSING, "protocol.send_close() moves to CLOSING")
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
        contract(
            closed.value.rcvd == Close(1013, "try later"),
            "protocol.send_close(code, reason) + send_data() send that close frame",
        )


async def test_send_in_progress_is_a_future_while_a_fragmented_message_is_sent() -> None:
    async with asyncio.timeout(GUARD), connection() as (ws, client):
        gate = asyncio.Event()
        first_sent = asyncio.Event()

        async def fragments() -> AsyncIterator[str]:
            yield "frag"
            first_sent.set()
            await gate.wait()
            yield "ment"

        sending = asyncio.create_task(ws.send(fragments()))
        await first_sent.wait()
        progress = ws.send_in_progress
        contract(
            isinstance(progress, asyncio.Future) and not progress.done(),
            "Connection.send_in_progress is a pending Future during a fragmented send",
        )
        gate.set()
        await sending
        contract(
            ws.send_in_progress is None and progress is not None and progress.done(),
            "Connection.send_in_progress is reset to None and its future resolved after the send",
        )
        assert await client.recv() == "fragment"


async def test_drain_waiters_are_resolved_when_the_transport_resumes_writing() -> None:
    async with asyncio.timeout(GUARD), connection(stalled=True) as (ws, client):
        frame = encode_frame(OP_BINARY, bytes(1024))
        written = 0
        while not ws.paused and written < 10_000:
            ws.transport.write(frame)
            written += 1
        contract(ws.paused, "Connection.paused becomes True when the write buffer passes high")
        low, high = ws.transport.get_write_buffer_limits()
        assert ws.transport.get_write_buffer_size() > high
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ws.drain_waiters.append(waiter)
        received = 0
        while not waiter.done() and received < written:
            await client.recv()
            received += 1
        contract(
            waiter.done() and waiter.exception() is None,
            "a future appended to Connection.drain_waiters is resolved on resume_writing",
        )
        contract(ws.paused is False, "Connection.paused is False again after resume_writing")
        ws.drain_waiters.remove(waiter)
        assert ws.transport.get_write_buffer_size() <= low


async def test_connection_lost_waiter_completes_when_the_peer_goes_away() -> None:
    async with asyncio.timeout(GUARD), connection() as (ws, client):
        called: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ws.connection_lost_waiter.add_done_callback(lambda _: called.set_result(None))
        client.transport.abort()
        try:
            async with asyncio.timeout(2.0):
                await called
        except TimeoutError:
            contract(False, "callbacks on connection_lost_waiter run when the peer leaves")
        contract(ws.protocol.state is State.CLOSED, "protocol.state is CLOSED once the peer left")


async def test_extensions_list_the_negotiated_permessage_deflate() -> None:
    async with asyncio.timeout(GUARD), connection(compression="deflate") as (ws, client):
        names = [getattr(e, "name", None) for e in ws.protocol.extensions]
        contract(names == ["permessage-deflate"], "protocol.extensions lists permessage-deflate")
        ws.protocol.send_text(b"hello hello hello hello")
        data = ws.protocol.data_to_send()
        contract(
            data != [encode_frame(OP_TEXT, b"hello hello hello hello")],
            "with deflate, protocol.send_text() compresses, so wsfanout's shared frame is unusable",
        )
        ws.transport.write(b"".join(data))
        assert await client.recv() == "hello hello hello hello"
