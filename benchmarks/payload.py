"""The benchmark's messages: fixed-size JSON-like text with a sequence number and a timestamp.

Every message of a run has the same size, so a frame that carries a batch (records
joined by newlines, as ``Batch(combine="lines")`` sends them) holds
``(len(frame) + 1) // (size + 1)`` records, and each record's fields sit at fixed
offsets: the load generator reads them without parsing JSON.
"""

from __future__ import annotations

import random
import time

__all__ = ["MIN_SIZE", "SEQ", "STAMP", "Payloads", "stamp_of"]

_HEAD = '{"s":%010d,"t":%019d,"p":"'
_TAIL = '"}'
SEQ = slice(5, 15)
"""Where the sequence number's digits sit in a record."""
STAMP = slice(20, 39)
"""Where the publish time (``time.monotonic_ns()``, shared by every process) sits."""
MIN_SIZE = len(_HEAD % (0, 0)) + len(_TAIL)

_WORDS = ("bid", "ask", "last", "qty", "side", "venue", "sym", "open", "high", "low")


def _filler(rng: random.Random, length: int) -> str:
    """JSON-like text that deflate compresses about as well as real market data."""
    parts: list[str] = []
    size = 0
    while size < length:
        part = f"{rng.choice(_WORDS)}:{rng.randint(0, 99999)}.{rng.randint(0, 99):02d},"
        parts.append(part)
        size += len(part)
    return "".join(parts)[:length]


class Payloads:
    """Messages of ``size`` bytes; the filler cycles through a pool so consecutive
    messages differ, as real updates do (which matters for compression ratios)."""

    def __init__(self, size: int, *, pool: int = 64, seed: int = 6) -> None:
        if size < MIN_SIZE:
            raise ValueError(f"size={size} must be >= {MIN_SIZE}")
        rng = random.Random(seed)
        fill = size - MIN_SIZE
        self.size = size
        self._fillers = [_filler(rng, fill) for _ in range(pool)]

    def make(self, seq: int) -> str:
        """The text of message ``seq``, stamped now."""
        filler = self._fillers[seq % len(self._fillers)]
        return _HEAD % (seq, time.monotonic_ns()) + filler + _TAIL


def stamp_of(record: bytes | bytearray | memoryview) -> tuple[int, int]:
    """``(seq, publish time in ns)`` of one record."""
    return int(record[SEQ]), int(record[STAMP])
