"""How the public faces name what they re-export.

Every public name is defined in a private module (``_core/``, ``_shell/``, ...) and
re-exported by a face (``wsfanout``, ``wsfanout.policies``, ...). :func:`publish_names`
rewrites each class's and function's ``__module__`` to the face, as trio does, so
reprs, tracebacks, pickles and documentation name what users import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping

__all__ = ["publish_names"]


def publish_names(face: str, namespace: Mapping[str, object], names: Iterable[str]) -> None:
    """Make the classes and functions among ``names`` report ``face`` as their module."""
    for name in names:
        value = namespace[name]
        if isinstance(value, type) or (callable(value) and hasattr(value, "__qualname__")):
            with contextlib.suppress(AttributeError, TypeError):  # a C type: leave it
                value.__module__ = face
