"""The JavaScript client as shipped: package data, one module with no imports, and
within its size budget.

The target is 3 KB minified and gzipped (measured with terser in docs/js-client.md).
The test suite runs without Node.js, so it measures a stand-in any machine can compute:
the source without its comments and indentation, gzipped. A real minifier also
shortens names, so it always does better (terser: about three quarters of it); the
stand-in's budget keeps the minified file well under 3 KB.
"""

from __future__ import annotations

import gzip
import re
from pathlib import Path

from wsfanout import client_script_source

SOURCE = Path(__file__).resolve().parents[2] / "src" / "wsfanout" / "static" / "wsfanout.js"

BUDGET = 3300
"""Bytes of the stand-in, gzipped (at 2,992 when this was written)."""


def stand_in(source: str) -> str:
    """The source without blank lines, comment lines, trailing comments and indentation.

    Trailing comments are recognised as `` // `` after code, which the client's code
    never has inside a string.
    """
    kept = []
    for line in source.splitlines():
        code = re.sub(r"\s+// .*$", "", line).strip()
        if code and not code.startswith("//"):
            kept.append(code)
    return "\n".join(kept)


def test_the_stand_in_drops_comments_and_indentation_only() -> None:
    source = "// a comment\nexport function f() {\n  return 1; // trailing\n\n}\n"
    assert stand_in(source) == "export function f() {\nreturn 1;\n}"


def test_the_package_data_is_the_source() -> None:
    assert client_script_source() == SOURCE.read_bytes()


def test_the_client_is_one_module_with_no_dependencies() -> None:
    source = SOURCE.read_text(encoding="utf-8")
    assert not re.search(r"^\s*import\b|\brequire\(|\bimport\(", source, re.MULTILINE)
    exported = re.findall(r"^export (?:const|function) (\w+)", source, re.MULTILINE)
    assert exported == ["SUBPROTOCOL", "backoff", "connect"]


def test_the_client_fits_its_size_budget() -> None:
    size = len(gzip.compress(stand_in(SOURCE.read_text(encoding="utf-8")).encode(), 9))
    assert size <= BUDGET, f"wsfanout.js: {size} bytes gzipped without comments > {BUDGET}"
