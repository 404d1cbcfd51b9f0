"""Policies declared in TOML files: reading, validating, presets and writing back.

Theory of operation
-------------------
One file declares one named policy (the file's stem is its name): a ``description``
and one ``[[stage]]`` table per stage, in composition order::

    description = "Prices: only the newest quote per key matters."

    [[stage]]
    kind = "conflate-by-key"

    [[stage]]
    kind = "disconnect"
    max_lag = "5s"

Two tables drive everything. :data:`STAGE_KINDS` maps each ``kind`` to its built-in
class, whose constructor parameters are the keys a stage may have. ``_PARAMETERS`` maps
each parameter name to its value kind (a count, a size, a duration, ...), which reads
what people write (``"250ms"``, ``"64KiB"``) and writes it back. Loading builds the
stages with their constructors, so a loaded policy is equal to the one code would
build, and every validator of the built-ins applies; its errors are re-raised with the
file name and the key path. Stage indices in key paths count from 0, as
``policy.stages[i]`` does.

Presets are the files of the top-level ``policies/`` folder. The wheel carries a copy
as package data, ``wsfanout/presets/``; a source checkout (the editable install) has no
such folder inside the package and reads ``policies/`` directly.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import attrs

from ._policy import Policy, as_policy
from .exceptions import PolicyConflictError, PolicyError, PolicyFileError
from .policies import (
    COMBINERS,
    Batch,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    SkipToLatest,
    Throttle,
)

__all__ = [
    "STAGE_KINDS",
    "PolicyFile",
    "ValueKind",
    "dump_policy",
    "format_duration",
    "format_size",
    "load_policy",
    "load_policy_file",
    "parse_duration",
    "parse_policy",
    "parse_policy_file",
    "parse_size",
    "preset_names",
    "presets",
    "show_toml",
]

STAGE_KINDS: dict[str, type[Policy]] = {
    "drop-oldest": DropOldest,
    "drop-newest": DropNewest,
    "skip-to-latest": SkipToLatest,
    "conflate-by-key": ConflateByKey,
    "batch": Batch,
    "throttle": Throttle,
    "disconnect": Disconnect,
}
"""The stage kinds a policy file may name, and the built-in class each one builds."""

_KIND_OF: dict[type[Policy], str] = {cls: kind for kind, cls in STAGE_KINDS.items()}


# -- values as people write them ----------------------------------------------------


def show_toml(value: object) -> str:
    """``value`` as it would be written in TOML, for error messages and the dumper."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        # A JSON string is a TOML basic string (same escapes, \uXXXX included), except
        # that TOML also forbids a raw DEL.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {show_toml(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(show_toml(v) for v in value) + "]"
    return str(value)


_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_DURATION = re.compile(rf"^\s*{_NUMBER}\s*([a-z]+)\s*$")
_DURATION_UNITS = {
    "ms": Decimal("0.001"),
    "s": Decimal(1),
    "m": Decimal(60),
    "min": Decimal(60),
    "h": Decimal(3600),
}
_SIZE = re.compile(rf"^\s*{_NUMBER}\s*([a-z]*)\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}
_RATE = re.compile(rf"^\s*{_NUMBER}\s*/\s*([a-z]+)\s*$")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as ``"250ms"``, ``"5s"``, ``"1m"``, ``"2h"``.

    Raises ``ValueError`` for anything else. Range checks are the policies' own.
    """
    if _is_number(value):
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match and match[2] in _DURATION_UNITS:
            # Decimal arithmetic, then one rounding: "100ms" is exactly the float 0.1.
            return float(Decimal(match[1]) * _DURATION_UNITS[match[2]])
    raise ValueError(f"{value!r} is not a duration")


def parse_size(value: object) -> int:
    """Bytes from an integer or a string such as ``"512"``, ``"64KiB"``, ``"1MiB"``, ``"2MB"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _SIZE.match(value)
        if match and match[2].lower() in _SIZE_UNITS:
            amount = Decimal(match[1]) * _SIZE_UNITS[match[2].lower()]
            if amount == amount.to_integral_value():
                return int(amount)
    raise ValueError(f"{value!r} is not a size")


def _parse_count(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"{value!r} is not a count")


def _parse_rate(value: object) -> float:
    if _is_number(value):
        return float(value)  # type: ignore[arg-type]
    if isinstance(value, str):
        match = _RATE.match(value)
        if match and match[2] in _DURATION_UNITS:
            try:
                return float(Decimal(match[1]) / _DURATION_UNITS[match[2]])
            except InvalidOperation:  # pragma: no cover - the regex admits only numbers
                pass
    raise ValueError(f"{value!r} is not a rate")


def _parse_code(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"{value!r} is not a close code")


def _parse_text(value: object) -> str:
    if isinstance(value, str):
        return value
    raise ValueError(f"{value!r} is not a string")


def _plain(number: Decimal) -> str:
    text = format(number.normalize(), "f")
    return text


def format_duration(seconds: float) -> str | float:
    """The TOML value that reads back as exactly ``seconds``: ``"250ms"``, ``"5s"``, ``"1m"``.

    Falls back to the bare number where no unit reads back exactly.
    """
    value = float(seconds)
    if not math.isfinite(value):
        return value
    exact = Decimal(repr(value))
    if exact == 0:
        text = "0s"
    elif exact < 1 and (exact * 1000) == (exact * 1000).to_integral_value():
        text = f"{_plain(exact * 1000)}ms"
    elif exact >= 60 and exact % 3600 == 0:
        text = f"{_plain(exact / 3600)}h"
    elif exact >= 60 and exact % 60 == 0:
        text = f"{_plain(exact / 60)}m"
    else:
        text = f"{_plain(exact)}s"
    return text if parse_duration(text) == value else value


def format_size(size: int) -> str | int:
    """``"64KiB"``, ``"1MiB"`` where the size is a whole number of those, else the integer."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor and size % factor == 0:
            return f"{size // factor}{unit}"
    return size


@attrs.frozen
class ValueKind:
    """How one kind of parameter is written in a file: read, described and written back."""

    what: str
    """The noun for error messages: ``"a duration"``."""
    expected: str
    """What would be accepted, for error messages: ``'e.g. "250ms", "5s"'``."""
    read: Callable[[object], object]
    """File value to Python value; raises ``ValueError`` when the value is not of this kind."""
    write: Callable[[Any], object]
    """Python value to the value the dumper writes (which ``read`` turns back into it)."""


def _same(value: object) -> object:
    return value


def _write_combine(value: object) -> object:
    if not isinstance(value, str):
        raise PolicyError(
            f"combine={value!r} is a function, which a policy file cannot hold "
            f"(expected one of {', '.join(show_toml(name) for name in sorted(COMBINERS))})"
        )
    return value


COUNT = ValueKind("a count", "an integer >= 1, e.g. 256", _parse_count, _same)
SIZE = ValueKind("a size", 'bytes, e.g. 65536, "64KiB", "1MiB"', parse_size, format_size)
DURATION = ValueKind("a duration", 'e.g. "250ms", "5s"', parse_duration, format_duration)
RATE = ValueKind("a rate", 'per second, e.g. 10, 0.5 or "600/min"', _parse_rate, _same)
CLOSE_CODE = ValueKind("a close code", "an integer, e.g. 1013", _parse_code, _same)
TEXT = ValueKind("a string", 'e.g. "subscriber too slow"', _parse_text, _same)
COMBINER = ValueKind(
    "a combiner name",
    " or ".join(show_toml(name) for name in sorted(COMBINERS)),
    _parse_text,
    _write_combine,
)

_PARAMETERS: dict[str, ValueKind] = {
    "max_messages": COUNT,
    "max_bytes": SIZE,
    "max_buffer": SIZE,
    "max_lag": DURATION,
    "max_delay": DURATION,
    "grace": DURATION,
    "rate": RATE,
    "code": CLOSE_CODE,
    "reason": TEXT,
    "combine": COMBINER,
}
"""The value kind of every parameter of every stage kind, by parameter name."""


def _init_fields(kind: str) -> tuple[attrs.Attribute[Any], ...]:
    cls: Any = STAGE_KINDS[kind]  # every registered class is an attrs class
    return tuple(field for field in attrs.fields(cls) if field.init)


def parameters(kind: str) -> dict[str, ValueKind]:
    """The keys a stage of ``kind`` accepts (its class's parameters), in declaration order."""
    return {field.name: _PARAMETERS[field.name] for field in _init_fields(kind)}


def defaults(kind: str) -> dict[str, object]:
    """The default of each optional parameter of ``kind``; required ones are absent."""
    fields = _init_fields(kind)
    return {f.name: f.default for f in fields if f.default is not attrs.NOTHING}


# -- reading ------------------------------------------------------------------------


@attrs.frozen
class PolicyFile:
    """A policy read from a file, with the name and description the file gives it."""

    name: str
    """The file's stem: ``chat`` for ``chat.toml``."""
    description: str
    policy: Policy
    source: str
    """Where it was read from (a path, or ``<string>``)."""


_TOP_KEYS = ("description", "stage")
_SYNTAX_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")


def _expected_one_of(names: object) -> str:
    return "expected one of " + ", ".join(show_toml(n) for n in names)  # type: ignore[attr-defined]


def read_toml(text: str, filename: str) -> dict[str, Any]:
    """Parse TOML, turning a syntax error into a :class:`PolicyFileError` that keeps its place."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        where = _SYNTAX_POSITION.search(str(exc))
        raise PolicyFileError(
            f"{filename}: not valid TOML: {exc}",
            filename=filename,
            line=int(where[1]) if where else None,
            column=int(where[2]) if where else None,
        ) from None


def _fail(filename: str, key: str, message: str) -> PolicyFileError:
    return PolicyFileError(f"{filename}: {key}: {message}", filename=filename, key=key)


def unknown_key(filename: str, key: str, known: object) -> PolicyFileError:
    return _fail(filename, key, f"unknown key ({_expected_one_of(known)})")


def parse_policy_file(text: str, *, filename: str = "<string>") -> PolicyFile:
    """Read one policy file's text; ``filename`` names it in errors and gives its name."""
    document = read_toml(text, filename)
    for key in document:
        if key not in _TOP_KEYS:
            raise unknown_key(filename, key, _TOP_KEYS)
    description = document.get("description", "")
    if not isinstance(description, str):
        raise _fail(filename, "description", f"{show_toml(description)} is not a string")
    if "stage" not in document:
        raise _fail(filename, "stage", "missing (expected at least one [[stage]] table)")
    tables = document["stage"]
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise _fail(
            filename,
            "stage",
            f"{show_toml(tables)} is not a list of stages (expected [[stage]] tables)",
        )
    if not tables:
        raise _fail(filename, "stage", "empty (expected at least one [[stage]] table)")
    policy: Policy | None = None
    for index, table in enumerate(tables):
        stage = _build_stage(filename, f"stage[{index}]", table)
        if policy is None:
            policy = stage
            continue
        try:
            policy = policy | stage
        except PolicyConflictError as exc:
            raise _fail(filename, f"stage[{index}]", str(exc)) from exc
    assert policy is not None
    stem = Path(filename).stem if filename != "<string>" else filename
    return PolicyFile(name=stem, description=description, policy=policy, source=filename)


def _build_stage(filename: str, where: str, table: Mapping[str, object]) -> Policy:
    if "kind" not in table:
        raise _fail(filename, f"{where}.kind", f"missing ({_expected_one_of(STAGE_KINDS)})")
    kind = table["kind"]
    if not isinstance(kind, str) or kind not in STAGE_KINDS:
        raise _fail(
            filename,
            f"{where}.kind",
            f"{show_toml(kind)} is not a stage kind ({_expected_one_of(STAGE_KINDS)})",
        )
    accepted = parameters(kind)
    arguments: dict[str, object] = {}
    for key, raw in table.items():
        if key == "kind":
            continue
        if key not in accepted:
            raise _fail(
                filename,
                f"{where}.{key}",
                f"unknown key for {show_toml(kind)} ({_expected_one_of(['kind', *accepted])})",
            )
        value_kind = accepted[key]
        try:
            arguments[key] = value_kind.read(raw)
        except ValueError:
            raise _fail(
                filename,
                f"{where}.{key}",
                f"{show_toml(raw)} is not {value_kind.what} (expected {value_kind.expected})",
            ) from None
    try:
        return STAGE_KINDS[kind](**arguments)
    except PolicyError as exc:
        # The built-ins' messages start with "name=value": point at that key if it is one.
        named = str(exc).partition("=")[0]
        key = f"{where}.{named}" if named in arguments else where
        raise _fail(filename, key, str(exc)) from exc


def parse_policy(text: str, *, filename: str = "<string>") -> Policy:
    """The policy declared by a policy file's text."""
    return parse_policy_file(text, filename=filename).policy


def _preset_folder() -> Traversable:
    packaged = importlib.resources.files("wsfanout") / "presets"
    if packaged.is_dir():
        return packaged
    # A source checkout: the presets' single source, two levels above src/wsfanout/.
    return Path(__file__).resolve().parents[2] / "policies"


def _preset_files() -> dict[str, Traversable]:
    folder = _preset_folder()
    if not folder.is_dir():
        return {}
    found = {
        entry.name.removesuffix(".toml"): entry
        for entry in folder.iterdir()
        if entry.name.endswith(".toml") and entry.is_file()
    }
    return dict(sorted(found.items()))


def preset_names() -> tuple[str, ...]:
    """The names of the presets shipped with wsfanout, sorted."""
    return tuple(_preset_files())


def presets() -> dict[str, PolicyFile]:
    """Every preset, by name."""
    return {name: load_policy_file(name) for name in preset_names()}


def looks_like_path(name: str) -> bool:
    """Whether a policy argument names a file (``x.toml``, ``dir/x``) rather than a preset."""
    return name.endswith(".toml") or "/" in name or os.sep in name


def load_policy_file(name_or_path: str | os.PathLike[str]) -> PolicyFile:
    """Read a preset (by name, such as ``"chat"``) or a policy file (a path ending in .toml)."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"expected a preset name or a path, not {type(name_or_path).__name__}")
    if not isinstance(name_or_path, str) or looks_like_path(name_or_path):
        filename = os.fspath(name_or_path)
        try:
            text = Path(filename).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PolicyFileError(f"{filename}: no such file", filename=filename) from None
        except UnicodeDecodeError:
            raise PolicyFileError(f"{filename}: not UTF-8 text", filename=filename) from None
        except OSError as exc:
            raise PolicyFileError(
                f"{filename}: cannot read: {exc.strerror or exc}", filename=filename
            ) from None
        return parse_policy_file(text, filename=filename)
    files = _preset_files()
    entry = files.get(name_or_path)
    if entry is None:
        raise PolicyFileError(
            f"{show_toml(name_or_path)} is not a preset ({_expected_one_of(files)}; "
            "or a path to a .toml file)",
            filename=name_or_path,
        )
    return parse_policy_file(entry.read_text(encoding="utf-8"), filename=entry.name)


def load_policy(name_or_path: str | os.PathLike[str]) -> Policy:
    """The policy of a preset (``load_policy("chat")``) or of a file (``"my-policy.toml"``).

    The result is equal to the policy code would build from the same stages, e.g.
    ``load_policy("dashboard") == SkipToLatest()``. Raises :class:`PolicyFileError`,
    naming the file, the key and the value, for anything wrong with the file.
    """
    return load_policy_file(name_or_path).policy


# -- writing ------------------------------------------------------------------------


def dump_policy(policy: Policy, *, description: str = "") -> str:
    """A policy file's text that :func:`parse_policy` reads back as an equal policy.

    Only built-in stages can be written, and a ``Batch`` only with a named ``combine``;
    anything else raises :class:`PolicyError` naming the stage.
    """
    lines: list[str] = []
    if description:
        lines.append(f"description = {show_toml(description)}")
    for stage in as_policy(policy).stages:
        kind = _KIND_OF.get(type(stage))
        if kind is None:
            raise PolicyError(
                f"{stage!r} is not a built-in stage, so a policy file cannot declare it "
                f"(expected one of {', '.join(cls.__name__ for cls in _KIND_OF)})"
            )
        if lines:
            lines.append("")
        lines += ["[[stage]]", f"kind = {show_toml(kind)}"]
        optional = defaults(kind)
        for name, value_kind in parameters(kind).items():
            value = getattr(stage, name)
            if name in optional and value == optional[name]:
                continue
            lines.append(f"{name} = {show_toml(value_kind.write(value))}")
    return "\n".join(lines) + "\n"
