"""``wsfanout serve`` topics: ``?topic=``, ``--topic-field``, routes that give topics,
Redis input channels as topics, and all of it with worker processes."""

from __future__ import annotations

import contextlib
import json
import signal
from pathlib import Path

import pytest
from cli_process import GUARD, Process, client, one_client_per_worker
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection

import redis
from harness.redis_server import RedisServer

END = "end of the test"
"""A line without a topic, which every client receives last: what came before it is
all a client got."""


def until_end(ws: ClientConnection) -> list[str | bytes]:
    got = []
    while (message := ws.recv(timeout=GUARD)) != END:
        got.append(message)
    return got


def line(topic: object, n: int) -> str:
    return json.dumps({"room": topic, "n": n})


def test_each_client_receives_only_the_topics_it_names(wsfanout: type[Process]) -> None:
    server = wsfanout(["serve", "--port", "0", "--topic-field", "room"])
    url = server.listening()
    with (
        client(url, "/?topic=a") as only_a,
        client(url, "/?topic=a&topic=b&topic=a") as a_and_b,
        client(url, "/?topic=7") as seven,
        client(url, "/") as everything,
    ):
        server.wait_for(r"client connected: .* /\?topic=a policy default topics a$")
        server.wait_for(
            r"client connected: .* /\?topic=a&topic=b&topic=a policy default topics a, b$"
        )
        server.wait_for(r"client connected: .* /\?topic=7 policy default topics 7$")
        server.wait_for(r"client connected: .* / policy default$")
        lines = [line("a", 0), line("b", 1), line("c", 2), line(7, 3), '{"n": 4}', "plain", END]
        server.feed("".join(f"{text}\n" for text in lines))
        # A message without a topic (no field, not JSON) is for everyone.
        assert until_end(only_a) == [lines[0], lines[4], lines[5]]
        assert until_end(a_and_b) == [lines[0], lines[1], lines[4], lines[5]]
        assert until_end(seven) == [lines[3], lines[4], lines[5]]
        assert until_end(everything) == lines[:-1]
        for path, why in [("/?topic=", "400 empty topic (expected ?topic=NAME)")]:
            with pytest.raises(InvalidStatus) as refused:
                client(url, path).close()
            assert refused.value.response.status_code == 400
            assert server.wait_for(r"refused 127\.0\.0\.1:\d+ /\S*: (.*)$")[1] == why
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0


def test_a_route_sets_the_topics_of_its_clients_and_refuses_others(
    wsfanout: type[Process], tmp_path: Path
) -> None:
    (tmp_path / "routes.toml").write_text(
        'default = "dashboard"\n'
        '[[route]]\npath = "/public/*"\npolicy = "chat"\ntopics = ["news", "sports"]\n'
    )
    server = wsfanout(
        ["serve", "--routes", str(tmp_path / "routes.toml"), "--port", "0", "--topic-field", "room"]
    )
    url = server.listening()
    with (
        client(url, "/public/x") as public,
        client(url, "/public/y?topic=news") as news,
        client(url, "/inside?topic=secret") as inside,
    ):
        server.wait_for(r"client connected: .* /public/x policy chat topics news, sports$")
        server.wait_for(r"client connected: .* /public/y\?topic=news policy chat topics news$")
        server.wait_for(
            r"client connected: .* /inside\?topic=secret policy dashboard topics secret$"
        )
        with pytest.raises(InvalidStatus) as refused:
            client(url, "/public/z?topic=news&topic=secret").close()
        assert refused.value.response.status_code == 403
        assert server.wait_for(r"refused 127\.0\.0\.1:\d+ /public/z\S*: (.*)$")[1] == (
            '403 topic "secret" not allowed here (expected one of "news", "sports")'
        )
        lines = [line("news", 0), line("sports", 1), line("secret", 2), END]
        server.feed("".join(f"{text}\n" for text in lines))
        assert until_end(public) == lines[:2]
        assert until_end(news) == lines[:1]
        assert until_end(inside) == lines[2:3]
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0


def test_topics_hold_across_workers_and_input_channels_are_topics(
    wsfanout: type[Process], redis_server: RedisServer
) -> None:
    scaling = ["--redis", redis_server.url, "--workers", "2"]
    channels = ["--input-channel", "alerts", "--input-channel", "prices.*"]
    server = wsfanout(["serve", "--port", "0", "--topic-field", "room", *scaling, *channels])
    url = server.listening()
    with contextlib.ExitStack() as stack, redis.Redis.from_url(redis_server.url) as other:
        alerts = one_client_per_worker(server, url, 2, stack, "?topic=alerts")
        eurusd = one_client_per_worker(server, url, 2, stack, "?topic=prices.EURUSD")
        rooms = one_client_per_worker(server, url, 2, stack, "?topic=a")
        assert other.publish("alerts", "disk almost full") == 1
        for ws in alerts:
            assert ws.recv(timeout=GUARD) == "disk almost full"
        assert other.publish("prices.EURUSD", "1.0871") == 1
        assert other.publish("prices.GBPUSD", "1.2650") == 1
        for ws in eurusd:
            assert ws.recv(timeout=GUARD) == "1.0871"
        server.feed(f"{line('a', 0)}\n{line('b', 1)}\n{END}\n")
        for ws in rooms:
            assert until_end(ws) == [line("a", 0)]
        for ws in alerts + eurusd:  # nothing of the others' topics came before the end
            assert until_end(ws) == []
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0
