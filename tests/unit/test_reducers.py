"""ConflateByKey(reduce=...): a key's updates merge into the queued one instead of replacing it."""

from __future__ import annotations

import json

import pytest

from wsfanout import PolicyConflictError, PolicyError
from wsfanout.lowlevel import Merged, MessageQueue, Outbox, Write, make_message, resolve_rules
from wsfanout.policies import REDUCERS, Batch, ConflateByKey, DropOldest
from wsfanout.testing import FoldedPerKey, NewestDelivered


def fold(name: str, *values: object) -> object:
    reduce = REDUCERS[name]
    result: str = json.dumps(values[0])
    for value in values[1:]:
        result = reduce(result, json.dumps(value))
    return json.loads(result)


def test_json_merge_merges_object_fields_the_newer_winning() -> None:
    assert fold("json-merge", {"bid": 1, "ask": 2}, {"ask": 3}, {"last": 4}) == {
        "bid": 1,
        "ask": 3,
        "last": 4,
    }
    assert fold("json-merge", {"a": {"x": 1}}, {"a": {"y": 2}}) == {"a": {"y": 2}}  # shallow
    assert fold("json-merge", {"a": 1}, [1, 2]) == [1, 2]  # not both objects: the newer


def test_sum_adds_numbers_and_numeric_fields() -> None:
    assert fold("sum", 1, 2, 3.5) == 6.5
    assert fold("sum", {"views": 2, "page": "a"}, {"views": 3, "page": "b", "likes": 1}) == {
        "views": 5,
        "page": "b",
        "likes": 1,
    }
    assert fold("sum", {"n": True}, {"n": True}) == {"n": True}  # booleans are not numbers


def test_max_keeps_the_largest_number() -> None:
    assert fold("max", 3, 9, 4) == 9
    assert fold("max", {"high": 7, "at": "t1"}, {"high": 5, "at": "t2"}) == {
        "high": 7,
        "at": "t2",
    }


def test_a_value_that_is_not_json_of_the_expected_shape_keeps_the_newer() -> None:
    for name in REDUCERS:
        assert REDUCERS[name]("not json", '{"a": 1}') == '{"a": 1}'
        assert REDUCERS[name](b"\xff", b"2") == b"2"
    assert REDUCERS["sum"](b"1", b"2") == b"3"  # binary in, binary out


def test_the_queue_folds_a_key_s_updates_in_publish_order() -> None:
    queue = MessageQueue(resolve_rules(ConflateByKey(reduce="sum")))
    for seq, (key, delta) in enumerate([("a", 1), ("b", 10), ("a", 2), ("c", 5), ("a", 4)]):
        queue.push(make_message(json.dumps(delta), seq=seq, time=0.0, key=key))
    queued = list(queue)
    assert [(m.key, m.payload) for m in queued] == [("b", b"10"), ("c", b"5"), ("a", b"7")]
    merged = queued[-1]
    assert isinstance(merged, Merged)
    assert [m.seq for m in merged.folded] == [0, 2, 4]
    assert (merged.seq, merged.offset) == (4, 0)
    assert queue.conflated == 2
    assert queue.bytes == sum(len(m.payload) for m in queued)


def test_any_callable_reduces_and_text_and_binary_are_never_merged() -> None:
    def concat(older: str | bytes, newer: str | bytes) -> str | bytes:
        return older + newer  # type: ignore[operator]

    queue = MessageQueue(resolve_rules(ConflateByKey(reduce=concat)))
    queue.push(make_message("a", seq=0, time=0.0, key="k"))
    queue.push(make_message("b", seq=1, time=0.0, key="k"))
    queue.push(make_message(b"\x00", seq=2, time=0.0, key="k"))  # binary: queued beside
    queue.push(make_message(b"\x01", seq=3, time=0.0, key="k"))
    assert [(m.seq, m.payload) for m in queue] == [(1, b"ab"), (3, b"\x00\x01")]
    assert repr(ConflateByKey(reduce=concat)) == f"ConflateByKey(reduce={concat!r})"

    def wrong(older: str | bytes, newer: str | bytes) -> int:
        return 3

    queue = MessageQueue(resolve_rules(ConflateByKey(reduce=wrong)))
    queue.push(make_message("a", seq=0, time=0.0, key="k"))
    with pytest.raises(TypeError, match=r"^reduce returned int for a text message, not str$"):
        queue.push(make_message("b", seq=1, time=0.0, key="k"))


def test_a_merged_frame_is_what_the_client_receives() -> None:
    outbox = Outbox(
        ConflateByKey(reduce="json-merge") | Batch(combine="json-array"), high=100, low=0
    )
    for seq, update in enumerate([{"bid": 1}, {"ask": 2}, {"bid": 3}]):
        outbox.offer(make_message(json.dumps(update), seq=seq, time=0.0, key="EURUSD"), 0.0, 101)
    action = outbox.next_action(0.0, 0)
    assert isinstance(action, Write)
    assert json.loads(action.frames[0].payload) == {"bid": 3, "ask": 2}
    assert outbox.stats(0.0).conflated == 2


def test_reducers_are_named_values_and_a_wrong_one_is_refused() -> None:
    assert sorted(REDUCERS) == ["json-merge", "max", "sum"]
    with pytest.raises(PolicyError, match=r"^reduce='merge' is not a known reducer") as info:
        ConflateByKey(reduce="merge")
    assert (info.value.name, info.value.value) == ("reduce", "merge")
    with pytest.raises(PolicyError, match=r"^reduce=3 must be a reducer name or a callable$"):
        ConflateByKey(reduce=3)  # type: ignore[arg-type]
    with pytest.raises(PolicyConflictError, match="both decide how a key's updates merge"):
        ConflateByKey(reduce="sum") | ConflateByKey(reduce="max")


def test_the_fold_guarantee_holds_only_where_nothing_else_drops() -> None:
    sums = ConflateByKey(reduce="sum")
    assert sums.guarantees() == (NewestDelivered(per_key=True), FoldedPerKey(reduce="sum"))
    assert FoldedPerKey(reduce="sum") not in (sums | DropOldest()).guarantees()
    assert FoldedPerKey(reduce="sum") in (sums | Batch()).guarantees()
    assert ConflateByKey().guarantees() == (NewestDelivered(per_key=True),)
