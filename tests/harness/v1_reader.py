"""Reading ``wsfanout.v1`` frames one by one with ``wsfanout.client.Tracker``, for tests
that hold a raw websockets connection (``wsfanout.client.Client`` does the same inside)."""

from __future__ import annotations

import json
from typing import Any, Literal

from wsfanout.client import Gap, Position, Tracker

Kind = Literal["data", "duplicate", "gap", "control"]


class Reader:
    """What a connection received so far, frame by frame: every gap, and the tracker."""

    def __init__(self) -> None:
        self.tracker = Tracker()
        self.gaps: list[Gap] = []
        self.received: list[Position] = []

    def feed(self, frame: str | bytes) -> Kind:
        """One frame as received: what it was."""
        cut = frame.find("\n") if isinstance(frame, str) else frame.find(b"\n")
        gaps: list[Gap] = []
        kind: Kind
        if cut < 0:
            control: dict[str, Any] = json.loads(frame)
            read = {
                "gap": self.tracker.notice,
                "heartbeat": self.tracker.heartbeat,
                "resume": self.tracker.resume,
            }.get(control["type"])
            if read is not None:
                read(control, gaps)
            kind = "gap" if control["type"] == "gap" else "control"
        else:
            header: dict[str, Any] = json.loads(frame[:cut])
            if "b" in header:
                places = [Position(str(t), str(e), int(o)) for o, e, t in header["b"]]
            elif "o" in header:
                places = [Position(str(header.get("t", "")), str(header["e"]), int(header["o"]))]
            else:
                places = []
            fresh = [p for p in places if self.tracker.message(p, gaps)]
            self.received += fresh
            kind = "duplicate" if places and not fresh else "data"
        self.gaps += gaps
        return kind

    @property
    def lost(self) -> int:
        return self.tracker.stats().lost

    def position(self, topic: str) -> Position | None:
        return next((p for p in self.tracker.positions() if p.topic == topic), None)
