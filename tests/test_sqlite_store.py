"""
The SQLite store (C{--persistence sqlite:...}): what it keeps, that it commits whole
groups or nothing, that it survives SIGKILL of its process, that SQLite errors (disk
full, read-only, locked) fail the group and leave the store usable, and how fast it
loads and commits on this machine (printed, never asserted).
"""

from __future__ import annotations

import os
import random
import select
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

import mqttbroker
from mqttbroker.backends.sqlite import SCHEMA_VERSION, SQLiteStore, StoreOpenError, build
from mqttbroker.broker import Broker
from mqttbroker.codec import PropertyId, Will
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
from tests.support import kill_process

#: A message with MQTT 5 properties (Message Expiry Interval 60) and an expiry.
MESSAGE = StoredMessage("a/b", b"payload", 1, False, b"\x05\x02\x00\x00\x00\x3c", "pub", 1e9)
WILL = Will(
    "will/c1",
    b"gone",
    1,
    True,
    {PropertyId.WILL_DELAY_INTERVAL: 30, PropertyId.USER_PROPERTY: [("k", "v"), ("k", "w")]},
)


def delivery(seq: int, payload: bytes = b"x", **fields: Any) -> StoredDelivery:
    return StoredDelivery(seq, StoredMessage("t", payload, 1, False), 1, **fields)


def by_id(snapshot: Snapshot) -> dict[str, StoredSession]:
    return {session.client_id: session for session in snapshot.sessions}


class _Case(TestCase):
    """A temporary directory, and stores closed at the end."""

    timeout = 120

    def setUp(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="mqttbroker-sqlite-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.path = os.path.join(self.directory, "store.sqlite3")

    def open(self, path: str | None = None, **options: Any) -> SQLiteStore:
        store = SQLiteStore(path or self.path, **options)
        self.addCleanup(self._close, store)
        return store

    def _close(self, store: SQLiteStore) -> Deferred[None] | None:
        return None if store._closed else store.close()

    @defer.inlineCallbacks
    def reopen(self, store: SQLiteStore) -> Any:
        """Close C{store} and load what a new store on the same file finds."""
        yield store.close()
        snapshot = yield self.open().load()
        return snapshot


class ContentTests(_Case):
    """What goes in comes back, with each change's meaning."""

    def test_interface(self) -> None:
        verifyObject(IPersistence, self.open())

    @defer.inlineCallbacks
    def test_round_trip(self) -> Any:
        """
        Every field of every record survives a close and reopen: deliveries in seq
        order (whatever order they were put in), will properties as the codec's dict.
        """
        store = self.open()
        yield store.apply(
            [
                PutSession("c1", 3600, 1234.5, "alice"),
                PutSubscription("c1", "a/#", 1 | 2 << 2 | 7 << 4),
                PutSubscription("c1", "$share/g/x", 2),
                PutDelivery("c1", StoredDelivery(7, MESSAGE, 1, True, (3, 9), 12, False, "g/x")),
                PutDelivery("c1", delivery(2, released=True, packet_id=5)),
                PutDelivery("c1", delivery(5)),
                AddAwaitingRel("c1", 44),
                AddAwaitingRel("c1", 45),
                PutWill("c1", WILL, 99.25),
                PutSession("c2", None, None),
                PutRetained(MESSAGE),
                PutRetained(StoredMessage("r/2", b"", 0, True)),
            ]
        )
        snapshot = yield self.reopen(store)
        sessions = by_id(snapshot)
        self.assertEqual(sorted(sessions), ["c1", "c2"])
        c1 = sessions["c1"]
        self.assertEqual(
            (c1.expiry_interval, c1.disconnected_at, c1.username), (3600, 1234.5, "alice")
        )
        self.assertEqual(c1.subscriptions, {"a/#": 1 | 2 << 2 | 7 << 4, "$share/g/x": 2})
        self.assertEqual([d.seq for d in c1.deliveries], [2, 5, 7])
        self.assertEqual(c1.deliveries[0], delivery(2, released=True, packet_id=5))
        self.assertEqual(
            c1.deliveries[2], StoredDelivery(7, MESSAGE, 1, True, (3, 9), 12, False, "g/x")
        )
        self.assertEqual(c1.awaiting_rel, {44, 45})
        self.assertEqual(c1.will, WILL)
        self.assertEqual(c1.will_at, 99.25)
        self.assertEqual(sessions["c2"], StoredSession("c2"))
        self.assertEqual(
            sorted(snapshot.retained, key=lambda m: m.topic),
            [MESSAGE, StoredMessage("r/2", b"", 0, True)],
        )

    @defer.inlineCallbacks
    def test_changes(self) -> Any:
        """
        Updates, replacements and deletions, applied in order within a group:
        PutSession leaves what belongs to the session; DeleteSession removes all of
        it and nothing of other sessions.
        """
        store = self.open()
        yield store.apply(
            [
                PutSession("c1", 10, None),
                PutSession("c2", 10, None),
                PutSubscription("c1", "a", 1),
                PutSubscription("c1", "b", 1),
                PutDelivery("c1", delivery(1)),
                PutDelivery("c1", delivery(2)),
                PutDelivery("c1", delivery(3)),
                AddAwaitingRel("c1", 1),
                AddAwaitingRel("c1", 2),
                PutWill("c1", WILL, 5.0),
                PutRetained(StoredMessage("r/1", b"1", 1, True)),
                PutRetained(StoredMessage("r/2", b"2", 1, True)),
                PutSubscription("c2", "z", 2),
                PutDelivery("c2", delivery(1)),
                AddAwaitingRel("c2", 7),
                PutWill("c2", WILL, 6.0),
            ]
        )
        yield store.apply(
            [
                PutSession("c1", 20, 50.0, "bob"),
                PutSubscription("c1", "a", 2),
                DeleteSubscription("c1", "b"),
                PutDelivery("c1", delivery(1, b"replaced")),
                UpdateDelivery("c1", 2, 33, True),
                DeleteDelivery("c1", 3),
                DeleteAwaitingRel("c1", 1),
                AddAwaitingRel("c1", 2),
                DeleteWill("c1"),
                DeleteRetained("r/1"),
                PutRetained(StoredMessage("r/2", b"two", 1, True)),
                DeleteSession("c2"),
                # Ordered within the group: c3 is created after its deletion.
                DeleteSession("c3"),
                PutSession("c3", None, None),
                PutDelivery("c3", delivery(9)),
            ]
        )
        snapshot = yield self.reopen(store)
        sessions = by_id(snapshot)
        self.assertEqual(sorted(sessions), ["c1", "c3"])
        c1 = sessions["c1"]
        self.assertEqual((c1.expiry_interval, c1.disconnected_at, c1.username), (20, 50.0, "bob"))
        self.assertEqual(c1.subscriptions, {"a": 2})
        self.assertEqual(
            c1.deliveries,
            [delivery(1, b"replaced"), delivery(2, packet_id=33, released=True)],
        )
        self.assertEqual(c1.awaiting_rel, {2})
        self.assertIsNone(c1.will)
        self.assertEqual([d.seq for d in sessions["c3"].deliveries], [9])
        self.assertEqual(snapshot.retained, [StoredMessage("r/2", b"two", 1, True)])

    @defer.inlineCallbacks
    def test_orphans_kept(self) -> Any:
        """
        A row whose session row is missing (the broker put a delivery before its
        session) comes back under a session with default fields rather than being lost.
        """
        store = self.open()
        yield store.apply([PutDelivery("lone", delivery(1))])
        snapshot = yield store.load()
        self.assertEqual(snapshot.sessions, [StoredSession("lone", deliveries=[delivery(1)])])

    @defer.inlineCallbacks
    def test_empty(self) -> Any:
        snapshot = yield self.open().load()
        self.assertEqual(snapshot, Snapshot())


class ThreadTests(_Case):
    """The reactor thread never waits for SQLite."""

    @defer.inlineCallbacks
    def test_writer_thread(self) -> Any:
        """
        apply() returns before anything is written, and the SQL runs in the one
        writer thread, never in the reactor thread.
        """
        store = self.open()
        seen: list[threading.Thread] = []
        original = store._commit

        def commit(*args: Any) -> None:
            seen.append(threading.current_thread())
            original(*args)

        store._commit = commit  # type: ignore[method-assign]
        result = store.apply([PutSession("c", None, None)])
        # Results come back through callFromThread, i.e. in a later reactor turn.
        self.assertNoResult(result)
        yield result
        self.assertEqual(seen, [store.writer_thread])
        self.assertIsNot(store.writer_thread, threading.current_thread())

    @defer.inlineCallbacks
    def test_order(self) -> Any:
        """Groups applied without waiting are committed, and fire, in order."""
        store = self.open()
        fired: list[int] = []
        results = [
            store.apply([PutRetained(StoredMessage("r", str(k).encode(), 1, True))]).addCallback(
                lambda _, k=k: fired.append(k)
            )
            for k in range(20)
        ]
        yield defer.gatherResults(results)
        self.assertEqual(fired, list(range(20)))
        snapshot = yield store.load()
        self.assertEqual(snapshot.retained[0].payload, b"19")


class FaultTests(_Case):
    """SQLite errors fail the whole group, say why, and leave the store working."""

    @defer.inlineCallbacks
    def test_disk_full(self) -> Any:
        """
        With the file capped (C{max_pages}), a group that does not fit fails with
        "database or disk is full" and none of it is applied (not even its first,
        small change); after space is freed (deliveries deleted) a later group
        commits, and so does one after the cap is raised.
        """
        store = self.open(max_pages=40)
        big = b"x" * 3000
        seq = 0
        error: PersistenceError | None = None
        while error is None and seq < 100:
            seq += 1
            try:
                yield store.apply([PutDelivery("c", delivery(seq, big))])
            except PersistenceError as failure:
                error = failure
        self.assertIsNotNone(error)
        self.assertIn("database or disk is full", str(error))
        self.assertIn(self.path, str(error))
        stored = seq - 1
        self.assertGreater(stored, 5)

        group: list[Change] = [PutSession("c", 1, None), PutDelivery("c", delivery(1000, big))]
        yield self.assertFailure(store.apply(group), PersistenceError)
        snapshot = yield store.load()
        self.assertEqual(snapshot.sessions[0].expiry_interval, None)
        self.assertEqual(len(snapshot.sessions[0].deliveries), stored)

        yield store.apply([DeleteDelivery("c", n) for n in range(1, 6)])
        yield store.apply(group)
        yield store._execute_for_tests("PRAGMA max_page_count=100000")
        yield store.apply([PutDelivery("c", delivery(2000, big * 10))])
        snapshot = yield store.load()
        self.assertEqual(snapshot.sessions[0].expiry_interval, 1)
        self.assertEqual(
            [d.seq for d in snapshot.sessions[0].deliveries],
            [*range(6, stored + 1), 1000, 2000],
        )

    @defer.inlineCallbacks
    def test_read_only(self) -> Any:
        """A store that cannot be written (C{query_only}) refuses; then recovers."""
        store = self.open()
        yield store._execute_for_tests("PRAGMA query_only=1")
        failure = yield self.assertFailure(
            store.apply([PutSession("c", None, None)]), PersistenceError
        )
        self.assertIn("readonly", str(failure))
        yield store._execute_for_tests("PRAGMA query_only=0")
        yield store.apply([PutSession("c", None, None)])
        snapshot = yield store.load()
        self.assertEqual([s.client_id for s in snapshot.sessions], ["c"])

    @defer.inlineCallbacks
    def test_locked(self) -> Any:
        """
        Another connection holding the write lock (past the busy timeout) fails the
        group with "database is locked"; once it is done, the next group commits.
        """
        store = self.open(busy_timeout=0.05)
        other = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(other.close)
        other.execute("BEGIN IMMEDIATE")
        failure = yield self.assertFailure(
            store.apply([PutSession("c", None, None)]), PersistenceError
        )
        self.assertIn("database is locked", str(failure))
        other.execute("ROLLBACK")
        yield store.apply([PutSession("d", None, None)])
        snapshot = yield store.load()
        self.assertEqual([s.client_id for s in snapshot.sessions], ["d"])

    @defer.inlineCallbacks
    def test_unstorable_change(self) -> Any:
        """A will the codec cannot encode fails its group at once; nothing is applied."""
        store = self.open()
        bad = Will("w", b"", 0, False, {PropertyId.TOPIC_ALIAS: 3})
        result = store.apply([PutSession("c", None, None), PutWill("c", bad, 1.0)])
        failure = self.failureResultOf(result, PersistenceError)
        self.assertIn("cannot store a change", failure.getErrorMessage())
        snapshot = yield store.load()
        self.assertEqual(snapshot, Snapshot())

    @defer.inlineCallbacks
    def test_closed(self) -> Any:
        store = self.open()
        yield store.close()
        self.failureResultOf(store.apply([PutSession("c", None, None)]), PersistenceError)
        self.failureResultOf(store.load(), PersistenceError)


class OpenTests(_Case):
    """Files that are not this version's store are refused at start, clearly."""

    @defer.inlineCallbacks
    def test_newer_schema(self) -> Any:
        # The lock is released once the writer thread has closed the file.
        yield self.open().close()
        with sqlite3.connect(self.path) as connection:
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
        connection.close()
        error = self.assertRaises(StoreOpenError, build, {"path": self.path})
        self.assertIn("newer mqttbroker (schema version 2", str(error))
        self.assertIsInstance(error, ValueError)

    def test_foreign_database(self) -> None:
        with sqlite3.connect(self.path) as connection:
            connection.execute("CREATE TABLE other (x)")
        connection.close()
        error = self.assertRaises(StoreOpenError, build, {"path": self.path})
        self.assertIn("not an mqttbroker store", str(error))

    def test_not_a_database(self) -> None:
        with open(self.path, "wb") as handle:
            handle.write(b"this is not SQLite" * 100)
        error = self.assertRaises(StoreOpenError, build, {"path": self.path})
        self.assertIn("file is not a database", str(error))

    def test_second_broker(self) -> None:
        """A second store on the same file (another broker) is refused."""
        self.open()
        error = self.assertRaises(StoreOpenError, build, {"path": self.path})
        self.assertIn("in use by another process", str(error))

    @defer.inlineCallbacks
    def test_reopen_after_close(self) -> Any:
        store = self.open()
        yield store.apply([PutSession("c", None, None)])
        snapshot = yield self.reopen(store)
        self.assertEqual([s.client_id for s in snapshot.sessions], ["c"])


class DamageTests(_Case):
    """
    A damaged store (a value of the wrong kind, a truncated or scribbled file) gives
    a clear error naming what is wrong, never a traceback from deep inside the
    broker, and never state that fails later when a client comes back
    (RELIABILITY.md row 16: fuzz the loader).
    """

    timeout = 300

    @defer.inlineCallbacks
    def fill(self) -> Any:
        store = self.open()
        yield store.apply(
            [
                PutSession("c1", 3600, 1234.5, "alice"),
                PutSubscription("c1", "a/#", 1 | 7 << 4),
                PutSubscription("c1", "$share/g/x", 2),
                PutDelivery("c1", StoredDelivery(7, MESSAGE, 1, True, (3, 9), 12, False, "g/x")),
                *[PutDelivery("c1", delivery(n, b"y" * 200)) for n in range(8, 60)],
                AddAwaitingRel("c1", 44),
                PutWill("c1", WILL, 99.25),
                PutSession("c2", None, None),
                PutRetained(MESSAGE),
                *[PutRetained(StoredMessage(f"r/{n}", b"z" * 100, 0, True)) for n in range(40)],
            ]
        )
        yield store.close()

    @defer.inlineCallbacks
    def outcome(self, path: str) -> Any:
        """'ok' after checking that the broker takes the state back, or the error."""
        try:
            store = self.open(path, compact_interval=0)
        except StoreOpenError as error:
            return f"refused: {error}"
        try:
            snapshot = yield store.load()
        except PersistenceError as error:
            return f"refused: {error}"
        finally:
            yield store.close()
        check_snapshot(snapshot)
        Broker(clock=Clock()).restore(snapshot)
        return "ok"

    def damage_column(self, table: str, column: str, value: object) -> None:
        connection = sqlite3.connect(self.path)
        with connection:
            connection.execute(f"UPDATE {table} SET {column} = ?", (value,))
        connection.close()

    @defer.inlineCallbacks
    def test_wrong_kind_named(self) -> Any:
        yield self.fill()
        self.damage_column("deliveries", "qos", "x")
        outcome = yield self.outcome(self.path)
        self.assertIn("damaged record: session 'c1', delivery 7: QoS 'x'", outcome)

    @defer.inlineCallbacks
    def test_every_column_every_wrong_value(self) -> Any:
        """Each column of each table set to values of every wrong kind: ok or a clear error."""
        yield self.fill()
        pristine = self.path + ".pristine"
        shutil.copyfile(self.path, pristine)
        connection = sqlite3.connect(pristine)
        tables = [
            (table, [row[1] for row in connection.execute(f"PRAGMA table_info({table})")])
            for (table,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
        ]
        connection.close()
        values: list[object] = [None, -1, 0, 3, 70000, 2**40, 1.5, "", "x", "+/#", b"\xff\x00"]
        seen = set()
        for table, columns in tables:
            for column in columns:
                for value in values:
                    shutil.copyfile(pristine, self.path)
                    try:
                        self.damage_column(table, column, value)
                    except sqlite3.IntegrityError:
                        continue  # NOT NULL or a duplicate key: SQLite refuses it
                    outcome = yield self.outcome(self.path)
                    self.assertTrue(
                        outcome == "ok" or "damaged record" in outcome,
                        f"{table}.{column} = {value!r}: {outcome}",
                    )
                    seen.add(outcome == "ok")
        self.assertEqual(seen, {True, False})

    @defer.inlineCallbacks
    def test_truncated_and_scribbled_files(self) -> Any:
        """Cut short or overwritten in places (seeded): ok or a clear error, no traceback."""
        yield self.fill()
        with open(self.path, "rb") as handle:
            pristine = handle.read()
        rng = random.Random(16)
        damaged = [pristine[:n] for n in (0, 50, 100, 4096, len(pristine) // 2, len(pristine) - 1)]
        for _ in range(60):
            data = bytearray(pristine)
            for _ in range(rng.choice((1, 4, 32))):
                at = rng.randrange(len(data))
                data[at : at + 8] = rng.randbytes(8)
            damaged.append(bytes(data))
        outcomes = []
        for n, data in enumerate(damaged):
            path = os.path.join(self.directory, f"damaged-{n}.sqlite3")
            with open(path, "wb") as handle:
                handle.write(data)
            outcome = yield self.outcome(path)
            self.assertTrue(
                outcome == "ok" or outcome.startswith("refused: SQLite store"),
                f"damage {n}: {outcome}",
            )
            outcomes.append(outcome == "ok")
        self.assertIn(False, outcomes)


class BuildTests(_Case):
    """The description's parameters."""

    def test_data_dir(self) -> None:
        """Without path, the file is data_dir/mqttbroker.sqlite3; both private."""
        data_dir = os.path.join(self.directory, "state", "data")
        store = build({"data_dir": data_dir})
        self.addCleanup(store.close)
        self.assertEqual(store.path, os.path.join(data_dir, "mqttbroker.sqlite3"))
        self.assertEqual(stat.S_IMODE(os.stat(data_dir).st_mode), 0o700)
        self.assertEqual(stat.S_IMODE(os.stat(store.path).st_mode), 0o600)

    def test_default(self) -> None:
        """With neither, the file is data/mqttbroker.sqlite3 in the working directory."""
        cwd = os.getcwd()
        os.chdir(self.directory)
        self.addCleanup(os.chdir, cwd)
        store = build({})
        self.addCleanup(store.close)
        self.assertEqual(
            store.path, os.path.join(os.path.realpath(self.directory), "data", "mqttbroker.sqlite3")
        )
        self.assertTrue(os.path.isfile(store.path))

    @defer.inlineCallbacks
    def test_pragmas(self) -> Any:
        """WAL always; synchronous FULL by default (2), NORMAL (1) when asked."""
        full = build({"path": self.path, "compact_interval": "0"})
        self.addCleanup(self._close, full)
        self.assertEqual(full.compact_interval, 0)
        rows = yield full._execute_for_tests("PRAGMA synchronous")
        self.assertEqual(rows, [(2,)])
        rows = yield full._execute_for_tests("PRAGMA journal_mode")
        self.assertEqual(rows, [("wal",)])
        rows = yield full._execute_for_tests("PRAGMA auto_vacuum")
        self.assertEqual(rows, [(2,)])
        normal = build({"path": os.path.join(self.directory, "n"), "synchronous": "normal"})
        self.addCleanup(self._close, normal)
        rows = yield normal._execute_for_tests("PRAGMA synchronous")
        self.assertEqual(rows, [(1,)])

    def test_bad_parameters(self) -> None:
        for parameters, word in [
            ({"path": self.path, "fiel": "x"}, "'fiel'"),
            ({"path": self.path, "synchronous": "OFF"}, "synchronous"),
            ({"path": self.path, "compact_interval": "soon"}, "compact_interval"),
            ({"path": self.path, "compact_interval": "-1"}, "compact_interval"),
            ({"path": self.path, "max_pages": "1.5"}, "max_pages"),
        ]:
            error = self.assertRaises(ValueError, build, parameters)
            self.assertIn(word, str(error))
        self.assertFalse(os.path.exists(self.path))


class _TestReactor:
    """Real threads' results, a fake clock for the compaction timer."""

    def __init__(self, clock: Clock) -> None:
        self.callFromThread = reactor.callFromThread
        self.callLater = clock.callLater


class CompactionTests(_Case):
    @defer.inlineCallbacks
    def test_compact(self) -> Any:
        """
        Pages freed by deletions go back to the file system (incremental vacuum), and
        the WAL is truncated.
        """
        store = self.open(compact_interval=0)
        yield store.apply([PutDelivery("c", delivery(n, b"x" * 4000)) for n in range(1, 501)])
        yield store.apply([DeleteDelivery("c", n) for n in range(500)])
        [(free,)] = yield store._execute_for_tests("PRAGMA freelist_count")
        self.assertGreater(free, 400)
        size = os.path.getsize(self.path)
        freed = yield store.compact()
        self.assertEqual(freed, free)
        [(free,)] = yield store._execute_for_tests("PRAGMA freelist_count")
        self.assertEqual(free, 0)
        self.assertLess(os.path.getsize(self.path), size / 5)
        self.assertEqual(os.path.getsize(self.path + "-wal"), 0)

    @defer.inlineCallbacks
    def test_backup_while_running(self) -> Any:
        """
        An online backup (SQLite's backup API, what C{sqlite3 .backup} uses) taken
        while the store runs holds what was committed and opens as a store; a reader
        holding the log does not make compaction wait (busy timeout 30 s here), nor
        block commits.
        """
        store = self.open(compact_interval=0, busy_timeout=30)
        yield store.apply([PutSession("c", None, None), PutDelivery("c", delivery(1))])
        reader = sqlite3.connect(self.path, isolation_level=None)
        self.addCleanup(reader.close)
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM deliveries").fetchall()
        yield store.apply([PutDelivery("c", delivery(2))])
        started = time.monotonic()
        yield store.compact()
        self.assertLess(time.monotonic() - started, 10)
        backup_path = os.path.join(self.directory, "backup.sqlite3")
        backup = sqlite3.connect(backup_path)
        reader.backup(backup)
        backup.close()
        reader.execute("COMMIT")
        yield store.apply([PutDelivery("c", delivery(3))])
        # The reader's snapshot was taken before delivery 2 was committed.
        snapshot = yield self.open(backup_path).load()
        self.assertEqual([d.seq for d in snapshot.sessions[0].deliveries], [1])
        snapshot = yield store.load()
        self.assertEqual([d.seq for d in snapshot.sessions[0].deliveries], [1, 2, 3])

    @defer.inlineCallbacks
    def test_periodic(self) -> Any:
        """Every compact_interval seconds, a compaction is queued for the writer."""
        clock = Clock()
        store = self.open(compact_interval=60, reactor=_TestReactor(clock))
        yield store.apply([PutDelivery("c", delivery(n, b"x" * 4000)) for n in range(1, 51)])
        yield store.apply([DeleteDelivery("c", n) for n in range(50)])
        clock.advance(59)
        [(free,)] = yield store._execute_for_tests("PRAGMA freelist_count")
        self.assertGreater(free, 40)
        clock.advance(1)
        # The writer runs work in order: the vacuum step before this query.
        [(free,)] = yield store._execute_for_tests("PRAGMA freelist_count")
        self.assertEqual(free, 0)
        yield store._execute_for_tests("SELECT 1")
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        yield store.close()
        self.assertEqual(clock.getDelayedCalls(), [])


# -- a crash: SIGKILL in the middle of a stream of commits -------------------------------

CHILD = """
import sys
from twisted.internet import reactor
from mqttbroker.backends.sqlite import build
from mqttbroker.persistence import (
    PutDelivery, PutRetained, PutSession, StoredDelivery, StoredMessage,
)

path, groups, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
store = build({"path": path, "compact_interval": "0"})

def group(k):
    changes = [PutSession("c", None, None)] if k == 1 else []
    changes += [
        PutDelivery("c", StoredDelivery(
            k * size + i, StoredMessage("t", b"x" * 300, 1, False), 1))
        for i in range(size)
    ]
    changes.append(PutRetained(StoredMessage("group/%d" % k, b"", 1, True)))
    return changes

def committed(_, k):
    sys.stdout.write("committed %d\\n" % k)
    sys.stdout.flush()
    if k == groups:
        reactor.stop()

def failed(failure):
    sys.stderr.write(failure.getTraceback())
    reactor.stop()

def start():
    # Every group queued at once: the writer thread is always in a transaction, so
    # the kill lands in one.
    for k in range(1, groups + 1):
        store.apply(group(k)).addCallback(committed, k).addErrback(failed)

reactor.callWhenRunning(start)
reactor.run()
"""


def read_lines_until(process: subprocess.Popen[bytes], last: str, deadline: float) -> list[str]:
    """Lines the child prints, up to and including C{last}, within the deadline."""
    assert process.stdout is not None
    fd = process.stdout.fileno()
    buffer = b""
    lines: list[str] = []
    while last not in lines:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the child did not print {last!r} in time; got {lines[-3:]}")
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            raise AssertionError(f"the child ended before {last!r}; got {lines[-3:]}")
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        lines += [line.decode() for line in complete]
    return lines


class CrashTests(_Case):
    GROUPS = 2000
    SIZE = 50
    KILL_AFTER = 60

    @defer.inlineCallbacks
    def test_sigkill(self) -> Any:
        """
        A child process commits groups of 50 deliveries and a retained message, and
        prints "committed k" once each Deferred fires; it is SIGKILLed right after
        "committed 60". Reopened, the store holds every group up to 60, whole, and
        beyond that a run of whole groups: never part of a group.
        """
        source = os.path.dirname(os.path.dirname(os.path.abspath(mqttbroker.__file__)))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [source, env.get("PYTHONPATH")]))
        process = subprocess.Popen(
            [sys.executable, "-c", CHILD, self.path, str(self.GROUPS), str(self.SIZE)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.addCleanup(kill_process, process)
        lines = read_lines_until(process, f"committed {self.KILL_AFTER}", time.monotonic() + 30)
        process.send_signal(signal.SIGKILL)
        self.assertEqual(process.wait(timeout=10), -signal.SIGKILL)
        self.assertEqual(lines, [f"committed {k}" for k in range(1, self.KILL_AFTER + 1)])

        snapshot = yield self.open().load()
        groups = {int(message.topic.split("/")[1]) for message in snapshot.retained}
        counts: dict[int, int] = {}
        for item in snapshot.sessions[0].deliveries:
            counts[item.seq // self.SIZE] = counts.get(item.seq // self.SIZE, 0) + 1
        self.assertEqual(set(counts), groups)
        self.assertEqual(set(counts.values()), {self.SIZE})
        last = max(groups)
        self.assertEqual(groups, set(range(1, last + 1)))
        self.assertGreaterEqual(last, self.KILL_AFTER)
        self.assertLess(last, self.GROUPS)
        print(f"\nSIGKILL after 'committed {self.KILL_AFTER}': {last} whole groups on disk")


# -- figures ------------------------------------------------------------------------------


class MeasureTests(_Case):
    """
    Figures for docs/performance.md, printed (run with C{pytest -s}), not asserted.

    Measured on the development machine (2 CPUs, SQLite 3.40.1, Python 3.11):
    see the report of issue 8.
    """

    @defer.inlineCallbacks
    def _fill(self, store: SQLiteStore, sessions: int, per_session: int) -> Any:
        payload = b"m" * 100
        batch: list[Change] = []
        for n in range(sessions):
            client = f"client-{n}"
            batch.append(PutSession(client, 86400, 1.7e9, None))
            batch.append(PutSubscription(client, f"devices/{n}/#", 1))
            batch.extend(
                PutDelivery(
                    client,
                    StoredDelivery(seq, StoredMessage(f"devices/{n}/x", payload, 1, False), 1),
                )
                for seq in range(1, per_session + 1)
            )
            if len(batch) >= 20000:
                yield store.apply(batch)
                batch = []
        if batch:
            yield store.apply(batch)

    @defer.inlineCallbacks
    def _measure_load(self, sessions: int, per_session: int) -> Any:
        store = self.open(compact_interval=0)
        yield self._fill(store, sessions, per_session)
        yield store.close()
        started = time.perf_counter()
        snapshot = yield self.open(compact_interval=0).load()
        elapsed = time.perf_counter() - started
        self.assertEqual(len(snapshot.sessions), sessions)
        self.assertEqual(sum(len(s.deliveries) for s in snapshot.sessions), sessions * per_session)
        size = os.path.getsize(self.path) / 1e6
        print(
            f"\nload: {sessions} sessions x {per_session} deliveries:"
            f" {elapsed:.2f} s ({size:.0f} MB file)"
        )
        return elapsed

    def test_load_100k_sessions(self) -> Any:
        """100,000 sessions with one subscription and one queued message each."""
        return self._measure_load(100_000, 1)

    def test_load_1000_sessions(self) -> Any:
        """1,000 sessions with 100 queued messages each."""
        return self._measure_load(1_000, 100)

    @defer.inlineCallbacks
    def test_apply_throughput(self) -> Any:
        """Groups of 100 PutDelivery, one after the other, synchronous=FULL."""
        store = self.open(compact_interval=0)
        message = StoredMessage("devices/1/x", b"m" * 100, 1, False)
        groups = 200
        started = time.perf_counter()
        for k in range(groups):
            yield store.apply(
                [PutDelivery("c", StoredDelivery(k * 100 + i + 1, message, 1)) for i in range(100)]
            )
        elapsed = time.perf_counter() - started
        print(
            f"\napply, synchronous=FULL: {groups / elapsed:.0f} groups of 100/s,"
            f" {groups * 100 / elapsed:.0f} deliveries/s, {elapsed / groups * 1000:.2f} ms/group"
        )


class ModelTests(_Case):
    """The same changes give the same state as the reference store."""

    @defer.inlineCallbacks
    def test_random_changes(self) -> Any:
        """
        2,000 random changes (sessions created first, as the broker does), in groups
        of random size, applied to the model store and to SQLite, reopened: the same
        snapshot.
        """
        from tests.test_persistence import ModelStore

        rng = random.Random(8)
        model = ModelStore()
        store = self.open(compact_interval=0)
        clients = [f"c{n}" for n in range(6)]
        live: set[str] = set()
        group: list[Change] = []
        for _ in range(2000):
            client = rng.choice(clients)
            if client not in live:
                change: Change = PutSession(client, rng.choice([None, 60]), None, "u")
                live.add(client)
            else:
                choice = rng.randrange(12)
                seq = rng.randrange(1, 9)
                topic = f"t/{rng.randrange(4)}"
                if choice == 0:
                    change = DeleteSession(client)
                    live.discard(client)
                elif choice == 1:
                    change = PutSession(client, rng.choice([None, 5]), rng.random(), None)
                elif choice == 2:
                    change = PutSubscription(
                        client, topic, rng.randrange(64) << 2 | rng.randrange(3)
                    )
                elif choice == 3:
                    change = DeleteSubscription(client, topic)
                elif choice in (4, 5):
                    change = PutDelivery(
                        client, delivery(seq, rng.randbytes(3), subscription_ids=(seq,))
                    )
                elif choice == 6:
                    change = UpdateDelivery(client, seq, rng.randrange(1, 9), rng.random() < 0.5)
                elif choice == 7:
                    change = DeleteDelivery(client, seq)
                elif choice == 8:
                    change = AddAwaitingRel(client, seq + 1)
                elif choice == 9:
                    change = DeleteAwaitingRel(client, seq + 1)
                elif choice == 10:
                    change = PutRetained(StoredMessage(topic, rng.randbytes(2), 1, True))
                else:
                    change = DeleteRetained(topic)
            group.append(change)
            if rng.random() < 0.1:
                model.apply(group)
                yield store.apply(group)
                group = []
        model.apply(group)
        yield store.apply(group)
        expected = model.load()
        snapshot = yield self.reopen(store)
        self.assertEqual(
            sorted(snapshot.sessions, key=lambda s: s.client_id),
            sorted(expected.sessions, key=lambda s: s.client_id),
        )
        self.assertEqual(
            sorted(snapshot.retained, key=lambda m: m.topic),
            sorted(expected.retained, key=lambda m: m.topic),
        )
        self.assertTrue(snapshot.sessions)
