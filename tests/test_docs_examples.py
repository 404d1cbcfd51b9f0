"""The code in the docs runs: the tutorial's files are the examples, and they work.

Every ``python`` block of the pages listed in ``EXECUTED`` is executed, in order, in
one namespace per page; the tutorial's listings must be byte for byte the files in
examples/, which are run here against a real server and real clients on 127.0.0.1.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import doctest
import inspect
import json
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

import tutorial_server  # noqa: E402
import tutorial_slow_client  # noqa: E402

from wsfanout import Close, Policy  # noqa: E402
from wsfanout.lowlevel import (  # noqa: E402
    CloseAction,
    Offer,
    Outbox,
    Wait,
    make_message,
)
from wsfanout.policies import ConflateByKey, Disconnect, DropNewest, DropOldest  # noqa: E402

GUARD = 10.0
"""Seconds any single wait may take before the test fails; a guard, not a schedule."""

FENCE = re.compile(r"^```(\w+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)

EXECUTED = [
    "index.md",
    "tutorial.md",
    "how-to/policies.md",
    "how-to/custom-policy.md",
    "how-to/topics.md",
    "how-to/subscribe.md",
    "how-to/statistics.md",
    "how-to/observability.md",
    "how-to/shutdown.md",
    "how-to/escalate.md",
    "how-to/pacing.md",
    "how-to/resume.md",
    "how-to/gap-notices.md",
    "how-to/lossless.md",
    "how-to/change-policy.md",
    "how-to/resume-in-a-browser.md",
    "how-to/kernel-buffers.md",
    "reference.md",
    "explanation.md",
    "js-client.md",
]


def blocks(page: str, language: str) -> list[str]:
    """The fenced blocks of ``language`` in docs/``page``, in order."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return [body for lang, body in FENCE.findall(text) if lang == language]


LISTINGS = {
    (EXAMPLES / f"{module.__name__}.py").read_text(encoding="utf-8"): module
    for module in (tutorial_server, tutorial_slow_client)
}
"""Blocks that list an example file: running one means importing that file."""


def run_page(page: str) -> dict[str, object]:
    """Run the page's blocks in order, as one session; return its namespace.

    ``python`` blocks are executed; ``pycon`` blocks are doctests whose output must
    match what is shown.
    """
    namespace: dict[str, object] = {"__name__": f"docs.{page}"}
    text = (DOCS / page).read_text(encoding="utf-8")
    for number, (language, source) in enumerate(FENCE.findall(text), 1):
        name = f"docs/{page}, block {number}"
        if language == "python" and source in LISTINGS:
            namespace.update(vars(LISTINGS[source]))
        elif language == "python":
            exec(compile(source, name, "exec"), namespace)
        elif language == "pycon":
            run_doctest(source, namespace, name)
    return namespace


def run_doctest(source: str, namespace: dict[str, object], name: str) -> None:
    test = doctest.DocTestParser().get_doctest(source, namespace, name, name, 0)
    output: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    result = runner.run(test, out=output.append, clear_globs=False)
    namespace.update(test.globs)  # the DocTest ran on a copy
    assert result.failed == 0, "".join(output)


@pytest.mark.parametrize("page", EXECUTED)
def test_every_code_block_of_the_page_runs(page: str) -> None:
    run_page(page)


def test_the_pages_have_code_for_the_runner_to_find() -> None:
    found = {page: len(blocks(page, "python") + blocks(page, "pycon")) for page in EXECUTED}
    prose = {"reference.md", "explanation.md", "js-client.md"}  # no Python code to run
    assert all(found[page] for page in EXECUTED if page not in prose), found
    assert sum(found.values()) >= 25, found


def test_the_block_runner_reports_a_failing_block() -> None:
    source = "```python\nx = 1\n```\n\n```python\nassert x == 2\n```\n"
    namespace: dict[str, object] = {}
    found = [body for lang, body in FENCE.findall(source) if lang == "python"]
    assert found == ["x = 1\n", "assert x == 2\n"]
    exec(found[0], namespace)
    with pytest.raises(AssertionError):
        exec(found[1], namespace)


def test_the_doctest_runner_reports_wrong_output() -> None:
    namespace: dict[str, object] = {"x": 1}
    run_doctest(">>> y = x + 1\n>>> y\n2\n", namespace, "right")
    assert namespace["y"] == 2, "names a doctest defines stay for the next block"
    with pytest.raises(AssertionError, match=r"Expected:\s+3\s+Got:\s+2"):
        run_doctest(">>> x + 1\n3\n", namespace, "wrong")


def test_the_tutorial_lists_the_example_files_verbatim() -> None:
    python = blocks("tutorial.md", "python")
    assert python[0] == (EXAMPLES / "tutorial_server.py").read_text(encoding="utf-8")
    assert python[1] == (EXAMPLES / "tutorial_slow_client.py").read_text(encoding="utf-8")
    html = blocks("tutorial.md", "html")
    assert html == [(EXAMPLES / "tutorial_page.html").read_text(encoding="utf-8")]


# -- the tutorial's server, for real ---------------------------------------------------


@contextlib.asynccontextmanager
async def tutorial_server_on_a_free_port(policy: Policy) -> AsyncIterator[int]:
    """Run the tutorial's ``main()`` on 127.0.0.1; stop it as Ctrl-C would (cancel)."""
    ready: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(
        tutorial_server.main("127.0.0.1", 0, policy=policy, on_ready=ready.set_result)
    )
    try:
        yield await asyncio.wait_for(ready, GUARD)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, GUARD)


async def http_get(port: int, path: str) -> tuple[str, str]:
    """The status line and body of a plain HTTP/1.1 GET."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    response = await asyncio.wait_for(reader.read(), GUARD)
    writer.close()
    await writer.wait_closed()
    head, _, body = response.decode().partition("\r\n\r\n")
    return head.splitlines()[0], body


async def test_tutorial_server_streams_prices_and_closes_clients_with_1001_on_stop() -> None:
    server = tutorial_server_on_a_free_port(tutorial_server.POLICY)
    port = await server.__aenter__()
    try:
        client = await connect(f"ws://127.0.0.1:{port}/prices")
        updates = [json.loads(await asyncio.wait_for(client.recv(), GUARD)) for _ in range(5)]
        status, body = await http_get(port, "/stats")
    finally:
        await server.__aexit__(None, None, None)  # as Ctrl-C: the hub closes every client
    await asyncio.wait_for(client.wait_closed(), GUARD)
    assert client.close_code == 1001
    assert status == "HTTP/1.1 200 OK"
    statistics = json.loads(body)
    assert statistics["hub"]["subscribers"] == 1
    [(name, counters)] = statistics["clients"].items()
    assert name.startswith("/prices ")
    assert counters["sent"] >= 5
    assert all(update["symbol"] in tutorial_server.SYMBOLS for update in updates)
    assert all(isinstance(update["price"], float) for update in updates)
    seqs = [update["seq"] for update in updates]
    assert seqs == list(range(seqs[0], seqs[0] + 5)), "a client that keeps up gets every update"


async def test_tutorial_server_serves_the_page_over_plain_http() -> None:
    async with tutorial_server_on_a_free_port(tutorial_server.POLICY) as port:
        status, body = await http_get(port, "/")
    assert status == "HTTP/1.1 200 OK"
    assert body == (EXAMPLES / "tutorial_page.html").read_text(encoding="utf-8")
    assert "new WebSocket(`ws://${location.host}/prices`)" in body


async def test_tutorials_throttled_policy_sends_arrays_of_the_latest_prices() -> None:
    namespace = run_page("tutorial.md")
    throttled = namespace["POLICY"]
    assert isinstance(throttled, Policy)
    assert throttled != tutorial_server.POLICY, "the tutorial's last step changes the policy"
    async with (
        tutorial_server_on_a_free_port(throttled) as port,
        connect(f"ws://127.0.0.1:{port}/prices") as client,
    ):
        frames = [json.loads(await asyncio.wait_for(client.recv(), GUARD)) for _ in range(3)]
    arrays = [frame for frame in frames if isinstance(frame, list)]
    assert arrays, f"no batched frame among {frames!r}"
    for array in arrays:
        symbols = [update["symbol"] for update in array]
        assert len(symbols) == len(set(symbols)), "conflation keeps one price per symbol"


async def test_slow_client_prints_what_it_reads(capsys: pytest.CaptureFixture[str]) -> None:
    async with tutorial_server_on_a_free_port(tutorial_server.POLICY) as port:
        await asyncio.wait_for(tutorial_slow_client.read_slowly("127.0.0.1", port, 0.0, 3), GUARD)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all(json.loads(line)["symbol"] in tutorial_server.SYMBOLS for line in lines)


# -- the custom policies of docs/how-to/custom-policy.md, in the real core ----------------

HIGH, LOW, STALLED = 32_768, 8_192, 40_000
"""Write-buffer marks as websockets sets them, and a buffer size of a client not reading."""


def policy_from(page: str, expression: str) -> Policy:
    namespace = run_page(page)
    policy = eval(expression, namespace)
    assert isinstance(policy, Policy)
    return policy


def test_disconnect_after_drops_closes_on_the_third_drop_within_ten_seconds() -> None:
    policy = policy_from(
        "how-to/custom-policy.md", "DropOldest(max_messages=2) | DisconnectAfterDrops()"
    )
    outbox = Outbox(policy, high=HIGH, low=LOW)
    outcomes = []
    for seq, now in enumerate([0.0, 0.0, 0.0, 6.0, 12.0, 13.0]):
        outcomes.append(outbox.offer(make_message("m", seq=seq, time=now), now, STALLED))
        if outbox.closing is None:
            assert isinstance(outbox.next_action(now, STALLED), Wait)
    # Drops at 0, 6 and 12: the first has left the window by 12. The one at 13 closes.
    assert [outbox.stats(13.0).dropped_oldest, outbox.closed_by_policy] == [4, True]
    assert outcomes[-1] is Offer.CLOSE
    assert Offer.CLOSE not in outcomes[:-1]
    assert outbox.closing == Close(1013, "too many messages lost")


def test_close_when_stuck_closes_a_stalled_subscriber_that_keeps_dropping() -> None:
    policy = policy_from("how-to/custom-policy.md", "history")
    outbox = Outbox(policy, high=HIGH, low=LOW)
    assert outbox.offer(make_message("first", seq=0, time=0.0), 0.0, 0) is Offer.WRITE
    actions = []
    for second in range(1, 31):
        now = float(second)
        outbox.offer(make_message("m", seq=second, time=now), now, STALLED)
        actions.append(outbox.next_action(now, STALLED))
    assert actions[0] == Wait(30.0, drain=True), "the relay sleeps until the deadline"
    assert all(isinstance(action, Wait) for action in actions[:-1])
    assert actions[-1] == CloseAction(Close(1013, "no progress"))
    assert outbox.stats(30.0).dropped_oldest == 0  # 29 queued of 256: nothing evicted yet


def test_max_lag_closes_a_stuck_client_next_to_drop_oldest_as_the_policies_page_says() -> None:
    outbox = Outbox(DropOldest(max_messages=256) | Disconnect(max_lag=5.0), high=HIGH, low=LOW)
    closed_at = None
    for seq in range(60 * 100):  # one minute at 100 messages a second, never read
        now = seq / 100
        outbox.offer(make_message("m", seq=seq, time=now), now, STALLED)
        if isinstance(outbox.next_action(now, STALLED), CloseAction):
            closed_at = now
            break
        assert outbox.stats(now).queued_messages <= 256
    assert closed_at == 5.0
    assert outbox.stats(closed_at).dropped_oldest == 501 - 256  # offered 0 to 500, kept 256


# -- README and links --------------------------------------------------------------------

LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def broken_links(page: Path) -> list[str]:
    """Relative link targets of ``page`` that do not exist."""
    text = page.read_text(encoding="utf-8")
    targets = [target for target in LINK.findall(text) if "://" not in target]
    return [target for target in targets if not (page.parent / target).exists()]


def test_links_between_the_pages_lead_somewhere() -> None:
    pages = [ROOT / "README.md", *(DOCS / page for page in EXECUTED)]
    assert {str(page.relative_to(ROOT)): broken_links(page) for page in pages} == {
        str(page.relative_to(ROOT)): [] for page in pages
    }


def test_the_link_checker_reports_a_missing_page(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("[here](page.md), [there](missing.md#top), [web](https://example.org)")
    assert broken_links(page) == ["missing.md"]


def test_readme_example_defines_the_server_and_quick_start_has_two_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [example] = [body for lang, body in FENCE.findall(readme) if lang == "python"]
    tree = ast.parse(example)
    *setup, run = tree.body
    assert ast.unparse(run) == "asyncio.run(main())"
    namespace: dict[str, object] = {}
    exec(compile(ast.Module(body=setup, type_ignores=[]), "README.md", "exec"), namespace)
    assert inspect.iscoroutinefunction(namespace["handler"])
    assert inspect.iscoroutinefunction(namespace["main"])
    [quick_start] = [body for lang, body in FENCE.findall(readme) if lang == "sh"]
    commands = [line.partition("#")[0].strip() for line in quick_start.splitlines()]
    assert commands == ["make demo", "make test"]


# -- claims the pages make about subscriber.send() -----------------------------------------


def fill(outbox: Outbox, count: int, *, droppable: bool = True) -> None:
    for seq in range(count):
        message = make_message(f"m{seq}", seq=seq, time=0.0, droppable=droppable)
        assert outbox.offer(message, 0.0, STALLED) is not Offer.CLOSE


def test_send_on_a_full_queue_closes_the_subscriber_under_a_policy_that_does_not_drop() -> None:
    outbox = Outbox(ConflateByKey(max_messages=2), high=HIGH, low=LOW)
    fill(outbox, 2)
    mine = make_message("reply", seq=9, time=0.0, droppable=False)
    assert outbox.offer(mine, 0.0, STALLED) is Offer.CLOSE
    assert outbox.closing == Close(1013, "queue full")


@pytest.mark.parametrize("policy", [DropOldest(max_messages=2), DropNewest(max_messages=2)])
def test_send_on_a_full_queue_evicts_the_oldest_published_message(policy: Policy) -> None:
    outbox = Outbox(policy, high=HIGH, low=LOW)
    fill(outbox, 2)
    mine = make_message("reply", seq=9, time=0.0, droppable=False)
    assert outbox.offer(mine, 0.0, STALLED) is not Offer.CLOSE
    assert [message.payload for message in outbox.queue] == [b"m1", b"reply"]
    assert outbox.stats(0.0).dropped_oldest == 1


def test_send_closes_the_subscriber_when_only_sent_messages_are_queued() -> None:
    outbox = Outbox(DropOldest(max_messages=2), high=HIGH, low=LOW)
    fill(outbox, 2, droppable=False)
    mine = make_message("reply", seq=9, time=0.0, droppable=False)
    assert outbox.offer(mine, 0.0, STALLED) is Offer.CLOSE


def test_drop_oldest_refuses_a_message_with_no_room_next_to_sent_messages() -> None:
    outbox = Outbox(DropOldest(max_messages=2), high=HIGH, low=LOW)
    fill(outbox, 2, droppable=False)
    published = make_message("news", seq=9, time=0.0)
    assert outbox.offer(published, 0.0, STALLED) is Offer.NONE
    stats = outbox.stats(0.0)
    assert (stats.dropped_newest, stats.dropped_oldest, stats.queued_messages) == (1, 0, 2)
