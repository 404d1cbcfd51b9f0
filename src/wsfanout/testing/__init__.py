"""Property-test the delivery guarantees of any policy, built-in or your own.

```python
from hypothesis import given
from wsfanout.testing import schedules, check_guarantees

@given(schedules())
def test_my_policy_keeps_its_promises(schedule):
    check_guarantees(MyPolicy(), schedule)
```

The simulator, the schedules and the checkers need nothing beyond wsfanout; the
hypothesis strategies (``schedules``, ``policies``, ``steps``) need the ``testing``
extra: ``pip install wsfanout[testing]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._core.guarantees import (
    BatchIntegrity,
    Bounded,
    CountsAddUp,
    DisconnectsWithin,
    Drains,
    FoldedPerKey,
    GapsAnnounced,
    Guarantee,
    HeldWithin,
    LevelBound,
    Lossless,
    LosslessDelivered,
    MaxDrops,
    MaxSendRate,
    NewestDelivered,
    NoDuplicates,
    OrderedSubsequence,
    Resumes,
    StepsApart,
    WithinWriteLimit,
)
from .._public import publish_names as _publish_names
from ._check import (
    CHECKERS,
    GuaranteeViolation,
    Violation,
    baseline,
    check_guarantees,
    check_trace,
    guarantees_of,
    reproduction,
)
from ._clock import VirtualClock
from ._reads import ReadsViolation, check_reads
from ._schedule import (
    Advance,
    Client,
    Drain,
    Hangup,
    Publish,
    Read,
    Reconnect,
    Schedule,
    Send,
    SetPolicy,
    Stall,
    Step,
)
from ._simulator import (
    SETTLE_HORIZON,
    SETTLE_WAKEUPS,
    SETTLING,
    ClientTrace,
    CloseFrame,
    Closing,
    Delivery,
    Ended,
    Frame,
    Offered,
    PolicyChange,
    Sample,
    SimulationError,
    Simulator,
    Stepped,
    Trace,
    WriteEvent,
    simulate,
)
from ._steady import SteadyViolation, check_steady
from ._transport import FakeTransport

if TYPE_CHECKING:
    from ._strategies import policies, schedules, steps

__all__ = [
    # the one call most tests make
    "check_guarantees",
    # hypothesis strategies (need the `testing` extra)
    "schedules",
    "steps",
    "policies",
    # schedules
    "Schedule",
    "Client",
    "Step",
    "Publish",
    "Send",
    "Advance",
    "Read",
    "Stall",
    "Drain",
    "Hangup",
    "Reconnect",
    "SetPolicy",
    # guarantees
    "Guarantee",
    "OrderedSubsequence",
    "NoDuplicates",
    "Bounded",
    "WithinWriteLimit",
    "HeldWithin",
    "Drains",
    "CountsAddUp",
    "LosslessDelivered",
    "Lossless",
    "NewestDelivered",
    "BatchIntegrity",
    "MaxSendRate",
    "DisconnectsWithin",
    "MaxDrops",
    "Resumes",
    "FoldedPerKey",
    "StepsApart",
    "LevelBound",
    "GapsAnnounced",
    # checking
    "baseline",
    "guarantees_of",
    "check_trace",
    "reproduction",
    "Violation",
    "GuaranteeViolation",
    "CHECKERS",
    "check_reads",
    "ReadsViolation",
    "check_steady",
    "SteadyViolation",
    # the simulator
    "simulate",
    "Simulator",
    "VirtualClock",
    "FakeTransport",
    "Trace",
    "ClientTrace",
    "WriteEvent",
    "Delivery",
    "Frame",
    "CloseFrame",
    "Offered",
    "Closing",
    "Ended",
    "Stepped",
    "PolicyChange",
    "Sample",
    "SimulationError",
    "SETTLING",
    "SETTLE_HORIZON",
    "SETTLE_WAKEUPS",
]

_STRATEGIES = frozenset({"schedules", "steps", "policies"})

_publish_names(__name__, globals(), [name for name in __all__ if name not in _STRATEGIES])


def __getattr__(name: str) -> Any:
    # The strategies import hypothesis, which only the `testing` extra installs.
    if name in _STRATEGIES:
        try:
            from . import _strategies
        except ModuleNotFoundError as error:
            if error.name is None or error.name.partition(".")[0] != "hypothesis":
                raise
            raise ImportError(
                f"wsfanout.testing.{name} needs hypothesis: pip install 'wsfanout[testing]'"
            ) from error
        return getattr(_strategies, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
