"""For clients of a wsfanout server: follow the streams received and find what is missing.

tracker = GapTracker("v1")          # the framing the connection negotiated
async for frame in websocket:
    received = tracker.feed(frame)   # what the frame is, and the gaps it reveals
    for gap in received.gaps: ...
resume_from = tracker.since()        # TOPIC:EPOCH:OFFSET values for a resume URL

See docs/protocol.md for what the server sends, and docs/how-to/gap-notices.md.
"""

from ._client.tracker import Gap, GapTracker, Position, Received
from ._public import publish_names as _publish_names

__all__ = ["GapTracker", "Gap", "Position", "Received"]

_publish_names(__name__, globals(), __all__)
