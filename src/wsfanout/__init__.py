"""wsfanout: WebSocket broadcasting with per-client queues and composable slow-client policies.

hub = Hub()
async def handler(websocket):
    await hub.serve(websocket, policy=DropOldest(max_messages=256) | Disconnect(max_lag=5.0))
...
hub.publish(json.dumps(event))

The faces: ``wsfanout`` (this module), ``wsfanout.policies`` (the built-in policies),
``wsfanout.files`` (policy files, presets, routing), ``wsfanout.backplane`` (Redis,
worker processes), ``wsfanout.lowlevel`` (the sans-I/O core), ``wsfanout.testing``
(property-test a policy) and ``wsfanout.exceptions``.
"""

from ._core.decision import NEUTRAL, Close, Decision, LevelStep
from ._core.errors import (
    ConfigError,
    HubClosedError,
    PolicyConflictError,
    PolicyError,
    PolicyFileError,
    SubscriberClosedError,
    WsfanoutError,
)
from ._core.frames import SUBPROTOCOL
from ._core.history import History, Position
from ._core.ladder import Ladder
from ._core.policy import Composite, Policy, as_policy
from ._core.snapshot import Snapshot
from ._core.stats import HubStats, SubscriberStats
from ._public import publish_names as _publish_names
from ._shell.client_script import CLIENT_SCRIPT_PATH, client_script, client_script_source
from ._shell.extensions import select_subprotocol
from ._shell.hub import Hub
from ._shell.subscriber import Subscriber

__all__ = [
    # publishing
    "Hub",
    "Subscriber",
    "SUBPROTOCOL",
    "select_subprotocol",
    # history and resuming
    "History",
    "Position",
    # the JavaScript client (docs/js-client.md)
    "client_script",
    "client_script_source",
    "CLIENT_SCRIPT_PATH",
    # writing and composing policies (the built-ins live in wsfanout.policies)
    "Policy",
    "Composite",
    "as_policy",
    "Snapshot",
    "Decision",
    "Close",
    "NEUTRAL",
    "Ladder",
    "LevelStep",
    # statistics
    "SubscriberStats",
    "HubStats",
    # errors (also in wsfanout.exceptions)
    "WsfanoutError",
    "ConfigError",
    "PolicyError",
    "PolicyConflictError",
    "PolicyFileError",
    "HubClosedError",
    "SubscriberClosedError",
]

__version__ = "0.1.0.dev0"

_publish_names(__name__, globals(), __all__)
