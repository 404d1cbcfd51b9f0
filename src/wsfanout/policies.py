"""The built-in policies: small orthogonal stages, combined with ``|``.

Queue stages (``DropOldest``, ``DropNewest``, ``SkipToLatest``, ``ConflateByKey``,
``Batch``) shape the queue; ``Throttle`` and ``Disconnect`` decide from a snapshot;
``Notify`` tells the client what the others made it lose (a ``GapNotice``).
Sizes are ``max_messages`` and ``max_bytes`` (payload bytes); durations are seconds.
"""

from ._core.builtins import (
    COMBINERS,
    DEFAULT_POLICY,
    Batch,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    Notify,
    SkipToLatest,
    Throttle,
)
from ._core.notices import NOTICE_FORMATS, GapNotice, notice_json
from ._public import publish_names as _publish_names

__all__ = [
    "DropOldest",
    "DropNewest",
    "SkipToLatest",
    "ConflateByKey",
    "Batch",
    "Throttle",
    "Disconnect",
    "Notify",
    "GapNotice",
    "NOTICE_FORMATS",
    "notice_json",
    "DEFAULT_POLICY",
    "COMBINERS",
]

_publish_names(__name__, globals(), __all__)
