"""The journal's group commit, against a store whose commits the test controls."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mqttbroker.interfaces import IPersistence
from mqttbroker.persistence import (
    Change,
    DeleteRetained,
    Journal,
    MemoryPersistence,
    PersistenceError,
    PutRetained,
    Snapshot,
    StoredMessage,
)


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
