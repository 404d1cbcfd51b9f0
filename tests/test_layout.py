"""The layers are enforced, not only drawn: what each folder may import, and who may
read another object's private attributes.

- ``_core/`` is pure: no asyncio, websockets, redis, socket (or other I/O modules), and
  nothing of wsfanout outside ``_core/``. ``testing/`` drives the core alone, so the
  same holds for it.
- ``_files/`` builds on the core; ``_shell/`` on the core and the backplane's protocol;
  ``_backplane/`` on the core and the shell; ``_client/`` (the Python client, on
  websockets' client) on the core alone; only ``_cli/`` and the faces see everything.
- Cross-object ``_private`` access (``other._x``, not ``self._x``) happens only in the
  documented friend pairs below.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "wsfanout"

IO_MODULES = frozenset(
    {
        "asyncio",
        "websockets",
        "redis",
        "socket",
        "selectors",
        "ssl",
        "threading",
        "multiprocessing",
        "subprocess",
        "signal",
        "time",
    }
)
"""Modules that do I/O or read a clock: never imported by the pure core."""

LAYERS: dict[str, frozenset[str]] = {
    "_core": frozenset({"_core"}),
    "testing": frozenset({"_core", "testing", "_public"}),
    "_files": frozenset({"_core", "_files"}),
    "_shell": frozenset({"_core", "_shell", "_backplane.protocol"}),
    "_backplane": frozenset({"_core", "_shell", "_backplane"}),
    "_client": frozenset({"_core", "_client"}),
}
"""Which parts of wsfanout each layer may import (``_cli`` and the faces: any).
``_public`` is the faces' naming helper, which the toolkit, a face too, uses."""

PURE = ("_core", "testing")

FRIENDS: dict[tuple[str, str], str] = {
    ("_core/outbox.py", "queue._entries"): (
        "Outbox.offer, once per subscriber per publish, and the relay's turns, once per "
        "subscriber per batch, test the queue's dict for emptiness (and length) directly: "
        "MessageQueue.__bool__ costs more than the rest of the fast path"
    ),
    ("_shell/fanout.py", "protocol._state"): (
        "Fanout.fan_out, once per subscriber per publish, reads websockets' protocol state "
        "without its property, which costs a tenth of a delivery's Python "
        "(tests/unit/test_websockets_contract.py checks that state is _state)"
    ),
    ("_shell/fanout.py", "transport._closing"): (
        "Fanout.fan_out reads asyncio's socket transport as its own write() does: "
        "is_closing() is _closing (tests/unit/test_asyncio_contract.py)"
    ),
    ("_shell/fanout.py", "transport._buffer"): (
        "Fanout.fan_out writes straight to the socket while asyncio's socket transport "
        "buffers nothing, the test its own write() makes (tests/unit/test_asyncio_contract.py)"
    ),
    ("_shell/fanout.py", "link._outbox"): (
        "Fanout.fan_out offers to a link's outbox once it has taken the cohort's step "
        "itself: Link.outbox, a property that first takes a member out of its cohort, "
        "would cost every delivery a call"
    ),
    ("_shell/cohort.py", "self.leader._outbox"): (
        "Cohort.take queues a message in the leader's outbox for the whole cohort: "
        "Link.outbox would take the leader out of its cohort"
    ),
    **{
        ("_core/message.py", f"twin.{cache}"): (
            "Message.retimed builds its twin, a Message too, slot by slot, its frame caches "
            "shared: copy.copy costs ten times more, once per message per resuming client"
        )
        for cache in ("_frame", "_deflated", "_v1")
    },
}
"""The documented friend pairs: (file, expression) -> why it reads another's private."""

PUBLIC_UNDERSCORED = frozenset({"_replace", "_asdict", "_fields", "_make"})
"""namedtuple's public API, which starts with an underscore to avoid field names."""


def modules(folder: str) -> Iterator[Path]:
    yield from sorted((PACKAGE / folder).rglob("*.py"))


def wsfanout_part(path: Path, node: ast.ImportFrom | ast.Import) -> Iterator[str]:
    """The wsfanout modules an import statement names, relative to the package."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] == "wsfanout":
                yield ".".join(alias.name.split(".")[1:])
        return
    if node.level == 0:
        if node.module and node.module.split(".")[0] == "wsfanout":
            yield ".".join(node.module.split(".")[1:])
        return
    package = path.parent.relative_to(PACKAGE).parts
    base = list(package[: len(package) - (node.level - 1)])
    if node.module:
        yield ".".join([*base, node.module])
    else:
        for alias in node.names:
            yield ".".join([*base, alias.name])


def layer_problems(path: Path, source: str, layer: str) -> list[str]:
    """What ``source`` (a module of ``layer``) imports that its layer may not."""
    allowed = LAYERS[layer]
    problems = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        where = f"{path.relative_to(PACKAGE)}:{node.lineno}"
        if layer in PURE:
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name.split(".")[0] in IO_MODULES:
                    problems.append(f"{where} imports {name}, which does I/O")
        for part in wsfanout_part(path, node):
            if part and not any(part == a or part.startswith(a + ".") for a in allowed):
                problems.append(f"{where} imports wsfanout.{part}, outside {sorted(allowed)}")
    return problems


def private_reads(source: str) -> Iterator[tuple[int, str]]:
    """``other._x`` expressions: another object's private attribute, read or called."""
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Attribute):
            continue
        name = node.attr
        if not name.startswith("_") or name.startswith("__") or name in PUBLIC_UNDERSCORED:
            continue
        owner = node.value
        if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
            continue
        if isinstance(owner, ast.Name) and owner.id in IO_MODULES | {"os", "sys"}:
            continue  # a library's own private (os._exit), not another wsfanout object's
        yield node.lineno, ast.unparse(node)


def test_the_client_gap_tracker_does_no_io() -> None:
    path = PACKAGE / "_client" / "tracker.py"
    assert layer_problems(path, path.read_text(encoding="utf-8"), "_core") == []


@pytest.mark.parametrize("module", ["resp.py", "envelope.py"])
def test_the_backplanes_wire_parsers_do_no_io(module: str) -> None:
    path = PACKAGE / "_backplane" / module
    assert layer_problems(path, path.read_text(encoding="utf-8"), "_core") == []


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_each_layer_imports_only_what_it_may(layer: str) -> None:
    problems = []
    for path in modules(layer):
        problems += layer_problems(path, path.read_text(encoding="utf-8"), layer)
    assert problems == []


def test_the_layer_check_catches_io_and_a_reach_into_another_layer() -> None:
    path = PACKAGE / "_core" / "outbox.py"
    source = "import asyncio\nfrom .._shell.hub import Hub\nfrom ..testing import Simulator\n"
    assert layer_problems(path, source, "_core") == [
        "_core/outbox.py:1 imports asyncio, which does I/O",
        "_core/outbox.py:2 imports wsfanout._shell.hub, outside ['_core']",
        "_core/outbox.py:3 imports wsfanout.testing, outside ['_core']",
    ]
    shell = PACKAGE / "_shell" / "hub.py"
    assert layer_problems(shell, "from wsfanout._files.units import parse_size\n", "_shell") == [
        "_shell/hub.py:1 imports wsfanout._files.units, outside "
        "['_backplane.protocol', '_core', '_shell']"
    ]


def test_cross_object_private_access_is_only_the_documented_friends() -> None:
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = str(path.relative_to(PACKAGE))
        for line, expression in private_reads(path.read_text(encoding="utf-8")):
            found.add((relative, expression))
            assert (relative, expression) in FRIENDS, f"{relative}:{line} reads {expression}"
    assert found == set(FRIENDS), "a friend pair no longer exists: drop it from FRIENDS"


def test_the_private_access_check_catches_a_reach_into_another_object() -> None:
    source = "def f(self, hub):\n    self._a = hub._closed\n    return os._exit, hub.x._y\n"
    assert list(private_reads(source)) == [(2, "hub._closed"), (3, "hub.x._y")]


def test_the_top_level_holds_the_faces_and_little_else() -> None:
    files = sorted(path.name for path in PACKAGE.iterdir() if path.is_file())
    assert len(files) <= 12, files
    folders = sorted(
        path.name for path in PACKAGE.iterdir() if path.is_dir() and path.name != "__pycache__"
    )
    assert folders == [
        "_backplane",
        "_cli",
        "_client",
        "_core",
        "_files",
        "_shell",
        "static",
        "testing",
    ]
