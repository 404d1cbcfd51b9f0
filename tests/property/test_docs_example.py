"""The walkthrough in docs/how-to/property-test.md runs as written: the first version
of the policy fails as shown, the fix passes, and the resume example holds."""

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import Phase, settings

from wsfanout.policies import DropOldest
from wsfanout.testing import GuaranteeViolation, MaxDrops

PAGE = Path(__file__).parents[2] / "docs" / "how-to" / "property-test.md"
FIND = settings(max_examples=500, derandomize=True, database=None, phases=[Phase.generate])
"""Finding the failure is the point here; shrinking it again would only take time."""


def _blocks(language: str) -> list[str]:
    text = PAGE.read_text(encoding="utf-8")
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)


@pytest.fixture
def myapp() -> Iterator[types.ModuleType]:
    """An empty ``myapp`` package, as the page's imports expect."""
    package = types.ModuleType("myapp")
    package.__path__ = []
    sys.modules["myapp"] = package
    try:
        yield package
    finally:
        sys.modules.pop("myapp", None)
        sys.modules.pop("myapp.policies", None)


def _load_policies(source: str, package: types.ModuleType) -> types.ModuleType:
    module = types.ModuleType("myapp.policies")
    sys.modules["myapp.policies"] = module
    package.policies = module  # type: ignore[attr-defined]
    exec(compile(source, "myapp/policies.py", "exec"), module.__dict__)
    return module


def _run_tests(source: str, *, search_only: bool = False) -> None:
    namespace: dict[str, object] = {}
    exec(compile(source, "tests/test_policies.py", "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert len(tests) == 2
    for test in tests:
        test = FIND(test) if search_only else test
        test()  # type: ignore[operator]


def _fixed(first_version: str, fix: str) -> str:
    """The policy with the return statement replaced by the page's fix."""
    start = first_version.index("        return Decision(\n            # Ask again")
    end = first_version.index("        )\n", start) + len("        )\n")
    return first_version[:start] + fix + first_version[end:]


def test_the_first_version_fails_as_the_page_shows(myapp: types.ModuleType) -> None:
    first_version, tests, explore, _fix, _resume = _blocks("python")
    policies = _load_policies(first_version, myapp)
    assert policies.DisconnectAfterDrops().guarantees() == (MaxDrops(count=2, window=10.0),)
    with pytest.raises(GuaranteeViolation) as info:
        _run_tests(tests, search_only=True)
    assert [v.guarantee for v in info.value.violations] == [MaxDrops(2, 10.0)]

    # The failure printed on the page is what its reproduction code raises today.
    (shown,) = _blocks("text")
    header, reproduction = shown.split("\nTo reproduce:\n\n")
    with pytest.raises(GuaranteeViolation) as again:
        exec(reproduction, {})
    assert str(again.value).startswith(header.removeprefix("GuaranteeViolation: "))

    namespace: dict[str, Any] = {
        "DropOldest": DropOldest,
        "DisconnectAfterDrops": policies.DisconnectAfterDrops,
    }
    exec(explore, namespace)
    client = namespace["client"]
    assert client.samples[-1].stats.dropped_oldest == 3
    assert client.closing.step == 2  # closed after the burst, too late


def test_the_fixed_version_keeps_its_promises(myapp: types.ModuleType) -> None:
    first_version, tests, _explore, fix, _resume = _blocks("python")
    policies = _load_policies(_fixed(first_version, fix), myapp)
    assert "recheck_messages=1," in _fixed(first_version, fix)
    _run_tests(tests)
    assert policies.DisconnectAfterDrops().guarantees() == (MaxDrops(count=2, window=10.0),)


def test_the_resume_example_holds_as_written() -> None:
    *_, resume = _blocks("python")
    namespace: dict[str, Any] = {}
    exec(compile(resume, "property-test.md, History and resuming", "exec"), namespace)
    assert [p.offset for p in namespace["again"].since] == [3]
