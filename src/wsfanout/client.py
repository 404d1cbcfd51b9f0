"""A Python client of wsfanout servers: reconnects, resumes, and tells every loss.

async with Client("ws://127.0.0.1:8765/", topics=["prices"]) as client:
    async for event in client:
        if isinstance(event, Received):
            handle(event.data)
        else:                      # a Gap: what was lost, exactly, and why
            log(event)

It speaks the ``wsfanout.v1`` protocol (docs/protocol.md): it reconnects with
full-jitter exponential backoff, resumes each topic from its last offset, reports
losses from gap notices, holes in offsets and heartbeats, gives up a silent connection
after ``heartbeat_timeout`` and counts everything (``stats()``). ``Tracker`` is its
pure account of each stream, for other clients to reuse.
"""

from ._client.connection import STOP_CODES, Client, ClientStats, Received
from ._client.tracker import Gap, Tracker, TrackerStats
from ._core.history import Position
from ._public import publish_names as _publish_names

__all__ = [
    "Client",
    "Received",
    "Gap",
    "ClientStats",
    "Position",
    "STOP_CODES",
    # the pure account of each stream
    "Tracker",
    "TrackerStats",
]

_publish_names(__name__, globals(), [name for name in __all__ if name != "Position"])
