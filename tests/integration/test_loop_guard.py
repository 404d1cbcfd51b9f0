"""The loop guard that every integration test runs under catches what it is meant to."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

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


SAMPLE = """
import asyncio
import logging
from pathlib import Path


async def test_clean(net):
    client = await net.connect("reader")
    net.hub.publish("hello")
    await client.received(1)


async def test_logs_an_error(net):
    logging.getLogger("wsfanout").error("a failure nobody raised")


async def test_leaks_a_task(net):
    asyncio.get_running_loop().create_task(asyncio.Event().wait())
"""


def test_the_net_fixture_fails_a_test_that_logs_an_error_or_leaks_a_task(tmp_path: Path) -> None:
    here = Path(__file__).parent
    package = tmp_path / "sample"
    package.mkdir()
    for name in ("__init__.py", "conftest.py", "wsnet.py"):
        (package / name).write_text((here / name).read_text())
    with (package / "conftest.py").open("a") as conftest:
        conftest.write("\nLoopGuard.grace = 0.1  # the leaked task is never going to finish\n")
    (package / "test_sample.py").write_text(SAMPLE)
    (tmp_path / "pytest.ini").write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
    )
    session = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rE"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    report = session.stdout
    assert "3 passed, 2 errors" in report, report
    assert "ERROR at teardown of test_logs_an_error" in report, report
    assert "errors were logged: ['wsfanout: a failure nobody raised']" in report, report
    assert "ERROR at teardown of test_leaks_a_task" in report, report
    assert "tasks left running after the test" in report, report
