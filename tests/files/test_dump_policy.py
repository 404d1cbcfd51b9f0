"""A dumped policy reloads to an equal policy; what a file cannot hold is refused clearly."""

import functools
import operator
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from wsfanout import Decision, Policy, PolicyConflictError, PolicyError, Snapshot
from wsfanout.files import dump_policy, parse_policy
from wsfanout.policies import (
    Batch,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    SkipToLatest,
    Throttle,
)

sizes = st.integers(min_value=1, max_value=2**40)
optional_sizes = st.none() | sizes
durations = st.floats(min_value=0, max_value=1e7, allow_nan=False) | st.sampled_from(
    [0.0, 0.05, 0.25, 1.0, 5.0, 60.0, 90.0, 3600.0]
)
codes = st.sampled_from([1000, 1001, 1008, 1011, 1013, 1014]) | st.integers(3000, 4999)
reasons = st.text(max_size=40).filter(lambda r: len(r.encode()) <= 123)


@st.composite
def disconnects(draw: st.DrawFn) -> Disconnect:
    thresholds: dict[str, Any] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "max_messages": sizes,
                "max_bytes": sizes,
                "max_lag": durations,
                "max_buffer": sizes,
            },
        ).filter(bool)
    )
    return Disconnect(**thresholds, grace=draw(durations), code=draw(codes), reason=draw(reasons))


stages: st.SearchStrategy[Policy] = st.one_of(
    st.builds(DropOldest, max_messages=optional_sizes, max_bytes=optional_sizes),
    st.builds(DropNewest, max_messages=optional_sizes, max_bytes=optional_sizes),
    st.just(SkipToLatest()),
    st.builds(ConflateByKey, max_messages=optional_sizes, max_bytes=optional_sizes),
    st.builds(
        Batch,
        max_messages=sizes,
        max_bytes=optional_sizes,
        max_delay=durations,
        combine=st.sampled_from(["lines", "json-array"]),
    ),
    st.builds(Throttle, rate=st.floats(min_value=1e-6, max_value=1e9) | st.integers(1, 1000)),
    disconnects(),
)


def compose(parts: Sequence[Policy]) -> Policy:
    try:
        return functools.reduce(operator.or_, parts)
    except PolicyConflictError:
        assume(False)
        raise


@given(st.lists(stages, min_size=1, max_size=4), reasons)
def test_a_dumped_policy_reloads_to_an_equal_policy(parts: list[Policy], description: str) -> None:
    policy = compose(parts)
    text = dump_policy(policy, description=description)
    assert parse_policy(text) == policy


def test_a_dump_writes_only_what_differs_from_the_defaults_in_readable_units() -> None:
    policy = DropOldest(max_messages=256, max_bytes=65536) | Disconnect(max_lag=5.0, grace=0.25)
    assert dump_policy(policy, description='Say "hi"\n') == (
        'description = "Say \\"hi\\"\\n"\n'
        "\n"
        "[[stage]]\n"
        'kind = "drop-oldest"\n'
        "max_messages = 256\n"
        'max_bytes = "64KiB"\n'
        "\n"
        "[[stage]]\n"
        'kind = "disconnect"\n'
        'max_lag = "5s"\n'
        'grace = "250ms"\n'
    )


def test_a_dumped_description_with_control_characters_is_valid_toml() -> None:
    text = dump_policy(SkipToLatest(), description="tab\there, delete\x7f, bell\x07")
    assert parse_policy(text) == SkipToLatest()


def test_a_callable_combine_cannot_be_dumped() -> None:
    def pipes(payloads: Sequence[bytes]) -> bytes:
        return b"|".join(payloads)

    with pytest.raises(
        PolicyError,
        match=r"^combine=<function .*pipes at 0x[0-9a-f]+> is a function, which a policy file "
        r'cannot hold \(expected one of "json-array", "lines"\)$',
    ):
        dump_policy(Batch(combine=pipes) | DropOldest())


def test_a_custom_stage_cannot_be_dumped() -> None:
    def never(snapshot: Snapshot) -> Decision:
        return Decision()

    with pytest.raises(
        PolicyError,
        match=r"^as_policy\(.*never\) is not a built-in stage, so a policy file cannot declare "
        r"it \(expected one of DropOldest, DropNewest, SkipToLatest, ConflateByKey, Batch, "
        r"Throttle, Disconnect, Escalate, Adaptive, Notify\)$",
    ):
        dump_policy(DropOldest() | never)
