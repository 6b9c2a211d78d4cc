# -*- test-case-name: tests.test_topics -*-
"""
Topic names and filters: validation, the subscription index and the retained store.

Routing cost must not depend on how many subscriptions do not match. Filters without
wildcards live in a dict keyed by the filter itself (one lookup per publish); filters
with C{+} or C{#} live in a trie walked level by level, so a publish does work in
proportion to its topic's depth and to the filters that match, never to the number of
subscriptions. Retained messages sit in a trie of topic levels that a subscribing
filter walks.

Topic rules: 3.1.1 section 4.7, 5.0 section 4.7.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

__all__ = [
    "MAX_TOPIC_LEVELS",
    "RetainedStore",
    "SubscriptionIndex",
    "is_wildcard",
    "shared_subscription",
    "topic_filter_error",
    "topic_matches",
]

#: Deeper topics and filters are refused: a bound on the work one publish can cause.
MAX_TOPIC_LEVELS = 128

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def is_wildcard(topic_filter: str) -> bool:
    """Whether the filter holds C{+} or C{#} (and so cannot go in the exact table)."""
    return "+" in topic_filter or "#" in topic_filter


def topic_filter_error(topic_filter: str, max_levels: int = MAX_TOPIC_LEVELS) -> str | None:
    """
    Why C{topic_filter} is not a valid filter, or None when it is.

    C{#} must be alone in the last level [MQTT-4.7.1-2]; C{+} must fill a whole level
    [MQTT-4.7.1-3]; a filter is at least one character long [MQTT-4.7.3-1].
    """
    if not topic_filter:
        return "a topic filter must not be empty [MQTT-4.7.3-1]"
    levels = topic_filter.split("/")
    if len(levels) > max_levels:
        return f"a topic filter may have at most {max_levels} levels"
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != last):
            return "'#' must be alone in the last level of a filter [MQTT-4.7.1-2]"
        if "+" in level and level != "+":
            return "'+' must fill a whole level of a filter [MQTT-4.7.1-3]"
    return None


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether C{topic} matches C{topic_filter} (section 4.7, with the C{$} rule)."""
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    levels = topic.split("/")
    parts = topic_filter.split("/")
    for index, part in enumerate(parts):
        if part == "#":
            return True
        if index >= len(levels) or (part != "+" and part != levels[index]):
            return False
    return len(parts) == len(levels)


def shared_subscription(topic_filter: str) -> tuple[str, str] | None:
    """
    C{(group, filter)} for a C{$share/<group>/<filter>} subscription, else None.

    The caller checks the pieces: the group must be non-empty and free of C{/},
    C{+} and C{#}, and the filter valid (5.0 section 4.8.2).
    """
    if not topic_filter.startswith("$share/"):
        return None
    _, group, rest = [*topic_filter.split("/", 2), "", ""][:3]
    return group, rest


class _Node(Generic[K, V]):
    """A trie node: its children by level and the subscribers whose filter ends here."""

    __slots__ = ("children", "subscribers")

    def __init__(self) -> None:
        self.children: dict[str, _Node[K, V]] = {}
        self.subscribers: dict[K, V] = {}


class SubscriptionIndex(Generic[K, V]):
    """
    Topic filter -> subscribers, matched against topic names.

    A subscriber is any hashable key (the broker uses its sessions); the value is
    whatever the caller keeps per subscription (its options). A subscriber has at
    most one value per filter.
    """

    __slots__ = ("_exact", "_root", "_wildcards")

    def __init__(self) -> None:
        self._exact: dict[str, dict[K, V]] = {}
        self._root: _Node[K, V] = _Node()
        self._wildcards = 0

    def __len__(self) -> int:
        """The number of (filter, subscriber) pairs."""
        return sum(len(s) for s in self._exact.values()) + self._wildcards

    def add(self, topic_filter: str, subscriber: K, value: V) -> bool:
        """
        Subscribe C{subscriber} to C{topic_filter} with C{value}, replacing any value it
        had there; True if the subscription is new.
        """
        if not is_wildcard(topic_filter):
            subscribers = self._exact.get(topic_filter)
            if subscribers is None:
                subscribers = self._exact[topic_filter] = {}
            new = subscriber not in subscribers
            subscribers[subscriber] = value
            return new
        node = self._root
        for level in topic_filter.split("/"):
            child = node.children.get(level)
            if child is None:
                child = node.children[level] = _Node()
            node = child
        new = subscriber not in node.subscribers
        node.subscribers[subscriber] = value
        if new:
            self._wildcards += 1
        return new

    def remove(self, topic_filter: str, subscriber: K) -> bool:
        """Unsubscribe; True if there was such a subscription. Prunes empty branches."""
        if not is_wildcard(topic_filter):
            subscribers = self._exact.get(topic_filter)
            if subscribers is None or subscriber not in subscribers:
                return False
            del subscribers[subscriber]
            if not subscribers:
                del self._exact[topic_filter]
            return True
        path = [self._root]
        levels = topic_filter.split("/")
        for level in levels:
            child = path[-1].children.get(level)
            if child is None:
                return False
            path.append(child)
        if subscriber not in path[-1].subscribers:
            return False
        del path[-1].subscribers[subscriber]
        self._wildcards -= 1
        for depth in range(len(levels), 0, -1):
            node = path[depth]
            if node.subscribers or node.children:
                break
            del path[depth - 1].children[levels[depth - 1]]
        return True

    def match(self, topic: str) -> list[dict[K, V]]:
        """
        The subscriber tables of every filter that matches C{topic}, one per filter.

        A subscriber appears in more than one table when several of its filters match;
        merging them (one delivery at the highest QoS) is the caller's policy. The
        tables are the index's own: do not change them.
        """
        found: list[dict[K, V]] = []
        exact = self._exact.get(topic)
        if exact:
            found.append(exact)
        if not self._wildcards:
            return found
        levels = topic.split("/")
        last = len(levels)
        # Topics starting with "$" are not matched by a wildcard in the first level
        # [MQTT-4.7.2-1].
        dollar = topic.startswith("$")
        stack: list[tuple[_Node[K, V], int]] = [(self._root, 0)]
        while stack:
            node, depth = stack.pop()
            children = node.children
            if depth == last:
                if node.subscribers:
                    found.append(node.subscribers)
                # "a/#" also matches "a" [MQTT-4.7.1-2].
                hash_node = children.get("#")
                if hash_node is not None and hash_node.subscribers:
                    found.append(hash_node.subscribers)
                continue
            if not children:
                continue
            if depth or not dollar:
                hash_node = children.get("#")
                if hash_node is not None and hash_node.subscribers:
                    found.append(hash_node.subscribers)
                plus = children.get("+")
                if plus is not None:
                    stack.append((plus, depth + 1))
            child = children.get(levels[depth])
            if child is not None:
                stack.append((child, depth + 1))
        return found

    def subscriptions(self) -> Iterator[tuple[str, K, V]]:
        """Every (filter, subscriber, value), for inspection and persistence."""
        for topic_filter, subscribers in self._exact.items():
            for subscriber, value in subscribers.items():
                yield topic_filter, subscriber, value
        stack: list[tuple[_Node[K, V], tuple[str, ...]]] = [(self._root, ())]
        while stack:
            node, path = stack.pop()
            for subscriber, value in node.subscribers.items():
                yield "/".join(path), subscriber, value
            for level, child in node.children.items():
                stack.append((child, (*path, level)))


class _RetainedNode(Generic[V]):
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[str, _RetainedNode[V]] = {}
        self.value: V | None = None


class RetainedStore(Generic[V]):
    """
    Retained messages by topic name, and their lookup by topic filter.

    At most one value per topic; storing replaces, L{discard} deletes.
    """

    __slots__ = ("_by_topic", "_root")

    def __init__(self) -> None:
        self._by_topic: dict[str, V] = {}
        self._root: _RetainedNode[V] = _RetainedNode()

    def __len__(self) -> int:
        return len(self._by_topic)

    def __contains__(self, topic: str) -> bool:
        return topic in self._by_topic

    def get(self, topic: str) -> V | None:
        """The value retained for exactly C{topic}."""
        return self._by_topic.get(topic)

    def set(self, topic: str, value: V) -> None:
        """Retain C{value} for C{topic}, replacing what was there."""
        if topic not in self._by_topic:
            node = self._root
            for level in topic.split("/"):
                child = node.children.get(level)
                if child is None:
                    child = node.children[level] = _RetainedNode()
                node = child
            node.value = value
        else:
            self._node(topic).value = value  # type: ignore[union-attr]
        self._by_topic[topic] = value

    def discard(self, topic: str) -> bool:
        """Forget the value of C{topic}; True if there was one."""
        if self._by_topic.pop(topic, None) is None:
            return False
        levels = topic.split("/")
        path = [self._root]
        for level in levels:
            path.append(path[-1].children[level])
        path[-1].value = None
        for depth in range(len(levels), 0, -1):
            node = path[depth]
            if node.value is not None or node.children:
                break
            del path[depth - 1].children[levels[depth - 1]]
        return True

    def _node(self, topic: str) -> _RetainedNode[V] | None:
        node = self._root
        for level in topic.split("/"):
            child = node.children.get(level)
            if child is None:
                return None
            node = child
        return node

    def items(self) -> Iterator[tuple[str, V]]:
        """Every (topic, value)."""
        return iter(list(self._by_topic.items()))

    def matching(self, topic_filter: str) -> Iterator[tuple[str, V]]:
        """
        Every (topic, value) whose topic matches C{topic_filter}.

        The walk visits only the branches the filter can match: cost grows with the
        retained topics under the filter, not with the whole store.
        """
        if not is_wildcard(topic_filter):
            value = self._by_topic.get(topic_filter)
            if value is not None:
                yield topic_filter, value
            return
        levels = topic_filter.split("/")
        last = len(levels)
        stack: list[tuple[_RetainedNode[V], int, tuple[str, ...]]] = [(self._root, 0, ())]
        while stack:
            node, depth, path = stack.pop()
            if depth == last:
                if node.value is not None:
                    yield "/".join(path), node.value
                continue
            level = levels[depth]
            if level == "#":
                # The parent level itself ("a" for "a/#"), then everything below.
                if depth and node.value is not None:
                    yield "/".join(path), node.value
                below = [
                    (child, (*path, name))
                    for name, child in node.children.items()
                    if depth or not name.startswith("$")
                ]
                while below:
                    sub, sub_path = below.pop()
                    if sub.value is not None:
                        yield "/".join(sub_path), sub.value
                    below.extend((c, (*sub_path, n)) for n, c in sub.children.items())
            elif level == "+":
                for name, child in node.children.items():
                    if depth == 0 and name.startswith("$"):
                        continue
                    stack.append((child, depth + 1, (*path, name)))
            else:
                exact = node.children.get(level)
                if exact is not None:
                    stack.append((exact, depth + 1, (*path, level)))
