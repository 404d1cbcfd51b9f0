"""Process control for ``serve``: signals, start-up deadlines and exit codes.

SIGINT and SIGTERM ask for a clean shutdown; a second one exits at once. A server
that cannot start (Redis unreachable, a worker that died) raises :class:`ServeError`,
which the command reports in one line with exit status 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
from collections.abc import Awaitable
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .serve import Log

__all__ = [
    "STARTUP_TIMEOUT",
    "ServeError",
    "OncePerInterval",
    "Signals",
    "announce",
    "cancel",
    "within",
    "worker_ended",
]


STARTUP_TIMEOUT = 30.0
"""Seconds to connect to Redis, subscribe and start the workers, once Redis answered."""


class ServeError(Exception):
    """The server cannot start (Redis unreachable, a worker that failed): exit 1."""


async def within(awaitable: Awaitable[Any], what: str) -> None:
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT):
            await awaitable
    except TimeoutError:
        raise ServeError(f"{what} within {STARTUP_TIMEOUT:g} s") from None


class Signals:
    """SIGINT and SIGTERM set :attr:`stop`; a second one exits at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stderr: IO[str]) -> None:
        self.loop = loop
        self.stderr = stderr
        self.stop = asyncio.Event()
        self.received: list[int] = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        if self.stop.is_set():  # a second signal: give up on a clean shutdown
            self.stderr.flush()
            os._exit(128 + signum)
        self.received.append(signum)
        self.stop.set()

    def remove(self) -> None:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.loop.remove_signal_handler(signum)

    def exit_code(self, log: Log) -> int:
        if not self.received:
            return 0
        log(f"stopped by {signal.Signals(self.received[0]).name}")
        return 130 if self.received[0] == signal.SIGINT else 0


class OncePerInterval(logging.Filter):
    """Lets each distinct log message or loop error through once per ``interval`` seconds.

    A flood of one failure (``socket.accept()`` out of descriptors under a slowloris,
    asyncio's "socket.send() raised exception." hundreds of times per reset
    connection) then costs one line per interval, which says how many were held back;
    the first of each still has its traceback, except ``accept()`` out of descriptors
    or memory, which is one line naming the limit (:func:`resource_exhaustion`).
    """

    def __init__(self, log: Log, interval: float = 10.0) -> None:
        super().__init__()
        self.log = log
        self.interval = interval
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def _admit(self, key: str, now: float) -> bool:
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            self.log(f"{held} more of {key!r} in the last {self.interval:g} s", always=True)
        return True

    def filter(self, record: logging.LogRecord) -> bool:
        return self._admit(f"{record.name}: {record.msg}", record.created)

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        """Filter asyncio's and websockets' loggers and the loop's exception handler."""
        for name in ("asyncio", "websockets"):
            logging.getLogger(name).addFilter(self)

        def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if not self._admit(str(context.get("message")), loop.time()):
                return
            line = resource_exhaustion(context)
            if line is not None:
                self.log(line, always=True)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handle)

    def remove(self) -> None:
        for name in ("asyncio", "websockets"):
            logging.getLogger(name).removeFilter(self)


RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
"""``accept()`` errors asyncio survives by itself: it retries a second later."""


def resource_exhaustion(context: dict[str, Any]) -> str | None:
    """One line for an ``accept()`` out of descriptors or memory, or None for any
    other loop error: the operator needs the limit that was hit, not a traceback."""
    exc = context.get("exception")
    if not isinstance(exc, OSError) or exc.errno not in RESOURCE_ERRORS:
        return None
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    hint = ""
    if exc.errno == errno.EMFILE:
        with contextlib.suppress(ImportError, OSError, ValueError):
            import resource

            soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
            hint = f"; the descriptor limit (ulimit -n) is {soft}"
    return f"{context.get('message')}: {name} ({exc.strerror}){hint}; accepting again in 1 s"


def announce(stdout: IO[str] | None, line: str, log: Log) -> None:
    """Print the listening line on standard output; if it is closed (``>&-``) or its
    reader left, say so on standard error and serve anyway: the server did listen."""
    try:
        if stdout is None:
            raise OSError("standard output is closed")
        print(line, file=stdout)
        stdout.flush()
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        shown = line.removeprefix("wsfanout: ")
        log(f"cannot print the listening line on standard output ({why}): {shown}", always=True)


async def cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def worker_ended(ended: asyncio.Future[int], pid: int | None) -> None:
    if not ended.done():
        ended.set_result(pid or 0)
