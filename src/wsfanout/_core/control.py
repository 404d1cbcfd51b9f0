"""The control frames of the client protocol, as the JSON text a client receives.

docs/protocol.md is the contract: a ``resume`` frame opens the replay of one topic, a
``gap`` notice gives exact missing ranges and why, a ``heartbeat`` gives the last
offset of each topic to a subscriber that has received nothing for a while, an
``ack-request`` asks the client to say what its application has taken (and
:func:`read_ack` reads its answer). Each is one
compact JSON object; ``t`` is left out for the stream ``""`` (messages without a topic),
as in data headers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

from .errors import ConfigError, invalid

__all__ = ["ack_request", "gap_notice", "heartbeat_frame", "read_ack", "resume_frame"]


def _dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _head(kind: str, topic: str, epoch: str) -> dict[str, object]:
    head: dict[str, object] = {"type": kind}
    if topic:
        head["t"] = topic
    head["e"] = epoch
    return head


def resume_frame(
    topic: str,
    epoch: str,
    *,
    since: int,
    replay: tuple[int, int] | None,
    complete: bool,
    previous: str | None = None,
) -> str:
    """``{"type":"resume","t":...,"e":...,"since":41,"replay":[42,57],"complete":true}``."""
    frame = _head("resume", topic, epoch)
    frame["since"] = since
    frame["replay"] = None if replay is None else list(replay)
    frame["complete"] = complete
    if previous is not None:
        frame["previous"] = previous
    return _dumps(frame)


def gap_notice(
    topic: str,
    epoch: str,
    ranges: Iterable[tuple[int, int]],
    reasons: Mapping[str, int],
) -> str:
    """``{"type":"gap","t":...,"e":...,"ranges":[[40,47]],"count":8,"reasons":{...}}``."""
    pairs = [[first, last] for first, last in ranges]
    notice = _head("gap", topic, epoch)
    notice["ranges"] = pairs
    notice["count"] = sum(last - first + 1 for first, last in pairs)
    notice["reasons"] = {reason: count for reason, count in reasons.items() if count}
    return _dumps(notice)


def heartbeat_frame(offsets: Mapping[str, tuple[str, int]]) -> str:
    """``{"type":"heartbeat","offsets":{"prices":["h3k9q2mv",57]}}``."""
    return _dumps({"type": "heartbeat", "offsets": {t: [e, o] for t, (e, o) in offsets.items()}})


def ack_request(interval: float | None) -> str:
    """``{"type":"ack-request","interval":0.05}``; ``None``: stop acknowledging."""
    return _dumps({"type": "ack-request", "interval": interval})


def read_ack(text: str | bytes) -> int | None:
    """The ``n`` of a client's ``{"type":"ack","n":N}``; None if ``text`` is no ``ack``
    (an application's message). Raises :class:`ConfigError` naming ``n`` and its value
    when it is one whose ``n`` is not a whole number >= 0."""
    if not isinstance(text, str) or '"ack"' not in text:
        return None  # cheap: most messages a client sends are the application's
    try:
        frame = json.loads(text)
    except ValueError:
        return None
    if not isinstance(frame, dict) or frame.get("type") != "ack":
        return None
    n = frame.get("n")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise invalid("n", n, "is not a whole number >= 0", ConfigError)
    return n
