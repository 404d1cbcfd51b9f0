"""wsfanout.testing's public API is its flat __all__, and every name in it exists."""

import wsfanout.testing


def test_every_name_in_all_is_importable() -> None:
    for name in wsfanout.testing.__all__:
        assert getattr(wsfanout.testing, name) is not None, name


def test_all_has_no_duplicates() -> None:
    assert len(set(wsfanout.testing.__all__)) == len(wsfanout.testing.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    assert not hasattr(wsfanout.testing, "no_such_name")
