"""Fixtures for the command-line tests."""

from collections.abc import Iterator

import pytest
from cli_process import Process

from harness.redis_server import RedisServer


@pytest.fixture
def wsfanout() -> Iterator[type[Process]]:
    started: list[Process] = []

    class Started(Process):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            started.append(self)

    yield Started
    for process in started:
        process.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own on a free port, stopped afterwards."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()
