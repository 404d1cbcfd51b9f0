"""Run ``wsfanout`` as a subprocess and follow what it prints, without sleeping.

A module of its own (not conftest.py) so that tests import it by a name no other
test folder's conftest can shadow.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

WSFANOUT = Path(sys.executable).parent / "wsfanout"
GUARD = 15.0
"""Seconds after which a wait is a failure; never a way to let time pass."""


class Process:
    """A running ``wsfanout``: its merged stdout and stderr are read line by line."""

    def __init__(
        self, args: list[str], *, env: dict[str, str] | None = None, shell: str = ""
    ) -> None:
        command: str | list[str] = [str(WSFANOUT), *args]
        if shell:
            command = f"{shell} | {WSFANOUT} {' '.join(args)}"
        self.popen = subprocess.Popen(
            command,
            shell=bool(shell),
            stdin=None if shell else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))
        self.lines.put(None)

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first line from now on that matches ``pattern``."""
        while True:
            try:
                line = self.lines.get(timeout=GUARD)
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern!r} in {GUARD} s: {self.seen}"
                ) from None
            if line is None:
                raise AssertionError(f"exited before printing {pattern!r}: {self.seen}")
            self.seen.append(line)
            match = re.search(pattern, line)
            if match:
                return match

    def listening(self) -> str:
        return self.wait_for(r"^wsfanout: listening on (ws://\S+)")[1]

    def feed(self, text: str) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(text.encode())
        self.popen.stdin.flush()

    def end_input(self) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.close()

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.popen.send_signal(signum)

    def exit_code(self) -> int:
        return self.popen.wait(timeout=GUARD)

    def rest(self) -> list[str]:
        """Every line printed after the last one waited for, once the process has exited."""
        self.exit_code()
        lines = []
        while (line := self.lines.get(timeout=GUARD)) is not None:
            lines.append(line)
        return lines
