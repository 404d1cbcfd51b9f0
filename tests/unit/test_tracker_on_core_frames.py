"""The client's tracker (``wsfanout.client.Tracker``) on the frames a real core writes:
an outbox under ``Notify()``, framed as a ``wsfanout.v1`` connection receives them.
Every loss arrives announced, and the client counts what the core counts."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from harness.v1_reader import Reader
from wsfanout.lowlevel import IDLE, Message, Outbox, Wait, Write, make_message
from wsfanout.policies import DropNewest, DropOldest, Notify, SkipToLatest

HIGH, LOW = 1000, 100


def v1(frame: Message) -> str:
    return frame.v1_payload.decode()


def _pending(outbox: Outbox) -> int:
    """Losses the core recorded but has not announced yet (still in its ledger)."""
    ledger = outbox.queue.ledger
    return 0 if ledger is None else sum(notice.count for notice in ledger.take())


@given(
    policy=st.sampled_from(
        [
            DropOldest(max_messages=3) | Notify(),
            DropNewest(max_messages=3) | Notify(),
            SkipToLatest() | Notify(),
        ]
    ),
    script=st.lists(st.tuples(st.sampled_from(["p", "q"]), st.booleans()), max_size=60),
)
def test_what_a_notifying_core_writes_leaves_no_gap_unannounced(
    policy: object, script: list[tuple[str, bool]]
) -> None:
    outbox = Outbox(policy, high=HIGH, low=LOW)  # type: ignore[arg-type]
    reader = Reader()
    offsets = {"p": 0, "q": 0}
    for seq, (topic, stalled) in enumerate(script):
        offsets[topic] += 1
        message = make_message(
            f"{seq}", seq=seq, time=0.0, topic=topic, offset=offsets[topic], epoch="e1"
        )
        buffered = HIGH + 1 if stalled else 0
        frames: list[Message] = []
        if outbox.offer(message, 0.0, buffered).name == "WRITE":
            frames.append(message)
        while not stalled:
            action = outbox.next_action(0.0, 0)
            if not isinstance(action, Write):
                assert action is IDLE or isinstance(action, Wait)
                break
            frames += action.frames
        for frame in frames:
            reader.feed(v1(frame))
    assert all(gap.source == "notice" for gap in reader.gaps), reader.gaps
    stats = outbox.stats(0.0)
    assert reader.lost == stats.dropped - stats.disconnected - _pending(outbox)
    assert len(reader.received) == stats.sent


def test_a_core_without_notices_leaves_the_client_to_find_its_losses() -> None:
    """The broken input for the test above: with no ``Notify()``, losses show only as
    holes in the offsets, and the reader says so."""
    outbox = Outbox(DropOldest(max_messages=1), high=HIGH, low=LOW)
    reader = Reader()
    first = make_message("1", seq=1, time=0.0, offset=1, epoch="e1")
    assert outbox.offer(first, 0.0, 0).name == "WRITE"
    reader.feed(v1(first))
    for offset in range(2, 6):  # stalled: the queue keeps the newest only
        message = make_message(str(offset), seq=offset, time=0.0, offset=offset, epoch="e1")
        outbox.offer(message, 0.0, HIGH + 1)
    action = outbox.next_action(0.0, 0)
    assert isinstance(action, Write)
    for frame in action.frames:
        reader.feed(v1(frame))
    assert [gap.source for gap in reader.gaps] == ["offsets"]
    assert reader.lost == 3
