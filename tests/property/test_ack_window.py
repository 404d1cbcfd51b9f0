"""Acknowledgements, property-tested on the core alone: whatever is published and
however the client takes and acknowledges, ``Adaptive`` writes a frame only while at
most a window is untaken, every message arrives once and in order, and what its
acknowledgements say matches what it took."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given
from hypothesis import strategies as st

from wsfanout import Policy
from wsfanout.lowlevel import (
    Batched,
    CloseAction,
    Message,
    Offer,
    Outbox,
    Wait,
    Write,
    ack_request,
    make_control,
    make_message,
    window,
)
from wsfanout.policies import Adaptive, ConflateByKey, DropOldest

POLICIES = [
    ConflateByKey(max_messages=64) | Adaptive(interval=0.05, min_bytes=256, max_bytes=4096),
    DropOldest(max_messages=64) | Adaptive(interval=0.1, hold=0.5, probe=1.0),
]

steps = st.lists(
    st.one_of(
        st.tuples(st.just("publish"), st.integers(1, 8), st.integers(1, 3000)),
        st.tuples(st.just("advance"), st.floats(0.001, 0.5)),
        st.tuples(st.just("take"), st.integers(0, 6)),
        st.just(("ack",)),
        st.just(("turn",)),
    ),
    max_size=80,
)


@dataclass
class Client:
    """The far end: frames arrive in order, the application takes some, and says so."""

    arrived: list[Message] = field(default_factory=list)
    taken: int = 0
    said: int = 0

    def take(self, count: int) -> None:
        self.taken = min(len(self.arrived), self.taken + count)


def seqs(frame: Message) -> list[int]:
    if isinstance(frame, Batched):
        return [part.seq for part in frame.parts]
    return [] if frame.control else [frame.seq]


@given(st.sampled_from(POLICIES), steps)
def test_frames_leave_only_within_the_window_and_everything_arrives_in_order(
    policy: Policy, plan: list[tuple[object, ...]]
) -> None:
    outbox = Outbox(policy, high=65536, low=16384)
    client = Client()
    now = 0.0
    untaken_at_writes: list[tuple[int, float]] = []

    def acked_bytes() -> int:
        return sum(len(f.payload) for f in client.arrived[: client.said])

    def wrote(frame: Message) -> None:
        acks = outbox.acks
        assert acks is not None
        if acks.heard:
            # What the policy was asked about: what was written before this frame and
            # not acknowledged (the window counts the request too).
            before = sum(len(f.payload) for f in client.arrived) - acked_bytes()
            untaken_at_writes.append((before, window(acks.rate)))
        client.arrived.append(frame)

    outbox.ask_acks(now)
    request = make_control(ack_request(0.05), time=now)
    assert outbox.send_control(request, now, 0) is Offer.WRITE
    client.arrived.append(request)
    seq = 0
    for step in plan:
        kind = step[0]
        if kind == "publish":
            count, size = step[1], step[2]
            assert isinstance(count, int)
            assert isinstance(size, int)
            for _ in range(count):
                message = make_message("x" * size, seq=seq, time=now, key=str(seq % 5))
                seq += 1
                if outbox.offer(message, now, 0) is Offer.WRITE:
                    wrote(message)
        elif kind == "advance":
            delta = step[1]
            assert isinstance(delta, float)
            now += delta
        elif kind == "take":
            count = step[1]
            assert isinstance(count, int)
            client.take(count)
        elif kind == "ack":
            client.said = client.taken
            outbox.acknowledge(client.taken, now)
        else:
            for _ in range(50):
                action = outbox.next_action(now, 0)
                if isinstance(action, Write):
                    for frame in action.frames:
                        wrote(frame)
                    continue
                assert not isinstance(action, CloseAction)
                break
            else:
                raise AssertionError("the relay never stopped writing at one instant")
            if isinstance(action, Wait):
                assert action.until > now or action.drain
        acks = outbox.acks
        assert acks is not None
        if acks.heard:
            assert acks.unacked == sum(len(f.payload) for f in client.arrived) - acked_bytes()
    for before, allowed in untaken_at_writes:
        assert before <= allowed, (before, allowed)
    received = [s for frame in client.arrived for s in seqs(frame)]
    assert received == sorted(set(received))  # once each, in publish order
