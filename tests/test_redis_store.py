# -*- test-case-name: tests.test_redis_store -*-
"""
The Redis store (C{--persistence redis:url=...}) against a real C{redis-server}
started for each test on a free port (L{tests.redis_server}): what a group of
changes leaves in Redis and how load() reads it back, that a group is one
transaction, what happens when Redis stops, hangs or crashes, and how fast it is
(figures printed, nothing asserted about time).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mqttbroker.backends import redis as backend
from mqttbroker.backends.redis import RedisStore, build
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
)
from tests.redis_server import RedisServer, require_redis

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: The store's timeout in these tests, in seconds.
TIMEOUT = 1.0

#: A PUBLISH property block: Message Expiry Interval 60, User Property ("k", "v").
PROPERTIES = b"\x0c\x02\x00\x00\x00\x3c\x26\x00\x01k\x00\x01v"

MESSAGE = StoredMessage("a/b", b"\x00\xff payload", 1, False, PROPERTIES, "publisher", 1.7e9 + 0.25)
PLAIN = StoredMessage("plain", b"", 0, True)
WILL = Will("will/x", b"bye", 1, True, {PropertyId.CONTENT_TYPE: "text/plain"})


def delivery(seq: int, **fields: Any) -> StoredDelivery:
    return StoredDelivery(seq, fields.pop("message", MESSAGE), fields.pop("qos", 1), **fields)


class LogCapture:
    """The text of every log event while the test runs."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.lines: list[str] = []

        @implementer(ILogObserver)
        def observe(event: LogEvent) -> None:
            self.lines.append(formatEvent(event) or "")

        globalLogPublisher.addObserver(observe)
        case.addCleanup(globalLogPublisher.removeObserver, observe)

    def text(self) -> str:
        return "\n".join(self.lines)


class BuildTests(SynchronousTestCase):
    """The description's parameters, checked before anything connects."""

    def setUp(self) -> None:
        require_redis()

    def test_parameters(self) -> None:
        store = build(
            {"url": "redis://:s%40cret@127.0.0.1:6380/12", "prefix": "m:", "timeout": "2.5"}
        )
        verifyObject(IPersistence, store)
        self.assertEqual(
            (store.host, store.port, store.db, store.prefix, store.timeout),
            ("127.0.0.1", 6380, 12, "m:", 2.5),
        )
        self.assertEqual((store.username, store.password), (None, "s@cret"))
        self.assertNotIn("cret", repr(store) + store.address)

    def test_defaults(self) -> None:
        store = build({"url": "redis://localhost"})
        self.assertEqual(
            (store.host, store.port, store.db, store.prefix, store.timeout),
            ("localhost", 6379, 0, "mqtt:", 5.0),
        )
        user = build({"url": "redis://alice:pw@localhost/1"})
        self.assertEqual((user.username, user.password), ("alice", "pw"))

    def test_mistakes_name_the_parameter(self) -> None:
        cases = {
            "'url' is required": {},
            "'colour'": {"url": "redis://h", "colour": "red"},
            "only redis://": {"url": "rediss://h"},
            "database number": {"url": "redis://h/db"},
            "'timeout'": {"url": "redis://h", "timeout": "soon"},
            "positive": {"url": "redis://h", "timeout": "0"},
            "port": {"url": "redis://h:99999"},
        }
        for expected, parameters in cases.items():
            with self.assertRaises(ValueError) as caught:
                build(parameters)
            self.assertIn(expected, str(caught.exception))


class EncodingTests(SynchronousTestCase):
    """The stored records' binary form round-trips every field."""

    def test_delivery(self) -> None:
        full = delivery(2**40, retain=True, subscription_ids=(1, 268435455), shared="g/a/#")
        for value in (full, delivery(0, message=PLAIN, qos=0)):
            self.assertEqual(backend.decode_delivery(backend.encode_delivery(value)), value)
        state = backend.encode_state(65535, True)
        self.assertEqual(backend.decode_state(state), (65535, True))
        self.assertEqual(
            backend.decode_delivery(backend.encode_delivery(full), state),
            StoredDelivery(full.seq, MESSAGE, 1, True, (1, 268435455), 65535, True, "g/a/#"),
        )

    def test_message_and_will(self) -> None:
        for message in (MESSAGE, PLAIN, StoredMessage("ü/€", b"x" * 70000, 2, True)):
            self.assertEqual(backend.decode_message(backend.encode_message(message)), message)
        self.assertEqual(backend.decode_will(backend.encode_will(WILL, 12.5)), (WILL, 12.5))

    def test_other_format_or_damage_refused(self) -> None:
        data = backend.encode_message(MESSAGE)
        for damaged in (b"\x02" + data[1:], data[:-1], data + b"\x00"):
            self.assertRaises(ValueError, backend.decode_message, damaged)


class StoreTestCase(TestCase):
    """A test with a fresh redis-server and a store on it (database 12)."""

    appendfsync = "always"

    def setUp(self) -> None:
        self.server = RedisServer.for_test(self, self.appendfsync)
        self.store = self.make_store()

    def make_store(self, prefix: str = "mqtt:") -> RedisStore:
        store = build({"url": self.server.url + "/12", "prefix": prefix, "timeout": str(TIMEOUT)})
        self.addCleanup(store.close)
        return store

    def raw(self, *args: bytes) -> bytes:
        return self.server.command(*args, db=12)


class StoreTests(StoreTestCase):
    async def test_round_trip(self) -> None:
        """Every kind of change is stored; load() gives it all back, deliveries by seq."""
        verifyObject(IPersistence, self.store)
        self.assertEqual(await self.store.load(), Snapshot())
        await self.store.apply(
            [
                PutSession("c1", 3600, 1.7e9 + 0.5, "alice"),
                PutSubscription("c1", "a/#", 0x21),
                PutSubscription("c1", "b/+", 1),
                PutDelivery("c1", delivery(12, shared="g/a/#", subscription_ids=(3,))),
                PutDelivery("c1", delivery(3, qos=2)),
                PutDelivery("c1", delivery(100, packet_id=5)),
                UpdateDelivery("c1", 3, 7, True),
                AddAwaitingRel("c1", 9),
                AddAwaitingRel("c1", 10),
                PutWill("c1", WILL, 1.7e9 + 30),
                PutSession("c2", None, None),
                PutRetained(MESSAGE),
                PutRetained(PLAIN),
            ]
        )
        snapshot = await self.store.load()
        self.assertEqual(
            snapshot.sessions,
            [
                StoredSession(
                    "c1",
                    3600,
                    1.7e9 + 0.5,
                    "alice",
                    {"a/#": 0x21, "b/+": 1},
                    [
                        StoredDelivery(3, MESSAGE, 2, packet_id=7, released=True),
                        delivery(12, shared="g/a/#", subscription_ids=(3,)),
                        delivery(100, packet_id=5),
                    ],
                    {9, 10},
                    WILL,
                    1.7e9 + 30,
                ),
                StoredSession("c2"),
            ],
        )
        self.assertEqual(snapshot.retained, [MESSAGE, PLAIN])

    async def test_changes_replace_and_remove(self) -> None:
        """Put replaces, Update/Delete change one record, the rest stays."""
        await self.store.apply(
            [
                PutSession("c", 10, None, "u"),
                PutSubscription("c", "x", 1),
                PutSubscription("c", "y", 2),
                *(PutDelivery("c", delivery(seq)) for seq in (1, 2, 3, 20)),
                UpdateDelivery("c", 2, 4, False),
                UpdateDelivery("c", 3, 5, False),
                AddAwaitingRel("c", 1),
                AddAwaitingRel("c", 2),
                PutWill("c", WILL, 5.0),
                PutRetained(MESSAGE),
                PutRetained(PLAIN),
            ]
        )
        await self.store.apply(
            [
                PutSession("c", None, 99.5),
                PutSubscription("c", "x", 2),
                DeleteSubscription("c", "y"),
                PutDelivery("c", delivery(1, message=PLAIN, qos=0)),
                PutDelivery("c", delivery(3)),  # replaced: queued again, no packet id
                UpdateDelivery("c", 2, None, False),
                DeleteDelivery("c", 20),
                DeleteAwaitingRel("c", 1),
                DeleteWill("c"),
                DeleteRetained("a/b"),
                PutRetained(StoredMessage("plain", b"new", 1, True)),
            ]
        )
        snapshot = await self.store.load()
        self.assertEqual(
            snapshot.sessions,
            [
                StoredSession(
                    "c",
                    None,
                    99.5,
                    None,
                    {"x": 2},
                    [delivery(1, message=PLAIN, qos=0), delivery(2), delivery(3)],
                    {2},
                )
            ],
        )
        self.assertEqual(snapshot.retained, [StoredMessage("plain", b"new", 1, True)])

    async def test_delete_session_removes_everything(self) -> None:
        """DeleteSession leaves no key of the session behind; other sessions stay."""
        other = [PutSession("keep", None, None), PutDelivery("keep", delivery(1))]
        gone: list[Change] = [
            PutSession("gone", 5, None),
            PutSubscription("gone", "t", 1),
            PutDelivery("gone", delivery(1, packet_id=3)),
            AddAwaitingRel("gone", 4),
            PutWill("gone", WILL, 1.0),
        ]
        await self.store.apply([*other, *gone])
        await self.store.apply([DeleteSession("gone")])
        snapshot = await self.store.load()
        self.assertEqual([s.client_id for s in snapshot.sessions], ["keep"])
        keys = self.raw(b"KEYS", b"*gone*")
        self.assertEqual(keys, b"*0\r\n")
        self.assertEqual(self.raw(b"HLEN", b"mqtt:wills"), b":0\r\n")

    async def test_rows_without_session_are_kept(self) -> None:
        """A subscription or will whose session record is missing comes back in a stub."""
        await self.store.apply([PutSubscription("orphan", "t", 1), PutWill("lonely", WILL, 2.0)])
        snapshot = await self.store.load()
        self.assertEqual(
            snapshot.sessions,
            [
                StoredSession("lonely", will=WILL, will_at=2.0),
                StoredSession("orphan", subscriptions={"t": 1}),
            ],
        )

    async def test_prefixes_are_separate(self) -> None:
        """Two prefixes in one database do not see each other."""
        other = self.make_store("other:")
        await self.store.apply([PutSession("a", None, None), PutRetained(PLAIN)])
        await other.apply([PutSession("b", None, None)])
        self.assertEqual([s.client_id for s in (await self.store.load()).sessions], ["a"])
        snapshot = await other.load()
        self.assertEqual(([s.client_id for s in snapshot.sessions], snapshot.retained), (["b"], []))

    async def test_group_is_all_or_nothing(self) -> None:
        """A group Redis refuses (EXECABORT) leaves nothing of it behind."""
        await self.store.apply([PutSession("before", None, None)])
        commands = self.store.commands
        self.patch(
            self.store,
            "commands",
            lambda changes: [*commands(changes), (b"NO-SUCH-COMMAND",)],
        )
        group = [PutSession("c", None, None), *(PutDelivery("c", delivery(i)) for i in range(50))]
        with self.assertRaises(PersistenceError) as caught:
            await self.store.apply(group)
        self.assertIn("refused the group", str(caught.exception))
        self.assertEqual([s.client_id for s in (await self.store.load()).sessions], ["before"])

    async def test_foreign_key_is_an_error(self) -> None:
        """A key of ours that something else overwrote fails the group loudly."""
        self.raw(b"SET", b"mqtt:retained", b"not a hash")
        with self.assertRaises(PersistenceError) as caught:
            await self.store.apply([PutRetained(PLAIN)])
        self.assertIn("WRONGTYPE", str(caught.exception))
        with self.assertRaises(PersistenceError):
            await self.store.load()

    async def test_unreadable_record(self) -> None:
        """A record in another format fails load() with PersistenceError, not a crash."""
        self.raw(b"HSET", b"mqtt:retained", b"t", b"\x09garbage")
        with self.assertRaises(PersistenceError) as caught:
            await self.store.load()
        self.assertIn("unreadable record", str(caught.exception))

    async def test_record_no_broker_writes(self) -> None:
        """
        A record that decodes but could not have come from a broker (a wildcard in a
        retained topic) fails load() naming it, rather than failing later.
        """
        self.raw(
            b"HSET",
            b"mqtt:retained",
            b"a/+",
            backend.encode_message(StoredMessage("a/+", b"x", 0, True)),
        )
        with self.assertRaises(PersistenceError) as caught:
            await self.store.load()
        self.assertIn("retained message 'a/+'", str(caught.exception))

    async def test_close(self) -> None:
        """After close() a group fails at once; close() is idempotent."""
        await self.store.apply([PutSession("c", None, None)])
        await self.store.close()
        with self.assertRaises(PersistenceError):
            await self.store.apply([PutSession("d", None, None)])
        await self.store.close()

    async def test_settings_checked(self) -> None:
        """appendfsync always: nothing to warn about."""
        log = LogCapture(self)
        await self.store.load()
        self.assertNotIn("appendfsync", log.text())


class WeakSettingsTests(StoreTestCase):
    appendfsync = "everysec"

    async def test_warning(self) -> None:
        """appendfsync everysec: load() warns that acknowledged messages may be lost."""
        log = LogCapture(self)
        await self.store.load()
        self.assertIn("appendonly=yes appendfsync=everysec", log.text())


def sleep(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)  # type: ignore[arg-type]


class FaultTests(StoreTestCase):
    async def apply_eventually(self, changes: Sequence[Change], within: float) -> int:
        """Retry a group until it is committed; how many attempts failed."""
        deadline = time.monotonic() + within
        failures = 0
        while True:
            try:
                await self.store.apply(changes)
                return failures
            except PersistenceError:
                failures += 1
                if time.monotonic() > deadline:
                    raise
                await sleep(0.1)

    async def test_outage(self) -> None:
        """
        Redis stopped: a group fails with PersistenceError within the timeout; Redis
        back on the same port and data: a later group is committed, and load()
        shows what was committed before the outage.
        """
        await self.store.load()
        await self.store.apply([PutSession("before", None, None), PutRetained(PLAIN)])
        self.server.stop()
        await sleep(0.1)
        for _ in range(3):
            started = time.monotonic()
            with self.assertRaises(PersistenceError):
                await self.store.apply([PutSession("during", None, None)])
            self.assertLess(time.monotonic() - started, TIMEOUT + 0.5)
        with self.assertRaises(PersistenceError):
            await self.store.load()
        self.server.start()
        await self.apply_eventually([PutSession("after", None, None)], within=15)
        snapshot = await self.store.load()
        self.assertEqual([s.client_id for s in snapshot.sessions], ["after", "before"])
        self.assertEqual(snapshot.retained, [PLAIN])

    async def test_hung_server(self) -> None:
        """
        Redis accepts but does not answer (SIGSTOP): the group fails after the
        timeout, not later; once Redis answers again, groups are committed.
        """
        await self.store.apply([PutSession("before", None, None)])
        self.server.pause()
        started = time.monotonic()
        with self.assertRaises(PersistenceError) as caught:
            await self.store.apply([PutSession("hung", None, None)])
        elapsed = time.monotonic() - started
        self.assertIn("no answer within", str(caught.exception))
        self.assertTrue(TIMEOUT - 0.1 <= elapsed < TIMEOUT + 0.5, elapsed)
        self.server.resume()
        await self.apply_eventually([PutSession("after", None, None)], within=15)
        names = {s.client_id for s in (await self.store.load()).sessions}
        # The hung group may or may not have reached Redis (it is not acknowledged
        # either way: the broker refused the publishes it carried).
        self.assertEqual(names - {"hung"}, {"after", "before"})

    async def test_crash(self) -> None:
        """
        A child process commits groups and says so; it and Redis are killed with
        SIGKILL right after; Redis restarted from its AOF has every group the child
        reported, and every group it has is whole.
        """
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, self.server.url + "/12"],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": REPO_ROOT},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.addCleanup(child.kill)
        committed = 0
        deadline = time.monotonic() + 30
        buffer = b""
        assert child.stdout is not None
        while committed < 300 and time.monotonic() < deadline:
            ready, _, _ = select.select([child.stdout], [], [], 1.0)
            if not ready:
                continue
            chunk = os.read(child.stdout.fileno(), 65536)
            if not chunk:
                break
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                committed = int(line.split()[1])
        os.kill(child.pid, signal.SIGKILL)
        self.server.kill()
        child.wait(10)
        assert child.stderr is not None
        self.assertGreaterEqual(committed, 300, child.stderr.read().decode())
        self.server.start()
        snapshot = await self.store.load()
        groups: dict[int, int] = {}
        for session in snapshot.sessions:
            for stored in session.deliveries:
                group = int(stored.message.payload)
                groups[group] = groups.get(group, 0) + 1
        self.assertEqual(set(range(1, committed + 1)) - set(groups), set())
        self.assertEqual(set(groups.values()), {CHILD_GROUP})
        print(f"\nredis crash test: {committed} groups reported, {len(groups)} found")


CHILD_GROUP = 10

#: The crashing process: commits group after group of CHILD_GROUP deliveries, and
#: prints "committed k" once group k's apply() fired.
CHILD = f"""
import sys
from twisted.internet import defer, task
from mqttbroker.backends.redis import build
from mqttbroker.persistence import PutDelivery, PutSession, StoredDelivery, StoredMessage

async def main(reactor):
    store = build({{"url": sys.argv[1], "prefix": "mqtt:", "timeout": "5"}})
    await store.load()
    k = 0
    while True:
        k += 1
        client = "c%d" % (k % 7)
        group = [PutSession(client, None, None)] + [
            PutDelivery(client, StoredDelivery(
                k * 100 + i, StoredMessage("t", b"%d" % k, 1, False), 1))
            for i in range({CHILD_GROUP})
        ]
        await store.apply(group)
        print("committed", k, flush=True)

task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
"""


class MeasureTests(StoreTestCase):
    """Figures for docs/backend-redis.rst (printed; nothing about time is asserted)."""

    SESSIONS = 1000
    PER_SESSION = 100

    async def test_throughput_and_load(self) -> None:
        payload = b"x" * 64
        groups = 0
        started = time.perf_counter()
        for session in range(self.SESSIONS):
            client = f"client-{session}"
            await self.store.apply(
                [
                    PutDelivery(
                        client,
                        StoredDelivery(seq, StoredMessage(f"t/{session}", payload, 1, False), 1),
                    )
                    for seq in range(1, self.PER_SESSION + 1)
                ]
            )
            groups += 1
        written = time.perf_counter() - started
        started = time.perf_counter()
        snapshot = await self.store.load()
        loaded = time.perf_counter() - started
        total = sum(len(s.deliveries) for s in snapshot.sessions)
        self.assertEqual((len(snapshot.sessions), total), (self.SESSIONS, groups * 100))
        print(
            f"\nredis store: {groups} groups of 100 PutDelivery in {written:.2f} s"
            f" ({groups / written:.0f} groups/s, {groups * 100 / written:.0f} deliveries/s,"
            f" appendfsync {self.appendfsync}); load of {total} deliveries over"
            f" {len(snapshot.sessions)} sessions in {loaded:.2f} s"
        )
