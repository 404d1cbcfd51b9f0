"""Worker processes sharing one port (SO_REUSEPORT) and a real redis-server."""

from __future__ import annotations

import asyncio
import errno
import json
import signal
import socket
import sys

import pytest
from redis_harness import GUARD, Collector, backplane_of, hub_on, running_redis
from redis_node import subscribe_by_path
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from wsfanout.backplane import WorkerPool
from wsfanout.exceptions import ConfigError, PolicyError


async def test_workers_share_one_port_and_every_client_gets_every_message() -> None:
    async with running_redis() as redis:
        pool = WorkerPool(2, redis.url, port=0, heartbeat=0.1, handler=subscribe_by_path)
        await asyncio.to_thread(pool.start, timeout=GUARD)
        try:
            pids = {process.pid for process in pool.processes}
            uri = f"ws://127.0.0.1:{pool.port}"
            clients = [await Collector.connect(uri) for _ in range(16)]
            async with hub_on(redis.url, "publisher") as publisher:
                # pool.start() returned once every worker was subscribed.
                await backplane_of(publisher).wait_for(lambda h: h.connected, timeout=GUARD)
                for n in range(50):
                    publisher.publish(json.dumps({"from": "P", "n": n}))
                for client in clients:
                    await client.wait_count(50)
        finally:
            codes = await asyncio.to_thread(pool.stop)
        for client in clients:
            await client.close()
    assert codes == [0, 0]
    # The kernel spread the clients over both workers (all 16 on one: odds of 2 in 65536).
    assert {client.pid for client in clients} == pids
    for client in clients:
        assert client.numbers("P") == list(range(50))
        assert client.websocket.close_code == 1001  # stopping a worker closes its hub


async def test_run_workers_serves_until_sigterm_then_exits_cleanly() -> None:
    async with running_redis() as redis:
        script = (
            "import logging, sys\n"
            "from wsfanout.backplane import run_workers\n"
            "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
            f"sys.exit(run_workers(2, {redis.url!r}, port=0))\n"
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, stderr=asyncio.subprocess.PIPE
        )
        assert process.stderr is not None
        async with asyncio.timeout(GUARD):
            while True:
                line = (await process.stderr.readline()).decode()
                assert line, "run_workers exited before serving"
                if " workers serving " in line:
                    break
        port = int(line.rsplit(":", 1)[1])
        async with connect(f"ws://127.0.0.1:{port}", compression=None) as client:
            process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(GUARD):
                    await client.recv()
        async with asyncio.timeout(GUARD):
            code = await process.wait()
            await process.stderr.read()
    assert line == f"2 workers serving 127.0.0.1:{port}\n"
    assert client.close_code == 1001
    assert code == 0


@pytest.mark.parametrize(
    ("workers", "options", "message"),
    [
        (0, {}, r"^workers=0 must be an int >= 1$"),
        (True, {}, r"^workers=True must be an int >= 1$"),
        (2, {"port": 70000}, r"^port=70000 must be an int from 0 to 65535$"),
        (2, {"namespace": "a b"}, r"^namespace='a b' must be letters"),
        (2, {"close_timeout": 0}, r"^close_timeout=0 must be a finite number of seconds > 0$"),
        (2, {"close_timeout": True}, r"^close_timeout=True must be a number of seconds$"),
        (
            2,
            {"close_timeout": float("inf")},
            r"^close_timeout=inf must be a finite number of seconds > 0$",
        ),
        (
            2,
            {"serve_options": {"sock": None}},
            r"^serve_options=\{'sock': None\} may not set sock: the pool sets it$",
        ),
        (
            2,
            {"serve_options": {"max_size": 1024, "port": 1, "reuse_port": False}},
            r"^serve_options=\{'max_size': 1024, 'port': 1, 'reuse_port': False\} may not set "
            r"port, reuse_port: the pool sets them$",
        ),
    ],
)
def test_a_bad_worker_option_is_refused_before_any_process_starts(
    workers: int, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        WorkerPool(workers, "redis://127.0.0.1:1/0", **options)  # type: ignore[arg-type]
    name, value = next(iter(options.items()), ("workers", workers))
    assert (refused.value.name, refused.value.value) == (name, value)
    assert not isinstance(refused.value, PolicyError)


def test_a_port_another_pool_holds_is_in_use_although_both_reuse_it() -> None:
    with socket.socket() as holder:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        pool = WorkerPool(2, "redis://127.0.0.1:1/0", port=port)
        try:
            with pytest.raises(OSError, match="Address already in use") as refused:
                pool.start(connected=False, timeout=GUARD)
        finally:
            pool.stop()
    assert refused.value.errno == errno.EADDRINUSE
    assert pool.processes == ()
