"""``serve``'s logs: the ``wsfanout`` logger family on standard error, as text or JSON.

Every event is one record of the standard :mod:`logging` module: the library logs
under ``wsfanout`` (``wsfanout.backplane`` for Redis and the workers), the command
under ``wsfanout.serve`` and its admin listener under ``wsfanout.admin``. An event a
program may want to read (a connection, a refusal, a close, a burst of drops) carries
its name and fields (:func:`event`); ``--log-format json`` writes each record as one
JSON object with them, ``text`` as the line people read (``wsfanout: client
connected: ...``). Only the "listening on" line goes to standard output, as before.

Drops are not logged one by one: :class:`DropSummary` looks at every subscriber once
per interval and writes one line for each that lost messages since its last look, so
a storm of drops costs one line per subscriber per interval.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import IO, TYPE_CHECKING, Any

import attrs
from websockets.asyncio.server import ServerConnection

from .._core.stats import SubscriberStats, dropped_by_reason
from .._shell.monitor import ending

if TYPE_CHECKING:
    from .._shell.hub import Hub
    from .._shell.subscriber import Subscriber
    from .serve import Log

__all__ = [
    "DROP_INTERVAL",
    "FORMATS",
    "LEVELS",
    "NOTICE",
    "DropSummary",
    "JsonFormatter",
    "LogSettings",
    "TextFormatter",
    "add_log_arguments",
    "event",
    "install",
    "log_closed",
    "log_connected",
    "log_refused",
    "log_settings",
]

NOTICE = 25
"""Between info and warning: what the command says even with ``-q`` (a worker that
exited, a Redis channel subscribed again), without calling it a warning."""
logging.addLevelName(NOTICE, "NOTICE")

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": NOTICE,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
"""``--log-level`` names; ``-q`` is ``notice`` (no line per client)."""

FORMATS = ("text", "json")

DROP_INTERVAL = 10.0
"""Seconds between two looks for drops: at most one drop line per subscriber per interval."""

_MARK = "_wsfanout_handler"


def event(name: str, **fields: object) -> dict[str, Any]:
    """``extra=`` for a log call: the event's name and fields, which JSON lines carry."""
    return {"event": name, "fields": fields}


@attrs.frozen
class LogSettings:
    """How the command logs; pickled to worker processes, which install it themselves."""

    level: int = logging.INFO
    format: str = attrs.field(default="text", validator=attrs.validators.in_(FORMATS))
    worker: bool = False
    """Lines name the worker's process id."""
    drops_every: float = DROP_INTERVAL
    """Seconds between two :class:`DropSummary` looks."""


class TextFormatter(logging.Formatter):
    """``wsfanout: [worker PID: ][warning: ]message``, as people read it."""

    def __init__(self, worker: bool = False) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        tag = f"worker {os.getpid()}: " if self.worker else ""
        level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
        text = f"wsfanout: {tag}{level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the event and its fields."""

    def __init__(self, worker: bool = False) -> None:
        super().__init__()
        self.worker = worker

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
        line: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        name = getattr(record, "event", None)
        if name is not None:
            line["event"] = name
        fields = getattr(record, "fields", None)
        if isinstance(fields, Mapping):
            for key, value in fields.items():
                line.setdefault(key, value)
        if self.worker:
            line["worker"] = os.getpid()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def install(settings: LogSettings, stream: IO[str] | None = None) -> logging.Handler:
    """Send the ``wsfanout`` loggers to ``stream`` (standard error if None) under
    ``settings``, replacing what an earlier call installed."""
    logger = logging.getLogger("wsfanout")
    for handler in list(logger.handlers):
        if getattr(handler, _MARK, False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    formatter = JsonFormatter if settings.format == "json" else TextFormatter
    handler.setFormatter(formatter(settings.worker))
    setattr(handler, _MARK, True)
    logger.addHandler(handler)
    logger.setLevel(settings.level)
    logger.propagate = False  # the command owns the output: no second copy via the root
    return handler


class DropSummary:
    """One log line per subscriber that lost messages since the last look, per look.

    Call :meth:`look` (or let :meth:`run` call it every ``interval`` seconds); it
    compares each subscriber's drop counters with the previous look's.
    """

    def __init__(self, logger: logging.Logger, interval: float = DROP_INTERVAL) -> None:
        self.logger = logger
        self.interval = interval
        self.seen: dict[object, dict[str, int]] = {}
        """Per connection id: the drop counters at the last look."""

    def look(self, subscribers: Iterable[Subscriber], describe: Any) -> int:
        """Log the new drops of ``subscribers``; ``describe(subscriber)`` names one in
        the line. Returns how many lines it wrote."""
        seen: dict[object, dict[str, int]] = {}
        lines = 0
        for subscriber in subscribers:
            stats = subscriber.stats()
            counts = dropped_by_reason(stats)
            key = subscriber.websocket.id
            seen[key] = counts
            before = self.seen.get(key, {})
            new = {
                reason: count - before.get(reason, 0)
                for reason, count in counts.items()
                if count > before.get(reason, 0)
            }
            if not new:
                continue
            lines += 1
            total = sum(new.values())
            reasons = ", ".join(f"{reason} {count}" for reason, count in new.items())
            self.logger.info(
                "client %s dropped %d messages in the last %g s (%s); %d queued, lag %.1f s",
                describe(subscriber),
                total,
                self.interval,
                reasons,
                stats.queued_messages,
                stats.lag,
                extra=event(
                    "drops",
                    id=str(key),
                    client=describe(subscriber),
                    policy=subscriber.policy_name,
                    dropped=total,
                    interval=self.interval,
                    queued_messages=stats.queued_messages,
                    lag=round(stats.lag, 3),
                    **{f"dropped_{reason}": count for reason, count in new.items()},
                ),
            )
        self.seen = seen  # subscribers gone are forgotten
        return lines

    async def run(self, hub: Hub, describe: Any) -> None:
        """Look every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            self.look(hub.subscribers, describe)


def log_connected(
    log: Log,
    connection: ServerConnection,
    peer: str,
    path: str,
    policy_name: str,
    topics: Iterable[str] | None = None,
) -> None:
    """The ``connect`` event: one per subscriber, once it is subscribed; ``path`` is
    redacted already; ``topics`` None means every topic."""
    chosen = None if topics is None else sorted(topics)
    shown = "" if chosen is None else f" topics {', '.join(chosen)}"
    log.event(
        "connect",
        f"client connected: {peer} {path} policy {policy_name}{shown}",
        id=str(connection.id),
        peer=peer,
        path=path,
        policy=policy_name,
        topics=chosen,
        subprotocol=connection.subprotocol,
    )


def log_closed(
    log: Log, connection: ServerConnection, peer: str, path: str, stats: SubscriberStats
) -> None:
    """The ``close`` event: how the subscriber ended (code, cause) and its counts."""
    ended, code, cause = ending(connection, stats)
    if stats.close is not None:
        how = f"closed: {code} {cause}"
    elif ended == "app" and code == 1009:  # websockets' own: the client sent too much
        how = f"closed: 1009 message too big: {cause} (max_size)"
    elif ended == "client":
        how = f"closed by the client: {code} {cause}"
    elif ended == "lost":
        how = "connection lost"
    else:
        how = " ".join(str(part) for part in ("closed by the server:", code, cause) if part)
    log.event(
        "close",
        f"client disconnected: {peer} {path} sent {stats.sent}, dropped {stats.dropped}, {how}",
        id=str(connection.id),
        peer=peer,
        path=path,
        ended=ended,
        code=code,
        cause=cause,
        offered=stats.offered,
        sent=stats.sent,
        dropped=stats.dropped,
        **{f"dropped_{reason}": count for reason, count in dropped_by_reason(stats).items()},
        peak_messages=stats.peak_messages,
    )


def log_refused(log: Log, peer: str, path: str, status: int, why: str) -> None:
    """The ``refuse`` event: a client turned away before the upgrade, with the status."""
    log.event(
        "refuse",
        f"refused {peer} {path}: {status} {why}",
        peer=peer,
        path=path,
        status=status,
        reason=why,
    )


# -- the command line -------------------------------------------------------------------


def add_log_arguments(parser: argparse.ArgumentParser, seconds: Callable[[str], float]) -> None:
    """``--log-level``, ``--log-format`` and ``--log-drops-every`` (of type ``seconds``)."""
    group = parser.add_argument_group("logs (standard error)")
    group.add_argument(
        "--log-level",
        choices=tuple(LEVELS),
        metavar="LEVEL",
        help="debug, info (a line per client: the default), notice (what -q shows), "
        "warning or error",
    )
    group.add_argument(
        "--log-format",
        choices=FORMATS,
        default="text",
        help="text (lines for people, the default) or json (one object per line)",
    )
    group.add_argument(
        "--log-drops-every",
        type=seconds,
        default=DROP_INTERVAL,
        metavar="DURATION",
        help="summarise each client's dropped messages at most once per DURATION "
        f"(default: {DROP_INTERVAL:g}s)",
    )


def log_settings(args: argparse.Namespace) -> LogSettings:
    """The settings the flags ask for; ``-q`` is ``--log-level notice`` unless one is given."""
    name = args.log_level or ("notice" if args.quiet else "info")
    return LogSettings(level=LEVELS[name], format=args.log_format, drops_every=args.log_drops_every)
