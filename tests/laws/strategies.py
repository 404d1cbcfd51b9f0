"""Hypothesis strategies for the values the laws quantify over: decisions, policies, snapshots."""

from __future__ import annotations

import math

import attrs
from hypothesis import strategies as st

from wsfanout import NEUTRAL, Close, Decision, Policy, Snapshot
from wsfanout.policies import (
    Batch,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    SkipToLatest,
    Throttle,
)

SENDABLE_CODES = [1000, 1001, 1008, 1011, 1013, 3000, 4000, 4999]

closes = st.builds(
    Close,
    code=st.sampled_from(SENDABLE_CODES),
    reason=st.text(max_size=8),
    cause=st.text(max_size=8),
)

# Times as a policy produces them: finite, or +/-inf for "never"/"no hold". No NaN: a
# policy never computes one from a valid snapshot, and max/min are not lawful on it.
times = st.one_of(
    st.sampled_from([-math.inf, math.inf, 0.0, -0.0, 1.0]),
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
)
thresholds = st.one_of(st.just(math.inf), st.integers(min_value=0, max_value=10_000))

decisions = st.one_of(
    st.just(NEUTRAL),
    st.builds(
        Decision,
        close=st.none() | closes,
        send_at=times,
        recheck_at=times,
        recheck_messages=thresholds,
        recheck_bytes=thresholds,
        memo=st.none() | st.integers(),
    ),
)


def joined_fields(decision: Decision) -> Decision:
    """The fields :func:`join` combines; ``memo`` is kept per stage, never joined."""
    return attrs.evolve(decision, memo=None)


sizes = st.none() | st.integers(min_value=1, max_value=5000)
durations = st.floats(min_value=0.0, max_value=60.0, allow_nan=False, allow_infinity=False)


@st.composite
def disconnects(draw: st.DrawFn) -> Disconnect:
    max_messages = draw(st.none() | st.integers(min_value=1, max_value=5000))
    max_bytes = draw(st.none() | st.integers(min_value=1, max_value=1 << 20))
    max_buffer = draw(st.none() | st.integers(min_value=1, max_value=1 << 20))
    max_lag = draw(st.none() | durations)
    if (max_messages, max_bytes, max_buffer, max_lag) == (None, None, None, None):
        max_lag = draw(durations)  # Disconnect needs at least one threshold
    return Disconnect(
        max_messages=max_messages,
        max_bytes=max_bytes,
        max_lag=max_lag,
        max_buffer=max_buffer,
        grace=draw(st.sampled_from([0.0, 0.5, 2.0])),
        code=draw(st.sampled_from(SENDABLE_CODES)),
    )


policies: st.SearchStrategy[Policy] = st.one_of(
    st.builds(DropOldest, max_messages=sizes, max_bytes=sizes),
    st.builds(DropNewest, max_messages=sizes, max_bytes=sizes),
    st.just(SkipToLatest()),
    st.builds(ConflateByKey, max_messages=sizes, max_bytes=sizes),
    st.builds(
        Batch,
        max_messages=st.integers(min_value=1, max_value=64),
        max_bytes=sizes,
        max_delay=st.sampled_from([0.0, 0.01, 0.5]),
        combine=st.sampled_from(["lines", "json-array"]),
    ),
    st.builds(Throttle, rate=st.floats(min_value=0.01, max_value=1000.0)),
    disconnects(),
)
"""Every built-in, with parameters that validate."""


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    now = draw(st.floats(min_value=0.0, max_value=1e6, allow_nan=False))
    queued = draw(st.integers(min_value=0, max_value=6000))
    return Snapshot(
        now=now,
        queued_messages=queued,
        queued_bytes=draw(st.integers(min_value=0, max_value=2 << 20)) if queued else 0,
        lag=draw(st.floats(min_value=0.0, max_value=min(now, 120.0))) if queued else 0.0,
        write_buffer=draw(st.integers(min_value=0, max_value=2 << 20)),
        last_send=draw(st.none() | st.floats(min_value=0.0, max_value=now)),
        sent=draw(st.integers(min_value=0, max_value=10**6)),
        dropped=draw(st.integers(min_value=0, max_value=10**6)),
    )
