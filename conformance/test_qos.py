"""
Sections 4.3 (QoS delivery protocols), 4.4 (message delivery retry), 4.5 (message
receipt), 4.6 (message ordering) and the MQTT 5 flow control of 3.3.4 / 4.9, from
the wire: the server both as the receiver of a client's PUBLISH and as the sender
of deliveries.
"""

from __future__ import annotations

import pytest

from conformance.test_publish import (
    MARKER,
    Client,
    acknowledge,
    cid,
    connect,
    end_session,
    messages_until_marker,
    next_message,
    pair,
    persistent,
    publish,
    subscribe,
    topic,
)
from conformance.wire import WireClient
from mqttbroker.codec import (
    Disconnect,
    Pingreq,
    Pingresp,
    PropertyId,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    int_property,
)


def reconnect(connect_client: Client, level: int, client_id: str) -> WireClient:
    """Resume a persistent session, which must be present."""
    client = connect_client(level)
    connack = client.connect(client_id, clean_start=False, properties=persistent(level))
    assert connack.reason_code == 0
    assert connack.session_present is True
    return client


def persistent_subscriber(
    connect_client: Client, level: int, client_id: str, topic_filter: str, qos: int
) -> WireClient:
    """A fresh persistent session subscribed to C{topic_filter}."""
    end_session(connect_client, level, client_id)
    client = connect(
        connect_client, level, client_id, clean_start=False, properties=persistent(level)
    )
    subscribe(client, topic_filter, qos)
    return client


# -- 4.3 as receiver: the server takes a client's PUBLISH ------------------------------


@pytest.mark.mqtt311("MQTT-4.3.3-2")
@pytest.mark.mqtt5("MQTT-4.3.3-10", "MQTT-4.3.3-8")
@pytest.mark.parametrize("resends", [1, 2])
def test_qos2_publish_resent_before_pubrel_is_delivered_once(
    connect_client: Client, level: int, resends: int
) -> None:
    """
    Until the PUBREL, any re-sent QoS 2 PUBLISH (DUP 1, same packet id) is answered
    with PUBREC again and not delivered a second time.
    """
    sub, pub = pair(connect_client, level, f"qos-q2dup{resends}")
    t = topic(f"qos-q2dup{resends}")
    subscribe(sub, t, 2)
    pub.send(Publish(t, b"once", 2, packet_id=11))
    assert pub.expect(Pubrec).packet_id == 11
    for _ in range(resends):
        pub.send(Publish(t, b"once", 2, dup=True, packet_id=11))
        assert pub.expect(Pubrec).packet_id == 11
    pub.send(Pubrel(11))
    assert pub.expect(Pubcomp).packet_id == 11
    publish(pub, t, MARKER, 2, packet_id=12)
    assert [m.payload for m in messages_until_marker(sub)] == [b"once"]


@pytest.mark.mqtt311("MQTT-4.3.3-2")
@pytest.mark.mqtt5("MQTT-4.3.3-12")
def test_qos2_packet_id_reused_after_pubcomp_is_a_new_message(
    connect_client: Client, level: int
) -> None:
    """After PUBCOMP, a PUBLISH with the same packet identifier is a new message."""
    sub, pub = pair(connect_client, level, "qos-q2new")
    t = topic("qos-q2new")
    subscribe(sub, t, 2)
    publish(pub, t, b"first", 2, packet_id=5)
    publish(pub, t, b"second", 2, packet_id=5, dup=True)
    publish(pub, t, MARKER, 2, packet_id=6)
    assert [m.payload for m in messages_until_marker(sub)] == [b"first", b"second"]


@pytest.mark.mqtt311("MQTT-4.3.2-2")
@pytest.mark.mqtt5("MQTT-4.3.2-4", "MQTT-4.3.2-5")
def test_qos1_packet_id_reused_after_puback_is_a_new_message(
    connect_client: Client, level: int
) -> None:
    """
    QoS 1: PUBACK has the PUBLISH's packet id; a later PUBLISH with that id is a new
    message, whatever its DUP flag.
    """
    sub, pub = pair(connect_client, level, "qos-q1new")
    t = topic("qos-q1new")
    subscribe(sub, t, 1)
    publish(pub, t, b"first", 1, packet_id=5)
    publish(pub, t, b"second", 1, packet_id=5, dup=True)
    publish(pub, t, b"third", 1, packet_id=5)
    publish(pub, t, MARKER, 1, packet_id=6)
    assert [m.payload for m in messages_until_marker(sub)] == [b"first", b"second", b"third"]


@pytest.mark.mqtt311("MQTT-4.3.3-2", "MQTT-4.4.0-1")
@pytest.mark.mqtt5("MQTT-4.3.3-10", "MQTT-4.3.3-11", "MQTT-4.4.0-1")
def test_qos2_publish_resent_on_reconnect_is_delivered_once(
    connect_client: Client, level: int
) -> None:
    """
    A publisher with a persistent session re-sends, after reconnecting, a QoS 2
    PUBLISH it had no PUBCOMP for: it is acknowledged again but delivered once; a
    PUBREL re-sent after a second reconnection is still answered with PUBCOMP.
    """
    sub = connect(connect_client, level, cid("qos-q2re-s"))
    t = topic("qos-q2re")
    subscribe(sub, t, 2)
    name = cid("qos-q2re-p")
    end_session(connect_client, level, name)
    pub = connect(connect_client, level, name, clean_start=False, properties=persistent(level))
    pub.send(Publish(t, b"once", 2, packet_id=21))
    assert pub.expect(Pubrec).packet_id == 21
    pub.close()

    pub = reconnect(connect_client, level, name)
    pub.send(Publish(t, b"once", 2, dup=True, packet_id=21))
    assert pub.expect(Pubrec).packet_id == 21
    pub.close()

    pub = reconnect(connect_client, level, name)
    pub.send(Pubrel(21))
    pubcomp = pub.expect(Pubcomp)
    assert (pubcomp.packet_id, pubcomp.reason_code) == (21, 0)
    publish(pub, t, MARKER, 2, packet_id=22)
    assert [m.payload for m in messages_until_marker(sub)] == [b"once"]
    pub.send(Disconnect())
    end_session(connect_client, level, name)


@pytest.mark.mqtt311("MQTT-4.3.2-2", "MQTT-2.3.1-6")
@pytest.mark.mqtt5("MQTT-4.3.2-4", "MQTT-2.2.1-5")
def test_pubacks_follow_the_order_of_the_publishes(connect_client: Client, level: int) -> None:
    """
    The server answers a burst of QoS 1 PUBLISH packets with their PUBACKs in the
    order the PUBLISHes came. (The ordering statements MQTT-4.6.0-2 bind the client
    in both versions; only the packet ids are normative for the server here.)
    """
    pub = connect(connect_client, level, cid("qos-ackorder"))
    t = topic("qos-ackorder")
    ids = [9, 3, 65535, 1, 200, 7, 42, 2, 1000, 5]
    pub.send(*(Publish(t, b"%d" % pid, 1, packet_id=pid) for pid in ids))
    assert [pub.expect(Puback).packet_id for _ in ids] == ids


@pytest.mark.mqtt311("MQTT-4.3.3-2", "MQTT-2.3.1-6")
@pytest.mark.mqtt5("MQTT-4.3.3-8", "MQTT-4.3.3-11", "MQTT-2.2.1-5")
def test_pubrecs_follow_the_order_of_the_publishes(connect_client: Client, level: int) -> None:
    """
    The server answers a burst of QoS 2 PUBLISH packets with their PUBRECs in order,
    and the PUBRELs with PUBCOMPs in order. (MQTT-4.6.0-3 binds the client; only the
    packet ids are normative for the server here.)
    """
    pub = connect(connect_client, level, cid("qos-recorder"))
    t = topic("qos-recorder")
    ids = [9, 3, 65535, 1, 200]
    pub.send(*(Publish(t, b"%d" % pid, 2, packet_id=pid) for pid in ids))
    assert [pub.expect(Pubrec).packet_id for _ in ids] == ids
    pub.send(*(Pubrel(pid) for pid in reversed(ids)))
    assert [pub.expect(Pubcomp).packet_id for _ in ids] == list(reversed(ids))


@pytest.mark.mqtt311("MQTT-4.6.0-6", "MQTT-4.3.3-1", "MQTT-2.3.1-6")
@pytest.mark.mqtt5("MQTT-4.3.3-4", "MQTT-2.2.1-5")
def test_pubrels_follow_the_order_of_the_pubrecs(connect_client: Client, level: int) -> None:
    """
    As QoS 2 sender the server answers each PUBREC with the PUBREL of its packet id,
    in the order the PUBRECs came (3.1.1 has the server follow the client's ordering
    rules, here MQTT-4.6.0-4, when delivering).
    """
    sub, pub = pair(connect_client, level, "qos-relorder")
    t = topic("qos-relorder")
    subscribe(sub, t, 2)
    for i in range(4):
        publish(pub, t, b"%d" % i, 2, packet_id=i + 1)
    ids = [sub.expect(Publish).packet_id for _ in range(4)]
    order = [ids[2], ids[0], ids[3], ids[1]]
    sub.send(*(Pubrec(pid) for pid in order))  # type: ignore[arg-type]
    assert [sub.expect(Pubrel).packet_id for _ in order] == order
    sub.send(*(Pubcomp(pid) for pid in order))  # type: ignore[arg-type]
    publish(pub, t, MARKER, 2, packet_id=9)
    assert messages_until_marker(sub) == []


# -- 4.4 retry: the server re-sends on reconnection ---------------------------------------


@pytest.mark.mqtt311(
    "MQTT-4.4.0-1",
    "MQTT-3.3.1-1",
    "MQTT-2.3.1-3",
    "MQTT-2.3.1-4",
    "MQTT-4.3.2-1",
    "MQTT-4.3.3-1",
    "MQTT-4.6.0-6",
)
@pytest.mark.mqtt5("MQTT-4.4.0-1", "MQTT-3.3.1-1", "MQTT-4.3.2-3", "MQTT-4.3.3-3")
@pytest.mark.parametrize("qos", [1, 2])
def test_unacknowledged_publishes_resent_with_dup(
    connect_client: Client, level: int, qos: int
) -> None:
    """
    On reconnection to a persistent session the server re-sends, first and in their
    original order, the deliveries not acknowledged, with DUP 1 and their packet ids;
    an acknowledged one is not re-sent.
    """
    name = cid(f"qos-resend{qos}")
    t = topic(f"qos-resend{qos}")
    sub = persistent_subscriber(connect_client, level, name, t, qos)
    pub = connect(connect_client, level, cid(f"qos-resend{qos}-p"))
    for i in range(4):
        publish(pub, t, b"%d" % i, qos, packet_id=i + 1)
    first = [sub.expect(Publish) for _ in range(4)]
    assert [m.payload for m in first] == [b"0", b"1", b"2", b"3"]
    acknowledge(sub, first[0])
    if qos == 2:
        assert sub.expect(Pubrel).packet_id == first[0].packet_id
        acknowledge(sub, Pubrel(first[0].packet_id))
    sub.send(Pingreq())
    sub.expect(Pingresp)
    sub.close()

    sub = reconnect(connect_client, level, name)
    again = [sub.expect(Publish) for _ in range(3)]
    assert [m.payload for m in again] == [b"1", b"2", b"3"]
    assert [m.packet_id for m in again] == [m.packet_id for m in first[1:]]
    assert all(m.dup is True and m.qos == qos and m.topic == t for m in again)
    for message in again:
        acknowledge(sub, message)
    publish(pub, t, MARKER, qos, packet_id=9)
    assert messages_until_marker(sub) == []
    end_session(connect_client, level, name)


@pytest.mark.mqtt311("MQTT-4.4.0-1", "MQTT-4.3.3-1", "MQTT-2.3.1-3")
@pytest.mark.mqtt5("MQTT-4.4.0-1", "MQTT-4.3.3-5", "MQTT-4.3.3-6")
def test_unacknowledged_pubrel_resent_not_the_publish(connect_client: Client, level: int) -> None:
    """
    A delivery the subscriber answered with PUBREC but not yet PUBCOMP is resumed on
    reconnection by re-sending the PUBREL with its packet id, never the PUBLISH.
    """
    name = cid("qos-resendrel")
    t = topic("qos-resendrel")
    sub = persistent_subscriber(connect_client, level, name, t, 2)
    pub = connect(connect_client, level, cid("qos-resendrel-p"))
    publish(pub, t, b"two", 2)
    message = sub.expect(Publish)
    assert message.packet_id
    sub.send(Pubrec(message.packet_id))
    assert sub.expect(Pubrel).packet_id == message.packet_id
    sub.close()

    sub = reconnect(connect_client, level, name)
    pubrel = sub.expect(Pubrel)
    assert pubrel.packet_id == message.packet_id
    sub.send(Pubcomp(pubrel.packet_id))
    publish(pub, t, MARKER, 2, packet_id=2)
    assert messages_until_marker(sub) == []
    end_session(connect_client, level, name)


# -- 4.5 receipt: messages kept for a disconnected persistent session ---------------------


@pytest.mark.mqtt311("MQTT-4.5.0-1", "MQTT-4.6.0-6")
@pytest.mark.mqtt5("MQTT-4.5.0-1", "MQTT-4.6.0-5")
@pytest.mark.parametrize("qos", [1, 2])
def test_messages_kept_for_disconnected_session(
    connect_client: Client, level: int, qos: int
) -> None:
    """
    Messages taken while a persistent session's client is away are added to its
    session and delivered, in order, when it reconnects.
    """
    name = cid(f"qos-offline{qos}")
    t = topic(f"qos-offline{qos}")
    sub = persistent_subscriber(connect_client, level, name, t, qos)
    sub.send(Disconnect())
    sub.expect_closed()
    pub = connect(connect_client, level, cid(f"qos-offline{qos}-p"))
    payloads = [b"%d" % i for i in range(5)]
    for i, payload in enumerate(payloads):
        publish(pub, t, payload, qos, packet_id=i + 1)

    sub = reconnect(connect_client, level, name)
    received = [next_message(sub) for _ in payloads]
    for message in received:
        acknowledge(sub, message)
    assert [m.payload for m in received] == payloads
    assert all(m.qos == qos for m in received)
    publish(pub, t, MARKER, qos, packet_id=9)
    assert messages_until_marker(sub) == []
    end_session(connect_client, level, name)


# -- 4.6 ordering -------------------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-4.6.0-5", "MQTT-4.6.0-6")
@pytest.mark.mqtt5("MQTT-4.6.0-5", "MQTT-4.6.0-6")
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_messages_of_a_topic_arrive_in_order(connect_client: Client, level: int, qos: int) -> None:
    """
    Messages one client publishes to one topic at one QoS reach every subscriber in
    the order they were published, across subscribers with different filters.
    """
    a = connect(connect_client, level, cid(f"qos-order{qos}-a"))
    b = connect(connect_client, level, cid(f"qos-order{qos}-b"))
    pub = connect_client(level)
    connack = pub.connect(cid(f"qos-order{qos}-p"))
    # The publisher keeps within the server's Receive Maximum ([MQTT-3.3.4-7]).
    window = min(10, int_property(connack.properties, PropertyId.RECEIVE_MAXIMUM, 65535))
    t = topic(f"qos-order{qos}")
    subscribe(a, t, qos)
    subscribe(b, topic("+"), 2)
    payloads = [b"%03d" % i for i in range(60)]
    for start in range(0, len(payloads), window):
        ids = range(start + 1, min(start + window, len(payloads)) + 1)
        batch = [Publish(t, payloads[i - 1], qos, packet_id=i if qos else None) for i in ids]
        pub.send(*batch)
        if qos == 1:
            assert [pub.expect(Puback).packet_id for _ in ids] == list(ids)
        elif qos == 2:
            assert [pub.expect(Pubrec).packet_id for _ in ids] == list(ids)
            pub.send(*(Pubrel(i) for i in ids))
            assert [pub.expect(Pubcomp).packet_id for _ in ids] == list(ids)
    publish(pub, t, MARKER, qos, packet_id=100)
    for client in (a, b):
        received = messages_until_marker(client)
        assert [m.payload for m in received] == payloads
        assert all(m.qos == qos for m in received)


# -- MQTT 5 flow control: the client's Receive Maximum -----------------------------------


@pytest.mark.mqtt5("MQTT-3.3.4-9", "MQTT-3.3.4-10", "MQTT-4.9.0-2", "MQTT-4.9.0-3")
@pytest.mark.parametrize("qos", [1, 2])
def test_v5_receive_maximum_bounds_unacknowledged_deliveries(
    connect_client: Client, level: int, qos: int
) -> None:
    """
    The server has at most Receive Maximum QoS 1/2 deliveries unacknowledged, keeps
    answering other packets (PINGREQ) meanwhile, and sends the rest, in order, as
    acknowledgements free the quota.
    """
    sub = connect(
        connect_client, level, cid(f"qos-rm{qos}-s"), properties={PropertyId.RECEIVE_MAXIMUM: 2}
    )
    pub = connect(connect_client, level, cid(f"qos-rm{qos}-p"))
    t = topic(f"qos-rm{qos}")
    subscribe(sub, t, qos)
    for i in range(6):
        publish(pub, t, b"%d" % i, qos, packet_id=i + 1)

    def burst() -> list[Publish]:
        """What comes before the PINGRESP: nothing is acknowledged meanwhile."""
        sub.send(Pingreq())
        before, _ = sub.receive_until(Pingresp)
        assert all(isinstance(p, Publish) for p in before), before
        return before  # type: ignore[return-value]

    received = burst()
    assert [m.payload for m in received] == [b"0", b"1"]
    for done in range(2, 6):
        oldest = received[done - 2]
        acknowledge(sub, oldest)
        if qos == 2:
            pubrel = sub.expect(Pubrel)
            assert pubrel.packet_id == oldest.packet_id
            acknowledge(sub, pubrel)
        more = burst()
        assert [m.payload for m in more] == [b"%d" % done]
        received += more
    for message in received[4:]:
        acknowledge(sub, message)
    publish(pub, t, MARKER, 0)
    assert messages_until_marker(sub) == []
