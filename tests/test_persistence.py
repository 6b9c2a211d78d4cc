"""The journal's group commit, against a store whose commits the test controls."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mqttbroker.codec import (
    PropertyId,
    Publish,
    Subscribe,
    Subscription,
    Unsubscribe,
)
from mqttbroker.interfaces import IPersistence
from mqttbroker.persistence import (
    Change,
    DeleteRetained,
    DeleteSession,
    DeleteSubscription,
    Journal,
    MemoryPersistence,
    PersistenceError,
    PutRetained,
    PutSession,
    PutSubscription,
    Snapshot,
    StoredMessage,
    StoredSession,
)
from mqttbroker.testing import BrokerHarness, subscribe
from mqttbroker.testing import publish_shape as shape


@implementer(IPersistence)
class ManualStore:
    """A store whose commits finish when the test says."""

    def __init__(self) -> None:
        self.groups: list[list[Change]] = []
        self.pending: list[Deferred[None]] = []

    def load(self) -> Snapshot:
        return Snapshot()

    def apply(self, changes: Sequence[Change]) -> Deferred[None]:
        self.groups.append(list(changes))
        d: Deferred[None] = Deferred()
        self.pending.append(d)
        return d

    def close(self) -> Deferred[None]:
        return Deferred()

    def finish(self, error: Exception | None = None) -> None:
        d = self.pending.pop(0)
        if error is None:
            d.callback(None)
        else:
            d.errback(error)


def put(topic: str) -> PutRetained:
    return PutRetained(StoredMessage(topic, b"x", 1, True))


class JournalTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.store = ManualStore()
        self.journal = Journal(self.store, self.clock)
        verifyObject(IPersistence, self.store)
        verifyObject(IPersistence, MemoryPersistence())

    def test_one_turn_one_group(self) -> None:
        """Changes of one turn go to the store together; waiters fire after the commit."""
        fired: list[object] = []
        for topic in ("a", "b", "c"):
            self.journal.record(put(topic))
            self.journal.durable().addCallback(fired.append)
        self.assertEqual(self.store.groups, [])
        self.clock.advance(0)
        self.assertEqual(self.store.groups, [[put("a"), put("b"), put("c")]])
        self.assertEqual(fired, [])
        self.store.finish()
        self.assertEqual(fired, [None, None, None])

    def test_groups_in_order_one_at_a_time(self) -> None:
        """What comes while a group commits waits for it, then goes as the next group."""
        first: list[object] = []
        second: list[object] = []
        self.journal.record(put("a"))
        self.journal.durable().addCallback(first.append)
        self.clock.advance(0)
        self.journal.record(DeleteRetained("a"))
        self.journal.durable().addCallback(second.append)
        self.clock.advance(0)
        self.assertEqual(len(self.store.groups), 1)
        self.store.finish()
        self.assertEqual((first, second), ([None], []))
        self.clock.advance(0)
        self.assertEqual(self.store.groups[1], [DeleteRetained("a")])
        self.store.finish()
        self.assertEqual(second, [None])

    def test_failure(self) -> None:
        """A refused group fails its waiters with PersistenceError; the next may succeed."""
        failures: list[object] = []
        self.journal.on_failure = failures.append
        self.journal.record(put("a"))
        waiter = self.journal.durable()
        self.clock.advance(0)
        self.store.finish(PersistenceError("disk full"))
        self.failureResultOf(waiter, PersistenceError)
        self.assertFalse(self.journal.healthy)
        self.assertEqual((self.journal.failed, len(failures)), (1, 1))
        self.journal.record(put("b"))
        ok = self.journal.durable()
        self.clock.advance(0)
        self.store.finish()
        self.successResultOf(ok)
        self.assertTrue(self.journal.healthy)

    def test_durable_with_nothing_pending(self) -> None:
        waiter = self.journal.durable()
        self.clock.advance(0)
        self.successResultOf(waiter)
        self.assertEqual(self.store.groups, [])

    def test_memory_store(self) -> None:
        journal = Journal(MemoryPersistence(), self.clock)
        journal.record(put("a"))
        waiter = journal.durable()
        self.clock.advance(0)
        self.successResultOf(waiter)


# -- the broker's sessions, subscriptions and retained messages through a store -------


@implementer(IPersistence)
class ModelStore:
    """
    A store kept in dictionaries, with the semantics every real store must have: the
    reference the SQLite and Redis stores are compared with.
    """

    def __init__(self) -> None:
        self.sessions: dict[str, StoredSession] = {}
        self.retained: dict[str, StoredMessage] = {}

    def load(self) -> Snapshot:
        sessions = [copy.deepcopy(s) for s in self.sessions.values()]
        for session in sessions:
            session.deliveries.sort(key=lambda d: d.seq)
        return Snapshot(sessions, list(self.retained.values()))

    def apply(self, changes: Sequence[Change]) -> Deferred[None]:
        for change in changes:
            self._apply(change)
        return succeed(None)

    def _apply(self, change: Change) -> None:
        if isinstance(change, PutSession):
            session = self.sessions.setdefault(change.client_id, StoredSession(change.client_id))
            session.expiry_interval = change.expiry_interval
            session.disconnected_at = change.disconnected_at
            session.username = change.username
        elif isinstance(change, DeleteSession):
            self.sessions.pop(change.client_id, None)
        elif isinstance(change, PutSubscription):
            self.sessions[change.client_id].subscriptions[change.topic_filter] = change.value
        elif isinstance(change, DeleteSubscription):
            self.sessions[change.client_id].subscriptions.pop(change.topic_filter, None)
        elif isinstance(change, PutRetained):
            self.retained[change.message.topic] = change.message
        elif isinstance(change, DeleteRetained):
            self.retained.pop(change.topic, None)
        else:
            raise NotImplementedError(type(change).__name__)

    def close(self) -> Deferred[None]:
        return succeed(None)


class BrokerStoreTests(SynchronousTestCase):
    """What the broker records, and what a restarted broker takes back."""

    def setUp(self) -> None:
        self.store = ModelStore()
        verifyObject(IPersistence, self.store)
        self.harness = BrokerHarness(store=self.store)

    def restart(self) -> BrokerHarness:
        """A new broker (a new process) on the same store."""
        harness = BrokerHarness(store=self.store)
        harness.broker.restore(self.store.load())
        return harness

    def test_persistent_session_and_subscriptions(self) -> None:
        client, _ = self.harness.connect("p", 4, clean_start=False)
        subscribe(client, ("a/#", 1), ("b", 0))
        client.send(Unsubscribe(2, ("b",)))
        self.harness.clock.advance(0)
        self.assertEqual(self.store.sessions["p"].subscriptions, {"a/#": 1})
        clean, _ = self.harness.connect("c", 4)
        subscribe(clean, ("x", 1))
        self.harness.clock.advance(0)
        self.assertNotIn("c", self.store.sessions)

        harness = self.restart()
        self.assertEqual(harness.broker.sessions["p"].subscriptions, {"a/#": 1})
        self.assertNotIn("c", harness.broker.sessions)
        # The restored subscription routes: a publish reaches the client when it
        # comes back (the session is present).
        client, connack = harness.connect("p", 4, clean_start=False)
        self.assertTrue(connack.session_present)
        publisher, _ = harness.connect("pub", 4)
        publisher.send(Publish("a/1", b"m", 1, packet_id=1))
        self.assertEqual(shape(client.received()), [("a/1", b"m", 1, False, False)])

    def test_clean_start_deletes(self) -> None:
        self.harness.connect("p", 4, clean_start=False)
        self.harness.clock.advance(0)
        self.assertIn("p", self.store.sessions)
        self.harness.connect("p", 4, clean_start=True)
        self.harness.clock.advance(0)
        self.assertNotIn("p", self.store.sessions)

    def test_mqtt5_expiry_survives_restart(self) -> None:
        """The expiry timer restarts from when the client left, not from the restart."""
        client, _ = self.harness.connect(
            "e", 5, properties={PropertyId.SESSION_EXPIRY_INTERVAL: 100}
        )
        self.harness.clock.advance(10)
        client.drop()
        self.harness.clock.advance(0)
        self.assertEqual(self.store.sessions["e"].disconnected_at, 10.0)
        harness = self.restart()
        harness.clock.advance(109.0)
        self.assertIn("e", harness.broker.sessions)
        harness.clock.advance(1.0)
        self.assertNotIn("e", harness.broker.sessions)
        harness.clock.advance(0)
        self.assertNotIn("e", self.store.sessions)

    def test_retained(self) -> None:
        publisher, _ = self.harness.connect("pub", 5)
        properties = {PropertyId.CONTENT_TYPE: "text/plain"}
        publisher.send(Publish("r/1", b"kept", 1, retain=True, packet_id=1, properties=properties))
        publisher.send(Publish("r/2", b"gone", 1, retain=True, packet_id=2))
        publisher.send(Publish("r/2", b"", 1, retain=True, packet_id=3))
        self.harness.clock.advance(0)
        self.assertEqual(sorted(self.store.retained), ["r/1"])
        harness = self.restart()
        client, _ = harness.connect("s", 5)
        client.send(Subscribe(1, (Subscription("r/#", 1),)))
        [_, retained] = client.received()
        assert isinstance(retained, Publish)
        self.assertEqual(
            (retained.topic, retained.payload, retained.retain), ("r/1", b"kept", True)
        )
        self.assertEqual(retained.properties.get(PropertyId.CONTENT_TYPE), "text/plain")
