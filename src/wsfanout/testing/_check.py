"""Guarantee checkers: judge a simulation's trace against what a policy promises.

Every policy is checked for the guarantees the core owes any policy (:func:`baseline`):
ordering, no duplicates, its resolved queue bound, writes within the watermarks, what
the server holds (queue, write buffer and kernel) within that bound plus the write and
kernel limits, liveness, and statistics that add up. On top come the guarantees it declares
(:meth:`Policy.guarantees`) and any a test adds. Each checker is a function from a
guarantee and one client's trace to the first violation, in a table keyed by the
guarantee's type.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import attrs

from .._core.builtins import COMBINERS
from .._core.decision import Decision
from .._core.guarantees import (
    BatchIntegrity,
    Bounded,
    CountsAddUp,
    DisconnectsWithin,
    Drains,
    FoldedPerKey,
    GapsAnnounced,
    Guarantee,
    HeldWithin,
    LevelBound,
    Lossless,
    LosslessDelivered,
    MaxDrops,
    MaxSendRate,
    NewestDelivered,
    NoDuplicates,
    OrderedSubsequence,
    Resumes,
    StepsApart,
    WithinWriteLimit,
    code,
)
from .._core.history import History, MemoryHistory, wanted
from .._core.message import Message
from .._core.notices import CONFLATED, NOTICE_FORMATS, GapNotice
from .._core.outbox import Outbox
from .._core.policy import FunctionPolicy, Policy, as_policy
from .._core.reducers import reducer
from .._core.rules import resolve_rules
from .._core.snapshot import Snapshot
from .._core.stats import SubscriberStats
from .._core.streams import NO_TOPIC
from ._schedule import Schedule, SetPolicy
from ._simulator import (
    SETTLE_HORIZON,
    SETTLING,
    ClientTrace,
    HistoryFactory,
    OutboxFactory,
    Trace,
    simulate,
)

__all__ = [
    "CHECKERS",
    "GuaranteeViolation",
    "Violation",
    "baseline",
    "check_guarantees",
    "check_trace",
    "guarantees_of",
    "reproduction",
]

# Float tolerance for comparing times computed along different paths.
_EPS = 1e-9

# The largest close frame: a 2-byte header and at most 125 bytes of code and reason.
_CLOSE_FRAME = 127


@attrs.frozen
class Violation:
    """One broken guarantee: which, for which client, at which step and time, and how."""

    guarantee: Guarantee
    client: int
    step: int | None
    """The index of the schedule step during which it broke; :data:`SETTLING` after the
    last step, while the clients read everything; None if no step was being run."""
    time: float
    detail: str

    def describe(self, steps: Sequence[object] = ()) -> str:
        """One line: the guarantee, where and when it broke, and what happened."""
        if self.step == SETTLING:
            where = "after the last step, while the clients read everything"
        elif self.step is None:
            where = "outside any step"
        elif self.step < len(steps):
            where = f"at step {self.step} ({steps[self.step]!r})"
        else:
            where = f"at step {self.step}"
        return (
            f"{self.guarantee!r} broke {where}, t={self.time!r}, client {self.client}: "
            f"{self.detail}"
        )


class GuaranteeViolation(AssertionError):
    """A policy broke guarantees; the message lists each and the schedule as code."""

    __module__ = "wsfanout.testing"

    def __init__(
        self,
        policy: Policy,
        schedule: Schedule,
        violations: Sequence[Violation],
        trace: Trace,
        *,
        history: History | None = None,
    ) -> None:
        self.policy = policy
        self.schedule = schedule
        self.violations = tuple(violations)
        self.trace = trace
        count = len(self.violations)
        lines = [f"{policy!r} broke {count} guarantee{'s' if count > 1 else ''}:"]
        lines += [f"- {violation.describe(schedule.steps)}" for violation in self.violations]
        lines += ["", "To reproduce:", "", reproduction(policy, schedule, history=history)]
        super().__init__("\n".join(lines))


def baseline(policy: Policy) -> tuple[Guarantee, ...]:
    """What the core owes every policy, declared or not: ordering, no duplicates, the
    resolved queue bound (the loosest of a ladder's levels), writes within the
    watermarks, held bytes within the bound and the limits below it, liveness, counts
    that add up, lossless messages delivered, and an exact resume for a client that
    reconnects."""
    levels = [resolve_rules(level) for level in policy.level_policies()]
    loosest_messages = max(rules.max_messages or 0 for rules in levels)
    loosest_bytes = max(rules.max_bytes or 0 for rules in levels)
    return (
        OrderedSubsequence(),
        NoDuplicates(),
        Bounded(max_messages=loosest_messages, max_bytes=loosest_bytes),
        WithinWriteLimit(),
        # A reducer's fold may outgrow every message offered: then only bytes bound it.
        HeldWithin(
            max_messages=None if any(r.reduce is not None for r in levels) else loosest_messages,
            max_bytes=loosest_bytes,
        ),
        Drains(),
        CountsAddUp(),
        Resumes(),
        LosslessDelivered(),
    )


def guarantees_of(policy: Policy, also: Iterable[Guarantee] = ()) -> tuple[Guarantee, ...]:
    """Everything :func:`check_guarantees` checks for ``policy``: the baseline, what the
    policy declares, and ``also``."""
    result: list[Guarantee] = []
    for guarantee in (*baseline(policy), *policy.guarantees(), *also):
        if not isinstance(guarantee, Guarantee):
            raise TypeError(f"{guarantee!r} is not a Guarantee")
        if guarantee not in result:
            result.append(guarantee)
    return tuple(result)


def _client_guarantees(client: ClientTrace, also: tuple[Guarantee, ...]) -> list[Guarantee]:
    """What one client is held to: its policy's guarantees, or, when its policy was
    replaced, those that every policy it had promises, with the loosest of their bounds."""
    if not client.changes:
        return list(guarantees_of(client.policy, also))
    each = [guarantees_of(policy, also) for policy in client.policies]
    common = [g for g in each[0] if not isinstance(g, Bounded) and all(g in gs for gs in each)]
    bounds = [
        resolve_rules(level) for policy in client.policies for level in policy.level_policies()
    ]
    loosest = Bounded(
        max_messages=max(rules.max_messages or 0 for rules in bounds),
        max_bytes=max(rules.max_bytes or 0 for rules in bounds),
    )
    return [*common, loosest]


def check_trace(trace: Trace, also: Iterable[Guarantee] = ()) -> list[Violation]:
    """Every violation in ``trace``, per client, of its policy's guarantees and ``also``
    (of the guarantees all its policies share, when its policy was replaced)."""
    extra = tuple(also)
    violations: list[Violation] = []
    for client in trace.clients:
        for guarantee in _client_guarantees(client, extra):
            checker = _checker(guarantee)
            found = checker(guarantee, client, trace)
            if found is not None:
                step, time, detail = found
                violations.append(Violation(guarantee, client.index, step, time, detail))
    return violations


def check_guarantees(
    policy: Policy | Callable[[Snapshot], Decision],
    schedule: Schedule,
    *,
    also: Iterable[Guarantee] = (),
    close_timeout: float = 5.0,
    outbox_factory: OutboxFactory = Outbox,
    history: History | None = None,
    history_factory: HistoryFactory = MemoryHistory,
    settle_horizon: float = SETTLE_HORIZON,
) -> Trace:
    """Run ``policy`` through ``schedule`` on the simulator and check its guarantees.

    Checks the baseline every policy owes (:func:`baseline`), what the policy declares
    (:meth:`Policy.guarantees`) and ``also``; raises :class:`GuaranteeViolation` listing
    each broken one, with the schedule as code. With ``history``, the hub keeps it for
    the clients that reconnect (:class:`Reconnect`). Returns the trace for further checks.
    ``settle_horizon`` is how long the final settling waits with nothing written before
    what is still queued counts as a liveness failure (:data:`SETTLE_HORIZON`).
    """
    chosen = as_policy(policy)
    trace = simulate(
        chosen,
        schedule,
        close_timeout=close_timeout,
        outbox_factory=outbox_factory,
        history=history,
        history_factory=history_factory,
        settle_horizon=settle_horizon,
    )
    violations = check_trace(trace, also)
    if violations:
        raise GuaranteeViolation(chosen, schedule, violations, trace, history=history)
    return trace


def reproduction(policy: Policy, schedule: Schedule, *, history: History | None = None) -> str:
    """Python that reruns ``schedule`` against ``policy`` (with ``history``, if given)."""
    keeping = "" if history is None else f", history={history!r}"
    body = f"schedule = {schedule.as_code()}\ncheck_guarantees({policy!r}, schedule{keeping})\n"
    names = {"Schedule", "check_guarantees"}
    names.update(type(step).__name__ for step in schedule.steps)
    if "clients=" in body:
        names.add("Client")
    imports: dict[str, set[str]] = {}
    replaced = [step.policy for step in schedule.steps if isinstance(step, SetPolicy)]
    stages = [stage for each in (policy, *replaced) for stage in each.stages]
    for stage in stages:
        if isinstance(stage, FunctionPolicy):
            module = getattr(stage.function, "__module__", "__main__")
            name = getattr(stage.function, "__qualname__", "").split(".")[0]
            imports.setdefault(module, set()).add(name)
            imports.setdefault("wsfanout", set()).add("as_policy")
        else:
            imports.setdefault(type(stage).__module__, set()).add(type(stage).__name__)
    head = ["import math", ""] if "math." in body else []
    head.append(f"from wsfanout.testing import {', '.join(sorted(names))}")
    if history is not None:
        head.append("from wsfanout import History")
    for module in sorted(imports):
        if module not in ("__main__", "builtins"):
            head.append(f"from {module} import {', '.join(sorted(imports[module]))}")
    return "\n".join(head) + "\n\n" + body


# -- the checkers -------------------------------------------------------------------------

Found = tuple[int | None, float, str] | None
Checker = Callable[[Any, ClientTrace, Trace], Found]


def _check_ordered(guarantee: OrderedSubsequence, client: ClientTrace, trace: Trace) -> Found:
    position = {seq: index for index, seq in enumerate(client.offered_seqs)}
    last = -1
    last_seq = None
    for delivery in client.deliveries:
        frame = delivery.frame
        single = frame.seqs[0] if len(frame.seqs) == 1 and not frame.folded else None
        if single in trace.messages and frame.payload != trace.messages[single].payload:
            return (
                delivery.step,
                delivery.at,
                f"received message #{single} with a payload other than the one published",
            )
        for seq in frame.seqs:
            index = position.get(seq)
            if index is None:
                return (
                    delivery.step,
                    delivery.at,
                    f"received message #{seq}, which was never published to this client",
                )
            if index < last:
                return (
                    delivery.step,
                    delivery.at,
                    f"received message #{seq} after #{last_seq}, which was published later",
                )
            if index > last:
                last, last_seq = index, seq
    return None


def _check_no_duplicates(guarantee: NoDuplicates, client: ClientTrace, trace: Trace) -> Found:
    seen: dict[int, float] = {}
    for delivery in client.deliveries:
        for seq in delivery.frame.seqs:
            if seq in seen:
                return (
                    delivery.step,
                    delivery.at,
                    f"received message #{seq} twice (first at t={seen[seq]!r})",
                )
            seen[seq] = delivery.at
    return None


def _check_write_limit(guarantee: WithinWriteLimit, client: ClientTrace, trace: Trace) -> Found:
    high, low = client.client.high, client.client.low
    for write in client.writes:
        if write.fast and write.buffered > low:
            return (
                write.step,
                write.at,
                f"publish wrote at once with {write.buffered} bytes buffered, over low={low}",
            )
        if write.buffered > high:
            return (
                write.step,
                write.at,
                f"wrote with {write.buffered} bytes buffered, over high={high}",
            )
    return None


def _check_bounded(guarantee: Bounded, client: ClientTrace, trace: Trace) -> Found:
    max_messages = guarantee.max_messages
    max_bytes = guarantee.max_bytes
    for sample in client.samples:
        stats = sample.stats
        messages = max(sample.queued_messages, stats.peak_messages)
        if max_messages is not None and messages > max_messages:
            return (
                sample.step,
                sample.at,
                f"the queue held {messages} messages, more than max_messages={max_messages}",
            )
        size = max(sample.queued_bytes, stats.peak_bytes)
        if max_bytes is not None and size > max_bytes:
            return (
                sample.step,
                sample.at,
                f"the queue held {size} bytes, more than max_bytes={max_bytes}",
            )
    return None


def _check_held(guarantee: HeldWithin, client: ClientTrace, trace: Trace) -> Found:
    largest_payload = max(
        (len(trace.messages[offer.seq].payload) for offer in client.offered), default=0
    )
    largest_frame = max(
        (len(frame.data) for write in client.writes for frame in write.frames), default=0
    )
    queue = math.inf if guarantee.max_bytes is None else guarantee.max_bytes
    if guarantee.max_messages is not None:
        queue = min(queue, guarantee.max_messages * largest_payload)
    spec = client.client
    limit = queue + spec.high + largest_frame + spec.notsent_lowat
    for sample in client.samples:
        held = sample.queued_bytes + sample.write_buffer + sample.kernel_unsent
        closing = 0 if sample.open else _CLOSE_FRAME
        if held > limit + closing:
            return (
                sample.step,
                sample.at,
                f"the server held {held} bytes (queue {sample.queued_bytes}, write buffer "
                f"{sample.write_buffer}, kernel {sample.kernel_unsent}), more than "
                f"{limit + closing}: the queue's {queue} + high={spec.high} + a "
                f"{largest_frame}-byte frame + notsent_lowat={spec.notsent_lowat}"
                + (f" + a close frame of at most {_CLOSE_FRAME}" if closing else ""),
            )
    return None


def _check_drains(guarantee: Drains, client: ClientTrace, trace: Trace) -> Found:
    error = trace.error
    if error is not None and error.client in (None, client.index):
        return error.step, error.time, str(error)
    if not trace.settled or not client.samples:
        return None
    last = client.samples[-1]
    if client.open and last.queued_messages:
        why = f": {trace.gave_up}" if trace.gave_up is not None else ""
        return (
            SETTLING,
            last.at,
            f"{last.queued_messages} messages still queued after the client read everything "
            f"until t={last.at!r} (oldest {last.lag!r}s old){why}",
        )
    if client.open and (last.write_buffer or last.kernel_unsent):
        return (
            SETTLING,
            last.at,
            f"{last.write_buffer} bytes still in the write buffer and {last.kernel_unsent} in "
            "the kernel of a client reading everything",
        )
    return None


def _written(client: ClientTrace) -> tuple[int, int, int]:
    """Messages, frames and batched messages written; control frames are none of them."""
    sent = frames = batched = 0
    for write in client.writes:
        for frame in write.frames:
            if frame.control:
                continue
            frames += 1
            sent += len(frame.seqs)
            if len(frame.seqs) > 1:
                batched += len(frame.seqs)
    return sent, frames, batched


def _check_counts(guarantee: CountsAddUp, client: ClientTrace, trace: Trace) -> Found:
    for sample in client.samples:
        stats = sample.stats
        total = stats.sent + stats.dropped + stats.queued_messages
        if stats.offered != total:
            return (
                sample.step,
                sample.at,
                f"offered={stats.offered} but sent + dropped + queued = {stats.sent} + "
                f"{stats.dropped} + {stats.queued_messages} = {total}",
            )
        if stats.queued_messages != sample.queued_messages:
            return (
                sample.step,
                sample.at,
                f"stats say {stats.queued_messages} queued, "
                f"the queue holds {sample.queued_messages}",
            )
    if not client.samples:
        return None
    last = client.samples[-1]
    final = last.stats
    sent, frames, batched = _written(client)
    actual = {"offered": len(client.offered), "sent": sent, "frames": frames, "batched": batched}
    for name, value in actual.items():
        if getattr(final, name) != value:
            return (
                last.step,
                last.at,
                f"stats say {name}={getattr(final, name)}, but {value} "
                f"{'were offered' if name == 'offered' else 'were written'}",
            )
    return None


def _lost(stats: SubscriberStats) -> int:
    return stats.dropped_oldest + stats.dropped_newest + stats.skipped + stats.conflated


def _check_lossless(guarantee: Lossless, client: ClientTrace, trace: Trace) -> Found:
    for sample in client.samples:
        if _lost(sample.stats):
            stats = sample.stats
            counts = ", ".join(
                f"{name}={getattr(stats, name)}"
                for name in ("dropped_oldest", "dropped_newest", "skipped", "conflated")
                if getattr(stats, name)
            )
            return (
                sample.step,
                sample.at,
                f"messages were dropped while the subscriber was open ({counts})",
            )
    received = client.received
    offered = client.offered
    for index, seq in enumerate(received):
        if index >= len(offered) or offered[index].seq != seq:
            expected = offered[index] if index < len(offered) else None
            if expected is None:
                break  # not this checker's business: ordering reports it
            return (
                expected.step,
                expected.at,
                f"message #{expected.seq} was published and never arrived; "
                f"message #{seq} came in its place",
            )
    if trace.settled and client.open and len(received) < len(offered):
        missing = offered[len(received)]
        return (
            missing.step,
            missing.at,
            f"message #{missing.seq} was published and never arrived, though the client read "
            "everything",
        )
    return None


def _check_newest(guarantee: NewestDelivered, client: ClientTrace, trace: Trace) -> Found:
    if not trace.settled or not client.open or not client.offered:
        return None
    received = set(client.received)
    if guarantee.per_key:
        newest: dict[object, Any] = {}
        for offer in client.offered:
            key = trace.messages[offer.seq].key
            newest[offer.seq if key is None else key] = offer
        wanted = sorted(newest.values(), key=lambda offer: offer.seq)
    else:
        wanted = [client.offered[-1]]
    for offer in wanted:
        if offer.seq not in received:
            key = trace.messages[offer.seq].key
            what = (
                "the newest message"
                if not guarantee.per_key
                else (
                    f"the newest message of key {key!r}"
                    if key is not None
                    else "an unkeyed message"
                )
            )
            last = client.received[-1] if client.received else None
            return (
                offer.step,
                offer.at,
                f"{what}, #{offer.seq}, was published and never arrived "
                f"(the client's last message is #{last})",
            )
    return None


def _combine(guarantee: BatchIntegrity) -> Callable[[Sequence[bytes]], bytes]:
    combine = guarantee.combine
    return COMBINERS[combine] if isinstance(combine, str) else combine


def _check_batch(guarantee: BatchIntegrity, client: ClientTrace, trace: Trace) -> Found:
    combine = _combine(guarantee)
    for write in client.writes:
        for frame in write.frames:
            seqs = frame.seqs
            where = write.step, write.at
            if len(seqs) > guarantee.max_messages:
                return (
                    *where,
                    f"a frame carried {len(seqs)} messages, more than "
                    f"max_messages={guarantee.max_messages}",
                )
            if len(seqs) < 2:
                continue
            parts = [trace.messages[seq] for seq in seqs]
            # A message a reducer merged is written with its fold as payload.
            payloads = list(frame.parts) if frame.folded else [part.payload for part in parts]
            size = sum(len(payload) for payload in payloads)
            if guarantee.max_bytes is not None and size > guarantee.max_bytes:
                return (
                    *where,
                    f"a frame carried {size} bytes in {len(seqs)} messages, more than "
                    f"max_bytes={guarantee.max_bytes}",
                )
            if any(part.opcode != frame.opcode for part in parts):
                return *where, f"a frame mixed text and binary messages {list(seqs)}"
            if frame.payload != combine(payloads):
                return *where, f"a frame's payload is not the combined payloads of {list(seqs)}"
    return None


def _check_rate(guarantee: MaxSendRate, client: ClientTrace, trace: Trace) -> Found:
    interval = 1.0 / guarantee.rate
    previous: float | None = None
    for write in client.writes:
        for frame in write.frames:
            if frame.control:  # no policy holds a control frame back, nor counts it
                continue
            if previous is not None and write.at - previous < interval * (1 - _EPS) - _EPS:
                return (
                    write.step,
                    write.at,
                    f"frames at t={previous!r} and t={write.at!r} are {write.at - previous!r}s "
                    f"apart; rate={guarantee.rate!r} allows one every {interval!r}s",
                )
            previous = write.at
    return None


def _check_disconnects(guarantee: DisconnectsWithin, client: ClientTrace, trace: Trace) -> Found:
    grace = guarantee.grace
    max_lag = guarantee.max_lag
    since: float | None = None
    for sample in client.samples:
        if not sample.open:
            since = None
            continue
        where = sample.step, sample.at
        if (
            max_lag is not None
            and sample.queued_messages
            and sample.lag > (max_lag + grace) * (1 + _EPS) + _EPS
        ):
            return (
                *where,
                f"still open {sample.lag!r}s behind, past max_lag={max_lag!r} + grace={grace!r}",
            )
        breach = _breach(
            guarantee, sample.queued_messages, sample.queued_bytes, sample.write_buffer
        )
        if breach is None:
            since = None
            continue
        if since is None:
            since = sample.at
        elif sample.at - since > grace * (1 + _EPS) + _EPS:
            return (
                *where,
                f"still open with {breach} for {sample.at - since!r}s, past grace={grace!r}",
            )
    return None


def _breach(guarantee: DisconnectsWithin, messages: int, size: int, buffered: int) -> str | None:
    if guarantee.max_messages is not None and messages > guarantee.max_messages:
        return f"{messages} messages queued > max_messages={guarantee.max_messages}"
    if guarantee.max_bytes is not None and size > guarantee.max_bytes:
        return f"{size} bytes queued > max_bytes={guarantee.max_bytes}"
    if guarantee.max_buffer is not None and messages and buffered > guarantee.max_buffer:
        return f"{buffered} bytes buffered > max_buffer={guarantee.max_buffer}"
    return None


def _check_max_drops(guarantee: MaxDrops, client: ClientTrace, trace: Trace) -> Found:
    drops: list[tuple[float, int]] = []
    previous = 0
    for sample in client.samples:
        lost = _lost(sample.stats)
        if lost > previous:
            drops.append((sample.at, lost - previous))
        previous = lost
        if not sample.open:
            continue
        recent = sum(count for at, count in drops if sample.at - at < guarantee.window)
        if recent > guarantee.count:
            return (
                sample.step,
                sample.at,
                f"still open after losing {recent} messages within {guarantee.window!r}s "
                f"(count={guarantee.count})",
            )
    return None


def _check_steps_apart(guarantee: StepsApart, client: ClientTrace, trace: Trace) -> Found:
    hold = guarantee.hold
    previous = None
    for stepped in client.stepped:
        if previous is not None and stepped.at - previous.at < hold * (1 - _EPS) - _EPS:
            change, before = stepped.change, previous.change
            return (
                stepped.step,
                stepped.at,
                f"stepped from level {change.previous} to {change.level} at t={stepped.at!r}, "
                f"{stepped.at - previous.at!r}s after stepping from {before.previous} to "
                f"{before.level}; hold={hold!r}",
            )
        previous = stepped
    return None


def _check_level_bound(guarantee: LevelBound, client: ClientTrace, trace: Trace) -> Found:
    # The policy in force: the first until it was replaced, each replacement from then
    # on (a sample at the very instant of a change may be of either).
    times = [-math.inf, *(change.at for change in client.changes), math.inf]
    spans = [
        (times[i], times[i + 1], [resolve_rules(level) for level in policy.level_policies()])
        for i, policy in enumerate(client.policies)
    ]
    for sample in client.samples:
        if not sample.open:
            continue
        level = sample.stats.level
        candidates = [levels for start, end, levels in spans if start <= sample.at <= end]
        held = [levels[level] for levels in candidates if 0 <= level < len(levels)]
        if not held:
            return (
                sample.step,
                sample.at,
                f"at level {level}, but the policy has {len(candidates[-1])} levels",
            )
        rules = max(held, key=lambda rules: (rules.max_messages or 0, rules.max_bytes or 0))
        if all(
            sample.queued_messages > (bound.max_messages or 0)
            or sample.queued_bytes > (bound.max_bytes or 0)
            for bound in held
        ):
            return (
                sample.step,
                sample.at,
                f"at level {level} the queue held {sample.queued_messages} messages and "
                f"{sample.queued_bytes} bytes, more than its max_messages="
                f"{rules.max_messages} or max_bytes={rules.max_bytes}",
            )
    return None


def _check_folded(guarantee: FoldedPerKey, client: ClientTrace, trace: Trace) -> Found:
    reduce = reducer(guarantee.reduce)
    by_key: dict[str, list[int]] = {}
    for offer in client.offered:
        key = trace.messages[offer.seq].key
        if key is not None:
            by_key.setdefault(key, []).append(offer.seq)
    taken: dict[str, int] = {}
    closed_at = client.closing.at if client.closing is not None else None
    for write in client.writes:
        if closed_at is not None and write.at > closed_at:
            break
        for frame in write.frames:
            if frame.control:
                continue
            if frame.folded:
                folds, payloads = frame.folded, frame.parts
            else:  # as published: each message folds itself alone
                folds = tuple((seq,) for seq in frame.seqs)
                payloads = tuple(trace.messages[seq].payload for seq in frame.seqs)
            for seq, folded, payload in zip(frame.seqs, folds, payloads, strict=True):
                key = trace.messages[seq].key
                if key is None:
                    continue
                start = taken.get(key, 0)
                offered = by_key[key]
                if seq not in offered[start:]:
                    return (
                        write.step,
                        write.at,
                        f"message #{seq} of key {key!r} was written after key {key!r}'s "
                        "later messages",
                    )
                end = offered.index(seq, start) + 1
                expected = tuple(offered[start:end])
                if folded != expected:
                    return (
                        write.step,
                        write.at,
                        f"the message written for key {key!r} folds {list(folded)}, but "
                        f"{list(expected)} were published for it since it was last written",
                    )
                value = trace.messages[expected[0]].data()
                for later in expected[1:]:
                    value = reduce(value, trace.messages[later].data())
                wanted = value.encode() if isinstance(value, str) else bytes(value)
                if payload != wanted:
                    return (
                        write.step,
                        write.at,
                        f"the message written for key {key!r} carries {payload!r}, but the "
                        f"fold of {list(expected)} is {wanted!r}",
                    )
                taken[key] = end
    return None


def _kept(limits: History | None, published: list[Message], now: float) -> set[int]:
    """The offsets a history under ``limits`` holds of one topic's ``published`` messages
    (ascending) at ``now``: the newest that fit its count and byte bounds, none too old.
    A model of the bound, written apart from :class:`MemoryHistory`."""
    if limits is None:
        return set()
    kept: list[Message] = []
    size = 0
    max_bytes = math.inf if limits.max_bytes is None else limits.max_bytes
    for message in reversed(published):
        if len(kept) == limits.max_messages or size + message.size > max_bytes:
            break
        kept.append(message)
        size += message.size
    oldest = -math.inf if limits.max_age is None else now - limits.max_age
    return {m.offset for m in kept if m.time >= oldest}


def _check_resumes(guarantee: Resumes, client: ClientTrace, trace: Trace) -> Found:
    if client.resumed_from is None:
        return None
    messages = trace.messages
    offered = client.offered_seqs
    replay = [messages[seq] for seq in offered[: client.replayed]]
    live = [messages[seq] for seq in offered[client.replayed :]]
    # The control frames and the data frames written to it, in the order written.
    written: list[tuple[str, object]] = []
    for write in client.writes:
        for frame in write.frames:
            if frame.control:
                try:  # a Notify format of the application's may not be JSON
                    written.append(("control", json.loads(frame.payload)))
                except ValueError:
                    continue
            else:
                written.extend(("data", seq) for seq in frame.seqs)
    at = client.joined_at
    step = client.samples[0].step if client.samples else None
    for position in wanted(client.since, client.client.topics):
        stream = position.topic
        published = [
            m
            for m in messages.values()
            if m.offset and m.seq < client.joined_seq and _stream(m) == stream
        ]
        published.sort(key=lambda m: m.offset)
        if not published:
            continue  # nothing was ever published on the topic: nothing to resume
        epoch, last = published[-1].epoch, published[-1].offset
        after = position.offset if position.epoch == epoch and position.offset <= last else 0
        due = [m.offset for m in published if m.offset > after]
        kept = _kept(trace.history, published, at)
        replayed = [m.offset for m in replay if _stream(m) == stream]
        expected = [o for o in due if o in kept]
        # A connection closed early (its policy closed it as the replay overflowed its
        # queue, or its control frames went past its byte bound) is offered a prefix of
        # the replay, and may not have received the notice: the client resumes again
        # from the same position.
        closed = client.closing is not None or client.ended is not None
        if replayed != expected and not (closed and replayed == expected[: len(replayed)]):
            return (
                step,
                at,
                f"resuming {position} was replayed offsets {replayed} of {stream!r}; the "
                f"history's bound ({trace.history!r}) kept {expected} after it",
            )
        reported = {
            o
            for kind, frame in written
            if kind == "control"
            and isinstance(frame, dict)
            and frame.get("type") == "gap"
            and frame.get("t", NO_TOPIC) == stream
            and "history" in frame.get("reasons", {})
            for a, b in frame["ranges"]
            for o in range(a, b + 1)
        }
        missing = set(due) - set(expected)
        if reported != missing and not (closed and reported <= missing):
            return (
                step,
                at,
                f"resuming {position}: offsets {sorted(missing)} of {stream!r} were neither "
                f"replayed nor kept, but the gap notice reported {sorted(reported)}",
            )
        early = [m.offset for m in live if m.offset and _stream(m) == stream and m.offset <= last]
        if early:
            return (
                step,
                at,
                f"resuming {position}: offsets {early} of {stream!r} came live, not replayed",
            )
        resumed = next(
            (
                index
                for index, (kind, frame) in enumerate(written)
                if kind == "control"
                and isinstance(frame, dict)
                and frame.get("type") == "resume"
                and frame.get("t", NO_TOPIC) == stream
            ),
            None,
        )
        first = next(
            (
                index
                for index, (kind, seq) in enumerate(written)
                if kind == "data" and _stream(messages[seq]) == stream  # type: ignore[index]
            ),
            None,
        )
        if resumed is None and (first is not None or not closed):
            return step, at, f"resuming {position}: no resume frame for {stream!r} was written"
        if resumed is not None and first is not None and first < resumed:
            return (
                None,
                at,
                f"resuming {position}: a message of {stream!r} came before its resume frame",
            )
    return None


def _stream(message: Message) -> str:
    return NO_TOPIC if message.topic is None else message.topic


def _check_lossless_delivered(
    guarantee: LosslessDelivered, client: ClientTrace, trace: Trace
) -> Found:
    lossless = [offer for offer in client.offered if not trace.messages[offer.seq].droppable]
    if not lossless:
        return None
    # Offer order, not seq order: a resumed client is offered each topic's replay in
    # turn, so a message replayed later may have been published earlier.
    order: dict[int, int] = {}
    for index, offer in enumerate(client.offered):
        order.setdefault(offer.seq, index)
    written: set[int] = set()
    pending = 0  # index into lossless of the first one not yet written
    for write in client.writes:
        for frame in write.frames:
            if frame.control:
                continue
            seqs = frame.seqs
            if len(seqs) > 1:
                alone = [seq for seq in seqs if not trace.messages[seq].droppable]
                if alone:
                    return (
                        write.step,
                        write.at,
                        f"lossless message #{alone[0]} was batched with {list(seqs)}",
                    )
            written.update(seqs)
            newest = max(seqs, key=lambda seq: order.get(seq, -1))
            while pending < len(lossless) and order[lossless[pending].seq] < order.get(newest, -1):
                offer = lossless[pending]
                if offer.seq not in written:
                    return (
                        write.step,
                        write.at,
                        f"lossless message #{offer.seq} was never written, but #{newest}, "
                        "offered after it, was",
                    )
                pending += 1
    if trace.settled and client.open:
        received = set(client.received)
        for offer in lossless:
            if offer.seq not in received:
                return (
                    offer.step,
                    offer.at,
                    f"lossless message #{offer.seq} never arrived, though the subscriber is "
                    "open and the client read everything",
                )
    return None


def _encoded(data: object) -> bytes | None:
    if isinstance(data, str):
        return data.encode()
    return data if isinstance(data, bytes) else None


def _notice_problem(notice: GapNotice) -> str | None:
    """What is wrong with a notice's own numbers, if anything."""
    if notice.count < 1:
        return "a notice announced no loss"
    if sum(notice.reasons.values()) != notice.count:
        return f"a notice's reasons {notice.reasons} do not add up to its count {notice.count}"
    if notice.keys and CONFLATED not in notice.reasons:
        return f"a notice lists keys {list(notice.keys)} but nothing was conflated"
    return None


def _check_announced(guarantee: GapsAnnounced, client: ClientTrace, trace: Trace) -> Found:
    fmt = guarantee.format
    encode = NOTICE_FORMATS[fmt] if isinstance(fmt, str) else fmt
    place = {
        (message.topic or "", message.epoch, message.offset): seq
        for seq, message in trace.messages.items()
        if message.offset
    }
    offered = client.offered_seqs
    offered_set = set(offered)
    written = {seq for write in client.writes for f in write.frames for seq in f.seqs}
    announced: set[int] = set()
    reasons: dict[str, int] = {}
    so_far: set[int] = set()  # message seqs written so far
    checked = 0  # index into offered: every one before it is accounted for
    for write in client.writes:
        where = write.step, write.at
        for frame in write.frames:
            notice = frame.notice
            if notice is not None:
                if frame.payload != _encoded(encode(notice)):
                    return *where, f"a notice's payload is not {code(fmt)} of {notice!r}"
                problem = _notice_problem(notice)
                if problem is not None:
                    return *where, problem
                for first, last in notice.ranges:
                    for offset in range(first, last + 1):
                        seq = place.get((notice.topic, notice.epoch, offset))
                        what = f"offset {offset} of {notice.topic!r} ({notice.epoch})"
                        if seq is None or seq not in offered_set:
                            return *where, f"a notice announced {what}, never offered here"
                        if seq in written:
                            return *where, f"a notice announced #{seq}, {what}, which was written"
                        if seq in announced:
                            return *where, f"a notice announced #{seq}, {what}, a second time"
                        announced.add(seq)
                for reason, n in notice.reasons.items():
                    reasons[reason] = reasons.get(reason, 0) + n
                continue
            if frame.control or not frame.seqs:
                continue
            so_far.update(frame.seqs)
            newest = max(frame.seqs)
            while checked < len(offered) and offered[checked] < newest:
                seq = offered[checked]
                if seq not in so_far and seq not in announced:
                    return (
                        *where,
                        f"message #{seq} was lost, but #{newest}, published after it, was "
                        "written before any notice announced it",
                    )
                checked += 1
    if not client.samples:
        return None
    final = client.samples[-1]
    stats = final.stats
    count = len(announced)
    lost = stats.dropped - stats.disconnected
    if count > lost:
        return final.step, final.at, f"notices announced {count} losses, the stats count {lost}"
    if trace.settled and client.open:
        if count != lost:
            return (
                SETTLING,
                final.at,
                f"the subscriber lost {lost} messages, notices announced {count}, though it "
                "is open and read everything",
            )
        for reason, total in reasons.items():
            if getattr(stats, reason, total) != total:
                return (
                    SETTLING,
                    final.at,
                    f"notices announced {total} {reason}, the stats count {getattr(stats, reason)}",
                )
    return None


CHECKERS: dict[type[Guarantee], Checker] = {
    OrderedSubsequence: _check_ordered,
    NoDuplicates: _check_no_duplicates,
    WithinWriteLimit: _check_write_limit,
    HeldWithin: _check_held,
    Bounded: _check_bounded,
    Drains: _check_drains,
    CountsAddUp: _check_counts,
    Lossless: _check_lossless,
    NewestDelivered: _check_newest,
    BatchIntegrity: _check_batch,
    MaxSendRate: _check_rate,
    DisconnectsWithin: _check_disconnects,
    MaxDrops: _check_max_drops,
    StepsApart: _check_steps_apart,
    LevelBound: _check_level_bound,
    FoldedPerKey: _check_folded,
    Resumes: _check_resumes,
    LosslessDelivered: _check_lossless_delivered,
    GapsAnnounced: _check_announced,
}
"""How each kind of guarantee is checked: ``(guarantee, client_trace, trace)`` to the first
``(step, time, detail)`` that breaks it, or None."""


def _checker(guarantee: Guarantee) -> Checker:
    for kind in type(guarantee).__mro__:
        checker = CHECKERS.get(kind)
        if checker is not None:
            return checker
    raise TypeError(
        f"no checker for {guarantee!r}: add one to wsfanout.testing.CHECKERS "
        "(guarantee, client_trace, trace) -> (step, time, detail) | None"
    )
