"""Errors say ``name=value`` and the constraint, and carry the parameter and the value."""

from __future__ import annotations

import math

import pytest

from wsfanout import Hub
from wsfanout.exceptions import (
    ConfigError,
    PolicyConflictError,
    PolicyError,
    PolicyFileError,
    WsfanoutError,
)
from wsfanout.files import parse_policy
from wsfanout.policies import DropNewest, DropOldest


def test_every_configuration_error_is_a_value_error_and_a_wsfanout_error() -> None:
    for cls in (ConfigError, PolicyError, PolicyConflictError, PolicyFileError):
        assert issubclass(cls, ValueError)
        assert issubclass(cls, WsfanoutError)
    assert issubclass(PolicyError, ConfigError)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, r"^close_timeout=0 must be a finite number of seconds > 0$"),
        (-1.5, r"^close_timeout=-1\.5 must be a finite number of seconds > 0$"),
        (math.inf, r"^close_timeout=inf must be a finite number of seconds > 0$"),
        (math.nan, r"^close_timeout=nan must be a finite number of seconds > 0$"),
        (True, r"^close_timeout=True must be a number of seconds$"),
        ("5", r"^close_timeout='5' must be a number of seconds$"),
    ],
)
def test_a_hub_refuses_a_close_timeout_it_could_wait_on_forever(
    value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as refused:
        Hub(close_timeout=value)  # type: ignore[arg-type]
    assert refused.value.name == "close_timeout"
    assert refused.value.value is value
    assert not isinstance(refused.value, PolicyError), "a hub's timeout is not a policy"


async def test_a_bad_close_code_for_aclose_is_a_config_error_not_a_policy_error() -> None:
    hub = Hub()
    with pytest.raises(ConfigError, match=r"^code=99 is not a close code") as refused:
        await hub.aclose(code=99)
    assert (refused.value.name, refused.value.value) == ("code", 99)
    assert not isinstance(refused.value, PolicyError)


def test_a_policy_error_carries_the_parameter_and_the_value() -> None:
    with pytest.raises(PolicyError, match=r"^max_messages=0 must be >= 1$") as refused:
        DropOldest(max_messages=0)
    assert (refused.value.name, refused.value.value) == ("max_messages", 0)


def test_a_conflict_carries_both_stages_and_the_slot_they_claim() -> None:
    first, second = DropOldest(max_messages=3), DropNewest(max_messages=3)
    with pytest.raises(PolicyConflictError) as refused:
        first | second
    assert refused.value.stages == (first, second)
    assert refused.value.slot == "overflow"


def test_a_file_error_names_the_key_path_as_its_name() -> None:
    text = '[[stage]]\nkind = "drop-oldest"\nmax_messages = 0\n'
    with pytest.raises(PolicyFileError) as refused:
        parse_policy(text, filename="bad.toml")
    assert refused.value.key == refused.value.name == "stage[0].max_messages"
    assert refused.value.filename == "bad.toml"
