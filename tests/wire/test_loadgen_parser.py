"""The benchmark's load generator reads what websockets writes, frame for frame.

Its counts are the benchmark's evidence (deliveries, order, latency), so they are
checked here against frames that websockets itself serialises.
"""

from __future__ import annotations

from array import array

import pytest
from websockets.extensions.permessage_deflate import PerMessageDeflate
from websockets.frames import Frame, Opcode

from benchmarks.loadgen import Client, feed
from benchmarks.payload import Payloads, stamp_of


def frame_bytes(payload: bytes, *, deflate: PerMessageDeflate | None = None) -> bytes:
    extensions = [deflate] if deflate is not None else []
    return Frame(Opcode.TEXT, payload).serialize(mask=False, extensions=extensions)


def test_payload_fields_sit_at_their_fixed_offsets() -> None:
    payloads = Payloads(100)
    text = payloads.make(1234).encode()
    assert len(text) == 100
    seq, stamp = stamp_of(text)
    assert seq == 1234
    assert stamp > 0


def test_payload_smaller_than_its_header_is_refused() -> None:
    with pytest.raises(ValueError, match=r"^size=10 must be >= 47$"):
        Payloads(10)


def test_feed_counts_records_split_across_reads() -> None:
    payloads = Payloads(64)
    stream = b"".join(frame_bytes(payloads.make(seq).encode()) for seq in range(5))
    client = Client(None, b"", deflate=False)
    latencies = array("q")
    for cut in range(0, len(stream), 7):  # arrive in awkward pieces
        feed(client, stream[cut : cut + 7], now=2**62, size=64, latencies=latencies)
    assert (client.frames, client.records, client.out_of_order) == (5, 5, 0)
    assert len(latencies) == 5
    assert client.nbytes == len(stream)


def test_feed_counts_every_record_of_a_batched_frame() -> None:
    payloads = Payloads(64)
    batch = b"\n".join(payloads.make(seq).encode() for seq in range(3))
    client = Client(None, b"", deflate=False)
    feed(client, frame_bytes(batch), now=2**62, size=64, latencies=array("q"))
    assert (client.frames, client.records) == (1, 3)


def test_feed_decodes_compressed_frames_with_context_takeover() -> None:
    encoder = PerMessageDeflate(False, False, 12, 12)
    payloads = Payloads(1024)
    stream = b"".join(frame_bytes(payloads.make(seq).encode(), deflate=encoder) for seq in range(4))
    client = Client(None, b"", deflate=True)
    feed(client, stream, now=2**62, size=1024, latencies=array("q"))
    assert (client.frames, client.records, client.out_of_order) == (4, 4, 0)
    assert client.nbytes < 4 * 1024  # it was compressed


def test_feed_catches_a_message_delivered_out_of_order() -> None:
    payloads = Payloads(64)
    stream = b"".join(frame_bytes(payloads.make(seq).encode()) for seq in (0, 2, 1, 3))
    client = Client(None, b"", deflate=False)
    feed(client, stream, now=2**62, size=64, latencies=array("q"))
    assert client.out_of_order == 1


def test_feed_refuses_a_compressed_frame_it_did_not_negotiate() -> None:
    encoder = PerMessageDeflate(False, True, 12, 12)
    client = Client(None, b"", deflate=False)
    message = r"^compressed frame on a connection without permessage-deflate$"
    with pytest.raises(ValueError, match=message):
        feed(
            client,
            frame_bytes(Payloads(64).make(0).encode(), deflate=encoder),
            now=0,
            size=64,
            latencies=None,
        )
