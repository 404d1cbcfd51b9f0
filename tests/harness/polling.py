"""Waiting for state that has no event: a condition polled under a guard."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL = 0.005
"""Seconds between two looks: how late a condition may be seen, not a schedule."""


async def until(condition: Callable[[], T], guard: float = 10.0) -> T:
    """Wait until ``condition()`` is true and return what it returned; fail (TimeoutError)
    after ``guard`` seconds. For the hub's counters and the like, which no event signals."""
    async with asyncio.timeout(guard):
        while not (value := condition()):  # noqa: ASYNC110 - there is no event to await
            await asyncio.sleep(POLL)
        return value
