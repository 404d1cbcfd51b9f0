"""The admin listener's status page in headless Chromium: it shows the crowd live,
a stalled client's drops while it is being dropped, then its close.

The page is a wsfanout subscriber of its own (``/live``, SkipToLatest); the numbers
it shows are read from its DOM and compared with the hub's own counters. Set
``WSFANOUT_SCREENSHOT=PATH`` to keep the screenshot (docs/how-to/status-page.png is
made so).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from integration.wsnet import served
from wsfanout import Hub
from wsfanout.metrics import serve_admin
from wsfanout.policies import Disconnect, DropOldest, SkipToLatest

from .chromium import GUARD, VIEWPORT, Page
from .test_harness import png_size_and_first_pixel

BIG = "x" * 16384
MAX_LAG = 5.0
"""The stalled client's cut: long enough to watch it being dropped first."""


def field(client_id: str, name: str, table: str = "clients") -> str:
    """JavaScript: the number a row shows in a column, or null while there is no row."""
    return (
        f"(() => {{ const cell = document.querySelector("
        f'\'#{table} tr[data-id="{client_id}"] [data-field="{name}"]\');'
        f" return cell ? Number(cell.dataset.value) : null; }})()"
    )


async def keep_publishing(hub: Hub, stop: asyncio.Event) -> None:
    """A steady feed, so rates and lag move while the page watches (pacing, not waiting)."""
    n = 0
    while not stop.is_set():
        for _ in range(4):
            hub.publish(f"tick {n}")
            n += 1
        await asyncio.sleep(0.02)


async def test_the_status_page_shows_a_stalled_client_being_dropped_then_closed(
    page: Page, tmp_path: Path
) -> None:
    hub = Hub(close_timeout=0.5)
    stop = asyncio.Event()
    async with (
        asyncio.timeout(4 * GUARD),
        served(hub, compression=None) as net,
        serve_admin(hub, interval=0.2) as admin,
    ):
        fast = [await net.connect("fast", policy_name="chat", compression=None) for _ in range(4)]
        left = await net.connect("left", policy_name="chat", compression=None)
        await left.ws.close(1000, "going home")
        await left.route.finished()
        for _ in range(2):
            await net.connect(
                "ticker", policy=SkipToLatest(), policy_name="market-data", compression=None
            )
        stalled = await net.connect(
            "stalled",
            policy=DropOldest(max_messages=8) | Disconnect(max_lag=MAX_LAG),
            policy_name="feed",
            stalled=True,  # a 4 KiB receive buffer: it stops taking at once
            compression=None,
        )
        published = 0
        while stalled.sub.stats().dropped == 0:  # until its queue overflows
            assert published < 20_000
            hub.publish(BIG)
            published += 1
            await asyncio.sleep(0)  # the fast clients read (the kernel absorbs no burst)
        stalled_id = str(stalled.route.server_ws.id)
        dropped_before = stalled.sub.stats().dropped
        feeding = asyncio.create_task(keep_publishing(hub, stop))
        try:
            await page.goto(admin.url)
            # While it is being dropped: its row, its drops, its full queue, its lag.
            shown = await page.wait_for(
                f"{field(stalled_id, 'dropped')} > {dropped_before} && "
                f"{field(stalled_id, 'lag')} > 0.3 && window.latest.history.length >= 3 && "
                f"{field(stalled_id, 'dropped')}"
            )
            after = stalled.sub.stats()
            assert dropped_before < shown <= after.dropped
            assert await page.evaluate(field(stalled_id, "queued_messages")) == 8
            policy = await page.evaluate(
                f'document.querySelector(\'#clients tr[data-id="{stalled_id}"] '
                '[data-field="policy"]\').textContent'
            )
            assert policy == "feed"
            reasons = await page.evaluate(
                f'document.querySelector(\'#clients tr[data-id="{stalled_id}"] '
                '[data-field="reasons"]\').textContent'
            )
            assert reasons.startswith("oldest ")
            # The furthest behind comes first, and the totals are the hub's.
            first = await page.evaluate("document.querySelector('#clients tbody tr').dataset.id")
            assert first == stalled_id
            totals = await page.evaluate("window.latest.totals")
            assert totals["subscribers"] == 7
            # The page itself is not counted: it subscribes to the listener's own hub.
            assert (
                await page.evaluate(
                    "Number(document.querySelector('[data-total=\"subscribers\"]').dataset.value)"
                )
                == 7
            )
            assert totals["sent"] <= hub.stats().sent
            assert (
                await page.evaluate(
                    "document.querySelector('#spark-sent polyline').getAttribute('points')"
                    ".split(' ').length"
                )
                >= 3
            )
            for client in fast:
                assert await page.evaluate(field(str(client.route.server_ws.id), "dropped")) == 0
            # A picture of it, once the sparklines have a few seconds of history.
            await page.wait_for("window.latest.history.length >= 12")
            assert await page.evaluate(field(stalled_id, "dropped")) > 0
            shot = await page.screenshot(tmp_path / "status-page.png")
            assert png_size_and_first_pixel(shot.read_bytes())[:2] == VIEWPORT
            if os.environ.get("WSFANOUT_SCREENSHOT"):
                shutil.copy(shot, os.environ["WSFANOUT_SCREENSHOT"])

            # Then its policy cuts it: it leaves the crowd for the closed list, with its code.
            code = await page.wait_for(
                f"{field(stalled_id, 'code', 'closed')} === 1013 && "
                f"{field(stalled_id, 'dropped')} === null && "
                f"{field(stalled_id, 'code', 'closed')}",
                timeout=MAX_LAG + GUARD,
            )
            assert code == 1013
            cause = await page.evaluate(
                f'document.querySelector(\'#closed tr[data-id="{stalled_id}"] '
                '[data-field="cause"]\').textContent'
            )
            assert cause.endswith(f">= max_lag={MAX_LAG}")
            assert cause == stalled.sub.stats().close.cause  # type: ignore[union-attr]
            closed_by_policy = await page.wait_for(
                "Number(document.querySelector('[data-total=\"closed_by_policy\"]')"
                ".dataset.value) === 1 && 1"
            )
            assert closed_by_policy == 1
        finally:
            stop.set()
            await feeding
        # Shutting down: the page says so before its socket closes.
        admin.stopping()
        assert await page.wait_for("window.latest.state === 'stopping' && window.latest.state")
    assert await page.wait_for("document.getElementById('state').textContent === 'disconnected'")
    for client in fast:
        assert client.sub.stats().dropped == 0
