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
what people write (``"250ms"``, ``"64KiB"``) and writes it back.

An ``escalate`` stage holds its levels as ``[[stage.level]]`` tables, each with a
``name``, ``up`` and ``down`` conditions (``"lag > 1s"``, see ``conditions.py``) and
the level's own ``[[stage.level.stage]]`` tables::

    [[stage]]
    kind = "escalate"
    hold = "2s"

    [[stage.level]]
    name = "normal"

    [[stage.level]]
    name = "conflate"
    up = "lag > 1s"
    down = "lag < 250ms"

    [[stage.level.stage]]
    kind = "conflate-by-key" Loading builds the
stages with their constructors, so a loaded policy is equal to the one code would
build, and every validator of the built-ins applies; its errors are re-raised with the
file name and the key path. Stage indices in key paths count from 0, as
``policy.stages[i]`` does.

Presets, and loading a policy by name or path, are in ``presets.py``; the value kinds
(durations, sizes, rates) in ``units.py``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from .._core.adaptive import Adaptive
from .._core.builtins import (
    COMBINERS,
    REDUCERS,
    Batch,
    ConflateByKey,
    Disconnect,
    DropNewest,
    DropOldest,
    Notify,
    SkipToLatest,
    Throttle,
)
from .._core.errors import PolicyConflictError, PolicyError, PolicyFileError
from .._core.ladder import Escalate, Level
from .._core.notices import NOTICE_FORMATS
from .._core.policy import Policy, as_policy
from .conditions import ConditionSyntaxError, format_condition, parse_condition
from .units import (
    CLOSE_CODE,
    COUNT,
    DURATION,
    FLAG,
    FRACTION,
    OPTIONAL_DURATION,
    OPTIONAL_FRACTION,
    RATE,
    SIZE,
    TEXT,
    ValueKind,
    brief,
    parse_text,
    show_toml,
)

__all__ = [
    "STAGE_KINDS",
    "PolicyFile",
    "defaults",
    "dump_policy",
    "expected_one_of",
    "parameters",
    "parse_policy",
    "parse_policy_file",
    "read_text",
    "read_toml",
    "unknown_key",
]

STAGE_KINDS: dict[str, type[Policy]] = {
    "drop-oldest": DropOldest,
    "drop-newest": DropNewest,
    "skip-to-latest": SkipToLatest,
    "conflate-by-key": ConflateByKey,
    "batch": Batch,
    "throttle": Throttle,
    "disconnect": Disconnect,
    "escalate": Escalate,
    "adaptive": Adaptive,
    "notify": Notify,
}
"""The stage kinds a policy file may name, and the built-in class each one builds."""

_KIND_OF: dict[type[Policy], str] = {cls: kind for kind, cls in STAGE_KINDS.items()}


def _named(what: str, parameter: str, names: list[str]) -> ValueKind:
    """A parameter that is a name from a table in files, or a function in code only."""
    shown = [show_toml(name) for name in names]

    def write(value: object) -> object:
        if not isinstance(value, str):
            raise PolicyError(
                f"{parameter}={value!r} is a function, which a policy file cannot hold "
                f"(expected one of {', '.join(shown)})"
            )
        return value

    return ValueKind(what, " or ".join(shown), parse_text, write)


COMBINER = _named("a combiner name", "combine", sorted(COMBINERS))
NOTICE_FORMAT = _named("a notice format name", "format", list(NOTICE_FORMATS))


def _write_reduce(value: object) -> object:
    if not isinstance(value, str):
        raise PolicyError(
            f"reduce={value!r} is a function, which a policy file cannot hold "
            f"(expected one of {', '.join(show_toml(name) for name in sorted(REDUCERS))})"
        )
    return value


REDUCER = ValueKind(
    "a reducer name",
    " or ".join(show_toml(name) for name in sorted(REDUCERS)),
    parse_text,
    _write_reduce,
)


def _not_a_value(value: object) -> object:
    raise ValueError("read by _build_levels")


LEVELS = ValueKind("a list of levels", "[[stage.level]] tables", _not_a_value, _not_a_value)

_KEYS = {"levels": "level"}
"""Parameters whose key in a file differs from their name: ``[[stage.level]]`` tables."""

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
    "reduce": REDUCER,
    "level": LEVELS,
    "hold": DURATION,
    "announce": FLAG,
    "interval": DURATION,
    "min_bytes": SIZE,
    "fraction": FRACTION,
    "probe": OPTIONAL_DURATION,
    "drain": OPTIONAL_FRACTION,
    "format": NOTICE_FORMAT,
}
"""The value kind of every parameter of every stage kind, by its key in a file."""


def _init_fields(kind: str) -> tuple[attrs.Attribute[Any], ...]:
    cls: Any = STAGE_KINDS[kind]  # every registered class is an attrs class
    return tuple(field for field in attrs.fields(cls) if field.init)


def _key(name: str) -> str:
    return _KEYS.get(name, name)


def parameters(kind: str) -> dict[str, ValueKind]:
    """The keys a stage of ``kind`` accepts (its class's parameters), in declaration order."""
    return {_key(field.name): _PARAMETERS[_key(field.name)] for field in _init_fields(kind)}


def defaults(kind: str) -> dict[str, object]:
    """The default of each optional parameter of ``kind``, by key; required ones are absent."""
    fields = _init_fields(kind)
    return {_key(f.name): f.default for f in fields if f.default is not attrs.NOTHING}


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


def expected_one_of(names: object) -> str:
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
    except RecursionError:
        raise PolicyFileError(
            f"{filename}: not a policy or routing file: arrays or tables nested too deeply",
            filename=filename,
        ) from None
    except ValueError as exc:  # an integer past Python's 4,300-digit conversion limit
        raise PolicyFileError(
            f"{filename}: not a policy or routing file: {str(exc).split(':')[0]}",
            filename=filename,
        ) from None


_BARE_KEY = re.compile(r"^[A-Za-z0-9_.\[\]-]{1,80}$")
MAX_MESSAGE = 300
"""Characters of an error message past which it is cut: a hostile value stays one line."""


def shown_key(key: str) -> str:
    """A key path as an error message shows it: as written if plain, else quoted and cut."""
    return key if _BARE_KEY.match(key) else brief(key)


def one_line(message: str) -> str:
    """``message`` on one line of at most :data:`MAX_MESSAGE` characters."""
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    return message if len(message) <= MAX_MESSAGE else f"{message[: MAX_MESSAGE - 3]}..."


def _fail(filename: str, key: str, message: str) -> PolicyFileError:
    return PolicyFileError(
        one_line(f"{filename}: {shown_key(key)}: {message}"), filename=filename, key=key
    )


def unknown_key(filename: str, key: str, known: object) -> PolicyFileError:
    return _fail(filename, key, f"unknown key ({expected_one_of(known)})")


def parse_policy_file(text: str, *, filename: str = "<string>") -> PolicyFile:
    """Read one policy file's text; ``filename`` names it in errors and gives its name."""
    document = read_toml(text, filename)
    for key in document:
        if key not in _TOP_KEYS:
            raise unknown_key(filename, key, _TOP_KEYS)
    description = document.get("description", "")
    if not isinstance(description, str):
        raise _fail(filename, "description", f"{brief(description)} is not a string")
    if "stage" not in document:
        raise _fail(filename, "stage", "missing (expected at least one [[stage]] table)")
    tables = document["stage"]
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise _fail(
            filename,
            "stage",
            f"{brief(tables)} is not a list of stages (expected [[stage]] tables)",
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
        raise _fail(filename, f"{where}.kind", f"missing ({expected_one_of(STAGE_KINDS)})")
    kind = table["kind"]
    if not isinstance(kind, str) or kind not in STAGE_KINDS:
        raise _fail(
            filename,
            f"{where}.kind",
            f"{brief(kind)} is not a stage kind ({expected_one_of(STAGE_KINDS)})",
        )
    accepted = parameters(kind)
    names = {_key(name): name for name in _FIELD_NAMES}
    arguments: dict[str, object] = {}
    for key, raw in table.items():
        if key == "kind":
            continue
        if key not in accepted:
            raise _fail(
                filename,
                f"{where}.{key}",
                f"unknown key for {show_toml(kind)} ({expected_one_of(['kind', *accepted])})",
            )
        value_kind = accepted[key]
        if value_kind is LEVELS:
            arguments[names.get(key, key)] = _build_levels(filename, f"{where}.{key}", raw)
            continue
        try:
            arguments[names.get(key, key)] = value_kind.read(raw)
        except ValueError:
            raise _fail(
                filename,
                f"{where}.{key}",
                f"{brief(raw)} is not {value_kind.what} (expected {value_kind.expected})",
            ) from None
    for key, value_kind in accepted.items():
        if names.get(key, key) not in arguments and key not in defaults(kind):
            raise _fail(
                filename,
                f"{where}.{key}",
                f"missing: {show_toml(kind)} needs {value_kind.what} "
                f"(expected {value_kind.expected})",
            )
    try:
        return STAGE_KINDS[kind](**arguments)
    except PolicyError as exc:
        key = f"{where}.{_key(exc.name)}" if exc.name in arguments else where
        raise _fail(filename, key, str(exc)) from exc


_FIELD_NAMES = ("levels",)
_LEVEL_KEYS = ("name", "up", "down", "stage")


def _build_levels(filename: str, where: str, raw: object) -> tuple[Level, ...]:
    """An ``escalate`` stage's ``[[stage.level]]`` tables, each built as a :class:`Level`."""
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise _fail(
            filename, where, f"{brief(raw)} is not a list of levels ([[stage.level]] tables)"
        )
    levels = []
    for index, table in enumerate(raw):
        at = f"{where}[{index}]"
        for key in table:
            if key not in _LEVEL_KEYS:
                raise unknown_key(filename, f"{at}.{key}", _LEVEL_KEYS)
        name = table.get("name", "")
        if not isinstance(name, str):
            raise _fail(filename, f"{at}.name", f"{brief(name)} is not a string")
        conditions = {}
        for key in ("up", "down"):
            if key in table:
                try:
                    conditions[key] = parse_condition(table[key])
                except ConditionSyntaxError as exc:
                    raise _fail(
                        filename,
                        f"{at}.{key}",
                        f"{brief(table[key])} is not a condition: {exc}",
                    ) from None
        stages = table.get("stage", [])
        if not isinstance(stages, list) or not all(isinstance(t, dict) for t in stages):
            raise _fail(
                filename,
                f"{at}.stage",
                f"{brief(stages)} is not a list of stages ([[stage.level.stage]] tables)",
            )
        policy: Policy | None = None
        for number, stage_table in enumerate(stages):
            stage = _build_stage(filename, f"{at}.stage[{number}]", stage_table)
            try:
                policy = stage if policy is None else policy | stage
            except PolicyConflictError as exc:
                raise _fail(filename, f"{at}.stage[{number}]", str(exc)) from exc
        try:
            levels.append(Level(policy, name=name, **conditions))
        except PolicyError as exc:
            raise _fail(filename, f"{at}.stage" if exc.name == "policy" else at, str(exc)) from exc
    return tuple(levels)


MAX_FILE_BYTES = 1024 * 1024
"""The largest policy or routing file read: anything longer (``/dev/zero``) is refused."""


def read_text(filename: str) -> str:
    """A file's text, or a :class:`PolicyFileError` that says in one line why not.

    At most :data:`MAX_FILE_BYTES` are read, so a device or a huge file is refused
    rather than read without end.
    """
    shown = filename if filename.isprintable() else show_toml(filename)[1:-1]
    try:
        with open(filename, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        raise PolicyFileError(f"{shown}: no such file", filename=filename) from None
    except OSError as exc:
        raise PolicyFileError(
            f"{shown}: cannot read: {exc.strerror or exc}", filename=filename
        ) from None
    except ValueError:  # a NUL in the name
        raise PolicyFileError(
            f"{shown}: not a file name (it holds a NUL character)", filename=filename
        ) from None
    if len(data) > MAX_FILE_BYTES:
        raise PolicyFileError(
            f"{shown}: larger than {MAX_FILE_BYTES} bytes: not a policy or routing file",
            filename=filename,
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyFileError(f"{shown}: not UTF-8 text", filename=filename) from None


def parse_policy(text: str, *, filename: str = "<string>") -> Policy:
    """The policy declared by a policy file's text."""
    return parse_policy_file(text, filename=filename).policy


# -- writing ------------------------------------------------------------------------


def dump_policy(policy: Policy, *, description: str = "") -> str:
    """A policy file's text that :func:`parse_policy` reads back as an equal policy.

    Only built-in stages can be written, a ``Batch`` only with a named ``combine`` and a
    ``Notify`` only with a named ``format``; anything else raises :class:`PolicyError`
    naming the stage.
    """
    lines: list[str] = []
    if description:
        lines.append(f"description = {show_toml(description)}")
    for stage in as_policy(policy).stages:
        lines += _dump_stage(stage, "stage", lines)
    return "\n".join(lines) + "\n"


def _dump_stage(stage: Policy, table: str, before: list[str]) -> list[str]:
    kind = _KIND_OF.get(type(stage))
    if kind is None:
        raise PolicyError(
            f"{stage!r} is not a built-in stage, so a policy file cannot declare it "
            f"(expected one of {', '.join(cls.__name__ for cls in _KIND_OF)})"
        )
    lines = [""] if before else []
    lines += [f"[[{table}]]", f"kind = {show_toml(kind)}"]
    optional = defaults(kind)
    levels: tuple[Level, ...] = ()
    for key, value_kind in parameters(kind).items():
        value = getattr(stage, {v: k for k, v in _KEYS.items()}.get(key, key))
        if value_kind is LEVELS:
            levels = value
            continue
        if key in optional and value == optional[key]:
            continue
        lines.append(f"{key} = {show_toml(value_kind.write(value))}")
    for level in levels:
        lines += ["", f"[[{table}.level]]"]
        if level.name:
            lines.append(f"name = {show_toml(level.name)}")
        for key in ("up", "down"):
            condition = getattr(level, key)
            if condition is not None:
                lines.append(f"{key} = {show_toml(format_condition(condition))}")
        if level.policy is not None:
            for inner in level.policy.stages:
                lines += _dump_stage(inner, f"{table}.level.stage", lines)
    return lines
