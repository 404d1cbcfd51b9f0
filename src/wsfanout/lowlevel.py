"""The sans-I/O core, for simulators, custom shells and policies that shape the queue.

:class:`Outbox` is one subscriber's queue, policy and counters as a pure state machine:
the shell (``Hub`` and its relay, or ``wsfanout.testing``'s simulator) tells it what
happens (:meth:`Outbox.offer`, :meth:`Outbox.next_action`) and performs the actions it
returns. Everything it takes and returns is here, with the queue rules a policy
declares. See docs/reference.md, "wsfanout.lowlevel".
"""

from ._core.acks import ACK_INTERVAL, AckWindow, window
from ._core.contract import (
    BLOCKED,
    DRAIN_POLL,
    WaitPlan,
    cork_is_full,
    plan_wait,
    write_buffer,
)
from ._core.control import ack_request, gap_notice, heartbeat_frame, read_ack, resume_frame
from ._core.decision import NEUTRAL, join
from ._core.deflate import DeflateParams
from ._core.drain import DrainMeter, KernelView
from ._core.frames import OP_BINARY, OP_TEXT
from ._core.history import (
    Held,
    MemoryHistory,
    ResumePlan,
    missing_ranges,
    parse_since,
    plan_from,
    plan_resume,
    resume_after,
    wanted,
)
from ._core.message import (
    CONTROL_SEQ,
    Batched,
    Merged,
    Message,
    make_control,
    make_message,
    v1_header,
)
from ._core.notices import REASONS, GapLedger, Notice
from ._core.outbox import IDLE, Action, CloseAction, Idle, Offer, Outbox, Wait, Write
from ._core.policy import FunctionPolicy
from ._core.queue import MessageQueue, Push, Run
from ._core.rules import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MESSAGES,
    Arrival,
    BatchRule,
    Overflow,
    Rules,
    merge_rules,
    resolve_rules,
)
from ._core.streams import Stream, Streams
from ._public import publish_names as _publish_names

__all__ = [
    # one subscriber's core and its vocabulary
    "Outbox",
    "Offer",
    "Action",
    "Write",
    "Wait",
    "CloseAction",
    "IDLE",
    "Idle",
    # the shell contract: what a shell tells an outbox, and how it waits
    "BLOCKED",
    "write_buffer",
    "cork_is_full",
    "plan_wait",
    "WaitPlan",
    "DRAIN_POLL",
    # messages
    "Message",
    "Batched",
    "Merged",
    "make_message",
    "make_control",
    "CONTROL_SEQ",
    "v1_header",
    "Stream",
    "Streams",
    # history and resuming
    "MemoryHistory",
    "Held",
    "missing_ranges",
    "parse_since",
    "resume_after",
    "plan_resume",
    "plan_from",
    "wanted",
    "ResumePlan",
    # control frames of the client protocol
    "resume_frame",
    "gap_notice",
    "heartbeat_frame",
    "ack_request",
    "read_ack",
    "OP_TEXT",
    "OP_BINARY",
    "DeflateParams",
    "MessageQueue",
    "Push",
    "Run",
    "DrainMeter",
    "KernelView",
    # what a client's acknowledgements say
    "AckWindow",
    "ACK_INTERVAL",
    "window",
    # gap notices in the core
    "GapLedger",
    "Notice",
    "REASONS",
    # queue rules and decisions
    "Rules",
    "Overflow",
    "Arrival",
    "BatchRule",
    "merge_rules",
    "resolve_rules",
    "DEFAULT_MAX_MESSAGES",
    "DEFAULT_MAX_BYTES",
    "join",
    "NEUTRAL",
    "FunctionPolicy",
]

_publish_names(__name__, globals(), __all__)
