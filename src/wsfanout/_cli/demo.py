"""``wsfanout demo``: a crowd of simulated clients, each under a preset, on one machine.

An embedded server publishes JSON ticks (``{"seq": n, "key": "SYM3", ...}``, keyed so
``market-data`` conflates) at a steady rate. The crowd connects over real sockets on
127.0.0.1: fast clients read everything at once, slow ones pause after every frame,
stalled ones never read, and flapping ones keep disconnecting and coming back. Slow and
stalled clients have a small receive buffer, standing in for the slow network loopback
does not have; the server's sockets keep their defaults, and the hub's low-water mark
keeps its kernel from hiding a stall. Each client asks for its preset with
``?policy=NAME``, which the server turns into a policy through a :class:`Routes`.

A live table shows what each subscriber's policy did; the summary checks the point of
it all: every fast client received every message, in order, whatever the others did.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import socket
import sys
import textwrap
from collections.abc import Callable, Iterator
from typing import Any

import attrs
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from .._core.errors import HubClosedError
from .._core.stats import SubscriberStats
from .._files.presets import load_policy, preset_names
from .._files.routes import Route, Routes
from .._shell.hub import Hub
from .._shell.subscriber import Subscriber
from .admin import AdminServer

__all__ = ["run_demo"]

PERSONAS: tuple[tuple[str, str], ...] = (
    ("fast", "chat"),
    ("slow", "market-data"),
    ("stalled", "notifications"),
    ("flapping", "dashboard"),
    ("fast", "log-tail"),
    ("slow", "dashboard"),
    ("stalled", "chat"),
    ("fast", "notifications"),
    ("flapping", "market-data"),
    ("slow", "log-tail"),
    ("stalled", "log-tail"),
    ("fast", "chat"),
)
"""Who joins, in order: speed and preset. Fast clients get presets that lose nothing
while a client keeps up, so "received everything" is the promise to check."""

KEYS = 16
PAD = "." * 200
SLOW_PAUSE = 0.02
"""Seconds a slow client waits after each frame: it reads about 50 frames a second."""
SETTLE = 5.0
"""Seconds at most to wait for the crowd to join, and for fast clients to catch up."""


@attrs.define(eq=False)
class Member:
    """One simulated client: what it received, and its subscriptions on the server."""

    name: str
    speed: str
    preset: str
    received: int = 0
    next_seq: int = 0
    missed: int = 0
    """Sequence numbers skipped over between two received messages."""
    reordered: int = 0
    connections: int = 0
    subscriber: Subscriber | None = None
    finished: list[SubscriberStats] = attrs.Factory(list)
    """Final statistics of its previous connections (flapping clients have several)."""

    def take(self, frame: str | bytes) -> None:
        text = frame.decode() if isinstance(frame, bytes) else frame
        for line in text.split("\n"):  # log-tail batches lines into one frame
            seq = json.loads(line)["seq"]
            if seq < self.next_seq:
                self.reordered += 1
            else:
                self.missed += seq - self.next_seq
                self.next_seq = seq + 1
            self.received += 1

    def totals(self) -> dict[str, Any]:
        """Counters over every connection, and the current queue."""
        every = list(self.finished)
        current = self.subscriber.stats() if self.subscriber is not None else None
        if current is not None:
            every.append(current)
        close = next((s.close for s in reversed(every) if s.close is not None), None)
        return {
            "written": sum(s.sent for s in every),
            "dropped": sum(s.dropped for s in every),
            "replaced": sum(s.conflated + s.skipped for s in every),
            "queued": current.queued_messages if current is not None else 0,
            "peak": max((s.peak_messages for s in every), default=0),
            "lag": current.lag if current is not None else 0.0,
            "close": close,
        }

    def state(self) -> str:
        if self.subscriber is not None:
            return "up" if self.connections <= 1 else f"up (#{self.connections})"
        close = self.totals()["close"]
        if close is not None and close.code != 1001:
            return f"cut {close.code}"  # by its policy
        return "away" if self.speed == "flapping" else "closed"


def crowd(size: int) -> list[Member]:
    personas = itertools.islice(itertools.cycle(PERSONAS), size)
    return [Member(f"{speed}-{n}", speed, preset) for n, (speed, preset) in enumerate(personas, 1)]


def demo_routes() -> Routes:
    """``?policy=NAME`` picks a preset; anyone else gets the dashboard preset."""
    routes = tuple(
        Route(query=(("policy", name),), policy=load_policy(name), policy_name=name)
        for name in preset_names()
    )
    return Routes(routes, Route(policy=load_policy("dashboard"), policy_name="dashboard"))


# -- the crowd ------------------------------------------------------------------------


async def _read(ws: ClientConnection, member: Member, pause: float) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for frame in ws:
            member.take(frame)
            if pause:
                await asyncio.sleep(pause)


async def _connect(uri: str, *, receive_buffer: int | None = None) -> ClientConnection:
    """Connect; with ``receive_buffer``, a small kernel buffer and a small frame queue, so
    that a client that reads slowly pushes back on the server at once."""
    if receive_buffer is None:
        return await connect(uri, compression=None, close_timeout=0.2)
    host, port = uri.removeprefix("ws://").split("/")[0].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    except BaseException:
        sock.close()
        raise
    return await connect(uri, sock=sock, compression=None, max_queue=4, close_timeout=0.2)


async def _stalled(uri: str, member: Member, done: asyncio.Event) -> None:
    """Connect, then never read."""
    ws = await _connect(uri, receive_buffer=4096)
    try:
        await done.wait()
    finally:
        ws.transport.abort()


async def _flapping(uri: str, member: Member, done: asyncio.Event, rng: random.Random) -> None:
    while not done.is_set():
        async with await _connect(uri) as ws:
            reading = asyncio.ensure_future(_read(ws, member, 0.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(done.wait()), rng.uniform(0.6, 2.0))
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.4)


async def _client(uri: str, member: Member, done: asyncio.Event, rng: random.Random) -> None:
    if member.speed == "stalled":
        await _stalled(uri, member, done)
    elif member.speed == "flapping":
        await _flapping(uri, member, done, rng)
    elif member.speed == "slow":
        async with await _connect(uri, receive_buffer=8192) as ws:
            await _read(ws, member, SLOW_PAUSE)
    else:
        async with await _connect(uri) as ws:
            await _read(ws, member, 0.0)


# -- rendering ------------------------------------------------------------------------

COLUMNS = ("client", "policy", "state", "written", "read", "dropped", "replaced", "queue", "lag")

LEGEND = (
    "written: messages the server wrote to the client's connection; read: messages the "
    "client read; dropped: messages its policy let go, for any reason (SubscriberStats."
    "dropped: evicted, refused, replaced, or queued when it closed); replaced: the "
    "dropped ones a newer message replaced (conflated by key, or skipped to the latest); "
    "queue: messages waiting; lag: seconds behind."
)
"""What each column counts, printed under the table: one meaning per word."""


def rows(members: list[Member]) -> Iterator[tuple[str, ...]]:
    for m in members:
        t = m.totals()
        yield (
            m.name,
            m.preset,
            m.state(),
            str(t["written"]),
            str(m.received),
            str(t["dropped"]),
            str(t["replaced"]),
            str(t["queued"]),
            f"{t['lag']:.1f}s",
        )


def plain_table(members: list[Member], title: str) -> str:
    table = [COLUMNS, *rows(members)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS))]
    lines = [title]
    for row in table:
        cells = [
            cell.ljust(w) if i < 3 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


class _Screen:
    """The live table: rich if installed (and not refused), plain text otherwise."""

    def __init__(self, members: list[Member], plain: bool) -> None:
        self.members = members
        self.rich: Any = None
        self.live: Any = None
        self.last_plain = 0.0
        if not plain:
            try:
                import rich.box
                import rich.console
                import rich.live
                import rich.table
            except ImportError:
                print("(install wsfanout[cli] for a live table)", flush=True)
            else:
                self.rich = rich
                self.console = rich.console.Console()
        self.write: Callable[[str], None] = (
            self._rich_print if self.rich is not None else lambda text: print(text, flush=True)
        )

    def _rich_print(self, text: str) -> None:
        self.console.print(text, soft_wrap=True, highlight=False, markup=False)

    def table(self, title: str) -> Any:
        rich = self.rich
        table = rich.table.Table(
            title=title,
            title_justify="left",
            box=rich.box.SIMPLE_HEAD,
            show_edge=False,
            pad_edge=False,
            collapse_padding=True,
        )
        for i, column in enumerate(COLUMNS):
            table.add_column(column, justify="left" if i < 3 else "right")
        for member, row in zip(self.members, rows(self.members), strict=True):
            style = {"fast": "green", "slow": "yellow", "stalled": "red"}.get(member.speed)
            table.add_row(*row, style=style)
        return table

    def start(self, title: str) -> None:
        if self.rich is not None:
            self.live = self.rich.live.Live(
                self.table(title), console=self.console, auto_refresh=False
            )
            self.live.start()

    def update(self, title: str, now: float) -> None:
        if self.live is not None:
            self.live.update(self.table(title), refresh=True)
        elif now - self.last_plain >= 5.0:
            self.last_plain = now
            self.write(plain_table(self.members, title) + "\n")

    def stop(self, title: str) -> None:
        if self.live is not None:
            self.live.update(self.table(title), refresh=True)
            self.live.stop()
            self.console.print()
        else:
            self.write(plain_table(self.members, title) + "\n")


# -- the demo -------------------------------------------------------------------------


async def _run(
    duration: float, size: int, rate: int, plain: bool, admin_at: tuple[str, int]
) -> int:
    members = crowd(size)
    by_name = {m.name: m for m in members}
    routes = demo_routes()
    hub = Hub(close_timeout=0.2)
    joined = asyncio.Event()
    done = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        member = by_name[ws.request.path.split("?")[0].strip("/")]
        assert ws.request is not None
        route = routes.route_for(ws.request, ws.subprotocol)
        try:
            async with hub.subscribe(
                ws, policy=route.policy, policy_name=route.policy_name
            ) as subscriber:
                member.subscriber = subscriber
                member.connections += 1
                if all(m.connections for m in members):
                    joined.set()
                with contextlib.suppress(ConnectionClosed):
                    async for _ in ws:
                        pass
        except HubClosedError:
            return
        member.finished.append(subscriber.stats())
        member.subscriber = None

    screen = _Screen(members, plain)
    admin = AdminServer(hub, interval=0.5)
    try:
        await admin.start(*admin_at)
    except OSError as exc:
        screen.write(f"cannot serve the status page on {admin_at[0]}:{admin_at[1]}: {exc}")
        return 1
    try:
        async with serve(handler, "127.0.0.1", 0, compression=None) as server:
            port = server.sockets[0].getsockname()[1]
            rng = random.Random(5)
            tasks = [
                asyncio.create_task(
                    _client(f"ws://127.0.0.1:{port}/{m.name}?policy={m.preset}", m, done, rng)
                )
                for m in members
            ]
            try:
                await asyncio.wait_for(joined.wait(), SETTLE)
            except TimeoutError:
                screen.write("the crowd did not join in time")
                return 1
            kinds = ", ".join(
                f"{sum(m.speed == s for m in members)} {s}"
                for s in ("fast", "slow", "stalled", "flapping")
            )
            admin.ready()
            screen.write(
                f"wsfanout demo: publishing {rate} messages/s for {duration:g} s to {len(members)} "
                f"clients ({kinds}), each under a preset.\n"
                f"Watch them live in a browser: {admin.url}\n"
            )
            screen.write(textwrap.fill(LEGEND, 88) + "\n")
            start = screen.last_plain = loop.time()
            published = 0
            total = max(1, round(duration * rate))
            screen.start("starting")
            tick = 0.05
            while published < total:
                now = loop.time()
                due = min(int((now - start) * rate) + 1, total)
                for seq in range(published, due):
                    key = f"SYM{seq % KEYS}"
                    hub.publish(json.dumps({"seq": seq, "key": key, "pad": PAD}), key=key)
                published = max(published, due)
                screen.update(f"t = {now - start:4.1f} s, {published} published", now)
                await asyncio.sleep(tick)

            # Fast clients have every message on its way; give them a moment to read it.
            fast = [m for m in members if m.speed == "fast"]
            deadline = loop.time() + SETTLE
            while loop.time() < deadline and any(m.received < published for m in fast):
                screen.update(f"finishing: {published} published", loop.time())
                await asyncio.sleep(tick)
            screen.stop(f"after {duration:g} s: {published} published")
            final = {m.name: m.totals() for m in members}  # before closing counts as losses

            done.set()
            admin.stopping()
            await hub.aclose(code=1001, timeout=0.5)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        await admin.aclose()
    return _summary(members, final, published, screen.write)


def _summary(
    members: list[Member],
    final: dict[str, dict[str, Any]],
    published: int,
    write: Callable[[str], None],
) -> int:
    lines = ["Summary"]
    unaffected = True
    for m in members:
        t = final[m.name]
        if m.speed == "fast":
            whole = m.received == published and m.missed == 0 and m.reordered == 0
            unaffected &= whole
            verdict = "all of them, in order" if whole else f"missed {published - m.received}"
            lines.append(f"  {m.name} ({m.preset}): read {m.received} of {published}, {verdict}")
        elif m.speed == "slow":
            lines.append(
                f"  {m.name} ({m.preset}): read {m.received}; its policy dropped "
                f"{t['dropped']} ({t['replaced']} of them replaced by newer ones), "
                f"{t['queued']} queued at the end"
            )
        elif m.speed == "stalled":
            close = t["close"]
            if close is not None and close.code != 1001:
                fate = f"disconnected by its policy ({close.code}: {close.cause})"
            else:
                fate = f"held at most {t['peak']} queued messages, then the hub closed"
            lines.append(f"  {m.name} ({m.preset}): never read; {fate}")
        else:
            lines.append(
                f"  {m.name} ({m.preset}): connected {m.connections} times, "
                f"read {m.received} while connected"
            )
    others = sum(m.speed != "fast" for m in members)
    if unaffected:
        lines.append(
            f"Fast clients were unaffected by the {others} others: every message, in order."
        )
    else:
        lines.append("Fast clients were affected: see above.")
    write("\n".join(lines))
    return 0 if unaffected else 1


def run_demo(
    *,
    duration: float,
    clients: int,
    rate: int,
    plain: bool,
    admin: tuple[str, int] = ("127.0.0.1", 0),
) -> int:
    """Run the demo; exit code 0 if every fast client received every message in order.

    The status page of the admin listener (``admin.py``) serves the crowd at ``admin``.
    """
    try:
        return asyncio.run(_run(duration, clients, rate, plain, admin))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
