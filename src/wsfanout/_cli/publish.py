"""``POST /publish``: publishing over HTTP on the WebSocket listener, for ``curl`` and apps.

The request's body is one message (binary if its ``Content-Type`` is
``application/octet-stream`` or it is not UTF-8, text otherwise); ``topic``, ``key``
and ``lossless`` are query parameters or ``Wsfanout-Topic``, ``Wsfanout-Key`` and
``Wsfanout-Lossless`` headers (a parameter wins over a header). Without a topic or a
key, ``--topic-field`` and ``--key-field`` read them from a JSON object body, as for
lines of standard input. Publishers present their own token if ``--publish-token-env``
names one, else the subscribers' token if there is one.

Answers: 200 with ``{"offered": N}`` (the subscribers of this process it was offered
to), 400 for a bad parameter or an empty body, 401/403 for a missing or wrong token,
405 for another method, 411 without a length, 413 past ``--publish-max-size``, 503
while the server starts or stops.
"""

from __future__ import annotations

import http
import json
import urllib.parse
from typing import TYPE_CHECKING

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from .admission import check_token, refuse
from .http import BodyConnection, not_allowed

if TYPE_CHECKING:
    from .input import Publisher
    from .serve import Log

__all__ = ["PATH", "PublishEndpoint", "PublishOff", "parse_flag"]

PATH = "/publish"

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


def parse_flag(name: str, text: str) -> bool:
    """A boolean parameter as written in a URL or a header; ValueError names it."""
    word = text.strip().lower()
    if word in _TRUE:
        return True
    if word in _FALSE:
        return False
    raise ValueError(f"{name}={text!r} is not a boolean (expected true or false, 1 or 0)")


class PublishOff:
    """The step in place of the endpoint when it is off: say how to turn it on (404).

    ``secret`` (the subscribers' token) is hidden in the logged path.
    """

    def __init__(self, log: Log, secret: str | None = None) -> None:
        self.log = log
        self.secret = secret

    def __call__(self, connection: ServerConnection, request: Request) -> Response | None:
        if urllib.parse.urlsplit(request.path).path != PATH:
            return None
        return refuse(
            connection,
            self.log,
            http.HTTPStatus.NOT_FOUND,
            "POST /publish is off (start serve with --http-publish)",
            self.secret,
        )


class PublishEndpoint:
    """The ``POST /publish`` step of ``process_request`` (see the module's docstring).

    ``publisher`` is bound once the hub exists (:meth:`bind`): in a worker process,
    after the worker made its hub; until then requests get 503.
    """

    def __init__(self, token: str | None, log: Log, publisher: Publisher | None = None) -> None:
        self.token = None if token is None else token.encode()
        self.log = log
        self.publisher = publisher

    def bind(self, publisher: Publisher) -> None:
        self.publisher = publisher

    def __call__(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urllib.parse.urlsplit(request.path)
        if url.path != PATH:
            return None
        if request.method != "POST":
            return not_allowed(connection, self.log, "POST", "with the message as body", self.token)
        if self.token is not None:
            denied = check_token(connection, request, self.token, self.log)
            if denied is not None:
                return denied
        body = connection.request_body if isinstance(connection, BodyConnection) else None
        if body is not None and body.error is not None:
            return refuse(connection, self.log, body.error, body.why, self.token)
        if body is None or not body.data:
            return self._bad(connection, "empty body (expected the message as the request body)")
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        try:
            topic = self._parameter(request, query, "topic")
            key = self._parameter(request, query, "key")
            flag = self._parameter(request, query, "lossless")
            lossless = False if flag is None else parse_flag("lossless", flag)
        except ValueError as exc:
            return self._bad(connection, str(exc))
        publisher = self.publisher
        if publisher is None:
            return refuse(
                connection,
                self.log,
                http.HTTPStatus.SERVICE_UNAVAILABLE,
                "not ready to publish",
                self.token,
            )
        binary = request.headers.get("Content-Type", "").startswith("application/octet-stream")
        offered = publisher.publish(
            body.data, topic=topic, key=key, binary=binary, lossless=lossless
        )
        if offered is None:
            return refuse(
                connection, self.log, http.HTTPStatus.SERVICE_UNAVAILABLE, "shutting down"
            )
        response = connection.respond(http.HTTPStatus.OK, json.dumps({"offered": offered}) + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    @staticmethod
    def _parameter(request: Request, query: dict[str, list[str]], name: str) -> str | None:
        values = query.get(name)
        if values is None:
            header = request.headers.get_all(f"Wsfanout-{name.capitalize()}")
            values = header or None
        if values is None:
            return None
        if len(values) > 1:
            raise ValueError(f"{name} is given {len(values)} times (expected at most once)")
        if name != "lossless" and not values[0]:
            raise ValueError(f"{name} is empty (expected a name, or no {name} at all)")
        return values[0]

    def _bad(self, connection: ServerConnection, why: str) -> Response:
        return refuse(connection, self.log, http.HTTPStatus.BAD_REQUEST, why, self.token)
