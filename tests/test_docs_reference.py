"""docs/reference.md documents every public name, its members and its parameters.

Each name of the ``__all__`` of every face (``wsfanout``, ``wsfanout.policies``,
``wsfanout.files``, ``wsfanout.lowlevel``, ``wsfanout.backplane``,
``wsfanout.exceptions``, ``wsfanout.client``) needs a heading whose first code span is the name;
``wsfanout.testing`` is documented in docs/how-to/property-test.md. Its section (down
to the next heading of the same or a higher level) must mention, in a code span, every
public member a class defines and every parameter of every public callable.
"""

from __future__ import annotations

import enum
import inspect
import re
import typing
from collections.abc import Iterator
from pathlib import Path

import attrs

import wsfanout
import wsfanout.backplane
import wsfanout.client
import wsfanout.exceptions
import wsfanout.files
import wsfanout.lowlevel
import wsfanout.metrics
import wsfanout.policies

FACES = (
    wsfanout,
    wsfanout.policies,
    wsfanout.files,
    wsfanout.lowlevel,
    wsfanout.backplane,
    wsfanout.exceptions,
    wsfanout.client,
    wsfanout.metrics,
)

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference.md"

HEADING = re.compile(r"^(#{1,6}) `([A-Za-z_][\w.]*)", re.MULTILINE)
ANY_HEADING = re.compile(r"^(#{1,6}) ", re.MULTILINE)

NOT_CONSTRUCTED = {"Subscriber", "Backplane", "Inbound", "HubMonitor"}
"""Classes users never construct: their constructor parameters are not documented."""


def public_names() -> Iterator[tuple[str, object]]:
    for module in FACES:
        for name in module.__all__:
            yield name, getattr(module, name)


def section(text: str, name: str) -> str | None:
    """The text under the heading that documents ``name``, or None."""
    for match in HEADING.finditer(text):
        if match.group(2) != name:
            continue
        level = len(match.group(1))
        end = len(text)
        for following in ANY_HEADING.finditer(text, match.end()):
            if len(following.group(1)) <= level:
                end = following.start()
                break
        return text[match.start() : end]
    return None


def members(cls: type) -> list[str]:
    """Public attributes a class adds to its public wsfanout bases."""
    if issubclass(cls, BaseException):
        return []
    if issubclass(cls, enum.Enum):
        return [member.name for member in cls]
    inherited = {
        name
        for base in cls.__mro__[1:]
        if base.__module__.startswith("wsfanout")
        and any(base.__name__ in module.__all__ for module in FACES)
        for name in vars(base)
    }
    found = [name for name in vars(cls) if not name.startswith("_") and name not in inherited]
    if attrs.has(cls):
        found += [field.name for field in attrs.fields(cls) if not field.name.startswith("_")]
        found = [name for name in found if name not in inherited]
    return sorted(set(found))


def parameters(function: object) -> list[str]:
    if typing.get_origin(function) is not None:
        # A type alias (``Handler = Callable[...]``): Python 3.13 gives it the signature
        # (*args, **kwargs), which are no parameters of wsfanout's.
        return []
    try:
        signature = inspect.signature(function)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return []
    return [name for name in signature.parameters if name != "self"]


def mentioned(text: str, word: str) -> bool:
    return re.search(rf"`([\w.]*\.)?{re.escape(word)}\b", text) is not None


def missing(text: str) -> list[str]:
    """Everything public that ``text`` fails to document, as readable strings."""
    problems = []
    for name, value in public_names():
        body = section(text, name)
        if body is None:
            problems.append(f"{name}: no heading")
            continue
        wanted: list[str] = []
        if inspect.isclass(value):
            wanted += members(value)
            if name not in NOT_CONSTRUCTED and not issubclass(value, (enum.Enum, BaseException)):
                wanted += parameters(value)
            for member in members(value):
                wanted += parameters(getattr(value, member))
        elif callable(value):
            wanted += parameters(value)
        problems += [
            f"{name}: {word} not mentioned" for word in wanted if not mentioned(body, word)
        ]
    return problems


def test_reference_documents_every_public_name_member_and_parameter() -> None:
    assert missing(REFERENCE.read_text(encoding="utf-8")) == []


def test_checker_reports_a_public_name_without_a_heading() -> None:
    text = REFERENCE.read_text(encoding="utf-8").replace("### `Throttle`", "### Throttle")
    assert "Throttle: no heading" in missing(text)


def test_checker_reports_an_undocumented_parameter() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    publish = section(text, "Hub.publish")
    assert publish is not None
    text = text.replace(publish, publish.replace("`key`", "key").replace("key=None", ""))
    assert missing(text) == ["Hub: key not mentioned"]


def test_checker_reports_an_undocumented_member() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    text = re.sub(r"`(Subscriber\.)?unsubscribe\b", "`gone", text)
    assert "Subscriber: unsubscribe not mentioned" in missing(text)
