"""The walkthrough in docs/how-to/property-test.md runs as written, failure included."""

import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import Phase, settings

from wsfanout.testing import GuaranteeViolation, MaxDrops

PAGE = Path(__file__).parents[2] / "docs" / "how-to" / "property-test.md"
FIND = settings(max_examples=500, derandomize=True, database=None, phases=[Phase.generate])


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.DOTALL)


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
        if search_only:  # finding the failure is the point; shrinking it takes long
            test = FIND(test)
        test()  # type: ignore[operator]


def test_the_walkthrough_policy_keeps_its_promises(myapp: types.ModuleType) -> None:
    policy_source, tests_source, _ = _python_blocks()
    policies = _load_policies(policy_source, myapp)
    assert policies.DropBudget().guarantees() == (MaxDrops(count=2, window=10.0),)
    _run_tests(tests_source)


def test_the_walkthrough_failure_is_found_and_explored(myapp: types.ModuleType) -> None:
    policy_source, tests_source, explore_source = _python_blocks()
    # The mistake the page describes: forgetting to be asked whenever something queues.
    forgetful = policy_source.replace("recheck_messages=1, ", "")
    assert forgetful != policy_source
    _load_policies(forgetful, myapp)
    with pytest.raises(GuaranteeViolation) as info:
        _run_tests(tests_source, search_only=True)
    error = info.value
    assert [violation.guarantee for violation in error.violations] == [MaxDrops(2, 10.0)]
    assert "from myapp.policies import DropBudget" in str(error)
    namespace = {
        "DropOldest": __import__("wsfanout.policies").policies.DropOldest,
        "DropBudget": sys.modules["myapp.policies"].DropBudget,
        "schedule": error.schedule,
    }
    exec(explore_source, namespace)
    client = namespace["client"]
    assert client.closing is not None
