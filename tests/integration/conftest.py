"""Fixtures for integration tests: a hub behind a real websockets server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.server import serve

from wsfanout import Hub

from .wsnet import Net

CLOSE_TIMEOUT = 0.5
"""The hub's close timeout in these tests: a stalled client is aborted after it."""


@pytest.fixture
async def loop_guard(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    """Fail the test if it leaves a task running or an error reached the event loop or logs.

    Errors that reach the loop include "Task exception was never retrieved", which the
    loop reports when the task is collected; a collection at teardown brings it out.
    """
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    caplog.set_level(logging.WARNING)
    try:
        yield
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]
        pending: set[asyncio.Task[Any]] = set()
        if others:
            # Tasks that were cancelled or are finishing their last step get the chance.
            _, pending = await asyncio.wait(others, timeout=2.0)
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert not pending, f"tasks left running after the test: {pending}"
    assert not reported, f"errors reached the event loop: {reported}"
    logged = [
        f"{record.name}: {record.getMessage()}"
        for record in caplog.records
        if record.levelno >= logging.ERROR
        and record.name.split(".")[0] in {"websockets", "wsfanout"}
    ]
    assert not logged, f"errors were logged: {logged}"


@pytest.fixture
async def net(loop_guard: None) -> AsyncIterator[Net]:
    """A hub served on 127.0.0.1 port 0; connect clients with ``net.connect(...)``."""
    network = Net(Hub(close_timeout=CLOSE_TIMEOUT))
    server = await serve(network.handler, "127.0.0.1", 0, close_timeout=1.0)
    network.attach_server(server)
    try:
        yield network
    finally:
        await network.shutdown()
