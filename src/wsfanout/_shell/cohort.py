"""Cohorts: subscribers in one state, offered a batch's later messages once.

Subscribers whose offers took the same shared first turn for a batch's first message
(an outbox's ``lingered``) are in the same state after it: the same policy, queue and
standing decision. Until something else touches one of them, each later message would
be queued the same way for all of them, so the first (the leader) queues it and the
others (members) skip it, remembering nothing: the cohort's ``tail`` holds what they
skipped. A member leaves (``Link.settle``) before anything reads or changes its
outbox, taking the tail in one step; the leader leaving closes the cohort.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core.queue import Run

if TYPE_CHECKING:
    from .._core.message import Message
    from .link import Link

__all__ = ["Cohort"]


class Cohort:
    """The subscribers that took one shared first turn, while they stay in its state."""

    __slots__ = ("last", "leader", "open", "tail", "token")

    def __init__(self, token: object, leader: Link) -> None:
        self.token = token
        """The shared first turn its links took (the outbox's ``lingered``)."""
        self.leader = leader
        self.open = True
        """The leader is still in the state the members share; False once it left."""
        self.tail = Run()
        """The messages queued for the leader since the first, which members skipped."""
        self.last: Message | None = None
        """The message last added to the tail."""

    def admits(self, link: Link) -> bool:
        """Whether ``link`` is offered every message the leader is (the same topics)."""
        return link.topics == self.leader.topics

    def take(self, message: Message) -> bool:
        """Queue ``message`` for the leader, for every link of the cohort, if its offer
        would only queue it (``Outbox.offer_behind``); False closes the cohort: each
        link then leaves it and is offered ``message`` itself."""
        if self.open and self.leader._outbox.offer_behind(message):
            self.tail.add(message)
            self.last = message
            return True
        self.open = False
        return False
