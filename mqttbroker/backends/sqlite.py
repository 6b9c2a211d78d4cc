# -*- test-case-name: tests.test_sqlite_store -*-
"""
The embedded store (C{--persistence sqlite:path=data/mqtt.sqlite3}): the broker's
durable state in one SQLite file, written by one dedicated thread.

Every group of changes the journal hands over is one transaction (C{BEGIN IMMEDIATE}
... C{COMMIT}) in WAL mode with C{synchronous=FULL}, so the Deferred of
L{SQLiteStore.apply} fires only once the group is on disk: that is what lets the
broker send PUBACK/PUBREC/SUBACK after it. The reactor thread never touches the
file; it queues work for the writer thread and gets the results back through
C{callFromThread}. Any SQLite error (disk full, read-only file, database locked)
rolls the group back and fails it with L{PersistenceError}; the store keeps working
for the groups that follow. See C{docs/backend-sqlite.rst}.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

from twisted.internet.defer import Deferred, fail
from twisted.internet.interfaces import IDelayedCall, IReactorFromThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mqttbroker.codec import (
    WILL_PROPERTIES,
    Properties,
    Will,
    decode_properties,
    encode_properties,
)
from mqttbroker.errors import MQTTError
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

try:
    import fcntl
except ImportError:  # pragma: no cover (not POSIX: no guard against a second broker)
    fcntl = None  # type: ignore[assignment]

__all__ = ["SCHEMA_VERSION", "SQLiteStore", "StoreOpenError", "build"]

_log = Logger()
_T = TypeVar("_T")

#: What C{build} accepts; anything else is a mistake worth reporting.
PARAMETERS = ("path", "data_dir", "synchronous", "compact_interval", "max_pages")

#: The file name used inside C{data_dir} when no C{path} is given.
DEFAULT_FILE = "mqttbroker.sqlite3"

#: The schema this code writes; a file with a higher C{user_version} is refused.
SCHEMA_VERSION = 1

#: C{PRAGMA application_id}: marks the file as an mqttbroker store ("MQTT").
APPLICATION_ID = 0x4D515454

#: Freelist pages returned to the file system per compaction step; steps are queued
#: between groups, so that compacting a large freelist never holds up commits long.
VACUUM_STEP = 2048

#: Seconds a statement waits for a lock held by another connection (a backup).
BUSY_TIMEOUT = 5.0

_SCHEMA = """
CREATE TABLE sessions (
    client_id TEXT PRIMARY KEY,
    expiry_interval INTEGER,
    disconnected_at REAL,
    username TEXT
);
CREATE TABLE subscriptions (
    client_id TEXT NOT NULL,
    topic_filter TEXT NOT NULL,
    value INTEGER NOT NULL,
    PRIMARY KEY (client_id, topic_filter)
);
CREATE TABLE deliveries (
    client_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    message_qos INTEGER NOT NULL,
    message_retain INTEGER NOT NULL,
    properties BLOB NOT NULL,
    publisher TEXT,
    expires_at REAL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    subscription_ids TEXT NOT NULL,
    packet_id INTEGER,
    released INTEGER NOT NULL,
    shared TEXT,
    PRIMARY KEY (client_id, seq)
);
CREATE TABLE awaiting_rel (
    client_id TEXT NOT NULL,
    packet_id INTEGER NOT NULL,
    PRIMARY KEY (client_id, packet_id)
);
CREATE TABLE retained (
    topic TEXT PRIMARY KEY,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    properties BLOB NOT NULL,
    publisher TEXT,
    expires_at REAL
);
CREATE TABLE wills (
    client_id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    qos INTEGER NOT NULL,
    retain INTEGER NOT NULL,
    properties BLOB NOT NULL,
    at REAL NOT NULL
);
"""

_PUT_SESSION = (
    "INSERT OR REPLACE INTO sessions (client_id, expiry_interval, disconnected_at, username)"
    " VALUES (?, ?, ?, ?)"
)
_DELETE_SESSION = tuple(
    f"DELETE FROM {table} WHERE client_id = ?"
    for table in ("sessions", "subscriptions", "deliveries", "awaiting_rel", "wills")
)
_PUT_SUBSCRIPTION = (
    "INSERT OR REPLACE INTO subscriptions (client_id, topic_filter, value) VALUES (?, ?, ?)"
)
_DELETE_SUBSCRIPTION = "DELETE FROM subscriptions WHERE client_id = ? AND topic_filter = ?"
_PUT_DELIVERY = (
    "INSERT OR REPLACE INTO deliveries (client_id, seq, topic, payload, message_qos,"
    " message_retain, properties, publisher, expires_at, qos, retain, subscription_ids,"
    " packet_id, released, shared) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_UPDATE_DELIVERY = (
    "UPDATE deliveries SET packet_id = ?, released = ? WHERE client_id = ? AND seq = ?"
)
_DELETE_DELIVERY = "DELETE FROM deliveries WHERE client_id = ? AND seq = ?"
_ADD_AWAITING_REL = "INSERT OR IGNORE INTO awaiting_rel (client_id, packet_id) VALUES (?, ?)"
_DELETE_AWAITING_REL = "DELETE FROM awaiting_rel WHERE client_id = ? AND packet_id = ?"
_PUT_RETAINED = (
    "INSERT OR REPLACE INTO retained (topic, payload, qos, retain, properties, publisher,"
    " expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_DELETE_RETAINED = "DELETE FROM retained WHERE topic = ?"
_PUT_WILL = (
    "INSERT OR REPLACE INTO wills (client_id, topic, payload, qos, retain, properties, at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_DELETE_WILL = "DELETE FROM wills WHERE client_id = ?"

#: One statement and its parameters.
_Statement = tuple[str, tuple[Any, ...]]


class StoreOpenError(PersistenceError, ValueError):
    """
    The file cannot be used as a store (not a database, another program's database,
    a newer schema, locked by another broker). A C{ValueError} too, so that a
    description naming such a file is refused at start with this message.
    """


# -- the writer thread -----------------------------------------------------------------


class _Writer:
    """
    The one thread that talks to SQLite. Work runs in the order it was queued; each
    result (or failure) goes back to the reactor thread with C{callFromThread}.
    """

    def __init__(self, reactor: IReactorFromThreads, name: str) -> None:
        self._reactor = reactor
        self._queue: queue.SimpleQueue[tuple[Callable[[], Any], Deferred[Any]] | None] = (
            queue.SimpleQueue()
        )
        # A daemon: if the broker dies without close(), the process still exits; what
        # was committed is on disk and what was not was never acknowledged.
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)
        self.thread.start()

    def submit(self, work: Callable[[], _T]) -> Deferred[_T]:
        """Run C{work} in the writer thread; the Deferred fires in the reactor thread."""
        result: Deferred[_T] = Deferred()
        self._queue.put((work, result))
        return result

    def stop(self) -> None:
        """Let the thread end after the work already queued."""
        self._queue.put(None)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            work, result = item
            try:
                value = work()
            except BaseException:
                self._reactor.callFromThread(result.errback, Failure())
            else:
                self._reactor.callFromThread(result.callback, value)


# -- the store -------------------------------------------------------------------------


@implementer(IPersistence)
class SQLiteStore:
    """
    The broker's state in a SQLite file.

    @ivar path: the database file.
    @ivar synchronous: C{FULL} (each commit is fsynced before it is reported) or
        C{NORMAL} (survives the broker crashing, not the machine losing power).
    @ivar compact_interval: seconds between compactions (0: none).
    """

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "FULL",
        compact_interval: float = 600.0,
        max_pages: int = 0,
        busy_timeout: float = BUSY_TIMEOUT,
        reactor: object | None = None,
    ) -> None:
        if reactor is None:
            from twisted.internet import reactor as default  # noqa: PLC0415

            reactor = default
        self._clock = cast(IReactorTime, reactor)
        self.path = path
        self.synchronous = synchronous
        self.compact_interval = compact_interval
        self._busy_timeout = busy_timeout
        self._lock_fd = _lock(path)
        try:
            self._connection = _open(path, synchronous, max_pages, busy_timeout)
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._writer = _Writer(cast(IReactorFromThreads, reactor), f"sqlite-writer {path}")
        self._closed = False
        self._compaction: IDelayedCall | None = None
        self._schedule_compaction()

    # -- IPersistence

    def load(self) -> Deferred[Snapshot]:
        """Everything stored, read in the writer thread."""
        if self._closed:
            return fail(PersistenceError(f"SQLite store {self.path}: closed"))
        return self._writer.submit(self._load)

    def apply(self, changes: Sequence[Change]) -> Deferred[None]:
        """
        C{changes} as one transaction; fires after COMMIT (on disk with
        C{synchronous=FULL}), or fails with L{PersistenceError} and applies none.
        """
        if self._closed:
            return fail(PersistenceError(f"SQLite store {self.path}: closed"))
        try:
            batches = _batches(_statements(changes))
        except (MQTTError, ValueError, TypeError) as error:
            message = f"SQLite store {self.path}: cannot store a change: {error}"
            return fail(PersistenceError(message))
        count = len(changes)
        return self._writer.submit(lambda: self._commit(batches, count))

    def close(self) -> Deferred[None]:
        """Finish the queued writes, checkpoint the WAL, close the file."""
        if self._closed:
            return fail(PersistenceError(f"SQLite store {self.path}: closed twice"))
        self._closed = True
        if self._compaction is not None and self._compaction.active():
            self._compaction.cancel()
        self._compaction = None
        done = self._writer.submit(self._close)
        self._writer.stop()
        return done

    # -- for operators and tests

    def compact(self) -> Deferred[int]:
        """
        Return free pages to the file system (C{PRAGMA incremental_vacuum}, a step at
        a time between groups) and truncate the WAL; fires with the pages freed.
        """
        if self._closed:
            return fail(PersistenceError(f"SQLite store {self.path}: closed"))
        return self._compact_step(0)

    def _execute_for_tests(self, sql: str, parameters: Sequence[Any] = ()) -> Deferred[list[Any]]:
        """Run one statement in the writer thread (e.g. C{PRAGMA max_page_count})."""
        return self._writer.submit(
            lambda: self._connection.execute(sql, tuple(parameters)).fetchall()
        )

    @property
    def writer_thread(self) -> threading.Thread:
        """The only thread that uses the connection."""
        return self._writer.thread

    # -- in the writer thread

    def _commit(self, batches: list[tuple[str, list[tuple[Any, ...]]]], count: int) -> None:
        connection = self._connection
        try:
            connection.execute("BEGIN IMMEDIATE")
            for sql, rows in batches:
                if len(rows) == 1:
                    connection.execute(sql, rows[0])
                else:
                    connection.executemany(sql, rows)
            connection.execute("COMMIT")
        except Exception as error:
            if connection.in_transaction:
                try:
                    connection.execute("ROLLBACK")
                except sqlite3.Error as rollback_error:
                    _log.error(
                        "SQLite store {path}: rollback failed: {error}",
                        path=self.path,
                        error=rollback_error,
                    )
            raise PersistenceError(
                f"SQLite store {self.path}: could not commit {count} changes: {error}"
            ) from error

    def _load(self) -> Snapshot:
        try:
            snapshot = self._read()
        except sqlite3.Error as error:
            raise PersistenceError(f"SQLite store {self.path}: cannot read: {error}") from error
        except (MQTTError, ValueError, TypeError, AttributeError, UnicodeError) as error:
            # A value of the wrong kind in a column (SQLite does not enforce types).
            raise PersistenceError(f"SQLite store {self.path}: damaged record: {error}") from None
        try:
            check_snapshot(snapshot)
        except ValueError as error:
            raise PersistenceError(f"SQLite store {self.path}: damaged record: {error}") from None
        return snapshot

    def _read(self) -> Snapshot:
        connection = self._connection
        sessions: dict[str, StoredSession] = {}

        def session(client_id: str) -> StoredSession:
            found = sessions.get(client_id)
            if found is None:
                # A row without its session: kept rather than lost (see the docs).
                found = sessions[client_id] = StoredSession(client_id)
            return found

        for client_id, expiry, disconnected_at, username in connection.execute(
            "SELECT client_id, expiry_interval, disconnected_at, username FROM sessions"
        ):
            sessions[client_id] = StoredSession(client_id, expiry, disconnected_at, username)
        for client_id, topic_filter, value in connection.execute(
            "SELECT client_id, topic_filter, value FROM subscriptions"
        ):
            session(client_id).subscriptions[topic_filter] = value
        for row in connection.execute(
            "SELECT client_id, seq, topic, payload, message_qos, message_retain, properties,"
            " publisher, expires_at, qos, retain, subscription_ids, packet_id, released,"
            " shared FROM deliveries"
        ):
            session(row[0]).deliveries.append(
                StoredDelivery(
                    row[1],
                    StoredMessage(row[2], row[3], row[4], bool(row[5]), row[6], row[7], row[8]),
                    row[9],
                    bool(row[10]),
                    tuple(int(i) for i in row[11].split(",")) if row[11] else (),
                    row[12],
                    bool(row[13]),
                    row[14],
                )
            )
        for client_id, packet_id in connection.execute(
            "SELECT client_id, packet_id FROM awaiting_rel"
        ):
            session(client_id).awaiting_rel.add(packet_id)
        for client_id, topic, payload, qos, retain, properties, at in connection.execute(
            "SELECT client_id, topic, payload, qos, retain, properties, at FROM wills"
        ):
            stored = session(client_id)
            stored.will = Will(topic, payload, qos, bool(retain), _decode_will(properties))
            stored.will_at = at
        by_seq: Callable[[StoredDelivery], int] = lambda delivery: delivery.seq  # noqa: E731
        for stored in sessions.values():
            stored.deliveries.sort(key=by_seq)
        retained = [
            StoredMessage(topic, payload, qos, bool(retain), properties, publisher, expires_at)
            for topic, payload, qos, retain, properties, publisher, expires_at in (
                connection.execute(
                    "SELECT topic, payload, qos, retain, properties, publisher, expires_at"
                    " FROM retained"
                )
            )
        ]
        return Snapshot(list(sessions.values()), retained)

    def _vacuum(self) -> tuple[int, bool]:
        """One compaction step: pages freed, and whether free pages remain."""
        connection = self._connection
        before = connection.execute("PRAGMA freelist_count").fetchone()[0]
        if before:
            # executescript steps the pragma to the end; execute() frees one page.
            connection.executescript(f"PRAGMA incremental_vacuum({VACUUM_STEP});")
        after = connection.execute("PRAGMA freelist_count").fetchone()[0]
        if not after:
            # TRUNCATE waits for readers (a backup): not here, where commits queue up
            # behind it; if a reader is there, the next compaction truncates.
            connection.execute("PRAGMA busy_timeout=0")
            try:
                connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                connection.execute(f"PRAGMA busy_timeout={int(self._busy_timeout * 1000)}")
        return before - after, bool(after) and after < before

    def _close(self) -> None:
        try:
            self._connection.execute("PRAGMA optimize")
            self._connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as error:
            _log.warn(
                "SQLite store {path}: checkpoint at close: {error}", path=self.path, error=error
            )
        finally:
            self._connection.close()
            os.close(self._lock_fd)

    # -- compaction, scheduled from the reactor thread

    def _schedule_compaction(self) -> None:
        if self.compact_interval > 0 and not self._closed:
            self._compaction = self._clock.callLater(self.compact_interval, self._periodic)

    def _periodic(self) -> None:
        self._compaction = None
        done = self._compact_step(0)
        done.addErrback(self._compaction_failed)
        done.addBoth(lambda _: self._schedule_compaction())

    def _compaction_failed(self, failure: Failure) -> None:
        _log.warn(
            "SQLite store {path}: compaction failed: {error}",
            path=self.path,
            error=failure.getErrorMessage(),
        )

    def _compact_step(self, freed: int) -> Deferred[int]:
        def next_step(result: tuple[int, bool]) -> int | Deferred[int]:
            step, more = result
            if more and not self._closed:
                return self._compact_step(freed + step)
            return freed + step

        return self._writer.submit(self._vacuum).addCallback(next_step)


# -- opening ---------------------------------------------------------------------------


def _lock(path: str) -> int:
    """
    Hold C{path}.lock so that a second broker on the same store fails at start
    instead of interleaving its writes (SQLite's own locks are per transaction).
    """
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise StoreOpenError(
                f"SQLite store {path}: in use by another process (it holds {path}.lock)"
            ) from None
    return fd


def _open(path: str, synchronous: str, max_pages: int, busy_timeout: float) -> sqlite3.Connection:
    """The connection, with the schema created or checked and the pragmas set."""
    if not os.path.exists(path):
        # Created here so that it is private from the start; SQLite gives the -wal
        # and -shm files the database file's permissions.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    connection = sqlite3.connect(
        path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
    )
    try:
        _prepare(connection, path, synchronous, max_pages)
    except BaseException:
        connection.close()
        raise
    return connection


def _prepare(connection: sqlite3.Connection, path: str, synchronous: str, max_pages: int) -> None:
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        application = connection.execute("PRAGMA application_id").fetchone()[0]
        tables = connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    except (sqlite3.DatabaseError, ValueError) as error:
        # ValueError: text that is not UTF-8 where SQLite keeps the schema (a
        # scribbled file).
        raise StoreOpenError(f"SQLite store {path}: not usable: {error}") from None
    if application not in (0, APPLICATION_ID) or (version == 0 and tables):
        raise StoreOpenError(f"SQLite store {path}: this SQLite file is not an mqttbroker store")
    if version > SCHEMA_VERSION:
        raise StoreOpenError(
            f"SQLite store {path}: written by a newer mqttbroker (schema version {version};"
            f" this version knows up to {SCHEMA_VERSION}): upgrade mqttbroker, or use"
            " another path"
        )
    try:
        if version == 0:
            # Chosen before anything is written (switching to WAL writes the header).
            connection.execute("PRAGMA auto_vacuum=INCREMENTAL")
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreOpenError(f"SQLite store {path}: cannot use WAL mode (got {mode})")
        connection.execute(f"PRAGMA synchronous={synchronous}")
        # Keep the WAL from staying large after a burst.
        connection.execute("PRAGMA journal_size_limit=67108864")
        if max_pages:
            connection.execute(f"PRAGMA max_page_count={int(max_pages)}").fetchall()
        if version == 0:
            connection.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    connection.execute(statement)
            connection.execute(f"PRAGMA application_id={APPLICATION_ID}")
            connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            connection.execute("COMMIT")
    except (sqlite3.Error, ValueError) as error:
        raise StoreOpenError(f"SQLite store {path}: cannot prepare: {error}") from None


# -- changes to statements -------------------------------------------------------------


def _message_row(message: StoredMessage) -> tuple[Any, ...]:
    return (
        message.topic,
        bytes(message.payload),
        message.qos,
        int(message.retain),
        bytes(message.properties),
        message.publisher,
        message.expires_at,
    )


def _statements(changes: Iterable[Change]) -> list[_Statement]:
    """
    The statements that apply C{changes}, in order. Built in the reactor thread, so
    that nothing the broker might still change (a will's property dict) is read from
    the writer thread.
    """
    out: list[_Statement] = []
    add = out.append
    row: tuple[Any, ...]
    for change in changes:
        if isinstance(change, PutDelivery):
            d = change.delivery
            m = d.message
            add(
                (
                    _PUT_DELIVERY,
                    (
                        change.client_id,
                        d.seq,
                        m.topic,
                        bytes(m.payload),
                        m.qos,
                        int(m.retain),
                        bytes(m.properties),
                        m.publisher,
                        m.expires_at,
                        d.qos,
                        int(d.retain),
                        ",".join(map(str, d.subscription_ids)) if d.subscription_ids else "",
                        d.packet_id,
                        int(d.released),
                        d.shared,
                    ),
                )
            )
        elif isinstance(change, UpdateDelivery):
            row = (change.packet_id, int(change.released), change.client_id, change.seq)
            add((_UPDATE_DELIVERY, row))
        elif isinstance(change, DeleteDelivery):
            add((_DELETE_DELIVERY, (change.client_id, change.seq)))
        elif isinstance(change, PutSession):
            row = (
                change.client_id,
                change.expiry_interval,
                change.disconnected_at,
                change.username,
            )
            add((_PUT_SESSION, row))
        elif isinstance(change, DeleteSession):
            for sql in _DELETE_SESSION:
                add((sql, (change.client_id,)))
        elif isinstance(change, PutSubscription):
            add((_PUT_SUBSCRIPTION, (change.client_id, change.topic_filter, change.value)))
        elif isinstance(change, DeleteSubscription):
            add((_DELETE_SUBSCRIPTION, (change.client_id, change.topic_filter)))
        elif isinstance(change, AddAwaitingRel):
            add((_ADD_AWAITING_REL, (change.client_id, change.packet_id)))
        elif isinstance(change, DeleteAwaitingRel):
            add((_DELETE_AWAITING_REL, (change.client_id, change.packet_id)))
        elif isinstance(change, PutRetained):
            add((_PUT_RETAINED, _message_row(change.message)))
        elif isinstance(change, DeleteRetained):
            add((_DELETE_RETAINED, (change.topic,)))
        elif isinstance(change, PutWill):
            will = change.will
            properties = encode_properties(will.properties, WILL_PROPERTIES, "will")
            row = (
                change.client_id,
                will.topic,
                bytes(will.payload),
                will.qos,
                int(will.retain),
                properties,
                change.at,
            )
            add((_PUT_WILL, row))
        elif isinstance(change, DeleteWill):
            add((_DELETE_WILL, (change.client_id,)))
        else:
            raise TypeError(f"not a change: {change!r}")
    return out


def _batches(statements: list[_Statement]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Runs of the same statement, for C{executemany}; the order is kept."""
    batches: list[tuple[str, list[tuple[Any, ...]]]] = []
    for sql, row in statements:
        if batches and batches[-1][0] == sql:
            batches[-1][1].append(row)
        else:
            batches.append((sql, [row]))
    return batches


def _decode_will(data: bytes) -> Properties:
    """Will properties as stored (the codec's property block) back to a dict."""
    return decode_properties(data, WILL_PROPERTIES, "stored will")


# -- the backend -----------------------------------------------------------------------


def build(parameters: Mapping[str, str]) -> SQLiteStore:
    """
    The store a description's parameters ask for: C{path} (or C{data_dir}, holding
    C{mqttbroker.sqlite3}), C{synchronous}, C{compact_interval}, C{max_pages}.

    @raise ValueError: a malformed parameter, or a file that is not a usable store.
    @raise OSError: the directory or file cannot be created.
    """
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise ValueError(
            f"sqlite: unknown parameter {unknown[0]!r} (known: {', '.join(PARAMETERS)})"
        )
    path = parameters.get("path", "").strip()
    if not path:
        data_dir = parameters.get("data_dir", "").strip() or "data"
        path = os.path.join(data_dir, DEFAULT_FILE)
    # Absolute now: the writer thread opens it later, whatever the working directory.
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    if not os.path.isdir(directory):
        os.makedirs(directory, mode=0o700)
    synchronous = parameters.get("synchronous", "FULL").strip().upper()
    if synchronous not in ("FULL", "EXTRA", "NORMAL"):
        raise ValueError(
            f"sqlite: synchronous={synchronous!r} must be FULL (the default), EXTRA or NORMAL"
        )
    interval_text = parameters.get("compact_interval", "600")
    try:
        compact_interval = float(interval_text)
    except ValueError:
        compact_interval = -1.0
    if not 0 <= compact_interval < float("inf"):
        raise ValueError(
            f"sqlite: compact_interval={interval_text!r} must be a number of seconds, 0 or more"
        )
    pages_text = parameters.get("max_pages", "0")
    try:
        max_pages = int(pages_text)
    except ValueError:
        max_pages = -1
    if max_pages < 0:
        raise ValueError(f"sqlite: max_pages={pages_text!r} must be a whole number, 0 or more")
    return SQLiteStore(
        path, synchronous=synchronous, compact_interval=compact_interval, max_pages=max_pages
    )
