"""The pure parts of ``serve``'s HTTP side: the chains of steps and a request's framing."""

from __future__ import annotations

import asyncio
import http
from typing import Any

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from wsfanout._cli.http import Body, ResponseSteps, Steps, _framing

ANSWER = Response(200, "OK", Headers())


def recorder(calls: list[str], name: str, answer: Response | None) -> Any:
    def step(*args: object) -> Response | None:
        calls.append(name)
        return answer

    return step


def async_recorder(calls: list[str], name: str, answer: Response | None) -> Any:
    async def step(*args: object) -> Response | None:
        calls.append(name)
        await asyncio.sleep(0)  # a step that really awaits something
        return answer

    return step


def test_request_steps_run_in_order_until_one_answers() -> None:
    calls: list[str] = []
    chain = Steps(
        [recorder(calls, "a", None), recorder(calls, "b", ANSWER), recorder(calls, "c", None)]
    )
    request = Request("/", Headers())
    assert chain(None, request) is ANSWER  # type: ignore[arg-type]
    assert calls == ["a", "b"]
    calls.clear()
    assert Steps([recorder(calls, "a", None)])(None, request) is None  # type: ignore[arg-type]
    assert calls == ["a"]


async def test_an_async_step_turns_the_rest_of_the_chain_async() -> None:
    calls: list[str] = []
    request = Request("/", Headers())
    chain = Steps(
        [
            recorder(calls, "a", None),
            async_recorder(calls, "b", None),
            recorder(calls, "c", ANSWER),
            recorder(calls, "d", None),
        ]
    )
    pending = chain(None, request)  # type: ignore[arg-type]
    assert calls == ["a"]  # b returned a coroutine, which runs once the chain is awaited
    assert await pending is ANSWER  # type: ignore[misc]
    assert calls == ["a", "b", "c"]
    calls.clear()
    first = Steps([async_recorder(calls, "a", ANSWER), recorder(calls, "b", None)])
    assert await first(None, request) is ANSWER  # type: ignore[arg-type, misc]
    assert calls == ["a"]


async def test_response_steps_stop_at_the_first_replacement() -> None:
    calls: list[str] = []
    chain = ResponseSteps(
        [recorder(calls, "a", None), async_recorder(calls, "b", ANSWER), recorder(calls, "c", None)]
    )
    assert await chain(None, Request("/", Headers()), ANSWER) is ANSWER  # type: ignore[arg-type]
    assert calls == ["a", "b"]


def test_a_head_is_passed_on_untouched_unless_it_announces_a_body() -> None:
    head = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    assert _framing(head) == (head, None, None, False)
    head = b"POST /publish HTTP/1.1\r\ncontent-length: 5\r\nExpect: 100-continue\r\n\r\n"
    assert _framing(head) == (
        b"POST /publish HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
        5,
        None,
        True,
    )
    stripped, _, refused, _ = _framing(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    assert stripped == b"POST / HTTP/1.1\r\n\r\n"
    assert refused == Body(
        error=http.HTTPStatus.LENGTH_REQUIRED, why="give a Content-Length, not chunks"
    )
    for lengths in (b"Content-Length: 1\r\nContent-Length: 2", b"Content-Length: -3"):
        _, _, refused, _ = _framing(b"POST / HTTP/1.1\r\n" + lengths + b"\r\n\r\n")
        assert refused is not None
        assert refused.error == http.HTTPStatus.BAD_REQUEST
