# -*- test-case-name: tests.test_session -*-
"""
Tests for L{mqttbroker.session} (Message, Session, SessionLimits) on their own, over
a recording L{IClientLink}, and for session lifetimes through the broker harness:
clean and persistent sessions, offline queues and their limits, observers, takeover.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mqttbroker.broker import BrokerConfig
from mqttbroker.codec import (
    MAX_PACKET_SIZE,
    Connack,
    Connect,
    Disconnect,
    Packet,
    PropertyId,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Unsubscribe,
    Will,
    decode_all,
)
from mqttbroker.interfaces import IBrokerObserver, IClientLink
from mqttbroker.observers import LoggingObserver
from mqttbroker.session import QOS0_OFFLINE, Message, Session, SessionLimits
from mqttbroker.testing import BrokerHarness, FakeClient, disconnect, publish, subscribe
from mqttbroker.testing import publish_shape as shape

# -- helpers -----------------------------------------------------------------------------


@implementer(IClientLink)
class RecordingLink:
    """An IClientLink that keeps what is written, for Session unit tests."""

    def __init__(self, protocol_level: int = 4) -> None:
        self.protocol_level = protocol_level
        self.receive_maximum = 65535
        self.max_packet_size = MAX_PACKET_SIZE
        self.writable = True
        self.data: list[bytes] = []
        self.closed: list[tuple[int, str]] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def write_sequence(self, chunks: list[bytes]) -> None:
        self.data.append(b"".join(chunks))

    def close_by_server(self, reason_code: int, reason: str) -> None:
        self.closed.append((reason_code, reason))

    def packets(self) -> list[Packet]:
        """The packets written since the last call."""
        data = b"".join(self.data)
        self.data.clear()
        return decode_all(data, self.protocol_level)


@implementer(IBrokerObserver)
class RecordingObserver:
    """Records every broker event as a tuple."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def client_connected(
        self,
        client_id: str,
        address: str,
        protocol_level: int,
        clean_start: bool,
        session_present: bool,
    ) -> None:
        self.events.append(
            ("connected", client_id, address, protocol_level, clean_start, session_present)
        )

    def client_disconnected(self, client_id: str, reason: str, clean: bool) -> None:
        self.events.append(("disconnected", client_id, reason, clean))

    def subscribed(self, client_id: str, topic_filter: str, qos: int) -> None:
        self.events.append(("subscribed", client_id, topic_filter, qos))

    def unsubscribed(self, client_id: str, topic_filter: str) -> None:
        self.events.append(("unsubscribed", client_id, topic_filter))

    def message_published(
        self, client_id: str | None, topic: str, qos: int, retain: bool, size: int
    ) -> None:
        self.events.append(("published", client_id, topic, qos, retain, size))

    def message_dropped(self, client_id: str, topic: str, qos: int, reason: str) -> None:
        self.events.append(("dropped", client_id, topic, qos, reason))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [event for event in self.events if event[0] == kind]


_SESSION_EXPIRY = {PropertyId.SESSION_EXPIRY_INTERVAL: 3600}


# -- Message ------------------------------------------------------------------------------


class MessageTests(SynchronousTestCase):
    """L{Message}: shared encodings per receiver shape, and its size."""

    def test_encoded_shared_per_shape(self) -> None:
        """One encoding per (level, QoS, retain), shared; different shapes differ."""
        message = Message("t", b"payload", 2, True, {PropertyId.CONTENT_TYPE: "text/plain"})
        first = message.encoded(4, 1, False)
        self.assertIs(message.encoded(4, 1, False), first)
        self.assertIsNot(message.encoded(4, 1, True), first)
        self.assertIsNot(message.encoded(4, 0, False), first)
        self.assertIsNot(message.encoded(5, 1, False), first)
        [v4] = decode_all(first.for_packet_id(9), 4)
        self.assertEqual(v4, Publish("t", b"payload", 1, False, packet_id=9))
        [v5] = decode_all(message.encoded(5, 1, False).for_packet_id(9), 5)
        assert isinstance(v5, Publish)
        self.assertEqual(v5.properties, {PropertyId.CONTENT_TYPE: "text/plain"})

    def test_size_ascii(self) -> None:
        """size counts payload bytes plus topic bytes."""
        self.assertEqual(Message("abc", b"12345", 0, False).size, 8)

    def test_size_counts_topic_utf8_bytes(self) -> None:
        """size counts the topic's UTF-8 bytes, not its characters (as documented)."""
        topic = "caf\u00e9/\u6e29\u5ea6"  # 4 + 1 + 2 characters, 5 + 1 + 6 bytes
        self.assertEqual(Message(topic, b"xy", 0, False).size, len(topic.encode()) + 2)


# -- Session over a recording link --------------------------------------------------------


class SessionUnitTests(SynchronousTestCase):
    """L{Session} on its own: delivery, window, queue, acknowledgements, re-sends."""

    def setUp(self) -> None:
        self.drops: list[tuple[str, str, bool]] = []

    def _session(self, **limits: Any) -> Session:
        def on_drop(session: Session, message: Message, qos: int, reason: str, first: bool) -> None:
            self.drops.append((message.topic, reason, first))

        return Session("c", True, SessionLimits(**limits), on_drop)

    def test_qos0_waits_behind_queue(self) -> None:
        """
        A QoS 0 message does not overtake queued ones: with a window of 1 and a
        paused link, QoS 0 messages of one topic still arrive in order [MQTT-4.6.0-6].
        """
        session = self._session(max_inflight=1)
        link = RecordingLink()
        session.attach(link)
        link.writable = False
        session.deliver(Message("t", b"A", 0, False), 0, False)
        link.writable = True
        session.drain()
        session.deliver(Message("t", b"B", 1, False), 1, False)
        session.deliver(Message("t", b"C", 1, False), 1, False)
        link.writable = False
        session.deliver(Message("t", b"D", 0, False), 0, False)
        link.writable = True
        session.drain()
        session.deliver(Message("t", b"E", 0, False), 0, False)
        self.assertEqual([p.payload for p in link.packets()], [b"A", b"B"])  # type: ignore[union-attr]
        session.puback(1)
        self.assertEqual([p.payload for p in link.packets()], [b"C", b"D", b"E"])  # type: ignore[union-attr]

    def test_drop_reports_delivery_qos(self) -> None:
        """A dropped message is reported at the QoS it would have been delivered at."""
        qos_seen: list[int] = []
        session = Session(
            "c",
            True,
            SessionLimits(max_queued_messages=1),
            lambda _s, _m, qos, _r, _f: qos_seen.append(qos),
        )
        session.deliver(Message("t", b"1", 2, False), 1, False)
        session.deliver(Message("t", b"2", 2, False), 1, False)
        self.assertEqual(qos_seen, [1])

    def test_expired_messages_make_room(self) -> None:
        """A full queue first drops messages whose expiry ran out [MQTT-3.3.2-5]."""
        now = [0.0]
        session = Session("c", True, SessionLimits(max_queued_messages=2), now=lambda: now[0])
        session.deliver(Message("t", b"old", 1, False, expires_at=5.0), 1, False)
        session.deliver(Message("t", b"keep", 1, False), 1, False)
        now[0] = 10.0
        self.assertTrue(session.deliver(Message("t", b"new", 1, False), 1, False))
        link = RecordingLink()
        session.attach(link)
        self.assertEqual([p.payload for p in link.packets()], [b"keep", b"new"])  # type: ignore[union-attr]

    def test_resend_too_large_for_new_connection(self) -> None:
        """
        An in-flight message larger than the new connection's Maximum Packet Size is
        discarded as if delivered, not re-sent [MQTT-3.1.2-25].
        """
        session = self._session()
        first = RecordingLink()
        session.attach(first)
        session.deliver(Message("t", b"x" * 100, 1, False), 1, False)
        session.detach()
        small = RecordingLink()
        small.max_packet_size = 50
        session.attach(small)
        self.assertEqual((small.packets(), session.inflight_count), ([], 0))

    def test_link_provides_interface(self) -> None:
        """The recording link used here provides IClientLink."""
        verifyObject(IClientLink, RecordingLink())

    def test_deliver_online(self) -> None:
        """Online: QoS 0 written as is, QoS 1/2 with fresh packet identifiers 1, 2, ..."""
        session = self._session()
        link = RecordingLink()
        session.attach(link)
        session.deliver(Message("t", b"0", 0, False), 0, False)
        session.deliver(Message("t", b"1", 1, False), 1, False)
        session.deliver(Message("t", b"2", 2, False), 2, True)
        self.assertEqual(
            link.packets(),
            [
                Publish("t", b"0", 0),
                Publish("t", b"1", 1, packet_id=1),
                Publish("t", b"2", 2, True, packet_id=2),
            ],
        )
        self.assertEqual(session.inflight_count, 2)

    def test_inflight_window(self) -> None:
        """Beyond max_inflight, QoS 1 messages queue and go out, in order, as acks come."""
        session = self._session(max_inflight=2)
        link = RecordingLink()
        session.attach(link)
        for n in range(5):
            session.deliver(Message("t", b"%d" % n, 1, False), 1, False)
        self.assertEqual([p.payload for p in link.packets()], [b"0", b"1"])  # type: ignore[union-attr]
        self.assertEqual((session.inflight_count, session.queued_count), (2, 3))
        self.assertTrue(session.puback(1))
        self.assertEqual(link.packets(), [Publish("t", b"2", 1, packet_id=3)])
        self.assertFalse(session.puback(1), "a second PUBACK for the same id is ignored")
        self.assertEqual(link.packets(), [])
        self.assertTrue(session.puback(2))
        self.assertTrue(session.puback(3))
        self.assertEqual([p.payload for p in link.packets()], [b"3", b"4"])  # type: ignore[union-attr]
        self.assertEqual(session.queued_count, 0)

    def test_qos2_acknowledgements(self) -> None:
        """QoS 2: PUBACK does not complete it, PUBCOMP only after PUBREC frees the id."""
        session = self._session()
        link = RecordingLink()
        session.attach(link)
        session.deliver(Message("t", b"x", 2, False), 2, False)
        self.assertFalse(session.puback(1))
        self.assertFalse(session.pubcomp(1), "PUBCOMP before PUBREC")
        self.assertTrue(session.pubrec(1))
        self.assertEqual(session.inflight_count, 1)
        self.assertTrue(session.pubcomp(1))
        self.assertEqual(session.inflight_count, 0)
        self.assertFalse(session.pubrec(1))
        self.assertFalse(session.pubrec(99))

    def test_qos1_not_completed_by_qos2_acks(self) -> None:
        """PUBREC/PUBCOMP do not complete a QoS 1 delivery."""
        session = self._session()
        link = RecordingLink()
        session.attach(link)
        session.deliver(Message("t", b"x", 1, False), 1, False)
        self.assertFalse(session.pubrec(1))
        self.assertFalse(session.pubcomp(1))
        self.assertEqual(session.inflight_count, 1)

    def test_attach_resends_in_order_with_dup(self) -> None:
        """attach() re-sends unacknowledged PUBLISH with DUP and PUBREL, in order [MQTT-4.4.0-1]."""
        session = self._session(max_inflight=10)
        old = RecordingLink()
        session.attach(old)
        session.deliver(Message("t", b"a", 1, False), 1, False)
        session.deliver(Message("t", b"b", 2, False), 2, False)
        session.deliver(Message("t", b"c", 2, False), 2, False)
        session.deliver(Message("t", b"d", 1, False), 1, False)
        session.pubrec(2)
        session.detach()
        session.deliver(Message("t", b"e", 1, False), 1, False)
        new = RecordingLink()
        session.attach(new)
        self.assertEqual(
            new.packets(),
            [
                Publish("t", b"a", 1, dup=True, packet_id=1),
                Pubrel(2),
                Publish("t", b"c", 2, dup=True, packet_id=3),
                Publish("t", b"d", 1, dup=True, packet_id=4),
                Publish("t", b"e", 1, packet_id=5),
            ],
        )

    def test_resend_at_new_link_level(self) -> None:
        """Re-sends use the protocol level of the new connection."""
        session = self._session()
        session.attach(RecordingLink(4))
        session.deliver(Message("t", b"a", 1, False, {PropertyId.CONTENT_TYPE: "x"}), 1, False)
        session.detach()
        new = RecordingLink(5)
        session.attach(new)
        [packet] = new.packets()
        assert isinstance(packet, Publish)
        self.assertEqual((packet.dup, packet.properties), (True, {PropertyId.CONTENT_TYPE: "x"}))

    def test_offline_queue(self) -> None:
        """Offline: QoS 1/2 queue, QoS 0 is dropped with the 'QoS 0 while offline' reason."""
        session = self._session()
        session.deliver(Message("t", b"1", 1, False), 1, False)
        session.deliver(Message("t", b"0", 0, False), 0, False)
        session.deliver(Message("t", b"2", 2, False), 2, False)
        self.assertEqual(session.queued_count, 2)
        self.assertEqual(session.queued_bytes, 4)
        self.assertEqual(session.dropped, 1)
        self.assertEqual(self.drops, [("t", QOS0_OFFLINE, False)])
        self.assertFalse(session.overflowing)
        link = RecordingLink()
        session.attach(link)
        self.assertEqual([p.payload for p in link.packets()], [b"1", b"2"])  # type: ignore[union-attr]
        self.assertEqual((session.queued_count, session.queued_bytes), (0, 0))

    def test_offline_qos0_queued_when_configured(self) -> None:
        """With queue_qos0, QoS 0 messages wait for an offline session too."""
        session = self._session(queue_qos0=True)
        session.deliver(Message("t", b"0", 0, False), 0, False)
        link = RecordingLink()
        session.attach(link)
        self.assertEqual(link.packets(), [Publish("t", b"0", 0)])

    def test_queue_message_limit(self) -> None:
        """A full queue drops the newest message; 'first' marks an overflow episode."""
        session = self._session(max_queued_messages=2, max_inflight=1)
        link = RecordingLink()
        session.attach(link)
        for topic in ("a", "b", "c", "d", "e"):
            session.deliver(Message(topic, b"", 1, False), 1, False)
        # "a" in flight, "b" and "c" queued, "d" and "e" dropped.
        self.assertEqual(
            self.drops,
            [("d", "queue full (messages)", True), ("e", "queue full (messages)", False)],
        )
        self.assertTrue(session.overflowing)
        self.assertEqual(session.dropped, 2)
        link.packets()
        session.puback(1)  # "b" goes out, the queue is below its limit again
        self.assertFalse(session.overflowing)
        session.deliver(Message("f", b"", 1, False), 1, False)
        session.deliver(Message("g", b"", 1, False), 1, False)
        self.assertEqual(self.drops[-1], ("g", "queue full (messages)", True))
        session.puback(2)
        session.puback(3)
        session.puback(4)
        self.assertEqual([p.topic for p in link.packets()], ["b", "c", "f"])  # type: ignore[union-attr]

    def test_queue_byte_limit(self) -> None:
        """max_queued_bytes counts payload plus topic bytes; over it, new messages drop."""
        session = self._session(max_queued_bytes=10, max_queued_messages=0)
        session.deliver(Message("t", b"1234", 1, False), 1, False)  # 5 bytes
        session.deliver(Message("t", b"5678", 1, False), 1, False)  # 10 bytes
        session.deliver(Message("t", b"9", 1, False), 1, False)  # would be 12
        self.assertEqual(session.queued_bytes, 10)
        self.assertEqual(self.drops, [("t", "queue full (bytes)", True)])

    def test_backpressure(self) -> None:
        """An unwritable link makes every QoS queue; drain() sends them in order."""
        session = self._session()
        link = RecordingLink()
        session.attach(link)
        link.writable = False
        session.deliver(Message("t", b"0", 0, False), 0, False)
        session.deliver(Message("t", b"1", 1, False), 1, False)
        session.deliver(Message("t", b"2", 0, False), 0, False)
        self.assertEqual(link.packets(), [])
        link.writable = True
        session.drain()
        self.assertEqual([p.payload for p in link.packets()], [b"0", b"1", b"2"])  # type: ignore[union-attr]

    def test_packet_id_wraps_and_skips_inflight(self) -> None:
        """Packet ids wrap from 65535 to 1 and skip ids still in flight [MQTT-2.3.1-4]."""
        session = self._session(max_inflight=100)
        link = RecordingLink()
        session.attach(link)
        message = Message("t", b"", 1, False)
        session.deliver(message, 1, False)  # id 1 stays in flight
        for pid in range(2, 0x10000):
            session.deliver(message, 1, False)
            self.assertTrue(session.puback(pid))
        link.data.clear()
        session.deliver(message, 1, False)
        [packet] = link.packets()
        self.assertEqual(packet, Publish("t", b"", 1, packet_id=2))

    def test_discard_state(self) -> None:
        """discard_state() forgets in-flight, queued, awaiting PUBREL and subscriptions."""
        session = self._session(max_inflight=1)
        session.attach(RecordingLink())
        session.deliver(Message("t", b"1", 1, False), 1, False)
        session.deliver(Message("t", b"2", 1, False), 1, False)
        session.awaiting_rel.add(7)
        session.subscriptions["t"] = 1
        session.discard_state()
        self.assertEqual(
            (session.inflight_count, session.queued_count, session.queued_bytes),
            (0, 0, 0),
        )
        self.assertEqual((session.awaiting_rel, session.subscriptions), (set(), {}))


# -- session lifetimes through the broker ----------------------------------------------------


class CleanSessionTests(SynchronousTestCase):
    """Clean Session 1 and 0 at levels 3, 4 (and Clean Start / expiry at 5)."""

    def test_first_connect_session_present_zero(self) -> None:
        """A new persistent session answers session present 0 [MQTT-3.2.2-3]."""
        harness = BrokerHarness()
        _, connack = harness.connect("c", clean_start=False)
        self.assertEqual(connack, Connack(False, 0))

    def test_clean_session_discards_state(self) -> None:
        """Clean session 1 discards the stored session: present 0, none kept [MQTT-3.1.2-6]."""
        harness = BrokerHarness()
        client, _ = harness.connect("c", clean_start=False)
        subscribe(client, ("t", 1))
        disconnect(client)
        client, connack = harness.connect("c", clean_start=True)
        self.assertEqual(connack, Connack(False, 0))
        self.assertEqual(harness.broker.sessions["c"].subscriptions, {})
        publisher, _ = harness.connect("p")
        publish(publisher, "t", b"x", 1)
        self.assertEqual(client.received(), [])
        disconnect(client)
        self.assertNotIn("c", harness.broker.sessions)
        self.assertEqual(len(harness.broker.subscriptions), 0)

    def test_clean_session_ends_with_connection(self) -> None:
        """A clean session's subscriptions go when its connection ends [MQTT-3.1.2-6]."""
        harness = BrokerHarness()
        client, _ = harness.connect("c")
        subscribe(client, ("t/#", 1), ("u", 0))
        client.drop()
        self.assertEqual(harness.broker.sessions, {})
        self.assertEqual(len(harness.broker.subscriptions), 0)
        client, connack = harness.connect("c", clean_start=False)
        self.assertFalse(connack.session_present)

    def test_persistent_session_resumed(self) -> None:
        """Clean session 0 resumes: session present 1, subscriptions kept [MQTT-3.2.2-2]."""
        harness = BrokerHarness()
        client, _ = harness.connect("c", clean_start=False)
        subscribe(client, ("t/+", 2))
        client.drop()
        client, connack = harness.connect("c", clean_start=False)
        self.assertEqual(connack, Connack(True, 0))
        self.assertEqual(harness.broker.sessions["c"].subscriptions, {"t/+": 2})
        publisher, _ = harness.connect("p")
        publish(publisher, "t/1", b"x", 1)
        self.assertEqual(shape(client.received()), [("t/1", b"x", 1, False, False)])

    def test_offline_messages_delivered_on_reconnect(self) -> None:
        """QoS 1/2 for an offline persistent session queue, delivered in order [MQTT-3.1.2-5]."""
        harness = BrokerHarness()
        client, _ = harness.connect("c", clean_start=False)
        subscribe(client, ("t", 2))
        disconnect(client)
        publisher, _ = harness.connect("p")
        publish(publisher, "t", b"one", 1, packet_id=1)
        publish(publisher, "t", b"zero", 0)
        publish(publisher, "t", b"two", 2, packet_id=2)
        self.assertEqual(harness.broker.sessions["c"].queued_count, 2)
        client, connack = harness.connect("c", clean_start=False)
        self.assertTrue(connack.session_present)
        packets = client.received()
        self.assertEqual(
            shape(packets), [("t", b"one", 1, False, False), ("t", b"two", 2, False, False)]
        )
        ids = [p.packet_id for p in packets if isinstance(p, Publish)]
        self.assertEqual(len(set(ids)), 2)
        self.assertNotIn(None, ids)

    def test_offline_qos0_queued_when_configured(self) -> None:
        """With queue_qos0, QoS 0 messages are kept for an offline persistent session too."""
        harness = BrokerHarness(BrokerConfig(session_limits=SessionLimits(queue_qos0=True)))
        client, _ = harness.connect("c", clean_start=False)
        subscribe(client, ("t", 1))
        disconnect(client)
        publisher, _ = harness.connect("p")
        publish(publisher, "t", b"zero", 0)
        client, _ = harness.connect("c", clean_start=False)
        self.assertEqual(shape(client.received()), [("t", b"zero", 0, False, False)])

    def test_level3_persistent_session_resumed(self) -> None:
        """MQTT 3.1 clean session 0 resumes the session (CONNACK 0: 3.1 has no present flag)."""
        harness = BrokerHarness()
        client, _ = harness.connect("c3", level=3, clean_start=False)
        subscribe(client, ("t", 1))
        disconnect(client)
        publisher, _ = harness.connect("p")
        publish(publisher, "t", b"kept", 1)
        # MQTT 3.1 has no session present flag: the CONNACK must say 0 / accepted.
        client = harness.client(3)
        client.send(Connect("c3", 3, False))
        packets = client.received()
        self.assertEqual(packets[:1], [Connack(False, 0)])
        self.assertEqual(shape(packets), [("t", b"kept", 1, False, False)])

    def test_level5_session_expiry(self) -> None:
        """Level 5: Session Expiry > 0 keeps the session; 0 ends it with the connection."""
        harness = BrokerHarness()
        client, _ = harness.connect("v5", level=5, clean_start=True, properties=_SESSION_EXPIRY)
        subscribe(client, ("t", 1))
        disconnect(client)
        client, connack = harness.connect("v5", level=5, clean_start=False)
        self.assertTrue(connack.session_present)
        disconnect(client)  # this connection asked for expiry 0
        self.assertNotIn("v5", harness.broker.sessions)
        _, connack = harness.connect("v5", level=5, clean_start=False)
        self.assertFalse(connack.session_present)


class QueueLimitTests(SynchronousTestCase):
    """Per-session queue limits, reported to observers."""

    def test_observers_provide_interface(self) -> None:
        """The recording observer and LoggingObserver provide IBrokerObserver."""
        verifyObject(IBrokerObserver, RecordingObserver())
        verifyObject(IBrokerObserver, LoggingObserver())

    def _offline_subscriber(self, **limits: Any) -> tuple[BrokerHarness, RecordingObserver]:
        observer = RecordingObserver()
        config = BrokerConfig(session_limits=SessionLimits(**limits))
        harness = BrokerHarness(config, [observer])
        client, _ = harness.connect("c", clean_start=False)
        subscribe(client, ("t", 1))
        disconnect(client)
        return harness, observer

    def test_max_queued_messages(self) -> None:
        """Past max_queued_messages new messages are dropped and reported; the oldest are kept."""
        harness, observer = self._offline_subscriber(max_queued_messages=2)
        publisher, _ = harness.connect("p")
        for n in range(4):
            publish(publisher, "t", b"%d" % n, 1, packet_id=n + 1)
        self.assertEqual(
            observer.of("dropped"),
            [("dropped", "c", "t", 1, "queue full (messages)")] * 2,
        )
        client, _ = harness.connect("c", clean_start=False)
        self.assertEqual([p[1] for p in shape(client.received())], [b"0", b"1"])

    def test_max_queued_bytes(self) -> None:
        """Past max_queued_bytes (payload + topic) new messages are dropped and reported."""
        harness, observer = self._offline_subscriber(max_queued_bytes=10, max_queued_messages=0)
        publisher, _ = harness.connect("p")
        for n in range(3):
            publish(publisher, "t", b"abc%d" % n, 1, packet_id=n + 1)  # 5 bytes each
        self.assertEqual(observer.of("dropped"), [("dropped", "c", "t", 1, "queue full (bytes)")])
        client, _ = harness.connect("c", clean_start=False)
        self.assertEqual([p[1] for p in shape(client.received())], [b"abc0", b"abc1"])

    def test_qos0_offline_reported(self) -> None:
        """A QoS 0 message for an offline session is reported as dropped, not queued."""
        harness, observer = self._offline_subscriber()
        publisher, _ = harness.connect("p")
        publish(publisher, "t", b"x", 0)
        self.assertEqual(observer.of("dropped"), [("dropped", "c", "t", 0, QOS0_OFFLINE)])

    def test_event_sequence(self) -> None:
        """Observers see connect, (un)subscribe, publish and disconnect with details."""
        observer = RecordingObserver()
        harness = BrokerHarness(observers=[observer])
        client, _ = harness.connect("c", clean_start=False, keep_alive=30)
        subscribe(client, ("t", 2))
        publish(client, "t", b"hello", 1, retain=True)
        client.send(Unsubscribe(2, ("t",)))
        disconnect(client)
        address = observer.events[0][2]
        self.assertRegex(address, r"^127\.0\.0\.1:\d+$")
        self.assertEqual(
            observer.events,
            [
                ("connected", "c", address, 4, False, False),
                ("subscribed", "c", "t", 2),
                ("published", "c", "t", 1, True, 5),
                ("unsubscribed", "c", "t"),
                ("disconnected", "c", "client DISCONNECT", True),
            ],
        )

    def test_raising_observer_does_not_break_routing(self) -> None:
        """An observer that raises is logged and ignored; the PUBLISH is still acked and routed."""

        class Boom(RecordingObserver):
            def message_published(self, *args: Any) -> None:
                raise ZeroDivisionError("observer bug")

        harness = BrokerHarness(observers=[Boom()])
        subscriber, _ = harness.connect("s")
        subscribe(subscriber, ("t", 1))
        publisher, _ = harness.connect("p")
        try:
            acks = publish(publisher, "t", b"x", 1, packet_id=3)
        except ZeroDivisionError as error:
            self.fail(f"the observer's exception escaped into the connection: {error!r}")
        self.assertEqual(acks, [Puback(3)])
        self.assertEqual(shape(subscriber.received()), [("t", b"x", 1, False, False)])
        self.flushLoggedErrors(ZeroDivisionError)


class TakeoverTests(SynchronousTestCase):
    """A second connection with the same client id takes the session over [MQTT-3.1.4-2]."""

    def _subscriber_with_inflight(
        self, harness: BrokerHarness, level: int = 4, **fields: Any
    ) -> FakeClient:
        old, _ = harness.connect(
            "c",
            level=level,
            clean_start=False,
            will=Will("wills/c", b"gone", 1),
            **fields,
        )
        subscribe(old, ("t", 2))
        publisher, _ = harness.connect("p")
        publish(publisher, "t", b"q1", 1, packet_id=1)
        publish(publisher, "t", b"q2", 2, packet_id=2)
        self.assertEqual(len(shape(old.received())), 2)  # neither acknowledged
        return old

    def test_takeover_closes_old_and_resends(self) -> None:
        """Old connection closed; session moves over; in-flight re-sent with DUP [MQTT-3.1.4-2]."""
        observer = RecordingObserver()
        harness = BrokerHarness(observers=[observer])
        watcher, _ = harness.connect("w")
        subscribe(watcher, ("wills/#", 1))
        old = self._subscriber_with_inflight(harness)
        new, connack = harness.connect("c", clean_start=False)
        self.assertTrue(old.closed_by_server)
        self.assertEqual(old.received(), [], "a 3.1.1 client gets no DISCONNECT")
        self.assertEqual(connack, Connack(True, 0))
        packets = new.received()
        self.assertEqual(
            shape(packets), [("t", b"q1", 1, False, True), ("t", b"q2", 2, False, True)]
        )
        self.assertEqual([p.packet_id for p in packets], [1, 2])  # type: ignore[union-attr]
        # The old connection's will is published, as for any close without DISCONNECT.
        self.assertEqual(shape(watcher.received()), [("wills/c", b"gone", 1, False, False)])
        self.assertIn(("disconnected", "c", "session taken over", False), observer.events)
        # The session now belongs to the new connection: acks complete it.
        new.send(Puback(1), Pubrec(2))
        self.assertEqual(new.received(), [Pubrel(2)])
        new.send(Pubcomp(2))
        self.assertEqual(harness.broker.sessions["c"].inflight_count, 0)
        # The old connection's late connectionLost changes nothing.
        old.finish()
        self.assertIs(harness.broker.sessions["c"].link, new.protocol.connection)
        self.assertEqual(watcher.received(), [])

    def test_takeover_clean_session_discards(self) -> None:
        """A takeover with clean session 1 closes the old connection and starts afresh."""
        harness = BrokerHarness()
        old = self._subscriber_with_inflight(harness)
        new, connack = harness.connect("c", clean_start=True)
        self.assertTrue(old.closed_by_server)
        self.assertEqual(connack, Connack(False, 0))
        self.assertEqual(new.received(), [])
        self.assertEqual(harness.broker.sessions["c"].subscriptions, {})

    def test_takeover_level3(self) -> None:
        """A 3.1 client reconnecting (clean 0) while still connected takes over [MQTT-3.1.4-2]."""
        harness = BrokerHarness()
        old = self._subscriber_with_inflight(harness, level=3)
        new = harness.client(3)
        new.send(Connect("c", 3, False))
        packets = new.received()
        self.assertTrue(old.closed_by_server)
        self.assertEqual(packets[:1], [Connack(False, 0)])
        self.assertEqual(
            shape(packets), [("t", b"q1", 1, False, True), ("t", b"q2", 2, False, True)]
        )

    def test_takeover_level5_disconnect_reason(self) -> None:
        """At level 5 the old connection first gets DISCONNECT 0x8E (session taken over)."""
        harness = BrokerHarness()
        old = self._subscriber_with_inflight(harness, level=5, properties=_SESSION_EXPIRY)
        new, connack = harness.connect("c", level=5, clean_start=False)
        self.assertTrue(connack.session_present)
        self.assertEqual(old.received(), [Disconnect(ReasonCode.SESSION_TAKEN_OVER)])
        self.assertTrue(old.closed_by_server)
        self.assertEqual(len(shape(new.received())), 2)

    def test_takeover_across_levels(self) -> None:
        """A level 4 session taken over by a level 5 connection is re-sent at level 5."""
        harness = BrokerHarness()
        old = self._subscriber_with_inflight(harness)
        new, connack = harness.connect("c", level=5, clean_start=False, properties=_SESSION_EXPIRY)
        self.assertTrue(old.closed_by_server)
        self.assertTrue(connack.session_present)
        self.assertEqual(
            shape(new.received()), [("t", b"q1", 1, False, True), ("t", b"q2", 2, False, True)]
        )
