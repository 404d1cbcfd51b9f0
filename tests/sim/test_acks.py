"""Clients that acknowledge, on the simulator: the toolkit models what a ``wsfanout.v1``
client says it has read (docs/protocol.md, "Acknowledgements"), so a policy that reads
it is tested without sockets."""

from __future__ import annotations

import itertools
import json

import pytest

from wsfanout.lowlevel import ACK_INTERVAL
from wsfanout.policies import Adaptive, ConflateByKey, DropOldest
from wsfanout.testing import Client, Simulator

PACED = ConflateByKey(max_messages=4096) | Adaptive(interval=0.1)
REQUEST = b'{"type":"ack-request","interval":0.05}'


def p99_age(sim: Simulator, client: int = 0) -> float:
    trace = sim.trace.clients[client]
    messages = sim.trace.messages
    ages = sorted(d.at - messages[seq].time for d in trace.deliveries for seq in d.frame.seqs)
    return ages[int(len(ages) * 0.99)]


def feed(acks: bool) -> Simulator:
    """The pacing benchmark's figure: 200 kB/s on 100 keys for 20 s to a reader taking
    50 kB/s, with 256 kB of kernel and client buffers the write buffer never sees."""
    sim = Simulator()
    reader = Client(rate=50_000, high=65536, low=16384, notsent_lowat=262144, acks=acks)
    sim.join(PACED, reader)
    for step in range(1000):
        for k in range(20):
            update = json.dumps({"k": k, "p": "x" * 150})
            sim.publish(update, key=f"k{(step * 20 + k) % 100}")
        sim.advance(0.02)
    return sim


def test_a_reader_that_acknowledges_is_paced_past_the_buffers_the_hub_cannot_see() -> None:
    blind, told = feed(acks=False), feed(acks=True)
    # Without acknowledgements the 256 kB below the write buffer fill before anything
    # shows, and what the reader gets is seconds old; with them, a tenth of a second.
    assert p99_age(blind) > 2.0
    assert p99_age(told) < 0.25
    stats = told.outbox(0).stats(told.now)
    assert stats.ack_rate is not None
    assert 40_000 < stats.ack_rate < 60_000
    assert stats.unacked is not None
    assert stats.unacked <= 5_000 + 2_000  # the window, and the frame that crossed it
    assert blind.outbox(0).stats(blind.now).unacked is None


def test_the_request_is_the_first_frame_and_only_for_a_policy_that_reads_acks() -> None:
    sim = Simulator()
    asked = sim.join(PACED, Client(acks=True))
    plain = sim.join(DropOldest(), Client(acks=True))
    silent = sim.join(PACED, Client())
    sim.publish("a")
    sim.advance(0.1)
    first = sim.trace.clients[asked].deliveries[0].frame
    assert (first.control, first.payload) == (True, REQUEST)
    for index in (plain, silent):
        assert [d.frame.control for d in sim.trace.clients[index].deliveries] == [False]
    # Changing the policy asks, and changing it back stops asking.
    sim.set_policy(plain, PACED)
    sim.set_policy(plain, DropOldest())
    sim.advance(0.1)
    controls = [d.frame.payload for d in sim.trace.clients[plain].deliveries if d.frame.control]
    assert controls == [REQUEST, b'{"type":"ack-request","interval":null}']


def test_acknowledgements_come_at_most_every_interval_and_count_every_frame() -> None:
    sim = Simulator()
    index = sim.join(PACED, Client(rate=20_000, acks=True))
    for n in range(50):
        sim.publish("x" * 500, key=str(n))
    sim.advance(5.0)
    outbox = sim.outbox(index)
    acks = outbox.acks
    assert acks is not None
    delivered = len(sim.trace.clients[index].deliveries)
    assert acks.acked == acks.written == delivered  # the request counted, like any frame
    assert outbox.stats(sim.now).unacked == 0
    sent = sim.trace.clients[index].acks
    assert [n for _, n in sent] == sorted({n for _, n in sent})  # cumulative, each new
    assert sent[-1][1] == delivered
    gaps = [b - a for (a, _), (b, _) in itertools.pairwise(sent)]
    assert min(gaps) >= ACK_INTERVAL - 1e-9


def test_a_client_s_acks_must_be_a_bool() -> None:
    with pytest.raises(ValueError, match=r"^acks='yes' must be True or False$"):
        Client(acks="yes")  # type: ignore[arg-type]
