"""``wsfanout serve --redis``, ``--workers`` and ``--input-channel`` end to end.

Each test starts its own redis-server on a free port of 127.0.0.1 and ``wsfanout`` as
a subprocess, connects real clients, and waits on printed lines and received
messages, never on sleeps.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import time
from pathlib import Path

import pytest
from cli_process import GUARD, Process, client, close_code, stalled_client
from websockets.exceptions import InvalidStatus
from websockets.sync.client import ClientConnection
from websockets.typing import Subprotocol

import redis
from harness.ports import free_port
from harness.redis_server import RedisServer
from wsfanout._cli.admission import redacted_url
from wsfanout._cli.main import main

ROOMY = '[[stage]]\nkind = "drop-newest"\nmax_messages = 100000\nmax_bytes = "256MiB"\n'
"""A policy that never drops nor disconnects in these tests: what is lost is the server's."""

LINES = 20_000
"""More lines than the publish buffer toward Redis holds (10,000), arriving at once."""


def publish(url: str, channel: str, message: str) -> int:
    """``PUBLISH channel message`` as any Redis client would; how many subscribers got it."""
    with redis.Redis.from_url(url) as connection:
        receivers: int = connection.publish(channel, message)
    return receivers


def clients_on_every_worker(
    server: Process, url: str, workers: int, stack: contextlib.ExitStack
) -> dict[ClientConnection, int]:
    """Connect clients until each of ``workers`` worker processes has one (at most 64);
    each client with the process id of its worker.

    The kernel picks a worker per connection; this needs no luck, only a few tries.
    """
    clients: dict[ClientConnection, int] = {}
    for n in range(64):
        ws = stack.enter_context(client(url, f"/c{n}"))
        line = server.wait_for(rf"worker (\d+): client connected: 127\.0\.0\.1:\d+ /c{n} policy ")
        clients[ws] = int(line[1])
        if len(set(clients.values())) == workers:
            return clients
    raise AssertionError(f"64 clients, all on workers {set(clients.values())}")


def wait_until_exited(pid: int) -> None:
    """Wait for a process that is not our child to exit (a pidfd becomes readable)."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        readable, _, _ = select.select([fd], [], [], GUARD)
        assert readable, f"process {pid} still runs after {GUARD} s"
    finally:
        os.close(fd)


def test_two_workers_on_one_port_give_every_client_every_line_in_order(
    wsfanout: type[Process], redis_server: RedisServer, tmp_path: Path
) -> None:
    (tmp_path / "roomy.toml").write_text(ROOMY)
    policy = str(tmp_path / "roomy.toml")
    scaling = ["--redis", redis_server.url, "--workers", "2", "--input-channel", "news"]
    server = wsfanout(
        ["serve", "--policy", policy, "--port", "0", "--close-timeout", "500ms", *scaling]
    )
    listening = server.wait_for(r"^wsfanout: listening on (ws://127\.0\.0\.1:\d+) \((.*)\)$")
    url = listening[1]
    assert listening[2] == (
        f"policy {policy}, compression shared, 2 workers, redis {redis_server.url}, "
        "input channel news"
    )
    with contextlib.ExitStack() as stack:
        clients = clients_on_every_worker(server, url, 2, stack)
        stack.enter_context(stalled_client(url))
        server.wait_for(r"worker \d+: client connected: .* /stalled policy ")
        server.feed("".join(f"{n}\n" for n in range(LINES)))
        for ws in clients:
            assert [ws.recv(timeout=GUARD) for _ in range(LINES)] == [str(n) for n in range(LINES)]

        # The server subscribed once (in the process that reads standard input), and
        # what it receives there reaches the clients of every worker.
        # The channel and standard input are two inputs with no order between them:
        # the line is fed once the channel's message has come through.
        assert publish(redis_server.url, "news", "caf\xe9") == 1
        for ws in clients:
            assert ws.recv(timeout=GUARD) == "caf\xe9"
        server.feed("after\n")
        for ws in clients:
            assert ws.recv(timeout=GUARD) == "after"

        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert [close_code(ws) for ws in clients] == [1001] * len(clients)
        assert server.exit_code() == 0
        assert time.monotonic() - started < 5.0, "the stalled client held the exit up"
    rest = server.rest()
    assert rest[-1] == "wsfanout: stopped by SIGTERM"
    assert not [line for line in rest if "Traceback" in line or "listening on" in line]
    disconnected = [line for line in rest if "client disconnected" in line]
    assert {int(re.findall(r"worker (\d+):", line)[0]) for line in disconnected} == set(
        clients.values()
    )


def test_servers_sharing_a_redis_deliver_each_others_input_once(
    wsfanout: type[Process], redis_server: RedisServer
) -> None:
    a = wsfanout(["serve", "--policy", "chat", "--port", "0", "--redis", redis_server.url])
    b = wsfanout(["serve", "--policy", "chat", "--port", "0", "--redis", redis_server.url])
    pattern = (
        r"^wsfanout: listening on (ws://\S+) "
        r"\(policy chat, compression shared, redis redis://127\.0\.0\.1:\d+/0\)$"
    )
    url_a, url_b = a.wait_for(pattern)[1], b.wait_for(pattern)[1]
    with client(url_a, "/on-a") as on_a, client(url_b, "/on-b") as on_b:
        a.wait_for("client connected: .* /on-a policy chat$")
        b.wait_for("client connected: .* /on-b policy chat$")
        a.feed("from a\n")
        for ws in (on_a, on_b):
            assert ws.recv(timeout=GUARD) == "from a"
        b.feed("from b\n")
        # Next is "from b", not a second "from a": A delivers its own message once,
        # when Redis has numbered it, as B does.
        for ws in (on_a, on_b):
            assert ws.recv(timeout=GUARD) == "from b"
        # The backplane's own channel takes plain publishes from any Redis client too.
        assert publish(redis_server.url, "wsfanout:all", "from redis") == 2
        for ws in (on_a, on_b):
            assert ws.recv(timeout=GUARD) == "from redis"
        a.feed("last from a\n")
        for ws in (on_a, on_b):
            assert ws.recv(timeout=GUARD) == "last from a"

        a.signal(signal.SIGINT)
        assert close_code(on_a) == 1001
        assert a.exit_code() == 130
        b.feed("b goes on\n")
        assert on_b.recv(timeout=GUARD) == "b goes on"
    b.signal(signal.SIGTERM)
    assert b.exit_code() == 0


def test_workers_close_their_clients_and_exit_when_serve_is_killed(
    wsfanout: type[Process], redis_server: RedisServer
) -> None:
    scaling = ["--redis", redis_server.url, "--workers", "2"]
    server = wsfanout(["serve", "--policy", "chat", "--port", "0", *scaling])
    url = server.listening()
    port = int(url.rsplit(":", 1)[1])
    # SO_REUSEPORT lets processes of one user share a port: a second server must not.
    other = wsfanout(["serve", "--policy", "chat", "--port", str(port), *scaling])
    assert other.exit_code() == 1
    rest = other.rest()
    assert rest[-1] == (
        f"wsfanout serve: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    # Before it, only the backplane's own news: it connected to Redis.
    assert all(re.search(r"^wsfanout: \S+ connected to Redis at ", line) for line in rest[:-1])
    with contextlib.ExitStack() as stack:
        clients = clients_on_every_worker(server, url, 2, stack)
        server.popen.kill()  # no signal handler runs: the workers see their parent vanish
        assert [close_code(ws) for ws in clients] == [1001] * len(clients)
    for pid in set(clients.values()):
        wait_until_exited(pid)


def test_a_worker_that_dies_stops_the_others_and_serve_exits_1(
    wsfanout: type[Process], redis_server: RedisServer
) -> None:
    scaling = ["--redis", redis_server.url, "--workers", "2"]
    server = wsfanout(["serve", "--policy", "chat", "--port", "0", *scaling])
    url = server.listening()
    with contextlib.ExitStack() as stack:
        clients = clients_on_every_worker(server, url, 2, stack)
        dead = max(clients.values())
        os.kill(dead, signal.SIGKILL)
        server.wait_for(rf"^wsfanout: worker {dead} exited on its own; stopped the others$")
        # Its clients lost their connection without a close frame; the other worker
        # closed its own properly, with 1001, when the server stopped it.
        for ws, pid in clients.items():
            assert close_code(ws) == (None if pid == dead else 1001)
    assert server.exit_code() == 1


def test_the_token_and_the_cap_on_clients_hold_across_workers(
    wsfanout: type[Process], redis_server: RedisServer
) -> None:
    guarded = ["--max-clients", "2", "--token-env", "FANOUT_TOKEN"]
    scaling = ["--redis", redis_server.url, "--workers", "2"]
    server = wsfanout(
        ["serve", "--policy", "chat", "--port", "0", *guarded, *scaling],
        env={"FANOUT_TOKEN": "s3cret"},
    )
    url = server.listening()
    bearer = {"Authorization": "Bearer s3cret"}
    with pytest.raises(InvalidStatus) as refused:
        client(url, "/", additional_headers={"Authorization": "Bearer nope"}).close()
    assert refused.value.response.status_code == 403
    with client(url, "/first", additional_headers=bearer) as first:
        with client(url, "/second", additional_headers=bearer) as second:
            server.wait_for_each(
                r"worker \d+: client connected: .* /first policy chat$",
                r"worker \d+: client connected: .* /second policy chat$",
            )
            # With a cap per worker, some of these would land on a worker with room.
            for n in range(8):
                with pytest.raises(InvalidStatus) as refused:
                    client(url, f"/extra{n}", additional_headers=bearer).close()
                assert refused.value.response.status_code == 503
                server.wait_for(
                    rf"refused 127\.0\.0\.1:\d+ /extra{n}: 503 too many clients \(max 2\)$"
                )
            server.feed("hello\n")
            assert [first.recv(timeout=GUARD), second.recv(timeout=GUARD)] == ["hello", "hello"]
        server.wait_for(r"client disconnected: .* /second ")
        with client(url, "/third", additional_headers=bearer) as third:
            server.wait_for(r"client connected: .* /third policy chat$")
            server.feed("again\n")
            assert [first.recv(timeout=GUARD), third.recv(timeout=GUARD)] == ["again", "again"]
    server.signal(signal.SIGTERM)
    assert server.exit_code() == 0
    assert not [line for line in server.seen + server.rest() if "s3cret" in line]


def test_an_input_channel_is_subscribed_again_when_redis_comes_back(
    wsfanout: type[Process], redis_server: RedisServer
) -> None:
    channels = ["--input-channel", "news", "--input-channel", "alerts"]
    server = wsfanout(
        ["serve", "--policy", "chat", "--port", "0", "--redis", redis_server.url, *channels]
    )
    url = server.listening()
    with client(url) as ws:
        server.wait_for("client connected")
        assert publish(redis_server.url, "alerts", "before") == 1
        assert ws.recv(timeout=GUARD) == "before"
        redis_server.kill()
        server.wait_for(
            r"^wsfanout: warning: lost Redis channel news, alerts \(.+\); messages published "
            r"there meanwhile are lost; resubscribing$"
        )
        redis_server.start()
        server.wait_for(r"^wsfanout: subscribed again to Redis channel news, alerts$")
        assert publish(redis_server.url, "news", "after") == 1
        assert ws.recv(timeout=GUARD) == "after"
        server.feed("and standard input\n")
        assert ws.recv(timeout=GUARD) == "and standard input"
        server.signal(signal.SIGTERM)
        assert close_code(ws) == 1001
    assert server.exit_code() == 0


REDIS = ["serve", "--policy", "chat", "--redis", "redis://127.0.0.1:6379/0"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [*REDIS, "--workers", "0"],
            "argument --workers: '0' must be >= 1",
        ),
        (
            [*REDIS, "--workers", "two"],
            "argument --workers: 'two' is not an integer",
        ),
        (
            ["serve", "--policy", "chat", "--workers", "2"],
            "--workers 2: needs --redis URL (worker processes share messages through it)",
        ),
        (
            ["serve", "--policy", "chat", "--workers", "1"],
            "--workers 1: needs --redis URL (worker processes share messages through it)",
        ),
        (
            ["serve", "--policy", "chat", "--input-channel", "news"],
            "--input-channel news: needs --redis URL",
        ),
        (
            ["serve", "--policy", "chat", "--redis", "http://127.0.0.1:6379"],
            "argument --redis: 'http://127.0.0.1:6379' is not a Redis URL (expected "
            "redis://HOST[:PORT][/DB], rediss://... for TLS, or unix://PATH)",
        ),
        (
            ["serve", "--policy", "chat", "--redis", "127.0.0.1:6379"],
            "argument --redis: '127.0.0.1:6379' is not a Redis URL (expected "
            "redis://HOST[:PORT][/DB], rediss://... for TLS, or unix://PATH)",
        ),
        (
            ["serve", "--policy", "chat", "--redis", "redis://127.0.0.1:99999/0"],
            "argument --redis: 'redis://127.0.0.1:99999/0' is not a Redis URL: "
            "Port out of range 0-65535",
        ),
        (
            [*REDIS, "--input-channel", ""],
            "argument --input-channel: '' is empty (expected a Redis channel name or pattern)",
        ),
        (
            [*REDIS, "--input-channel", "wsfanout:all"],
            "--input-channel wsfanout:all: the backplane's own channels (wsfanout:*) already "
            "reach every client; name another channel",
        ),
        (
            [*REDIS, "--input-channel", "news", "--input-channel", "wsfan*"],
            "--input-channel wsfan*: the backplane's own channels (wsfanout:*) already "
            "reach every client; name another channel",
        ),
        (
            [*REDIS, "--workers", "2", "--unix", "/tmp/wsfanout.sock"],
            "--workers 2: needs a host and port: worker processes share a TCP port, not a "
            "Unix socket",
        ),
        (
            [*REDIS, "--workers", "2", "--exit-on-eof"],
            "--exit-on-eof: needs a single process, not --workers 2 (the process reading "
            "standard input has no clients of its own)",
        ),
        (
            [*REDIS, "--workers", "3", "--wait-clients", "1"],
            "--wait-clients 1: needs a single process, not --workers 3 (the process reading "
            "standard input has no clients of its own)",
        ),
    ],
)
def test_a_scaling_flag_given_wrong_is_a_usage_error(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main(args)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: wsfanout serve ")
    assert err.splitlines()[-1] == f"wsfanout serve: error: {message}"


def test_the_command_exits_2_on_a_wrong_worker_count(wsfanout: type[Process]) -> None:
    server = wsfanout([*REDIS, "--workers", "0"])
    assert server.exit_code() == 2
    assert server.rest()[-1] == "wsfanout serve: error: argument --workers: '0' must be >= 1"


def test_an_unreachable_redis_is_an_error_that_hides_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()  # nothing listens there
    url = f"redis://:s3cret@127.0.0.1:{port}/0"
    assert main(["serve", "--policy", "chat", "--port", "0", "--redis", url]) == 1
    err = capsys.readouterr().err
    expected = (
        rf"wsfanout serve: error: cannot reach Redis at redis://:\*\*\*@127\.0\.0\.1:{port}/0: "
    )
    assert re.fullmatch(expected + rf"Error 111 connecting to 127\.0\.0\.1:{port}\..*\n", err), err
    assert "s3cret" not in err


def test_redis_urls_are_logged_without_their_password() -> None:
    assert redacted_url("redis://:pw@host:6379/0") == "redis://:***@host:6379/0"
    assert redacted_url("rediss://user:pw@host/1") == "rediss://user:***@host/1"
    assert redacted_url("redis://user@host/1") == "redis://user@host/1"
    assert redacted_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redacted_url("unix:///run/redis.sock") == "unix:///run/redis.sock"


def test_a_server_started_later_resumes_clients_from_the_history_in_redis(
    wsfanout: type[Process], redis_server: RedisServer
) -> None:
    options = ["serve", "--policy", "chat", "--port", "0", "--redis", redis_server.url]
    a = wsfanout([*options, "--history", "10"])
    a.listening()
    with redis.Redis.from_url(redis_server.url) as connection:
        listener = connection.pubsub(ignore_subscribe_messages=True)
        listener.subscribe("wsfanout:all")
        assert listener.get_message(timeout=GUARD) is None  # the subscription's answer
        a.feed("one\ntwo\nthree\nfour\n")  # no client anywhere: kept in Redis all the same
        for _ in range(4):  # each line, as numbered and published by Redis
            assert listener.get_message(timeout=GUARD) is not None
        listener.close()
        epoch = connection.hget("wsfanout:epochs", "")
    assert epoch is not None
    b = wsfanout([*options, "--history", "10"])
    url = b.listening()
    since = f":{epoch.decode()}:2"
    with client(url, f"/?since={since}", subprotocols=[Subprotocol("wsfanout.v1")]) as ws:
        frames = [str(ws.recv(timeout=GUARD)) for _ in range(3)]
    assert frames[0].startswith('{"type":"resume"')
    assert [frame.split("\n", 1)[1] for frame in frames[1:]] == ["three", "four"]
