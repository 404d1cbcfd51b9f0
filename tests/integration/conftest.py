"""Fixtures for integration tests: a hub behind a real websockets server on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from wsfanout import Hub

from .wsnet import LoopGuard, Net, served

CLOSE_TIMEOUT = 0.5
"""The hub's close timeout in these tests: a stalled client is aborted after it."""


@pytest.fixture
async def loop_guard(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    """Fail the test if it leaves a task running or an error reached the event loop or logs."""
    caplog.set_level(logging.WARNING)
    guard = LoopGuard()
    yield
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    await guard.verify(records)


@pytest.fixture
async def net(loop_guard: None) -> AsyncIterator[Net]:
    """A hub served on 127.0.0.1 port 0; connect clients with ``net.connect(...)``."""
    async with served(Hub(close_timeout=CLOSE_TIMEOUT)) as network:
        yield network
