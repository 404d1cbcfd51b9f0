"""The whole hub logic as a state machine: subscribers with different policies join,
leave, stall, resume, vanish and have their policy replaced while messages (some of
them lossless) are published and time passes.

After every step: queues within their bounds, deliveries in order without duplicates,
statistics that account for every message, clients that keep up receiving everything
whatever the others do, and nothing left of a subscriber that is gone. At the end,
every client reads everything and each policy's declared guarantees are checked.
"""

import math

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

from wsfanout import Policy
from wsfanout.lowlevel import resolve_rules
from wsfanout.testing import Client, Simulator, check_trace, policies

TOPICS = ("news", "prices")

client_specs = st.builds(
    Client,
    high=st.sampled_from((1024, 0, 64, 4096)),
    low=st.just(0),
    rate=st.sampled_from((math.inf, 0.0, 100.0, 5000.0)),
    topics=st.none() | st.lists(st.sampled_from(TOPICS), unique=True),
)


class HubMachine(RuleBasedStateMachine):
    clients = Bundle("clients")

    def __init__(self) -> None:
        super().__init__()
        self.sim = Simulator(start=1e6)
        self.left: set[int] = set()

    # -- what happens -----------------------------------------------------------------

    @rule(target=clients, policy=policies(max_messages=32, max_bytes=2048), client=client_specs)
    def join(self, policy: Policy, client: Client) -> int:
        return self.sim.join(policy, client)

    @rule(
        n=st.integers(min_value=1, max_value=40),
        size=st.integers(min_value=0, max_value=300),
        topic=st.sampled_from((None, *TOPICS)),
        key=st.sampled_from((None, "a", "b")),
        binary=st.booleans(),
    )
    def publish(self, n: int, size: int, topic: str | None, key: str | None, binary: bool) -> None:
        payload: str | bytes = b"x" * size if binary else "x" * size
        self.sim.publish_many((payload, topic, key) for _ in range(n))

    @rule(
        n=st.integers(min_value=1, max_value=5),
        size=st.integers(min_value=0, max_value=300),
        topic=st.sampled_from((None, *TOPICS)),
    )
    def publish_lossless(self, n: int, size: int, topic: str | None) -> None:
        self.sim.publish_many((("L" * size, topic, None) for _ in range(n)), lossless=True)

    @rule(client=clients, policy=policies(max_messages=32, max_bytes=2048))
    def change_policy(self, client: int, policy: Policy) -> None:
        self.sim.set_policy(client, policy)

    @rule(client=clients, size=st.integers(min_value=0, max_value=100))
    def send(self, client: int, size: int) -> None:
        if self.sim.outbox(client).closing is None:
            self.sim.send(client, "s" * size)

    @rule(seconds=st.sampled_from((0.001, 0.05, 0.5, 2.0, 30.0)))
    def advance(self, seconds: float) -> None:
        self.sim.advance(seconds)

    @rule(client=clients)
    def stall(self, client: int) -> None:
        self.sim.stall(client)

    @rule(client=clients, rate=st.sampled_from((math.inf, 50.0, 1000.0)))
    def resume(self, client: int, rate: float) -> None:
        self.sim.read(client, rate)

    @rule(client=clients, nbytes=st.integers(min_value=1, max_value=4096))
    def drain(self, client: int, nbytes: int) -> None:
        self.sim.drain(client, nbytes)

    @rule(client=clients)
    def leave(self, client: int) -> None:
        self.sim.leave(client)
        self.left.add(client)

    @rule(client=clients)
    def vanish(self, client: int) -> None:
        self.sim.hangup(client)

    # -- what must hold after every step ------------------------------------------------

    @precondition(lambda self: bool(self.sim.trace.clients))
    @invariant()
    def queues_stay_within_their_bounds(self) -> None:
        for trace in self.sim.trace.clients:
            outbox = self.sim.outbox(trace.index)
            # The current policy (reshaped at once); for a ladder, the level in force.
            rules = resolve_rules(outbox.policy.level_policies()[outbox.level])
            assert rules.max_messages is not None
            assert rules.max_bytes is not None
            assert len(outbox.queue) <= rules.max_messages, outbox.policy
            assert outbox.queue.bytes <= rules.max_bytes, outbox.policy

    @invariant()
    def every_message_is_accounted_for(self) -> None:
        for trace in self.sim.trace.clients:
            stats = self.sim.outbox(trace.index).stats(self.sim.now)
            assert stats.offered == len(trace.offered)
            assert stats.offered == stats.sent + stats.dropped + stats.queued_messages, stats

    @invariant()
    def what_was_received_keeps_its_promises_so_far(self) -> None:
        violations = check_trace(self.sim.trace)
        assert not violations, "\n".join(v.describe() for v in violations)

    @invariant()
    def clients_that_keep_up_receive_everything_whatever_the_others_do(self) -> None:
        for trace in self.sim.trace.clients:
            index = trace.index
            outbox = self.sim.outbox(index)
            keeps_up = self.sim.transport(index).rate == math.inf and outbox.policy.eager
            if keeps_up and trace.open:
                # An eager policy on a client reading as fast as it is written takes the
                # fast path every time: nothing waits, everything written has arrived.
                assert len(outbox.queue) == 0, trace.policy
                assert len(trace.received) == outbox.stats(self.sim.now).sent, trace.policy

    @invariant()
    def nothing_is_left_of_a_subscriber_that_is_gone(self) -> None:
        now = self.sim.now
        for trace in self.sim.trace.clients:
            index = trace.index
            if trace.ended is not None or index in self.left or trace.closing is not None:
                assert not self.sim.attached(index)
                assert len(self.sim.outbox(index).queue) == 0
            if trace.ended is not None:
                assert not self.sim.has_relay(index)
            elif self.sim.has_relay(index) and (index in self.left or trace.closing is not None):
                # Only a close in progress keeps a relay, and close_timeout bounds it.
                assert trace.closing is not None
                assert now - trace.closing.at <= self.sim.close_timeout

    def teardown(self) -> None:
        # Publishing stops and every client still connected reads everything: now the
        # liveness guarantees (drains, newest delivered, lossless) are due too.
        self.sim.settle()
        self.sim.trace.settled = True
        violations = check_trace(self.sim.trace)
        assert not violations, "\n".join(v.describe() for v in violations)
        for trace in self.sim.trace.clients:
            assert not self.sim.has_relay(trace.index), trace.policy


_PROFILE = settings()  # the profile tests/property/conftest.py loaded
HubMachine.TestCase.settings = settings(
    _PROFILE, max_examples=max(10, _PROFILE.max_examples // 4), stateful_step_count=40
)
test_the_hub_keeps_every_subscribers_promises = HubMachine.TestCase
