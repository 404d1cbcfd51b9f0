"""wsfanout.js in Chromium against a real Hub: v1 data frames, offsets, topics, batches,
and reconnecting after the server closes the connection, refuses it, or restarts."""

from __future__ import annotations

import asyncio
import re

from wsfanout import SUBPROTOCOL, History, Hub
from wsfanout.policies import Batch

from .chromium import GUARD, Page
from .jsclient import events, hub_site, open_page, query, start, stats, wait_events

EPOCH = re.compile(r"^[a-z0-9]{8}$")

FAST = {"minDelay": 20, "maxDelay": 80}
"""Reconnection delays short enough for tests (the defaults are 500 ms to 20 s)."""


async def test_messages_arrive_with_their_topic_offset_epoch_and_key(page: Page) -> None:
    hub = Hub()
    async with asyncio.timeout(GUARD), hub_site(hub) as site:
        await open_page(page, site)
        await start(page, topics=["prices"])
        connection = await site.next_connection()
        assert connection.subprotocol == SUBPROTOCOL
        assert query(connection) == {"topic": ["prices"]}
        await wait_events(page, "open", 1)
        hub.publish("p1", topic="prices")
        hub.publish("n1", topic="news")  # another topic: not for this client
        hub.publish("line one\nline two", topic="prices", key="EURUSD")
        hub.publish("everyone")  # no topic: every subscriber, stream ""
        hub.publish("p3", topic="prices")
        received = await wait_events(page, "message", 4)
        epochs = {message.pop("epoch") for message in received}
        assert len(epochs) == 2, "one epoch per stream"
        assert all(EPOCH.match(epoch) for epoch in epochs)
        assert received == [
            {"data": "p1", "topic": "prices", "offset": 1},
            {"data": "line one\nline two", "topic": "prices", "offset": 2, "key": "EURUSD"},
            {"data": "everyone", "topic": "", "offset": 1},
            {"data": "p3", "topic": "prices", "offset": 3},
        ]
        assert await events(page, "gap") == []
        assert await events(page, "error") == []
        assert await stats(page) == {
            "received": 4,
            "gaps": 0,
            "lost": 0,
            "recovered": 0,
            "duplicates": 0,
            "errors": 0,
            "reconnects": 0,
            "acks": 0,  # the hub did not ask
        }


async def test_a_binary_message_arrives_as_bytes_without_its_header(page: Page) -> None:
    hub = Hub()
    async with asyncio.timeout(GUARD), hub_site(hub) as site:
        await open_page(page, site)
        await start(page)
        await wait_events(page, "open", 1)
        hub.publish(b"\x00\n\xff\xfe", topic="raw")  # a line feed in the payload too
        (message,) = await wait_events(page, "message", 1)
        assert message["data"] == {"bytes": [0, 10, 255, 254]}
        assert (message["topic"], message["offset"]) == ("raw", 1)


async def test_a_batch_frame_lists_the_place_of_each_message_it_carries(page: Page) -> None:
    hub = Hub(policy=Batch(max_messages=3, max_delay=5.0))
    async with asyncio.timeout(GUARD), hub_site(hub) as site:
        await open_page(page, site)
        await start(page)
        await wait_events(page, "open", 1)
        hub.publish("a1", topic="a")
        hub.publish("b1", topic="b")
        hub.publish("a2", topic="a")  # the batch is full: it leaves at once
        (message,) = await wait_events(page, "message", 1)
        epochs = [part.pop("epoch") for part in message["batch"]]
        assert epochs[0] == epochs[2] != epochs[1]
        assert message == {
            "data": "a1\nb1\na2",
            "batch": [
                {"offset": 1, "topic": "a"},
                {"offset": 1, "topic": "b"},
                {"offset": 2, "topic": "a"},
            ],
        }
        assert (await stats(page))["received"] == 3


async def test_a_client_the_server_closes_reconnects_resumes_and_reports_what_it_missed(
    page: Page,
) -> None:
    hub = Hub()
    async with asyncio.timeout(GUARD), hub_site(hub) as site:
        await open_page(page, site)
        await start(page, topics=["a"], **FAST)
        first = await site.next_connection()
        await wait_events(page, "open", 1)
        hub.publish("a1", topic="a")
        hub.publish("a2", topic="a")
        (_, last) = await wait_events(page, "message", 2)
        site.refusing = True  # the server is down: handshakes fail with 503
        await first.close(1013, "too slow")
        closes = await wait_events(page, "close", 2)  # 1013, then a refused attempt
        assert closes[0] | {"delay": None} == {
            "code": 1013,
            "reason": "too slow",
            "dead": False,
            "delay": None,
        }
        assert closes[1]["code"] == 1006  # what a browser reports for a refused handshake
        for published in ("a3", "a4", "a5"):
            hub.publish(published, topic="a")  # nobody subscribed: missed by the client
        site.refusing = False
        second = await site.next_connection()
        assert query(second) == {"topic": ["a"], "since": [f"a:{last['epoch']}:2"]}
        await wait_events(page, "open", 2)
        hub.publish("a6", topic="a")
        received = await wait_events(page, "message", 3)
        assert [(m["data"], m["offset"]) for m in received] == [("a1", 1), ("a2", 2), ("a6", 6)]
        assert await events(page, "gap") == [
            {
                "topic": "a",
                "epoch": last["epoch"],
                "ranges": [[3, 5]],
                "count": 3,
                "source": "notice",  # the hub keeps no history: it says what is missing
                "reasons": {"history": 3},
            }
        ]
        counted = await stats(page)
        assert (counted["received"], counted["gaps"], counted["lost"]) == (3, 1, 3)
        assert counted["reconnects"] == len(await events(page, "close"))


async def test_with_history_a_client_cut_off_gets_what_it_missed_and_is_told_only_the_rest(
    page: Page,
) -> None:
    # docs/how-to/resume-in-a-browser.md end to end, with history on the server: a cut
    # while messages are published, a resume that replays them once, in order, before
    # anything live; then a longer cut, past what history holds, told exactly.
    hub = Hub(history=History(max_messages=4))
    async with asyncio.timeout(GUARD), hub_site(hub) as site:
        await open_page(page, site)
        await start(page, topics=["a"], **FAST)
        first = await site.next_connection()
        await wait_events(page, "open", 1)
        hub.publish("a1", topic="a")
        await wait_events(page, "message", 1)
        site.refusing = True
        await first.close(1011, "cut")
        await wait_events(page, "close", 2)  # the cut, then a refused attempt
        for n in (2, 3, 4):
            hub.publish(f"a{n}", topic="a")
        site.refusing = False
        second = await site.next_connection()
        hub.publish("a5", topic="a")  # live, after the replay
        received = await wait_events(page, "message", 5)
        assert [(m["data"], m["offset"]) for m in received] == [(f"a{n}", n) for n in range(1, 6)]
        assert await events(page, "gap") == []
        epoch = received[-1]["epoch"]
        site.refusing = True
        closes = len(await events(page, "close"))
        await second.close(1011, "cut")
        await wait_events(page, "close", closes + 2)
        for n in range(6, 13):
            hub.publish(f"a{n}", topic="a")  # history keeps 9 to 12
        site.refusing = False
        third = await site.next_connection()
        assert query(third) == {"topic": ["a"], "since": [f"a:{epoch}:5"]}
        received = await wait_events(page, "message", 9)
        assert [m["offset"] for m in received[5:]] == [9, 10, 11, 12]
        assert await events(page, "gap") == [
            {
                "topic": "a",
                "epoch": epoch,
                "ranges": [[6, 8]],
                "count": 3,
                "source": "notice",
                "reasons": {"history": 3},
            }
        ]
        counted = await stats(page)
        assert (counted["received"], counted["gaps"], counted["lost"]) == (9, 1, 3)
        assert hub.stats().history_missed == counted["lost"]
        assert (hub.stats().resumed, hub.stats().replayed) == (2, 7)


async def test_after_a_server_restart_the_client_reports_the_new_epoch(page: Page) -> None:
    async with asyncio.timeout(GUARD):
        first_hub = Hub()
        async with hub_site(first_hub) as site:
            port = site.port
            await open_page(page, site)
            await start(page, **FAST)
            await wait_events(page, "open", 1)
            first_hub.publish("old 1", topic="a")
            first_hub.publish("old 2", topic="a")
            (_, old) = await wait_events(page, "message", 2)
        # The hub closed its subscribers with 1001 and the port is free: attempts fail.
        closes = await wait_events(page, "close", 2)
        assert [close["code"] for close in closes[:2]] == [1001, 1006]
        second_hub = Hub()
        async with hub_site(second_hub, port) as site:
            await site.next_connection()
            await wait_events(page, "open", 2)
            second_hub.publish("new 1", topic="a")
            second_hub.publish("new 2", topic="a")
            received = await wait_events(page, "message", 4)
        new = received[2]["epoch"]
        assert new != old["epoch"]
        assert [(m["data"], m["offset"], m["epoch"]) for m in received[2:]] == [
            ("new 1", 1, new),
            ("new 2", 2, new),
        ]
        assert await events(page, "gap") == [
            {
                "topic": "a",
                "epoch": new,
                "ranges": None,
                "count": None,
                "source": "epoch",
                "previous": {"epoch": old["epoch"], "offset": 2},
            }
        ]
        counted = await stats(page)
        assert (counted["gaps"], counted["lost"]) == (1, 0)
