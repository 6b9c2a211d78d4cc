"""
The crash tests of the durability promise, against `twist mqtt` processes killed with
SIGKILL: every QoS 1 message whose PUBACK the publisher saw is delivered after a
restart, also when the broker dies in the middle of a stream, and a QoS 2 message
PUBREC'd before the crash is delivered exactly once. For the default SQLite store
and for Redis (a real redis-server, also killed and restarted from its AOF).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sqlite3

from conformance.wire import WireClient
from mqttbroker.codec import (
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
)
from tests.redis_server import RedisServer
from tests.support import HOST, BrokerError, BrokerProcess, IntegrationTestCase

#: Messages per test: enough to span many commit groups, few enough to stay quick.
COUNT = 300
TOPIC = "durable/t"


class _Durability:
    """The tests, for a store that a subclass chooses."""

    broker: BrokerProcess

    def store_args(self) -> tuple[str, ...]:
        return ()

    def crash(self) -> None:
        """SIGKILL the broker (and whatever else the store's test kills), restart."""
        process = self.broker.process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.broker.start()

    def client(self, level: int = 4) -> WireClient:
        client = WireClient(HOST, self.broker.port, level, timeout=15)
        self.addCleanup(client.close)  # type: ignore[attr-defined]
        return client

    def offline_subscriber(self, qos: int) -> None:
        sub = self.client()
        assert sub.connect("dur-sub", clean_start=False).reason_code == 0
        sub.send(Subscribe(1, (Subscription(TOPIC, qos),)))
        assert sub.expect(Suback).reason_codes == (qos,)
        sub.close()
        self.broker.wait_for_log(r"Client 'dur-sub' disconnected")

    def received_after_crash(self, qos: int) -> list[bytes]:
        """What the subscriber gets when it comes back (acknowledging as it goes)."""
        sub = self.client()
        connack = sub.connect("dur-sub", clean_start=False)
        assert connack.session_present
        payloads: list[bytes] = []
        while True:
            try:
                packet = sub.receive(timeout=2)
            except AssertionError:
                return payloads
            if isinstance(packet, Publish):
                payloads.append(packet.payload)
                assert packet.packet_id is not None
                sub.send(Puback(packet.packet_id) if qos == 1 else Pubrec(packet.packet_id))
            elif isinstance(packet, Pubrel):
                sub.send(Pubcomp(packet.packet_id))

    def test_everything_acknowledged_survives(self) -> None:
        """N PUBACKs, SIGKILL at once, restart: the subscriber gets all N, in order."""
        self.offline_subscriber(1)
        pub = self.client()
        pub.connect("dur-pub")
        pub.send(*(Publish(TOPIC, b"%d" % i, 1, packet_id=i + 1) for i in range(COUNT)))
        acks = [pub.expect(Puback).packet_id for _ in range(COUNT)]
        self.assertEqual(acks, list(range(1, COUNT + 1)))  # type: ignore[attr-defined]
        self.crash()
        got = self.received_after_crash(1)
        self.assertEqual(got, [b"%d" % i for i in range(COUNT)])  # type: ignore[attr-defined]

    def test_killed_mid_stream(self) -> None:
        """
        Killed while acknowledging, at the middle and at two seeded random points:
        every message whose PUBACK came is delivered (acked is a subset of received).
        """
        rng = random.Random(14)
        for round_, kill_after in enumerate(
            (COUNT // 2, rng.randrange(1, COUNT), rng.randrange(1, COUNT))
        ):
            self.offline_subscriber(1)
            pub = self.client()
            pub.connect("dur-pub")
            tag = b"%d-" % round_
            pub.send(*(Publish(TOPIC, tag + b"%d" % i, 1, packet_id=i + 1) for i in range(COUNT)))
            acked = [pub.expect(Puback).packet_id for _ in range(kill_after)]
            self.crash()
            got = set(self.received_after_crash(1))
            missing = {tag + b"%d" % (pid - 1) for pid in acked if pid is not None} - got
            self.assertEqual(missing, set(), f"killed after {kill_after} PUBACKs")  # type: ignore[attr-defined]

    def test_qos2_exactly_once(self) -> None:
        """
        QoS 2 messages PUBREC'd before the crash: after it, the publisher re-sends some
        PUBLISHes (DUP) and all PUBRELs; the subscriber gets each message once.
        """
        self.offline_subscriber(2)
        pub = self.client()
        pub.connect("dur-pub2", clean_start=False)
        pub.send(*(Publish(TOPIC, b"%d" % i, 2, packet_id=i + 1) for i in range(COUNT)))
        for _ in range(COUNT):
            pub.expect(Pubrec)
        self.crash()
        pub = self.client()
        assert pub.connect("dur-pub2", clean_start=False).session_present
        resent = [
            Publish(TOPIC, b"%d" % i, 2, dup=True, packet_id=i + 1) for i in range(0, COUNT, 2)
        ]
        pub.send(*resent)
        for _ in resent:
            pub.expect(Pubrec)
        pub.send(*(Pubrel(i + 1) for i in range(COUNT)))
        for _ in range(COUNT):
            pub.expect(Pubcomp)
        got = self.received_after_crash(2)
        self.assertEqual(sorted(got), sorted(b"%d" % i for i in range(COUNT)))  # type: ignore[attr-defined]

    def test_subacks_survive(self) -> None:
        """N SUBACKs, SIGKILL at once, restart: all N subscriptions are there."""
        sub = self.client()
        sub.connect("dur-subs", clean_start=False)
        count = COUNT // 3
        sub.send(*(Subscribe(i + 1, (Subscription(f"{TOPIC}/{i}", 1),)) for i in range(count)))
        for _ in range(count):
            sub.expect(Suback)
        self.crash()
        pub = self.client()
        pub.connect("dur-pub")
        pub.send(*(Publish(f"{TOPIC}/{i}", b"%d" % i, 1, packet_id=i + 1) for i in range(count)))
        for _ in range(count):
            pub.expect(Puback)
        sub = self.client()
        assert sub.connect("dur-subs", clean_start=False).session_present
        got = []
        for _ in range(count):
            packet = sub.expect(Publish)
            got.append(packet.payload)
            sub.send(Puback(packet.packet_id))  # type: ignore[arg-type]
        self.assertEqual(sorted(got), sorted(b"%d" % i for i in range(count)))  # type: ignore[attr-defined]

    def test_pubcomps_survive(self) -> None:
        """
        N PUBCOMPs, SIGKILL at once, restart: the N packet identifiers are free again,
        so N new QoS 2 messages that reuse them are all delivered, none taken for a
        re-sent one.
        """
        self.offline_subscriber(2)
        pub = self.client()
        pub.connect("dur-pub2", clean_start=False)
        pub.send(*(Publish(TOPIC, b"old %d" % i, 2, packet_id=i + 1) for i in range(COUNT)))
        for _ in range(COUNT):
            pub.expect(Pubrec)
        pub.send(*(Pubrel(i + 1) for i in range(COUNT)))
        for _ in range(COUNT):
            pub.expect(Pubcomp)
        self.crash()
        pub = self.client()
        assert pub.connect("dur-pub2", clean_start=False).session_present
        pub.send(*(Publish(TOPIC, b"new %d" % i, 2, packet_id=i + 1) for i in range(COUNT)))
        for _ in range(COUNT):
            pub.expect(Pubrec)
        pub.send(*(Pubrel(i + 1) for i in range(COUNT)))
        for _ in range(COUNT):
            pub.expect(Pubcomp)
        got = self.received_after_crash(2)
        expected = [b"old %d" % i for i in range(COUNT)] + [b"new %d" % i for i in range(COUNT)]
        self.assertEqual(sorted(got), sorted(expected))  # type: ignore[attr-defined]


class SQLiteDurabilityTests(_Durability, IntegrationTestCase):
    """The default store: a SQLite file in the broker's data directory."""

    def setUp(self) -> None:
        self.broker = self.start_broker(*self.store_args())


class DamagedStoreTests(IntegrationTestCase):
    """A broker whose store is damaged says which record, and does not start."""

    def test_damaged_record_stops_the_start(self) -> None:
        broker = BrokerProcess()
        self.addCleanup(broker.remove_log)
        broker.start()
        client = WireClient(HOST, broker.port, 4, timeout=15)
        self.addCleanup(client.close)
        client.connect("dur-damaged", clean_start=False)
        client.send(Subscribe(1, (Subscription(TOPIC, 1),)))
        client.expect(Suback)
        client.close()
        broker.wait_for_log(r"Client 'dur-damaged' disconnected")
        broker.stop()
        path = os.path.join(broker.data_dir, "mqttbroker.sqlite3")
        with contextlib.closing(sqlite3.connect(path)) as connection, connection:
            connection.execute("UPDATE subscriptions SET value = 3")
        with self.assertRaises(BrokerError) as raised:
            broker.start()
        self.assertIn(
            "Could not load the broker's state from its store; stopping: SQLite store",
            str(raised.exception),
        )
        self.assertIn(
            f"damaged record: session 'dur-damaged': subscription '{TOPIC}' has the value 3",
            str(raised.exception),
        )
        self.assertNotIn("Traceback", str(raised.exception))
        # A service manager sees that it did not start.
        self.assertEqual(broker.process.returncode, 1)  # type: ignore[union-attr]


class RedisDurabilityTests(_Durability, IntegrationTestCase):
    """The Redis store, with redis-server killed and restarted along with the broker."""

    def setUp(self) -> None:
        self.redis = RedisServer.for_test(self)
        self.broker = self.start_broker(*self.store_args())

    def store_args(self) -> tuple[str, ...]:
        return ("--persistence", f"redis:url={self.redis.url}/3,prefix=dur:")

    def crash(self) -> None:
        process = self.broker.process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.redis.kill()
        self.redis.start()
        self.broker.start()


class RedisOutageTests(IntegrationTestCase):
    """Redis goes away under a running broker: refused, not lost, and back again."""

    def setUp(self) -> None:
        self.redis = RedisServer.for_test(self)
        self.broker = self.start_broker(
            "--persistence", f"redis:url={self.redis.url}/4,prefix=out:,timeout=1"
        )  # fmt: skip

    def test_outage(self) -> None:
        """
        With redis-server stopped, an MQTT 5 QoS 1 PUBLISH for a persistent session is
        answered 0x80 (the next one before it is routed), QoS 0 still reaches an online
        subscriber, and the broker keeps
        running; once Redis is back, QoS 1 messages are acknowledged again and reach
        the persistent session.
        """
        durable = WireClient(HOST, self.broker.port, 4, timeout=15)
        self.addCleanup(durable.close)
        durable.connect("out-sub", clean_start=False)
        durable.send(Subscribe(1, (Subscription(TOPIC, 1),)))
        durable.expect(Suback)
        pub = WireClient(HOST, self.broker.port, 5, timeout=15)
        self.addCleanup(pub.close)
        pub.connect("out-pub")
        self.redis.stop()
        # The first message meets the failure when its group is committed (it may
        # have reached online subscribers by then); the broker knows afterwards, and
        # the next is refused before it is routed at all.
        pub.send(Publish(TOPIC, b"first", 1, packet_id=1))
        self.assertEqual(pub.expect(Puback).reason_code, 0x80)
        pub.send(Publish(TOPIC, b"second", 1, packet_id=2))
        self.assertEqual(pub.expect(Puback).reason_code, 0x80)
        pub.send(Publish(TOPIC, b"q0", 0))
        payloads = []
        while True:
            packet = durable.receive()
            if isinstance(packet, Publish):
                payloads.append(packet.payload)
                if packet.qos:
                    durable.send(Puback(packet.packet_id))  # type: ignore[arg-type]
                if packet.payload == b"q0":
                    break
        self.assertNotIn(b"second", payloads)
        self.assertEqual(payloads[-1], b"q0")
        self.redis.start()
        self.broker.wait_for_log(r"The message store works again", timeout=40)
        pub.send(Publish(TOPIC, b"after", 1, packet_id=3))
        self.assertEqual(pub.expect(Puback).reason_code, 0)
        after = durable.expect(Publish)
        self.assertEqual(after.payload, b"after")
        self.assertTrue(self.broker.alive())
