"""
Sections 3.8-3.11 (SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK), retained messages
(3.3.1.3), will messages (3.1.2.5-3.1.2.7, 3.1.3), and the MQTT 5 subscription
features: subscription options (3.8.3.1), Subscription Identifiers (3.3.4) and shared
subscriptions (4.8.2), from the wire.

Absence is never proved by waiting: every test that expects a message not to arrive
publishes a marker message last, on a topic the receiver is subscribed to, and checks
what arrived before the marker. Topics, client identifiers and retained messages are
unique to each test and protocol level, and retained messages are cleared at the end.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from conformance.rawpackets import packet as raw_packet
from conformance.rawpackets import string as utf8
from conformance.wire import ClosedError, WireClient
from mqttbroker.codec import (
    Connack,
    Disconnect,
    Packet,
    Properties,
    PropertyId,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)

Client = Callable[[int], WireClient]

MARKER = b"marker"

#: Every SUBACK reason code that reports a failure in 3.1.1 (0x80) and 5.0 (>= 0x80).
FAILURE = 0x80


def client_id(*parts: object) -> str:
    """A client identifier unique to C{parts}, within the 23 characters any server allows."""
    digest = hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()
    return "cf" + digest[:20]


def topic(name: str, level: int, *rest: str) -> str:
    """A topic under a prefix unique to the test C{name} and the protocol level."""
    return "/".join(("conformance", name, f"v{level}", *rest))


def raw_subscribe(
    level: int, packet_id: int, entries: list[tuple[bytes, int]], first: int = 0x82
) -> bytes:
    """A SUBSCRIBE from already encoded topic filters and raw option bytes."""
    body = packet_id.to_bytes(2, "big") + (b"\x00" if level == 5 else b"")
    body += b"".join(encoded + bytes((options,)) for encoded, options in entries)
    return raw_packet(first, body)


def raw_unsubscribe(level: int, packet_id: int, filters: list[bytes], first: int = 0xA2) -> bytes:
    """An UNSUBSCRIBE from already encoded topic filters."""
    body = packet_id.to_bytes(2, "big") + (b"\x00" if level == 5 else b"")
    return raw_packet(first, body + b"".join(filters))


def refused_or_closed(wire: WireClient) -> Suback | None:
    """
    After sending a SUBSCRIBE with a filter the server must refuse: the SUBACK, when
    the server answers with one, else None once it has closed the connection (the
    other conforming answer to a protocol violation).
    """
    try:
        packet = wire.receive()
    except ClosedError:
        return None
    if isinstance(packet, Disconnect):
        wire.expect_closed_for_error(first=packet)
        return None
    assert isinstance(packet, Suback), f"expected SUBACK or a close, got {packet!r}"
    return packet


class Peer:
    """
    A connected client that acknowledges what it receives, keeps the PUBLISH packets
    that arrive while it waits for something else, and numbers its own packets.
    """

    def __init__(self, wire: WireClient, connack: Connack) -> None:
        self.wire = wire
        self.connack = connack
        self.inbox: list[Publish] = []
        self._last_id = 0

    @classmethod
    def connect(
        cls,
        connect_client: Client,
        level: int,
        cid: str,
        will: Will | None = None,
        properties: Properties | None = None,
    ) -> Peer:
        wire = connect_client(level)
        connack = wire.connect(cid, will=will, properties=properties)
        assert connack.reason_code == 0, f"CONNECT refused: 0x{connack.reason_code:02X}"
        return cls(wire, connack)

    @property
    def level(self) -> int:
        return self.wire.level

    def next_id(self) -> int:
        self._last_id = self._last_id % 0xFFFF + 1
        return self._last_id

    def capability(self, prop: PropertyId, default: int) -> int:
        """An MQTT 5 capability from the CONNACK (its default when absent)."""
        value = self.connack.properties.get(prop, default)
        assert isinstance(value, int)
        return value

    def take(self, kind: type[Packet]) -> Packet:
        """The next packet of type C{kind}; PUBLISH packets before it are kept."""
        while True:
            packet = self.wire.receive()
            if isinstance(packet, kind):
                if isinstance(packet, Publish):
                    self._acknowledge(packet)
                return packet
            if isinstance(packet, Publish):
                self._acknowledge(packet)
                self.inbox.append(packet)
            elif isinstance(packet, Pubrel):
                self.wire.send(Pubcomp(packet.packet_id))
            else:
                raise AssertionError(f"expected {kind.__name__}, got {packet!r}")

    def _acknowledge(self, packet: Publish) -> None:
        if packet.qos == 1:
            assert packet.packet_id is not None
            self.wire.send(Puback(packet.packet_id))
        elif packet.qos == 2:
            assert packet.packet_id is not None
            self.wire.send(Pubrec(packet.packet_id))

    def subscribe(
        self, *subscriptions: Subscription | str, properties: Properties | None = None
    ) -> Suback:
        """SUBSCRIBE (plain strings are QoS 2 subscriptions); the SUBACK, checked."""
        subs = tuple(
            s if isinstance(s, Subscription) else Subscription(s, 2) for s in subscriptions
        )
        packet_id = self.next_id()
        self.wire.send(Subscribe(packet_id, subs, properties or {}))
        suback = self.take(Suback)
        assert isinstance(suback, Suback)
        assert suback.packet_id == packet_id
        assert len(suback.reason_codes) == len(subs)
        return suback

    def subscribe_ok(
        self, *subscriptions: Subscription | str, properties: Properties | None = None
    ) -> tuple[int, ...]:
        """SUBSCRIBE that must succeed; the granted QoS of each filter."""
        suback = self.subscribe(*subscriptions, properties=properties)
        for code in suback.reason_codes:
            assert code < FAILURE, f"subscription refused: 0x{code:02X}"
        return suback.reason_codes

    def unsubscribe(self, *filters: str) -> Unsuback:
        packet_id = self.next_id()
        self.wire.send(Unsubscribe(packet_id, filters))
        unsuback = self.take(Unsuback)
        assert isinstance(unsuback, Unsuback)
        assert unsuback.packet_id == packet_id
        return unsuback

    def publish(
        self,
        topic_name: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        properties: Properties | None = None,
    ) -> None:
        """PUBLISH, completing the QoS 1 or 2 exchange."""
        packet_id = self.next_id() if qos else None
        self.wire.send(
            Publish(topic_name, payload, qos, retain, False, packet_id, properties or {})
        )
        if qos == 1:
            ack = self.take(Puback)
            assert isinstance(ack, Puback) and ack.packet_id == packet_id
        elif qos == 2:
            rec = self.take(Pubrec)
            assert isinstance(rec, Pubrec) and rec.packet_id == packet_id
            assert packet_id is not None
            self.wire.send(Pubrel(packet_id))
            comp = self.take(Pubcomp)
            assert isinstance(comp, Pubcomp) and comp.packet_id == packet_id

    def until_marker(self, marker_topic: str) -> list[Publish]:
        """Every PUBLISH received before the marker message on C{marker_topic}."""
        while True:
            for index, packet in enumerate(self.inbox):
                if packet.topic == marker_topic and packet.payload == MARKER:
                    before, self.inbox = self.inbox[:index], self.inbox[index + 1 :]
                    return before
            packet = self.take(Publish)
            assert isinstance(packet, Publish)
            self.inbox.append(packet)

    def receive_publish(self) -> Publish:
        """The next PUBLISH (one already kept first)."""
        if self.inbox:
            return self.inbox.pop(0)
        packet = self.take(Publish)
        assert isinstance(packet, Publish)
        return packet


@contextmanager
def clearing_retained(connect_client: Client, level: int, *topics: str) -> Iterator[None]:
    """Clear the retained messages of C{topics} at the end, whatever happens."""
    try:
        yield
    finally:
        cleaner = Peer.connect(connect_client, level, client_id("cleaner", level, *topics))
        for name in topics:
            cleaner.publish(name, b"", 1, retain=True)
        cleaner.wire.send(Disconnect())


def payloads(packets: list[Publish]) -> list[bytes]:
    return [p.payload for p in packets]


# -- SUBSCRIBE and SUBACK ----------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.8.4-1", "MQTT-3.8.4-2")
@pytest.mark.mqtt5("MQTT-3.8.4-1", "MQTT-3.8.4-2")
def test_suback_echoes_packet_id(connect_client: Client, level: int) -> None:
    """Every SUBSCRIBE gets a SUBACK with its Packet Identifier."""
    wire = connect_client(level)
    wire.connect(client_id("suback-id", level))
    for packet_id in (1, 0x1234, 0xFFFF):
        wire.send(Subscribe(packet_id, (Subscription(topic("suback-id", level), 1),)))
        suback = wire.expect(Suback)
        assert suback.packet_id == packet_id
        assert len(suback.reason_codes) == 1


@pytest.mark.mqtt311("MQTT-3.8.4-4", "MQTT-3.8.4-5", "MQTT-3.8.4-6", "MQTT-3.9.3-1", "MQTT-3.9.3-2")
@pytest.mark.mqtt5(
    "MQTT-3.8.4-5", "MQTT-3.8.4-6", "MQTT-3.8.4-7", "MQTT-3.8.4-8", "MQTT-3.9.3-1", "MQTT-3.9.3-2"
)
def test_suback_codes_in_filter_order(connect_client: Client, level: int) -> None:
    """
    One SUBACK for several filters, one code per filter in their order, each the
    granted QoS (at most the requested one), which then caps the delivery QoS. (The
    codec refuses a SUBACK carrying a code the version does not define.)
    """
    name = "suback-order"
    sub = Peer.connect(connect_client, level, client_id(name, level))
    requested = {"q2": 2, "q0": 0, "q1": 1}
    filters = [topic(name, level, key) for key in requested]
    marker = topic(name, level, "marker")
    suback = sub.subscribe(
        *(Subscription(f, qos) for f, qos in zip(filters, requested.values(), strict=True)),
        Subscription(marker, 2),
    )
    granted = suback.reason_codes[:3]
    for code, qos in zip(granted, requested.values(), strict=True):
        assert code <= qos, f"granted QoS {code} above the requested {qos}"
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    for f in filters:
        pub.publish(f, b"m", 2)
    pub.publish(marker, MARKER, 2)
    received = {p.topic: p.qos for p in sub.until_marker(marker)}
    assert received == dict(zip(filters, granted, strict=True))


@pytest.mark.mqtt311("MQTT-3.8.4-5", "MQTT-3.9.3-1", "MQTT-4.7.1-2")
@pytest.mark.mqtt5("MQTT-3.8.4-6", "MQTT-3.8.4-7", "MQTT-3.9.3-1", "MQTT-4.7.1-1")
def test_failed_filter_fails_alone(connect_client: Client, level: int) -> None:
    """
    A SUBSCRIBE with an invalid filter between two valid ones: either a SUBACK
    refusing that filter alone, in its place, or (a protocol violation) a close.
    """
    name = "suback-failure"
    wire = connect_client(level)
    wire.connect(client_id(name, level))
    good = topic(name, level, "good")
    bad = topic(name, level, "#", "bad")
    wire.send(
        Subscribe(7, (Subscription(good, 1), Subscription(bad, 1), Subscription(good + "2", 0)))
    )
    suback = refused_or_closed(wire)
    if suback is not None:
        assert suback.packet_id == 7
        first, failed, last = suback.reason_codes
        assert first <= 1 and last == 0
        assert failed >= FAILURE


@pytest.mark.mqtt311("MQTT-3.8.4-6")
@pytest.mark.mqtt5("MQTT-3.8.4-8")
def test_delivery_qos_is_the_minimum(connect_client: Client, level: int) -> None:
    """A message goes out at the lower of its own QoS and the granted QoS."""
    name = "min-qos"
    sub = Peer.connect(connect_client, level, client_id(name, level))
    high, low = topic(name, level, "high"), topic(name, level, "low")
    marker = topic(name, level, "marker")
    granted_high, granted_low, _ = sub.subscribe_ok(
        Subscription(high, 2), Subscription(low, 1), Subscription(marker, 2)
    )
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    for qos in (0, 1, 2):
        pub.publish(high, b"%d" % qos, qos)
        pub.publish(low, b"%d" % qos, qos)
    pub.publish(marker, MARKER, 2)
    received = sorted((p.topic, p.payload, p.qos) for p in sub.until_marker(marker))
    expected = sorted(
        [(high, b"%d" % q, min(q, granted_high)) for q in (0, 1, 2)]
        + [(low, b"%d" % q, min(q, granted_low)) for q in (0, 1, 2)]
    )
    assert received == expected


@pytest.mark.mqtt311("MQTT-3.8.4-3")
@pytest.mark.mqtt5("MQTT-3.8.4-3")
def test_resubscribe_replaces_subscription(connect_client: Client, level: int) -> None:
    """
    A second SUBSCRIBE to the same filter replaces the first: one copy per message,
    at the new maximum QoS, and a single UNSUBSCRIBE removes it.
    """
    name = "resubscribe"
    sub = Peer.connect(connect_client, level, client_id(name, level))
    t, marker = topic(name, level, "t"), topic(name, level, "marker")
    sub.subscribe_ok(Subscription(t, 0), Subscription(marker, 1))
    (granted,) = sub.subscribe_ok(Subscription(t, 1))
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    pub.publish(t, b"one", 1)
    pub.publish(marker, MARKER, 1)
    received = sub.until_marker(marker)
    assert [(p.payload, p.qos) for p in received] == [(b"one", min(1, granted))]
    sub.unsubscribe(t)
    pub.publish(t, b"two", 1)
    pub.publish(marker, MARKER, 1)
    assert sub.until_marker(marker) == []


@pytest.mark.mqtt311("MQTT-3.8.4-3", "MQTT-3.3.1-6", "MQTT-3.3.1-8")
@pytest.mark.mqtt5("MQTT-3.8.4-4", "MQTT-3.3.1-9")
def test_resubscribe_resends_retained(connect_client: Client, level: int) -> None:
    """Replacing a subscription sends the matching retained messages again."""
    name = "resubscribe-retained"
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    t, marker = topic(name, level, "t"), topic(name, level, "marker")
    with clearing_retained(connect_client, level, t):
        pub.publish(t, b"kept", 1, retain=True)
        sub = Peer.connect(connect_client, level, client_id(name, level))
        sub.subscribe_ok(Subscription(marker, 1))
        for _ in range(2):
            sub.subscribe_ok(Subscription(t, 1))
            pub.publish(marker, MARKER, 1)
            received = sub.until_marker(marker)
            assert [(p.topic, p.payload, p.retain) for p in received] == [(t, b"kept", True)]


@pytest.mark.parametrize("flags", [0x0, 0x3, 0xA])
@pytest.mark.mqtt311("MQTT-3.8.1-1")
@pytest.mark.mqtt5("MQTT-3.8.1-1")
def test_subscribe_reserved_flags_close(connect_client: Client, level: int, flags: int) -> None:
    """SUBSCRIBE fixed-header flags other than 0010 are malformed: the server closes."""
    wire = connect_client(level)
    wire.connect(client_id("subscribe-flags", level, flags))
    entry = (utf8(topic("subscribe-flags", level)), 0)
    wire.send_bytes(raw_subscribe(level, 1, [entry], first=0x80 | flags))
    wire.expect_closed_for_error()


@pytest.mark.mqtt311("MQTT-3.8.3-3")
@pytest.mark.mqtt5("MQTT-3.8.3-2")
def test_subscribe_without_filters_closes(connect_client: Client, level: int) -> None:
    """A SUBSCRIBE with no Topic Filter is a protocol violation: no SUBACK, a close."""
    wire = connect_client(level)
    wire.connect(client_id("subscribe-empty", level))
    wire.send_bytes(raw_subscribe(level, 1, []))
    wire.expect_closed_for_error()


@pytest.mark.parametrize("options", [0x41, 0x81, 0xC0])
@pytest.mark.mqtt311("MQTT-3.8.3-4")
@pytest.mark.mqtt5("MQTT-3.8.3-5")
def test_subscription_options_reserved_bits_close(
    connect_client: Client, level: int, options: int
) -> None:
    """Reserved bits set in a filter's options byte: malformed, the server closes."""
    wire = connect_client(level)
    wire.connect(client_id("options-reserved", level, options))
    entry = (utf8(topic("options-reserved", level)), options)
    wire.send_bytes(raw_subscribe(level, 1, [entry]))
    wire.expect_closed_for_error()


@pytest.mark.mqtt311("MQTT-3.8.3-1")
@pytest.mark.mqtt5("MQTT-3.8.3-1")
def test_subscribe_filter_not_utf8_closes(connect_client: Client, level: int) -> None:
    """A Topic Filter that is not well-formed UTF-8 makes the SUBSCRIBE malformed."""
    wire = connect_client(level)
    wire.connect(client_id("subscribe-utf8", level))
    wire.send_bytes(raw_subscribe(level, 1, [(b"\x00\x04a/\xff\xfe", 1)]))
    wire.expect_closed_for_error()


@pytest.mark.mqtt311("MQTT-3.8.3-4")
def test_subscribe_qos_3_closes(connect_client: Client, level: int) -> None:
    """A requested QoS of 3 is malformed in 3.1.1: the server closes."""
    wire = connect_client(level)
    wire.connect(client_id("subscribe-qos3", level))
    wire.send_bytes(raw_subscribe(level, 1, [(utf8(topic("subscribe-qos3", level)), 3)]))
    wire.expect_closed_for_error()


# -- UNSUBSCRIBE and UNSUBACK ------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.10.4-1", "MQTT-3.10.4-2", "MQTT-3.10.4-4")
@pytest.mark.mqtt5("MQTT-3.10.4-1", "MQTT-3.10.4-2", "MQTT-3.10.4-4", "MQTT-3.11.3-2")
def test_no_messages_after_unsubscribe(connect_client: Client, level: int) -> None:
    """After UNSUBACK, messages matching the removed filter are no longer sent."""
    name = "unsubscribe"
    sub = Peer.connect(connect_client, level, client_id(name, level))
    gone, kept = topic(name, level, "gone"), topic(name, level, "kept")
    marker = topic(name, level, "marker")
    sub.subscribe_ok(Subscription(gone, 1), Subscription(kept, 1), Subscription(marker, 1))
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    pub.publish(gone, b"before", 1)
    pub.publish(marker, MARKER, 1)
    assert payloads(sub.until_marker(marker)) == [b"before"]
    unsuback = sub.unsubscribe(gone)
    if level == 5:
        assert unsuback.reason_codes == (0x00,)
    pub.publish(gone, b"after", 1)
    pub.publish(kept, b"kept", 1)
    pub.publish(marker, MARKER, 1)
    assert [(p.topic, p.payload) for p in sub.until_marker(marker)] == [(kept, b"kept")]


@pytest.mark.mqtt311("MQTT-3.10.4-4", "MQTT-3.10.4-5")
@pytest.mark.mqtt5("MQTT-3.10.4-4", "MQTT-3.10.4-5", "MQTT-3.11.3-2")
def test_unsuback_when_nothing_matched(connect_client: Client, level: int) -> None:
    """An UNSUBSCRIBE that removes nothing still gets an UNSUBACK with its identifier."""
    wire = connect_client(level)
    wire.connect(client_id("unsuback-none", level))
    for packet_id in (1, 0xBEEF):
        wire.send(Unsubscribe(packet_id, (topic("unsuback-none", level, "never"),)))
        unsuback = wire.expect(Unsuback)
        assert unsuback.packet_id == packet_id
        if level == 5:
            assert unsuback.reason_codes == (0x11,)  # No subscription existed


@pytest.mark.mqtt311("MQTT-3.10.4-2", "MQTT-3.10.4-6")
@pytest.mark.mqtt5("MQTT-3.10.4-2", "MQTT-3.10.4-6", "MQTT-3.11.3-1", "MQTT-3.11.3-2")
def test_unsubscribe_several_filters(connect_client: Client, level: int) -> None:
    """
    Several filters in one UNSUBSCRIBE: one UNSUBACK (in 5.0 one code per filter, in
    order), each filter handled as if unsubscribed alone.
    """
    name = "unsubscribe-many"
    sub = Peer.connect(connect_client, level, client_id(name, level))
    a, b, c = (topic(name, level, x) for x in "abc")
    never, marker = topic(name, level, "never"), topic(name, level, "marker")
    sub.subscribe_ok(a, b, c, marker)
    unsuback = sub.unsubscribe(a, never, c)
    if level == 5:
        assert unsuback.reason_codes == (0x00, 0x11, 0x00)
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    for t in (a, b, c):
        pub.publish(t, b"m", 1)
    pub.publish(marker, MARKER, 1)
    assert [p.topic for p in sub.until_marker(marker)] == [b]


@pytest.mark.mqtt311("MQTT-3.10.4-1")
@pytest.mark.mqtt5("MQTT-3.10.4-1")
def test_unsubscribe_compares_filters_exactly(connect_client: Client, level: int) -> None:
    """
    UNSUBSCRIBE filters are compared character by character with the subscribed
    ones: a filter that merely matches, or differs in case, removes nothing.
    """
    name = "unsubscribe-exact"
    sub = Peer.connect(connect_client, level, client_id(name, level))
    wild, marker = topic(name, level, "+"), topic(name, level, "marker")
    sub.subscribe_ok(Subscription(wild, 1), Subscription(marker, 1))
    unsuback = sub.unsubscribe(topic(name, level, "x"), topic(name.upper(), level, "+"))
    if level == 5:
        assert unsuback.reason_codes == (0x11, 0x11)
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    pub.publish(topic(name, level, "x"), b"still", 1)
    pub.publish(marker, MARKER, 1)
    received = sub.until_marker(marker)
    assert [(p.topic, p.payload) for p in received] == [(topic(name, level, "x"), b"still")]


@pytest.mark.mqtt311("MQTT-3.10.4-3")
@pytest.mark.mqtt5("MQTT-3.10.4-3")
def test_unsubscribe_completes_started_qos2_delivery(connect_client: Client, level: int) -> None:
    """A QoS 2 delivery started before UNSUBSCRIBE is completed after it."""
    name = "unsubscribe-inflight"
    sub = Peer.connect(connect_client, level, client_id(name, level))
    t = topic(name, level, "t")
    (granted,) = sub.subscribe_ok(Subscription(t, 2))
    if granted < 2:
        pytest.skip("the server does not grant QoS 2")
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    pub.publish(t, b"in flight", 2)
    publish = sub.wire.expect(Publish)
    assert publish.qos == 2 and publish.packet_id is not None
    sub.wire.send(Unsubscribe(99, (t,)))
    assert sub.wire.expect(Unsuback).packet_id == 99
    sub.wire.send(Pubrec(publish.packet_id))
    assert sub.wire.expect(Pubrel).packet_id == publish.packet_id
    sub.wire.send(Pubcomp(publish.packet_id))


@pytest.mark.parametrize("flags", [0x0, 0x3, 0xA])
@pytest.mark.mqtt311("MQTT-3.10.1-1")
@pytest.mark.mqtt5("MQTT-3.10.1-1")
def test_unsubscribe_reserved_flags_close(connect_client: Client, level: int, flags: int) -> None:
    """UNSUBSCRIBE fixed-header flags other than 0010 are malformed: the server closes."""
    wire = connect_client(level)
    wire.connect(client_id("unsubscribe-flags", level, flags))
    encoded = utf8(topic("unsubscribe-flags", level))
    wire.send_bytes(raw_unsubscribe(level, 1, [encoded], first=0xA0 | flags))
    wire.expect_closed_for_error()


@pytest.mark.mqtt311("MQTT-3.10.3-1")
@pytest.mark.mqtt5("MQTT-3.10.3-1")
def test_unsubscribe_filter_not_utf8_closes(connect_client: Client, level: int) -> None:
    """A Topic Filter that is not well-formed UTF-8 makes the UNSUBSCRIBE malformed."""
    wire = connect_client(level)
    wire.connect(client_id("unsubscribe-utf8", level))
    wire.send_bytes(raw_unsubscribe(level, 1, [b"\x00\x04a/\xed\xa0"]))
    wire.expect_closed_for_error()


@pytest.mark.mqtt311("MQTT-3.10.3-2")
@pytest.mark.mqtt5("MQTT-3.10.3-2")
def test_unsubscribe_without_filters_closes(connect_client: Client, level: int) -> None:
    """An UNSUBSCRIBE with no Topic Filter is a protocol violation: a close."""
    wire = connect_client(level)
    wire.connect(client_id("unsubscribe-empty", level))
    wire.send_bytes(raw_unsubscribe(level, 1, []))
    wire.expect_closed_for_error()


# -- retained messages (3.3.1.3) ---------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.3.1-5", "MQTT-3.3.1-6", "MQTT-3.3.1-8")
@pytest.mark.mqtt5("MQTT-3.3.1-5", "MQTT-3.3.1-9")
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_retained_message_sent_on_subscribe(connect_client: Client, level: int, qos: int) -> None:
    """
    A retained message is stored with its QoS and sent to a new subscription with
    RETAIN 1, at the lower of its QoS and the granted QoS.
    """
    name = f"retained-sent-{qos}"
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    t, marker = topic(name, level, "t"), topic(name, level, "marker")
    with clearing_retained(connect_client, level, t):
        pub.publish(t, b"retained", qos, retain=True)
        pub.wire.send(Disconnect())  # the message outlives its publisher's connection
        pub.wire.expect_closed()
        sub = Peer.connect(connect_client, level, client_id(name, level))
        sub.subscribe_ok(Subscription(marker, 2))
        (granted,) = sub.subscribe_ok(Subscription(t, 2))
        pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
        pub.publish(marker, MARKER, 2)
        received = sub.until_marker(marker)
        assert [(p.topic, p.payload, p.retain, p.qos) for p in received] == [
            (t, b"retained", True, min(qos, granted))
        ]


@pytest.mark.mqtt311("MQTT-3.3.1-5", "MQTT-3.3.1-7")
@pytest.mark.mqtt5("MQTT-3.3.1-5")
def test_retained_message_replaced(connect_client: Client, level: int) -> None:
    """A new retained message on a topic replaces the one stored before."""
    name = "retained-replaced"
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    t, marker = topic(name, level, "t"), topic(name, level, "marker")
    with clearing_retained(connect_client, level, t):
        pub.publish(t, b"first", 1, retain=True)
        pub.publish(t, b"second", 0, retain=True)
        sub = Peer.connect(connect_client, level, client_id(name, level))
        sub.subscribe_ok(marker, t)
        pub.publish(marker, MARKER, 1)
        assert payloads(sub.until_marker(marker)) == [b"second"]


@pytest.mark.mqtt311("MQTT-3.3.1-10", "MQTT-3.3.1-11")
@pytest.mark.mqtt5("MQTT-3.3.1-6", "MQTT-3.3.1-7")
def test_empty_retained_message_deletes(connect_client: Client, level: int) -> None:
    """
    A retained PUBLISH with an empty payload is delivered as usual to the current
    subscribers, and removes the retained message: a new subscriber gets none.
    """
    name = "retained-deleted"
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    t, marker = topic(name, level, "t"), topic(name, level, "marker")
    with clearing_retained(connect_client, level, t):
        pub.publish(t, b"stored", 1, retain=True)
        current = Peer.connect(connect_client, level, client_id(name, level, "current"))
        current.subscribe_ok(marker, t)
        pub.publish(t, b"", 1, retain=True)
        pub.publish(marker, MARKER, 1)
        assert payloads(current.until_marker(marker)) == [b"stored", b""]
        new = Peer.connect(connect_client, level, client_id(name, level, "new"))
        new.subscribe_ok(marker, t)
        pub.publish(marker, MARKER, 1)
        assert new.until_marker(marker) == []


@pytest.mark.mqtt311("MQTT-3.3.1-12")
@pytest.mark.mqtt5("MQTT-3.3.1-8")
def test_non_retained_message_keeps_retained(connect_client: Client, level: int) -> None:
    """A PUBLISH with RETAIN 0 neither is stored nor touches the retained message."""
    name = "retained-kept"
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    t, other = topic(name, level, "t"), topic(name, level, "other")
    marker = topic(name, level, "marker")
    with clearing_retained(connect_client, level, t):
        pub.publish(t, b"retained", 1, retain=True)
        pub.publish(t, b"live", 1)
        pub.publish(t, b"", 1)
        pub.publish(other, b"live", 1)
        sub = Peer.connect(connect_client, level, client_id(name, level))
        sub.subscribe_ok(marker, t, other)
        pub.publish(marker, MARKER, 1)
        assert [(p.topic, p.payload) for p in sub.until_marker(marker)] == [(t, b"retained")]


@pytest.mark.mqtt311("MQTT-3.3.1-9")
@pytest.mark.mqtt5("MQTT-3.3.1-12")
def test_established_subscription_gets_retain_0(connect_client: Client, level: int) -> None:
    """
    A retained PUBLISH matching an established subscription goes out with RETAIN 0
    (in 5.0: with Retain As Published 0, the default).
    """
    name = "retained-live"
    sub = Peer.connect(connect_client, level, client_id(name, level))
    t, marker = topic(name, level, "t"), topic(name, level, "marker")
    sub.subscribe_ok(marker, t)
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    with clearing_retained(connect_client, level, t):
        pub.publish(t, b"live", 1, retain=True)
        pub.publish(marker, MARKER, 1)
        assert [(p.payload, p.retain) for p in sub.until_marker(marker)] == [(b"live", False)]


@pytest.mark.mqtt5("MQTT-3.3.1-13")
def test_retain_as_published(connect_client: Client, level: int) -> None:
    """Retain As Published 1 forwards the RETAIN flag as it was published."""
    name = "retain-as-published"
    sub = Peer.connect(connect_client, level, client_id(name, level))
    t, marker = topic(name, level, "t"), topic(name, level, "marker")
    sub.subscribe_ok(marker, Subscription(t, 1, retain_as_published=True))
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    with clearing_retained(connect_client, level, t):
        pub.publish(t, b"retained", 1, retain=True)
        pub.publish(t, b"plain", 1)
        pub.publish(marker, MARKER, 1)
        received = sub.until_marker(marker)
        assert [(p.payload, p.retain) for p in received] == [(b"retained", True), (b"plain", False)]


@pytest.mark.mqtt5("MQTT-3.3.1-10")
def test_retain_handling_1(connect_client: Client, level: int) -> None:
    """Retain Handling 1 sends retained messages only if the subscription is new."""
    name = "retain-handling-1"
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    t, marker = topic(name, level, "t"), topic(name, level, "marker")
    with clearing_retained(connect_client, level, t):
        pub.publish(t, b"retained", 1, retain=True)
        sub = Peer.connect(connect_client, level, client_id(name, level))
        sub.subscribe_ok(marker)
        sub.subscribe_ok(Subscription(t, 1, retain_handling=1))
        pub.publish(marker, MARKER, 1)
        assert [(p.payload, p.retain) for p in sub.until_marker(marker)] == [(b"retained", True)]
        sub.subscribe_ok(Subscription(t, 1, retain_handling=1))
        pub.publish(marker, MARKER, 1)
        assert sub.until_marker(marker) == []


@pytest.mark.mqtt5("MQTT-3.3.1-11")
def test_retain_handling_2(connect_client: Client, level: int) -> None:
    """Retain Handling 2 sends no retained messages, but live ones still flow."""
    name = "retain-handling-2"
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    t, marker = topic(name, level, "t"), topic(name, level, "marker")
    with clearing_retained(connect_client, level, t):
        pub.publish(t, b"retained", 1, retain=True)
        sub = Peer.connect(connect_client, level, client_id(name, level))
        sub.subscribe_ok(marker)
        sub.subscribe_ok(Subscription(t, 1, retain_handling=2))
        pub.publish(t, b"live", 1)
        pub.publish(marker, MARKER, 1)
        assert payloads(sub.until_marker(marker)) == [b"live"]


# -- MQTT 5 subscription options, identifiers and shared subscriptions -------------


@pytest.mark.mqtt5("MQTT-3.8.3-3")
def test_no_local(connect_client: Client, level: int) -> None:
    """
    No Local 1: the client's own messages are not sent back to it; others' are.
    No Local 0 (the control): they are.
    """
    name = "no-local"
    me = Peer.connect(connect_client, level, client_id(name, level))
    local, echoed = topic(name, level, "local"), topic(name, level, "echoed")
    me.subscribe_ok(Subscription(local, 1, no_local=True), Subscription(echoed, 1))
    me.publish(echoed, b"mine", 1)
    control = me.receive_publish()
    assert (control.topic, control.payload) == (echoed, b"mine")
    me.publish(local, b"mine", 1)
    other = Peer.connect(connect_client, level, client_id(name, level, "other"))
    other.publish(local, b"theirs", 1)
    other.publish(local, MARKER, 1)
    assert [(p.topic, p.payload) for p in me.until_marker(local)] == [(local, b"theirs")]


@pytest.mark.mqtt5("MQTT-3.8.3-4")
def test_no_local_on_shared_subscription_is_protocol_error(
    connect_client: Client, level: int
) -> None:
    """No Local 1 on a shared subscription is a Protocol Error: no SUBACK, a close."""
    name = "no-local-shared"
    wire = connect_client(level)
    wire.connect(client_id(name, level))
    shared = "$share/g/" + topic(name, level, "t")
    wire.send(Subscribe(1, (Subscription(shared, 1, no_local=True),)))
    packets = wire.expect_closed()
    assert [type(p) for p in packets] in ([], [Disconnect])
    if packets:
        assert isinstance(packets[0], Disconnect)
        assert packets[0].reason_code == 0x82


def _subscription_ids(packet: Publish) -> list[int]:
    ids = packet.properties.get(PropertyId.SUBSCRIPTION_IDENTIFIER, [])
    assert isinstance(ids, list)
    return sorted(ids)


def _need_subscription_ids(peer: Peer) -> None:
    if not peer.capability(PropertyId.SUBSCRIPTION_IDENTIFIER_AVAILABLE, 1):
        pytest.skip("the server does not support Subscription Identifiers")


@pytest.mark.mqtt5("MQTT-3.3.4-3", "MQTT-3.3.4-4", "MQTT-3.3.4-5")
def test_subscription_identifiers(connect_client: Client, level: int) -> None:
    """
    A PUBLISH carries the Subscription Identifiers of the subscriptions it matches
    (one copy with all of them, or one copy per subscription with its own), none
    when they have none, and retained messages sent on subscribe carry them too.
    """
    name = "subscription-ids"
    sub = Peer.connect(connect_client, level, client_id(name, level))
    _need_subscription_ids(sub)
    wild, exact = topic(name, level, "#"), topic(name, level, "a")
    plain, marker = topic(name, level, "plain"), topic(name, level, "marker")
    sub.subscribe_ok(Subscription(wild, 1), properties={PropertyId.SUBSCRIPTION_IDENTIFIER: [7]})
    sub.subscribe_ok(
        Subscription(exact, 1), properties={PropertyId.SUBSCRIPTION_IDENTIFIER: [268435455]}
    )
    other = "/".join(("conformance", "other-" + name, f"v{level}", "plain"))
    sub.subscribe_ok(Subscription(other, 1))
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    pub.publish(exact, b"both", 1)
    pub.publish(plain, b"wild", 1)
    pub.publish(other, b"none", 1)
    pub.publish(marker, MARKER, 1)
    received = sub.until_marker(marker)
    both = [_subscription_ids(p) for p in received if p.payload == b"both"]
    assert both in ([[7, 268435455]], [[7], [268435455]], [[268435455], [7]])
    assert [_subscription_ids(p) for p in received if p.payload == b"wild"] == [[7]]
    assert [_subscription_ids(p) for p in received if p.payload == b"none"] == [[]]
    with clearing_retained(connect_client, level, plain):
        pub.publish(plain, b"retained", 1, retain=True)
        late = Peer.connect(connect_client, level, client_id(name, level, "late"))
        late.subscribe_ok(
            Subscription(wild, 1), properties={PropertyId.SUBSCRIPTION_IDENTIFIER: [9]}
        )
        pub.publish(marker, MARKER, 1)
        received = late.until_marker(marker)
        assert [(p.payload, p.retain, _subscription_ids(p)) for p in received] == [
            (b"retained", True, [9])
        ]


@pytest.mark.mqtt5("MQTT-3.8.4-3")
def test_resubscribe_replaces_subscription_identifier(connect_client: Client, level: int) -> None:
    """Replacing a subscription replaces its Subscription Identifier (or removes it)."""
    name = "subscription-id-replaced"
    sub = Peer.connect(connect_client, level, client_id(name, level))
    _need_subscription_ids(sub)
    t, marker = topic(name, level, "t"), topic(name, level, "marker")
    sub.subscribe_ok(marker)
    sub.subscribe_ok(Subscription(t, 1), properties={PropertyId.SUBSCRIPTION_IDENTIFIER: [1]})
    sub.subscribe_ok(Subscription(t, 1), properties={PropertyId.SUBSCRIPTION_IDENTIFIER: [2]})
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    pub.publish(t, b"two", 1)
    pub.publish(marker, MARKER, 1)
    assert [_subscription_ids(p) for p in sub.until_marker(marker)] == [[2]]
    sub.subscribe_ok(Subscription(t, 1))
    pub.publish(t, b"none", 1)
    pub.publish(marker, MARKER, 1)
    assert [_subscription_ids(p) for p in sub.until_marker(marker)] == [[]]


def _need_shared(peer: Peer) -> None:
    if not peer.capability(PropertyId.SHARED_SUBSCRIPTION_AVAILABLE, 1):
        pytest.skip("the server does not support shared subscriptions")


@pytest.mark.mqtt5("MQTT-4.8.2-1", "MQTT-4.8.2-3")
def test_shared_subscription_delivers_each_message_once(connect_client: Client, level: int) -> None:
    """
    Two sessions in one shared subscription: each message goes to one of them, at
    that session's own granted QoS.
    """
    name = "shared"
    t, marker = topic(name, level, "t"), topic(name, level, "marker")
    shared = "$share/conformance/" + t
    members = []
    for index, qos in enumerate((0, 1)):
        member = Peer.connect(connect_client, level, client_id(name, level, index))
        _need_shared(member)
        granted, _ = member.subscribe_ok(Subscription(shared, qos), Subscription(marker, 1))
        members.append((member, granted))
    pub = Peer.connect(connect_client, level, client_id(name, level, "pub"))
    sent = [b"%d" % n for n in range(6)]
    for payload in sent:
        pub.publish(t, payload, 1)
    pub.publish(marker, MARKER, 1)
    delivered = []
    for member, granted in members:
        received = member.until_marker(marker)
        assert all(p.topic == t and p.qos == min(1, granted) for p in received)
        delivered.extend(p.payload for p in received)
    assert sorted(delivered) == sent


@pytest.mark.mqtt5("MQTT-4.8.2-1", "MQTT-4.8.2-2")
@pytest.mark.parametrize(
    "shared",
    ["$share//{t}", "$share/g", "$share/g/", "$share/g+/{t}", "$share/g#/{t}", "$share/+/{t}"],
)
def test_invalid_shared_subscription_refused(
    connect_client: Client, level: int, shared: str
) -> None:
    """
    A shared filter without a ShareName, with a wildcard in it, or without a Topic
    Filter after it is refused: a failure code, or a close.
    """
    name = "shared-invalid"
    wire = connect_client(level)
    connack = wire.connect(client_id(name, level, shared))
    if not connack.properties.get(PropertyId.SHARED_SUBSCRIPTION_AVAILABLE, 1):
        pytest.skip("the server does not support shared subscriptions")
    wire.send(Subscribe(1, (Subscription(shared.format(t=topic(name, level)), 1),)))
    suback = refused_or_closed(wire)
    if suback is not None:
        assert suback.packet_id == 1
        assert suback.reason_codes[0] >= FAILURE


# -- will messages (3.1.2.5-3.1.2.7) -----------------------------------------------


@pytest.mark.mqtt311("MQTT-3.1.2-8", "MQTT-3.1.2-9", "MQTT-3.1.2-16")
@pytest.mark.mqtt5("MQTT-3.1.2-7", "MQTT-3.1.2-8", "MQTT-3.1.2-14")
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_will_published_when_connection_drops(connect_client: Client, level: int, qos: int) -> None:
    """
    A connection closed without DISCONNECT: the will is published, at its Will QoS
    (capped by the subscription), as a non-retained message when Will Retain is 0.
    """
    name = f"will-drop-{qos}"
    w = topic(name, level, "will")
    sub = Peer.connect(connect_client, level, client_id(name, level))
    (granted,) = sub.subscribe_ok(Subscription(w, 2, retain_as_published=level == 5))
    will = Will(w, b"gone", qos, retain=False)
    doomed = Peer.connect(connect_client, level, client_id(name, level, "doomed"), will=will)
    doomed.wire.close()
    publish = sub.receive_publish()
    assert (publish.topic, publish.payload, publish.qos, publish.retain) == (
        w,
        b"gone",
        min(qos, granted),
        False,
    )
    # Not retained: a new subscriber gets nothing.
    late = Peer.connect(connect_client, level, client_id(name, level, "late"))
    marker = topic(name, level, "marker")
    late.subscribe_ok(marker, w)
    late.publish(marker, MARKER, 1)
    assert late.until_marker(marker) == []


@pytest.mark.mqtt311("MQTT-3.1.2-8", "MQTT-3.1.2-10")
@pytest.mark.mqtt5("MQTT-3.1.2-8", "MQTT-3.1.2-10", "MQTT-3.14.4-3")
def test_will_not_published_after_disconnect(connect_client: Client, level: int) -> None:
    """A DISCONNECT (in 5.0 with reason 0x00) discards the will."""
    name = "will-disconnect"
    w = topic(name, level, "will")
    sub = Peer.connect(connect_client, level, client_id(name, level))
    sub.subscribe_ok(w)
    leaving = Peer.connect(
        connect_client, level, client_id(name, level, "leaving"), will=Will(w, b"will", 1)
    )
    leaving.wire.send(Disconnect())
    leaving.wire.expect_closed()
    sub.publish(w, MARKER, 1)
    assert sub.until_marker(w) == []


@pytest.mark.mqtt5("MQTT-3.1.2-8")
def test_will_published_after_disconnect_with_will(connect_client: Client, level: int) -> None:
    """DISCONNECT with reason 0x04 (Disconnect with Will Message) keeps the will."""
    name = "will-disconnect-04"
    w = topic(name, level, "will")
    sub = Peer.connect(connect_client, level, client_id(name, level))
    sub.subscribe_ok(w)
    leaving = Peer.connect(
        connect_client, level, client_id(name, level, "leaving"), will=Will(w, b"will", 1)
    )
    leaving.wire.send(Disconnect(0x04))
    leaving.wire.expect_closed()
    publish = sub.receive_publish()
    assert (publish.topic, publish.payload) == (w, b"will")


@pytest.mark.mqtt311("MQTT-3.1.2-8")
@pytest.mark.mqtt5("MQTT-3.1.2-8")
def test_will_published_when_server_closes(connect_client: Client, level: int) -> None:
    """A connection the server closes for a protocol violation publishes the will."""
    name = "will-violation"
    w = topic(name, level, "will")
    sub = Peer.connect(connect_client, level, client_id(name, level))
    sub.subscribe_ok(w)
    bad = Peer.connect(
        connect_client, level, client_id(name, level, "bad"), will=Will(w, b"will", 1)
    )
    bad.wire.send_bytes(raw_subscribe(level, 1, []))  # no filter: a protocol violation
    bad.wire.expect_closed_for_error()
    publish = sub.receive_publish()
    assert (publish.topic, publish.payload) == (w, b"will")


@pytest.mark.mqtt311("MQTT-3.1.2-8", "MQTT-3.1.2-17")
@pytest.mark.mqtt5("MQTT-3.1.2-8", "MQTT-3.1.2-15")
def test_will_retain_honoured(connect_client: Client, level: int) -> None:
    """Will Retain 1: the will is published as a retained message."""
    name = "will-retained"
    w, marker = topic(name, level, "will"), topic(name, level, "marker")
    sub = Peer.connect(connect_client, level, client_id(name, level))
    sub.subscribe_ok(w)
    with clearing_retained(connect_client, level, w):
        doomed = Peer.connect(
            connect_client,
            level,
            client_id(name, level, "doomed"),
            will=Will(w, b"retained will", 1, retain=True),
        )
        doomed.wire.close()
        publish = sub.receive_publish()
        assert (publish.topic, publish.payload) == (w, b"retained will")
        late = Peer.connect(connect_client, level, client_id(name, level, "late"))
        late.subscribe_ok(marker, w)
        late.publish(marker, MARKER, 1)
        received = late.until_marker(marker)
        assert [(p.topic, p.payload, p.retain) for p in received] == [(w, b"retained will", True)]
