"""The public API is what __init__ exports, and every export exists."""

import wsfanout
import wsfanout.policies


def test_every_name_in_all_is_importable() -> None:
    for name in wsfanout.__all__:
        assert hasattr(wsfanout, name), name
    for name in wsfanout.policies.__all__:
        assert hasattr(wsfanout.policies, name), name


def test_all_has_no_duplicates() -> None:
    assert len(set(wsfanout.__all__)) == len(wsfanout.__all__)


def test_the_issue_example_names_exist() -> None:
    from wsfanout import Hub
    from wsfanout.policies import Disconnect, DropOldest

    policy = DropOldest(max_messages=256) | Disconnect(max_lag=5.0)
    assert repr(policy) == "DropOldest(max_messages=256) | Disconnect(max_lag=5.0)"
    assert callable(Hub().publish)
