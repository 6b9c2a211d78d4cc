"""
Sections 3.3 (PUBLISH) and 3.4-3.7 (PUBACK, PUBREC, PUBREL, PUBCOMP), from the wire.

Every test talks to the broker as clients would: a subscriber, a publisher, and where
absence must be shown, a marker message published last on the same topic, so that
"the marker came first" proves "nothing else came" without waiting on a clock.

The helpers here are shared with C{test_qos.py} (sections 4.3 to 4.6).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from conformance.rawpackets import varint
from conformance.wire import WireClient
from mqttbroker.codec import (
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
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
)

Client = Callable[[int], WireClient]

#: Makes topics and client ids of this run unique, so a broker that runs on between
#: runs (and keeps retained messages or sessions) cannot leak state into a test.
RUN = uuid.uuid4().hex[:8]
MARKER = b"marker"


# -- helpers -------------------------------------------------------------------------


def topic(name: str) -> str:
    """A topic name of this run."""
    return f"conf/{RUN}/{name}"


def cid(name: str) -> str:
    """A client id of this run."""
    return f"{name}-{RUN}"


def persistent(level: int) -> Properties:
    """CONNECT properties that keep the session after the connection (5.0)."""
    return {PropertyId.SESSION_EXPIRY_INTERVAL: 600} if level == 5 else {}


def connect(connect_client: Client, level: int, client_id: str, **options: object) -> WireClient:
    """A connected client, its CONNACK checked."""
    client = connect_client(level)
    connack = client.connect(client_id, **options)  # type: ignore[arg-type]
    assert connack.reason_code == 0, connack
    return client


def end_session(connect_client: Client, level: int, client_id: str) -> None:
    """Discard a persistent session a test made (clean start, no expiry)."""
    client = connect(connect_client, level, client_id, clean_start=True)
    client.send(Disconnect())
    client.close()


def subscribe(
    client: WireClient,
    topic_filter: str,
    qos: int = 0,
    packet_id: int = 1,
    properties: Properties | None = None,
    **options: object,
) -> Suback:
    """
    Subscribe to one filter and check the SUBACK grants C{qos}. PUBLISH packets the
    broker sends before the SUBACK (retained messages) stay to be received next.
    """
    subscription = Subscription(topic_filter, qos, **options)  # type: ignore[arg-type]
    client.send(Subscribe(packet_id, (subscription,), properties or {}))
    before, suback = client.receive_until(Suback)
    assert all(isinstance(p, Publish) for p in before), before
    client._pending[:0] = before
    assert suback.packet_id == packet_id
    assert suback.reason_codes == (qos,), suback
    return suback


def publish(
    client: WireClient,
    topic_name: str,
    payload: bytes = b"",
    qos: int = 0,
    packet_id: int = 1,
    retain: bool = False,
    properties: Properties | None = None,
    dup: bool = False,
) -> Packet | None:
    """
    Publish, completing the QoS handshake, so the broker has surely taken the
    message when this returns. The PUBACK, or the PUBCOMP, or None at QoS 0.
    """
    client.send(
        Publish(
            topic_name,
            payload,
            qos,
            retain,
            dup,
            packet_id if qos else None,
            properties or {},
        )
    )
    if qos == 0:
        return None
    if qos == 1:
        puback = client.expect(Puback)
        assert puback.packet_id == packet_id
        return puback
    pubrec = client.expect(Pubrec)
    assert pubrec.packet_id == packet_id
    client.send(Pubrel(packet_id))
    pubcomp = client.expect(Pubcomp)
    assert pubcomp.packet_id == packet_id
    return pubcomp


def acknowledge(client: WireClient, packet: Packet) -> None:
    """Answer a packet from the broker as a well-behaved subscriber does."""
    if isinstance(packet, Publish) and packet.qos == 1:
        assert packet.packet_id is not None
        client.send(Puback(packet.packet_id))
    elif isinstance(packet, Publish) and packet.qos == 2:
        assert packet.packet_id is not None
        client.send(Pubrec(packet.packet_id))
    elif isinstance(packet, Pubrel):
        client.send(Pubcomp(packet.packet_id))


def messages_until_marker(client: WireClient, ack: bool = True) -> list[Publish]:
    """
    The PUBLISH packets received before the first one whose payload is L{MARKER}
    (acknowledged as they come unless C{ack} is false); the marker is dropped.
    """
    received: list[Publish] = []
    while True:
        packet = client.receive()
        if ack:
            acknowledge(client, packet)
        if isinstance(packet, Publish):
            if packet.payload == MARKER:
                return received
            received.append(packet)
        else:
            assert isinstance(packet, Pubrel), f"unexpected {packet!r}"


def next_message(client: WireClient) -> Publish:
    """The next PUBLISH, answering any PUBREL that comes first."""
    while True:
        packet = client.receive()
        if isinstance(packet, Publish):
            return packet
        assert isinstance(packet, Pubrel), f"unexpected {packet!r}"
        acknowledge(client, packet)


def raw_publish(
    level: int, topic_bytes: bytes, payload: bytes, flags: int = 0, packet_id: int | None = None
) -> bytes:
    """A PUBLISH built by hand, for packets the codec refuses to encode."""
    body = len(topic_bytes).to_bytes(2, "big") + topic_bytes
    if packet_id is not None:
        body += packet_id.to_bytes(2, "big")
    if level == 5:
        body += b"\x00"  # no properties
    body += payload
    return bytes([0x30 | flags]) + varint(len(body)) + body


def pair(connect_client: Client, level: int, name: str) -> tuple[WireClient, WireClient]:
    """A connected subscriber and publisher for test C{name}."""
    sub = connect(connect_client, level, cid(f"{name}-s"))
    pub = connect(connect_client, level, cid(f"{name}-p"))
    return sub, pub


# -- 3.3.1 fixed header: DUP, QoS, RETAIN ---------------------------------------------


@pytest.mark.mqtt311("MQTT-3.3.1-2", "MQTT-4.3.1-1", "MQTT-2.3.1-5")
@pytest.mark.mqtt5("MQTT-3.3.1-2", "MQTT-4.3.1-1", "MQTT-2.2.1-2")
def test_qos0_delivery_has_dup_0_and_no_packet_id(connect_client: Client, level: int) -> None:
    """A QoS 0 delivery has QoS 0, DUP 0 and no packet identifier."""
    sub, pub = pair(connect_client, level, "pub-q0")
    t = topic("pub-q0")
    subscribe(sub, t, 2)
    publish(pub, t, b"zero", 0)
    message = sub.expect(Publish)
    assert (message.topic, message.payload) == (t, b"zero")
    assert message.qos == 0
    assert message.dup is False
    assert message.packet_id is None


@pytest.mark.mqtt311("MQTT-3.3.1-3")
@pytest.mark.mqtt5("MQTT-3.3.1-3")
@pytest.mark.parametrize("qos", [1, 2])
def test_incoming_dup_is_not_propagated(connect_client: Client, level: int, qos: int) -> None:
    """A first delivery goes out with DUP 0 even when the inbound PUBLISH had DUP 1."""
    sub, pub = pair(connect_client, level, f"pub-dup{qos}")
    t = topic(f"pub-dup{qos}")
    subscribe(sub, t, qos)
    publish(pub, t, b"dup", qos, packet_id=7, dup=True)
    message = next_message(sub)
    assert message.payload == b"dup"
    assert message.qos == qos
    assert message.dup is False


@pytest.mark.mqtt311("MQTT-3.3.1-4")
@pytest.mark.mqtt5("MQTT-3.3.1-4")
def test_qos_3_closes_the_connection(connect_client: Client, level: int) -> None:
    """A PUBLISH with both QoS bits set is malformed: the server closes the connection."""
    sub, pub = pair(connect_client, level, "pub-q3")
    t = topic("pub-q3")
    subscribe(sub, t, 2)
    pub.send_bytes(raw_publish(level, t.encode(), b"bad", flags=0x06, packet_id=1))
    pub.expect_closed_for_error()
    publisher = connect(connect_client, level, cid("pub-q3-p2"))
    publish(publisher, t, MARKER)
    assert messages_until_marker(sub) == []


# -- retained messages ---------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.3.1-5", "MQTT-3.3.1-6", "MQTT-3.3.1-8", "MQTT-3.3.1-9")
@pytest.mark.mqtt5("MQTT-3.3.1-5", "MQTT-3.3.1-9", "MQTT-3.3.1-12")
def test_retained_message_flags(connect_client: Client, level: int) -> None:
    """
    A retained message goes to existing subscribers with RETAIN 0 and to a new
    subscription with RETAIN 1, at the lower of its QoS and the granted one.
    """
    existing, pub = pair(connect_client, level, "pub-ret")
    t = topic("pub-ret")
    subscribe(existing, t, 1)
    publish(pub, t, b"kept", 1, retain=True)
    live = next_message(existing)
    assert (live.payload, live.retain, live.qos) == (b"kept", False, 1)
    acknowledge(existing, live)

    for qos in (0, 1, 2):
        late = connect(connect_client, level, cid(f"pub-ret-late{qos}"))
        subscribe(late, t, qos)
        stored = next_message(late)
        assert (stored.topic, stored.payload, stored.retain) == (t, b"kept", True)
        assert stored.qos == min(qos, 1)
        acknowledge(late, stored)
    publish(pub, t, b"", 0, retain=True)  # clear


@pytest.mark.mqtt311("MQTT-3.3.1-7")
def test_qos0_retained_replaces_the_retained_message(connect_client: Client, level: int) -> None:
    """A QoS 0 retained message discards the message retained before for its topic."""
    pub = connect(connect_client, level, cid("pub-ret0-p"))
    t = topic("pub-ret0")
    publish(pub, t, b"old", 1, retain=True)
    publish(pub, t, b"new", 0, retain=True)
    sub = connect(connect_client, level, cid("pub-ret0-s"))
    subscribe(sub, t, 1)
    publish(pub, t, MARKER, 0)
    payloads = [m.payload for m in messages_until_marker(sub)]
    assert b"old" not in payloads
    assert payloads in ([], [b"new"])  # the new one SHOULD be kept, MAY be dropped
    publish(pub, t, b"", 0, retain=True)


@pytest.mark.mqtt311("MQTT-3.3.1-10", "MQTT-3.3.1-11")
@pytest.mark.mqtt5("MQTT-3.3.1-6", "MQTT-3.3.1-7")
def test_empty_retained_message_clears(connect_client: Client, level: int) -> None:
    """
    A retained PUBLISH with an empty payload is delivered as usual (RETAIN 0) to
    existing subscribers, removes the retained message, and is not retained itself.
    """
    existing, pub = pair(connect_client, level, "pub-clear")
    t = topic("pub-clear")
    publish(pub, t, b"kept", 1, retain=True)
    subscribe(existing, t, 1)
    assert next_message(existing).payload == b"kept"
    publish(pub, t, b"", 1, retain=True)
    live = next_message(existing)
    acknowledge(existing, live)
    assert (live.payload, live.retain) == (b"", False)

    late = connect(connect_client, level, cid("pub-clear-late"))
    subscribe(late, t, 1)
    publish(pub, t, MARKER, 1)
    assert messages_until_marker(late) == []


@pytest.mark.mqtt311("MQTT-3.3.1-12")
@pytest.mark.mqtt5("MQTT-3.3.1-8")
def test_non_retained_publish_keeps_the_retained_message(
    connect_client: Client, level: int
) -> None:
    """A PUBLISH with RETAIN 0 neither stores nor replaces nor removes a retained one."""
    pub = connect(connect_client, level, cid("pub-keep-p"))
    t = topic("pub-keep")
    publish(pub, t, b"kept", 1, retain=True)
    publish(pub, t, b"passing", 1)
    publish(pub, t, b"", 1)
    sub = connect(connect_client, level, cid("pub-keep-s"))
    subscribe(sub, t, 1)
    publish(pub, t, MARKER, 1)
    received = messages_until_marker(sub)
    assert [(m.payload, m.retain) for m in received] == [(b"kept", True)]

    other = topic("pub-keep-none")
    publish(pub, other, b"passing", 1)
    sub2 = connect(connect_client, level, cid("pub-keep-s2"))
    subscribe(sub2, other, 1)
    publish(pub, other, MARKER, 1)
    assert messages_until_marker(sub2) == []
    publish(pub, t, b"", 0, retain=True)


@pytest.mark.mqtt5("MQTT-3.3.1-9", "MQTT-3.3.1-10", "MQTT-3.3.1-11")
@pytest.mark.parametrize("handling", [0, 1, 2])
def test_retain_handling(connect_client: Client, level: int, handling: int) -> None:
    """
    Retain Handling 0 sends retained messages on every SUBSCRIBE, 1 only when the
    subscription is new, 2 never.
    """
    pub = connect(connect_client, level, cid(f"pub-rh{handling}-p"))
    t = topic(f"pub-rh{handling}")
    publish(pub, t, b"kept", 1, retain=True)
    sub = connect(connect_client, level, cid(f"pub-rh{handling}-s"))
    expected = {0: [b"kept"], 1: [b"kept"], 2: []}[handling]
    subscribe(sub, t, 1, retain_handling=handling)
    publish(pub, t, MARKER, 1)
    assert [m.payload for m in messages_until_marker(sub)] == expected
    # The same filter again: the subscription now exists.
    expected = {0: [b"kept"], 1: [], 2: []}[handling]
    subscribe(sub, t, 1, packet_id=2, retain_handling=handling)
    publish(pub, t, MARKER, 1)
    assert [m.payload for m in messages_until_marker(sub)] == expected
    publish(pub, t, b"", 0, retain=True)


@pytest.mark.mqtt5("MQTT-3.3.1-12", "MQTT-3.3.1-13")
@pytest.mark.parametrize("as_published", [False, True])
def test_retain_as_published(connect_client: Client, level: int, as_published: bool) -> None:
    """
    Forwarding to an existing subscription: RETAIN is 0 with Retain As Published 0,
    and as in the received PUBLISH with Retain As Published 1.
    """
    sub, pub = pair(connect_client, level, f"pub-rap{int(as_published)}")
    t = topic(f"pub-rap{int(as_published)}")
    subscribe(sub, t, 1, retain_as_published=as_published)
    publish(pub, t, b"retained", 1, retain=True)
    publish(pub, t, b"plain", 1)
    publish(pub, t, MARKER, 1)
    received = messages_until_marker(sub)
    assert [(m.payload, m.retain) for m in received] == [
        (b"retained", as_published),
        (b"plain", False),
    ]
    publish(pub, t, b"", 0, retain=True)


# -- 3.3.2 topic name ----------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.3.2-2")
@pytest.mark.mqtt5("MQTT-3.3.2-2")
@pytest.mark.parametrize("wildcard", ["+", "#"])
def test_wildcard_in_topic_name_closes(connect_client: Client, level: int, wildcard: str) -> None:
    """A PUBLISH whose topic name holds a wildcard is refused by closing the connection."""
    name = f"pub-wild{'p' if wildcard == '+' else 'h'}"
    sub, pub = pair(connect_client, level, name)
    t = topic(name)
    subscribe(sub, t + "/#", 0)
    pub.send_bytes(raw_publish(level, f"{t}/{wildcard}".encode(), b"bad"))
    pub.expect_closed_for_error()
    other = connect(connect_client, level, cid(f"{name}-p2"))
    publish(other, t + "/x", MARKER)
    assert messages_until_marker(sub) == []


@pytest.mark.mqtt311("MQTT-3.3.2-1", "MQTT-1.5.3-1")
@pytest.mark.mqtt5("MQTT-3.3.2-1", "MQTT-1.5.4-1")
def test_ill_formed_utf8_topic_name_closes(connect_client: Client, level: int) -> None:
    """A topic name that is not well-formed UTF-8 makes the server close the connection."""
    sub, pub = pair(connect_client, level, "pub-utf8")
    t = topic("pub-utf8")
    subscribe(sub, t + "/#", 0)
    pub.send_bytes(raw_publish(level, t.encode() + b"/\xc0\xaf", b"bad"))
    pub.expect_closed_for_error()
    other = connect(connect_client, level, cid("pub-utf8-p2"))
    publish(other, t + "/x", MARKER)
    assert messages_until_marker(sub) == []


@pytest.mark.mqtt311("MQTT-3.3.2-3")
@pytest.mark.mqtt5("MQTT-3.3.2-3")
def test_delivered_topic_name_is_the_published_one(connect_client: Client, level: int) -> None:
    """A delivery through a wildcard filter carries the topic name as published."""
    sub, pub = pair(connect_client, level, "pub-match")
    base = topic("pub-match")
    subscribe(sub, base + "/+/c/#", 0)
    names = [f"{base}/b/c", f"{base}/B b/c/d/e", f"{base}//c/"]
    for name in names:
        publish(pub, name, b"m")
    publish(pub, f"{base}/x/c", MARKER)
    assert [m.topic for m in messages_until_marker(sub)] == names


# -- 3.3.4 actions: responses, QoS of deliveries --------------------------------------


@pytest.mark.mqtt311("MQTT-3.3.4-1", "MQTT-2.3.1-6", "MQTT-4.3.2-2", "MQTT-4.3.3-2")
@pytest.mark.mqtt5("MQTT-3.3.4-1", "MQTT-2.2.1-5", "MQTT-4.3.2-4", "MQTT-4.3.3-8", "MQTT-4.3.3-11")
def test_publish_responses(connect_client: Client, level: int) -> None:
    """
    QoS 0 is not answered, QoS 1 is answered by a PUBACK and QoS 2 by a PUBREC (then
    a PUBREL by a PUBCOMP), each with the packet identifier of what it answers.
    """
    pub = connect(connect_client, level, cid("pub-resp"))
    t = topic("pub-resp")
    pub.send(Publish(t, b"0", 0))
    pub.send(Pingreq())
    pub.expect(Pingresp)
    for pid in (1, 0x1234, 0xFFFF):
        pub.send(Publish(t, b"1", 1, packet_id=pid))
        assert pub.expect(Puback).packet_id == pid
    for pid in (2, 0x4321, 0xFFFE):
        pub.send(Publish(t, b"2", 2, packet_id=pid))
        assert pub.expect(Pubrec).packet_id == pid
        pub.send(Pubrel(pid))
        assert pub.expect(Pubcomp).packet_id == pid


@pytest.mark.mqtt311("MQTT-3.8.4-6")
@pytest.mark.mqtt5("MQTT-3.8.4-8")
@pytest.mark.parametrize("granted", [0, 1, 2])
def test_delivery_qos_is_the_lower_of_published_and_granted(
    connect_client: Client, level: int, granted: int
) -> None:
    """A message is delivered at the minimum of its QoS and the subscription's."""
    sub, pub = pair(connect_client, level, f"pub-down{granted}")
    t = topic(f"pub-down{granted}")
    subscribe(sub, t, granted)
    for qos in (0, 1, 2):
        publish(pub, t, bytes([qos]), qos, packet_id=qos + 1)
    publish(pub, t, MARKER, 0)
    received = messages_until_marker(sub)
    by_payload = {m.payload[0]: m.qos for m in received}
    assert by_payload == {qos: min(qos, granted) for qos in (0, 1, 2)}


@pytest.mark.mqtt311("MQTT-3.3.5-1")
@pytest.mark.mqtt5("MQTT-3.3.4-2")
def test_overlapping_subscriptions_respect_the_highest_qos(
    connect_client: Client, level: int
) -> None:
    """With overlapping subscriptions the message goes out at their maximum QoS."""
    sub, pub = pair(connect_client, level, "pub-overlap")
    t = topic("pub-overlap")
    subscribe(sub, t + "/#", 0, packet_id=1)
    subscribe(sub, t + "/x", 1, packet_id=2)
    publish(pub, t + "/x", b"both", 2)
    publish(pub, t + "/x", MARKER, 0)
    received = messages_until_marker(sub)
    assert received, "the message was not delivered"
    assert all(m.payload == b"both" for m in received)
    assert max(m.qos for m in received) == 1


# -- packet identifiers of deliveries ---------------------------------------------------


@pytest.mark.mqtt311("MQTT-2.3.1-1", "MQTT-2.3.1-4", "MQTT-4.3.2-1", "MQTT-4.3.3-1")
@pytest.mark.mqtt5("MQTT-2.2.1-4", "MQTT-4.3.2-1", "MQTT-4.3.2-2", "MQTT-4.3.3-1", "MQTT-4.3.3-2")
@pytest.mark.parametrize("qos", [1, 2])
def test_deliveries_have_unused_nonzero_packet_ids(
    connect_client: Client, level: int, qos: int
) -> None:
    """
    Every new QoS 1/2 delivery has DUP 0 and a non-zero packet identifier not used by
    another delivery still unacknowledged.
    """
    sub, pub = pair(connect_client, level, f"pub-pid{qos}")
    t = topic(f"pub-pid{qos}")
    subscribe(sub, t, qos)
    for i in range(5):
        publish(pub, t, b"%d" % i, qos, packet_id=i + 1)
    received = [sub.expect(Publish) for _ in range(5)]
    assert [m.payload for m in received] == [b"%d" % i for i in range(5)]
    assert all(m.qos == qos and m.dup is False for m in received)
    ids = [m.packet_id for m in received]
    assert all(pid for pid in ids), ids
    assert len(set(ids)) == 5, ids


# -- 3.4-3.7 acknowledgements ------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-4.3.3-1", "MQTT-2.3.1-6", "MQTT-3.6.1-1")
@pytest.mark.mqtt5("MQTT-4.3.3-4", "MQTT-2.2.1-5", "MQTT-3.6.1-1", "MQTT-3.6.2-1")
def test_server_answers_pubrec_with_pubrel(connect_client: Client, level: int) -> None:
    """
    As QoS 2 sender the server answers PUBREC with a PUBREL of the same packet
    identifier, fixed header flags 0010 (the wire client's decoder refuses others),
    and after PUBCOMP neither re-sends the PUBLISH nor the PUBREL.
    """
    sub, pub = pair(connect_client, level, "pub-pubrel")
    t = topic("pub-pubrel")
    subscribe(sub, t, 2)
    publish(pub, t, b"two", 2)
    message = sub.expect(Publish)
    assert (message.qos, message.dup) == (2, False)
    assert message.packet_id
    sub.send(Pubrec(message.packet_id))
    pubrel = sub.expect(Pubrel)
    assert pubrel.packet_id == message.packet_id
    assert pubrel.reason_code == 0
    sub.send(Pubcomp(message.packet_id))
    publish(pub, t, MARKER, 2)
    assert messages_until_marker(sub) == []


@pytest.mark.mqtt311("MQTT-3.6.1-1")
@pytest.mark.mqtt5("MQTT-3.6.1-1")
def test_pubrel_with_wrong_flags_closes(connect_client: Client, level: int) -> None:
    """A PUBREL whose fixed header flags are not 0010 is malformed: the server closes."""
    sub, pub = pair(connect_client, level, "pub-relflags")
    t = topic("pub-relflags")
    subscribe(sub, t, 2)
    pub.send(Publish(t, b"held", 2, packet_id=3))
    assert pub.expect(Pubrec).packet_id == 3
    pub.send_bytes(b"\x60\x02\x00\x03")
    packets = pub.expect_closed()
    assert not any(isinstance(p, Pubcomp) for p in packets)
    assert all(isinstance(p, Disconnect) and p.reason_code >= 0x80 for p in packets)


@pytest.mark.mqtt5("MQTT-3.4.2-1", "MQTT-3.5.2-1", "MQTT-3.7.2-1")
def test_v5_acknowledgement_reason_codes(connect_client: Client, level: int) -> None:
    """
    PUBACK, PUBREC and PUBCOMP carry reason codes of their own tables: success with a
    subscriber, success or 0x10 (no matching subscribers) without one, and PUBCOMP
    success or 0x92 (packet identifier not found) for an unknown PUBREL.
    """
    sub, pub = pair(connect_client, level, "pub-rc")
    t = topic("pub-rc")
    subscribe(sub, t, 0)
    pub.send(Publish(t, b"a", 1, packet_id=1))
    assert pub.expect(Puback).reason_code == 0x00
    pub.send(Publish(t, b"b", 2, packet_id=2))
    assert pub.expect(Pubrec).reason_code == 0x00
    pub.send(Pubrel(2))
    assert pub.expect(Pubcomp).reason_code == 0x00

    nobody = topic("pub-rc-nobody")
    pub.send(Publish(nobody, b"c", 1, packet_id=3))
    assert pub.expect(Puback).reason_code in (0x00, 0x10)
    pub.send(Publish(nobody, b"d", 2, packet_id=4))
    assert pub.expect(Pubrec).reason_code in (0x00, 0x10)
    pub.send(Pubrel(4))
    assert pub.expect(Pubcomp).reason_code in (0x00, 0x92)

    pub.send(Pubrel(999))
    pubcomp = pub.expect(Pubcomp)
    assert pubcomp.packet_id == 999
    assert pubcomp.reason_code in (0x00, 0x92)


@pytest.mark.mqtt311("MQTT-4.3.3-2")
def test_v311_unknown_pubrel_gets_pubcomp(connect_client: Client, level: int) -> None:
    """The server answers a PUBREL, even for an unknown packet id, with its PUBCOMP."""
    pub = connect(connect_client, level, cid("pub-relunknown"))
    pub.send(Pubrel(999))
    assert pub.expect(Pubcomp).packet_id == 999


# -- payload and MQTT 5 properties forwarded unchanged ----------------------------------


@pytest.mark.mqtt311("MQTT-4.5.0-1")
@pytest.mark.mqtt5("MQTT-4.5.0-1")
def test_payload_delivered_unchanged_to_every_subscriber(
    connect_client: Client, level: int
) -> None:
    """Every matching subscriber receives the message, its payload byte for byte."""
    a = connect(connect_client, level, cid("pub-payload-a"))
    b = connect(connect_client, level, cid("pub-payload-b"))
    pub = connect(connect_client, level, cid("pub-payload-p"))
    t = topic("pub-payload")
    subscribe(a, t, 2)
    subscribe(b, t + "/#", 1)
    payloads = [b"", bytes(range(256)), b"\x00" * 3, bytes(range(256)) * 300]
    for i, payload in enumerate(payloads):
        publish(pub, t, payload, i % 3, packet_id=i + 1)
    publish(pub, t, MARKER, 0)
    for client in (a, b):
        assert [m.payload for m in messages_until_marker(client)] == payloads


@pytest.mark.mqtt5(
    "MQTT-3.3.2-4",
    "MQTT-3.3.2-6",
    "MQTT-3.3.2-15",
    "MQTT-3.3.2-16",
    "MQTT-3.3.2-17",
    "MQTT-3.3.2-18",
    "MQTT-3.3.2-20",
)
def test_v5_properties_forwarded_unaltered(connect_client: Client, level: int) -> None:
    """
    Payload Format Indicator, Content Type, Response Topic, Correlation Data and User
    Properties (in order, repeats kept) reach the subscriber unaltered; the Message
    Expiry Interval is forwarded, no larger than sent.
    """
    sub, pub = pair(connect_client, level, "pub-props")
    t = topic("pub-props")
    subscribe(sub, t, 1)
    users = [("k", "2"), ("a", "1"), ("k", "1"), ("ü", "")]
    properties: Properties = {
        PropertyId.PAYLOAD_FORMAT_INDICATOR: 1,
        PropertyId.CONTENT_TYPE: "text/plain; charset=utf-8",
        PropertyId.RESPONSE_TOPIC: t + "/reply",
        PropertyId.CORRELATION_DATA: b"\x00\xffid",
        PropertyId.USER_PROPERTY: users,
        PropertyId.MESSAGE_EXPIRY_INTERVAL: 3600,
    }
    publish(pub, t, "héllo".encode(), 1, properties=properties)
    message = next_message(sub)
    got = message.properties
    for key in (
        PropertyId.PAYLOAD_FORMAT_INDICATOR,
        PropertyId.CONTENT_TYPE,
        PropertyId.RESPONSE_TOPIC,
        PropertyId.CORRELATION_DATA,
        PropertyId.USER_PROPERTY,
    ):
        assert got.get(key) == properties[key], key
    expiry = got.get(PropertyId.MESSAGE_EXPIRY_INTERVAL)
    assert isinstance(expiry, int)
    assert 0 < expiry <= 3600


@pytest.mark.mqtt5("MQTT-3.3.4-3", "MQTT-3.3.4-4", "MQTT-3.3.4-5")
def test_v5_subscription_identifiers_on_delivery(connect_client: Client, level: int) -> None:
    """
    Deliveries carry the Subscription Identifiers of the subscriptions they match:
    one copy with all of them, or one copy per subscription with its own.
    """
    sub, pub = pair(connect_client, level, "pub-subid")
    t = topic("pub-subid")
    subscribe(sub, t + "/+", 1, packet_id=1, properties={PropertyId.SUBSCRIPTION_IDENTIFIER: [5]})
    subscribe(sub, t + "/x", 1, packet_id=2, properties={PropertyId.SUBSCRIPTION_IDENTIFIER: [9]})
    subscribe(sub, t + "/#", 1, packet_id=3)
    publish(pub, t + "/x", b"m", 1)
    publish(pub, t + "/x", MARKER, 1)
    copies: list[list[int]] = []
    for message in messages_until_marker(sub):
        ids = message.properties.get(PropertyId.SUBSCRIPTION_IDENTIFIER, [])
        assert isinstance(ids, list)
        copies.append([int(i) for i in ids])  # type: ignore[arg-type]
    assert copies, "the message was not delivered"
    assert sorted(i for ids in copies for i in ids) == [5, 9], copies
    if len(copies) > 1:
        assert all(len(ids) <= 1 for ids in copies), copies


# -- MQTT 5 topic aliases -----------------------------------------------------------------


@pytest.mark.mqtt5("MQTT-3.3.2-12", "MQTT-3.3.2-11")
def test_v5_topic_alias_accepted(connect_client: Client, level: int) -> None:
    """
    The server accepts a Topic Alias up to the maximum its CONNACK gave, and sends
    none to a subscriber that allowed none.
    """
    sub = connect(connect_client, level, cid("pub-alias-s"))
    pub = connect_client(level)
    connack = pub.connect(cid("pub-alias-p"))
    maximum = connack.properties.get(PropertyId.TOPIC_ALIAS_MAXIMUM, 0)
    if not maximum:
        pytest.skip("the broker accepts no topic aliases (Topic Alias Maximum 0)")
    assert isinstance(maximum, int)
    t = topic("pub-alias")
    subscribe(sub, t, 0)
    publish(pub, t, b"set", 1, properties={PropertyId.TOPIC_ALIAS: maximum})
    publish(pub, "", b"used", 1, packet_id=2, properties={PropertyId.TOPIC_ALIAS: maximum})
    publish(pub, t, MARKER)
    received = messages_until_marker(sub)
    assert [(m.topic, m.payload) for m in received] == [(t, b"set"), (t, b"used")]
    assert all(PropertyId.TOPIC_ALIAS not in m.properties for m in received)


@pytest.mark.mqtt5("MQTT-3.3.2-7")
def test_v5_topic_alias_not_carried_to_a_new_connection(connect_client: Client, level: int) -> None:
    """A Topic Alias set on one connection means nothing on the next: a protocol error."""
    first = connect_client(level)
    connack = first.connect(cid("pub-alias2-p"))
    if not connack.properties.get(PropertyId.TOPIC_ALIAS_MAXIMUM, 0):
        pytest.skip("the broker accepts no topic aliases (Topic Alias Maximum 0)")
    sub = connect(connect_client, level, cid("pub-alias2-s"))
    t = topic("pub-alias2")
    subscribe(sub, t, 0)
    publish(first, t, b"set", 1, properties={PropertyId.TOPIC_ALIAS: 1})
    first.send(Disconnect())
    first.close()
    second = connect(connect_client, level, cid("pub-alias2-p"))
    second.send(Publish("", b"stale", 0, properties={PropertyId.TOPIC_ALIAS: 1}))
    second.expect_closed_for_error()
    other = connect(connect_client, level, cid("pub-alias2-p2"))
    publish(other, t, MARKER)
    assert [m.payload for m in messages_until_marker(sub)] == [b"set"]
