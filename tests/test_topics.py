# -*- test-case-name: tests.test_topics -*-
"""
Tests for L{mqttbroker.topics}: topic filter validation, the subscription index
(exact dict + wildcard trie) and the retained store, each also checked against a
naive reference matcher with Hypothesis.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from mqttbroker.topics import (
    MAX_TOPIC_LEVELS,
    RetainedStore,
    SubscriptionIndex,
    is_wildcard,
    shared_subscription,
    topic_filter_error,
)

_PROPERTY_SETTINGS = settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# -- a naive reference --------------------------------------------------------------


def reference_match(topic_filter: str, topic: str) -> bool:
    """
    Whether C{topic_filter} matches C{topic}, straight from 3.1.1 section 4.7: C{#}
    matches any number of levels including none (so "a/#" matches "a"), C{+} exactly
    one level, and a topic starting with C{$} is not matched by a wildcard in the
    first level of a filter.
    """
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    if topic.startswith("$") and filter_levels[0] in ("+", "#"):
        return False
    for index, level in enumerate(filter_levels):
        if level == "#":
            return True
        if index >= len(topic_levels):
            return False
        if level not in ("+", topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)


def matched_pairs(index: SubscriptionIndex[Any, str], topic: str) -> set[tuple[str, Any]]:
    """(filter, subscriber) for every match, where each value is its own filter."""
    return {(value, sub) for table in index.match(topic) for sub, value in table.items()}


def trie_is_empty(index: SubscriptionIndex[Any, Any]) -> bool:
    """The index holds no structure at all (every branch pruned)."""
    return not index._exact and not index._root.children and not index._root.subscribers


_TOPIC_LEVELS = st.sampled_from(["a", "b", "$x", ""])
_FILTER_LEVELS = st.sampled_from(["a", "b", "$x", "", "+"])


@st.composite
def topics(draw: st.DrawFn) -> str:
    """Topic names over a small alphabet of levels (so that filters often match)."""
    topic = "/".join(draw(st.lists(_TOPIC_LEVELS, min_size=1, max_size=4)))
    if not topic:
        topic = "a"
    return topic


@st.composite
def topic_filters(draw: st.DrawFn) -> str:
    """Valid topic filters over the same alphabet, with '+' and a trailing '#'."""
    levels = draw(st.lists(_FILTER_LEVELS, min_size=0, max_size=4))
    if draw(st.booleans()) or not levels:
        levels.append("#")
    topic_filter = "/".join(levels)
    if topic_filter_error(topic_filter) is not None:
        return "#"
    return topic_filter


class ReferenceMatcherTests(SynchronousTestCase):
    """The reference matcher itself agrees with the examples of 3.1.1 section 4.7."""

    def test_spec_examples(self) -> None:
        """The normative examples of 4.7.1.2, 4.7.1.3 and 4.7.2 hold for the reference."""
        self.assertTrue(reference_match("sport/tennis/player1/#", "sport/tennis/player1"))
        self.assertTrue(reference_match("sport/tennis/player1/#", "sport/tennis/player1/x/y"))
        self.assertTrue(reference_match("sport/#", "sport"))
        self.assertTrue(reference_match("sport/+", "sport/"))
        self.assertFalse(reference_match("sport/+", "sport"))
        self.assertTrue(reference_match("+/+", "/finance"))
        self.assertTrue(reference_match("/+", "/finance"))
        self.assertFalse(reference_match("+", "/finance"))
        self.assertFalse(reference_match("#", "$SYS/x"))
        self.assertFalse(reference_match("+/monitor/Clients", "$SYS/monitor/Clients"))
        self.assertTrue(reference_match("$SYS/#", "$SYS/monitor/Clients"))
        self.assertTrue(reference_match("$SYS/monitor/+", "$SYS/monitor/Clients"))


# -- validation -------------------------------------------------------------------------


class TopicFilterValidationTests(SynchronousTestCase):
    """L{topic_filter_error}, L{is_wildcard} and L{shared_subscription}."""

    def test_valid_filters(self) -> None:
        """Well-formed filters, wildcards and empty levels included, have no error."""
        for topic_filter in (
            "a",
            "a/b/c",
            "#",
            "+",
            "a/#",
            "a/+/c",
            "+/+",
            "+/#",
            "/",
            "/a",
            "a/",
            "//",
            "$SYS/#",
            "$share/g/a/b",
            "sport/tennis/+/#",
        ):
            with self.subTest(topic_filter=topic_filter):
                self.assertIsNone(topic_filter_error(topic_filter))

    def test_misplaced_hash(self) -> None:
        """'#' not alone or not last in a filter is refused [MQTT-4.7.1-2]."""
        for topic_filter in ("a#", "#/a", "a/#/b", "a/b#", "##", "a/#/#", "#a"):
            with self.subTest(topic_filter=topic_filter):
                error = topic_filter_error(topic_filter)
                self.assertIsNotNone(error)
                self.assertIn("MQTT-4.7.1-2", error or "")

    def test_partial_plus(self) -> None:
        """'+' that does not fill a whole level is refused [MQTT-4.7.1-3]."""
        for topic_filter in ("a+", "+a", "a/b+/c", "++", "a/+b"):
            with self.subTest(topic_filter=topic_filter):
                error = topic_filter_error(topic_filter)
                self.assertIsNotNone(error)
                self.assertIn("MQTT-4.7.1-3", error or "")

    def test_empty_filter(self) -> None:
        """An empty filter is refused [MQTT-4.7.3-1]."""
        self.assertIn("MQTT-4.7.3-1", topic_filter_error("") or "")

    def test_too_many_levels(self) -> None:
        """A filter deeper than MAX_TOPIC_LEVELS (or a given bound) is refused."""
        self.assertIsNone(topic_filter_error("/".join(["a"] * MAX_TOPIC_LEVELS)))
        self.assertIsNotNone(topic_filter_error("/".join(["a"] * (MAX_TOPIC_LEVELS + 1))))
        self.assertIsNone(topic_filter_error("a/b/c", max_levels=3))
        self.assertIsNotNone(topic_filter_error("a/b/c/d", max_levels=3))
        self.assertIsNotNone(topic_filter_error("+/+/+/#", max_levels=3))

    def test_is_wildcard(self) -> None:
        """Only filters holding '+' or '#' are wildcards."""
        self.assertTrue(is_wildcard("a/+"))
        self.assertTrue(is_wildcard("#"))
        self.assertFalse(is_wildcard("a/b"))
        self.assertFalse(is_wildcard("$SYS/x"))

    def test_shared_subscription(self) -> None:
        """'$share/<group>/<filter>' splits into group and filter; others give None."""
        self.assertEqual(shared_subscription("$share/g/a/+"), ("g", "a/+"))
        self.assertEqual(shared_subscription("$share/g"), ("g", ""))
        self.assertIsNone(shared_subscription("a/$share/g/x"))
        self.assertIsNone(shared_subscription("$sharex/g/a"))


# -- the subscription index ----------------------------------------------------------------


class SubscriptionIndexTests(SynchronousTestCase):
    """L{SubscriptionIndex}: add, remove, match and the structure behind them."""

    def test_exact_match(self) -> None:
        """A filter without wildcards matches exactly its own topic name."""
        index: SubscriptionIndex[str, int] = SubscriptionIndex()
        self.assertTrue(index.add("a/b", "s1", 1))
        self.assertEqual(index.match("a/b"), [{"s1": 1}])
        self.assertEqual(index.match("a"), [])
        self.assertEqual(index.match("a/b/c"), [])
        self.assertEqual(index.match("A/b"), [])

    def test_add_replaces_value(self) -> None:
        """Adding the same (filter, subscriber) again replaces the value, not a second entry."""
        index: SubscriptionIndex[str, int] = SubscriptionIndex()
        self.assertTrue(index.add("a/b", "s1", 0))
        self.assertFalse(index.add("a/b", "s1", 2))
        self.assertTrue(index.add("a/+", "s1", 0))
        self.assertFalse(index.add("a/+", "s1", 1))
        self.assertEqual(len(index), 2)
        self.assertEqual(sorted(matched_values(index, "a/b")), [1, 2])

    def test_several_subscribers_one_table(self) -> None:
        """Subscribers of one filter come back in one table, one table per filter."""
        index: SubscriptionIndex[str, int] = SubscriptionIndex()
        index.add("a/b", "s1", 0)
        index.add("a/b", "s2", 1)
        index.add("a/+", "s1", 2)
        index.add("#", "s3", 0)
        tables = index.match("a/b")
        self.assertEqual(len(tables), 3)
        self.assertIn({"s1": 0, "s2": 1}, tables)
        self.assertIn({"s1": 2}, tables)
        self.assertIn({"s3": 0}, tables)

    def test_plus_matches_one_level(self) -> None:
        """'+' matches exactly one level, an empty one included [MQTT-4.7.1-3]."""
        index: SubscriptionIndex[str, str] = SubscriptionIndex()
        index.add("a/+", "s", "a/+")
        index.add("+/+", "s2", "+/+")
        self.assertEqual(matched_pairs(index, "a/b"), {("a/+", "s"), ("+/+", "s2")})
        self.assertEqual(matched_pairs(index, "a/"), {("a/+", "s"), ("+/+", "s2")})
        self.assertEqual(matched_pairs(index, "a"), set())
        self.assertEqual(matched_pairs(index, "a/b/c"), set())
        self.assertEqual(matched_pairs(index, "/finance"), {("+/+", "s2")})

    def test_hash_matches_parent_and_below(self) -> None:
        """'a/#' matches 'a' itself and everything below it [MQTT-4.7.1-2]."""
        index: SubscriptionIndex[str, str] = SubscriptionIndex()
        index.add("a/#", "s", "a/#")
        for topic in ("a", "a/b", "a/b/c", "a/"):
            with self.subTest(topic=topic):
                self.assertEqual(matched_pairs(index, topic), {("a/#", "s")})
        for topic in ("b", "ab", "b/a", "/a"):
            with self.subTest(topic=topic):
                self.assertEqual(matched_pairs(index, topic), set())

    def test_hash_alone_matches_everything_but_dollar(self) -> None:
        """'#' matches every topic except those starting with '$' [MQTT-4.7.2-1]."""
        index: SubscriptionIndex[str, str] = SubscriptionIndex()
        index.add("#", "s", "#")
        for topic in ("a", "/", "a/b/c", "x$"):
            with self.subTest(topic=topic):
                self.assertEqual(matched_pairs(index, topic), {("#", "s")})
        for topic in ("$SYS", "$SYS/broker/load", "$x/a"):
            with self.subTest(topic=topic):
                self.assertEqual(index.match(topic), [])

    def test_dollar_topics_not_matched_by_first_level_wildcards(self) -> None:
        """'+/...' and '#' skip '$' topics; '$SYS/#' and '$SYS/+' match [MQTT-4.7.2-1]."""
        index: SubscriptionIndex[str, str] = SubscriptionIndex()
        for topic_filter in ("#", "+/monitor/Clients", "+/#", "$SYS/#", "$SYS/+/Clients"):
            index.add(topic_filter, "s", topic_filter)
        index.add("$SYS/monitor/Clients", "exact", "$SYS/monitor/Clients")
        self.assertEqual(
            matched_pairs(index, "$SYS/monitor/Clients"),
            {
                ("$SYS/#", "s"),
                ("$SYS/+/Clients", "s"),
                ("$SYS/monitor/Clients", "exact"),
            },
        )
        self.assertEqual(
            matched_pairs(index, "x/monitor/Clients"),
            {("#", "s"), ("+/monitor/Clients", "s"), ("+/#", "s")},
        )
        # A '$' that is not the first character is an ordinary character.
        self.assertEqual(matched_pairs(index, "a/$SYS"), {("#", "s"), ("+/#", "s")})

    def test_remove(self) -> None:
        """remove() says whether there was such a subscription and stops its matches."""
        index: SubscriptionIndex[str, int] = SubscriptionIndex()
        index.add("a/b", "s1", 0)
        index.add("a/b", "s2", 0)
        index.add("a/+", "s1", 0)
        self.assertTrue(index.remove("a/b", "s1"))
        self.assertFalse(index.remove("a/b", "s1"))
        self.assertFalse(index.remove("a/b", "nobody"))
        self.assertFalse(index.remove("x/y", "s1"))
        self.assertFalse(index.remove("a/#", "s1"))
        self.assertFalse(index.remove("a/+/c", "s1"))
        self.assertEqual(index.match("a/b"), [{"s2": 0}, {"s1": 0}])
        self.assertTrue(index.remove("a/+", "s1"))
        self.assertEqual(index.match("a/b"), [{"s2": 0}])
        self.assertEqual(len(index), 1)

    def test_pruned_after_remove(self) -> None:
        """Removing the last subscriptions leaves no trie nodes and no exact entries."""
        index: SubscriptionIndex[str, int] = SubscriptionIndex()
        filters = ["a/b/c/+", "a/b/#", "a/+/c", "+/#", "#", "x/y", "a/b"]
        for topic_filter in filters:
            index.add(topic_filter, "s1", 0)
            index.add(topic_filter, "s2", 0)
        for topic_filter in filters:
            index.remove(topic_filter, "s1")
        self.assertEqual(len(index), len(filters))
        for topic_filter in reversed(filters):
            index.remove(topic_filter, "s2")
        self.assertEqual(len(index), 0)
        self.assertTrue(trie_is_empty(index))
        self.assertEqual(index.match("a/b/c/d"), [])

    def test_prune_keeps_shared_branch(self) -> None:
        """Pruning stops at a node that still has subscribers or other children."""
        index: SubscriptionIndex[str, int] = SubscriptionIndex()
        index.add("a/+", "s", 0)
        index.add("a/+/c/#", "s", 0)
        index.add("a/+/d", "s", 0)
        index.remove("a/+/c/#", "s")
        plus = index._root.children["a"].children["+"]
        self.assertEqual(set(plus.children), {"d"})
        self.assertEqual(plus.subscribers, {"s": 0})
        index.remove("a/+/d", "s")
        self.assertEqual(plus.children, {})
        index.remove("a/+", "s")
        self.assertTrue(trie_is_empty(index))

    def test_exact_filters_stay_out_of_the_trie(self) -> None:
        """Filters without wildcards go to the exact table, never into the trie."""
        index: SubscriptionIndex[int, int] = SubscriptionIndex()
        for n in range(100):
            index.add(f"dev/{n}/temp", n, 0)
        self.assertEqual(index._root.children, {})
        self.assertEqual(len(index._exact), 100)

    def test_subscriptions_listing(self) -> None:
        """subscriptions() yields every (filter, subscriber, value) exactly once."""
        index: SubscriptionIndex[str, int] = SubscriptionIndex()
        expected = {("a/b", "s1", 1), ("a/+", "s1", 2), ("#", "s2", 0), ("a/b", "s2", 0)}
        for topic_filter, sub, value in expected:
            index.add(topic_filter, sub, value)
        listed = list(index.subscriptions())
        self.assertEqual(len(listed), len(expected))
        self.assertEqual(set(listed), expected)

    @given(
        st.lists(st.tuples(topic_filters(), st.integers(0, 3)), max_size=12),
        st.data(),
        st.lists(topics(), min_size=1, max_size=8),
    )
    @_PROPERTY_SETTINGS
    def test_match_agrees_with_reference(
        self,
        subscriptions: list[tuple[str, int]],
        data: st.DataObject,
        topic_names: list[str],
    ) -> None:
        """match() finds exactly the (filter, subscriber) pairs the naive matcher does."""
        index: SubscriptionIndex[int, str] = SubscriptionIndex()
        model: set[tuple[str, int]] = set()
        for topic_filter, sub in subscriptions:
            self.assertEqual(
                index.add(topic_filter, sub, topic_filter), (topic_filter, sub) not in model
            )
            model.add((topic_filter, sub))
        removals = data.draw(
            st.lists(st.sampled_from(sorted(model)), max_size=6) if model else st.just([])
        )
        for topic_filter, sub in removals:
            self.assertEqual(index.remove(topic_filter, sub), (topic_filter, sub) in model)
            model.discard((topic_filter, sub))
        self.assertEqual(len(index), len(model))
        self.assertEqual({(f, s) for f, s, _ in index.subscriptions()}, model)
        for topic in topic_names:
            tables = index.match(topic)
            # One table per filter: every table holds one filter, no filter twice.
            filters_seen = [next(iter(table.values())) for table in tables]
            for table in tables:
                self.assertEqual(len(set(table.values())), 1)
            self.assertEqual(len(filters_seen), len(set(filters_seen)))
            expected = {(f, s) for f, s in model if reference_match(f, topic)}
            self.assertEqual(matched_pairs(index, topic), expected, topic)
        for topic_filter, sub in list(model):
            self.assertTrue(index.remove(topic_filter, sub))
        self.assertTrue(trie_is_empty(index))


def matched_values(index: SubscriptionIndex[str, int], topic: str) -> list[int]:
    return [value for table in index.match(topic) for value in table.values()]


# -- routing does not scan -----------------------------------------------------------


class _Counter:
    def __init__(self) -> None:
        self.lookups = 0
        self.scans = 0


class _CountingDict(dict):  # type: ignore[type-arg]
    """A dict that counts keyed lookups and whole-table scans."""

    counter: _Counter

    def get(self, key: Any, default: Any = None) -> Any:
        self.counter.lookups += 1
        return super().get(key, default)

    def __getitem__(self, key: Any) -> Any:
        self.counter.lookups += 1
        return super().__getitem__(key)

    def __iter__(self) -> Any:
        self.counter.scans += 1
        return super().__iter__()

    def items(self) -> Any:
        self.counter.scans += 1
        return super().items()

    def keys(self) -> Any:
        self.counter.scans += 1
        return super().keys()

    def values(self) -> Any:
        self.counter.scans += 1
        return super().values()


def _counting(mapping: dict[Any, Any], counter: _Counter) -> _CountingDict:
    counted = _CountingDict(mapping)
    counted.counter = counter
    return counted


def _instrument_index(index: SubscriptionIndex[Any, Any]) -> _Counter:
    counter = _Counter()
    index._exact = _counting(index._exact, counter)
    stack = [index._root]
    while stack:
        node = stack.pop()
        stack.extend(node.children.values())
        node.children = _counting(node.children, counter)
    return counter


def _instrument_retained(store: RetainedStore[Any]) -> _Counter:
    counter = _Counter()
    store._by_topic = _counting(store._by_topic, counter)
    stack = [store._root]
    while stack:
        node = stack.pop()
        stack.extend(node.children.values())
        node.children = _counting(node.children, counter)
    return counter


class NoScanTests(SynchronousTestCase):
    """Routing work depends on the topic and the matches, not on unrelated subscriptions."""

    def _index(self, unrelated: int) -> SubscriptionIndex[str, int]:
        index: SubscriptionIndex[str, int] = SubscriptionIndex()
        for n in range(unrelated):
            index.add(f"other/{n}", f"x{n}", 0)  # exact, other topics
            index.add(f"other/{n}/+", f"y{n}", 0)  # wildcard, other branch
            index.add(f"sensors/room{n}x/+", f"z{n}", 0)  # sibling of the matching path
        index.add("sensors/room1/temp", "exact", 1)
        index.add("sensors/+/temp", "plus", 1)
        index.add("sensors/#", "hash", 2)
        return index

    def test_match_work_independent_of_unrelated_subscriptions(self) -> None:
        """match() gives the same tables with the same dict lookups for 10 or 10,000 others."""
        small, large = self._index(10), self._index(10_000)
        self.assertEqual(len(large) - len(small), 3 * (10_000 - 10))
        small_counter = _instrument_index(small)
        large_counter = _instrument_index(large)
        self.assertEqual(small.match("sensors/room1/temp"), large.match("sensors/room1/temp"))
        self.assertEqual(small_counter.lookups, large_counter.lookups)
        self.assertEqual((small_counter.scans, large_counter.scans), (0, 0))
        self.assertLess(large_counter.lookups, 20)

    def test_no_wildcards_one_lookup(self) -> None:
        """With only exact filters, a publish costs one dict lookup."""
        index: SubscriptionIndex[int, int] = SubscriptionIndex()
        for n in range(10_000):
            index.add(f"t/{n}", n, 0)
        counter = _instrument_index(index)
        self.assertEqual(index.match("t/5"), [{5: 0}])
        self.assertEqual((counter.lookups, counter.scans), (1, 0))

    def test_retained_walk_independent_of_other_branches(self) -> None:
        """matching() visits only the branch its filter can match, whatever else is stored."""

        def store(unrelated: int) -> RetainedStore[int]:
            retained: RetainedStore[int] = RetainedStore()
            for n in range(unrelated):
                retained.set(f"other/{n}/v", n)
            retained.set("sensors/a", -1)
            retained.set("sensors/b", -2)
            return retained

        small, large = store(10), store(10_000)
        small_counter = _instrument_retained(small)
        large_counter = _instrument_retained(large)
        self.assertEqual(sorted(small.matching("sensors/+")), sorted(large.matching("sensors/+")))
        self.assertEqual(
            (small_counter.lookups, small_counter.scans),
            (large_counter.lookups, large_counter.scans),
        )


# -- the retained store --------------------------------------------------------------------


class RetainedStoreTests(SynchronousTestCase):
    """L{RetainedStore}: one value per topic, found by topic filters."""

    def test_set_get_replace_discard(self) -> None:
        """set() stores, set() again replaces, discard() deletes (True only if present)."""
        store: RetainedStore[str] = RetainedStore()
        store.set("a/b", "v1")
        self.assertEqual(store.get("a/b"), "v1")
        self.assertIn("a/b", store)
        store.set("a/b", "v2")
        self.assertEqual(store.get("a/b"), "v2")
        self.assertEqual(len(store), 1)
        self.assertEqual(list(store.matching("a/+")), [("a/b", "v2")])
        self.assertTrue(store.discard("a/b"))
        self.assertFalse(store.discard("a/b"))
        self.assertFalse(store.discard("never"))
        self.assertIsNone(store.get("a/b"))
        self.assertNotIn("a/b", store)
        self.assertEqual(len(store), 0)
        self.assertEqual(list(store.matching("#")), [])

    def test_matching_wildcards(self) -> None:
        """Wildcard filters find every matching retained topic, 'a/#' including 'a'."""
        store: RetainedStore[int] = RetainedStore()
        for n, topic in enumerate(["a", "a/b", "a/b/c", "a/c", "b", "/", "$SYS/x", "a/$x"]):
            store.set(topic, n)
        self.assertEqual(
            dict(store.matching("a/#")), {"a": 0, "a/b": 1, "a/b/c": 2, "a/c": 3, "a/$x": 7}
        )
        self.assertEqual(dict(store.matching("a/+")), {"a/b": 1, "a/c": 3, "a/$x": 7})
        self.assertEqual(dict(store.matching("+")), {"a": 0, "b": 4})
        self.assertEqual(dict(store.matching("+/+")), {"a/b": 1, "a/c": 3, "/": 5, "a/$x": 7})
        self.assertEqual(len(dict(store.matching("#"))), 7)
        self.assertNotIn("$SYS/x", dict(store.matching("#")))
        self.assertEqual(dict(store.matching("$SYS/#")), {"$SYS/x": 6})
        self.assertEqual(dict(store.matching("a/b")), {"a/b": 1})
        self.assertEqual(dict(store.matching("a/b/c/#")), {"a/b/c": 2})

    def test_discard_prunes(self) -> None:
        """Discarding every topic leaves an empty trie; shared branches survive until then."""
        store: RetainedStore[int] = RetainedStore()
        store.set("a/b/c", 1)
        store.set("a/b", 2)
        store.set("a/d", 3)
        store.discard("a/b/c")
        self.assertEqual(set(store._root.children["a"].children), {"b", "d"})
        store.discard("a/b")
        self.assertEqual(set(store._root.children["a"].children), {"d"})
        store.discard("a/d")
        self.assertEqual(store._root.children, {})

    def test_items(self) -> None:
        """items() lists every retained (topic, value)."""
        store: RetainedStore[int] = RetainedStore()
        store.set("x", 1)
        store.set("y/z", 2)
        self.assertEqual(dict(store.items()), {"x": 1, "y/z": 2})

    @given(
        st.lists(st.tuples(topics(), st.one_of(st.none(), st.integers(0, 100))), max_size=25),
        st.lists(topic_filters(), min_size=1, max_size=8),
    )
    @_PROPERTY_SETTINGS
    def test_matches_reference(
        self, operations: list[tuple[str, int | None]], filters: list[str]
    ) -> None:
        """set/discard then matching() agree with a dict and the naive matcher."""
        store: RetainedStore[int] = RetainedStore()
        model: dict[str, int] = {}
        for topic, value in operations:
            if value is None:
                self.assertEqual(store.discard(topic), topic in model)
                model.pop(topic, None)
            else:
                store.set(topic, value)
                model[topic] = value
        self.assertEqual(len(store), len(model))
        self.assertEqual(dict(store.items()), model)
        for topic, value in model.items():
            self.assertEqual(store.get(topic), value)
        for topic_filter in filters:
            found = list(store.matching(topic_filter))
            self.assertEqual(len(found), len(set(found)), "a topic came back twice")
            expected = {(t, v) for t, v in model.items() if reference_match(topic_filter, t)}
            self.assertEqual(set(found), expected, topic_filter)
        for topic in list(model):
            self.assertTrue(store.discard(topic))
        self.assertEqual(store._root.children, {})
