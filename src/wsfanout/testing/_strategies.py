"""hypothesis strategies: schedules to run a policy through, and policies to run.

Steps are drawn from a ``one_of`` that lists :class:`Publish` first and every number
has a small, simple minimum, so hypothesis shrinks a failing schedule toward few steps,
few and small messages, round times and a client that keeps up: the minimal
counterexample reads as a story.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

from hypothesis import strategies as st

from .._core.adaptive import Adaptive
from .._core.builtins import (
    REDUCERS,
    Batch,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    Notify,
    SkipToLatest,
    Throttle,
)
from .._core.conditions import Above, Below, Condition
from .._core.errors import PolicyConflictError
from .._core.ladder import Escalate, Level
from .._core.policy import Policy
from .._public import publish_names
from ._schedule import (
    Advance,
    Client,
    Drain,
    Hangup,
    Publish,
    Read,
    Reconnect,
    Schedule,
    Send,
    SetPolicy,
    Stall,
    Step,
)

__all__ = ["policies", "schedules", "steps"]

_SECONDS = (0.001, 0.01, 0.1, 0.25, 1.0, 5.0, 30.0)
_RATES = (math.inf, 10.0, 100.0, 1_000.0, 10_000.0)
_HIGHS = (1024, 0, 64, 256, 4096, 65536)
_LOWATS = (0, 16, 256, 4096)
"""Kernel low-water marks of simulated clients: none, smaller than one message, a few
messages, and more than most bursts."""


def _seconds(max_advance: float) -> st.SearchStrategy[float]:
    nice = [s for s in _SECONDS if s <= max_advance]
    floats = st.floats(min_value=0.0, max_value=max_advance, allow_nan=False, allow_subnormal=False)
    return st.one_of(st.sampled_from(nice), floats) if nice else floats


def _rates() -> st.SearchStrategy[float]:
    return st.one_of(
        st.sampled_from(_RATES),
        st.integers(min_value=1, max_value=100_000).map(float),
    )


def steps(
    *,
    clients: int = 1,
    keys: Sequence[str] = ("a", "b", "c"),
    topics: Sequence[str] = (),
    max_burst: int = 30,
    max_size: int = 256,
    max_advance: float = 60.0,
    binary: bool = True,
    sends: bool = True,
    hangups: bool = True,
    reconnects: bool = False,
    lossless: bool = True,
    set_policies: st.SearchStrategy[Policy] | None = None,
) -> st.SearchStrategy[Step]:
    """One schedule step: a publish burst (some of them ``lossless``), time passing, a
    client changing how it reads, reading some bytes, a ``subscriber.send()``, (with
    ``hangups``) a client vanishing, (with ``reconnects``) a client reconnecting and
    resuming, or, given ``set_policies``, a client's policy replaced by one it draws."""
    if clients < 1:
        raise ValueError(f"clients={clients!r} must be >= 1")
    if max_burst < 1:
        raise ValueError(f"max_burst={max_burst!r} must be >= 1")
    # Every choice drawn is a cost paid again by each attempt to shrink a failure: a step
    # is one composite drawing its kind and then its fields directly (no nested tuples,
    # maps and one_of), what has one possible value is no draw at all, and a step's key
    # set is one choice from a table. Kinds are listed simplest first, Publish first,
    # which is where shrinking takes a step.
    one_client = clients == 1
    client = st.integers(min_value=0, max_value=clients - 1)
    bursts = st.integers(min_value=1, max_value=max_burst)
    sizes = st.integers(min_value=0, max_value=max_size)
    key_sets = _key_sets(tuple(keys))
    topic_names = st.sampled_from((None, *topics)) if topics else None
    binaries = st.booleans() if binary else None
    # About one burst in four lossless: enough to meet bounds, few enough to lose.
    losslesses = st.sampled_from((False, False, False, True)) if lossless else None
    seconds = _seconds(max_advance)
    rates = _rates()
    drains = st.integers(min_value=0, max_value=8 * max_size + 64)
    kinds: list[type[Step]] = [Publish, Advance, Read, Stall, Drain]
    if sends:
        kinds.append(Send)
    if hangups:
        kinds.append(Hangup)
    if reconnects:
        kinds.append(Reconnect)
    if set_policies is not None:
        kinds.append(SetPolicy)
    kind_of = st.sampled_from(kinds)

    @st.composite
    def step(draw: st.DrawFn) -> Step:
        kind = draw(kind_of)
        if kind is Publish:
            return Publish(
                draw(bursts),
                draw(sizes),
                draw(key_sets),
                None if topic_names is None else draw(topic_names),
                False if binaries is None else draw(binaries),
                False if losslesses is None else draw(losslesses),
            )
        if kind is Advance:
            return Advance(draw(seconds))
        if kind is Read:
            return Read(draw(rates), 0 if one_client else draw(client))
        if kind is Drain:
            return Drain(draw(drains), 0 if one_client else draw(client))
        if kind is Send:
            return Send(0 if one_client else draw(client), draw(sizes))
        if kind is SetPolicy:
            assert set_policies is not None
            return SetPolicy(draw(set_policies), 0 if one_client else draw(client))
        index = 0 if one_client else draw(client)
        if kind is Reconnect:
            return Reconnect(index)
        return Stall(index) if kind is Stall else Hangup(index)

    return step()


_RUN = 8
"""The most steps in one run of a schedule (see ``schedules``)."""

_KEY_SETS = 1000
"""Up to this many ordered key sets are drawn as one choice from a table."""


def _key_sets(keys: tuple[str, ...]) -> st.SearchStrategy[tuple[str, ...]]:
    """Up to 3 distinct keys in order (publish assigns them round-robin), none first."""
    if not keys:
        return st.just(())
    table = [combo for size in range(4) for combo in itertools.permutations(keys, size)]
    if len(table) <= _KEY_SETS:
        return st.sampled_from(table)
    return st.lists(st.sampled_from(keys), max_size=3, unique=True).map(tuple)


def _clients(topics: Sequence[str]) -> st.SearchStrategy[Client]:
    subscriptions: st.SearchStrategy[list[str] | None] = (
        st.none() | st.lists(st.sampled_from(tuple(topics)), unique=True) if topics else st.none()
    )
    return st.one_of(
        [
            st.tuples(
                st.just(high),
                st.sampled_from((high // 4, 0, high)),
                st.sampled_from(_RATES),
                subscriptions,
                st.sampled_from(_LOWATS),
                st.booleans(),  # acknowledges, when its policy has it asked
            ).map(lambda args: Client(*args))
            for high in _HIGHS
        ]
    )


def schedules(
    *,
    max_steps: int = 40,
    clients: int = 1,
    keys: Sequence[str] = ("a", "b", "c"),
    topics: Sequence[str] = (),
    max_burst: int = 30,
    max_size: int = 256,
    max_advance: float = 60.0,
    binary: bool = True,
    sends: bool = True,
    hangups: bool = True,
    reconnects: bool = False,
    lossless: bool = True,
    set_policies: st.SearchStrategy[Policy] | None = None,
) -> st.SearchStrategy[Schedule]:
    """Schedules of up to ``max_steps`` steps for 1 to ``clients`` clients.

    Publish bursts of up to ``max_burst`` messages of up to ``max_size`` bytes, keyed
    from ``keys``, under a topic from ``topics`` (or none), text or (with ``binary``)
    binary, and (with ``lossless``) some bursts lossless; time passing up to
    ``max_advance`` seconds a step; clients reading at various rates, stalling,
    reading in chunks, receiving ``subscriber.send()`` messages (``sends``), vanishing
    (``hangups``, about one client in five), with ``reconnects`` reconnecting to resume
    (run them with a ``history``), and, given ``set_policies``, having their policy
    replaced by one drawn from it. Each client gets its own write-buffer watermarks,
    starting read rate and, with ``topics``, subscription.
    """
    if max_steps < 0:
        raise ValueError(f"max_steps={max_steps!r} must be >= 0")
    if clients < 1:
        raise ValueError(f"clients={clients!r} must be >= 1")
    # Built once here, not per example: building strategies is not free.
    step_for = {
        count: steps(
            clients=count,
            keys=keys,
            topics=topics,
            max_burst=max_burst,
            max_size=max_size,
            max_advance=max_advance,
            binary=binary,
            sends=sends,
            hangups=False,
            reconnects=reconnects,
            lossless=lossless,
            set_policies=set_policies,
        )
        for count in range(1, clients + 1)
    }
    client = _clients(topics)
    counts = st.integers(min_value=1, max_value=clients)
    # Steps come in runs of 1 to _RUN, up to max_steps / 5 runs: a list of short lists
    # rather than one list of a drawn length. Hypothesis' lists are short on average, and
    # a schedule needs enough steps to reach bounds (about 16 here on average); and any
    # step or run of steps can be deleted alone, which is what shrinking tries first. A
    # drawn length made every deletion shift the rest of the schedule, and a failure
    # took minutes to shrink instead of about a second.
    runs = {
        count: st.lists(st.lists(strategy, min_size=1, max_size=_RUN), max_size=-(-max_steps // 5))
        for count, strategy in step_for.items()
    }
    hangup_odds = st.integers(min_value=0, max_value=4)
    # Half the runs start the clock where production clocks are (loop.time() counts from
    # boot): float rounding there differs from rounding near zero.
    starts = st.sampled_from((0.0, 1e6))

    @st.composite
    def draw_schedule(draw: st.DrawFn) -> Schedule:
        count = draw(counts)
        specs = [draw(client) for _ in range(count)]
        drawn = [step for run in draw(runs[count]) for step in run][:max_steps]
        if hangups:
            # At most one hangup per client, for about one client in five: a client that
            # vanished tells nothing more, so it should not happen in most schedules.
            for index in range(count):
                if draw(hangup_odds) == 4:
                    at = draw(st.integers(min_value=0, max_value=len(drawn)))
                    drawn.insert(at, Hangup(client=index))
        return Schedule(steps=drawn, clients=specs, start=draw(starts))

    return draw_schedule()


# -- policies ------------------------------------------------------------------------------


def _bound(maximum: int) -> st.SearchStrategy[int | None]:
    return st.none() | st.integers(min_value=1, max_value=maximum)


def _overflow(max_messages: int, max_bytes: int) -> st.SearchStrategy[Policy]:
    return st.one_of(
        st.builds(DropOldest, max_messages=_bound(max_messages), max_bytes=_bound(max_bytes)),
        st.builds(DropNewest, max_messages=_bound(max_messages), max_bytes=_bound(max_bytes)),
    )


def _arrival(max_messages: int, max_bytes: int) -> st.SearchStrategy[Policy]:
    return st.one_of(
        st.just(SkipToLatest()),
        st.builds(
            ConflateByKey,
            max_messages=_bound(max_messages),
            max_bytes=_bound(max_bytes),
            reduce=st.none() | st.sampled_from(sorted(REDUCERS)),
        ),
    )


def _batch(max_messages: int, max_bytes: int) -> st.SearchStrategy[Policy]:
    return st.one_of(
        st.builds(
            Batch,
            max_messages=st.integers(min_value=1, max_value=min(32, max_messages)),
            max_bytes=_bound(max_bytes),
            max_delay=st.sampled_from((0.0, 0.01, 0.1, 1.0)),
            combine=st.sampled_from(("lines", "json-array")),
        ),
        _adaptive(max_bytes),
    )


@st.composite
def _adaptive(draw: st.DrawFn, max_bytes: int) -> Policy:
    largest = draw(st.integers(min_value=16, max_value=max(16, max_bytes)))
    return Adaptive(
        interval=draw(st.sampled_from((0.01, 0.05, 0.25))),
        max_bytes=largest,
        min_bytes=draw(st.integers(min_value=1, max_value=largest)),
        combine=draw(st.sampled_from(("lines", "json-array"))),
        hold=draw(st.sampled_from((0.1, 1.0, 5.0))),
        probe=draw(st.none() | st.sampled_from((0.5, 10.0))),
        announce=draw(st.booleans()),
    )


# Thresholds as (field, up, down, rising): the way back lower than the way up (or, for a
# rate, higher), as a user writes hysteresis.
_THRESHOLDS: tuple[tuple[str, float, float, bool], ...] = (
    ("queued_messages", 4, 1, True),
    ("queued_messages", 16, 4, True),
    ("queued_bytes", 512, 64, True),
    ("lag", 0.1, 0.01, True),
    ("lag", 1.0, 0.25, True),
    ("write_buffer", 256, 32, True),
    ("drain_rate", 500.0, 2000.0, False),
)


@st.composite
def _thresholds(draw: st.DrawFn) -> tuple[Condition, Condition | None]:
    field, up, down, rising = draw(st.sampled_from(_THRESHOLDS))
    first: Condition = Above(field, up) if rising else Below(field, up)
    back: Condition = Below(field, down) if rising else Above(field, down)
    return first, draw(st.just(back) | st.none())


@st.composite
def _escalate(draw: st.DrawFn, max_messages: int, max_bytes: int) -> Policy:
    stages = st.one_of(
        st.none(),
        _overflow(max_messages, max_bytes),
        _arrival(max_messages, max_bytes),
        _throttle(),
        _disconnect(max_messages, max_bytes),
    )
    levels = [Level(draw(stages))]
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        up, down = draw(_thresholds())
        levels.append(Level(draw(stages), up=up, down=down))
    return Escalate(
        levels=levels,
        hold=draw(st.sampled_from((0.01, 0.25, 1.0, 5.0))),
        announce=draw(st.booleans()),
    )


def _throttle() -> st.SearchStrategy[Policy]:
    rates = st.sampled_from((1.0, 10.0, 100.0)) | st.floats(min_value=0.5, max_value=1000.0)
    return st.builds(Throttle, rate=rates)


@st.composite
def _disconnect(draw: st.DrawFn, max_messages: int, max_bytes: int) -> Policy:
    max_lag = draw(st.none() | st.sampled_from((0.1, 1.0, 5.0, 30.0)))
    messages = draw(_bound(max_messages))
    size = draw(_bound(max_bytes))
    buffer = draw(_bound(max_bytes))
    if (max_lag, messages, size, buffer) == (None, None, None, None):
        max_lag = 5.0
    grace = draw(st.sampled_from((0.0, 0.5, 2.0)))
    return Disconnect(
        max_messages=messages, max_bytes=size, max_lag=max_lag, max_buffer=buffer, grace=grace
    )


def _notify() -> st.SearchStrategy[Policy]:
    return st.sampled_from((Notify(), Notify(format="json-binary")))


def policies(
    *,
    max_messages: int = 64,
    max_bytes: int = 4096,
    compose: bool = True,
) -> st.SearchStrategy[Policy]:
    """Built-in policies with drawn parameters and, with ``compose``, compositions of them
    that do not conflict: at most one stage per slot (overflow, arrival, batching or
    ``Adaptive``, gap notices), plus optionally ``Throttle``, ``Disconnect`` and an
    ``Escalate`` ladder of up to four levels, in any order. Bounds go up to
    ``max_messages`` and ``max_bytes`` so schedules reach them."""
    groups = [
        _overflow(max_messages, max_bytes),
        _arrival(max_messages, max_bytes),
        _batch(max_messages, max_bytes),
        _throttle(),
        _disconnect(max_messages, max_bytes),
        _escalate(max_messages, max_bytes),
        _notify(),
    ]
    single = st.one_of(groups)
    if not compose:
        return single

    @st.composite
    def composed(draw: st.DrawFn) -> Policy:
        chosen = draw(
            st.lists(st.sampled_from(range(len(groups))), min_size=1, max_size=4, unique=True)
        )
        stages = [draw(groups[index]) for index in chosen]
        policy = stages[0]
        for stage in stages[1:]:
            try:
                policy = policy | stage
            except PolicyConflictError:  # a level claims a slot another stage claims
                continue
        return policy

    return st.one_of(single, composed())


publish_names("wsfanout.testing", globals(), __all__)
