"""The journal's group commit, against a store whose commits the test controls."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mqttbroker.broker import BrokerConfig
from mqttbroker.codec import (
    PropertyId,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from mqttbroker.interfaces import IPersistence
from mqttbroker.persistence import (
    AddAwaitingRel,
    Change,
    DeleteAwaitingRel,
    DeleteDelivery,
    DeleteRetained,
    DeleteSession,
    DeleteSubscription,
    DeleteWill,
    Journal,
    MemoryPersistence,
    PersistenceError,
    PutDelivery,
    PutRetained,
    PutSession,
    PutSubscription,
    PutWill,
    Snapshot,
    StoredDelivery,
    StoredMessage,
    StoredSession,
    UpdateDelivery,
    check_snapshot,
)
from mqttbroker.testing import BrokerHarness, FakeClient, subscribe
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


def subscribe_stored(
    harness: BrokerHarness, store: ManualStore, client: FakeClient, topic_filter: str
) -> None:
    """Subscribe at QoS 1 through a store the test commits: the SUBACK waits for it."""
    client.send(Subscribe(1, (Subscription(topic_filter, 1),)))
    harness.clock.advance(0)
    assert client.received() == []
    store.finish()
    assert client.received() == [Suback(1, (1,))]


def delivery_put(client_id: str, seq: int) -> PutDelivery:
    return PutDelivery(client_id, StoredDelivery(seq, StoredMessage("t", b"x", 1, False), 1))


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
        # Nothing is tried again before the probe (no retry storm); then the refused
        # changes go first, with what came meanwhile.
        self.journal.record(put("b"))
        ok = self.journal.durable()
        self.clock.advance(0.5)
        self.assertEqual(len(self.store.groups), 1)
        self.clock.advance(0.5)
        self.assertEqual(self.store.groups[-1], [put("a"), put("b")])
        self.store.finish()
        self.successResultOf(ok)
        self.assertTrue(self.journal.healthy)

    def test_delivery_done_before_its_group_leaves_is_never_written(self) -> None:
        """
        A delivery put, updated and deleted while the group before it commits cancels
        out; the waiters of that time still wait for the next group.
        """
        self.journal.record(put("a"))
        self.clock.advance(0)  # group 1 commits, slowly
        self.journal.record(delivery_put("sub", 1))
        self.journal.record(delivery_put("sub", 2))
        self.journal.record(UpdateDelivery("sub", 1, 7, True))
        waiter = self.journal.durable()
        self.journal.record(DeleteDelivery("sub", 1))
        self.assertEqual(self.journal.absorbed, 3)
        self.store.finish()
        self.assertNoResult(waiter)
        self.clock.advance(0)
        self.assertEqual(self.store.groups[1], [delivery_put("sub", 2)])
        self.store.finish()
        self.successResultOf(waiter)

    def test_everything_cancelled_fires_waiters_without_a_commit(self) -> None:
        self.journal.record(delivery_put("sub", 1))
        waiter = self.journal.durable()
        self.journal.record(DeleteDelivery("sub", 1))
        self.clock.advance(0)
        self.successResultOf(waiter)
        self.assertEqual(self.store.groups, [])

    def test_submitted_put_is_deleted_in_the_store(self) -> None:
        """Once a put has left for the store, its delete must follow it there."""
        self.journal.record(delivery_put("sub", 1))
        self.clock.advance(0)
        self.journal.record(DeleteDelivery("sub", 1))
        self.store.finish()
        self.clock.advance(0)
        self.assertEqual(self.store.groups, [[delivery_put("sub", 1)], [DeleteDelivery("sub", 1)]])
        self.assertEqual(self.journal.absorbed, 0)

    def test_refused_put_is_not_cancelled(self) -> None:
        """
        A refused group may have been applied after all (a Redis timeout): its put is
        sent again and a later delete is written too, never dropped with it.
        """
        self.journal.record(delivery_put("sub", 1))
        self.clock.advance(0)
        self.store.finish(PersistenceError("timeout"))
        self.journal.record(DeleteDelivery("sub", 1))
        self.clock.advance(self.journal.probe_delay)
        self.assertEqual(self.store.groups[-1], [delivery_put("sub", 1), DeleteDelivery("sub", 1)])
        self.assertEqual(self.journal.absorbed, 0)
        self.flushLoggedErrors()

    def test_new_session_numbers_deliveries_afresh(self) -> None:
        """
        After a session is deleted, the same client id may number deliveries from 1
        again: a delete of the new session never cancels a put of the old one.
        """
        self.journal.record(put("a"))
        self.clock.advance(0)
        self.journal.record(delivery_put("sub", 1))
        self.journal.record(DeleteSession("sub"))
        self.journal.record(DeleteDelivery("sub", 1))
        self.store.finish()
        self.clock.advance(0)
        self.assertEqual(
            self.store.groups[1],
            [delivery_put("sub", 1), DeleteSession("sub"), DeleteDelivery("sub", 1)],
        )

    def test_last_write_of_a_row_wins(self) -> None:
        """
        Of several writes of one row before the group leaves, only the last is made:
        a retained topic published to a thousand times, a session reconnecting, a
        filter subscribed and unsubscribed, a will set and cleared.
        """
        self.journal.record(put("held"))
        self.clock.advance(0)  # group 1 commits, slowly
        for n in range(1000):
            self.journal.record(PutRetained(StoredMessage("last/value", b"%d" % n, 0, True)))
        self.journal.record(PutSession("c", None, None))
        self.journal.record(PutSubscription("c", "f", 1))
        self.journal.record(PutWill("c", Will("w", b"", 0, False), 5.0))
        self.journal.record(DeleteSession("c"))
        self.journal.record(PutSession("c", None, 12.5))
        self.journal.record(DeleteSubscription("c", "f"))
        self.journal.record(DeleteWill("c"))
        self.journal.record(DeleteRetained("other"))
        self.assertEqual(self.journal.absorbed, 999 + 3)
        self.store.finish()
        self.clock.advance(0)
        self.assertEqual(
            self.store.groups[1],
            [
                PutRetained(StoredMessage("last/value", b"999", 0, True)),
                DeleteSession("c"),
                PutSession("c", None, 12.5),
                DeleteSubscription("c", "f"),
                DeleteWill("c"),
                DeleteRetained("other"),
            ],
        )

    def test_rows_written_again_after_their_group_left(self) -> None:
        """A write already handed to the store is never dropped for a later one."""
        self.journal.record(PutSession("c", None, None))
        self.clock.advance(0)
        self.journal.record(PutSession("c", None, 1.0))
        self.store.finish()
        self.clock.advance(0)
        self.assertEqual(
            self.store.groups, [[PutSession("c", None, None)], [PutSession("c", None, 1.0)]]
        )

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


class CheckSnapshotTests(SynchronousTestCase):
    """What a store gives back is checked before the broker takes it in."""

    def good(self) -> Snapshot:
        message = StoredMessage("a/b", b"x", 1, False, b"\x05\x02\x00\x00\x00\x3c", "pub", 1e9)
        return Snapshot(
            [
                StoredSession(
                    "c1",
                    3600,
                    12.5,
                    "alice",
                    {"a/#": 1 | 3 << 4, "$share/g/x": 2},
                    [StoredDelivery(1, message, 1, False, (3,), 7), StoredDelivery(2, message, 0)],
                    {5},
                    Will("w", b"gone", 1, False),
                    99.0,
                ),
                StoredSession("c2"),
            ],
            [message],
        )

    def test_good(self) -> None:
        check_snapshot(self.good())

    def test_each_damage_named(self) -> None:
        damages = [
            (lambda s: setattr(s.retained[0], "topic", "a/+"), "retained message 'a/+'"),
            (lambda s: setattr(s.retained[0], "qos", 3), "QoS 3"),
            (lambda s: setattr(s.retained[0], "payload", "text"), "payload is not bytes"),
            (lambda s: setattr(s.retained[0], "properties", b"\x05\xff"), "do not decode"),
            (lambda s: setattr(s.sessions[0], "expiry_interval", "1"), "expiry interval"),
            (lambda s: s.sessions[0].subscriptions.update({"a/#/b": 1}), "'a/#/b' is not valid"),
            (lambda s: s.sessions[0].subscriptions.update({"t": 3}), "has the value 3"),
            (lambda s: s.sessions[0].awaiting_rel.add(0), "packet id 0 awaiting PUBREL"),
            (lambda s: setattr(s.sessions[0].deliveries[1], "seq", 1), "delivery 1: its place"),
            (lambda s: setattr(s.sessions[0].deliveries[0], "seq", 0), "delivery 0: its place"),
            (lambda s: setattr(s.sessions[0].deliveries[0], "packet_id", 70000), "70000"),
            (lambda s: setattr(s.sessions[0].deliveries[0], "subscription_ids", (0,)), "(0,)"),
            (lambda s: setattr(s.sessions[0].deliveries[0], "qos", None), "QoS None"),
            (lambda s: setattr(s.sessions[0], "will", Will("w/#", b"", 0, False)), "will: topic"),
        ]
        for damage, named in damages:
            snapshot = self.good()
            damage(snapshot)
            with self.assertRaises(ValueError) as raised:
                check_snapshot(snapshot)
            self.assertIn(named, str(raised.exception))


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

    def _session(self, client_id: str) -> StoredSession:
        return self.sessions.setdefault(client_id, StoredSession(client_id))

    def _apply(self, change: Change) -> None:
        # Like the real stores, a row written for a session whose row is not there
        # (yet: the journal keeps only the last write of a row, which may come after
        # the others) is kept, under a session with default fields; deleting from a
        # session that is not there does nothing.
        if isinstance(change, PutSession):
            session = self._session(change.client_id)
            session.expiry_interval = change.expiry_interval
            session.disconnected_at = change.disconnected_at
            session.username = change.username
        elif isinstance(change, DeleteSession):
            self.sessions.pop(change.client_id, None)
        elif isinstance(change, PutSubscription):
            self._session(change.client_id).subscriptions[change.topic_filter] = change.value
        elif isinstance(change, DeleteSubscription):
            if change.client_id in self.sessions:
                self.sessions[change.client_id].subscriptions.pop(change.topic_filter, None)
        elif isinstance(change, PutDelivery):
            deliveries = self._session(change.client_id).deliveries
            deliveries[:] = [d for d in deliveries if d.seq != change.delivery.seq]
            deliveries.append(change.delivery)
        elif isinstance(change, UpdateDelivery):
            deliveries = self._session(change.client_id).deliveries
            deliveries[:] = [
                dataclasses.replace(d, packet_id=change.packet_id, released=change.released)
                if d.seq == change.seq
                else d
                for d in deliveries
            ]
        elif isinstance(change, DeleteDelivery):
            if change.client_id in self.sessions:
                deliveries = self.sessions[change.client_id].deliveries
                deliveries[:] = [d for d in deliveries if d.seq != change.seq]
        elif isinstance(change, AddAwaitingRel):
            self._session(change.client_id).awaiting_rel.add(change.packet_id)
        elif isinstance(change, DeleteAwaitingRel):
            if change.client_id in self.sessions:
                self.sessions[change.client_id].awaiting_rel.discard(change.packet_id)
        elif isinstance(change, PutWill):
            self._session(change.client_id).will = change.will
            self._session(change.client_id).will_at = change.at
        elif isinstance(change, DeleteWill):
            if change.client_id in self.sessions:
                self.sessions[change.client_id].will = None
                self.sessions[change.client_id].will_at = None
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
        self.assertEqual(self.store.sessions["p"].disconnected_at, None)
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

    def test_user_name_stored_at_connect(self) -> None:
        self.harness.connect("u", 4, clean_start=False, username="alice")
        self.harness.clock.advance(0)
        self.assertEqual(self.store.sessions["u"].username, "alice")

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


class DeliveryStoreTests(SynchronousTestCase):
    """Messages owed to persistent sessions: acknowledged only once stored."""

    def setUp(self) -> None:
        self.store = ModelStore()
        self.harness = BrokerHarness(store=self.store)

    def restart(self) -> BrokerHarness:
        harness = BrokerHarness(store=self.store)
        harness.broker.restore(self.store.load())
        return harness

    def offline_subscriber(self, client_id: str = "sub", qos: int = 1) -> None:
        client, _ = self.harness.connect(client_id, 4, clean_start=False)
        subscribe(client, ("t", qos))
        client.drop()

    def test_ack_after_commit_and_recovery(self) -> None:
        """PUBACK waits for the commit; after a restart the queue is delivered in order."""
        self.offline_subscriber()
        publisher, _ = self.harness.connect("pub", 4)
        for n in range(3):
            publisher.send(Publish("t", bytes([n]), 1, packet_id=n + 1))
        self.assertEqual(publisher.received(), [])
        self.harness.clock.advance(0)
        self.assertEqual(publisher.received(), [Puback(1), Puback(2), Puback(3)])
        self.assertEqual([d.packet_id for d in self.store.sessions["sub"].deliveries], [None] * 3)
        harness = self.restart()
        client, connack = harness.connect("sub", 4, clean_start=False)
        self.assertTrue(connack.session_present)
        messages = [p for p in client.received() if isinstance(p, Publish)]
        self.assertEqual([m.payload for m in messages], [b"\x00", b"\x01", b"\x02"])
        harness.clock.advance(0)
        # Sent: in flight now, with their packet identifiers.
        self.assertEqual(
            [d.packet_id for d in self.store.sessions["sub"].deliveries],
            [m.packet_id for m in messages],
        )
        for m in messages:
            client.send(Puback(m.packet_id))  # type: ignore[arg-type]
        harness.clock.advance(0)
        self.assertEqual(self.store.sessions["sub"].deliveries, [])

    def test_in_flight_resent_with_dup_after_restart(self) -> None:
        client, _ = self.harness.connect("sub", 4, clean_start=False)
        subscribe(client, ("t", 1))
        publisher, _ = self.harness.connect("pub", 4)
        publisher.send(Publish("t", b"m", 1, packet_id=1))
        [sent] = client.received()
        self.harness.clock.advance(0)
        harness = self.restart()
        client, _ = harness.connect("sub", 4, clean_start=False)
        [again] = client.received()
        assert isinstance(again, Publish) and isinstance(sent, Publish)
        self.assertEqual((again.packet_id, again.dup, again.payload), (sent.packet_id, True, b"m"))

    def test_qos2_exactly_once_across_restart(self) -> None:
        """
        The receiver side: a QoS 2 message PUBREC'd before a restart is not routed
        again when re-sent after it; the PUBREL still completes. The sender side: a
        PUBREC'd delivery is resumed with PUBREL.
        """
        client, _ = self.harness.connect("sub", 4, clean_start=False)
        subscribe(client, ("t", 2))
        publisher, _ = self.harness.connect("pub", 4, clean_start=False)
        publisher.send(Publish("t", b"once", 2, packet_id=9))
        self.harness.clock.advance(0)
        self.assertEqual(publisher.received(), [Pubrec(9)])
        [delivery] = client.received()
        assert isinstance(delivery, Publish)
        client.send(Pubrec(delivery.packet_id))  # type: ignore[arg-type]
        self.assertEqual(client.received(), [Pubrel(delivery.packet_id)])  # type: ignore[arg-type]
        self.harness.clock.advance(0)

        harness = self.restart()
        publisher, _ = harness.connect("pub", 4, clean_start=False)
        client, _ = harness.connect("sub", 4, clean_start=False)
        self.assertEqual(client.received(), [Pubrel(delivery.packet_id)])  # type: ignore[arg-type]
        publisher.send(Publish("t", b"once", 2, dup=True, packet_id=9), Pubrel(9))
        harness.clock.advance(0)
        self.assertEqual(publisher.received(), [Pubrec(9), Pubcomp(9)])
        self.assertEqual(client.received(), [])

    def test_store_failure_refuses(self) -> None:
        """
        A store that cannot take the message: MQTT 5 gets 0x80 instead of the PUBACK;
        a 3.1.1 publisher is disconnected without one (it will send it again).
        """
        store = ManualStore()
        harness = BrokerHarness(store=store)
        client, _ = harness.connect("sub", 4, clean_start=False)
        subscribe_stored(harness, store, client, "t")
        client.drop()
        harness.clock.advance(0)
        store.finish()
        v5, _ = harness.connect("p5", 5)
        v5.send(Publish("t", b"x", 1, packet_id=1))
        harness.clock.advance(0)
        store.finish(PersistenceError("disk full"))
        [ack] = v5.received()
        self.assertEqual((type(ack), ack.reason_code), (Puback, ReasonCode.UNSPECIFIED_ERROR))  # type: ignore[union-attr]
        # The store still fails: a 3.1.1 publisher is closed on at once, unacknowledged.
        v4, _ = harness.connect("p4", 4)
        v4.send(Publish("t", b"y", 1, packet_id=1))
        self.assertEqual(v4.received(), [])
        self.assertTrue(v4.transport.disconnecting)
        self.flushLoggedErrors()

    def test_acks_keep_their_order(self) -> None:
        """A PUBACK that needs no store does not overtake one waiting for a commit."""
        self.offline_subscriber()
        publisher, _ = self.harness.connect("pub", 4)
        publisher.send(Publish("t", b"stored", 1, packet_id=1))
        publisher.send(Publish("nobody", b"not stored", 1, packet_id=2))
        self.assertEqual(publisher.received(), [])
        self.harness.clock.advance(0)
        self.assertEqual(publisher.received(), [Puback(1), Puback(2)])

    def test_one_wait_per_connection_and_group(self) -> None:
        """The acks of one turn on one connection wait on one Deferred, in order."""
        self.offline_subscriber()
        journal = self.harness.broker.journal
        assert journal is not None
        publisher, _ = self.harness.connect("pub", 4)
        for n in range(1, 5):
            publisher.send(Publish("t", b"m", 1, packet_id=n))
        self.assertEqual(len(journal._waiters), 1)
        self.harness.clock.advance(0)
        self.assertEqual(publisher.received(), [Puback(n) for n in range(1, 5)])

    def test_fan_out_shares_one_stored_message(self) -> None:
        """A message owed to many persistent sessions is converted for the store once."""
        for name in ("a", "b", "c"):
            self.offline_subscriber(name)
        publisher, _ = self.harness.connect("pub", 4)
        publisher.send(Publish("t", b"m", 1, packet_id=1))
        self.harness.clock.advance(0)
        messages = {id(self.store.sessions[n].deliveries[0].message) for n in ("a", "b", "c")}
        self.assertEqual(len(messages), 1)
        self.assertEqual(publisher.received(), [Puback(1)])


class AcknowledgementStoreTests(SynchronousTestCase):
    """
    Every acknowledgement that the store must back leaves after its commit: SUBACK,
    UNSUBACK and PUBCOMP as well as PUBACK and PUBREC.
    """

    def setUp(self) -> None:
        self.store = ManualStore()
        self.harness = BrokerHarness(store=self.store)

    def connect(self, client_id: str, level: int = 4) -> FakeClient:
        fields: dict[str, object] = {}
        if level == 5:
            fields["properties"] = {PropertyId.SESSION_EXPIRY_INTERVAL: 3600}
        client, _ = self.harness.connect(client_id, level, clean_start=False, **fields)
        self.harness.clock.advance(0)
        self.store.finish()  # the session
        return client

    def test_suback_then_retained_after_commit(self) -> None:
        publisher = self.connect("pub")
        publisher.send(Publish("t", b"kept", 1, retain=True, packet_id=1))
        self.harness.clock.advance(0)
        self.store.finish()
        self.assertEqual(publisher.received(), [Puback(1)])
        client = self.connect("sub")
        client.send(Subscribe(1, (Subscription("t", 1),)))
        self.harness.clock.advance(0)
        self.assertEqual(self.store.groups[-1], [PutSubscription("sub", "t", 1)])
        self.assertEqual(client.received(), [])
        self.store.finish()
        suback, retained = client.received()
        self.assertEqual(suback, Suback(1, (1,)))
        self.assertEqual((type(retained), retained.payload), (Publish, b"kept"))  # type: ignore[union-attr]

    def test_unsuback_after_commit(self) -> None:
        client = self.connect("sub")
        subscribe_stored(self.harness, self.store, client, "t")
        client.send(Unsubscribe(2, ("t",)))
        self.harness.clock.advance(0)
        self.assertEqual(client.received(), [])
        self.store.finish()
        self.assertEqual(client.received(), [Unsuback(2)])

    def test_pubcomp_after_the_release_is_stored(self) -> None:
        """
        Were the release lost in a crash, the next message with that identifier would
        be taken for a re-sent one and dropped: PUBCOMP waits for it.
        """
        publisher = self.connect("pub")
        publisher.send(Publish("t", b"m", 2, packet_id=5))
        self.harness.clock.advance(0)
        self.store.finish()
        self.assertEqual(publisher.received(), [Pubrec(5)])
        publisher.send(Pubrel(5))
        self.harness.clock.advance(0)
        self.assertEqual(self.store.groups[-1], [DeleteAwaitingRel("pub", 5)])
        self.assertEqual(publisher.received(), [])
        self.store.finish()
        self.assertEqual(publisher.received(), [Pubcomp(5)])

    def test_clean_session_acks_at_once(self) -> None:
        """Nothing of a clean session is stored, so nothing waits."""
        client, _ = self.harness.connect("clean", 4)
        client.send(Subscribe(1, (Subscription("t", 1),)), Unsubscribe(2, ("t",)))
        self.assertEqual(client.received(), [Suback(1, (1,)), Unsuback(2)])

    def test_store_failure_closes_instead(self) -> None:
        """
        SUBACK and PUBCOMP have no code for "not stored": the connection ends (MQTT 5:
        DISCONNECT 0x80 first) and the client repeats the packet after reconnecting.
        """
        for level in (4, 5):
            client = self.connect(f"sub{level}", level)
            client.send(Subscribe(1, (Subscription("t", 1),)))
            self.harness.clock.advance(0)
            self.store.finish(PersistenceError("disk full"))
            packets = client.received()
            if level == 5:
                [disconnect] = packets
                self.assertEqual(disconnect.reason_code, ReasonCode.UNSPECIFIED_ERROR)  # type: ignore[union-attr]
            else:
                self.assertEqual(packets, [])
            self.assertTrue(client.transport.disconnecting)
            # The probe finds the store working again: the change was kept for it.
            self.harness.clock.advance(self.harness.broker.journal.probe_delay)  # type: ignore[union-attr]
            self.assertIn(PutSubscription(f"sub{level}", "t", 1), self.store.groups[-1])
            self.store.finish()
        self.flushLoggedErrors()


class WillAndTTLStoreTests(SynchronousTestCase):
    """Delayed wills survive a restart; 3.1.1 sessions may have a time to live."""

    def test_delayed_will_published_on_time_after_restart(self) -> None:
        store = ModelStore()
        harness = BrokerHarness(store=store)
        will = Will("wills/w", b"gone", 1, properties={PropertyId.WILL_DELAY_INTERVAL: 30})
        client, _ = harness.connect(
            "w", 5, will=will, properties={PropertyId.SESSION_EXPIRY_INTERVAL: 3600}
        )
        harness.clock.advance(5)
        client.drop()
        harness.clock.advance(0)
        self.assertEqual(store.sessions["w"].will_at, 35.0)
        restarted = BrokerHarness(store=store)
        restarted.clock.advance(20)
        restarted.broker.restore(store.load())
        watcher, _ = restarted.connect("watcher", 4)
        subscribe(watcher, ("wills/#", 1))
        restarted.clock.advance(14)
        self.assertEqual(watcher.received(), [])
        restarted.clock.advance(1)
        self.assertEqual(shape(watcher.received()), [("wills/w", b"gone", 1, False, False)])
        restarted.clock.advance(0)
        self.assertIsNone(store.sessions["w"].will)

    def test_will_cancelled_by_reconnect_is_forgotten(self) -> None:
        store = ModelStore()
        harness = BrokerHarness(store=store)
        will = Will("wills/w", b"gone", 1, properties={PropertyId.WILL_DELAY_INTERVAL: 30})
        properties = {PropertyId.SESSION_EXPIRY_INTERVAL: 3600}
        client, _ = harness.connect("w", 5, will=will, properties=properties)
        client.drop()
        harness.connect("w", 5, clean_start=False, properties=properties)
        harness.clock.advance(0)
        self.assertIsNone(store.sessions["w"].will)

    def test_session_ttl_for_mqtt311(self) -> None:
        """--session-ttl: a 3.1.1 persistent session ends after that long offline."""
        store = ModelStore()
        harness = BrokerHarness(BrokerConfig(session_ttl=60), store=store)
        client, _ = harness.connect("old", 4, clean_start=False)
        client.drop()
        harness.clock.advance(59)
        self.assertIn("old", harness.broker.sessions)
        harness.clock.advance(1)
        self.assertNotIn("old", harness.broker.sessions)
        harness.clock.advance(0)
        self.assertNotIn("old", store.sessions)
        # Without a TTL it is kept.
        forever = BrokerHarness()
        client, _ = forever.connect("old", 4, clean_start=False)
        client.drop()
        forever.clock.advance(10**6)
        self.assertIn("old", forever.broker.sessions)


class FailingStoreTests(SynchronousTestCase):
    """While the store fails, QoS 1/2 messages are refused up front; QoS 0 flows."""

    def test_refused_until_the_store_works_again(self) -> None:
        store = ManualStore()
        harness = BrokerHarness(store=store)
        sub, _ = harness.connect("sub", 4, clean_start=False)
        subscribe_stored(harness, store, sub, "t")
        publisher, _ = harness.connect("p5", 5)
        publisher.send(Publish("t", b"first", 1, packet_id=1))
        harness.clock.advance(0)
        sub.received()
        store.finish(PersistenceError("disk full"))
        self.assertFalse(harness.broker.journal.healthy)  # type: ignore[union-attr]
        publisher.received()
        # Refused before routing: the online subscriber does not get it.
        publisher.send(Publish("t", b"refused", 1, packet_id=2), Publish("t", b"q0", 0))
        [ack] = publisher.received()
        self.assertEqual((ack.packet_id, ack.reason_code), (2, ReasonCode.UNSPECIFIED_ERROR))  # type: ignore[union-attr]
        self.assertEqual([p.payload for p in sub.received()], [b"q0"])  # type: ignore[union-attr]
        # A probe after a second applies the refused group again, and finds the
        # store working: the store catches up with the broker's state.
        harness.clock.advance(1.0)
        self.assertEqual(store.groups[-1], store.groups[-2])
        store.finish()
        self.assertTrue(harness.broker.journal.healthy)  # type: ignore[union-attr]
        publisher.send(Publish("t", b"again", 1, packet_id=3))
        harness.clock.advance(0)
        store.finish()
        self.assertEqual(publisher.received(), [Puback(3)])
        self.flushLoggedErrors()
