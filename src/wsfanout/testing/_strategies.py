"""hypothesis strategies: schedules to run a policy through, and policies to run.

Steps are drawn from a ``one_of`` that lists :class:`Publish` first and every number
has a small, simple minimum, so hypothesis shrinks a failing schedule toward few steps,
few and small messages, round times and a client that keeps up: the minimal
counterexample reads as a story.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from hypothesis import strategies as st

from .._core.builtins import (
    Batch,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    SkipToLatest,
    Throttle,
)
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
    Stall,
    Step,
)

__all__ = ["policies", "schedules", "steps"]

_SECONDS = (0.001, 0.01, 0.1, 0.25, 1.0, 5.0, 30.0)
_RATES = (math.inf, 10.0, 100.0, 1_000.0, 10_000.0)
_HIGHS = (1024, 0, 64, 256, 4096, 65536)


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
) -> st.SearchStrategy[Step]:
    """One schedule step: a publish burst, time passing, a client changing how it reads,
    reading some bytes, a ``subscriber.send()``, (with ``hangups``) a client vanishing,
    or (with ``reconnects``) a client reconnecting and resuming."""
    if clients < 1:
        raise ValueError(f"clients={clients!r} must be >= 1")
    if max_burst < 1:
        raise ValueError(f"max_burst={max_burst!r} must be >= 1")
    client = st.integers(min_value=0, max_value=clients - 1)
    sizes = st.integers(min_value=0, max_value=max_size)
    key_sets: st.SearchStrategy[tuple[str, ...]] = (
        st.lists(st.sampled_from(tuple(keys)), max_size=3, unique=True).map(tuple)
        if keys
        else st.just(())
    )
    # st.tuples(...).map(...) rather than st.builds, which inspects signatures per draw.
    publish = st.tuples(
        st.integers(min_value=1, max_value=max_burst),
        sizes,
        key_sets,
        st.sampled_from((None, *topics)),
        st.booleans() if binary else st.just(False),
    ).map(lambda args: Publish(*args))
    choices: list[st.SearchStrategy[Step]] = [
        publish,
        _seconds(max_advance).map(Advance),
        st.tuples(_rates(), client).map(lambda args: Read(*args)),
        client.map(Stall),
        st.tuples(st.integers(min_value=0, max_value=8 * max_size + 64), client).map(
            lambda args: Drain(*args)
        ),
    ]
    if sends:
        choices.append(st.tuples(client, sizes).map(lambda args: Send(*args)))
    if hangups:
        choices.append(client.map(Hangup))
    if reconnects:
        choices.append(client.map(Reconnect))
    return st.one_of(choices)


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
) -> st.SearchStrategy[Schedule]:
    """Schedules of up to ``max_steps`` steps for 1 to ``clients`` clients.

    Publish bursts of up to ``max_burst`` messages of up to ``max_size`` bytes, keyed
    from ``keys``, under a topic from ``topics`` (or none), text or (with ``binary``)
    binary; time passing up to ``max_advance`` seconds a step; clients reading at
    various rates, stalling, reading in chunks, receiving ``subscriber.send()``
    messages (``sends``), vanishing (``hangups``, about one client in five) and, with
    ``reconnects``, reconnecting to resume (run them with a ``history``). Each client
    gets its own write-buffer watermarks, starting read rate and, with ``topics``,
    subscription.
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
        )
        for count in range(1, clients + 1)
    }
    client = _clients(topics)
    counts = st.integers(min_value=1, max_value=clients)
    lengths = st.integers(min_value=0, max_value=max_steps)
    hangup_odds = st.integers(min_value=0, max_value=4)
    # Half the runs start the clock where production clocks are (loop.time() counts from
    # boot): float rounding there differs from rounding near zero.
    starts = st.sampled_from((0.0, 1e6))

    @st.composite
    def draw_schedule(draw: st.DrawFn) -> Schedule:
        count = draw(counts)
        specs = [draw(client) for _ in range(count)]
        # The length comes first: hypothesis' lists are short on average, and a schedule
        # needs enough steps to reach bounds; shrinking still brings the length down.
        length = draw(lengths)
        drawn = draw(st.lists(step_for[count], min_size=length, max_size=length))
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
        st.builds(ConflateByKey, max_messages=_bound(max_messages), max_bytes=_bound(max_bytes)),
    )


def _batch(max_messages: int, max_bytes: int) -> st.SearchStrategy[Policy]:
    return st.builds(
        Batch,
        max_messages=st.integers(min_value=1, max_value=min(32, max_messages)),
        max_bytes=_bound(max_bytes),
        max_delay=st.sampled_from((0.0, 0.01, 0.1, 1.0)),
        combine=st.sampled_from(("lines", "json-array")),
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


def policies(
    *,
    max_messages: int = 64,
    max_bytes: int = 4096,
    compose: bool = True,
) -> st.SearchStrategy[Policy]:
    """Built-in policies with drawn parameters and, with ``compose``, compositions of them
    that do not conflict: at most one stage per slot (overflow, arrival, batching), plus
    optionally ``Throttle`` and ``Disconnect``, in any order. Bounds go up to
    ``max_messages`` and ``max_bytes`` so schedules reach them."""
    groups = [
        _overflow(max_messages, max_bytes),
        _arrival(max_messages, max_bytes),
        _batch(max_messages, max_bytes),
        _throttle(),
        _disconnect(max_messages, max_bytes),
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
            policy = policy | stage
        return policy

    return st.one_of(single, composed())


publish_names("wsfanout.testing", globals(), __all__)
