"""Who receives a message: a hub's links indexed by the topics they subscribe to.

A message without a topic goes to every member; one with topic ``t`` goes to the
wildcard links (subscribed to all topics) and to ``t``'s own set. Each set is a dict
used as an ordered set, so delivery follows joining order, and a link whose topics do
not match costs nothing.
"""

from __future__ import annotations

from typing import Generic, TypeVar

__all__ = ["TopicIndex"]

T = TypeVar("T")


class TopicIndex(Generic[T]):
    """Ordered sets of members: all of them, the wildcard ones, and one per topic."""

    __slots__ = ("by_topic", "members", "wildcard")

    def __init__(self) -> None:
        self.members: dict[T, None] = {}
        """Every member, in joining order: the targets of a message without a topic."""
        self.wildcard: dict[T, None] = {}
        """Members of all topics."""
        self.by_topic: dict[str, dict[T, None]] = {}
        """Members of each named topic; a topic nobody listens to has no entry."""

    def add(self, member: T, topics: frozenset[str] | None) -> None:
        self.members[member] = None
        self._index(member, topics)

    def discard(self, member: T, topics: frozenset[str] | None) -> None:
        self.members.pop(member, None)
        self._unindex(member, topics)

    def move(self, member: T, old: frozenset[str] | None, new: frozenset[str] | None) -> None:
        """``member``, already added under ``old`` topics, now listens to ``new`` ones."""
        self._unindex(member, old)
        self._index(member, new)

    def _index(self, member: T, topics: frozenset[str] | None) -> None:
        if topics is None:
            self.wildcard[member] = None
        else:
            for topic in topics:
                self.by_topic.setdefault(topic, {})[member] = None

    def _unindex(self, member: T, topics: frozenset[str] | None) -> None:
        if topics is None:
            self.wildcard.pop(member, None)
            return
        for topic in topics:
            listeners = self.by_topic.get(topic)
            if listeners is not None:
                listeners.pop(member, None)
                if not listeners:
                    del self.by_topic[topic]
