"""wsfanout: WebSocket broadcasting with per-client queues and composable slow-client policies.

hub = Hub()
async def handler(websocket):
    await hub.serve(websocket, policy=DropOldest(max_messages=256) | Disconnect(max_lag=5.0))
...
hub.publish(json.dumps(event))
"""

from ._decision import NEUTRAL, Close, Decision, join
from ._files import (
    STAGE_KINDS,
    PolicyFile,
    dump_policy,
    load_policy,
    load_policy_file,
    parse_policy,
    preset_names,
    presets,
)
from ._hub import Hub
from ._outbox import Outbox
from ._policy import (
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_MESSAGES,
    Composite,
    Overflow,
    Policy,
    Rules,
    as_policy,
    resolve_rules,
)
from ._routes import Route, Routes, load_routes, parse_routes
from ._snapshot import Snapshot
from ._stats import HubStats, SubscriberStats
from ._subscriber import Subscriber
from .exceptions import (
    HubClosedError,
    PolicyConflictError,
    PolicyError,
    PolicyFileError,
    SubscriberClosedError,
    WsfanoutError,
)

__all__ = [
    # publishing
    "Hub",
    "Subscriber",
    # writing and composing policies (the built-ins live in wsfanout.policies)
    "Policy",
    "Composite",
    "as_policy",
    "Snapshot",
    "Decision",
    "Close",
    "NEUTRAL",
    "join",
    "Rules",
    "Overflow",
    "resolve_rules",
    "DEFAULT_MAX_MESSAGES",
    "DEFAULT_MAX_BYTES",
    # the sans-I/O core, for simulators and custom shells
    "Outbox",
    # statistics
    "SubscriberStats",
    "HubStats",
    # errors
    "WsfanoutError",
    "PolicyError",
    "PolicyConflictError",
    "HubClosedError",
    "SubscriberClosedError",
    # policies declared in files, presets and routing (wsfanout check --list shows them)
    "load_policy",
    "load_policy_file",
    "parse_policy",
    "dump_policy",
    "PolicyFile",
    "preset_names",
    "presets",
    "STAGE_KINDS",
    "load_routes",
    "parse_routes",
    "Routes",
    "Route",
    "PolicyFileError",
]

__version__ = "0.1.0.dev0"
