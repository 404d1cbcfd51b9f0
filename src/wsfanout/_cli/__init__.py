"""The ``wsfanout`` command: ``serve``, ``demo`` and ``check``."""

from .main import main

__all__ = ["main"]
