"""Presets, and loading a policy by preset name or by path.

Presets are the files of the top-level ``policies/`` folder. The wheel carries a copy
as package data, ``wsfanout/presets/``; a source checkout (the editable install) has no
such folder inside the package and reads ``policies/`` directly.
"""

from __future__ import annotations

import importlib.resources
import os
from importlib.resources.abc import Traversable
from pathlib import Path

from .._core.errors import PolicyFileError
from .._core.policy import Policy
from .policy_files import PolicyFile, expected_one_of, parse_policy_file, read_text
from .units import brief

__all__ = ["load_policy", "load_policy_file", "looks_like_path", "preset_names", "presets"]


def _preset_folder() -> Traversable:
    packaged = importlib.resources.files("wsfanout") / "presets"
    if packaged.is_dir():
        return packaged
    # A source checkout: the presets' single source, two levels above src/wsfanout/.
    return Path(__file__).resolve().parents[3] / "policies"


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
        return parse_policy_file(read_text(filename), filename=filename)
    files = _preset_files()
    entry = files.get(name_or_path)
    if entry is None:
        raise PolicyFileError(
            f"{brief(name_or_path)} is not a preset ({expected_one_of(files)}; "
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
