"""The plain HTTP side of ``serve``'s listener: request bodies, and steps that answer.

Theory of operation
-------------------
websockets reads the head of every request and calls ``process_request`` before it
upgrades the connection; a response returned there ends the exchange over plain HTTP.
:class:`Steps` makes that hook a list: each step (the publish endpoint, the token
check, the method check, later a route serving a file) looks at the request and
answers or passes, in order. :class:`ResponseSteps` does the same for
``process_response``, which sees the handshake's answer (a 101, or websockets' own
refusal) and may replace it.

websockets refuses a request that has a body. :class:`BodyConnection` reads one
first: it holds the bytes of a request until its head is complete; a head without a
body goes on to websockets untouched, and one with a body (``POST /publish``) has the
body read (at most ``max_body`` bytes, answering ``Expect: 100-continue``), kept in
:attr:`BodyConnection.request_body`, and the head passed on without its framing
headers, so websockets parses it and the steps see the body beside it. Nothing after
such a request is read.
"""

from __future__ import annotations

import http
import inspect
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import attrs
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import InvalidOrigin
from websockets.http11 import Request, Response

from .admission import GuardedConnection, Handshakes, peer, redacted, refuse
from .logs import log_refused

if TYPE_CHECKING:
    from .serve import Log

__all__ = [
    "Body",
    "BodyConnection",
    "ConnectionFactory",
    "RequestStep",
    "ResponseStep",
    "ResponseSteps",
    "Steps",
    "log_refusals",
    "not_allowed",
    "only_get",
]

RequestStep = Callable[[ServerConnection, Request], "Response | Awaitable[Response | None] | None"]
"""One step of ``process_request``: a response ends the exchange, ``None`` passes on."""

ResponseStep = Callable[
    [ServerConnection, Request, Response], "Response | Awaitable[Response | None] | None"
]
"""One step of ``process_response``: a response replaces the handshake's, ``None`` keeps it."""


class Steps:
    """``process_request`` as steps tried in order; the first response ends the chain.

    Steps may be plain functions or coroutines; the chain stays synchronous until one
    returns an awaitable.
    """

    def __init__(self, steps: Iterable[RequestStep]) -> None:
        self.steps = tuple(steps)

    def __call__(
        self, connection: ServerConnection, request: Request
    ) -> Response | Awaitable[Response | None] | None:
        for index, step in enumerate(self.steps):
            answer = step(connection, request)
            if inspect.isawaitable(answer):
                return self._finish(answer, index, connection, request)
            if answer is not None:
                return answer
        return None

    async def _finish(
        self,
        pending: Awaitable[Response | None],
        index: int,
        connection: ServerConnection,
        request: Request,
    ) -> Response | None:
        answer = await pending
        for step in self.steps[index + 1 :]:
            if answer is not None:
                return answer
            answer = step(connection, request)  # type: ignore[assignment]
            if inspect.isawaitable(answer):
                answer = await answer
        return answer


class ResponseSteps:
    """``process_response`` as steps tried in order; the first replacement ends the chain."""

    def __init__(self, steps: Iterable[ResponseStep]) -> None:
        self.steps = tuple(steps)

    async def __call__(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> Response | None:
        for step in self.steps:
            answer = step(connection, request, response)
            if inspect.isawaitable(answer):
                answer = await answer
            if answer is not None:
                return answer
        return None


@attrs.frozen
class only_get:
    """A request step: anything but GET is refused with 405 (GET is the upgrade).

    ``secret`` (the subscribers' token) is hidden in the logged path.
    """

    log: Log
    secret: str | None = None

    def __call__(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.method == "GET":
            return None
        return not_allowed(connection, self.log, "GET", "a WebSocket upgrade", self.secret)


def not_allowed(
    connection: ServerConnection,
    log: Log,
    allowed: str,
    what: str,
    secret: str | bytes | None = None,
) -> Response:
    """405 for a request whose method is not ``allowed`` (``what`` says what is expected)."""
    assert connection.request is not None
    method = connection.request.method
    why = f"method {method} not allowed (expected {allowed}, {what})"
    response = refuse(connection, log, http.HTTPStatus.METHOD_NOT_ALLOWED, why, secret)
    response.headers["Allow"] = allowed
    return response


@attrs.frozen
class log_refusals:
    """Log the refusals websockets makes itself: 403 for an origin not allowed, 426 for
    a plain HTTP request, 400 for a bad handshake (``secret`` hidden in the logged path)."""

    log: Log
    secret: str | None = None

    def __call__(
        self, connection: ServerConnection, request: Request, response: Response
    ) -> Response | None:
        status = response.status_code
        failure = connection.protocol.handshake_exc  # set by websockets' own refusals only
        if failure is None or status == http.HTTPStatus.SWITCHING_PROTOCOLS:
            return None
        if isinstance(failure, InvalidOrigin):
            why = f"origin {request.headers.get('Origin', 'none')} not allowed"
        elif status == 426:
            why = f"not a WebSocket request ({failure})"
        else:
            why = f"bad WebSocket handshake ({failure})"
        path = redacted(request.path, self.secret)
        log_refused(self.log, peer(connection), path, status, why)
        return None


# -- request bodies ------------------------------------------------------------------

MAX_HEAD = 64 * 1024
"""Bytes of a request head held at most; a longer head goes to websockets as it is."""


@attrs.frozen
class Body:
    """What a request carried: its body, or why it was not read (411, 413, 400)."""

    data: bytes = b""
    error: http.HTTPStatus | None = None
    why: str = ""


def _framing(head: bytes) -> tuple[bytes, int | None, Body | None, bool]:
    """The head without its framing headers, the body's length (None: no body), an
    error instead, and whether the client expects ``100 Continue``."""
    lines = head[:-4].split(b"\r\n")
    kept = [lines[0]]
    lengths: set[bytes] = set()
    chunked = expect = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        lower = name.strip().lower()
        if lower == b"content-length":
            lengths.add(value.strip())
        elif lower == b"transfer-encoding":
            chunked = True
        else:
            if lower == b"expect" and value.strip().lower() == b"100-continue":
                expect = True
            kept.append(line)
    stripped = b"\r\n".join(kept) + b"\r\n\r\n"
    if chunked:
        return (
            stripped,
            0,
            Body(error=http.HTTPStatus.LENGTH_REQUIRED, why="give a Content-Length, not chunks"),
            False,
        )
    if not lengths or lengths == {b"0"}:
        return head, None, None, False
    if len(lengths) > 1 or not next(iter(lengths)).isdigit():
        return (
            stripped,
            0,
            Body(error=http.HTTPStatus.BAD_REQUEST, why="invalid Content-Length"),
            False,
        )
    return stripped, int(next(iter(lengths))), None, expect


class _Reading:
    """The state of a request not yet handed to websockets."""

    __slots__ = ("buffer", "discarding", "head", "length", "max_body")

    def __init__(self, max_body: int) -> None:
        self.buffer = bytearray()
        self.head: bytes | None = None
        self.length = 0
        self.discarding = False
        self.max_body = max_body


class BodyConnection(GuardedConnection):
    """A server connection that reads the body of a request, for the steps to use, and
    is counted among the pending handshakes while it handshakes.

    See the module's docstring. Once the head of a request without a body has passed,
    data goes to websockets directly, at the cost of one attribute test per read.
    """

    request_body: Body | None = None
    """The body of the request (``POST /publish``), once read; ``None`` if it had none."""

    _reading: _Reading | None = None

    def __init__(self, *args: Any, max_body: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading = _Reading(max_body)  # dropped once the request is handed over

    def data_received(self, data: bytes) -> None:
        reading = self._reading
        if reading is None:
            super().data_received(data)
            return
        if reading.discarding:
            return
        reading.buffer += data
        if reading.head is None:
            end = reading.buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(reading.buffer) > MAX_HEAD:
                    self._pass_on()
                return
            head, length, refused, expect = _framing(bytes(reading.buffer[: end + 4]))
            if refused is not None:
                self._hand_over(head, refused)
                return
            if length is None:
                self._pass_on()
                return
            if length > reading.max_body:
                why = f"message too large ({length} bytes; at most {reading.max_body})"
                self._hand_over(head, Body(error=http.HTTPStatus.REQUEST_ENTITY_TOO_LARGE, why=why))
                return
            del reading.buffer[: end + 4]
            reading.head, reading.length = head, length
            if expect and len(reading.buffer) < length:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if len(reading.buffer) >= reading.length:
            self._hand_over(reading.head, Body(bytes(reading.buffer[: reading.length])))

    def _pass_on(self) -> None:
        """No body: websockets reads the request, and everything after, itself."""
        assert self._reading is not None
        data = bytes(self._reading.buffer)
        del self._reading  # back to the class's None
        super().data_received(data)

    def _hand_over(self, head: bytes, body: Body) -> None:
        """A request with a body: websockets reads its head, nothing after it is read."""
        assert self._reading is not None
        self._reading.discarding = True
        self._reading.buffer = bytearray()
        self.request_body = body
        super().data_received(head)


@attrs.frozen
class ConnectionFactory:
    """``create_connection`` for websockets' ``serve()``: a :class:`BodyConnection`
    counted in ``guard`` while it handshakes, that reads bodies of at most ``max_body``
    bytes; picklable, for worker processes."""

    guard: Handshakes
    max_body: int

    def __call__(self, *args: Any, **kwargs: Any) -> BodyConnection:
        return BodyConnection(*args, guard=self.guard, max_body=self.max_body, **kwargs)

    def as_factory(self) -> type[ServerConnection]:
        """This factory, typed as websockets' ``serve()`` takes it (a class or a callable)."""
        return cast(type[ServerConnection], self)
