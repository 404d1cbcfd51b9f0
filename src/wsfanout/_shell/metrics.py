"""Prometheus metrics for a hub: a collector that reads ``hub.monitor`` at each scrape.

Every series is labelled by what the application declares (the policy name, a drop
reason, how a subscriber ended), never by a client, so their number does not grow
with the number of subscribers; :data:`METRICS` lists the families. prometheus-client
is imported only when a collector is made.
"""

from __future__ import annotations

import importlib.metadata
import math
from collections.abc import Iterator
from typing import Any

import attrs

from .._core.histogram import Histogram
from .._core.stats import DROP_REASONS
from .hub import Hub

__all__ = ["METRICS", "HubCollector", "Metric", "register_metrics"]


def _version() -> str:
    try:
        return importlib.metadata.version("wsfanout")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - not installed
        return "unknown"


@attrs.frozen
class Metric:
    """One metric family: its name (without the namespace), type, labels and meaning."""

    name: str
    kind: str
    """``counter``, ``gauge`` or ``histogram``."""
    labels: tuple[str, ...]
    help: str


METRICS: tuple[Metric, ...] = (
    Metric(
        "messages_offered_total",
        "counter",
        ("policy",),
        "Messages offered to subscribers: published on their topics or sent to them.",
    ),
    Metric("messages_sent_total", "counter", ("policy",), "Messages written to subscribers."),
    Metric(
        "frames_sent_total",
        "counter",
        ("policy",),
        "Frames written to subscribers; fewer than messages when batching.",
    ),
    Metric(
        "messages_batched_total",
        "counter",
        ("policy",),
        "Messages that left in a frame holding several.",
    ),
    Metric(
        "messages_dropped_total",
        "counter",
        ("policy", "reason"),
        "Messages lost, by reason: oldest (evicted), newest (refused), skipped, "
        "conflated, disconnected (queued when the subscriber closed or left).",
    ),
    Metric(
        "subscribers_opened_total",
        "counter",
        ("policy",),
        "Subscribers attached since the hub started.",
    ),
    Metric(
        "subscribers_closed_total",
        "counter",
        ("policy", "code"),
        "Subscribers gone, by how they ended: the close code wsfanout sent, client "
        "(the client closed), app (the application ended it) or lost (no handshake).",
    ),
    Metric("subscribers", "gauge", ("policy",), "Subscribers connected now."),
    Metric(
        "ladder_steps_total",
        "counter",
        ("policy", "direction"),
        "Steps of ladder policies (Escalate, Adaptive) between levels: up or down.",
    ),
    Metric(
        "subscribers_stepped_up",
        "gauge",
        ("policy",),
        "Connected subscribers whose ladder policy is above its first level now.",
    ),
    Metric(
        "subscribers_behind",
        "gauge",
        ("policy",),
        "Connected subscribers with messages queued: off the fast path now.",
    ),
    Metric("queued_messages", "gauge", ("policy",), "Messages waiting in subscribers' queues."),
    Metric("queued_bytes", "gauge", ("policy",), "Payload bytes waiting in subscribers' queues."),
    Metric(
        "write_buffer_bytes",
        "gauge",
        ("policy",),
        "Bytes waiting in connections' write buffers (corked frames included).",
    ),
    Metric(
        "unacked_bytes",
        "gauge",
        ("policy",),
        "Payload bytes written to clients that acknowledge, not yet taken by their "
        "applications: what waits in their kernels and libraries.",
    ),
    Metric(
        "max_lag_seconds",
        "gauge",
        ("policy",),
        "The largest lag among connected subscribers: seconds missing messages.",
    ),
    Metric(
        "publish_duration_seconds",
        "histogram",
        (),
        "Per message published or received from a backplane: seconds to offer it to "
        "every subscriber of its topic and write it to those that keep up.",
    ),
    Metric(
        "publish_to_write_seconds",
        "histogram",
        (),
        "Per message published: seconds until its frame was written for every "
        "subscriber that keeps up, frames corked to the end of the loop iteration included.",
    ),
    Metric(
        "queue_wait_seconds",
        "histogram",
        ("policy",),
        "Per message sent: seconds it waited in its subscriber's queue (0 on the fast path).",
    ),
    Metric(
        "backplane_connected",
        "gauge",
        (),
        "1 while the backplane's connections are up, else 0.",
    ),
    Metric(
        "backplane_reconnects_total",
        "counter",
        (),
        "Times the backplane connected again after losing a connection.",
    ),
    Metric(
        "backplane_lost_total",
        "counter",
        (),
        "Messages pub/sub lost that the history no longer held (told to subscribers).",
    ),
    Metric(
        "backplane_forged_total",
        "counter",
        (),
        "Numbered messages dropped because Redis had not numbered their stream that far.",
    ),
    Metric(
        "backplane_dropped_total",
        "counter",
        (),
        "Messages of this hub that never left for the backplane (its buffer was full).",
    ),
    Metric(
        "backplane_published_total",
        "counter",
        (),
        "Messages of this hub the backplane acknowledged.",
    ),
    Metric(
        "backplane_received_total",
        "counter",
        (),
        "Messages handed to this hub by the backplane, its own included, live or repaired.",
    ),
    Metric(
        "backplane_buffered_messages",
        "gauge",
        (),
        "Messages waiting in the backplane's publish buffer.",
    ),
    Metric("backplane_peers", "gauge", (), "Other hubs subscribed to the namespace."),
    Metric(
        "backplane_lag_seconds",
        "gauge",
        (),
        "Seconds the backplane's receiver is behind Redis (a PING per heartbeat).",
    ),
    Metric(
        "backplane_skipped_total",
        "counter",
        (),
        "Messages for topics no local subscriber takes, passed over without decoding.",
    ),
    Metric("info", "gauge", ("version",), "Always 1; the version label is wsfanout's."),
)
"""Every metric family :class:`HubCollector` exposes; the ``backplane_*`` ones only for a
hub with a backplane that reports its health (``RedisBackplane``)."""

_COUNTS = {
    "messages_offered_total": "offered",
    "messages_sent_total": "sent",
    "frames_sent_total": "frames",
    "messages_batched_total": "batched",
    "subscribers_opened_total": "opened",
    "subscribers": "subscribers",
    "subscribers_behind": "behind",
    "subscribers_stepped_up": "stepped_up",
    "queued_messages": "queued_messages",
    "queued_bytes": "queued_bytes",
    "write_buffer_bytes": "write_buffer",
    "unacked_bytes": "unacked",
    "max_lag_seconds": "max_lag",
}
"""Metrics with only a policy label -> the PolicyStats field they show."""

_BACKPLANE = {
    "backplane_connected": "connected",
    "backplane_reconnects_total": "reconnects",
    "backplane_lost_total": "lost",
    "backplane_forged_total": "forged",
    "backplane_dropped_total": "dropped",
    "backplane_published_total": "published",
    "backplane_received_total": "received",
    "backplane_buffered_messages": "buffered",
    "backplane_peers": "peers",
    "backplane_lag_seconds": "lag",
    "backplane_skipped_total": "skipped",
}
"""Backplane metrics -> the BackplaneHealth field they show."""


def _prometheus() -> Any:
    try:
        import prometheus_client.core
    except ImportError:
        raise ImportError(
            "wsfanout.metrics needs prometheus-client: pip install 'wsfanout[metrics]'"
        ) from None
    return prometheus_client.core


def _go(value: float) -> str:
    """A bucket bound as Prometheus writes it (``+Inf``, ``0.005``)."""
    if value == math.inf:
        return "+Inf"
    return repr(float(value))


class HubCollector:
    """A prometheus_client collector of one hub's metrics, read from ``hub.monitor``
    at every scrape. Register it on a registry, or let :func:`register_metrics` do it."""

    def __init__(self, hub: Hub, *, namespace: str = "wsfanout") -> None:
        if not isinstance(hub, Hub):
            raise TypeError(f"hub={hub!r} must be a Hub")
        if not isinstance(namespace, str) or not namespace.replace("_", "").isalnum():
            raise ValueError(f"namespace={namespace!r} must be letters, digits and underscores")
        self.hub = hub
        self.namespace = namespace
        self._families = _prometheus()
        hub.monitor.start_timings()  # the histograms count from here

    def _family(self, metric: Metric) -> Any:
        core = self._families
        kind = {
            "counter": core.CounterMetricFamily,
            "gauge": core.GaugeMetricFamily,
            "histogram": core.HistogramMetricFamily,
        }[metric.kind]
        name = f"{self.namespace}_{metric.name}"
        if metric.kind == "counter":
            name = name.removesuffix("_total")  # prometheus_client appends it
        return kind(name, metric.help, labels=list(metric.labels))

    def describe(self) -> Iterator[Any]:
        """The families without samples: registering reads nothing from the hub."""
        reports = callable(getattr(self.hub.backplane, "health", None))
        for metric in METRICS:
            if reports or not metric.name.startswith("backplane_"):
                yield self._family(metric)

    def _health(self) -> Any:
        health = getattr(self.hub.backplane, "health", None)
        return health() if callable(health) else None

    def collect(self) -> Iterator[Any]:
        """Every family with its samples, read from the hub now."""
        monitor = self.hub.monitor
        policies = monitor.policies()
        timings = monitor.timings(policies=policies)
        health = self._health()
        for metric in METRICS:
            if metric.name.startswith("backplane_") and health is None:
                continue
            family = self._family(metric)
            if metric.name in _COUNTS:
                field = _COUNTS[metric.name]
                for name, stats in policies.items():
                    family.add_metric([name], float(getattr(stats, field)))
            elif metric.name == "messages_dropped_total":
                for name, stats in policies.items():
                    for reason, field in DROP_REASONS.items():
                        family.add_metric([name, reason], float(getattr(stats, field)))
            elif metric.name == "ladder_steps_total":
                for name, stats in policies.items():
                    family.add_metric([name, "up"], float(stats.steps_up))
                    family.add_metric([name, "down"], float(stats.steps_down))
            elif metric.name == "subscribers_closed_total":
                for name, stats in policies.items():
                    for ended, count in stats.closes:
                        family.add_metric([name, ended], float(count))
            elif metric.name in _BACKPLANE:
                family.add_metric([], float(getattr(health, _BACKPLANE[metric.name])))
            elif metric.name == "info":
                family.add_metric([_version()], 1.0)
            elif timings is not None:
                histograms: dict[tuple[str, ...], Histogram]
                if metric.name == "queue_wait_seconds":
                    histograms = {(name,): h for name, h in timings.queue_wait.items()}
                elif metric.name == "publish_duration_seconds":
                    histograms = {(): timings.publish}
                else:
                    histograms = {(): timings.publish_to_write}
                for labels, histogram in histograms.items():
                    buckets = [(_go(le), float(n)) for le, n in histogram.cumulative()]
                    family.add_metric(list(labels), buckets, histogram.sum)
            else:
                continue  # a hub without timings has no histograms
            yield family


def register_metrics(
    hub: Hub, registry: Any = None, *, namespace: str = "wsfanout"
) -> HubCollector:
    """Register ``hub``'s metrics on ``registry``, a prometheus_client
    ``CollectorRegistry`` (its default ``REGISTRY`` if None), and return the collector,
    for ``registry.unregister()``. Metric names start with ``namespace`` and an
    underscore; give each hub of one registry its own."""
    collector = HubCollector(hub, namespace=namespace)
    if registry is None:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    registry.register(collector)
    return collector
