"""The loop guard that every integration test runs under catches what it is meant to."""

from __future__ import annotations

import asyncio
import logging

import pytest

from .wsnet import LoopGuard


async def test_the_loop_guard_passes_a_clean_test() -> None:
    guard = LoopGuard()

    async def finish() -> int:
        return 1

    assert await asyncio.get_running_loop().create_task(finish()) == 1
    await guard.verify([], grace=0.05)


async def test_the_loop_guard_catches_a_task_left_running() -> None:
    guard = LoopGuard()
    never = asyncio.Event()
    leaked = asyncio.get_running_loop().create_task(never.wait(), name="leaked")
    with pytest.raises(AssertionError, match=r"^tasks left running after the test: .*leaked"):
        await guard.verify([], grace=0.05)
    leaked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await leaked


async def test_the_loop_guard_catches_a_task_exception_never_retrieved() -> None:
    guard = LoopGuard()

    async def fail() -> None:
        raise RuntimeError("nobody looks at me")

    task = asyncio.get_running_loop().create_task(fail())
    await asyncio.wait([task])
    del task  # dropped without retrieving its exception
    with pytest.raises(
        AssertionError, match=r"^errors reached the event loop: .*Task exception was never"
    ):
        await guard.verify([], grace=0.05)


async def test_the_loop_guard_catches_an_error_logged_by_websockets_or_wsfanout() -> None:
    guard = LoopGuard()
    record = logging.LogRecord(
        "websockets.server", logging.ERROR, __file__, 1, "connection handler failed", None, None
    )
    ignored = logging.LogRecord("other", logging.ERROR, __file__, 1, "not ours", None, None)
    with pytest.raises(
        AssertionError, match=r"^errors were logged: \['websockets.server: connection handler"
    ):
        await guard.verify([record, ignored], grace=0.05)
