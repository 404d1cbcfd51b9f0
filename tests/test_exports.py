"""The public faces export exactly their public names, and name themselves.

- Each face's ``__all__`` is exactly the public names it defines or imports.
- Every wsfanout type that appears in a public signature (parameters, returns,
  attributes of public classes) is exported by some face.
- Public classes and functions report a face that exports them as their
  ``__module__`` (``wsfanout.Hub.__module__ == "wsfanout"``), so reprs, tracebacks
  and pickles name what users import.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import sys
import types
import typing
from collections.abc import Iterator

import attrs
import pytest

import wsfanout
from wsfanout import Hub
from wsfanout.policies import Disconnect, DropOldest

FACES = (
    "wsfanout",
    "wsfanout.policies",
    "wsfanout.files",
    "wsfanout.lowlevel",
    "wsfanout.backplane",
    "wsfanout.exceptions",
    "wsfanout.client",
    "wsfanout.metrics",
    "wsfanout.testing",
    "wsfanout.client",
)

NOT_CONSTRUCTED = {"Subscriber", "HubMonitor"}
"""Classes users never construct: their constructor is not part of the API."""


def face(name: str) -> types.ModuleType:
    return importlib.import_module(name)


def exports(module: types.ModuleType) -> dict[str, object]:
    return {name: getattr(module, name) for name in module.__all__}


def exporters(extra: tuple[str, ...] = ()) -> dict[int, set[str]]:
    """For each exported object (by id), the faces that export it."""
    found: dict[int, set[str]] = {}
    for name in dict.fromkeys(FACES + extra):
        for value in exports(face(name)).values():
            found.setdefault(id(value), set()).add(name)
    return found


def public_names(module: types.ModuleType) -> set[str]:
    """What a face offers: its names that are neither private nor modules."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    } - {"annotations", "TYPE_CHECKING", "Any"}


def namespace() -> dict[str, object]:
    """Every name of every wsfanout module, to resolve string annotations with (names
    imported only for type checking included, as the classes they stand for)."""
    names: dict[str, object] = {}
    for module_name, module in list(sys.modules.items()):
        if module_name.split(".")[0] == "wsfanout" and module is not None:
            for key, value in vars(module).items():
                names.setdefault(key, value)
    return names


def hints(function: object, names: dict[str, object]) -> dict[str, object]:
    try:
        return typing.get_type_hints(function, globalns=names, localns=names)
    except (NameError, TypeError) as error:
        raise AssertionError(f"cannot resolve the annotations of {function!r}: {error}") from error


def classes_in(hint: object) -> Iterator[type]:
    if isinstance(hint, type):
        yield hint
    for argument in typing.get_args(hint):
        yield from classes_in(argument)


def signatures(value: object) -> Iterator[tuple[str, object]]:
    """The callables and annotated classes whose types a public name shows."""
    if inspect.isclass(value):
        if value.__name__ not in NOT_CONSTRUCTED and not issubclass(value, enum.Enum):
            init = value.__init__
            if attrs.has(value):
                yield f"{value.__name__} fields", value
            elif init is not object.__init__:
                yield f"{value.__name__}.__init__", init
        for member, attribute in vars(value).items():
            if member.startswith("_"):
                continue
            if isinstance(attribute, property) and attribute.fget is not None:
                yield f"{value.__name__}.{member}", attribute.fget
            elif isinstance(attribute, (staticmethod, classmethod)):
                yield f"{value.__name__}.{member}", attribute.__func__
            elif inspect.isfunction(attribute):
                yield f"{value.__name__}.{member}", attribute
    elif inspect.isfunction(value):
        yield value.__name__, value


def private_types_in_signatures(module_names: tuple[str, ...]) -> list[str]:
    public = exporters()
    names = namespace()
    problems = []
    for module_name in module_names:
        for name, value in exports(face(module_name)).items():
            for where, target in signatures(value):
                for hint in hints(target, names).values():
                    for cls in classes_in(hint):
                        if cls.__module__.split(".")[0] == "wsfanout" and id(cls) not in public:
                            problems.append(f"{module_name}.{name}: {where} shows {cls!r}")
    return sorted(set(problems))


def misnamed(module_names: tuple[str, ...]) -> list[str]:
    public = exporters(module_names)
    problems = []
    for module_name in module_names:
        for name, value in exports(face(module_name)).items():
            if not (inspect.isclass(value) or inspect.isfunction(value)):
                continue
            if value.__module__ not in public[id(value)]:
                problems.append(f"{module_name}.{name}.__module__ == {value.__module__!r}")
    return problems


@pytest.mark.parametrize("name", FACES)
def test_all_is_exactly_the_public_names_of_the_face(name: str) -> None:
    module = face(name)
    assert len(set(module.__all__)) == len(module.__all__), "a name is listed twice"
    lazy = {"schedules", "steps", "policies"} if name == "wsfanout.testing" else set()
    assert set(module.__all__) - lazy == public_names(module)
    for listed in module.__all__:
        assert hasattr(module, listed), listed


def test_every_wsfanout_type_in_a_public_signature_is_exported() -> None:
    assert private_types_in_signatures(FACES) == []


def test_public_classes_and_functions_name_the_face_that_exports_them() -> None:
    assert wsfanout.Hub.__module__ == "wsfanout"
    assert DropOldest.__module__ == "wsfanout.policies"
    assert misnamed(FACES) == []


def test_the_checkers_catch_a_stray_name_a_private_type_and_a_wrong_module() -> None:
    fake = types.ModuleType("wsfanout_fake_face")

    class _Hidden:
        pass

    def leaky(value: object) -> None:
        pass

    leaky.__annotations__ = {"value": _Hidden, "return": None}  # a type no face exports
    _Hidden.__module__ = "wsfanout._core.hidden"
    leaky.__module__ = "wsfanout._core.hidden"
    fake.__dict__.update(leaky=leaky, stray=1, _private=2)
    fake.__all__ = ["leaky"]  # type: ignore[attr-defined]
    sys.modules["wsfanout_fake_face"] = fake
    try:
        assert public_names(fake) - set(fake.__all__) == {"stray"}
        assert private_types_in_signatures(("wsfanout_fake_face",)) == [
            f"wsfanout_fake_face.leaky: leaky shows {_Hidden!r}"
        ]
        assert misnamed(("wsfanout_fake_face",)) == [
            "wsfanout_fake_face.leaky.__module__ == 'wsfanout._core.hidden'"
        ]
    finally:
        del sys.modules["wsfanout_fake_face"]


def test_the_issue_example_names_exist() -> None:
    policy = DropOldest(max_messages=256) | Disconnect(max_lag=5.0)
    assert repr(policy) == "DropOldest(max_messages=256) | Disconnect(max_lag=5.0)"
    assert callable(Hub().publish)
