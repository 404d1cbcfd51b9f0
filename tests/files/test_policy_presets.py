"""Every preset loads, is documented, and keeps the promise its description makes.

The promises are checked by hypothesis on the sans-I/O core: an ``Outbox`` under the
preset, a virtual clock and a fake write buffer that the client drains at will.
"""

import itertools
from collections.abc import Callable
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wsfanout import Close
from wsfanout.files import load_policy, load_policy_file, preset_names
from wsfanout.lowlevel import (
    IDLE,
    CloseAction,
    Offer,
    Outbox,
    Wait,
    Write,
    make_message,
    resolve_rules,
)
from wsfanout.policies import (
    Above,
    Adaptive,
    Batch,
    Below,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    Escalate,
    Level,
    Notify,
    SkipToLatest,
    Throttle,
)

POLICIES_FOLDER = Path(__file__).resolve().parents[2] / "policies"
REQUIRED = (
    "market-data",
    "chat",
    "dashboard",
    "log-tail",
    "notifications",
    "mobile",
    "live-feed",
    "event-feed",
)


def test_the_required_presets_exist_and_match_the_policies_folder() -> None:
    assert set(REQUIRED) <= set(preset_names())
    assert preset_names() == tuple(sorted(p.stem for p in POLICIES_FOLDER.glob("*.toml")))


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_is_documented(name: str) -> None:
    preset = load_policy_file(name)
    assert preset.name == name
    assert len(preset.description.split()) >= 15, "say when to use it, in a sentence or two"
    assert load_policy(name) == preset.policy
    assert load_policy(POLICIES_FOLDER / f"{name}.toml") == preset.policy


def test_the_presets_are_the_policies_their_descriptions_promise() -> None:
    assert load_policy("market-data") == (
        ConflateByKey(max_messages=4096) | Throttle(rate=20) | Disconnect(max_lag=5.0)
    )
    assert load_policy("chat") == Disconnect(max_messages=1000, max_bytes=512 * 1024, max_lag=30.0)
    assert load_policy("dashboard") == SkipToLatest()
    assert load_policy("log-tail") == (
        Batch(max_messages=64, max_bytes=64 * 1024, max_delay=0.1)
        | DropOldest(max_messages=5000, max_bytes=1024 * 1024)
    )
    assert load_policy("notifications") == DropNewest(max_messages=256)
    assert load_policy("mobile") == (
        ConflateByKey(max_messages=4096)
        | Adaptive(interval=0.1, max_bytes=65536)
        | Disconnect(max_lag=30.0)
    )
    conflate = ConflateByKey()
    dropping = conflate | DropOldest(max_messages=64)
    assert load_policy("live-feed") == Escalate(
        levels=[
            Level(name="normal"),
            Level(
                conflate,
                up=Above("lag", 1.0) | Above("queued_messages", 512),
                down=Below("lag", 0.25) & Below("queued_messages", 64),
                name="conflate",
            ),
            Level(
                dropping,
                up=Above("queued_messages", 48) | Above("lag", 5.0),
                down=Below("queued_messages", 16) & Below("lag", 1.0),
                name="drop-oldest",
            ),
            Level(
                dropping | Disconnect(max_lag=10.0, grace=5.0),
                up=Above("lag", 10.0),
                down=Below("lag", 5.0),
                name="disconnect",
            ),
        ],
        hold=2.0,
    )
    assert load_policy("event-feed") == (
        DropOldest(max_messages=1000, max_bytes=1024 * 1024) | Notify() | Disconnect(max_lag=30.0)
    )


# -- a subscriber on a virtual clock ---------------------------------------------------

HIGH, LOW = 8192, 2048


@attrs.define
class Client:
    """One subscriber's outbox, driven the way the hub and the relay drive it."""

    outbox: Outbox
    now: float = 0.0
    buffer: int = 0
    published: list[tuple[int, str | None]] = attrs.Factory(list)
    delivered: list[int] = attrs.Factory(list)
    closed: Close | None = None

    def publish(self, key: str | None, size: int) -> None:
        seq = len(self.published)
        self.published.append((seq, key))
        payload = f"{seq}:".ljust(size, "x")
        outcome = self.outbox.offer(
            make_message(payload, seq=seq, time=self.now, key=key), self.now, self.buffer
        )
        if outcome is Offer.WRITE:
            self.receive(payload.encode())
        self.relay()

    def burst(self, count: int, size: int) -> None:
        """``count`` messages at once, on keys "k0".."k9" in turn: a spike to fall behind on."""
        for n in range(count):
            self.publish(f"k{n % 10}", size)

    def receive(self, frame: bytes) -> None:
        self.buffer += len(frame)
        # A batch joins payloads with newlines (the presets use combine = "lines").
        self.delivered += [int(part.split(b":")[0]) for part in frame.split(b"\n")]

    def drain(self, size: int) -> None:
        self.buffer = max(0, self.buffer - size)
        self.relay()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.relay()

    def relay(self) -> None:
        for _ in range(100_000):
            action = self.outbox.next_action(self.now, self.buffer)
            if isinstance(action, Write):
                for frame in action.frames:
                    self.receive(frame.payload)
            elif isinstance(action, CloseAction):
                self.closed = action.close
            else:
                assert action is IDLE or isinstance(action, Wait)
                return
        raise AssertionError("the outbox never settled")

    def catch_up(self) -> None:
        """The client reads everything and time passes: whatever is queued must leave."""
        for _ in range(10_000):
            if self.closed is not None or not self.outbox.queue:
                return
            self.buffer = 0
            self.advance(1.0)
        raise AssertionError("the queue never emptied")


steps = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.sampled_from(["a", "b", "c", None]), st.integers(2, 3000)),
        st.tuples(st.just("burst"), st.integers(1, 1100), st.integers(2, 600)),
        st.tuples(st.just("drain"), st.integers(0, 40000)),
        st.tuples(st.just("advance"), st.floats(0, 8)),
    ),
    max_size=40,
)


def run(
    name: str,
    script: list[tuple[object, ...]],
    check: Callable[[Client], None] | None = None,
) -> Client:
    client = Client(Outbox(load_policy(name), high=HIGH, low=LOW))
    rules = resolve_rules(client.outbox.policy)
    for step in script:
        getattr(client, str(step[0]))(*step[1:])
        if check is not None:
            check(client)
        stats = client.outbox.stats(client.now)
        # Bounded, accounted for, in order, no duplicates: at every step, for every preset.
        assert stats.queued_messages <= (rules.max_messages or 0)
        assert stats.queued_bytes <= (rules.max_bytes or 0)
        assert stats.offered == stats.sent + stats.dropped + stats.queued_messages
        assert stats.sent == len(client.delivered)
        assert client.delivered == sorted(set(client.delivered))
    client.catch_up()
    return client


@given(steps)
@settings(deadline=None)  # each example runs a whole script; a loaded machine is slow
def test_chat_loses_nothing_unless_it_disconnects(script: list[tuple[object, ...]]) -> None:
    client = run("chat", script)
    stats = client.outbox.stats(client.now)
    assert stats.dropped_oldest == stats.dropped_newest == stats.skipped == stats.conflated == 0
    if client.closed is None:
        assert client.delivered == [seq for seq, _ in client.published]
    else:
        assert client.closed.code == 1013
        assert client.delivered == list(range(len(client.delivered)))


@given(steps)
@settings(deadline=None)  # each example runs a whole script; a loaded machine is slow
def test_notifications_never_disconnect_and_only_refuse_new_messages(
    script: list[tuple[object, ...]],
) -> None:
    client = run("notifications", script)
    stats = client.outbox.stats(client.now)
    assert client.closed is None
    assert stats.dropped == stats.dropped_newest
    assert len(client.delivered) == len(client.published) - stats.dropped_newest


@given(steps)
@settings(deadline=None)  # each example runs a whole script; a loaded machine is slow
def test_dashboard_never_disconnects_and_always_ends_on_the_latest(
    script: list[tuple[object, ...]],
) -> None:
    client = run("dashboard", script)
    assert client.closed is None
    stats = client.outbox.stats(client.now)
    assert stats.dropped == stats.skipped
    if client.published:
        assert client.delivered[-1] == client.published[-1][0]


@given(steps)
@settings(deadline=None)  # each example runs a whole script; a loaded machine is slow
def test_log_tail_never_disconnects_and_keeps_the_newest_lines(
    script: list[tuple[object, ...]],
) -> None:
    client = run("log-tail", script)
    assert client.closed is None
    stats = client.outbox.stats(client.now)
    assert stats.dropped == stats.dropped_oldest
    if client.published:
        assert client.delivered[-1] == client.published[-1][0]


@given(steps)
@settings(deadline=None)  # each example runs a whole script; a loaded machine is slow
def test_market_data_delivers_the_newest_value_of_every_key(
    script: list[tuple[object, ...]],
) -> None:
    client = run("market-data", script)
    stats = client.outbox.stats(client.now)
    assert stats.dropped_oldest == stats.dropped_newest == stats.skipped == 0
    if client.closed is not None:
        assert client.closed.code == 1013
        return
    newest = {key: seq for seq, key in client.published if key is not None}
    assert set(newest.values()) <= set(client.delivered)
    unkeyed = [seq for seq, key in client.published if key is None]
    assert set(unkeyed) <= set(client.delivered)


@given(steps)
@settings(deadline=None)  # each example runs a whole script; a loaded machine is slow
def test_mobile_loses_only_what_conflation_replaces_and_ends_on_the_newest_per_key(
    script: list[tuple[object, ...]],
) -> None:
    client = run("mobile", script)
    stats = client.outbox.stats(client.now)
    assert stats.dropped_oldest == stats.dropped_newest == stats.skipped == 0
    if client.closed is not None:
        assert client.closed.code == 1013
        return
    newest = {key: seq for seq, key in client.published if key is not None}
    assert set(newest.values()) <= set(client.delivered)
    assert {seq for seq, key in client.published if key is None} <= set(client.delivered)


@given(steps)
@settings(deadline=None)  # each example runs a whole script; a loaded machine is slow
def test_live_feed_steps_at_most_once_per_hold_and_keeps_each_level_s_bound(
    script: list[tuple[object, ...]],
) -> None:
    policy = load_policy("live-feed")
    bounds = [resolve_rules(level) for level in policy.level_policies()]
    taken: list[float] = []

    def check(client: Client) -> None:
        outbox = client.outbox
        if outbox.on_step is None:
            outbox.on_step = lambda step: taken.append(step.at)
        if outbox.closing is None:
            bound = bounds[outbox.level]
            assert len(outbox.queue) <= (bound.max_messages or 0)
            assert outbox.queue.bytes <= (bound.max_bytes or 0)

    client = run("live-feed", script, check)
    # The hold ends at since + hold, a float sum: 2 s apart can be 1.9999999999999996.
    assert all(later - earlier >= 2.0 - 1e-9 for earlier, later in itertools.pairwise(taken))
    stats = client.outbox.stats(client.now)
    assert stats.steps_up - stats.steps_down == stats.level
    if client.closed is not None:
        assert client.closed.code == 1013
