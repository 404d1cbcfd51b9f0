"""Routing files: which policy each subscriber gets, from what its connection shows.

A routing file lists ``[[route]]`` tables, each with conditions on the opening
request and the policy of the subscribers it matches; the first route whose
conditions all hold wins, and ``default`` covers everyone else::

    default = "dashboard"

    [[route]]
    path = "/prices/*"          # the request path, a shell-style pattern
    policy = "market-data"      # a preset name, or a policy file relative to this file

    [[route]]
    query = { client = "mobile" }        # query parameters (any value may match)
    header = { "X-Network" = "slow*" }   # request headers, names case-insensitive
    subprotocol = "chat.v1"              # the negotiated subprotocol, exactly
    policy = "notifications"
    topics = ["alerts", "news"]          # the topics these subscribers may receive

``default_topics`` does for the default route what ``topics`` does for a route.

Patterns use :func:`fnmatch.fnmatchcase` (``*``, ``?``, ``[...]``). A :class:`Routes`
is a function from a connection to a policy, which is all ``Hub.serve`` needs::

    await hub.serve(websocket, policy=routes(websocket))
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import attrs
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request

from .._core.errors import PolicyFileError
from .._core.policy import Policy
from .policy_files import one_line, read_text, read_toml, shown_key, unknown_key
from .presets import load_policy_file, looks_like_path
from .units import brief, show_toml

__all__ = ["Route", "Routes", "TopicNotAllowed", "load_routes", "parse_routes"]

_CONDITIONS = ("path", "query", "header", "subprotocol")
_ROUTE_KEYS = (*_CONDITIONS, "policy", "topics")
_TOP_KEYS = ("default", "default_topics", "route")


def _lower_names(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((name.lower(), pattern) for name, pattern in pairs)


@attrs.frozen(kw_only=True)
class Route:
    """One rule: the policy of subscribers whose connection matches every condition given.

    A route without conditions matches every connection (that is the default route).
    """

    policy: Policy
    policy_name: str = ""
    """The preset name or file the policy came from, for logs; empty if built in code."""
    path: str | None = None
    """Pattern for the request path, without the query string."""
    query: tuple[tuple[str, str], ...] = ()
    """(parameter, pattern) pairs; a parameter given several times matches if any value does."""
    header: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_lower_names)
    """(header name, pattern) pairs; names are compared case-insensitively."""
    subprotocol: str | None = None
    """The subprotocol negotiated with the client, compared exactly."""
    topics: tuple[str, ...] | None = None
    """The topics its subscribers may receive, or ``None`` for any (see :meth:`topics_for`)."""

    def topics_for(self, requested: Iterable[str] | None) -> frozenset[str] | None:
        """The topics of a subscriber that asked for ``requested`` (``None``: it named none).

        Without route topics, a subscriber gets what it asked for (every topic if it
        named none). With them, a subscriber that names none gets all of the route's,
        and one that names some gets those; naming one outside the route's raises
        :class:`TopicNotAllowed`.
        """
        if self.topics is None:
            return None if requested is None else frozenset(requested)
        if requested is None:
            return frozenset(self.topics)
        wanted = frozenset(requested)
        outside = sorted(wanted.difference(self.topics))
        if outside:
            raise TopicNotAllowed(outside[0], self.topics)
        return wanted

    def matches(self, request: Request, subprotocol: str | None = None) -> bool:
        """Whether a connection that sent ``request`` and negotiated ``subprotocol`` matches."""
        url = urllib.parse.urlsplit(request.path)
        if self.path is not None and not fnmatchcase(url.path, self.path):
            return False
        if self.query:
            params = urllib.parse.parse_qs(url.query, keep_blank_values=True)
            for name, pattern in self.query:
                if not any(fnmatchcase(value, pattern) for value in params.get(name, ())):
                    return False
        headers: Headers = request.headers
        for name, pattern in self.header:
            if not any(fnmatchcase(value, pattern) for value in headers.get_all(name)):
                return False
        return self.subprotocol is None or self.subprotocol == subprotocol

    def describe(self) -> str:
        """The conditions, as they are written in a routing file (``"*"`` if none)."""
        parts = []
        if self.path is not None:
            parts.append(f"path = {show_toml(self.path)}")
        if self.query:
            parts.append(f"query = {show_toml(dict(self.query))}")
        if self.header:
            parts.append(f"header = {show_toml(dict(self.header))}")
        if self.subprotocol is not None:
            parts.append(f"subprotocol = {show_toml(self.subprotocol)}")
        return ", ".join(parts) or "*"


class TopicNotAllowed(ValueError):
    """A subscriber asked for a topic its route does not give (``topic``; ``allowed``)."""

    def __init__(self, topic: str, allowed: tuple[str, ...]) -> None:
        super().__init__(
            f"topic {show_toml(topic)} not allowed here "
            f"(expected one of {', '.join(show_toml(t) for t in allowed)})"
        )
        self.topic = topic
        self.allowed = allowed


@attrs.frozen
class Routes:
    """Routes tried in order, and the default route; call it with a connection for its policy."""

    routes: tuple[Route, ...]
    default: Route

    def route_for(self, request: Request, subprotocol: str | None = None) -> Route:
        """The first route matching the connection, or the default route."""
        for route in self.routes:
            if route.matches(request, subprotocol):
                return route
        return self.default

    def __call__(self, websocket: ServerConnection) -> Policy:
        """The policy for this connection (after its opening handshake)."""
        assert websocket.request is not None, "the opening handshake is not complete"
        return self.route_for(websocket.request, websocket.subprotocol).policy

    @property
    def subprotocols(self) -> tuple[str, ...]:
        """The subprotocols some route names, for the server to negotiate."""
        named = (route.subprotocol for route in self.routes if route.subprotocol is not None)
        return tuple(dict.fromkeys(named))


def _error(message: str, *, filename: str, key: str) -> PolicyFileError:
    return PolicyFileError(one_line(message), filename=filename, key=key)


def _pairs(filename: str, where: str, value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise _error(
            f"{filename}: {where}: {brief(value)} is not a table "
            '(expected e.g. { name = "pattern" })',
            filename=filename,
            key=where,
        )
    pairs = []
    for name, pattern in value.items():
        if not isinstance(pattern, str):
            raise _error(
                f"{filename}: {shown_key(f'{where}.{name}')}: "
                f"{brief(pattern)} is not a string pattern",
                filename=filename,
                key=f"{where}.{name}",
            )
        pairs.append((name, pattern))
    if not pairs:
        raise _error(
            f"{filename}: {where}: empty (expected at least one name = pattern)",
            filename=filename,
            key=where,
        )
    return tuple(pairs)


def _string(filename: str, where: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise _error(
            f"{filename}: {where}: {brief(value)} is not a non-empty string",
            filename=filename,
            key=where,
        )
    return value


def _topics(filename: str, where: str, value: object) -> tuple[str, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(topic, str) and topic for topic in value)
    ):
        raise PolicyFileError(
            f"{filename}: {where}: {show_toml(value)} is not a list of topic names "
            '(expected e.g. ["news", "alerts"])',
            filename=filename,
            key=where,
        )
    return tuple(dict.fromkeys(value))


def _policy(filename: str, where: str, value: object, base: Path | None) -> tuple[Policy, str]:
    name = _string(filename, where, value)
    target: str | Path = name
    if base is not None and looks_like_path(name):
        target = base / name
    try:
        return load_policy_file(target).policy, name
    except PolicyFileError as exc:
        raise _error(f"{filename}: {where}: {exc}", filename=filename, key=where) from exc


def parse_routes(
    text: str, *, filename: str = "<string>", base: str | os.PathLike[str] | None = None
) -> Routes:
    """Read a routing file's text; policy file paths in it are relative to ``base``."""
    document = read_toml(text, filename)
    return _routes_from(document, filename, None if base is None else Path(base))


def _routes_from(document: Mapping[str, Any], filename: str, base: Path | None) -> Routes:
    for key in document:
        if key not in _TOP_KEYS:
            raise unknown_key(filename, key, _TOP_KEYS)
    if "default" not in document:
        raise _error(
            f"{filename}: default: missing (expected the policy of subscribers no route "
            'matches, e.g. default = "dashboard")',
            filename=filename,
            key="default",
        )
    policy, name = _policy(filename, "default", document["default"], base)
    topics = None
    if "default_topics" in document:
        topics = _topics(filename, "default_topics", document["default_topics"])
    default = Route(policy=policy, policy_name=name, topics=topics)
    tables = document.get("route", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise _error(
            f"{filename}: route: {brief(tables)} is not a list of routes "
            "(expected [[route]] tables)",
            filename=filename,
            key="route",
        )
    return Routes(tuple(_route(filename, i, t, base) for i, t in enumerate(tables)), default)


def _route(filename: str, index: int, table: Mapping[str, Any], base: Path | None) -> Route:
    where = f"route[{index}]"
    for key in table:
        if key not in _ROUTE_KEYS:
            raise unknown_key(filename, f"{where}.{key}", _ROUTE_KEYS)
    if "policy" not in table:
        raise _error(
            f"{filename}: {where}.policy: missing "
            '(expected a preset name or a .toml file, e.g. "chat")',
            filename=filename,
            key=f"{where}.policy",
        )
    if not any(condition in table for condition in _CONDITIONS):
        raise _error(
            f"{filename}: {where}: no condition (expected at least one of "
            f"{', '.join(_CONDITIONS)}; default covers everyone else)",
            filename=filename,
            key=where,
        )
    policy, name = _policy(filename, f"{where}.policy", table["policy"], base)
    return Route(
        policy=policy,
        policy_name=name,
        path=_string(filename, f"{where}.path", table["path"]) if "path" in table else None,
        query=_pairs(filename, f"{where}.query", table["query"]) if "query" in table else (),
        header=_pairs(filename, f"{where}.header", table["header"]) if "header" in table else (),
        subprotocol=(
            _string(filename, f"{where}.subprotocol", table["subprotocol"])
            if "subprotocol" in table
            else None
        ),
        topics=_topics(filename, f"{where}.topics", table["topics"]) if "topics" in table else None,
    )


def load_routes(path: str | os.PathLike[str]) -> Routes:
    """Read a routing file; the policy files it names are relative to its folder."""
    filename = os.fspath(path)
    return parse_routes(read_text(filename), filename=filename, base=Path(filename).parent)


def is_routing_document(document: Mapping[str, object]) -> bool:
    """Whether a parsed TOML document is a routing file rather than a policy file."""
    return "stage" not in document and any(key in document for key in _TOP_KEYS)
