"""Headless Chromium for the browser tests, driven over the Chrome DevTools Protocol (CDP).

:class:`Chromium` is Debian's ``/usr/bin/chromium`` started with a fresh profile in a
temporary folder; :class:`Page` is one tab of it, in a browser context of its own,
talked to over a websocket opened in the test's own event loop.

Why a small CDP client on ``websockets`` rather than playwright (both were tried on
Debian's Chromium 156 with playwright 1.65, launched with ``executable_path``): both
work, but

- the client needs no new dependency: ``websockets`` is already the core's, whereas
  playwright installs 165 MB, a Node.js driver included, whose protocol is pinned to
  its own Chromium build rather than to whichever Chromium Debian's updates bring;
- it fits pytest-asyncio's function-scoped event loops: the session's browser is a
  plain process, and each test opens its connection in its own loop, whereas
  playwright's objects stay bound to the loop that launched the browser (used from
  the next test's loop, ``new_page()`` fails with "attached to a different loop");
- it starts a little faster: from nothing to a first page evaluated took 0.36 to 0.51 s
  (Chromium listening after 0.1 s), against 0.54 to 0.58 s for playwright, 0.21 s of
  which start its Node.js driver; a fresh page per test then takes about 0.16 s.

The dozen CDP methods used here (``Target``, ``Page``, ``Runtime``, ``Log``,
``Emulation``) have been stable for years. Nothing here sleeps to let time pass:
start-up waits for the line Chromium prints when DevTools listens, shutdown for the end
of its stderr, and pages for the browser's own events and promises.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import fcntl
import itertools
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

__all__ = [
    "CHROMIUM",
    "FLAGS",
    "GUARD",
    "VIEWPORT",
    "BrowserError",
    "Chromium",
    "ConsoleMessage",
    "JavaScriptError",
    "Page",
    "PageError",
    "UncaughtPageErrors",
]

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's ``chromium`` package; ``make test`` and ``.ci/run`` install it when missing."""

GUARD = 15.0
"""Seconds after which a wait is a failure; never a way to let time pass."""

VIEWPORT = (1280, 800)
"""Every page's viewport in CSS pixels, at a device pixel ratio of 1, so that screenshots
have the same size whatever the Chromium version's window decorations."""

FLAGS = (
    "--headless",
    "--no-sandbox",  # root in a container has no user namespace for the sandbox
    "--disable-gpu",
    # Without these Chromium reaches out to Google's hosts, which are unreachable here.
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Debian's launcher adds this only when /dev/shm is small, and its check breaks when
    # findmnt lists /dev/shm twice; containers often have a 64 MB /dev/shm.
    "--disable-dev-shm-usage",
    "--no-proxy-server",  # the pages under test are all on 127.0.0.1
    "--hide-scrollbars",  # screenshots show the page only
    "--remote-debugging-port=0",
    # Chromium also reads commands on fd 3, the lifeline (see Chromium.start), and would
    # answer on fd 4, /dev/null.
    "--remote-debugging-pipe",
)
"""Chromium's command-line flags, besides ``--user-data-dir``."""

LISTENING = "DevTools listening on "
"""The line Chromium prints on stderr once DevTools accepts connections.

It is the start-up event. The ``DevToolsActivePort`` file in the profile holds the
same port, but Chromium writes it *after* printing this line (it was missing in 8 of
15 starts when read at once), so reading it would mean polling.
"""

log = logging.getLogger("tests.browser")
"""Console messages and page errors, at INFO, so pytest shows them for failed tests."""
log.setLevel(logging.INFO)


class BrowserError(Exception):
    """Chromium did not start, died, or answered a DevTools command with an error."""


class JavaScriptError(Exception):
    """JavaScript evaluated by :meth:`Page.evaluate` threw (or its promise rejected)."""


class UncaughtPageErrors(AssertionError):
    """The page threw errors that nothing caught; :meth:`Page.check_errors` raises it."""


@dataclass(frozen=True)
class ConsoleMessage:
    """A ``console.*`` call of the page (``source`` "console-api"), or a message the
    browser logged about it, such as a failed WebSocket (``source`` "network")."""

    type: str
    """log, info, warning, error, debug... (the level, for the browser's own messages)."""
    text: str
    source: str = "console-api"


@dataclass(frozen=True)
class PageError:
    """An exception the page threw and did not catch, or a promise rejection left unhandled."""

    message: str
    url: str = ""
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        where = f" at {self.url}:{self.line + 1}:{self.column + 1}" if self.url else ""
        return f"{self.message}{where}"


class Chromium:
    """One headless Chromium process with an empty profile of its own.

    :meth:`start` returns once DevTools listens; :meth:`stop` ends every process of it
    and removes the profile. If the test process dies without calling :meth:`stop`,
    Chromium still exits: it reads DevTools commands from a pipe whose only writer is
    this object, and quits when that pipe closes.
    """

    def __init__(self, executable: Path = CHROMIUM) -> None:
        self.executable = executable
        self.process: subprocess.Popen[bytes] | None = None
        self.profile: Path | None = None
        self._websocket_url: str | None = None
        self._lifeline: int | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)
        self._listening: queue.Queue[str | None] = queue.Queue()
        self._reader: threading.Thread | None = None

    @property
    def websocket_url(self) -> str:
        """The browser's DevTools endpoint, ``ws://127.0.0.1:PORT/devtools/browser/ID``."""
        if self._websocket_url is None:
            raise BrowserError("Chromium is not running")
        return self._websocket_url

    @property
    def running(self) -> bool:
        """Whether the browser process is alive."""
        return self.process is not None and self.process.poll() is None

    def stderr_tail(self, lines: int = 20) -> str:
        """The last lines Chromium wrote on stderr, for error messages."""
        return "\n".join(list(self._stderr)[-lines:])

    def start(self) -> None:
        """Start Chromium and wait until its DevTools endpoint listens."""
        if not self.executable.exists():
            raise BrowserError(
                f"{self.executable} is missing: `make test` installs Debian's chromium"
            )
        self.profile = Path(tempfile.mkdtemp(prefix="wsfanout-chromium-"))
        reading, self._lifeline = os.pipe()
        # Chromium reads its DevTools pipe on fd 3: bash moves the read end there. Above
        # 9, the original cannot be 3 or 4 itself (in a process with few files open).
        lifeline = fcntl.fcntl(reading, fcntl.F_DUPFD, 10)
        os.close(reading)
        command = [
            "bash",
            "-c",
            f'exec "$@" 3<&{lifeline} 4>/dev/null {lifeline}<&-',
            "chromium",
            str(self.executable),
            *FLAGS,
            f"--user-data-dir={self.profile}",
            "about:blank",
        ]
        # Its crash reports, caches and temporary files go into the profile too, not
        # under $HOME or $TMPDIR, and are removed with it.
        inside = dict.fromkeys(("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "TMPDIR"), str(self.profile))
        env = os.environ | inside
        try:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                pass_fds=(lifeline,),
                start_new_session=True,  # its own process group, killed as one
            )
        except BaseException:
            self.stop()
            raise
        finally:
            os.close(lifeline)
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        try:
            url = self._listening.get(timeout=GUARD)
        except queue.Empty:
            url = None
        if url is None:
            returncode = self.process.poll()
            self.stop()
            problem = (
                f"DevTools did not listen within {GUARD} s"
                if returncode is None
                else f"Chromium exited with {returncode} before DevTools listened"
            )
            raise BrowserError(f"{problem}; its stderr ended with:\n{self.stderr_tail()}")
        self._websocket_url = url

    def _read_stderr(self) -> None:
        """Keep draining Chromium's stderr (a full pipe would block it) and spot LISTENING."""
        assert self.process is not None
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip()
            self._stderr.append(line)
            if line.startswith(LISTENING):
                self._listening.put(line.removeprefix(LISTENING).strip())
        self._listening.put(None)

    def stop(self) -> None:
        """End Chromium and all its processes, then remove its profile; idempotent.

        Closing the lifeline asks Chromium to quit; if it has not within
        :data:`GUARD`, its process group is killed. Every Chromium process inherits its
        stderr, so the end of that stream means none is left.
        """
        process, self.process = self.process, None
        self._websocket_url = None
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None
        if process is not None:
            try:
                process.wait(timeout=GUARD)
            except subprocess.TimeoutExpired:
                self._kill_group(process.pid)
                process.wait(timeout=GUARD)
            if self._reader is not None:
                self._reader.join(timeout=GUARD)
                if self._reader.is_alive():
                    self._kill_group(process.pid)
                    self._reader.join(timeout=GUARD)
                if self._reader.is_alive():
                    raise BrowserError(
                        f"processes of Chromium {process.pid} outlived it, in {self.profile}"
                    )
            assert process.stderr is not None
            process.stderr.close()
        if self.profile is not None:
            shutil.rmtree(self.profile)
            self.profile = None

    @staticmethod
    def _kill_group(pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


Listener = Callable[[str, dict[str, Any]], None]
"""Receives a CDP event's method and params."""


class DevTools:
    """One DevTools websocket to the browser, carrying flattened sessions to its tabs.

    Commands are matched to their responses by id; events go to the listener of their
    session. A reader task started by :meth:`open` dispatches both, in order.
    """

    def __init__(self, websocket: ClientConnection) -> None:
        self.websocket = websocket
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._listeners: dict[str, Listener] = {}
        self._closed: BaseException | None = None
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, url: str) -> DevTools:
        """Connect to the DevTools endpoint ``url`` (a :attr:`Chromium.websocket_url`)."""
        # CDP messages such as screenshots are large; the browser is trusted.
        websocket = await connect(url, max_size=None, compression=None, open_timeout=GUARD)
        return cls(websocket)

    def listen(self, session_id: str, listener: Listener) -> None:
        """Send the events of the session ``session_id`` to ``listener``."""
        self._listeners[session_id] = listener

    async def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session_id: str | None = None,
        timeout: float = GUARD,
    ) -> dict[str, Any]:
        """Send a command and return its result; a CDP error raises :class:`BrowserError`."""
        if self._closed is not None:
            raise BrowserError(f"{method}: the DevTools connection is closed") from self._closed
        command: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session_id is not None:
            command["sessionId"] = session_id
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[command["id"]] = answer
        try:
            await self.websocket.send(json.dumps(command))
            async with asyncio.timeout(timeout):
                response = await answer
        finally:
            self._pending.pop(command["id"], None)
        if "error" in response:
            error = response["error"]
            raise BrowserError(f"{method}: {error.get('message')} {error.get('data', '')}".strip())
        result: dict[str, Any] = response.get("result", {})
        return result

    async def _read(self) -> None:
        try:
            async for raw in self.websocket:
                message = json.loads(raw)
                if "id" in message:
                    answer = self._pending.get(message["id"])
                    if answer is not None and not answer.done():
                        answer.set_result(message)
                elif (listener := self._listeners.get(message.get("sessionId", ""))) is not None:
                    listener(message["method"], message.get("params", {}))
        except ConnectionClosed as exc:
            self._closed = exc
        finally:
            if self._closed is None:
                self._closed = BrowserError("the DevTools connection closed")
            for answer in self._pending.values():
                if not answer.done():
                    answer.set_exception(BrowserError("the DevTools connection closed"))

    async def close(self) -> None:
        """Close the websocket and wait for the reader (an error in it is raised here)."""
        await self.websocket.close()
        await self._reader


WAIT_FOR = """
new Promise((resolve, reject) => {
  const deadline = performance.now() + %(milliseconds)d;
  const check = () => {
    let value;
    try {
      value = (() => (%(condition)s))();
    } catch (error) {
      reject(error);
      return;
    }
    if (value) {
      resolve(value);
    } else if (performance.now() > deadline) {
      const timeout = new Error("the condition stayed false");
      timeout.name = "WaitForTimeout";
      reject(timeout);
    } else {
      requestAnimationFrame(check);
    }
  };
  check();
})
"""
"""The promise :meth:`Page.wait_for` awaits: the condition checked on every frame."""


class Page:
    """One tab in a browser context of its own (fresh cookies and storage), with what it
    logged (:attr:`console`) and the errors it did not catch (:attr:`errors`).

    Open it with :meth:`open` and end it with :meth:`close`; the ``page`` fixture does both
    and fails the test if :attr:`errors` is not empty at the end.
    """

    def __init__(self, devtools: DevTools, context_id: str, session_id: str) -> None:
        self.devtools = devtools
        self.context_id = context_id
        self.session_id = session_id
        self.console: list[ConsoleMessage] = []
        self.errors: list[PageError] = []
        self._loaded: set[str] = set()
        """Loader ids (one per document) whose ``load`` event has fired."""
        self._load_seen = asyncio.Event()
        devtools.listen(session_id, self._on_event)

    @classmethod
    async def open(cls, browser: Chromium) -> Page:
        """Open a blank tab in a new browser context of ``browser``."""
        if not browser.running:
            tail = browser.stderr_tail()
            raise BrowserError(f"Chromium is not running; its stderr ended with:\n{tail}")
        devtools = await DevTools.open(browser.websocket_url)
        try:
            # Disposed of, with its tab, when this connection closes, however it closes.
            context = await devtools.send("Target.createBrowserContext", {"disposeOnDetach": True})
            context_id: str = context["browserContextId"]
            target = await devtools.send(
                "Target.createTarget", {"url": "about:blank", "browserContextId": context_id}
            )
            attached = await devtools.send(
                "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
            )
            page = cls(devtools, context_id, attached["sessionId"])
            for method in ("Page.enable", "Runtime.enable", "Log.enable"):
                await page._send(method)
            await page._send("Page.setLifecycleEventsEnabled", {"enabled": True})
            width, height = VIEWPORT
            await page._send(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            )
        except BaseException:
            await devtools.close()
            raise
        return page

    async def _send(
        self, method: str, params: dict[str, Any] | None = None, *, timeout: float = GUARD
    ) -> dict[str, Any]:
        return await self.devtools.send(method, params, session_id=self.session_id, timeout=timeout)

    def _on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            text = " ".join(_describe(arg) for arg in params.get("args", []))
            self._record_console(ConsoleMessage(params["type"], text))
        elif method == "Log.entryAdded":
            entry = params["entry"]
            self._record_console(ConsoleMessage(entry["level"], entry["text"], entry["source"]))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            exception = details.get("exception", {})
            error = PageError(
                exception.get("description") or details.get("text", "uncaught error"),
                details.get("url", ""),
                details.get("lineNumber", 0),
                details.get("columnNumber", 0),
            )
            log.info("page error: %s", error)
            self.errors.append(error)
        elif method == "Page.lifecycleEvent" and params["name"] == "load":
            self._loaded.add(params["loaderId"])
            self._load_seen.set()

    def _record_console(self, message: ConsoleMessage) -> None:
        log.info("console.%s: %s", message.type, message.text)
        self.console.append(message)

    async def goto(self, url: str, *, timeout: float = GUARD) -> None:
        """Navigate to ``url`` and wait for its ``load`` event (scripts have run)."""
        async with asyncio.timeout(timeout):
            navigated = await self._send("Page.navigate", {"url": url})
            if "errorText" in navigated:
                raise BrowserError(f"cannot load {url}: {navigated['errorText']}")
            loader = navigated.get("loaderId")
            if loader is None:
                return  # a same-document navigation (a #fragment) has no load event
            # The load event may come before or after navigate's answer.
            while loader not in self._loaded:
                self._load_seen.clear()
                await self._load_seen.wait()

    async def evaluate(self, expression: str, *, timeout: float = GUARD) -> Any:
        """The JSON value of a JavaScript expression in the page; a promise is awaited.

        ``undefined`` comes back as None. A throw raises :class:`JavaScriptError`.
        """
        evaluated = await self._send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout=timeout,
        )
        details = evaluated.get("exceptionDetails")
        if details is not None:
            exception = details.get("exception", {})
            raise JavaScriptError(exception.get("description") or details.get("text"))
        return evaluated["result"].get("value")

    async def wait_for(self, condition: str, *, timeout: float = GUARD) -> Any:
        """Wait until the JavaScript expression ``condition`` is truthy and return its value.

        The page checks it on every animation frame; after ``timeout`` seconds this raises
        :class:`TimeoutError`, with what the page logged.
        """
        script = WAIT_FOR % {
            "milliseconds": timeout * 1000,
            "condition": condition,
        }
        try:
            return await self.evaluate(script, timeout=timeout + GUARD)
        except JavaScriptError as exc:
            if not str(exc).startswith("WaitForTimeout"):
                raise
            logged = "\n".join(f"  console.{m.type}: {m.text}" for m in self.console[-10:])
            errors = "\n".join(f"  {error}" for error in self.errors)
            raise TimeoutError(
                f"{condition!r} still false after {timeout} s\n"
                f"last console messages:\n{logged or '  (none)'}\n"
                f"page errors:\n{errors or '  (none)'}"
            ) from None

    async def screenshot(self, path: Path | str, *, full_page: bool = False) -> Path:
        """Save a PNG of the viewport (or of the whole page) at ``path`` and return it."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            metrics = await self._send("Page.getLayoutMetrics")
            size = metrics["cssContentSize"]
            params["captureBeyondViewport"] = True
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": size["height"]}
            params["clip"]["scale"] = 1
        shot = await self._send("Page.captureScreenshot", params)
        target = Path(path)
        await asyncio.to_thread(target.write_bytes, base64.b64decode(shot["data"]))
        return target

    async def settle(self) -> None:
        """Return once every event the page sent before now has been recorded.

        A round trip: the browser answers after the events already queued on the socket.
        """
        await self._send("Runtime.evaluate", {"expression": "0"})

    def take_errors(self) -> list[PageError]:
        """The uncaught errors so far, forgotten, for a test that expects some."""
        errors, self.errors = self.errors, []
        return errors

    def check_errors(self) -> None:
        """Raise :class:`UncaughtPageErrors` if the page threw errors nothing caught."""
        if self.errors:
            listed = "\n".join(f"  {error}" for error in self.errors)
            count = len(self.errors)
            raise UncaughtPageErrors(f"the page threw {count} uncaught error(s):\n{listed}")

    async def close(self) -> None:
        """Close the tab and its browser context, then the DevTools connection."""
        try:
            if self.devtools._closed is None:
                await self.devtools.send(
                    "Target.disposeBrowserContext", {"browserContextId": self.context_id}
                )
        finally:
            await self.devtools.close()


def _describe(value: dict[str, Any]) -> str:
    """A console argument as the console would print it, roughly: ``{a: 2}``, ``[1, 2]``."""
    if "value" in value:
        inner = value["value"]
        return inner if isinstance(inner, str) else json.dumps(inner)
    preview = value.get("preview")
    if preview is not None and "properties" in preview:
        array = value.get("subtype") == "array"
        items = []
        for item in preview["properties"]:
            shown = item.get("value", item["type"])
            items.append(shown if array else f"{item['name']}: {shown}")
        if preview.get("overflow"):
            items.append("…")
        return f"[{', '.join(items)}]" if array else f"{{{', '.join(items)}}}"
    return str(value.get("unserializableValue", value.get("description", value["type"])))
