# -*- test-case-name: tests.test_mqtt5 -*-
"""
Tests for the MQTT 5 server features: session expiry, flow control (Receive
Maximum both ways), the client's Maximum Packet Size, inbound topic aliases,
message expiry, subscription identifiers, subscription options, the payload format
check and property pass-through, PUBACK/PUBREC/DISCONNECT reason codes, CONNACK
capabilities, and MQTT 5 clients mixed with 3.1 and 3.1.1 ones.

Deterministic: in-memory clients (L{mqttbroker.testing}), time only through the
harness clock. Each docstring cites the MQTT 5.0 normative statement (or, where
the rule has no statement number, the section) it checks.
"""

from __future__ import annotations

from dataclasses import replace

from twisted.trial.unittest import SynchronousTestCase

from mqttbroker.broker import BrokerConfig
from mqttbroker.codec import (
    MAX_PACKET_SIZE,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Properties,
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
    Unsubscribe,
    Will,
    encode,
)
from mqttbroker.session import SessionLimits
from mqttbroker.testing import BrokerHarness, FakeClient, subscribe
from mqttbroker.testing import publish_shape as shape

P = PropertyId
R = ReasonCode

NEVER = 0xFFFFFFFF

# -- helpers ----------------------------------------------------------------------------------


def connect5(
    harness: BrokerHarness,
    client_id: str = "",
    *,
    clean_start: bool = True,
    expiry: int | None = None,
    keep_alive: int = 0,
    will: Will | None = None,
    **properties: int,
) -> tuple[FakeClient, Connack]:
    """
    An MQTT 5 client that sent CONNECT, and its CONNACK. C{expiry} is the Session
    Expiry Interval (absent when None); other CONNECT properties by L{PropertyId}
    name in lower case, e.g. C{receive_maximum=2}.
    """
    props: Properties = {P[name.upper()]: value for name, value in properties.items()}
    if expiry is not None:
        props[P.SESSION_EXPIRY_INTERVAL] = expiry
    return harness.connect(
        client_id,
        level=5,
        clean_start=clean_start,
        keep_alive=keep_alive,
        will=will,
        properties=props,
    )


def subscribe5(
    client: FakeClient,
    *subscriptions: Subscription,
    packet_id: int = 1,
    subscription_id: int | None = None,
) -> list[int]:
    """MQTT 5 SUBSCRIBE with options; the SUBACK codes (what follows stays queued)."""
    props: Properties = {}
    if subscription_id is not None:
        props[P.SUBSCRIPTION_IDENTIFIER] = [subscription_id]
    client.send(Subscribe(packet_id, subscriptions, props))
    packets = client.received()
    suback = packets[0]
    assert isinstance(suback, Suback) and suback.packet_id == packet_id, packets
    client.keep(packets[1:])
    return list(suback.reason_codes)


def leave(client: FakeClient, expiry: int | None = None) -> None:
    """DISCONNECT (0x00, with a Session Expiry Interval unless None), then the close."""
    props: Properties = {} if expiry is None else {P.SESSION_EXPIRY_INTERVAL: expiry}
    client.send(Disconnect(0, props))
    client.finish()


def answers(client: FakeClient) -> list[Packet]:
    """
    What C{client} received, without Reason Strings: they are diagnostics whose
    text (and presence) is the server's choice (5.0 §3.4.2.2.2, §3.14.2.2.3).
    """
    packets = client.received()
    for i, packet in enumerate(packets):
        properties = getattr(packet, "properties", None)
        if properties and P.REASON_STRING in properties:
            kept = {k: v for k, v in properties.items() if k != P.REASON_STRING}
            packets[i] = replace(packet, properties=kept)  # type: ignore[type-var]
    return packets


def publishes(packets: list[Packet]) -> list[Publish]:
    """The PUBLISH packets among C{packets}."""
    return [p for p in packets if isinstance(p, Publish)]


def only_publish(testcase: SynchronousTestCase, client: FakeClient) -> Publish:
    """The one packet C{client} received, which must be a PUBLISH."""
    packets = client.received()
    testcase.assertEqual(len(packets), 1, packets)
    packet = packets[0]
    testcase.assertIsInstance(packet, Publish)
    assert isinstance(packet, Publish)
    return packet


def raw_v5_publish(topic: bytes, properties: bytes, payload: bytes, qos: int = 0) -> bytes:
    """An MQTT 5 PUBLISH built by hand (for what the encoder refuses to produce)."""
    body = len(topic).to_bytes(2, "big") + topic
    if qos:
        body += b"\x00\x01"
    body += bytes([len(properties)]) + properties + payload
    assert len(body) < 128
    return bytes([0x30 | (qos << 1), len(body)]) + body


# -- the harness ------------------------------------------------------------------------------


class HarnessClockTests(SynchronousTestCase):
    """The test harness drives the broker's timers with its clock."""

    def test_harness_clock_drives_session_expiry(self) -> None:
        """
        C{harness.clock.advance} past a Session Expiry Interval discards the session
        [MQTT-3.1.2-23]: the broker runs on the harness clock, not the global reactor.
        """
        harness = BrokerHarness()
        self.assertIs(harness.broker.clock, harness.clock)
        client, _ = connect5(harness, "s", expiry=10)
        leave(client)
        harness.clock.advance(11)
        _, connack = connect5(harness, "s", clean_start=False)
        self.assertFalse(connack.session_present)


# -- Session Expiry Interval ------------------------------------------------------------------


class SessionExpiryTests(SynchronousTestCase):
    """A v5 session lasts its Session Expiry Interval after the connection ends."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.publisher, _ = connect5(self.harness, "pub")

    def _persistent_subscriber(self, expiry: int | None) -> None:
        """Client "s" with this expiry, subscribed to t at QoS 1, disconnected."""
        client, connack = connect5(self.harness, "s", expiry=expiry)
        self.assertFalse(connack.session_present)
        self.assertEqual(subscribe(client, ("t", 1)), [1])
        leave(client)

    def _route(self, payload: bytes = b"m") -> int:
        """Publish QoS 1 to t; the PUBACK reason code (0x10 when nothing matched)."""
        self.publisher.send(Publish("t", payload, 1, packet_id=1))
        (ack,) = answers(self.publisher)
        assert isinstance(ack, Puback)
        return ack.reason_code

    def _reconnect(self) -> tuple[FakeClient, bool]:
        client, connack = connect5(self.harness, "s", clean_start=False, expiry=NEVER)
        return client, connack.session_present

    def test_session_kept_before_expiry(self) -> None:
        """
        Until the interval has passed the session is kept: reconnecting with Clean
        Start 0 gets Session Present 1 and the subscription still works
        [MQTT-3.1.2-23], [MQTT-3.2.2-3].
        """
        self._persistent_subscriber(10)
        self.harness.clock.advance(9.9)
        self.assertIn("s", self.harness.broker.sessions)
        client, present = self._reconnect()
        self.assertTrue(present)
        self.assertEqual(self._route(b"after"), R.SUCCESS)
        self.assertEqual(shape(client.received()), [("t", b"after", 1, False, False)])

    def test_session_discarded_after_expiry(self) -> None:
        """
        Once the interval has passed the session is discarded: Session Present 0 and
        no subscription left (a QoS 1 PUBLISH to its topic gets 0x10) [MQTT-3.1.2-23].
        """
        self._persistent_subscriber(10)
        self.harness.clock.advance(10)
        self.assertNotIn("s", self.harness.broker.sessions)
        self.assertEqual(self._route(), R.NO_MATCHING_SUBSCRIBERS)
        client, present = self._reconnect()
        self.assertFalse(present)
        self.assertEqual(self.harness.broker.sessions["s"].subscriptions, {})
        self.assertEqual(answers(client), [])

    def test_queued_messages_discarded_with_session(self) -> None:
        """Messages queued for an expired session go with it [MQTT-3.1.2-23]."""
        self._persistent_subscriber(10)
        self.assertEqual(self._route(b"queued"), R.SUCCESS)
        self.harness.clock.advance(11)
        client, present = self._reconnect()
        self.assertFalse(present)
        self.assertEqual(answers(client), [])

    def test_reconnect_cancels_expiry(self) -> None:
        """
        Reconnecting in time cancels the expiry: the session survives while
        connected, and the interval starts again from the next disconnection
        [MQTT-3.1.2-23].
        """
        self._persistent_subscriber(10)
        self.harness.clock.advance(8)
        client, connack = connect5(self.harness, "s", clean_start=False, expiry=10)
        self.assertTrue(connack.session_present)
        self.harness.clock.advance(100)
        self.assertIn("s", self.harness.broker.sessions)
        leave(client)
        self.harness.clock.advance(8)
        client, present = self._reconnect()
        self.assertTrue(present)
        self.assertEqual(self._route(), R.SUCCESS)

    def test_zero_ends_with_connection(self) -> None:
        """
        A Session Expiry Interval of 0 (or none) ends the session with the network
        connection (5.0 §3.1.2.11.2).
        """
        for expiry in (None, 0):
            with self.subTest(expiry=expiry):
                self.setUp()
                self._persistent_subscriber(expiry)
                self.assertNotIn("s", self.harness.broker.sessions)
                self.assertEqual(self._route(), R.NO_MATCHING_SUBSCRIBERS)
                _, present = self._reconnect()
                self.assertFalse(present)

    def test_never_expires(self) -> None:
        """0xFFFFFFFF means the session does not expire (5.0 §3.1.2.11.2)."""
        self._persistent_subscriber(NEVER)
        self.harness.clock.advance(10 * 365 * 86400)
        self.assertEqual(self.harness.clock.getDelayedCalls(), [])
        self.assertEqual(self._route(b"late"), R.SUCCESS)
        client, present = self._reconnect()
        self.assertTrue(present)
        self.assertEqual(shape(client.received()), [("t", b"late", 1, False, False)])

    def test_disconnect_lengthens_interval(self) -> None:
        """A DISCONNECT with a Session Expiry Interval replaces the CONNECT's (5.0 §3.14.2.2.2)."""
        client, _ = connect5(self.harness, "s", expiry=10)
        subscribe(client, ("t", 1))
        leave(client, expiry=100)
        self.harness.clock.advance(99)
        self.assertIn("s", self.harness.broker.sessions)
        self.harness.clock.advance(1)
        self.assertNotIn("s", self.harness.broker.sessions)

    def test_disconnect_shortens_interval_to_zero(self) -> None:
        """A DISCONNECT with Session Expiry Interval 0 ends the session now (5.0 §3.14.2.2.2)."""
        client, _ = connect5(self.harness, "s", expiry=100)
        subscribe(client, ("t", 1))
        leave(client, expiry=0)
        self.assertNotIn("s", self.harness.broker.sessions)
        _, present = self._reconnect()
        self.assertFalse(present)

    def test_disconnect_nonzero_after_zero_is_protocol_error(self) -> None:
        """
        CONNECT with Session Expiry Interval 0, then DISCONNECT with a non-zero one:
        a Protocol Error, answered with DISCONNECT 0x82 (5.0 §3.14.2.2.2); the server's
        DISCONNECT carries no Session Expiry Interval [MQTT-3.14.2-2], and the session
        still ends with the connection.
        """
        client, _ = connect5(self.harness, "s", expiry=0)
        subscribe(client, ("t", 1))
        client.send(Disconnect(0, {P.SESSION_EXPIRY_INTERVAL: 60}))
        self.assertEqual(answers(client), [Disconnect(R.PROTOCOL_ERROR)])
        self.assertTrue(client.closed_by_server)
        client.finish()
        self.assertNotIn("s", self.harness.broker.sessions)
        _, present = self._reconnect()
        self.assertFalse(present)

    def test_clean_start_discards_session(self) -> None:
        """
        Clean Start 1 discards an existing session (subscriptions, queued messages)
        and CONNACK says Session Present 0 [MQTT-3.1.2-4], [MQTT-3.2.2-2].
        """
        self._persistent_subscriber(100)
        self.assertEqual(self._route(b"queued"), R.SUCCESS)
        client, connack = connect5(self.harness, "s", clean_start=True, expiry=100)
        self.assertFalse(connack.session_present)
        self.assertEqual(answers(client), [])
        self.assertEqual(self._route(), R.NO_MATCHING_SUBSCRIBERS)

    def test_level4_persistent_session_does_not_expire(self) -> None:
        """
        A 3.1.1 Clean Session 0 session has no expiry interval: it outlives any
        clock advance (the 5.0 broker keeps 3.1.1 semantics, 5.0 §3.1.2.11.2 does not
        apply).
        """
        client, _ = self.harness.connect("old", level=4, clean_start=False)
        subscribe(client, ("t", 1))
        client.send(Disconnect())
        client.finish()
        self.harness.clock.advance(10 * 365 * 86400)
        _, connack = self.harness.connect("old", level=4, clean_start=False)
        self.assertTrue(connack.session_present)


# -- flow control -----------------------------------------------------------------------------


class ReceiveMaximumTests(SynchronousTestCase):
    """The client's Receive Maximum bounds what the server has in flight to it."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.publisher, _ = connect5(self.harness, "pub")

    def _send(self, qos: int, *payloads: bytes) -> None:
        for i, payload in enumerate(payloads, 1):
            self.publisher.send(Publish("t", payload, qos, packet_id=i))
            if qos == 2:
                self.publisher.send(Pubrel(i))
        self.publisher.received()

    def test_qos1_bounded(self) -> None:
        """
        Receive Maximum 2: only two QoS 1 PUBLISH until a PUBACK, then one more per
        PUBACK [MQTT-3.3.4-9].
        """
        client, _ = connect5(self.harness, "c", receive_maximum=2)
        subscribe(client, ("t", 1))
        self._send(1, b"1", b"2", b"3", b"4")
        first = publishes(client.received())
        self.assertEqual([p.payload for p in first], [b"1", b"2"])
        client.send(Puback(first[0].packet_id))  # type: ignore[arg-type]
        self.assertEqual([p.payload for p in publishes(client.received())], [b"3"])
        client.send(Puback(first[1].packet_id))  # type: ignore[arg-type]
        self.assertEqual([p.payload for p in publishes(client.received())], [b"4"])

    def test_qos2_slot_held_until_pubcomp(self) -> None:
        """
        Receive Maximum 1 with QoS 2: PUBREC (success) does not free the slot,
        PUBCOMP does [MQTT-3.3.4-9].
        """
        client, _ = connect5(self.harness, "c", receive_maximum=1)
        subscribe(client, ("t", 2))
        self._send(2, b"1", b"2")
        (first,) = publishes(client.received())
        pid = first.packet_id
        assert pid is not None
        client.send(Pubrec(pid))
        self.assertEqual(answers(client), [Pubrel(pid)])
        client.send(Pubcomp(pid))
        self.assertEqual([p.payload for p in publishes(client.received())], [b"2"])

    def test_pubrec_error_frees_slot(self) -> None:
        """
        A PUBREC with a Reason Code of 0x80 or more ends the QoS 2 exchange: no
        PUBREL follows [MQTT-4.3.3-4], and the Receive Maximum slot is free for the
        next message [MQTT-3.3.4-9] (5.0 §4.9).
        """
        client, _ = connect5(self.harness, "c", receive_maximum=1)
        subscribe(client, ("t", 2))
        self._send(2, b"1", b"2")
        (first,) = publishes(client.received())
        assert first.packet_id is not None
        client.send(Pubrec(first.packet_id, R.UNSPECIFIED_ERROR))
        got = answers(client)
        self.assertEqual(
            [(type(p).__name__, getattr(p, "payload", None)) for p in got],
            [("Publish", b"2")],
        )

    def test_qos0_not_bounded(self) -> None:
        """
        QoS 0 messages are not counted by the Receive Maximum: they still go while
        the QoS 1 window is full [MQTT-3.3.4-10] (5.0 §4.9).
        """
        client, _ = connect5(self.harness, "c", receive_maximum=1)
        subscribe(client, ("t", 1))
        self._send(1, b"q1")
        self.publisher.send(Publish("t", b"q0", 0))
        self.assertEqual([p.payload for p in publishes(client.received())], [b"q1", b"q0"])

    def test_window_applies_to_queued_messages_on_reconnect(self) -> None:
        """
        Messages queued while offline are sent on reconnect no faster than the new
        connection's Receive Maximum allows [MQTT-3.3.4-9].
        """
        client, _ = connect5(self.harness, "c", expiry=100)
        subscribe(client, ("t", 1))
        leave(client)
        self._send(1, b"1", b"2", b"3")
        client, _ = connect5(self.harness, "c", clean_start=False, expiry=100, receive_maximum=2)
        self.assertEqual([p.payload for p in publishes(client.received())], [b"1", b"2"])


class ServerReceiveMaximumTests(SynchronousTestCase):
    """The server's Receive Maximum: announced, and enforced for QoS 2."""

    def test_announced(self) -> None:
        """
        BrokerConfig(receive_maximum=2) is sent as Receive Maximum in CONNACK; the
        default 65535 is left out (5.0 §3.2.2.3.3).
        """
        _, connack = connect5(BrokerHarness(BrokerConfig(receive_maximum=2)), "c")
        self.assertEqual(connack.properties.get(P.RECEIVE_MAXIMUM), 2)
        _, connack = connect5(BrokerHarness(), "c")
        self.assertNotIn(P.RECEIVE_MAXIMUM, connack.properties)

    def test_exceeded_with_qos2(self) -> None:
        """
        More QoS 2 messages awaiting PUBREL than the Receive Maximum: DISCONNECT 0x93
        and the close [MQTT-3.3.4-7] (5.0 §4.9); the excess message is not routed.
        """
        harness = BrokerHarness(BrokerConfig(receive_maximum=2))
        watcher, _ = connect5(harness, "w")
        subscribe(watcher, ("t", 2))
        client, _ = connect5(harness, "c")
        client.send(Publish("t", b"1", 2, packet_id=1), Publish("t", b"2", 2, packet_id=2))
        self.assertEqual(answers(client), [Pubrec(1), Pubrec(2)])
        client.send(Publish("t", b"3", 2, packet_id=3))
        self.assertEqual(answers(client), [Disconnect(R.RECEIVE_MAXIMUM_EXCEEDED)])
        self.assertTrue(client.closed_by_server)
        self.assertEqual([p.payload for p in publishes(watcher.received())], [b"1", b"2"])

    def test_pubrel_frees_slot(self) -> None:
        """After PUBREL a slot is free again; a re-sent (DUP) PUBLISH of an id awaiting
        PUBREL does not count twice [MQTT-3.3.4-7]."""
        harness = BrokerHarness(BrokerConfig(receive_maximum=2))
        client, _ = connect5(harness, "c")
        client.send(Publish("t", b"1", 2, packet_id=1), Publish("t", b"2", 2, packet_id=2))
        client.send(Publish("t", b"2", 2, dup=True, packet_id=2))
        client.send(Pubrel(1))
        client.send(Publish("t", b"3", 2, packet_id=3))
        codes = [(type(p).__name__, p.packet_id) for p in client.received()]  # type: ignore[union-attr]
        self.assertEqual(
            codes,
            [("Pubrec", 1), ("Pubrec", 2), ("Pubrec", 2), ("Pubcomp", 1), ("Pubrec", 3)],
        )
        self.assertFalse(client.closed_by_server)

    def test_qos1_not_counted(self) -> None:
        """QoS 1 messages are acknowledged at once and never reach the limit (5.0 §4.9)."""
        harness = BrokerHarness(BrokerConfig(receive_maximum=1))
        client, _ = connect5(harness, "c")
        for pid in (1, 2, 3):
            client.send(Publish("t", b"x", 1, packet_id=pid))
        self.assertEqual(len(client.received()), 3)
        self.assertFalse(client.closed_by_server)


# -- the client's Maximum Packet Size ---------------------------------------------------------


class ClientMaximumPacketSizeTests(SynchronousTestCase):
    """Messages larger than the client accepts are discarded as if delivered."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.publisher, _ = connect5(self.harness, "pub")

    def test_qos0_too_large_discarded(self) -> None:
        """A QoS 0 message over the client's Maximum Packet Size is not sent [MQTT-3.1.2-24],
        [MQTT-3.1.2-25]; the next small one arrives."""
        client, _ = connect5(self.harness, "c", maximum_packet_size=50)
        subscribe(client, ("t", 0))
        self.publisher.send(Publish("t", b"x" * 100), Publish("t", b"small"))
        self.assertEqual(shape(client.received()), [("t", b"small", 0, False, False)])
        self.assertFalse(client.closed_by_server)

    def test_qos1_no_packet_id_consumed(self) -> None:
        """
        A QoS 1 message over the limit is treated as delivered: no packet identifier
        is used for it and nothing stays in flight [MQTT-3.1.2-25].
        """
        client, _ = connect5(self.harness, "c", maximum_packet_size=50)
        subscribe(client, ("t", 1))
        self.publisher.send(Publish("t", b"x" * 100, 1, packet_id=1))
        self.publisher.send(Publish("t", b"small", 1, packet_id=2))
        self.assertEqual(answers(self.publisher), [Puback(1), Puback(2)])
        (small,) = publishes(client.received())
        self.assertEqual((small.payload, small.packet_id), (b"small", 1))
        self.assertEqual(self.harness.broker.sessions["c"].inflight_count, 1)

    def test_limit_counts_whole_packet(self) -> None:
        """
        The limit is the whole packet, fixed header included: a PUBLISH of exactly
        the Maximum Packet Size is sent, one byte more is not [MQTT-3.1.2-24].
        """
        size = len(encode(Publish("t", b"x" * 20, 1, packet_id=1), 5))
        client, _ = connect5(self.harness, "c", maximum_packet_size=size)
        subscribe(client, ("t", 1))
        self.publisher.send(Publish("t", b"x" * 20, 1, packet_id=1))
        self.publisher.send(Publish("t", b"x" * 21, 1, packet_id=2))
        self.assertEqual([len(p.payload) for p in publishes(client.received())], [20])

    def test_retained_too_large_discarded(self) -> None:
        """A retained message over the limit is not sent on subscribe either [MQTT-3.1.2-24]."""
        self.publisher.send(Publish("r", b"x" * 100, retain=True))
        client, _ = connect5(self.harness, "c", maximum_packet_size=50)
        self.assertEqual(subscribe(client, ("r", 0)), [0])
        self.assertEqual(answers(client), [])


# -- topic aliases ----------------------------------------------------------------------------


class TopicAliasTests(SynchronousTestCase):
    """Inbound topic aliases (the server never sends aliases)."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.watcher, _ = connect5(self.harness, "w")
        subscribe(self.watcher, ("#", 0))
        self.client, self.connack = connect5(self.harness, "c")

    def test_connack_topic_alias_maximum(self) -> None:
        """CONNACK carries Topic Alias Maximum, 10 by default (5.0 §3.2.2.3.8)."""
        self.assertEqual(self.connack.properties.get(P.TOPIC_ALIAS_MAXIMUM), 10)
        _, connack = connect5(BrokerHarness(BrokerConfig(topic_alias_maximum=3)), "x")
        self.assertEqual(connack.properties.get(P.TOPIC_ALIAS_MAXIMUM), 3)

    def test_set_then_use(self) -> None:
        """
        A PUBLISH with topic and alias sets the alias; one with an empty topic and
        the alias uses it [MQTT-3.3.2-12]; subscribers see the topic and no alias
        (aliases are per connection).
        """
        self.client.send(Publish("a/b", b"1", properties={P.TOPIC_ALIAS: 1}))
        self.client.send(Publish("", b"2", properties={P.TOPIC_ALIAS: 1}))
        got = publishes(self.watcher.received())
        self.assertEqual([(p.topic, p.payload, p.properties) for p in got],
                         [("a/b", b"1", {}), ("a/b", b"2", {})])  # fmt: skip
        self.assertFalse(self.client.closed_by_server)

    def test_alias_redefined(self) -> None:
        """An alias set again with another topic maps to the new topic (5.0 §3.3.2.3.4)."""
        self.client.send(Publish("a", b"1", properties={P.TOPIC_ALIAS: 2}))
        self.client.send(Publish("b", b"2", properties={P.TOPIC_ALIAS: 2}))
        self.client.send(Publish("", b"3", properties={P.TOPIC_ALIAS: 2}))
        self.assertEqual(
            [(p.topic, p.payload) for p in publishes(self.watcher.received())],
            [("a", b"1"), ("b", b"2"), ("b", b"3")],
        )

    def test_alias_keeps_other_properties(self) -> None:
        """Only the Topic Alias is removed; other properties are forwarded [MQTT-3.3.2-17]."""
        props = {P.TOPIC_ALIAS: 1, P.USER_PROPERTY: [("k", "v")]}
        self.client.send(Publish("a", b"1", properties=props))
        self.assertEqual(
            only_publish(self, self.watcher).properties, {P.USER_PROPERTY: [("k", "v")]}
        )

    def test_highest_alias_accepted(self) -> None:
        """The server accepts every alias from 1 to its Topic Alias Maximum [MQTT-3.3.2-12]."""
        self.client.send(Publish("a", b"1", properties={P.TOPIC_ALIAS: 10}))
        self.client.send(Publish("", b"2", properties={P.TOPIC_ALIAS: 10}))
        self.assertEqual(len(publishes(self.watcher.received())), 2)
        self.assertFalse(self.client.closed_by_server)

    def test_unknown_alias(self) -> None:
        """An empty topic with an alias never set: DISCONNECT 0x82 (5.0 §3.3.2.3.4)."""
        self.client.send(Publish("", b"x", properties={P.TOPIC_ALIAS: 4}))
        self.assertEqual(answers(self.client), [Disconnect(R.PROTOCOL_ERROR)])
        self.assertTrue(self.client.closed_by_server)
        self.assertEqual(answers(self.watcher), [])

    def test_alias_not_carried_to_next_connection(self) -> None:
        """Aliases do not survive the network connection, even with a kept session
        [MQTT-3.3.2-7]."""
        client, _ = connect5(self.harness, "p", expiry=100)
        client.send(Publish("a", b"1", properties={P.TOPIC_ALIAS: 1}))
        leave(client)
        client, connack = connect5(self.harness, "p", clean_start=False, expiry=100)
        self.assertTrue(connack.session_present)
        self.watcher.received()
        client.send(Publish("", b"2", properties={P.TOPIC_ALIAS: 1}))
        self.assertEqual(answers(client), [Disconnect(R.PROTOCOL_ERROR)])
        self.assertEqual(answers(self.watcher), [])

    def test_alias_above_maximum(self) -> None:
        """An alias above the server's Topic Alias Maximum: DISCONNECT 0x94 [MQTT-3.3.2-9]."""
        self.client.send(Publish("a", b"x", properties={P.TOPIC_ALIAS: 11}))
        self.assertEqual(answers(self.client), [Disconnect(R.TOPIC_ALIAS_INVALID)])
        self.assertTrue(self.client.closed_by_server)
        self.assertEqual(answers(self.watcher), [])

    def test_aliases_disabled(self) -> None:
        """
        With topic_alias_maximum=0 CONNACK has no Topic Alias Maximum (meaning 0) and
        any alias gets DISCONNECT 0x94 (5.0 §3.2.2.3.8, [MQTT-3.3.2-9]).
        """
        harness = BrokerHarness(BrokerConfig(topic_alias_maximum=0))
        client, connack = connect5(harness, "c")
        self.assertNotIn(P.TOPIC_ALIAS_MAXIMUM, connack.properties)
        client.send(Publish("a", b"x", properties={P.TOPIC_ALIAS: 1}))
        self.assertEqual(answers(client), [Disconnect(R.TOPIC_ALIAS_INVALID)])

    def test_alias_zero(self) -> None:
        """Topic Alias 0 is refused by the decoder with DISCONNECT 0x94 [MQTT-3.3.2-8]."""
        self.client.send_bytes(raw_v5_publish(b"a", b"\x23\x00\x00", b"x"))
        self.assertEqual(answers(self.client), [Disconnect(R.TOPIC_ALIAS_INVALID)])
        self.assertTrue(self.client.closed_by_server)
        self.assertEqual(answers(self.watcher), [])

    def test_level4_subscriber_gets_resolved_topic(self) -> None:
        """A 3.1.1 subscriber gets the aliased message with its full topic name."""
        old, _ = self.harness.connect("old", level=4)
        subscribe(old, ("a/b", 0))
        self.client.send(Publish("a/b", b"1", properties={P.TOPIC_ALIAS: 1}))
        self.client.send(Publish("", b"2", properties={P.TOPIC_ALIAS: 1}))
        self.assertEqual(
            shape(old.received()), [("a/b", b"1", 0, False, False), ("a/b", b"2", 0, False, False)]
        )


# -- Message Expiry Interval ------------------------------------------------------------------


class MessageExpiryTests(SynchronousTestCase):
    """Messages with a Message Expiry Interval."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.publisher, _ = connect5(self.harness, "pub")

    def _offline_subscriber(self, level: int = 5) -> None:
        if level == 5:
            client, _ = connect5(self.harness, "s", expiry=NEVER)
        else:
            client, _ = self.harness.connect("s", level=level, clean_start=False)
        subscribe(client, ("t", 1))
        client.send(Disconnect())
        client.finish()

    def _publish(self, interval: int, payload: bytes = b"m", **more: object) -> None:
        props: Properties = {P.MESSAGE_EXPIRY_INTERVAL: interval}
        self.publisher.send(Publish("t", payload, 1, packet_id=1, properties=props, **more))  # type: ignore[arg-type]
        self.assertEqual(answers(self.publisher), [Puback(1)])

    def _back(self, level: int = 5) -> list[Publish]:
        if level == 5:
            client, connack = connect5(self.harness, "s", clean_start=False, expiry=NEVER)
        else:
            client, connack = self.harness.connect("s", level=level, clean_start=False)
        self.assertTrue(connack.session_present)
        return publishes(client.received())

    def test_expired_while_queued(self) -> None:
        """A queued message whose interval passed is not delivered [MQTT-3.3.2-5]."""
        self._offline_subscriber()
        self._publish(10, b"stale")
        self.harness.clock.advance(10)
        self.assertEqual(self._back(), [])

    def test_forwarded_with_remaining_interval(self) -> None:
        """
        Published with 60, 20 s offline: delivered with Message Expiry Interval 40
        [MQTT-3.3.2-6].
        """
        self._offline_subscriber()
        self._publish(60)
        self.harness.clock.advance(20)
        (message,) = self._back()
        self.assertEqual(message.properties.get(P.MESSAGE_EXPIRY_INTERVAL), 40)

    def test_only_expired_dropped(self) -> None:
        """Of two queued messages only the one whose interval passed is dropped [MQTT-3.3.2-5]."""
        self._offline_subscriber()
        self._publish(5, b"short")
        self._publish(50, b"long")
        self.harness.clock.advance(6)
        got = self._back()
        self.assertEqual(
            [(p.payload, p.properties.get(P.MESSAGE_EXPIRY_INTERVAL)) for p in got],
            [(b"long", 44)],
        )

    def test_online_subscriber_gets_interval(self) -> None:
        """An online subscriber gets the interval as published (no time spent) [MQTT-3.3.2-6]."""
        client, _ = connect5(self.harness, "s")
        subscribe(client, ("t", 1))
        self._publish(60)
        self.assertEqual(only_publish(self, client).properties, {P.MESSAGE_EXPIRY_INTERVAL: 60})

    def test_retained_message_expiry(self) -> None:
        """
        A retained message is sent to new subscribers with the interval left
        [MQTT-3.3.2-6], and not at all once it expired [MQTT-3.3.2-5].
        """
        props: Properties = {P.MESSAGE_EXPIRY_INTERVAL: 60}
        self.publisher.send(Publish("r", b"kept", 0, retain=True, properties=props))
        self.harness.clock.advance(20)
        first, _ = connect5(self.harness, "a")
        subscribe(first, ("r", 0))
        message = only_publish(self, first)
        self.assertEqual(
            (message.retain, message.properties), (True, {P.MESSAGE_EXPIRY_INTERVAL: 40})
        )
        self.harness.clock.advance(40)
        second, _ = connect5(self.harness, "b")
        subscribe(second, ("r", 0))
        self.assertEqual(answers(second), [])

    def test_expired_behind_receive_maximum(self) -> None:
        """
        Online, but waiting behind a full Receive Maximum window: a message whose
        interval passes meanwhile is not sent [MQTT-3.3.2-5]; one still valid goes with
        the time spent deducted [MQTT-3.3.2-6].
        """
        client, _ = connect5(self.harness, "s", receive_maximum=1)
        subscribe(client, ("t", 1))
        self._publish(100, b"first")
        self._publish(5, b"short")
        self._publish(60, b"long")
        (first,) = publishes(client.received())
        self.harness.clock.advance(20)
        client.send(Puback(first.packet_id))  # type: ignore[arg-type]
        got = publishes(client.received())
        self.assertEqual(
            [(p.payload, p.properties.get(P.MESSAGE_EXPIRY_INTERVAL)) for p in got],
            [(b"long", 40)],
        )

    def test_inflight_resent_with_remaining_interval(self) -> None:
        """
        A QoS 1 message sent but not acknowledged is sent again on reconnect (DUP)
        with the interval left [MQTT-3.3.2-6], [MQTT-4.4.0-1].
        """
        client, _ = connect5(self.harness, "s", expiry=NEVER)
        subscribe(client, ("t", 1))
        self._publish(60, b"unacked")
        self.assertEqual(len(publishes(client.received())), 1)
        client.drop()
        self.harness.clock.advance(20)
        (again,) = self._back()
        self.assertEqual(
            (again.payload, again.dup, again.properties.get(P.MESSAGE_EXPIRY_INTERVAL)),
            (b"unacked", True, 40),
        )

    def test_level4_subscriber_no_properties(self) -> None:
        """
        A 3.1.1 subscriber gets the message as a plain 3.1.1 PUBLISH (its decoder
        reads the exact payload, so no properties were inserted).
        """
        self._offline_subscriber(level=4)
        self._publish(60, b"plain")
        self.harness.clock.advance(20)
        got = self._back(level=4)
        self.assertEqual([(p.topic, p.payload, p.properties) for p in got], [("t", b"plain", {})])


# -- Subscription Identifiers -----------------------------------------------------------------


class SubscriptionIdentifierTests(SynchronousTestCase):
    """Subscription Identifiers on messages sent to subscribers."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.client, self.connack = connect5(self.harness, "c")
        self.publisher, _ = connect5(self.harness, "pub")

    def _ids(self) -> list[object]:
        return [
            p.properties.get(P.SUBSCRIPTION_IDENTIFIER) for p in publishes(self.client.received())
        ]

    def test_available(self) -> None:
        """CONNACK does not say Subscription Identifiers are unavailable (5.0 §3.2.2.3.12)."""
        self.assertEqual(self.connack.properties.get(P.SUBSCRIPTION_IDENTIFIER_AVAILABLE, 1), 1)

    def test_carried(self) -> None:
        """A message matching a subscription made with an identifier carries it [MQTT-3.3.4-3]."""
        subscribe5(self.client, Subscription("a/+", 1), subscription_id=7)
        self.publisher.send(Publish("a/b", b"x"))
        self.assertEqual(self._ids(), [[7]])

    def test_large_identifier(self) -> None:
        """The largest identifier, 268435455, is carried unchanged [MQTT-3.3.4-3]."""
        subscribe5(self.client, Subscription("t", 0), subscription_id=268435455)
        self.publisher.send(Publish("t", b"x"))
        self.assertEqual(self._ids(), [[268435455]])

    def test_overlapping_subscriptions(self) -> None:
        """
        Two overlapping subscriptions with identifiers 1 and 2: one message carrying
        both [MQTT-3.3.4-3], [MQTT-3.3.4-4] (order is not significant).
        """
        subscribe5(self.client, Subscription("a/+", 1), subscription_id=1)
        subscribe5(self.client, Subscription("a/#", 0), packet_id=2, subscription_id=2)
        self.publisher.send(Publish("a/b", b"x", 1, packet_id=1))
        got = publishes(self.client.received())
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0].qos, 1)
        self.assertEqual(sorted(got[0].properties[P.SUBSCRIPTION_IDENTIFIER]), [1, 2])  # type: ignore[type-var]

    def test_overlapping_one_without_identifier(self) -> None:
        """Only the identifiers that exist are sent [MQTT-3.3.4-4]."""
        subscribe5(self.client, Subscription("a/+", 0), subscription_id=3)
        subscribe5(self.client, Subscription("a/#", 0), packet_id=2)
        self.publisher.send(Publish("a/b", b"x"))
        self.assertEqual(self._ids(), [[3]])

    def test_no_identifier(self) -> None:
        """A subscription made without an identifier gets messages without one."""
        subscribe5(self.client, Subscription("t", 0))
        self.publisher.send(Publish("t", b"x"))
        self.assertEqual(self._ids(), [None])

    def test_replaced_subscription_drops_identifier(self) -> None:
        """
        Subscribing again to the same filter without an identifier replaces the
        subscription, identifier included (5.0 §3.8.2.1.2).
        """
        subscribe5(self.client, Subscription("t", 0), subscription_id=5)
        subscribe5(self.client, Subscription("t", 0), packet_id=2)
        self.publisher.send(Publish("t", b"x"))
        self.assertEqual(self._ids(), [None])

    def test_kept_for_queued_messages(self) -> None:
        """A message queued for an offline session still carries the identifier [MQTT-3.3.4-3]."""
        client, _ = connect5(self.harness, "s", expiry=NEVER)
        subscribe5(client, Subscription("t", 1), subscription_id=9)
        leave(client)
        self.publisher.send(Publish("t", b"x", 1, packet_id=1))
        client, _ = connect5(self.harness, "s", clean_start=False, expiry=NEVER)
        (message,) = publishes(client.received())
        self.assertEqual(message.properties.get(P.SUBSCRIPTION_IDENTIFIER), [9])

    def test_retained_on_subscribe_carries_identifier(self) -> None:
        """
        A retained message sent because of a subscription made with an identifier
        carries that identifier [MQTT-3.3.4-3].
        """
        self.publisher.send(Publish("r", b"kept", retain=True))
        subscribe5(self.client, Subscription("r", 0), subscription_id=11)
        (message,) = publishes(self.client.received())
        self.assertEqual(message.properties.get(P.SUBSCRIPTION_IDENTIFIER), [11])

    def test_client_publish_with_identifier(self) -> None:
        """A client PUBLISH carrying a Subscription Identifier: DISCONNECT 0x82 [MQTT-3.3.4-6]."""
        subscribe5(self.client, Subscription("t", 0))
        self.publisher.send(Publish("t", b"x", properties={P.SUBSCRIPTION_IDENTIFIER: [5]}))
        self.assertEqual(answers(self.publisher), [Disconnect(R.PROTOCOL_ERROR)])
        self.assertTrue(self.publisher.closed_by_server)
        self.assertEqual(answers(self.client), [])


# -- subscription options ---------------------------------------------------------------------


class SubscriptionOptionTests(SynchronousTestCase):
    """No Local, Retain As Published, Retain Handling."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.client, _ = connect5(self.harness, "c")
        self.publisher, _ = connect5(self.harness, "pub")

    def test_no_local_qos1_no_matching_subscribers(self) -> None:
        """
        A client's own message is not sent back to its No Local subscription
        [MQTT-3.8.3-3]; when that was the only match the PUBACK says 0x10.
        """
        subscribe5(self.client, Subscription("t", 1, no_local=True))
        self.client.send(Publish("t", b"mine", 1, packet_id=1))
        self.assertEqual(answers(self.client), [Puback(1, R.NO_MATCHING_SUBSCRIBERS)])

    def test_no_local_other_subscribers_served(self) -> None:
        """No Local only concerns the publishing client's own subscription [MQTT-3.8.3-3]."""
        subscribe5(self.client, Subscription("t", 0, no_local=True))
        subscribe5(self.publisher, Subscription("t", 0))
        self.client.send(Publish("t", b"mine"))
        self.assertEqual(answers(self.client), [])
        self.assertEqual(shape(self.publisher.received()), [("t", b"mine", 0, False, False)])

    def test_retain_as_published_0_clears_flag(self) -> None:
        """Retain As Published 0: forwarded with RETAIN 0 [MQTT-3.3.1-12]."""
        subscribe5(self.client, Subscription("q", 0))
        self.publisher.send(Publish("q", b"v", retain=True))
        self.assertEqual(shape(self.client.received()), [("q", b"v", 0, False, False)])

    def test_retain_as_published_1_keeps_flag(self) -> None:
        """Retain As Published 1: forwarded with the RETAIN flag as published [MQTT-3.3.1-13]."""
        subscribe5(self.client, Subscription("q", 1, retain_as_published=True))
        self.publisher.send(Publish("q", b"r", retain=True), Publish("q", b"n"))
        self.assertEqual(
            shape(self.client.received()),
            [("q", b"r", 0, True, False), ("q", b"n", 0, False, False)],
        )

    def _retained(self) -> None:
        self.publisher.send(Publish("r", b"kept", retain=True))

    def test_retain_handling_0_every_subscribe(self) -> None:
        """Retain Handling 0: retained messages on every SUBSCRIBE, new or not [MQTT-3.3.1-9]."""
        self._retained()
        for pid in (1, 2):
            subscribe5(self.client, Subscription("r", 0, retain_handling=0), packet_id=pid)
            self.assertEqual(shape(self.client.received()), [("r", b"kept", 0, True, False)])

    def test_retain_handling_1_new_only(self) -> None:
        """
        Retain Handling 1: retained messages only when the subscription did not exist
        [MQTT-3.3.1-10]; after UNSUBSCRIBE it is new again.
        """
        self._retained()
        subscribe5(self.client, Subscription("r", 0, retain_handling=1))
        self.assertEqual(shape(self.client.received()), [("r", b"kept", 0, True, False)])
        subscribe5(self.client, Subscription("r", 1, retain_handling=1), packet_id=2)
        self.assertEqual(answers(self.client), [])
        self.client.send(Unsubscribe(3, ("r",)))
        self.client.received()
        subscribe5(self.client, Subscription("r", 0, retain_handling=1), packet_id=4)
        self.assertEqual(shape(self.client.received()), [("r", b"kept", 0, True, False)])

    def test_retain_handling_1_kept_session(self) -> None:
        """A subscription kept in the session is not new: Retain Handling 1 sends nothing
        [MQTT-3.3.1-10]."""
        client, _ = connect5(self.harness, "s", expiry=NEVER)
        subscribe5(client, Subscription("r", 0))
        leave(client)
        self._retained()
        client, _ = connect5(self.harness, "s", clean_start=False, expiry=NEVER)
        subscribe5(client, Subscription("r", 0, retain_handling=1))
        self.assertEqual(answers(client), [])

    def test_retain_handling_2_existing(self) -> None:
        """Retain Handling 2: no retained messages, new subscription or not [MQTT-3.3.1-11]."""
        self._retained()
        subscribe5(self.client, Subscription("r", 0, retain_handling=2))
        subscribe5(self.client, Subscription("r", 0, retain_handling=2), packet_id=2)
        self.assertEqual(answers(self.client), [])


# -- payload format and property pass-through -------------------------------------------------


class PayloadFormatTests(SynchronousTestCase):
    """Payload Format Indicator 1 requires UTF-8; properties are forwarded unaltered."""

    BAD = b"\xff\xfe not utf-8"

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.watcher, _ = connect5(self.harness, "w")
        subscribe(self.watcher, ("t", 2))
        self.publisher, _ = connect5(self.harness, "pub")

    def _bad(self, qos: int) -> None:
        self.publisher.send(
            Publish("t", self.BAD, qos, packet_id=5 if qos else None,
                    properties={P.PAYLOAD_FORMAT_INDICATOR: 1})
        )  # fmt: skip

    def test_qos1_invalid(self) -> None:
        """QoS 1, invalid UTF-8: PUBACK 0x99 and the message is not routed (5.0 §3.3.2.3.2)."""
        self._bad(1)
        self.assertEqual(answers(self.publisher), [Puback(5, R.PAYLOAD_FORMAT_INVALID)])
        self.assertFalse(self.publisher.closed_by_server)
        self.assertEqual(answers(self.watcher), [])

    def test_qos2_invalid(self) -> None:
        """
        QoS 2, invalid UTF-8: PUBREC 0x99, not routed, and the packet identifier is
        not left awaiting PUBREL (5.0 §3.3.2.3.2, §4.3.3).
        """
        self._bad(2)
        self.assertEqual(answers(self.publisher), [Pubrec(5, R.PAYLOAD_FORMAT_INVALID)])
        self.assertEqual(self.harness.broker.sessions["pub"].awaiting_rel, set())
        self.assertEqual(answers(self.watcher), [])

    def test_qos0_invalid(self) -> None:
        """QoS 0, invalid UTF-8: DISCONNECT 0x99 and the close (5.0 §3.3.2.3.2, §4.13)."""
        self._bad(0)
        self.assertEqual(answers(self.publisher), [Disconnect(R.PAYLOAD_FORMAT_INVALID)])
        self.assertTrue(self.publisher.closed_by_server)
        self.assertEqual(answers(self.watcher), [])

    def test_invalid_retained_not_stored(self) -> None:
        """A refused retained message does not replace the retained one (5.0 §3.3.2.3.2)."""
        self.publisher.send(Publish("t", b"good", retain=True))
        self.watcher.received()
        self.publisher.send(
            Publish("t", self.BAD, 1, retain=True, packet_id=1,
                    properties={P.PAYLOAD_FORMAT_INDICATOR: 1})
        )  # fmt: skip
        self.assertEqual(answers(self.publisher), [Puback(1, R.PAYLOAD_FORMAT_INVALID)])
        late, _ = connect5(self.harness, "late")
        subscribe(late, ("t", 0))
        self.assertEqual(shape(late.received()), [("t", b"good", 0, True, False)])

    def test_valid_utf8_passes(self) -> None:
        """
        Valid UTF-8 with Payload Format Indicator 1 is routed, the indicator
        forwarded unaltered [MQTT-3.3.2-4].
        """
        payload = "héllo €".encode()
        self.publisher.send(
            Publish("t", payload, 1, packet_id=1, properties={P.PAYLOAD_FORMAT_INDICATOR: 1})
        )
        self.assertEqual(answers(self.publisher), [Puback(1)])
        message = only_publish(self, self.watcher)
        self.assertEqual((message.payload, message.properties),
                         (payload, {P.PAYLOAD_FORMAT_INDICATOR: 1}))  # fmt: skip

    def test_indicator_0_not_checked(self) -> None:
        """Payload Format Indicator 0 (unspecified bytes) is not validated [MQTT-3.3.2-4]."""
        self.publisher.send(
            Publish("t", self.BAD, 1, packet_id=1, properties={P.PAYLOAD_FORMAT_INDICATOR: 0})
        )
        self.assertEqual(answers(self.publisher), [Puback(1)])
        self.assertEqual(only_publish(self, self.watcher).payload, self.BAD)

    def test_properties_pass_through(self) -> None:
        """
        Content Type, Response Topic, Correlation Data and User Properties (in order,
        repeated names kept) reach a v5 subscriber unaltered [MQTT-3.3.2-15],
        [MQTT-3.3.2-16], [MQTT-3.3.2-17], [MQTT-3.3.2-18], [MQTT-3.3.2-20].
        """
        props: Properties = {
            P.CONTENT_TYPE: "application/json; charset=utf-8",
            P.RESPONSE_TOPIC: "replies/42",
            P.CORRELATION_DATA: b"\x00\x01corr\xff",
            P.USER_PROPERTY: [("b", "2"), ("a", "1"), ("b", "3"), ("ünï", "çödé"), ("a", "")],
        }
        self.publisher.send(Publish("t", b"{}", 2, packet_id=3, properties=dict(props)))
        self.publisher.send(Pubrel(3))
        self.assertEqual(answers(self.publisher), [Pubrec(3), Pubcomp(3)])
        message = only_publish(self, self.watcher)
        self.assertEqual(message.properties, props)


# -- reason codes -----------------------------------------------------------------------------


class ReasonCodeTests(SynchronousTestCase):
    """PUBACK / PUBREC and server DISCONNECT reason codes."""

    def setUp(self) -> None:
        self.harness = BrokerHarness(
            BrokerConfig(session_limits=SessionLimits(max_queued_messages=1))
        )
        self.publisher, _ = connect5(self.harness, "pub")

    def _offline(self, client_id: str) -> None:
        client, _ = connect5(self.harness, client_id, expiry=NEVER)
        subscribe(client, ("t", 1))
        leave(client)

    def test_no_matching_subscribers(self) -> None:
        """No subscriber: PUBACK 0x10, PUBREC 0x10 then PUBCOMP (5.0 §3.4.2.1, §3.5.2.1)."""
        self.publisher.send(Publish("none", b"x", 1, packet_id=1))
        self.publisher.send(Publish("none", b"x", 2, packet_id=2), Pubrel(2))
        self.assertEqual(
            answers(self.publisher),
            [
                Puback(1, R.NO_MATCHING_SUBSCRIBERS),
                Pubrec(2, R.NO_MATCHING_SUBSCRIBERS),
                Pubcomp(2),
            ],
        )

    def test_quota_exceeded(self) -> None:
        """
        Every matching subscriber's queue is full: PUBACK / PUBREC 0x97 Quota exceeded
        (5.0 §3.4.2.1, §3.5.2.1); while one had room, success.
        """
        self._offline("a")
        self._offline("b")
        self.publisher.send(Publish("t", b"1", 1, packet_id=1))
        self.publisher.send(Publish("t", b"2", 1, packet_id=2))
        self.publisher.send(Publish("t", b"3", 2, packet_id=3))
        self.assertEqual(
            answers(self.publisher),
            [Puback(1), Puback(2, R.QUOTA_EXCEEDED), Pubrec(3, R.QUOTA_EXCEEDED)],
        )
        self.assertEqual(self.harness.broker.sessions["pub"].awaiting_rel, set())

    def test_success_when_one_accepted(self) -> None:
        """One full queue and one subscriber with room: PUBACK success (5.0 §3.4.2.1)."""
        self._offline("a")
        self.publisher.send(Publish("t", b"1", 1, packet_id=1))
        online, _ = connect5(self.harness, "online")
        subscribe(online, ("t", 1))
        self.publisher.send(Publish("t", b"2", 1, packet_id=2))
        self.assertEqual(answers(self.publisher), [Puback(1), Puback(2)])
        self.assertEqual([p.payload for p in publishes(online.received())], [b"2"])

    def test_takeover(self) -> None:
        """
        A second connection with the same client id: the old v5 connection gets
        DISCONNECT 0x8E and is closed [MQTT-3.1.4-3]; no Session Expiry in it
        [MQTT-3.14.2-2]; the new one resumes the session [MQTT-3.2.2-3].
        """
        old, _ = connect5(self.harness, "dup", expiry=100)
        subscribe(old, ("t", 1))
        _, connack = connect5(self.harness, "dup", clean_start=False, expiry=100)
        self.assertEqual(answers(old), [Disconnect(R.SESSION_TAKEN_OVER)])
        self.assertTrue(old.closed_by_server)
        self.assertTrue(connack.session_present)

    def test_keep_alive_timeout(self) -> None:
        """
        Nothing from the client for 1.5 times its Keep Alive: DISCONNECT 0x8D and the
        close [MQTT-3.1.2-22].
        """
        client, _ = connect5(self.harness, "k", keep_alive=10)
        self.harness.clock.advance(14.9)
        self.assertFalse(client.closed_by_server)
        self.harness.clock.advance(0.2)
        self.assertEqual(answers(client), [Disconnect(R.KEEP_ALIVE_TIMEOUT)])
        self.assertTrue(client.closed_by_server)

    def test_packet_too_large(self) -> None:
        """
        A packet over the server's Maximum Packet Size: DISCONNECT 0x95 and the close
        (5.0 §3.2.2.3.6); it is not routed.
        """
        harness = BrokerHarness(BrokerConfig(max_packet_size=64))
        watcher, _ = connect5(harness, "w")
        subscribe(watcher, ("t", 0))
        client, _ = connect5(harness, "c")
        client.send(Publish("t", b"x" * 100))
        self.assertEqual(answers(client), [Disconnect(R.PACKET_TOO_LARGE)])
        self.assertTrue(client.closed_by_server)
        self.assertEqual(answers(watcher), [])


# -- CONNACK ----------------------------------------------------------------------------------


class ConnackTests(SynchronousTestCase):
    """What the CONNACK tells an MQTT 5 client."""

    def test_default_properties(self) -> None:
        """
        With the default configuration CONNACK announces only what differs from the
        defaults a client assumes (5.0 §3.2.2.3): Topic Alias Maximum 10, no shared
        subscriptions; no Receive Maximum, Maximum QoS, Maximum Packet Size or Server
        Keep Alive.
        """
        _, connack = connect5(BrokerHarness(), "c", keep_alive=60)
        self.assertEqual(connack.reason_code, 0)
        for absent in (
            P.RECEIVE_MAXIMUM,
            P.MAXIMUM_QOS,
            P.MAXIMUM_PACKET_SIZE,
            P.SERVER_KEEP_ALIVE,
            P.ASSIGNED_CLIENT_IDENTIFIER,
        ):
            self.assertNotIn(absent, connack.properties)

    def test_assigned_client_identifier(self) -> None:
        """
        An empty client id gets an Assigned Client Identifier [MQTT-3.2.2-16], the id
        the session is kept under.
        """
        harness = BrokerHarness()
        client, connack = connect5(harness, "", expiry=100)
        assigned = connack.properties.get(P.ASSIGNED_CLIENT_IDENTIFIER)
        assert isinstance(assigned, str)
        self.assertTrue(assigned)
        self.assertIs(harness.broker.sessions[assigned].link, client.protocol.connection)
        subscribe(client, ("t", 1))
        leave(client)
        _, connack = connect5(harness, assigned, clean_start=False, expiry=100)
        self.assertTrue(connack.session_present)

    def test_server_keep_alive(self) -> None:
        """
        BrokerConfig(max_keep_alive=30): a client asking more, or 0, gets Server
        Keep Alive 30 [MQTT-3.2.2-21]; one asking less gets none [MQTT-3.2.2-22].
        """
        harness = BrokerHarness(BrokerConfig(max_keep_alive=30))
        for asked, announced in ((60, 30), (0, 30), (30, None), (10, None)):
            with self.subTest(asked=asked):
                _, connack = connect5(harness, f"k{asked}", keep_alive=asked)
                self.assertEqual(connack.properties.get(P.SERVER_KEEP_ALIVE), announced)

    def test_server_keep_alive_enforced(self) -> None:
        """
        The Server Keep Alive replaces the client's value on the server too: a client
        that asked 0 or 60 is disconnected after 45 s of silence with 0x8D
        [MQTT-3.2.2-21], [MQTT-3.1.2-22].
        """
        harness = BrokerHarness(BrokerConfig(max_keep_alive=30))
        zero, _ = connect5(harness, "zero", keep_alive=0)
        sixty, _ = connect5(harness, "sixty", keep_alive=60)
        harness.clock.advance(44.9)
        self.assertFalse(zero.closed_by_server or sixty.closed_by_server)
        harness.clock.advance(0.2)
        self.assertEqual(answers(zero), [Disconnect(R.KEEP_ALIVE_TIMEOUT)])
        self.assertEqual(answers(sixty), [Disconnect(R.KEEP_ALIVE_TIMEOUT)])

    def test_maximum_qos(self) -> None:
        """
        BrokerConfig(max_qos=1): CONNACK Maximum QoS 1 [MQTT-3.2.2-9]; a QoS 2
        SUBSCRIBE is still accepted, granted 1 [MQTT-3.2.2-10].
        """
        harness = BrokerHarness(BrokerConfig(max_qos=1))
        client, connack = connect5(harness, "c")
        self.assertEqual(connack.properties.get(P.MAXIMUM_QOS), 1)
        self.assertEqual(subscribe(client, ("t", 2)), [1])

    def test_publish_above_maximum_qos(self) -> None:
        """
        A QoS 2 PUBLISH to a server that announced Maximum QoS 1: DISCONNECT 0x9B
        QoS not supported (5.0 §3.2.2.3.4, [MQTT-3.2.2-11]); not routed.
        """
        harness = BrokerHarness(BrokerConfig(max_qos=1))
        watcher, _ = connect5(harness, "w")
        subscribe(watcher, ("t", 1))
        client, _ = connect5(harness, "c")
        client.send(Publish("t", b"x", 2, packet_id=1))
        self.assertEqual(
            (answers(client), watcher.received()), ([Disconnect(R.QOS_NOT_SUPPORTED)], [])
        )

    def test_will_qos_above_maximum_qos(self) -> None:
        """
        A CONNECT whose Will QoS exceeds the server's Maximum QoS is refused, with
        CONNACK 0x9B [MQTT-3.2.2-12].
        """
        harness = BrokerHarness(BrokerConfig(max_qos=1))
        client = harness.client(5)
        client.send(Connect("c", 5, True, 0, will=Will("w", b"x", 2)))
        packets = client.received()
        self.assertEqual([(type(p).__name__, getattr(p, "reason_code", None)) for p in packets],
                         [("Connack", R.QOS_NOT_SUPPORTED)])  # fmt: skip

    def test_connack_within_client_maximum_packet_size(self) -> None:
        """
        A success CONNACK that would exceed the client's Maximum Packet Size loses the
        properties a client can do without (Response Information, Topic Alias
        Maximum); if it still does not fit, the CONNECT is refused with 0x95, and a
        client that cannot take even that gets nothing [MQTT-3.1.2-24].
        """
        harness = BrokerHarness(BrokerConfig(response_information="reply/%c/"))
        _, connack = connect5(harness, "c", request_response_information=1, maximum_packet_size=100)
        self.assertEqual(connack.properties.get(P.RESPONSE_INFORMATION), "reply/c/")
        _, connack = connect5(harness, "c", request_response_information=1, maximum_packet_size=12)
        self.assertEqual(connack, Connack(False, 0, {}))
        client = harness.client(5)
        client.send(Connect("", 5, True, 0, properties={P.MAXIMUM_PACKET_SIZE: 12}))
        self.assertEqual(answers(client), [Connack(False, R.PACKET_TOO_LARGE)])
        self.assertNotIn("", harness.broker.sessions)
        self.assertEqual(len(harness.broker.sessions), 1)
        client = harness.client(5)
        client.send(Connect("", 5, True, 0, properties={P.MAXIMUM_PACKET_SIZE: 4}))
        self.assertEqual(client.transport.value(), b"")
        self.assertTrue(client.transport.disconnecting)

    def test_retain_unavailable(self) -> None:
        """
        BrokerConfig(retain_available=False): CONNACK Retain Available 0; a retained
        PUBLISH gets DISCONNECT 0x9A and is not routed (5.0 §3.3.1.3); a retained will
        is refused with CONNACK 0x9A [MQTT-3.2.2-13]. With retained messages on,
        the property is left out (its default is 1).
        """
        harness = BrokerHarness(BrokerConfig(retain_available=False))
        watcher, connack = connect5(harness, "w")
        self.assertEqual(connack.properties.get(P.RETAIN_AVAILABLE), 0)
        subscribe(watcher, ("t", 1))
        client, _ = connect5(harness, "c")
        client.send(Publish("t", b"x", 1, retain=True, packet_id=1))
        self.assertEqual(
            (answers(client), watcher.received()), ([Disconnect(R.RETAIN_NOT_SUPPORTED)], [])
        )
        self.assertEqual(dict(harness.broker.retained.items()), {})
        client = harness.client(5)
        client.send(Connect("c2", 5, True, 0, will=Will("w", b"x", 0, retain=True)))
        self.assertEqual(answers(client), [Connack(False, R.RETAIN_NOT_SUPPORTED)])
        self.assertTrue(client.transport.disconnecting)
        _, connack = connect5(BrokerHarness(), "c")
        self.assertNotIn(P.RETAIN_AVAILABLE, connack.properties)

    def test_retain_unavailable_older_clients(self) -> None:
        """
        A 3.1.1 client cannot be told retained messages are off: its retained PUBLISH
        closes the connection, and its retained will closes it without a CONNACK, as
        no return code says why (3.1.1 [MQTT-3.2.2-6]).
        """
        harness = BrokerHarness(BrokerConfig(retain_available=False))
        client = harness.client(4)
        client.send(Connect("c", 4, True, 0))
        client.received()
        client.send(Publish("t", b"x", 0, retain=True))
        self.assertEqual(client.received(), [])
        self.assertTrue(client.transport.disconnecting)
        client = harness.client(4)
        client.send(Connect("c", 4, True, 0, will=Will("w", b"x", 0, retain=True)))
        self.assertEqual(client.received(), [])
        self.assertTrue(client.transport.disconnecting)

    def test_maximum_packet_size(self) -> None:
        """
        A configured maximum below the protocol's is announced as Maximum Packet Size
        (5.0 §3.2.2.3.6); the protocol maximum is not.
        """
        _, connack = connect5(BrokerHarness(BrokerConfig(max_packet_size=1000)), "c")
        self.assertEqual(connack.properties.get(P.MAXIMUM_PACKET_SIZE), 1000)
        _, connack = connect5(BrokerHarness(BrokerConfig(max_packet_size=MAX_PACKET_SIZE)), "c")
        self.assertNotIn(P.MAXIMUM_PACKET_SIZE, connack.properties)


# -- mixed protocol versions ------------------------------------------------------------------


class MixedVersionTests(SynchronousTestCase):
    """MQTT 5 clients with 3.1 and 3.1.1 ones."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()

    def test_v5_publisher_to_old_subscribers(self) -> None:
        """
        A v5 PUBLISH with properties (and a topic alias) reaches 3.1.1 and 3.1
        subscribers as a plain PUBLISH: their decoders read the exact topic and
        payload, so no properties were sent.
        """
        subscribers = []
        for level in (3, 4):
            client, _ = self.harness.connect(f"old{level}", level=level)
            subscribe(client, ("t/#", 1))
            subscribers.append(client)
        publisher, _ = connect5(self.harness, "pub")
        props: Properties = {
            P.USER_PROPERTY: [("k", "v")],
            P.CONTENT_TYPE: "text/plain",
            P.RESPONSE_TOPIC: "r",
            P.CORRELATION_DATA: b"c",
            P.MESSAGE_EXPIRY_INTERVAL: 60,
            P.PAYLOAD_FORMAT_INDICATOR: 1,
            P.TOPIC_ALIAS: 1,
        }
        publisher.send(Publish("t/x", b"payload", 1, packet_id=1, properties=props))
        publisher.send(Publish("", b"again", 0, properties={P.TOPIC_ALIAS: 1}))
        for client in subscribers:
            with self.subTest(level=client.level):
                self.assertEqual(
                    shape(client.received()),
                    [("t/x", b"payload", 1, False, False), ("t/x", b"again", 0, False, False)],
                )

    def test_old_publisher_to_v5_subscriber(self) -> None:
        """A 3.1.1 (and 3.1) PUBLISH reaches a v5 subscriber with no properties but its
        Subscription Identifier [MQTT-3.3.4-3]."""
        subscriber, _ = connect5(self.harness, "s")
        subscribe5(subscriber, Subscription("a", 1))
        subscribe5(subscriber, Subscription("b", 1), packet_id=2, subscription_id=4)
        for level in (3, 4):
            publisher, _ = self.harness.connect(f"old{level}", level=level)
            publisher.send(Publish("a", b"%d" % level, 1, packet_id=1))
            publisher.send(Publish("b", b"%d" % level, 1, packet_id=2))
        got = publishes(subscriber.received())
        self.assertEqual(
            [(p.topic, p.payload, p.qos, p.properties) for p in got],
            [
                ("a", b"3", 1, {}),
                ("b", b"3", 1, {P.SUBSCRIPTION_IDENTIFIER: [4]}),
                ("a", b"4", 1, {}),
                ("b", b"4", 1, {P.SUBSCRIPTION_IDENTIFIER: [4]}),
            ],
        )

    def test_v5_offline_message_to_level4_session(self) -> None:
        """A v5 message with an expiry, queued for a 3.1.1 persistent session, arrives plain."""
        client, _ = self.harness.connect("old", level=4, clean_start=False)
        subscribe(client, ("t", 1))
        client.send(Disconnect())
        client.finish()
        publisher, _ = connect5(self.harness, "pub")
        publisher.send(
            Publish("t", b"x", 1, packet_id=1, properties={P.MESSAGE_EXPIRY_INTERVAL: 30})
        )
        self.harness.clock.advance(10)
        client, _ = self.harness.connect("old", level=4, clean_start=False)
        self.assertEqual(shape(client.received()), [("t", b"x", 1, False, False)])
