"""Fixtures for the command-line tests."""

from collections.abc import Iterator

import pytest
from cli_process import GUARD, Process


@pytest.fixture
def wsfanout() -> Iterator[type[Process]]:
    started: list[Process] = []

    class Started(Process):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            started.append(self)

    yield Started
    for process in started:
        if process.popen.poll() is None:
            process.popen.kill()
        process.popen.wait(timeout=GUARD)
        for stream in (process.popen.stdin, process.popen.stdout):
            if stream is not None:
                stream.close()
