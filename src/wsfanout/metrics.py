"""Prometheus metrics for a hub, its admin listener, and the values behind them.

One call registers a hub's metrics on a registry::

    from wsfanout.metrics import register_metrics
    register_metrics(hub)              # prometheus_client.REGISTRY by default

or serves them with a status page, health and the subscribers (:func:`serve_admin`)::

    async with serve_admin(hub, "127.0.0.1", 9000):
        ...

The collector reads ``hub.monitor`` when Prometheus scrapes, so nothing is counted
per message for it. Every series is labelled by what the application declares (the
policy name, a drop reason, how a subscriber ended), never by a client: their number
does not grow with the number of subscribers. :data:`METRICS` lists them all.

``register_metrics`` and ``/metrics`` need prometheus-client (``pip install
'wsfanout[metrics]'``); the rest of this module does not. See
docs/how-to/observability.md.
"""

from ._cli.admin import AdminServer, serve_admin
from ._core.histogram import Histogram, Timings
from ._core.stats import DROP_REASONS, ClosedSubscriber, PolicyStats
from ._public import publish_names as _publish_names
from ._shell.metrics import METRICS, HubCollector, Metric, register_metrics
from ._shell.monitor import HubMonitor

__all__ = [
    "register_metrics",
    "HubCollector",
    "METRICS",
    "Metric",
    "DROP_REASONS",
    # the admin listener: /metrics, /healthz, /clients and the status page
    "serve_admin",
    "AdminServer",
    # what the hub's monitor returns
    "HubMonitor",
    "PolicyStats",
    "ClosedSubscriber",
    "Timings",
    "Histogram",
]

_publish_names(__name__, globals(), __all__)
