"""
Session state and its lifetime, from the wire: sections 3.1.2.4 (retained messages
are no session state), 4.1 (how long a session lasts), 3.1.3.2 (the MQTT 5 will:
Will Delay Interval and User Properties), 3.3.2.3.3 and 4.3.3 (message expiry
against delivery and the QoS 2 exchange), 4.4 (error acknowledgements), 4.8.2
(shared subscriptions when a member goes away or refuses) and 4.9 (the initial
send quota).

Where absence must be shown, a marker message is published last on a topic the
receiver is subscribed to, as in C{test_publish.py}; the few real waits are for
intervals of one second (Session Expiry, Message Expiry, Will Delay) to run out.
"""

from __future__ import annotations

import time

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
from conformance.test_qos import persistent_subscriber, reconnect
from conformance.wire import WireClient
from mqttbroker.codec import (
    Disconnect,
    Pingreq,
    Pingresp,
    Properties,
    PropertyId,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Unsuback,
    Unsubscribe,
    Will,
)

#: Longer than the one-second intervals the tests set, with room for a broker that
#: checks its timers once a second.
PAST_EXPIRY = 2.2


def expiring(seconds: int = 1) -> Properties:
    """PUBLISH properties with a Message Expiry Interval."""
    return {PropertyId.MESSAGE_EXPIRY_INTERVAL: seconds}


def disconnect(client: WireClient, properties: Properties | None = None) -> None:
    """A normal DISCONNECT, and the broker's close."""
    client.send(Disconnect(0, properties or {}))
    client.expect_closed()


def sync(client: WireClient) -> None:
    """A PINGREQ round trip: what the client sent before it has been handled."""
    client.send(Pingreq())
    client.expect(Pingresp)


# -- 3.1.2.4 retained messages are no session state -------------------------------------


@pytest.mark.mqtt311("MQTT-3.1.2-7")
@pytest.mark.parametrize("clean", [True, False], ids=["clean", "persistent"])
def test_retained_message_outlives_publisher_session(
    connect_client: Client, level: int, clean: bool
) -> None:
    """
    A retained message is kept by the server, not by the publisher's session: it is
    still sent to a new subscriber after that session ended, whether it was a clean
    one (ended by the DISCONNECT) or a persistent one (ended by a clean reconnect).
    """
    name = cid(f"ses-ret-{'c' if clean else 'p'}")
    t = topic(f"ses-ret-{'c' if clean else 'p'}")
    if not clean:
        end_session(connect_client, level, name)
    pub = connect(connect_client, level, name, clean_start=clean)
    publish(pub, t, b"kept", 1, retain=True)
    disconnect(pub)
    if not clean:
        end_session(connect_client, level, name)

    sub = connect(connect_client, level, cid(f"ses-ret-{'c' if clean else 'p'}-s"))
    subscribe(sub, t, 1)
    message = next_message(sub)
    acknowledge(sub, message)
    assert (message.topic, message.payload, message.retain) == (t, b"kept", True)
    publish(sub, t, b"", 0, retain=True)  # clear it again
    sub.send(Pingreq())
    sub.receive_until(Pingresp)


# -- 4.1 the lifetime of session state ---------------------------------------------------


@pytest.mark.mqtt311("MQTT-4.1.0-1")
def test_session_state_kept_while_session_exists(connect_client: Client, level: int) -> None:
    """
    A persistent session keeps its state across connections: on resumption the
    unacknowledged delivery is re-sent, the message queued while away is sent, and
    the subscription still delivers new messages.
    """
    name = cid("ses-resume")
    t = topic("ses-resume")
    sub = persistent_subscriber(connect_client, level, name, t, 1)
    pub = connect(connect_client, level, cid("ses-resume-p"))
    publish(pub, t, b"in flight", 1, packet_id=1)
    first = sub.expect(Publish)
    assert first.payload == b"in flight"
    sub.close()
    publish(pub, t, b"queued", 1, packet_id=2)

    sub = reconnect(connect_client, level, name)
    again = [next_message(sub) for _ in range(2)]
    for message in again:
        acknowledge(sub, message)
    assert [m.payload for m in again] == [b"in flight", b"queued"]
    assert (again[0].dup, again[0].packet_id) == (True, first.packet_id)
    publish(pub, t, b"new", 1, packet_id=3)
    publish(pub, t, MARKER, 1, packet_id=4)
    assert [m.payload for m in messages_until_marker(sub)] == [b"new"]
    end_session(connect_client, level, name)


@pytest.mark.mqtt311("MQTT-4.1.0-2")
@pytest.mark.mqtt5("MQTT-4.1.0-1")
def test_session_state_kept_while_connected(connect_client: Client, level: int) -> None:
    """
    While the connection is open the session state stays: the subscription keeps
    delivering and an inbound QoS 2 message still awaits its PUBREL, across several
    PINGREQs and, at 5.0, past a one-second Session Expiry Interval (which only
    starts when the connection closes).
    """
    name = cid("ses-open")
    t = topic("ses-open")
    expiry: Properties = {PropertyId.SESSION_EXPIRY_INTERVAL: 1} if level == 5 else {}
    client = connect(connect_client, level, name, keep_alive=2, properties=expiry)
    subscribe(client, t, 1)
    client.send(Publish(topic("ses-open/in"), b"held", 2, packet_id=7))
    assert client.expect(Pubrec).packet_id == 7
    pub = connect(connect_client, level, cid("ses-open-p"))
    for round_ in range(4):
        time.sleep(0.5)
        sync(client)
        publish(pub, t, b"%d" % round_, 1, packet_id=round_ + 1)
        message = next_message(client)
        acknowledge(client, message)
        assert message.payload == b"%d" % round_
    client.send(Pubrel(7))
    pubcomp = client.expect(Pubcomp)
    assert (pubcomp.packet_id, pubcomp.reason_code) == (7, 0)


@pytest.mark.mqtt5("MQTT-4.1.0-2")
def test_v5_session_discarded_after_expiry(connect_client: Client, level: int) -> None:
    """
    Once the connection closed and the Session Expiry Interval (1 s) ran out, the
    session is gone: a Clean Start 0 reconnection finds no session, neither the
    message queued for it meanwhile nor its subscription.
    """
    name = cid("ses-expire")
    t = topic("ses-expire")
    end_session(connect_client, level, name)
    sub = connect(
        connect_client,
        level,
        name,
        clean_start=False,
        properties={PropertyId.SESSION_EXPIRY_INTERVAL: 1},
    )
    subscribe(sub, t, 1)
    disconnect(sub)
    pub = connect(connect_client, level, cid("ses-expire-p"))
    publish(pub, t, b"queued", 1, packet_id=1)
    time.sleep(PAST_EXPIRY)

    sub = connect_client(level)
    connack = sub.connect(name, clean_start=False)
    assert (connack.reason_code, connack.session_present) == (0, False)
    publish(pub, t, b"old subscription", 1, packet_id=2)
    # A subscription made now does not match the message published before it; one
    # left over from the old session would have delivered it (and "queued") first.
    subscribe(sub, t, 1)
    publish(pub, t, MARKER, 1, packet_id=3)
    assert messages_until_marker(sub) == []


# -- 3.1.3.2 the MQTT 5 will: delay and user properties ------------------------------------


@pytest.mark.mqtt5("MQTT-3.1.3-9")
def test_v5_will_not_sent_when_session_resumed_within_delay(
    connect_client: Client, level: int
) -> None:
    """
    A will with a Will Delay Interval of 1 s is not published when a new connection
    resumes the session within that second, even after the delay has passed. The
    new connection's own delayed will, left to run out, is published: the broker
    does send delayed wills.
    """
    name = cid("ses-willdelay")
    t = topic("ses-willdelay")
    watcher = connect(connect_client, level, cid("ses-willdelay-w"))
    subscribe(watcher, t, 1)
    end_session(connect_client, level, name)
    delay: Properties = {PropertyId.WILL_DELAY_INTERVAL: 1}
    client = connect(
        connect_client,
        level,
        name,
        clean_start=False,
        will=Will(t, b"first", 1, properties=delay),
        properties=persistent(level),
    )
    client.close()

    client = connect_client(level)
    connack = client.connect(
        name,
        clean_start=False,
        will=Will(t, b"second", 1, properties=delay),
        properties=persistent(level),
    )
    assert (connack.reason_code, connack.session_present) == (0, True)
    time.sleep(1.5)
    pub = connect(connect_client, level, cid("ses-willdelay-p"))
    publish(pub, t, MARKER, 1)
    assert messages_until_marker(watcher) == []

    client.close()
    will = next_message(watcher)
    acknowledge(watcher, will)
    assert will.payload == b"second"
    end_session(connect_client, level, name)


@pytest.mark.mqtt5("MQTT-3.1.3-10")
def test_v5_will_user_properties_kept_in_order(connect_client: Client, level: int) -> None:
    """The published will carries the will's User Properties in order, repeats kept."""
    t = topic("ses-willprops")
    watcher = connect(connect_client, level, cid("ses-willprops-w"))
    subscribe(watcher, t, 1)
    users = [("k", "2"), ("a", "1"), ("k", "1"), ("k", "3"), ("ü", "")]
    will = Will(t, b"gone", 1, properties={PropertyId.USER_PROPERTY: users})
    client = connect(connect_client, level, cid("ses-willprops"), will=will)
    client.close()
    message = next_message(watcher)
    acknowledge(watcher, message)
    assert message.payload == b"gone"
    assert message.properties.get(PropertyId.USER_PROPERTY) == users


# -- 3.3.2.3.3 / 4.3.3 message expiry against delivery -------------------------------------


@pytest.mark.mqtt5("MQTT-3.3.2-5")
def test_v5_expired_message_not_delivered_to_offline_subscriber(
    connect_client: Client, level: int
) -> None:
    """
    Messages whose Message Expiry Interval (1 s) runs out while their subscriber is
    away are not delivered when it comes back; a message published alongside them
    without expiry is.
    """
    name = cid("ses-msgexp")
    t = topic("ses-msgexp")
    sub = persistent_subscriber(connect_client, level, name, t, 2)
    disconnect(sub)
    pub = connect(connect_client, level, cid("ses-msgexp-p"))
    publish(pub, t, b"expires 1", 1, packet_id=1, properties=expiring())
    publish(pub, t, b"stays", 1, packet_id=2)
    publish(pub, t, b"expires 2", 2, packet_id=3, properties=expiring())
    time.sleep(PAST_EXPIRY)

    sub = reconnect(connect_client, level, name)
    publish(pub, t, MARKER, 1, packet_id=4)
    assert [m.payload for m in messages_until_marker(sub)] == [b"stays"]
    end_session(connect_client, level, name)


@pytest.mark.mqtt5("MQTT-4.3.3-7")
def test_v5_sent_qos2_message_resent_after_its_expiry(connect_client: Client, level: int) -> None:
    """
    Once the QoS 2 PUBLISH went to the subscriber, expiry no longer applies: the
    subscriber that did not answer and came back after the expiry (1 s) gets it
    again with DUP 1 (whatever Message Expiry Interval the copy carries).
    """
    name = cid("ses-q2exp")
    t = topic("ses-q2exp")
    sub = persistent_subscriber(connect_client, level, name, t, 2)
    pub = connect(connect_client, level, cid("ses-q2exp-p"))
    publish(pub, t, b"started", 2, properties=expiring())
    first = sub.expect(Publish)
    assert (first.payload, first.qos) == (b"started", 2)
    sub.close()
    time.sleep(PAST_EXPIRY)

    sub = reconnect(connect_client, level, name)
    again = sub.expect(Publish)
    assert (again.payload, again.qos, again.dup) == (b"started", 2, True)
    assert again.packet_id == first.packet_id
    acknowledge(sub, again)
    assert sub.expect(Pubrel).packet_id == first.packet_id
    sub.send(Pubcomp(first.packet_id))
    publish(pub, t, MARKER, 2, packet_id=2)
    assert messages_until_marker(sub) == []
    end_session(connect_client, level, name)


@pytest.mark.mqtt5("MQTT-4.3.3-13")
def test_v5_qos2_exchange_completes_after_expiry(connect_client: Client, level: int) -> None:
    """
    The broker as QoS 2 receiver: a PUBREL sent after the message's expiry (1 s)
    has passed is still answered with a successful PUBCOMP.
    """
    sub, pub = pair(connect_client, level, "ses-relexp")
    t = topic("ses-relexp")
    subscribe(sub, t, 2)
    pub.send(Publish(t, b"late release", 2, packet_id=3, properties=expiring()))
    pubrec = pub.expect(Pubrec)
    assert pubrec.packet_id == 3 and pubrec.reason_code < 0x80, pubrec
    time.sleep(PAST_EXPIRY)
    pub.send(Pubrel(3))
    pubcomp = pub.expect(Pubcomp)
    assert (pubcomp.packet_id, pubcomp.reason_code) == (3, 0)


# -- 4.3.3 / 4.4 error acknowledgements ------------------------------------------------


def refusable_publishes(t: str) -> list[Publish]:
    """
    QoS 2 PUBLISH packets a broker may refuse with an error PUBREC (ids 5, 6): one
    to a C{$SYS} topic (mosquitto: 0x87 Not authorized), and one whose payload is
    not the UTF-8 its Payload Format Indicator announces (this broker: 0x99). The
    first leaves the subscriber of C{t} untouched, should it be accepted.
    """
    return [
        Publish("$SYS/" + t, b"x", 2, packet_id=5),
        Publish(
            t, b"\xff\xfe", 2, packet_id=6, properties={PropertyId.PAYLOAD_FORMAT_INDICATOR: 1}
        ),
    ]


@pytest.mark.mqtt5("MQTT-4.3.3-9")
def test_v5_packet_id_after_error_pubrec_is_a_new_publication(
    connect_client: Client, level: int
) -> None:
    """
    After the broker refused a QoS 2 PUBLISH with a PUBREC of 0x80 or above, a
    PUBLISH with the same packet identifier and no PUBREL in between is a new
    message: acknowledged with PUBREC 0 and delivered. The refusal is provoked with
    the first of L{refusable_publishes} the broker refuses.
    """
    sub, pub = pair(connect_client, level, "ses-recerr")
    t = topic("ses-recerr")
    subscribe(sub, t, 2)
    codes = []
    for attempt in refusable_publishes(t):
        assert attempt.packet_id is not None
        pub.send(attempt)
        pubrec = pub.expect(Pubrec)
        assert pubrec.packet_id == attempt.packet_id
        codes.append(pubrec.reason_code)
        if pubrec.reason_code >= 0x80:
            break
        pub.send(Pubrel(attempt.packet_id))
        pub.expect(Pubcomp)
    else:
        pytest.skip(f"the broker refused none of the PUBLISH packets tried (PUBREC {codes})")
    publish(pub, t, b"new", 2, packet_id=attempt.packet_id)
    publish(pub, t, MARKER, 2, packet_id=9)
    assert [m.payload for m in messages_until_marker(sub)] == [b"new"]


@pytest.mark.mqtt5("MQTT-4.4.0-2")
@pytest.mark.parametrize("qos", [1, 2])
def test_v5_error_ack_ends_delivery(connect_client: Client, level: int, qos: int) -> None:
    """
    A subscriber's PUBACK (QoS 1) or PUBREC (QoS 2) of 0x80 acknowledges the
    delivery: with Receive Maximum 1 the next message comes at once (no PUBREL for
    the refused one), and on resumption only the unanswered next message is re-sent,
    never the refused one.
    """
    name = cid(f"ses-errack{qos}")
    t = topic(f"ses-errack{qos}")
    end_session(connect_client, level, name)
    properties: Properties = {**persistent(level), PropertyId.RECEIVE_MAXIMUM: 1}
    sub = connect(connect_client, level, name, clean_start=False, properties=properties)
    subscribe(sub, t, qos)
    pub = connect(connect_client, level, cid(f"ses-errack{qos}-p"))
    publish(pub, t, b"refused", qos, packet_id=1)
    publish(pub, t, b"unanswered", qos, packet_id=2)
    refused = sub.expect(Publish)
    assert refused.payload == b"refused" and refused.packet_id is not None
    ack = Puback if qos == 1 else Pubrec
    sub.send(ack(refused.packet_id, 0x80))
    following = sub.expect(Publish)
    assert following.payload == b"unanswered"
    sub.close()

    sub = connect_client(level)
    connack = sub.connect(name, clean_start=False, properties=properties)
    assert (connack.reason_code, connack.session_present) == (0, True)
    again = sub.expect(Publish)
    assert (again.payload, again.dup, again.packet_id) == (b"unanswered", True, following.packet_id)
    acknowledge(sub, again)
    publish(pub, t, MARKER, qos, packet_id=3)
    assert messages_until_marker(sub) == []
    end_session(connect_client, level, name)


# -- 4.8.2 shared subscriptions when a member goes away or refuses --------------------------


def shared_member(
    connect_client: Client, level: int, name: str, shared: str, qos: int, **options: object
) -> WireClient:
    """A client that joined the shared subscription C{shared}."""
    client = connect(connect_client, level, name, **options)
    subscribe(client, shared, qos)
    return client


def leave(client: WireClient, shared: str) -> None:
    """Unsubscribe from C{shared}."""
    client.send(Unsubscribe(9, (shared,)))
    client.expect(Unsuback)


@pytest.mark.mqtt5("MQTT-4.8.2-4")
def test_v5_shared_qos2_delivery_completed_to_same_member(
    connect_client: Client, level: int
) -> None:
    """
    A QoS 2 shared delivery interrupted by a lost connection is completed to the
    member that had it, re-sent with DUP 1 when it resumes its session; the other
    member of the group never gets it.
    """
    name = cid("ses-shq2")
    t = topic("ses-shq2")
    shared = f"$share/g/{t}"
    end_session(connect_client, level, name)
    a = shared_member(
        connect_client, level, name, shared, 2, clean_start=False, properties=persistent(level)
    )
    pub = connect(connect_client, level, cid("ses-shq2-p"))
    publish(pub, t, b"owed", 2)
    first = a.expect(Publish)
    assert first.payload == b"owed"
    b = shared_member(connect_client, level, cid("ses-shq2-b"), shared, 2)
    a.close()

    a = reconnect(connect_client, level, name)
    again = a.expect(Publish)
    assert (again.payload, again.dup, again.packet_id) == (b"owed", True, first.packet_id)
    acknowledge(a, again)
    assert a.expect(Pubrel).packet_id == first.packet_id
    a.send(Pubcomp(first.packet_id))
    leave(a, shared)
    publish(pub, t, MARKER, 2, packet_id=2)
    assert messages_until_marker(b) == []
    end_session(connect_client, level, name)


@pytest.mark.mqtt5("MQTT-4.8.2-5")
def test_v5_shared_qos2_not_passed_on_when_session_ends(connect_client: Client, level: int) -> None:
    """
    When the member that had a QoS 2 shared delivery in progress ends its session
    (DISCONNECT setting Session Expiry Interval 0) without completing it, the
    message is not given to the other member.
    """
    name = cid("ses-shend")
    t = topic("ses-shend")
    shared = f"$share/g/{t}"
    end_session(connect_client, level, name)
    a = shared_member(
        connect_client, level, name, shared, 2, clean_start=False, properties=persistent(level)
    )
    pub = connect(connect_client, level, cid("ses-shend-p"))
    publish(pub, t, b"owed", 2)
    assert a.expect(Publish).payload == b"owed"
    b = shared_member(connect_client, level, cid("ses-shend-b"), shared, 2)
    disconnect(a, {PropertyId.SESSION_EXPIRY_INTERVAL: 0})
    publish(pub, t, MARKER, 2, packet_id=2)
    assert messages_until_marker(b) == []


@pytest.mark.mqtt5("MQTT-4.8.2-6")
@pytest.mark.parametrize("qos", [1, 2])
def test_v5_shared_delivery_refused_is_discarded(
    connect_client: Client, level: int, qos: int
) -> None:
    """
    A member that answers a shared delivery with PUBACK or PUBREC 0x80 ends it: the
    message is not tried at the other member, neither then nor when the refusing
    member's session ends.
    """
    t = topic(f"ses-shref{qos}")
    shared = f"$share/g/{t}"
    a = shared_member(connect_client, level, cid(f"ses-shref{qos}-a"), shared, qos)
    pub = connect(connect_client, level, cid(f"ses-shref{qos}-p"))
    publish(pub, t, b"refused", qos)
    message = a.expect(Publish)
    assert message.payload == b"refused" and message.packet_id is not None
    b = shared_member(connect_client, level, cid(f"ses-shref{qos}-b"), shared, qos)
    ack = Puback if qos == 1 else Pubrec
    a.send(ack(message.packet_id, 0x80))
    sync(a)
    disconnect(a)
    publish(pub, t, MARKER, qos, packet_id=2)
    assert messages_until_marker(b) == []


# -- 4.9 flow control: the initial send quota ------------------------------------------


@pytest.mark.mqtt5("MQTT-4.9.0-1")
def test_v5_initial_send_quota_within_receive_maximum(connect_client: Client, level: int) -> None:
    """
    A subscriber resuming with Receive Maximum 1 and three QoS 1 messages waiting
    gets one (the quota is not zero) and no second one before it acknowledges
    (nor more than its Receive Maximum). How many follow each acknowledgement is
    MQTT-3.3.4-9, not checked here.
    """
    name = cid("ses-quota")
    t = topic("ses-quota")
    properties: Properties = {**persistent(level), PropertyId.RECEIVE_MAXIMUM: 1}
    end_session(connect_client, level, name)
    sub = connect(connect_client, level, name, clean_start=False, properties=properties)
    subscribe(sub, t, 1)
    disconnect(sub)
    pub = connect(connect_client, level, cid("ses-quota-p"))
    for i in range(3):
        publish(pub, t, b"%d" % i, 1, packet_id=i + 1)

    sub = connect_client(level)
    connack = sub.connect(name, clean_start=False, properties=properties)
    assert (connack.reason_code, connack.session_present) == (0, True)
    sub.send(Pingreq())
    before, _ = sub.receive_until(Pingresp)
    assert len(before) <= 1, before
    first = before[0] if before else sub.expect(Publish)
    assert isinstance(first, Publish) and first.payload == b"0"
    sub.expect_nothing()
    acknowledge(sub, first)
    publish(pub, t, MARKER, 1, packet_id=4)
    assert [m.payload for m in messages_until_marker(sub)] == [b"1", b"2"]
    end_session(connect_client, level, name)
