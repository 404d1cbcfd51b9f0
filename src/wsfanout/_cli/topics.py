"""Which topics a client of ``serve`` receives: ``?topic=NAME`` (repeatable), within its route's.

A client that names no topic receives every topic (and messages without one), unless
its route gives topics, which it then receives. A client's topics are settled before
the upgrade, once its route is known (the route may depend on the subprotocol the
handshake chose): a malformed ``topic`` parameter is refused with 400, a topic the
route does not allow with 403.
"""

from __future__ import annotations

import http
import urllib.parse
from typing import TYPE_CHECKING

import attrs
from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from .._files.routes import Route, Routes, TopicNotAllowed
from .admission import refuse

if TYPE_CHECKING:
    from .serve import Log

__all__ = ["MAX_TOPICS", "BadTopics", "TopicGate", "requested_topics", "topics_of"]

MAX_TOPICS = 256
"""Topics one client may name at most."""


class BadTopics(ValueError):
    """The ``topic`` parameters of a request are malformed."""


def requested_topics(request: Request) -> tuple[str, ...] | None:
    """The topics a request names with ``?topic=``, in order; ``None`` if it names none."""
    query = urllib.parse.urlsplit(request.path).query
    if "topic" not in query:  # the common case, without parsing the query
        return None
    named = urllib.parse.parse_qs(query, keep_blank_values=True).get("topic")
    if named is None:
        return None
    if not all(named):
        raise BadTopics("empty topic (expected ?topic=NAME)")
    topics = tuple(dict.fromkeys(named))
    if len(topics) > MAX_TOPICS:
        raise BadTopics(f"{len(topics)} topics (at most {MAX_TOPICS})")
    return topics


def topics_of(route: Route, request: Request) -> frozenset[str] | None:
    """The topics a connection receives (``None``: every topic). Raises
    :class:`BadTopics` or :class:`TopicNotAllowed`."""
    return route.topics_for(requested_topics(request))


@attrs.frozen
class TopicGate:
    """A ``process_response`` step: refuse, before the upgrade, topics that cannot be had."""

    routes: Routes
    log: Log
    secret: str | None = None
    """The subscribers' token, hidden in logged paths."""

    def __call__(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> Response | None:
        if response.status_code != http.HTTPStatus.SWITCHING_PROTOCOLS:
            return None
        subprotocol = response.headers.get("Sec-WebSocket-Protocol")
        try:
            topics_of(self.routes.route_for(request, subprotocol), request)
        except BadTopics as exc:
            return refuse(connection, self.log, http.HTTPStatus.BAD_REQUEST, str(exc), self.secret)
        except TopicNotAllowed as exc:
            return refuse(connection, self.log, http.HTTPStatus.FORBIDDEN, str(exc), self.secret)
        return None
