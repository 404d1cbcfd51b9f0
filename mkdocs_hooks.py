"""mkdocs hooks for the documentation site (mkdocs.yml, ``hooks:``).

The docstrings cross-reference in reST (``:class:`Hub```), which mkdocstrings leaves as
written: the role's name is dropped so that only the code span shows.
"""

from __future__ import annotations

import re
from typing import Any

ROLE = re.compile(r":(?:class|meth|func|attr|data|mod|exc|obj):(?=<code>)")


def on_page_content(html: str, **kwargs: Any) -> str:
    return ROLE.sub("", html)
