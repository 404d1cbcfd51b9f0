"""The hub's shared deadline timers (``_shell/timers.py``), on scripted transports and a
virtual clock: a batch or a throttle slot costs one timer for every subscriber due at
that time, and no task. Time moves only when the test moves it; nothing sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import pytest
from websockets.asyncio.connection import Connection
from websockets.asyncio.server import ServerConnection
from websockets.protocol import State
from websockets.server import ServerProtocol

from wsfanout import Close, Decision, Policy, Snapshot, as_policy
from wsfanout._shell.fanout import Fanout
from wsfanout._shell.link import Link
from wsfanout._shell.timers import RESOLUTION
from wsfanout.lowlevel import Action, Outbox, make_message
from wsfanout.policies import Batch, DropOldest, SkipToLatest, Throttle

from .test_fast_path import HIGH, LOW, ScriptedTransport


class VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock the test sets, counting the timers and tasks it makes."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.timers = 0
        self.tasks = 0

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Any, *args: Any, context: Any = None) -> Any:  # type: ignore[override]
        self.timers += 1
        return super().call_at(when, callback, *args, context=context)

    def create_task(self, coro: Any, **kwargs: Any) -> Any:
        self.tasks += 1
        return super().create_task(coro, **kwargs)

    def pending_timers(self) -> int:
        scheduled: list[asyncio.TimerHandle] = self._scheduled  # type: ignore[attr-defined]
        return sum(1 for handle in scheduled if not handle.cancelled())


@contextmanager
def virtual_loop() -> Iterator[VirtualLoop]:
    loop = VirtualLoop()
    try:
        yield loop
    finally:
        loop.close()


async def advance(loop: VirtualLoop, seconds: float) -> None:
    """Move the clock and let every callback due by then run (a yield, no sleep)."""
    loop.now += seconds
    for _ in range(3):  # due timers, then what they scheduled with call_soon
        await asyncio.sleep(0)


def make_link(fanout: Fanout, policy: Policy, topics: frozenset[str] | None = None) -> Link:
    """A subscriber of ``fanout`` on an open connection with a scripted transport."""
    protocol = ServerProtocol()
    protocol.state = State.OPEN
    ws = ServerConnection(protocol, None)  # type: ignore[arg-type]
    Connection.connection_made(ws, ScriptedTransport(0, False))
    ws.transport.set_write_buffer_limits(high=HIGH, low=LOW)
    link = Link(fanout, ws, policy, topics, close_timeout=1.0)
    fanout.attach(link)
    return link


def make_links(fanout: Fanout, policy: Policy, count: int) -> list[Link]:
    return [make_link(fanout, policy) for _ in range(count)]


def writes(link: Link) -> list[bytes]:
    transport = link.transport
    assert isinstance(transport, ScriptedTransport)
    return transport.writes


def run(loop: VirtualLoop, test: Callable[[], Coroutine[Any, Any, None]]) -> None:
    loop.run_until_complete(test())


def publish(fanout: Fanout, loop: VirtualLoop, text: str, seq: int) -> None:
    fanout.deliver(make_message(text, seq=seq, time=loop.now), loop.now)
    fanout.corker.end_tick()


def test_a_batch_deadline_is_one_timer_for_every_subscriber_and_wakes_no_task() -> None:
    with virtual_loop() as loop:

        async def test() -> None:
            fanout = Fanout(cork=True)
            links = make_links(fanout, Batch(max_messages=16, max_delay=0.01), 200)
            timers_before, tasks_before = loop.timers, loop.tasks
            for batch in range(5):
                for n in range(3):
                    publish(fanout, loop, f"b{batch}m{n}", 3 * batch + n)
                    await advance(loop, 0.001)
                assert all(len(writes(link)) == batch for link in links)  # still waiting
                await advance(loop, 0.01)
                for link in links:
                    assert len(writes(link)) == batch + 1
                    assert writes(link)[-1].endswith(f"b{batch}m0\nb{batch}m1\nb{batch}m2".encode())
            # One timer per batch for all 200 subscribers, and not one task.
            assert loop.timers - timers_before == 5
            assert loop.tasks - tasks_before == 0
            assert all(link.relay is None for link in links)
            assert len(fanout.timers) == 0
            assert loop.pending_timers() == 0

        run(loop, test)


def test_a_throttle_slot_is_shared_by_subscribers_due_in_the_same_resolution_step() -> None:
    with virtual_loop() as loop:

        async def test() -> None:
            fanout = Fanout(cork=True)
            policy = SkipToLatest() | Throttle(rate=10.0)
            links = make_links(fanout, policy, 50)
            for n, link in enumerate(links):
                # Last sends spread over less than one resolution step: one slot for all.
                link.outbox.last_send = loop.now - 0.05 + 0.0002 + n * RESOLUTION / 100
            timers_before, tasks_before = loop.timers, loop.tasks
            for seq in range(5):
                publish(fanout, loop, f"v{seq}", seq)
            await advance(loop, 0)
            assert all(writes(link) == [] for link in links)
            assert fanout.timers.timers == 1
            await advance(loop, 0.05 + RESOLUTION)
            for link in links:
                assert len(writes(link)) == 1
                assert writes(link)[0].endswith(b"v4")
            assert loop.timers - timers_before == 1
            assert loop.tasks - tasks_before == 0

        run(loop, test)


@pytest.mark.parametrize("how", ["connection lost", "hub closing"])
def test_a_closed_subscriber_leaves_no_timer_behind(how: str) -> None:
    with virtual_loop() as loop:

        async def test() -> None:
            fanout = Fanout(cork=True)
            links = make_links(fanout, Batch(max_messages=16, max_delay=0.01), 3)
            publish(fanout, loop, "waits", 0)
            await advance(loop, 0)
            assert fanout.timers.timers == 1
            assert len(fanout.timers) == 3
            for link in links:
                if how == "connection lost":
                    link.connection_lost()
                else:
                    link.close(Close(1001, "", cause="hub closed"))
            assert len(fanout.timers) == 0
            assert fanout.timers.timers == 0
            assert loop.pending_timers() == 0
            for link in links:
                if link.relay is not None:
                    link.relay.cancel()
            await asyncio.gather(
                *(link.relay for link in links if link.relay), return_exceptions=True
            )

        run(loop, test)


def test_a_link_moves_to_its_new_deadline_and_the_old_timer_goes_when_it_empties() -> None:
    with virtual_loop() as loop:

        async def test() -> None:
            fanout = Fanout(cork=True)
            (early, late) = make_links(fanout, Batch(max_messages=16, max_delay=0.01), 2)
            timers = fanout.timers
            timers.at(early, loop.now + 0.004)
            timers.at(late, loop.now + 0.004)
            assert timers.timers == 1
            timers.at(late, loop.now + 0.008)
            assert timers.timers == 2
            timers.at(early, loop.now + 0.008)  # the first deadline is left with nobody
            assert timers.timers == 1
            assert loop.pending_timers() == 1
            timers.discard(early)
            timers.discard(late)
            assert timers.timers == 0
            assert loop.pending_timers() == 0

        run(loop, test)


def test_a_full_write_buffer_still_gets_a_relay_task_that_awaits_the_drain() -> None:
    with virtual_loop() as loop:

        async def test() -> None:
            fanout = Fanout(cork=True)
            (link,) = make_links(fanout, DropOldest(max_messages=8), 1)
            transport = link.transport
            assert isinstance(transport, ScriptedTransport)
            transport.buffered = HIGH + 1
            publish(fanout, loop, "queued", 0)
            assert link.relay is not None  # a drain is awaited by a task, as before
            assert len(fanout.timers) == 0
            link.relay.cancel()
            await asyncio.gather(link.relay, return_exceptions=True)

        run(loop, test)


def test_timers_that_fired_early_by_the_clock_resolution_still_flush() -> None:
    # asyncio runs a timer up to its clock resolution early; the pump takes the deadline
    # as now then, or the batch would wait for another timer.
    with virtual_loop() as loop:

        async def test() -> None:
            fanout = Fanout(cork=True)
            (link,) = make_links(fanout, Batch(max_messages=16, max_delay=0.01), 1)
            publish(fanout, loop, "one", 0)
            await advance(loop, 0)
            key = link.due
            assert key is not None
            loop.now = key * RESOLUTION - loop._clock_resolution / 2  # type: ignore[attr-defined]
            await advance(loop, 0)
            assert len(writes(link)) == 1
            assert len(fanout.timers) == 0

        run(loop, test)


def test_a_batch_costs_each_subscriber_one_turn_the_offer_takes_the_first() -> None:
    with virtual_loop() as loop:

        async def test() -> None:
            fanout = Fanout(cork=True)
            links = make_links(fanout, Batch(max_messages=16, max_delay=0.01), 20)
            turns = 0
            real = Outbox.next_action

            def counted(outbox: Outbox, now: float, write_buffer: int) -> Action:
                nonlocal turns
                turns += 1
                return real(outbox, now, write_buffer)

            with mock.patch.object(Outbox, "next_action", counted):
                publish(fanout, loop, "first", 0)  # each offer plans its wait: no turn
                publish(fanout, loop, "second", 1)
                assert turns == 0
                assert fanout.timers.timers == 1
                await advance(loop, 0.01)
            # One turn each at the deadline: the write leaves nothing, so no second ask.
            assert turns == len(links)
            assert all(writes(link)[-1].endswith(b"first\nsecond") for link in links)
            assert len(fanout.timers) == 0

        run(loop, test)


def test_a_policy_raising_in_the_turn_an_offer_takes_fails_as_in_the_relay(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def lingers_then_raises(snapshot: Snapshot) -> Decision:
        if snapshot.queued_messages:
            raise RuntimeError("broken policy")
        return Decision(send_at=snapshot.now + 0.01)

    made: list[Link] = []
    with virtual_loop() as loop:

        async def test() -> None:
            fanout = Fanout(cork=True)
            (broken,) = make_links(fanout, as_policy(lingers_then_raises), 1)
            (healthy,) = make_links(fanout, Batch(max_messages=16, max_delay=0.01), 1)
            made.append(broken)
            publish(fanout, loop, "m", 0)
            assert broken.outbox.closing is not None  # discarded, its connection aborted
            assert broken.transport.is_closing()
            await advance(loop, 0.01)
            assert writes(healthy)[-1].endswith(b"m")

        run(loop, test)
    # The message of a relay's failure, as when the pump asked; not a delivery's.
    assert [r.getMessage() for r in caplog.records if r.name == "wsfanout"] == [
        f"relay failed for {made[0]!r}; aborting the connection"
    ]
