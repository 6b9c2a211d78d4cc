"""
Section 3.1 (CONNECT), 3.2 (CONNACK), 3.12-3.13 (PINGREQ/PINGRESP) and 3.14
(DISCONNECT), from the wire: protocol name and level, connect flags, clean session
and session present, client identifiers, keep alive, session takeover, the will.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import pytest

from conformance.test_malformed import (
    MALFORMED,
    assert_connect_refused,
    connect_bytes,
    decode,
    properties,
    publish_bytes,
    raw_until_closed,
    read_raw_packet,
    string,
)
from conformance.wire import QUIET_TIME, WireClient
from mqttbroker.codec import (
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Pingresp,
    PropertyId,
    Puback,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    Will,
    encode,
)

Client = Callable[[int], WireClient]


@pytest.mark.mqtt311("MQTT-3.2.0-1")
@pytest.mark.mqtt5("MQTT-3.2.0-1")
def test_connect_gets_connack_first(connect_client: Client, level: int) -> None:
    """A valid CONNECT is answered, first, by a success CONNACK."""
    client = connect_client(level)
    connack = client.connect("conf-connect")
    assert connack.reason_code == 0
    client.expect_nothing()


@pytest.mark.mqtt311("MQTT-3.12.4-1")
@pytest.mark.mqtt5("MQTT-3.12.4-1")
def test_pingreq_gets_pingresp(connect_client: Client, level: int) -> None:
    """The server answers PINGREQ with PINGRESP."""
    client = connect_client(level)
    client.connect("conf-ping")
    client.send(Pingreq())
    client.expect(Pingresp)


@pytest.mark.mqtt311("MQTT-3.1.0-1")
@pytest.mark.mqtt5("MQTT-3.1.0-1")
def test_first_packet_must_be_connect(connect_client: Client, level: int) -> None:
    """A first packet other than CONNECT makes the server close the connection."""
    client = connect_client(level)
    client.send_bytes(encode(Pingreq(), 4))
    assert client.expect_closed() == []


@pytest.mark.mqtt311("MQTT-3.1.0-2")
@pytest.mark.mqtt5("MQTT-3.1.0-2")
def test_second_connect_is_a_violation(connect_client: Client, level: int) -> None:
    """A second CONNECT on a connection is a protocol violation: the server closes."""
    client = connect_client(level)
    client.connect("conf-second")
    client.send(Connect("conf-second", level))
    packets = client.expect_closed()
    assert all(not isinstance(p, Connack) for p in packets)


# -- helpers -----------------------------------------------------------------------------


def disconnect(client: WireClient) -> None:
    """A normal DISCONNECT; the server then closes the connection, sending nothing."""
    client.send(Disconnect())
    assert client.expect_closed() == []


def persistent(level: int) -> dict[PropertyId, int]:
    """CONNECT properties that make an MQTT 5 session outlive its connection."""
    return {PropertyId.SESSION_EXPIRY_INTERVAL: 300} if level == 5 else {}


def forget(connect_client: Client, level: int, client_id: str) -> None:
    """Discard whatever session the broker holds for C{client_id}."""
    client = connect_client(level)
    client.connect(client_id, clean_start=True)
    disconnect(client)


def observer(connect_client: Client, level: int, client_id: str, topic: str) -> WireClient:
    """A client subscribed to C{topic} at QoS 1."""
    client = connect_client(level)
    assert client.connect(client_id).reason_code == 0
    client.send(Subscribe(1, (Subscription(topic, 1),)))
    assert client.expect(Suback).reason_codes == (1,)
    return client


# -- 3.1.2.1 / 3.1.2.2 protocol name and level -------------------------------------------


@pytest.mark.mqtt311("MQTT-3.1.2-2", "MQTT-3.2.2-4", "MQTT-3.2.2-5")
def test_unsupported_protocol_level_311(connect_client: Client, level: int) -> None:
    """Protocol level 6: CONNACK return code 1 (session present 0), then close."""
    client = connect_client(level)
    client.send_bytes(connect_bytes(level, "conf-level-6", version=6))
    assert raw_until_closed(client) == b"\x20\x02\x00\x01"


@pytest.mark.mqtt5("MQTT-3.1.2-2", "MQTT-3.2.2-6", "MQTT-3.2.2-7", "MQTT-3.14.0-1")
def test_unsupported_protocol_version_5(connect_client: Client, level: int) -> None:
    """
    Protocol version 6 in an MQTT 5 style CONNECT: the server closes the connection,
    having sent nothing or one refusing CONNACK (session present 0): reason code 0x84
    in 5.0 layout, or, as the server cannot know which layout the client reads,
    return code 1 in the 3.1.1 layout.
    """
    client = connect_client(level)
    client.send_bytes(connect_bytes(level, "conf-version-6", version=6))
    data = raw_until_closed(client)
    if data:
        assert data[0] == 0x20 and len(data) == 2 + data[1], data
        assert data[2] == 0, f"session present set on a refusal: {data!r}"
        assert data[3] in (0x84, 0x01), data
        if data[3] == 0x84:
            decode(data, 5)


@pytest.mark.mqtt311("MQTT-3.1.2-1")
@pytest.mark.mqtt5("MQTT-3.1.2-1", "MQTT-3.14.0-1")
def test_wrong_protocol_name(connect_client: Client, level: int) -> None:
    """
    A protocol name other than "MQTT" is not accepted as MQTT: no successful CONNACK.
    5.0 requires the close (a CONNACK 0x84 may come first); 3.1.1 lets the server
    go on under some other protocol, so there only the absence of acceptance is
    checked.
    """
    client = connect_client(level)
    client.send_bytes(connect_bytes(level, "conf-name", name=b"MQTX"))
    if level == 5:
        for sent in decode(raw_until_closed(client), 5):
            assert isinstance(sent, Connack) and sent.reason_code == 0x84, sent
        return
    data = b""
    with contextlib.suppress(AssertionError):
        data = raw_until_closed(client, 2)
    assert not data.startswith(b"\x20\x02\x00\x00"), data
    assert not data.startswith(b"\x20\x02\x01\x00"), data


# -- 3.1.2.3 connect flags ------------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.1.2-3", "MQTT-3.1.4-1")
@pytest.mark.mqtt5("MQTT-3.1.2-3", "MQTT-3.1.4-1", "MQTT-3.14.0-1")
def test_reserved_connect_flag_closes(connect_client: Client, level: int) -> None:
    """The reserved bit 0 of the Connect Flags set: the server closes."""
    client = connect_client(level)
    client.send_bytes(connect_bytes(level, "conf-reserved-flag", flags=0x03))
    assert_connect_refused(client, level)


def _will(level: int) -> bytes:
    """Will properties (5.0), topic and payload, encoded."""
    return (b"\x00" if level == 5 else b"") + string("conf/will/raw") + string(b"gone")


@pytest.mark.mqtt311("MQTT-3.1.2-11", "MQTT-3.1.2-13", "MQTT-3.1.4-1")
@pytest.mark.mqtt5("MQTT-3.1.2-11", "MQTT-3.1.4-1", "MQTT-3.14.0-1")
def test_will_qos_without_will_flag_closes(connect_client: Client, level: int) -> None:
    """Will QoS 1 with the will flag 0: the CONNECT is malformed, the server closes."""
    client = connect_client(level)
    client.send_bytes(connect_bytes(level, "conf-will-qos-no-flag", flags=0x02 | 0x08))
    assert_connect_refused(client, level)


@pytest.mark.mqtt311("MQTT-3.1.2-11", "MQTT-3.1.2-15", "MQTT-3.1.4-1")
@pytest.mark.mqtt5("MQTT-3.1.2-13", "MQTT-3.1.4-1", "MQTT-3.14.0-1")
def test_will_retain_without_will_flag_closes(connect_client: Client, level: int) -> None:
    """Will retain set with the will flag 0: the CONNECT is malformed, the server closes."""
    client = connect_client(level)
    client.send_bytes(connect_bytes(level, "conf-will-retain-no-flag", flags=0x02 | 0x20))
    assert_connect_refused(client, level)


@pytest.mark.mqtt311("MQTT-3.1.2-14", "MQTT-3.1.4-1")
@pytest.mark.mqtt5("MQTT-3.1.2-12", "MQTT-3.1.4-1", "MQTT-3.14.0-1")
def test_will_qos_3_closes(connect_client: Client, level: int) -> None:
    """Will QoS 3: the CONNECT is malformed, the server closes."""
    client = connect_client(level)
    data = connect_bytes(level, "conf-will-qos-3", flags=0x02 | 0x04 | 0x18, tail=_will(level))
    client.send_bytes(data)
    assert_connect_refused(client, level)


@pytest.mark.mqtt311("MQTT-3.1.2-9", "MQTT-3.1.4-1")
@pytest.mark.mqtt5("MQTT-3.1.2-9", "MQTT-3.1.4-1", "MQTT-3.14.0-1")
def test_will_flag_without_will_fields_closes(connect_client: Client, level: int) -> None:
    """The will flag set but no will topic and payload in the payload: closed."""
    client = connect_client(level)
    client.send_bytes(connect_bytes(level, "conf-will-missing", flags=0x02 | 0x04))
    assert_connect_refused(client, level)


@pytest.mark.mqtt311("MQTT-3.1.2-19", "MQTT-3.1.4-1")
@pytest.mark.mqtt5("MQTT-3.1.2-17", "MQTT-3.1.4-1", "MQTT-3.14.0-1")
def test_user_name_flag_without_user_name_closes(connect_client: Client, level: int) -> None:
    """The user name flag set but no user name in the payload: closed."""
    client = connect_client(level)
    client.send_bytes(connect_bytes(level, "conf-user-missing", flags=0x02 | 0x80))
    assert_connect_refused(client, level)


@pytest.mark.mqtt311("MQTT-3.1.2-21", "MQTT-3.1.4-1")
@pytest.mark.mqtt5("MQTT-3.1.2-19", "MQTT-3.1.4-1", "MQTT-3.14.0-1")
def test_password_flag_without_password_closes(connect_client: Client, level: int) -> None:
    """The password flag set (with a user name) but no password in the payload: closed."""
    client = connect_client(level)
    data = connect_bytes(level, "conf-pass-missing", flags=0x02 | 0xC0, tail=string("user"))
    client.send_bytes(data)
    assert_connect_refused(client, level)


@pytest.mark.mqtt311("MQTT-3.1.2-18", "MQTT-3.1.2-20", "MQTT-3.1.4-1")
@pytest.mark.mqtt5("MQTT-3.1.2-16", "MQTT-3.1.2-18", "MQTT-3.1.4-1", "MQTT-3.14.0-1")
def test_user_name_without_flag_closes(connect_client: Client, level: int) -> None:
    """A user name and password in the payload with both flags 0: the server closes."""
    client = connect_client(level)
    tail = string("user") + string(b"secret")
    client.send_bytes(connect_bytes(level, "conf-user-no-flag", tail=tail))
    assert_connect_refused(client, level)


@pytest.mark.mqtt311("MQTT-3.1.2-22", "MQTT-3.1.4-1")
def test_password_without_user_name_closes_311(connect_client: Client, level: int) -> None:
    """3.1.1: the password flag set with the user name flag 0 is malformed: closed."""
    client = connect_client(level)
    data = connect_bytes(level, "conf-pass-no-user", flags=0x02 | 0x40, tail=string(b"secret"))
    client.send_bytes(data)
    assert_connect_refused(client, level)


@pytest.mark.mqtt311("MQTT-3.1.2-19", "MQTT-3.1.2-21", "MQTT-3.1.4-4")
@pytest.mark.mqtt5("MQTT-3.1.2-17", "MQTT-3.1.2-19", "MQTT-3.1.4-5")
def test_user_name_and_password_accepted(connect_client: Client, level: int) -> None:
    """
    A CONNECT with a user name and a password, flags set, is well-formed; a broker
    that lets anyone in (as the suite assumes) accepts it.
    """
    client = connect_client(level)
    connack = client.connect("conf-user-pass", username="conf-user", password=b"\x00\xffpw")
    assert connack.reason_code == 0
    client.send(Pingreq())
    client.expect(Pingresp)


# -- 3.1.2.4 clean session / clean start, 3.2.2.2 session present ------------------------


@pytest.mark.mqtt311("MQTT-3.1.2-6", "MQTT-3.1.4-3", "MQTT-3.2.2-1", "MQTT-3.2.2-3")
@pytest.mark.mqtt5("MQTT-3.1.2-4", "MQTT-3.1.4-4", "MQTT-3.2.2-2", "MQTT-3.2.2-3")
def test_clean_start_discards_the_session(connect_client: Client, level: int) -> None:
    """
    A clean session (3.1.1) / clean start (5.0) CONNECT is answered with session
    present 0 even when a session was stored, and discards it: a later resume
    finds no session (session present 0) and none of its subscriptions.
    """
    client_id = "conf-clean-discards"
    topic = "conf/clean/discards"
    forget(connect_client, level, client_id)
    first = connect_client(level)
    assert first.connect(client_id, False, properties=persistent(level)).reason_code == 0
    first.send(Subscribe(1, (Subscription(topic, 1),)))
    first.expect(Suback)
    disconnect(first)

    clean = connect_client(level)
    connack = clean.connect(client_id, clean_start=True)
    assert (connack.reason_code, connack.session_present) == (0, False)
    disconnect(clean)

    resumed = connect_client(level)
    connack = resumed.connect(client_id, False, properties=persistent(level))
    assert (connack.reason_code, connack.session_present) == (0, False)
    sender = connect_client(level)
    sender.connect("conf-clean-discards-pub")
    sender.send(Publish(topic, b"lost", 1, packet_id=1))
    sender.expect(Puback)
    resumed.expect_nothing()
    disconnect(resumed)
    forget(connect_client, level, client_id)


@pytest.mark.mqtt311("MQTT-3.1.2-4", "MQTT-3.1.2-5", "MQTT-3.1.3-2", "MQTT-3.2.2-2", "MQTT-3.2.2-3")
@pytest.mark.mqtt5("MQTT-3.1.2-5", "MQTT-3.1.2-6", "MQTT-3.1.2-23", "MQTT-3.1.3-2", "MQTT-3.2.2-3")
def test_session_is_resumed(connect_client: Client, level: int) -> None:
    """
    Without clean session / clean start, a first CONNECT creates a session (session
    present 0) which outlives the connection: the next CONNECT resumes it (session
    present 1), with its subscription and the QoS 1 message that arrived meanwhile.
    """
    client_id = "conf-resume"
    topic = "conf/resume"
    forget(connect_client, level, client_id)
    first = connect_client(level)
    connack = first.connect(client_id, False, properties=persistent(level))
    assert (connack.reason_code, connack.session_present) == (0, False)
    first.send(Subscribe(1, (Subscription(topic, 1),)))
    first.expect(Suback)
    disconnect(first)

    sender = connect_client(level)
    sender.connect("conf-resume-pub")
    sender.send(Publish(topic, b"kept", 1, packet_id=1))
    sender.expect(Puback)

    again = connect_client(level)
    connack = again.connect(client_id, False, properties=persistent(level))
    assert (connack.reason_code, connack.session_present) == (0, True)
    message = again.expect(Publish)
    assert (message.topic, message.payload, message.qos) == (topic, b"kept", 1)
    assert message.packet_id is not None
    again.send(Puback(message.packet_id))
    disconnect(again)
    forget(connect_client, level, client_id)


@pytest.mark.mqtt311("MQTT-3.1.2-6", "MQTT-3.2.2-3")
@pytest.mark.mqtt5("MQTT-3.1.2-6", "MQTT-3.2.2-3")
def test_clean_session_is_not_kept(connect_client: Client, level: int) -> None:
    """
    A clean session (3.1.1), or a 5.0 session with no Session Expiry Interval, ends
    with its connection: a later CONNECT without clean start finds no session.
    """
    client_id = "conf-clean-not-kept"
    first = connect_client(level)
    first.connect(client_id, clean_start=True)
    disconnect(first)
    again = connect_client(level)
    connack = again.connect(client_id, False, properties=persistent(level))
    assert (connack.reason_code, connack.session_present) == (0, False)
    disconnect(again)
    forget(connect_client, level, client_id)


# -- 3.1.3.1 client identifier ---------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.1.3-5")
@pytest.mark.mqtt5("MQTT-3.1.3-5")
def test_alphanumeric_client_id_of_23_bytes_accepted(connect_client: Client, level: int) -> None:
    """A 23-byte client identifier of letters and digits is allowed."""
    client = connect_client(level)
    assert client.connect("conf0ID9abcdefghijKLMNO").reason_code == 0
    client.send(Pingreq())
    client.expect(Pingresp)


@pytest.mark.mqtt311("MQTT-3.1.3-6", "MQTT-3.1.3-9")
def test_empty_client_id_with_clean_session_311(connect_client: Client, level: int) -> None:
    """
    An empty client identifier with clean session 1 is either accepted, the server
    assigning each such client its own identifier (two of them stay connected side
    by side), or refused with return code 2 and closed.
    """
    first = connect_client(level)
    connack = first.connect("", clean_start=True)
    if connack.reason_code != 0:
        assert (connack.reason_code, connack.session_present) == (2, False)
        assert first.expect_closed() == []
        return
    assert not connack.session_present
    second = connect_client(level)
    assert second.connect("", clean_start=True).reason_code == 0
    for client in (first, second):
        client.send(Pingreq())
        client.expect(Pingresp)


@pytest.mark.mqtt311("MQTT-3.1.3-8", "MQTT-3.2.2-4", "MQTT-3.2.2-5")
def test_empty_client_id_without_clean_session_311(connect_client: Client, level: int) -> None:
    """An empty client identifier with clean session 0: return code 2, then close."""
    client = connect_client(level)
    client.send_bytes(connect_bytes(level, "", flags=0x00))
    assert raw_until_closed(client) == b"\x20\x02\x00\x02"


@pytest.mark.mqtt5("MQTT-3.1.3-6", "MQTT-3.1.3-7", "MQTT-3.2.2-16")
def test_empty_client_id_gets_assigned_identifier_5(connect_client: Client, level: int) -> None:
    """
    An empty client identifier (clean start): the CONNACK carries an Assigned Client
    Identifier, a different one for each client, which both stay connected.
    """
    assigned = []
    clients = []
    for _ in range(2):
        client = connect_client(level)
        connack = client.connect("", clean_start=True)
        assert connack.reason_code == 0
        identifier = connack.properties.get(PropertyId.ASSIGNED_CLIENT_IDENTIFIER)
        assert isinstance(identifier, str) and identifier, connack
        assigned.append(identifier)
        clients.append(client)
    assert assigned[0] != assigned[1]
    for client in clients:
        client.send(Pingreq())
        client.expect(Pingresp)


@pytest.mark.mqtt311("MQTT-3.1.4-5", "MQTT-3.1.3-8")
@pytest.mark.mqtt5("MQTT-3.1.4-6")
def test_nothing_processed_after_a_refused_connect(connect_client: Client, level: int) -> None:
    """
    What a client sends after a CONNECT the server refuses is not processed: a
    retained PUBLISH sent right behind it is not stored. (3.1.1 refuses an empty
    client id without clean session; 5.0 an unknown authentication method.)
    """
    topic = "conf/refused/retained"
    if level == 5:
        props = properties(b"\x15" + string("conf-no-such-method"))
        refused = connect_bytes(level, "conf-refused", props=props)
    else:
        refused = connect_bytes(level, "", flags=0x00)
    client = connect_client(level)
    client.send_bytes(refused + publish_bytes(level, topic, b"must not be kept", retain=True))
    packets = decode(raw_until_closed(client), level)
    assert len(packets) <= 1, packets
    for sent in packets:
        assert isinstance(sent, Connack) and sent.reason_code != 0, sent
    watcher = connect_client(level)
    watcher.connect("conf-refused-watch")
    watcher.send(Subscribe(1, (Subscription(topic, 0),)))
    watcher.expect(Suback)
    watcher.expect_nothing()


# -- 3.1.2.10 keep alive ----------------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.1.2-24")
@pytest.mark.mqtt5("MQTT-3.1.2-22", "MQTT-3.2.2-22")
def test_keep_alive_timeout_closes(connect_client: Client, level: int) -> None:
    """
    Keep alive 1 s: while the client sends a packet every half second the connection
    stays open; once it goes quiet the server closes it (after 1.5 s; waited for at
    most a few seconds). A 5.0 server may send DISCONNECT 0x8D first.
    """
    client = connect_client(level)
    connack = client.connect("conf-keep-alive", keep_alive=1)
    assert connack.reason_code == 0
    keep_alive = connack.properties.get(PropertyId.SERVER_KEEP_ALIVE, 1)
    assert isinstance(keep_alive, int)
    if keep_alive == 0 or keep_alive > 3:
        pytest.skip(f"the server set a Server Keep Alive of {keep_alive} s")
    for _ in range(4):
        time.sleep(keep_alive / 2)
        client.send(Pingreq())
        client.expect(Pingresp)
    # 1.5 x keep alive, and a generous margin for servers that check coarsely.
    packets = client.expect_closed(timeout=2 * keep_alive + 5)
    if level == 5:
        assert [p.reason_code for p in packets if isinstance(p, Disconnect)] in ([], [0x8D])
        assert all(isinstance(p, Disconnect) for p in packets), packets
    else:
        assert packets == [], packets


# -- 3.1.4 session takeover ---------------------------------------------------------------------


@pytest.mark.mqtt311("MQTT-3.1.4-2")
@pytest.mark.mqtt5("MQTT-3.1.4-3")
def test_second_connection_takes_over(connect_client: Client, level: int) -> None:
    """
    A second connection with the same client identifier is accepted and the first
    one closed (5.0: after a DISCONNECT with reason code 0x8E, if one is sent).
    """
    first = connect_client(level)
    assert first.connect("conf-takeover").reason_code == 0
    second = connect_client(level)
    assert second.connect("conf-takeover").reason_code == 0
    packets = first.expect_closed()
    if level == 5:
        assert [p.reason_code for p in packets if isinstance(p, Disconnect)] in ([], [0x8E])
        assert all(isinstance(p, Disconnect) for p in packets), packets
    else:
        assert packets == [], packets
    second.send(Pingreq())
    second.expect(Pingresp)


# -- 3.1.2.5 - 3.1.2.7 will message, 3.14 DISCONNECT ------------------------------------------


@pytest.mark.mqtt311("MQTT-3.1.2-8", "MQTT-3.1.2-16")
@pytest.mark.mqtt5("MQTT-3.1.2-7", "MQTT-3.1.2-8", "MQTT-3.1.2-14")
def test_will_published_when_connection_drops(connect_client: Client, level: int) -> None:
    """A connection closed without DISCONNECT: its will is published, not retained."""
    topic = "conf/will/drop"
    watcher = observer(connect_client, level, "conf-will-drop-watch", topic)
    client = connect_client(level)
    assert client.connect("conf-will-drop", will=Will(topic, b"dropped", 1)).reason_code == 0
    client.close()
    message = watcher.expect(Publish)
    assert (message.topic, message.payload, message.retain) == (topic, b"dropped", False)


@pytest.mark.mqtt311("MQTT-3.1.2-8", "MQTT-3.1.2-17")
@pytest.mark.mqtt5("MQTT-3.1.2-8", "MQTT-3.1.2-15")
def test_will_retained_when_will_retain_set(connect_client: Client, level: int) -> None:
    """Will retain 1: the will is published as a retained message."""
    topic = "conf/will/retained"
    client = connect_client(level)
    will = Will(topic, b"retained-will", 1, retain=True)
    assert client.connect("conf-will-retain", will=will).reason_code == 0
    client.close()
    time.sleep(QUIET_TIME)
    late = connect_client(level)
    late.connect("conf-will-retain-late")
    late.send(Subscribe(1, (Subscription(topic, 1),)))
    late.expect(Suback)
    message = late.expect(Publish)
    assert (message.payload, message.retain) == (b"retained-will", True)
    if message.packet_id is not None:
        late.send(Puback(message.packet_id))
    late.send(Publish(topic, b"", 0, retain=True))  # clear it again
    late.send(Pingreq())
    late.receive_until(Pingresp)


@pytest.mark.mqtt311("MQTT-3.14.4-3", "MQTT-3.1.2-10")
@pytest.mark.mqtt5("MQTT-3.14.4-3", "MQTT-3.1.2-10")
def test_will_discarded_after_disconnect(connect_client: Client, level: int) -> None:
    """
    After a normal DISCONNECT the server discards the will (and closes the
    connection): nothing is published.
    """
    topic = "conf/will/disconnect"
    watcher = observer(connect_client, level, "conf-will-disc-watch", topic)
    client = connect_client(level)
    assert client.connect("conf-will-disc", will=Will(topic, b"no")).reason_code == 0
    disconnect(client)
    watcher.expect_nothing(2 * QUIET_TIME)


@pytest.mark.mqtt311("MQTT-3.1.2-12")
@pytest.mark.mqtt5("MQTT-3.1.2-7")
def test_no_will_without_will_flag(connect_client: Client, level: int) -> None:
    """A connection with no will that drops publishes nothing."""
    topic = "conf/will/none"
    watcher = observer(connect_client, level, "conf-will-none-watch", topic)
    client = connect_client(level)
    assert client.connect("conf-will-none").reason_code == 0
    client.close()
    watcher.expect_nothing(2 * QUIET_TIME)


@pytest.mark.mqtt5("MQTT-3.1.2-8")
def test_disconnect_with_will_message_publishes_it(connect_client: Client, level: int) -> None:
    """5.0: DISCONNECT with reason code 0x04 keeps the will, which is then published."""
    topic = "conf/will/0x04"
    watcher = observer(connect_client, level, "conf-will-04-watch", topic)
    client = connect_client(level)
    assert client.connect("conf-will-04", will=Will(topic, b"asked")).reason_code == 0
    client.send(Disconnect(0x04))
    client.expect_closed()
    message = watcher.expect(Publish)
    assert (message.topic, message.payload) == (topic, b"asked")


@pytest.mark.parametrize("fault", ["second-connect", "bad-utf8-topic"])
@pytest.mark.mqtt311("MQTT-3.1.2-8")
@pytest.mark.mqtt5("MQTT-3.1.2-8")
def test_will_published_after_protocol_violation(
    connect_client: Client, level: int, fault: str
) -> None:
    """
    A connection the server closes for a protocol violation (a second CONNECT) or a
    malformed packet (a topic that is not UTF-8) ended without DISCONNECT: its will
    is published (3.1.2.5 lists both cases).
    """
    topic = f"conf/will/{fault}"
    watcher = observer(connect_client, level, f"conf-will-{fault}-watch", topic)
    client = connect_client(level)
    will = Will(topic, b"broken")
    assert client.connect(f"conf-will-{fault}", will=will).reason_code == 0
    if fault == "second-connect":
        client.send_bytes(connect_bytes(level, f"conf-will-{fault}"))
    else:
        client.send_bytes(publish_bytes(level, b"conf/\xff"))
    client.expect_closed()
    message = watcher.expect(Publish)
    assert message.payload == b"broken"


@pytest.mark.mqtt311("MQTT-3.14.1-1")
@pytest.mark.mqtt5("MQTT-3.14.1-1", "MQTT-4.13.1-1")
def test_disconnect_reserved_flags_close(connect_client: Client, level: int) -> None:
    """A DISCONNECT whose reserved fixed header bits are not 0 is malformed: closed."""
    client = connect_client(level)
    assert client.connect("conf-disconnect-flags").reason_code == 0
    client.send_bytes(b"\xe1\x00")
    client.expect_closed_for_error((MALFORMED,))


@pytest.mark.mqtt5("MQTT-3.2.2-1")
def test_connack_reserved_flags_are_zero(connect_client: Client, level: int) -> None:
    """Bits 7-1 of the CONNACK's acknowledge flags are 0 (read from the raw bytes)."""
    client = connect_client(level)
    client.send_bytes(connect_bytes(level, "conf-connack-flags"))
    data = read_raw_packet(client)
    assert data[0] == 0x20 and data[2] & 0xFE == 0 and data[3] == 0, data
