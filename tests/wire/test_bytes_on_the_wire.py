"""The bytes wsfanout writes are the bytes websockets would write, to the last bit.

Expected bytes always come from websockets: a ``ServerProtocol`` with the same
negotiated extensions, ``send_text``/``send_binary``, then ``data_to_send()``. A real
websockets client then checks that it decodes what was published.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.extensions.permessage_deflate import ServerPerMessageDeflateFactory
from websockets.frames import Opcode
from wire_helpers import (
    RawClient,
    hub_servers,
    parse_frames,
    reference_protocol,
    websockets_bytes,
)

from wsfanout import Hub, Subscriber
from wsfanout._shell import fanout, sockets
from wsfanout.lowlevel import DeflateParams

Start = Callable[..., Any]

MESSAGES: list[str | bytes] = [
    "",
    "a",
    "é" * 62,  # 124 bytes of UTF-8
    "x" * 125,
    b"\x00" * 126,
    "y" * 65535,
    b"\xff" * 65536,
    '{"price": 101.25, "qty": 3}' * 100,
]
"""Every length encoding (7-bit, 16-bit, 64-bit), text and binary, empty, compressible."""


@pytest.fixture
async def hub_server() -> AsyncIterator[Start]:
    """Starts servers running a hub (``serve()`` keyword arguments); closes them after."""
    async with hub_servers() as start:
        yield start


RECOMMENDED = ServerPerMessageDeflateFactory(
    server_no_context_takeover=True,
    server_max_window_bits=12,
    client_max_window_bits=12,
    compress_settings={"memLevel": 5},
)


async def publish_and_read(
    start: Start, offer: str | None, messages: list[str | bytes], **serve: Any
) -> tuple[bytes, bytes]:
    """Publish ``messages`` to one raw client; return (wire bytes, websockets' bytes)."""
    running = await start(**serve)
    client = await RawClient.connect(running.port, offer)
    subscriber = await running.next_subscriber()
    expected = websockets_bytes(reference_protocol(subscriber), messages)
    for message in messages:
        running.hub.publish(message)
        await asyncio.sleep(0)  # one message per loop iteration: the plain fast path
    received = await client.read_exactly(len(expected))
    client.close()
    return received, expected


async def decoded_by_websockets(
    start: Start, messages: list[str | bytes], **serve: Any
) -> list[str | bytes]:
    running = await start(**serve)
    async with connect(f"ws://127.0.0.1:{running.port}/") as ws:
        await running.next_subscriber()
        for message in messages:
            running.hub.publish(message)
        return [await asyncio.wait_for(ws.recv(), 10) for _ in messages]


async def test_frames_without_extensions_are_websockets_frames(hub_server: Start) -> None:
    received, expected = await publish_and_read(hub_server, None, MESSAGES, compression=None)
    assert received == expected


async def test_shared_compressed_frames_are_websockets_frames(hub_server: Start) -> None:
    offer = "permessage-deflate; client_max_window_bits"
    received, expected = await publish_and_read(
        hub_server, offer, MESSAGES, compression=None, extensions=[RECOMMENDED]
    )
    assert received == expected
    assert all(frame.rsv1 for frame in parse_frames(received))


@pytest.mark.parametrize(
    ("offer", "factory"),
    [
        (
            "permessage-deflate; server_max_window_bits=9; client_max_window_bits",
            ServerPerMessageDeflateFactory(server_no_context_takeover=True),
        ),
        (
            "permessage-deflate; server_no_context_takeover",
            ServerPerMessageDeflateFactory(compress_settings={"level": 1, "memLevel": 9}),
        ),
    ],
)
async def test_other_stateless_parameters_are_encoded_as_websockets_does(
    hub_server: Start, offer: str, factory: ServerPerMessageDeflateFactory
) -> None:
    received, expected = await publish_and_read(
        hub_server, offer, MESSAGES, compression=None, extensions=[factory]
    )
    assert received == expected


async def test_context_takeover_frames_are_websockets_frames(hub_server: Start) -> None:
    # websockets' default compression: each connection's compressor keeps its context.
    offer = "permessage-deflate; client_max_window_bits"
    received, expected = await publish_and_read(hub_server, offer, MESSAGES)
    assert received == expected


async def test_a_websockets_client_decodes_shared_compressed_frames(hub_server: Start) -> None:
    decoded = await decoded_by_websockets(
        hub_server, MESSAGES, compression=None, extensions=[RECOMMENDED]
    )
    assert decoded == MESSAGES


async def test_a_websockets_client_decodes_plain_frames(hub_server: Start) -> None:
    assert await decoded_by_websockets(hub_server, MESSAGES, compression=None) == MESSAGES


@pytest.fixture
def compressions(monkeypatch: pytest.MonkeyPatch) -> list[DeflateParams]:
    """Every compression wsfanout performs for shared frames, by parameter set."""
    calls: list[DeflateParams] = []
    original = DeflateParams.frame

    def counting(self: DeflateParams, opcode: int, payload: bytes) -> bytes:
        calls.append(self)
        return original(self, opcode, payload)

    monkeypatch.setattr(DeflateParams, "frame", counting)
    return calls


async def test_one_compression_per_distinct_parameter_set(
    hub_server: Start, compressions: list[DeflateParams]
) -> None:
    factory = ServerPerMessageDeflateFactory(server_no_context_takeover=True)
    running = await hub_server(compression=None, extensions=[factory])
    offers = [
        "permessage-deflate",
        "permessage-deflate",
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; server_max_window_bits=10",
        None,  # no compression at all: the plain frame
    ]
    clients = []
    references = []
    for offer in offers:
        clients.append(await RawClient.connect(running.port, offer))
        references.append(reference_protocol(await running.next_subscriber()))
    message = '{"event": "tick", "values": [1, 2, 3]}' * 20
    running.hub.publish(message)
    for client, reference in zip(clients, references, strict=True):
        expected = websockets_bytes(reference, [message])
        assert await client.read_exactly(len(expected)) == expected
        client.close()
    assert sorted(params.window_bits for params in compressions) == [10, 15]


def record_writes(subscriber: Subscriber, monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every chunk written for the subscriber from now on, in one system call each:
    straight to its socket (``_shell/sockets.py``) or through its transport."""
    writes: list[bytes] = []
    transport = subscriber.websocket.transport
    fd = transport.get_extra_info("socket").fileno()
    real_write = transport.write

    def recording_write(data: bytes | bytearray | memoryview) -> None:
        writes.append(bytes(data))
        real_write(data)

    def recording_os_write(to: int, data: bytes | bytearray | memoryview) -> int:
        sent = os.write(to, data)
        if to == fd:
            writes.append(bytes(data)[:sent])
        return sent

    transport.write = recording_write  # type: ignore[method-assign]
    monkeypatch.setattr(fanout, "write", recording_os_write)
    monkeypatch.setattr(sockets, "write", recording_os_write)
    return writes


async def test_a_burst_leaves_in_two_writes_and_in_order(
    hub_server: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = await hub_server(compression=None)
    client = await RawClient.connect(running.port, None)
    subscriber = await running.next_subscriber()
    writes = record_writes(subscriber, monkeypatch)
    burst = [f"message {n}" for n in range(10)]
    expected = websockets_bytes(reference_protocol(subscriber), burst)
    for message in burst:  # one loop iteration
        running.hub.publish(message)
    assert await client.read_exactly(len(expected)) == expected
    # The first frame at once, the other nine corked into one write.
    assert [len(parse_frames(chunk)) for chunk in writes] == [1, 9]
    client.close()


async def test_a_burst_past_the_low_water_mark_is_written_as_it_fills(
    hub_server: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    running = await hub_server(compression=None)
    client = await RawClient.connect(running.port, None)
    subscriber = await running.next_subscriber()
    low, _ = subscriber.websocket.transport.get_write_buffer_limits()
    writes = record_writes(subscriber, monkeypatch)
    burst = [bytes([n]) * 1000 for n in range(40)]
    expected = websockets_bytes(reference_protocol(subscriber), burst)
    for message in burst:
        running.hub.publish(message)
    assert await client.read_exactly(len(expected)) == expected
    # Never more held than the low-water mark allows.
    assert max(len(chunk) for chunk in writes) <= low + 1004
    assert len(writes) < len(burst) // 4
    assert subscriber.stats().sent == len(burst)
    client.close()


async def test_a_subscribers_own_send_follows_a_publish_of_the_same_iteration(
    hub_server: Start,
) -> None:
    running = await hub_server(compression=None)
    client = await RawClient.connect(running.port, None)
    subscriber = await running.next_subscriber()
    messages: list[str | bytes] = ["published 1", "just for you", "published 2"]
    expected = websockets_bytes(reference_protocol(subscriber), messages)
    running.hub.publish("published 1")
    subscriber.send("just for you")  # corked behind the first, in order
    running.hub.publish("published 2")
    assert await client.read_exactly(len(expected)) == expected
    client.close()


async def test_corked_frames_wait_for_a_fragmented_send_to_finish(hub_server: Start) -> None:
    running = await hub_server(compression=None)
    client = await RawClient.connect(running.port, None)
    subscriber = await running.next_subscriber()
    ws = subscriber.websocket
    release = asyncio.Event()

    async def fragments() -> AsyncIterator[str]:
        yield "frag-1"
        await release.wait()
        yield "frag-2"

    # The application's fragmented send starts in the next iteration, before the hub's
    # end-of-iteration flush: the corked frame must wait for the whole message.
    sending = asyncio.create_task(ws.send(fragments()))
    running.hub.publish("first")  # written at once
    running.hub.publish("second")  # corked
    head = await client.read_exactly(len(b"\x81\x05first") + len(b"\x01\x06frag-1"))
    assert [frame.data for frame in parse_frames(head)] == [b"first", b"frag-1"]
    release.set()
    await asyncio.wait_for(sending, 10)
    # websockets ends a message from an async iterator with an empty final fragment.
    tail = await client.read_exactly(len(b"\x00\x06frag-2") + 2 + len(b"\x81\x06second"))
    frames = parse_frames(tail)
    assert [(frame.opcode, frame.data, frame.fin) for frame in frames] == [
        (Opcode.CONT, b"frag-2", False),
        (Opcode.CONT, b"", True),
        (Opcode.TEXT, b"second", True),
    ]
    client.close()


async def test_nothing_corked_follows_a_close_frame(hub_server: Start) -> None:
    running = await hub_server(compression=None)
    client = await RawClient.connect(running.port, None)
    subscriber = await running.next_subscriber()
    ws = subscriber.websocket
    running.hub.publish("first")
    running.hub.publish("corked")
    ws.protocol.send_close(1001, "bye")  # a close frame leaves before the flush
    ws.send_data()
    data = await client.read_exactly(len(b"\x81\x05first") + len(b"\x88\x05\x03\xe9bye"))
    frames = parse_frames(data)
    assert [frame.opcode for frame in frames] == [Opcode.TEXT, Opcode.CLOSE]
    # Answer the close (masked with a zero key) so the server closes the TCP connection:
    # whatever it still had to write would arrive before the end of the stream.
    client.writer.write(b"\x88\x82\x00\x00\x00\x00\x03\xe9")
    assert await client.read_to_eof() == b""
    client.close()


async def test_corking_can_be_turned_off(
    hub_server: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = Hub(close_timeout=1.0, cork=False)
    running = await hub_server(hub, compression=None)
    client = await RawClient.connect(running.port, None)
    subscriber = await running.next_subscriber()
    writes = record_writes(subscriber, monkeypatch)
    burst = [f"message {n}" for n in range(5)]
    expected = websockets_bytes(reference_protocol(subscriber), burst)
    for message in burst:
        running.hub.publish(message)
    assert await client.read_exactly(len(expected)) == expected
    assert len(writes) == 5
    client.close()
