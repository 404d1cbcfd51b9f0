"""wsfanout.js in Chromium against a scripted server that sends exactly the frames of
docs/protocol.md: its examples first, then holes, notices, heartbeats, resumes and
broken frames, each of which must raise the right event (or none)."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.parse
from pathlib import Path
from typing import Any

from .chromium import GUARD, Page
from .jsclient import (
    connected,
    control,
    data,
    events,
    open_page,
    query,
    script_site,
    start,
    stats,
    wait_events,
)

PROTOCOL = Path(__file__).resolve().parents[2] / "docs" / "protocol.md"
FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def examples(language: str) -> list[str]:
    text = PROTOCOL.read_text(encoding="utf-8")
    return [body.strip() for lang, body in FENCE.findall(text) if lang == language]


CONTROL_EXAMPLES = {json.loads(example)["type"]: example for example in examples("json")}
"""The protocol page's control frames, by type, exactly as the page writes them."""
DATA_EXAMPLE, RESUME_URL = examples("text")
DATA_FRAME = DATA_EXAMPLE.replace("\\n", "\n", 1)  # the page writes the line feed as \n

E = "h3k9q2mv"
FAST = {"minDelay": 20, "maxDelay": 80}


def places(messages: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return [(message["topic"], message["offset"]) for message in messages]


# -- the protocol page's examples -----------------------------------------------------


def test_the_protocol_page_has_the_examples_these_tests_send() -> None:
    assert sorted(CONTROL_EXAMPLES) == ["ack", "ack-request", "gap", "heartbeat", "level", "resume"]
    assert DATA_FRAME.count("\n") == 1
    assert RESUME_URL.startswith("wss://")


async def test_the_data_frame_example_is_read_as_its_message(page: Page) -> None:
    async with connected(page) as (_, connection):
        await connection.send(DATA_FRAME)
        assert await wait_events(page, "message", 1) == [
            {
                "data": '{"symbol": "EURUSD", "bid": 1.0842}',
                "topic": "prices",
                "offset": 42,
                "epoch": E,
            }
        ]


async def test_the_client_asks_to_resume_as_the_example_url_does(page: Page) -> None:
    example = urllib.parse.urlsplit(RESUME_URL)
    async with asyncio.timeout(GUARD), script_site() as site:
        await open_page(page, site)
        since = {"prices": [E, 41], "news": ["p0q8z1aa", 7]}
        await start(page, topics=["prices", "news"], since=since)
        connection = await site.next_connection()
        assert connection.request is not None
        assert connection.request.path.partition("?")[0] == example.path
        assert query(connection) == urllib.parse.parse_qs(example.query)


async def test_the_gap_notice_example_is_reported_once(page: Page) -> None:
    async with connected(page, since={"prices": [E, 39]}) as (_, connection):
        await connection.send(CONTROL_EXAMPLES["gap"])
        for offset in (48, 50):  # around the announced ranges: no hole
            await connection.send(data(offset, E, "prices", f"m{offset}"))
        await connection.send(data(52, E, "prices", "m52"))  # 51 was never announced
        await wait_events(page, "message", 3)
        assert await events(page, "gap") == [
            {
                "topic": "prices",
                "epoch": E,
                "ranges": [[40, 47], [49, 49]],
                "count": 9,
                "source": "notice",
                "reasons": {"dropped_oldest": 8, "conflated": 1},
                "keys": ["EURUSD"],
            },
            {"topic": "prices", "epoch": E, "ranges": [[51, 51]], "count": 1, "source": "offsets"},
        ]
        counted = await stats(page)
        assert (counted["gaps"], counted["lost"], counted["received"]) == (2, 10, 3)


async def test_the_heartbeat_example_reveals_a_loss_at_the_tail_that_a_resume_repairs(
    page: Page,
) -> None:
    async with connected(page, since={"prices": [E, 50], "": ["a81k2m0q", 3]}, **FAST) as (
        site,
        first,
    ):
        await first.send(CONTROL_EXAMPLES["heartbeat"])
        (beat,) = await wait_events(page, "heartbeat", 1)
        assert beat == json.loads(CONTROL_EXAMPLES["heartbeat"])
        assert await events(page, "gap") == [
            {
                "topic": "prices",
                "epoch": E,
                "ranges": [[51, 57]],
                "count": 7,
                "source": "heartbeat",
            }
        ]
        # Reconnecting asks from the last offset received, to get the tail back.
        await first.close(1013, "too slow")
        second = await site.next_connection()
        assert query(second)["since"] == [f"prices:{E}:50", ":a81k2m0q:3"]
        for offset in range(51, 58):
            await second.send(data(offset, E, "prices", f"m{offset}"))
        received = await wait_events(page, "message", 7)
        assert places(received) == [("prices", offset) for offset in range(51, 58)]
        counted = await stats(page)
        assert (counted["gaps"], counted["lost"], counted["recovered"]) == (1, 7, 7)
        assert counted["duplicates"] == 0
        assert await page.evaluate("client.offsets()") == {
            "prices": [E, 57],
            "": ["a81k2m0q", 3],
        }


async def test_the_resume_example_precedes_a_replay_delivered_exactly_once(page: Page) -> None:
    async with connected(page, since={"prices": [E, 41]}) as (_, connection):
        await connection.send(CONTROL_EXAMPLES["resume"])
        for offset in range(42, 58):
            await connection.send(data(offset, E, "prices", f"m{offset}"))
        await connection.send(data(57, E, "prices", "m57 again"))  # a server's mistake
        await connection.send(data(58, E, "prices", "m58"))
        received = await wait_events(page, "message", 17)
        assert places(received) == [("prices", offset) for offset in range(42, 59)]
        assert await events(page, "resume") == [json.loads(CONTROL_EXAMPLES["resume"])]
        assert await events(page, "gap") == []
        counted = await stats(page)
        assert (counted["received"], counted["duplicates"], counted["gaps"]) == (17, 1, 0)


async def test_the_level_example_and_unknown_control_frames_are_control_events(
    page: Page,
) -> None:
    async with connected(page) as (_, connection):
        await connection.send(CONTROL_EXAMPLES["level"])
        await connection.send(control(type="from-the-future", x=1))
        assert await wait_events(page, "control", 2) == [
            json.loads(CONTROL_EXAMPLES["level"]),
            {"type": "from-the-future", "x": 1},
        ]
        assert (await stats(page))["errors"] == 0


# -- gaps: holes, notices, heartbeats -------------------------------------------------


async def test_holes_in_offsets_are_reported_with_their_exact_ranges(page: Page) -> None:
    async with connected(page) as (_, connection):
        for offset in (1, 2, 5, 6, 9):
            await connection.send(data(offset, "E", "a", f"m{offset}"))
        await connection.send(data(3, "F", "b", "another stream: no hole"))
        await wait_events(page, "message", 6)
        assert await events(page, "gap") == [
            {"topic": "a", "epoch": "E", "ranges": [[3, 4]], "count": 2, "source": "offsets"},
            {"topic": "a", "epoch": "E", "ranges": [[7, 8]], "count": 2, "source": "offsets"},
        ]
        assert (await stats(page))["lost"] == 4


async def test_a_hole_partly_announced_reports_only_the_rest(page: Page) -> None:
    async with connected(page) as (_, connection):
        await connection.send(data(1, "E", "a", "m1"))
        await connection.send(control(type="gap", t="a", e="E", ranges=[[3, 4]], count=2))
        await connection.send(data(8, "E", "a", "m8"))
        await wait_events(page, "message", 2)
        gaps = await events(page, "gap")
        assert [(gap["source"], gap["ranges"]) for gap in gaps] == [
            ("notice", [[3, 4]]),
            ("offsets", [[2, 2], [5, 7]]),
        ]
        assert (await stats(page))["lost"] == 6


async def test_a_notice_ahead_of_queued_messages_is_not_counted_twice(page: Page) -> None:
    # DropNewest: 21 to 30 are dropped while 11 to 20 are still queued, and the notice
    # goes before the next frame the subscriber gets, 11.
    async with connected(page) as (_, connection):
        await connection.send(data(10, "E", "a", "m10"))
        notice = control(
            type="gap", t="a", e="E", ranges=[[21, 30]], count=10, reasons={"dropped_newest": 10}
        )
        await connection.send(notice)
        for offset in [*range(11, 21), 31]:
            await connection.send(data(offset, "E", "a", f"m{offset}"))
        received = await wait_events(page, "message", 12)
        assert places(received) == [("a", offset) for offset in [*range(10, 21), 31]]
        (gap,) = await events(page, "gap")
        assert (gap["source"], gap["ranges"], gap["count"]) == ("notice", [[21, 30]], 10)
        counted = await stats(page)
        assert (counted["gaps"], counted["lost"], counted["recovered"]) == (1, 10, 0)


async def test_a_late_notice_reports_only_offsets_not_accounted_for_yet(page: Page) -> None:
    async with connected(page) as (_, connection):
        for offset in (1, 2, 5):
            await connection.send(data(offset, "E", "a", f"m{offset}"))
        # 3 and 4 were reported as a hole, 5 was received: only 6 and 7 are news.
        await connection.send(control(type="gap", t="a", e="E", ranges=[[3, 7]], count=5))
        await connection.send(data(8, "E", "a", "m8"))
        await wait_events(page, "message", 4)
        gaps = await events(page, "gap")
        assert [(gap["source"], gap["ranges"]) for gap in gaps] == [
            ("offsets", [[3, 4]]),
            ("notice", [[6, 7]]),
        ]
        assert (await stats(page))["lost"] == 4


async def test_a_notice_repeated_after_a_reconnect_is_not_counted_twice(page: Page) -> None:
    async with connected(page, **FAST) as (site, first):
        await first.send(data(1, "E", "a", "m1"))
        await first.send(control(type="gap", t="a", e="E", ranges=[[5, 6]], count=2))
        await wait_events(page, "gap", 1)
        await first.close(1013, "too slow")
        second = await site.next_connection()
        assert query(second)["since"] == ["a:E:1"]
        # History no longer holds 5 and 6: the server announces them again.
        await second.send(control(type="resume", t="a", e="E", since=1, replay=[2, 7]))
        notice = control(type="gap", t="a", e="E", ranges=[[5, 6]], count=2)
        await second.send(notice)
        for offset in (2, 3, 4, 7):
            await second.send(data(offset, "E", "a", f"m{offset}"))
        await wait_events(page, "message", 5)
        assert len(await events(page, "gap")) == 1
        counted = await stats(page)
        assert (counted["gaps"], counted["lost"], counted["received"]) == (1, 2, 5)


async def test_messages_announced_lost_then_replayed_count_as_recovered(page: Page) -> None:
    async with connected(page, **FAST) as (site, first):
        await first.send(data(1, "E", "a", "m1"))
        await first.send(control(type="gap", t="a", e="E", ranges=[[3, 4]], count=2))
        await wait_events(page, "gap", 1)
        await first.close(1013, "too slow")
        second = await site.next_connection()
        for offset in (2, 3, 4, 5):  # the history still had them
            await second.send(data(offset, "E", "a", f"m{offset}"))
        await wait_events(page, "message", 5)
        counted = await stats(page)
        assert (counted["lost"], counted["recovered"], counted["duplicates"]) == (2, 2, 0)


async def test_a_heartbeat_that_agrees_or_follows_a_notice_reports_nothing(page: Page) -> None:
    async with connected(page) as (_, connection):
        await connection.send(data(1, "E", "a", "m1"))
        await connection.send(control(type="heartbeat", offsets={"a": ["E", 1]}))
        await connection.send(control(type="gap", t="a", e="E", ranges=[[2, 3]], count=2))
        await connection.send(control(type="heartbeat", offsets={"a": ["E", 3]}))
        await connection.send(data(4, "E", "a", "m4"))
        await wait_events(page, "message", 2)
        assert len(await events(page, "heartbeat")) == 2
        assert [gap["source"] for gap in await events(page, "gap")] == ["notice"]


async def test_a_heartbeat_for_a_stream_not_seen_yet_is_where_the_client_starts(
    page: Page,
) -> None:
    async with connected(page) as (_, connection):
        await connection.send(control(type="heartbeat", offsets={"a": ["E", 7]}))
        await connection.send(data(8, "E", "a", "m8"))
        await connection.send(data(10, "E", "a", "m10"))
        await wait_events(page, "message", 2)
        gaps = await events(page, "gap")
        assert [(gap["source"], gap["ranges"]) for gap in gaps] == [("offsets", [[9, 9]])]
        assert await page.evaluate("client.offsets()") == {"a": ["E", 10]}


async def test_a_notice_for_a_stream_not_seen_yet_is_reported_but_gives_no_position(
    page: Page,
) -> None:
    async with connected(page) as (_, connection):
        notice = control(type="gap", t="a", e="E", ranges=[[21, 30]], count=10)
        await connection.send(notice)
        (gap,) = await wait_events(page, "gap", 1)
        assert (gap["source"], gap["ranges"]) == ("notice", [[21, 30]])
        assert await page.evaluate("client.offsets()") == {}
        for offset in [*range(11, 21), 31]:
            await connection.send(data(offset, "E", "a", f"m{offset}"))
        await wait_events(page, "message", 11)
        assert len(await events(page, "gap")) == 1
        assert await page.evaluate("client.offsets()") == {"a": ["E", 31]}


async def test_a_heartbeat_in_a_new_epoch_reports_the_change_and_what_it_lost(
    page: Page,
) -> None:
    async with connected(page, since={"a": ["old", 5]}) as (_, connection):
        await connection.send(control(type="heartbeat", offsets={"a": ["new", 3]}))
        gaps = await wait_events(page, "gap", 2)
        assert gaps == [
            {
                "topic": "a",
                "epoch": "new",
                "ranges": None,
                "count": None,
                "source": "epoch",
                "previous": {"epoch": "old", "offset": 5},
            },
            {"topic": "a", "epoch": "new", "ranges": [[1, 3]], "count": 3, "source": "heartbeat"},
        ]


# -- resuming -------------------------------------------------------------------------


async def test_an_incomplete_resume_reports_what_history_no_longer_holds(page: Page) -> None:
    async with connected(page, since={"a": ["E", 10]}) as (_, connection):
        resume = {"type": "resume", "t": "a", "e": "E", "since": 10, "replay": [15, 20]}
        await connection.send(json.dumps(resume | {"complete": False}))
        notice = control(
            type="gap", t="a", e="E", ranges=[[11, 14]], count=4, reasons={"history": 4}
        )
        await connection.send(notice)
        for offset in range(15, 21):
            await connection.send(data(offset, "E", "a", f"m{offset}"))
        await wait_events(page, "message", 6)
        (gap,) = await events(page, "gap")
        assert gap == {
            "topic": "a",
            "epoch": "E",
            "ranges": [[11, 14]],
            "count": 4,
            "source": "notice",
            "reasons": {"history": 4},
        }
        assert (await events(page, "resume"))[0]["complete"] is False


async def test_a_resume_into_a_new_epoch_reports_the_change_then_replays_it(
    page: Page,
) -> None:
    async with connected(page, since={"a": ["old", 10]}) as (_, connection):
        resume = control(
            type="resume", t="a", e="new", since=10, replay=[1, 3], complete=False, previous="old"
        )
        await connection.send(resume)
        for offset in (1, 2, 3):
            await connection.send(data(offset, "new", "a", f"m{offset}"))
        received = await wait_events(page, "message", 3)
        assert [m["epoch"] for m in received] == ["new"] * 3
        (gap,) = await events(page, "gap")
        assert gap["source"] == "epoch"
        assert gap["previous"] == {"epoch": "old", "offset": 10}
        assert await page.evaluate("client.offsets()") == {"a": ["new", 3]}


async def test_a_reloaded_page_resumes_from_the_offsets_it_saved(page: Page) -> None:
    async with connected(page) as (site, first):
        await first.send(data(7, "E", "a", "m7"))
        await first.send(data(3, "F", None, "m3"))
        await wait_events(page, "message", 2)
        await page.evaluate("sessionStorage.feed = JSON.stringify(client.offsets())")
        await open_page(page, site)  # the same tab, reloaded: a new client
        await page.evaluate("start({since: JSON.parse(sessionStorage.feed)})")
        second = await site.next_connection()
        since = query(second)["since"]
        assert since[-2:] == ["a:E:7", ":F:3"]


# -- what is not a message ------------------------------------------------------------


async def test_a_message_sent_to_one_subscriber_alone_has_no_place(page: Page) -> None:
    async with connected(page) as (_, connection):
        await connection.send("{}\nhello")
        await connection.send(b'{"o":1,"e":"E","new":"ignored"}\n\x01')
        assert await wait_events(page, "message", 2) == [
            {"data": "hello"},
            {"data": {"bytes": [1]}, "topic": "", "offset": 1, "epoch": "E"},
        ]


BROKEN: list[tuple[str | bytes, str]] = [
    ("not json\npayload", "not a header"),
    ("[1, 2]\npayload", "not a header"),
    ('{"o":-1,"e":"E"}\npayload', "malformed header"),
    ('{"o":1.5,"e":"E"}\npayload', "malformed header"),
    ('{"o":1}\npayload', "malformed header"),
    ('{"o":1,"e":"E","t":7}\npayload', "malformed header"),
    ('{"b":[[1,"E"]]}\npayload', "malformed batch header"),
    (b"\xff\xfe\npayload", "not a header"),
    ("plain text", "not a control frame"),
    ('{"no":"type"}', "control frame without a type"),
    ('{"type":"gap","e":"E","ranges":"all"}', "malformed gap notice"),
    ('{"type":"gap","e":"E","ranges":[[5,2]]}', "malformed gap notice"),
    ('{"type":"gap","ranges":[[1,2]]}', "malformed gap notice"),
    ('{"type":"heartbeat","offsets":{"a":[3,"E"]}}', "malformed heartbeat"),
    ('{"type":"heartbeat","offsets":null}', "malformed heartbeat"),
    ('{"type":"resume","t":"a"}', "malformed resume"),
]
"""Frames no wsfanout server sends, and the reason each must be refused with."""


async def test_broken_frames_raise_error_events_and_the_connection_goes_on(page: Page) -> None:
    async with connected(page) as (_, connection):
        for offset, (frame, _) in enumerate(BROKEN, start=1):
            await connection.send(frame)
            await connection.send(data(offset, "E", "a", f"good {offset}"))
        errors = await wait_events(page, "error", len(BROKEN))
        assert [error["reason"] for error in errors] == [reason for _, reason in BROKEN]
        assert errors[0]["data"] == "not json\npayload"
        received = await wait_events(page, "message", len(BROKEN))
        assert [m["data"] for m in received] == [f"good {n}" for n in range(1, len(BROKEN) + 1)]
        counted = await stats(page)
        assert (counted["errors"], counted["gaps"], counted["received"]) == (len(BROKEN), 0, 16)
        assert await page.evaluate("client.connected") is True


# -- the connection: dead-connection deadline, backoff, closing ------------------------


async def test_a_connection_silent_past_the_timeout_is_presumed_dead(page: Page) -> None:
    async with connected(page, timeout=300, **FAST) as (site, first):
        await first.send(data(1, "E", "a", "m1"))  # then nothing: no heartbeat comes
        second = await site.next_connection()
        assert query(second)["since"] == ["a:E:1"]
        await first.wait_closed()
        assert first.close_code == 4000
        (close,) = await events(page, "close")
        assert close | {"delay": None} == {
            "code": 4000,
            "reason": "heartbeat timeout",
            "dead": True,
            "delay": None,
        }
        opened, message = (await page.evaluate("[of('open')[0].at, of('message')[0].at]"))[:2]
        closed = await page.evaluate("of('close')[0].at")
        assert closed - max(opened, message) >= 300 - 20  # timers may fire a little early


async def test_heartbeats_keep_a_quiet_connection_alive(page: Page) -> None:
    async with connected(page, timeout=400, **FAST) as (_, connection):
        await wait_events(page, "open", 1)
        for _ in range(12):  # 1.2 s of heartbeats, three timeouts' worth
            await connection.send(control(type="heartbeat", offsets={}))
            await asyncio.sleep(0.1)  # the heartbeat interval under test, not a wait
        assert await events(page, "close") == []
        (close,) = await wait_events(page, "close", 1)  # once they stop
        assert close["dead"] is True
        last_beat = await page.evaluate("of('heartbeat').at(-1).at")
        assert await page.evaluate("of('close')[0].at") - last_beat >= 400 - 20


async def test_backoff_is_full_jitter_between_the_minimum_and_a_doubling_ceiling(
    page: Page,
) -> None:
    async with asyncio.timeout(GUARD), script_site() as site:
        await open_page(page, site)
        samples = await page.evaluate(
            """[0, 1, 2, 3, 4, 5, 6, 30, 2000].map((attempt) => {
                 const delays = Array.from({length: 4000}, () => wsfanout.backoff(attempt));
                 return [Math.min(...delays), Math.max(...delays)];
               })"""
        )
        ceilings = [1000, 2000, 4000, 8000, 16000, 20000, 20000, 20000, 20000]
        for (low, high), ceiling in zip(samples, ceilings, strict=True):
            assert 500 <= low < 500 + 0.01 * (ceiling - 500)
            assert ceiling - 0.01 * (ceiling - 500) < high <= ceiling
        edges = await page.evaluate(
            "[wsfanout.backoff(3, 100, 1000, () => 0), wsfanout.backoff(3, 100, 1000, () => 1)]"
        )
        assert edges == [100, 1000]


async def test_refused_reconnections_back_off_until_a_connection_proves_itself(
    page: Page,
) -> None:
    async with asyncio.timeout(GUARD), script_site() as site:
        await open_page(page, site)
        # The highest draw every time: each delay is its attempt's ceiling.
        await page.evaluate("Math.random = () => 1")
        await start(page, minDelay=40, maxDelay=400)
        first = await site.next_connection()
        site.refusing = True
        await first.close(1013, "too slow")
        closes = await wait_events(page, "close", 6)
        assert [close["delay"] for close in closes[:6]] == [80, 160, 320, 400, 400, 400]
        assert [close["code"] for close in closes[:6]] == [1013] + [1006] * 5
        # Each attempt waited out the delay drawn before it.
        times = await page.evaluate("of('close').slice(0, 6).map((close) => close.at)")
        for attempt in range(5):
            assert times[attempt + 1] - times[attempt] >= closes[attempt]["delay"] - 5
        site.refusing = False
        second = await site.next_connection()
        await second.send(data(1, "E", "a", "m1"))
        await wait_events(page, "message", 1)
        count = len(await events(page, "close"))
        await second.close(1013, "too slow")
        after = (await wait_events(page, "close", count + 1))[count]
        assert (after["code"], after["delay"]) == (1013, 80)  # back to the first ceiling
        assert await page.evaluate("client.stats.reconnects") == count


async def test_close_ends_the_client_for_good(page: Page) -> None:
    async with connected(page, **FAST) as (_, connection):
        await wait_events(page, "open", 1)
        await page.evaluate("client.close()")
        await connection.wait_closed()
        assert connection.close_code == 1000
        assert await events(page, "close") == [
            {"code": 1000, "reason": "", "dead": False, "delay": None}
        ]
        assert await page.evaluate("[client.connected, client.stats.reconnects]") == [False, 0]


async def test_a_policy_violation_close_is_final(page: Page) -> None:
    async with connected(page, **FAST) as (_, connection):
        await connection.close(1008, "wrong token")
        (close,) = await wait_events(page, "close", 1)
        assert close == {"code": 1008, "reason": "wrong token", "dead": False, "delay": None}


# -- the API --------------------------------------------------------------------------


async def test_a_listener_that_throws_does_not_stop_the_others_nor_the_client(
    page: Page,
) -> None:
    async with asyncio.timeout(GUARD), script_site() as site:
        await open_page(page, site)
        await start(page)
        await page.evaluate(
            "client.on('message', (m) => { if (m.offset === 1) throw new Error('buggy') });"
            "window.after = []; client.on('message', (m) => after.push(m.offset))"
        )
        connection = await site.next_connection()
        for offset in (1, 2):
            await connection.send(data(offset, "E", "a", f"m{offset}"))
        await page.wait_for("after.length === 2")
        assert await page.evaluate("after") == [1, 2]
        assert (await stats(page))["received"] == 2
        await page.settle()
        (error,) = page.take_errors()
        assert "buggy" in error.message


async def test_a_listener_stops_when_its_off_function_is_called(page: Page) -> None:
    async with asyncio.timeout(GUARD), script_site() as site:
        await open_page(page, site)
        await start(page)
        await page.evaluate(
            "window.seen = []; window.off = client.on('message', (m) => seen.push(m.offset))"
        )
        connection = await site.next_connection()
        await connection.send(data(1, "E", "a", "m1"))
        await page.wait_for("seen.length === 1")
        await page.evaluate("off()")
        await connection.send(data(2, "E", "a", "m2"))
        await wait_events(page, "message", 2)
        assert await page.evaluate("seen") == [1]


WRONG_OPTIONS = {
    "{minDelay: -1}": "minDelay=-1 must be > 0",
    "{minDelay: 100, maxDelay: 10}": "maxDelay=10 must be >= minDelay",
    "{timeout: -5}": "timeout=-5 must be >= 0 (0: never)",
    "{topics: 'prices'}": 'topics="prices" must be an array of strings',
    "{since: {a: [1, 'E']}}": 'since["a"]=[1,"E"] must be [epoch, offset]',
}


async def test_wrong_options_are_refused_with_their_name_and_value(page: Page) -> None:
    async with asyncio.timeout(GUARD), script_site() as site:
        await open_page(page, site)
        for options, expected in WRONG_OPTIONS.items():
            thrown = await page.evaluate(
                f"(() => {{ try {{ wsfanout.connect('/feed', {options}) }}"
                " catch (error) { return `${error.name}: ${error.message}` } })()"
            )
            assert thrown == f"TypeError: {expected}"
        assert site.connections.empty()  # none of them connected
