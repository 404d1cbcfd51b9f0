"""A hub on a real redis-server exposes its backplane's health as metrics, which
follow the backplane when Redis goes away and comes back."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis_harness import GUARD, backplane_of, hub_on, running_redis

from wsfanout.backplane import BackplaneHealth
from wsfanout.metrics import register_metrics


def backplane_samples(registry: CollectorRegistry) -> dict[str, float]:
    text = generate_latest(registry).decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("wsfanout_backplane_")
    }


async def test_backplane_metrics_follow_its_health_through_a_redis_restart() -> None:
    async with running_redis() as redis, hub_on(redis.url, "A") as a, hub_on(redis.url, "B") as b:
        registry = CollectorRegistry()
        register_metrics(a, registry)
        await backplane_of(a).wait_for(lambda h: h.connected and h.peers >= 1, timeout=GUARD)
        await backplane_of(b).wait_for(lambda h: h.connected, timeout=GUARD)
        for n in range(5):
            b.publish(f"from b {n}")
            a.publish(f"from a {n}")
        health = await backplane_of(a).wait_for(
            lambda h: h.received >= 10 and h.published >= 5, timeout=GUARD
        )
        samples = backplane_samples(registry)
        assert 0 <= samples.pop("wsfanout_backplane_lag_seconds") < GUARD
        assert samples == {
            "wsfanout_backplane_connected": 1.0,
            "wsfanout_backplane_reconnects_total": 0.0,
            "wsfanout_backplane_lost_total": float(health.lost),
            "wsfanout_backplane_forged_total": 0.0,
            "wsfanout_backplane_dropped_total": 0.0,
            "wsfanout_backplane_published_total": float(health.published),
            "wsfanout_backplane_received_total": float(health.received),
            "wsfanout_backplane_buffered_messages": float(health.buffered),
            "wsfanout_backplane_peers": float(health.peers),
            "wsfanout_backplane_skipped_total": float(health.skipped),
        }
        assert health.received == 10  # B's five and its own, which come through Redis too

        await redis.stop()

        def down(h: BackplaneHealth) -> bool:
            return not h.connected

        await backplane_of(a).wait_for(down, timeout=GUARD)
        assert backplane_samples(registry)["wsfanout_backplane_connected"] == 0.0
        await redis.start()
        await backplane_of(a).wait_for(lambda h: h.connected, timeout=GUARD)
        samples = backplane_samples(registry)
        assert samples["wsfanout_backplane_connected"] == 1.0
        assert samples["wsfanout_backplane_reconnects_total"] == 1.0
