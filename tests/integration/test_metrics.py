"""The admin listener on a real hub: /metrics scraped over HTTP while real clients
read and one has stopped, /healthz, /clients; and register_metrics on a registry.

The series are counted in Prometheus' own parser: their number must not change
with the number of subscribers, and no label may name a client.
"""

from __future__ import annotations

import asyncio
import json
import sys
import urllib.parse
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from wsfanout import ConfigError, Hub
from wsfanout._cli.admin import parse_address
from wsfanout.metrics import (
    DROP_REASONS,
    METRICS,
    AdminServer,
    HubCollector,
    register_metrics,
    serve_admin,
)
from wsfanout.policies import Disconnect, DropOldest

from .test_monitor import GUARD, behind, not_reading
from .wsnet import Client, Net, served

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def get(url: str) -> tuple[int, dict[str, str], bytes]:
    """A plain HTTP/1.1 GET over asyncio streams: status, headers, body."""
    parts = urllib.parse.urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    writer.write(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n".encode())
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


async def scrape(admin: AdminServer) -> tuple[Samples, str]:
    status, headers, body = await get(admin.url + "metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=")
    text = body.decode()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return samples, text


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def crowd(net: Net, count: int) -> list[Client]:
    return [await net.connect("fast", policy_name="chat", compression=None) for _ in range(count)]


async def test_metrics_with_a_stalled_client_match_the_hub_and_keep_their_series_count() -> None:
    hub = Hub(close_timeout=0.5)
    async with asyncio.timeout(60), served(hub) as net, serve_admin(hub) as admin:
        lossy = DropOldest(max_messages=8) | Disconnect(max_lag=600.0)
        stalled = await not_reading(net, "stalled", lossy, "feed")
        await behind(net, stalled)
        fast = await crowd(net, 50)
        for n in range(20):
            hub.publish(f"tick {n}")
        for client in fast:
            await client.received(20)
        samples, text = await scrape(admin)

        policies = hub.monitor.policies()
        for name, stats in policies.items():
            assert value(samples, "wsfanout_subscribers", policy=name) == stats.subscribers
            assert value(samples, "wsfanout_messages_sent_total", policy=name) == stats.sent
            assert value(samples, "wsfanout_messages_offered_total", policy=name) == stats.offered
            for reason, field in DROP_REASONS.items():
                assert value(
                    samples, "wsfanout_messages_dropped_total", policy=name, reason=reason
                ) == getattr(stats, field)
        assert value(samples, "wsfanout_subscribers", policy="chat") == 50
        assert value(samples, "wsfanout_subscribers_behind", policy="feed") == 1
        assert value(samples, "wsfanout_subscribers_behind", policy="chat") == 0
        assert value(samples, "wsfanout_queued_messages", policy="feed") == 8
        assert value(samples, "wsfanout_write_buffer_bytes", policy="feed") > 0
        assert value(samples, "wsfanout_messages_dropped_total", policy="feed", reason="oldest") > 0
        assert value(samples, "wsfanout_max_lag_seconds", policy="feed") > 0
        sent_chat = value(samples, "wsfanout_messages_sent_total", policy="chat")
        assert value(samples, "wsfanout_queue_wait_seconds_count", policy="chat") == sent_chat
        assert value(samples, "wsfanout_queue_wait_seconds_bucket", policy="chat", le="0.0") == (
            sent_chat
        )
        assert value(samples, "wsfanout_publish_duration_seconds_count") > 0
        assert ("process_resident_memory_bytes", ()) in samples
        # Labels name policies, reasons and bounds, never a client.
        label_values = {v for _, labels in samples for _, v in labels}
        for client in (stalled, *fast):
            assert str(client.route.server_ws.id) not in text
            assert "{}:{}".format(*client.ws.local_address[:2]) not in text
        assert {"chat", "feed"} <= label_values

        more = await crowd(net, 200)
        for n in range(20):
            hub.publish(f"tock {n}")
        for client in fast:
            await client.received(40)
        for client in more:
            await client.received(20)
        again, _ = await scrape(admin)
        assert value(again, "wsfanout_subscribers", policy="chat") == 250
        assert len(again) == len(samples), "the number of series grew with the subscribers"
        assert set(again) == set(samples)


async def test_metrics_describe_every_family_and_only_those() -> None:
    registry = CollectorRegistry()
    hub = Hub()
    register_metrics(hub, registry)
    families = {f.name for f in text_string_to_metric_families(generate_latest(registry).decode())}
    expected = {
        f"wsfanout_{m.name.removesuffix('_total')}"
        for m in METRICS
        if not m.name.startswith("backplane_")
    }
    assert families == expected
    without = CollectorRegistry()
    register_metrics(Hub(timings=False), without, namespace="quiet")
    names = {
        s.name
        for f in text_string_to_metric_families(generate_latest(without).decode())
        for s in f.samples
    }
    assert names == {"quiet_info"}  # no subscriber, no policy yet; no timings, no histograms


def test_two_hubs_need_two_namespaces_on_one_registry() -> None:
    registry = CollectorRegistry()
    register_metrics(Hub(), registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        register_metrics(Hub(), registry)
    register_metrics(Hub(), registry, namespace="other")
    assert "other_info{" in generate_latest(registry).decode()
    with pytest.raises(ValueError, match=r"^namespace='bad name' must be"):
        HubCollector(Hub(), namespace="bad name")
    with pytest.raises(TypeError, match=r"^hub=None must be a Hub$"):
        HubCollector(None)  # type: ignore[arg-type]


def test_register_metrics_uses_the_default_registry_when_given_none() -> None:
    from prometheus_client import REGISTRY

    collector = register_metrics(Hub(), namespace="default_registry_test")
    try:
        assert "default_registry_test_info{" in generate_latest(REGISTRY).decode()
    finally:
        REGISTRY.unregister(collector)


async def test_healthz_follows_the_listener_s_state() -> None:
    hub = Hub()
    admin = AdminServer(hub)
    await admin.start()
    try:
        status, _, body = await get(admin.url + "healthz")
        assert (status, body) == (503, b"starting\n")
        admin.ready()
        status, _, body = await get(admin.url + "healthz")
        assert (status, body) == (200, b"ok\n")
        admin.stopping()
        status, _, body = await get(admin.url + "healthz")
        assert (status, body) == (503, b"stopping\n")
    finally:
        await admin.aclose()
        await hub.aclose()


async def clients_json(admin: AdminServer, query: str = "") -> tuple[int, Any]:
    status, headers, body = await get(admin.url + "clients" + query)
    assert headers["content-type"] == "application/json"
    return status, json.loads(body)


async def test_clients_are_sorted_paged_and_the_closed_ones_listed() -> None:
    hub = Hub(close_timeout=0.5)
    async with asyncio.timeout(GUARD), served(hub) as net, serve_admin(hub) as admin:
        readers = [await net.connect(f"reader{n}", compression=None) for n in range(3)]
        stalled = await not_reading(net, "stalled", DropOldest(max_messages=4), "feed")
        await behind(net, stalled)
        gone = await net.connect("gone", policy_name="chat")
        await gone.ws.close(4000, "see you")
        await gone.route.finished()

        status, page = await clients_json(admin)
        assert status == 200
        assert (page["subscribers"], page["sort"], page["offset"], page["limit"]) == (
            4,
            "lag",
            0,
            1024,
        )
        first = page["clients"][0]
        stats = stalled.sub.stats()
        assert first["id"] == str(stalled.route.server_ws.id)
        assert first["policy"] == "feed"
        assert first["path"] == stalled.route.path
        assert first["dropped_by_reason"]["oldest"] == stats.dropped_oldest > 0
        assert first["queued_messages"] == 4
        assert first["write_buffer"] > 0
        assert {c["policy"] for c in page["clients"][1:]} == {"default"}
        assert [c["id"] for c in page["closed"]] == [str(gone.route.server_ws.id)]
        assert page["closed"][0] | {"closed_at": 0} == page["closed"][0] | {
            "ended": "client",
            "code": 4000,
            "cause": "see you",
            "policy": "chat",
            "closed_at": 0,
        }

        _, by_sent = await clients_json(admin, "?sort=sent&limit=2&offset=1")
        sent = sorted((r.sub.stats().sent for r in (*readers, stalled)), reverse=True)
        assert [c["sent"] for c in by_sent["clients"]] == sent[1:3]
        assert (by_sent["limit"], by_sent["offset"]) == (2, 1)
        _, by_drops = await clients_json(admin, "?sort=dropped&limit=1")
        assert by_drops["clients"][0]["policy"] == "feed"

        for query, error in [
            ("?sort=name", "sort='name' is not one of lag, queued_bytes, queued_messages, "),
            ("?limit=0", "limit=0 must be >= 1"),
            ("?limit=ten", "limit='ten' is not an integer"),
            ("?offset=-1", "offset=-1 must be >= 0"),
        ]:
            status, answer = await clients_json(admin, query)
            assert status == 400
            assert answer["error"].startswith(error)


async def test_the_live_feed_is_for_the_page_of_the_same_origin_only() -> None:
    hub = Hub()
    async with serve_admin(hub, interval=0.1) as admin:
        live = admin.url.replace("http://", "ws://") + "live"
        same = admin.url.rstrip("/")
        async with connect(live, origin=Origin(same)) as page:
            snapshot = json.loads(await page.recv())
            assert (snapshot["state"], snapshot["subscribers"]) == ("serving", 0)
        async with connect(live) as script:  # no Origin: not a browser
            assert json.loads(await script.recv())["state"] == "serving"
        with pytest.raises(InvalidStatus) as refused:
            async with connect(live, origin=Origin("https://evil.example")):
                pass
        assert refused.value.response.status_code == 403
        assert refused.value.response.body == b"origin https://evil.example not allowed\n"
    await hub.aclose()


async def test_unknown_paths_are_404_and_the_page_socket_needs_an_upgrade() -> None:
    hub = Hub()
    async with serve_admin(hub) as admin:
        status, _, body = await get(admin.url + "nothing")
        assert (status, body) == (404, b"not found: try /, /metrics, /healthz or /clients\n")
        status, _, _ = await get(admin.url + "live")
        assert status == 426
        status, headers, body = await get(admin.url)
        assert status == 200
        assert headers["content-type"] == "text/html; charset=utf-8"
        assert b"<title>wsfanout status</title>" in body
    await hub.aclose()


async def test_metrics_answer_501_without_prometheus_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    hub = Hub()
    async with serve_admin(hub) as admin:
        assert admin.registry is None
        status, _, body = await get(admin.url + "metrics")
        assert (status, body) == (
            501,
            b"/metrics needs prometheus-client: pip install 'wsfanout[metrics]'\n",
        )
        status, _, _ = await get(admin.url + "healthz")
        assert status == 200
    with pytest.raises(ImportError, match=r"pip install 'wsfanout\[metrics\]'"):
        HubCollector(hub)
    await hub.aclose()


def test_bad_admin_settings_are_refused_naming_them() -> None:
    hub = Hub()
    with pytest.raises(ConfigError, match=r"^top=0 must be an int >= 1$"):
        AdminServer(hub, top=0)
    with pytest.raises(ConfigError, match=r"^interval=0 must be"):
        AdminServer(hub, interval=0)
    with pytest.raises(TypeError, match=r"^hub='hub' must be a Hub$"):
        AdminServer("hub")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match=r"^the admin listener is not started$"):
        AdminServer(hub).url  # noqa: B018 - the property raises


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("9000", ("127.0.0.1", 9000)),
        (":9000", ("127.0.0.1", 9000)),
        ("0.0.0.0:9000", ("0.0.0.0", 9000)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:65535", ("localhost", 65535)),
    ],
)
def test_admin_addresses_default_to_the_loopback_interface(
    text: str, address: tuple[str, int]
) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("::1:9000", "is not HOST:PORT (write an IPv6 address in brackets)"),
        ("host:port", "is not HOST:PORT (e.g. 127.0.0.1:9000, or 9000)"),
        ("", "is not HOST:PORT (e.g. 127.0.0.1:9000, or 9000)"),
        ("127.0.0.1:70000", "has no port number in 0-65535"),
    ],
)
def test_a_bad_admin_address_is_refused_naming_it(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as refused:
        parse_address(text)
    assert str(refused.value) == f"admin={text!r} {why}"
