"""The built-in policies: small orthogonal stages, combined with ``|``.

Queue stages (``DropOldest``, ``DropNewest``, ``SkipToLatest``, ``ConflateByKey``,
``Batch``) shape the queue; ``Throttle`` and ``Disconnect`` decide from a snapshot;
``Notify`` tells the client what the others made it lose (a ``GapNotice``).
Ladders step between levels while they run: ``Escalate`` (a level per condition, with
hysteresis) and ``Adaptive`` (a pace per drain rate); conditions (``Above``, ``Below``)
are values. Sizes are ``max_messages`` and ``max_bytes`` (payload bytes); durations
are seconds.
"""

from ._core.adaptive import Adaptive
from ._core.builtins import (
    COMBINERS,
    DEFAULT_POLICY,
    REDUCERS,
    Batch,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    Notify,
    SkipToLatest,
    Throttle,
)
from ._core.conditions import Above, AllOf, AnyOf, Below, Condition
from ._core.ladder import Escalate, Level
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
    # ladders and their conditions
    "Escalate",
    "Level",
    "Adaptive",
    "Condition",
    "Above",
    "Below",
    "AnyOf",
    "AllOf",
    "Notify",
    "GapNotice",
    "NOTICE_FORMATS",
    "notice_json",
    "DEFAULT_POLICY",
    "COMBINERS",
    "REDUCERS",
]

_publish_names(__name__, globals(), __all__)
