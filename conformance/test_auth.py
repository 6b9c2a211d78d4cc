"""
Section 3.15 (AUTH) and 4.12 (enhanced authentication) of MQTT 5.0, from the wire;
with them two statements about what lies under MQTT: the ordered, lossless byte
stream (3.1.1 section 7.1.1, 5.0 section 4.2) and the 3.1.1 server that does not
support wildcard subscriptions (3.8.3).

The enhanced authentication tests need a method the broker supports. They speak
SCRAM-SHA-256 (RFC 5802, RFC 7677) with their own client, written here from the RFCs,
over the account that C{--scram-user NAME:PASSWORD} describes (the suite creates one
on the broker it starts itself); they are deselected against a C{--broker} given
without it.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conformance.scram_client import ScramClient
from conformance.test_disconnect import CONNACK_CODES, DISCONNECT_CODES
from conformance.test_malformed import decode, raw_until_closed
from conformance.test_publish import (
    MARKER,
    acknowledge,
    cid,
    connect,
    messages_until_marker,
    pair,
    publish,
    subscribe,
    topic,
)
from conformance.wire import WireClient
from mqttbroker.codec import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Properties,
    PropertyId,
    Puback,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    encode,
)

Client = Callable[[int], WireClient]
Account = tuple[str, str]

METHOD = "SCRAM-SHA-256"
#: The reason codes of the AUTH table (5.0 section 3.15.2.1).
AUTH_CODES = frozenset({0x00, 0x18, 0x19})
CONTINUE = 0x18
REAUTHENTICATE = 0x19
needs_scram = pytest.mark.needs_scram


def auth_properties(data: bytes | None = None) -> Properties:
    """Authentication Method SCRAM-SHA-256, and Authentication Data if given."""
    props: Properties = {PropertyId.AUTHENTICATION_METHOD: METHOD}
    if data is not None:
        props[PropertyId.AUTHENTICATION_DATA] = data
    return props


def data_of(packet: Auth | Connack) -> bytes:
    """The Authentication Data of a packet from the broker."""
    data = packet.properties.get(PropertyId.AUTHENTICATION_DATA, b"")
    assert isinstance(data, bytes)
    return data


def check_broker_auth(packet: Packet, reason_code: int) -> Auth:
    """
    A packet from the broker that must be an AUTH with C{reason_code}, a code of
    the AUTH table, repeating the method the CONNECT named.
    """
    assert isinstance(packet, Auth), f"expected AUTH, got {packet!r}"
    assert packet.reason_code in AUTH_CODES, packet
    assert packet.reason_code == reason_code, packet
    assert packet.properties.get(PropertyId.AUTHENTICATION_METHOD) == METHOD, packet
    return packet


def begin(
    connect_client: Client, account: Account, name: str, password: str | None = None
) -> tuple[WireClient, ScramClient, bytes]:
    """
    A CONNECT starting SCRAM-SHA-256 (with C{password} instead of the account's if
    given) and the broker's challenge, which must be an AUTH 0x18: the client, the
    conversation and the server-first message.
    """
    user, secret = account
    scram = ScramClient(user, secret if password is None else password)
    client = connect_client(5)
    client.send(Connect(cid(name), 5, properties=auth_properties(scram.first())))
    challenge = check_broker_auth(client.receive(), CONTINUE)
    return client, scram, data_of(challenge)


def authenticated(
    connect_client: Client, account: Account, name: str
) -> tuple[WireClient, Connack]:
    """A client connected through a whole SCRAM-SHA-256 exchange, and its CONNACK."""
    client, scram, server_first = begin(connect_client, account, name)
    client.send(Auth(CONTINUE, auth_properties(scram.final(server_first))))
    connack = client.expect(Connack)
    assert connack.reason_code == 0, connack
    assert connack.properties.get(PropertyId.AUTHENTICATION_METHOD) == METHOD, connack
    assert scram.verify(data_of(connack)), "the server-final message does not verify"
    return client, connack


def assert_refused(client: WireClient) -> None:
    """
    The broker ends the exchange: at most one refusing CONNACK (a code of the table,
    0x80 or above, Session Present 0), nothing after it, and the connection closed.
    """
    sent = decode(raw_until_closed(client), 5)
    assert len(sent) <= 1, sent
    for answer in sent:
        assert isinstance(answer, Connack), f"expected at most a CONNACK, got {answer!r}"
        assert answer.reason_code in CONNACK_CODES and answer.reason_code >= 0x80, answer
        assert not answer.session_present, answer


def assert_disconnected(client: WireClient, codes: tuple[int, ...]) -> None:
    """
    The broker closes the connection, its last packet at most a DISCONNECT with one
    of C{codes} (all of the DISCONNECT table) and without Session Expiry Interval.
    """
    sent = decode(raw_until_closed(client), 5)
    assert len(sent) <= 1, sent
    for answer in sent:
        assert isinstance(answer, Disconnect), f"expected a DISCONNECT, got {sent!r}"
        assert answer.reason_code in DISCONNECT_CODES, answer
        assert answer.reason_code in codes, answer
        assert PropertyId.SESSION_EXPIRY_INTERVAL not in answer.properties, answer


def raw_head(client: WireClient) -> bytes:
    """The next whole packet from the broker as raw bytes, or b"" if it closed."""
    data = b""
    client.sock.settimeout(client.timeout)
    while True:
        if len(data) >= 2:
            digits = 1
            while digits < len(data) and data[digits] & 0x80:
                digits += 1
            if digits < len(data):
                length = sum((data[1 + i] & 0x7F) << (7 * i) for i in range(digits))
                if len(data) >= 1 + digits + length:
                    assert len(data) == 1 + digits + length, data
                    return data
        try:
            chunk = client.sock.recv(1)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            assert not data, f"closed inside a packet: {data!r}"
            return b""
        data += chunk


def still_usable(client: WireClient) -> None:
    """The connection carries on: PINGREQ gets PINGRESP, and nothing else came."""
    client.send(Pingreq())
    client.expect(Pingresp)


# -- 3.15.1: AUTH fixed header -------------------------------------------------------------


def with_reserved_flag(packet: Auth) -> bytes:
    """An AUTH, encoded, with a reserved bit of its fixed header set."""
    data = encode(packet, 5)
    return bytes([data[0] | 0x01]) + data[1:]


@pytest.mark.mqtt5("MQTT-3.15.1-1")
def test_auth_with_reserved_flags_closes(connect_client: Client, level: int) -> None:
    """
    An AUTH with a reserved flag bit set, after a plain CONNECT, closes the connection.
    That AUTH also comes without an exchange in progress, a protocol error, so the
    DISCONNECT may say 0x81 or 0x82.
    """
    client = connect(connect_client, level, cid("auth-flags"))
    client.send_bytes(with_reserved_flag(Auth(REAUTHENTICATE, auth_properties(b"n,,n=a,r=b"))))
    assert_disconnected(client, (0x81, 0x82))


@needs_scram
@pytest.mark.mqtt5("MQTT-3.15.1-1")
def test_auth_with_reserved_flags_closes_when_authenticated(
    connect_client: Client, level: int, scram_user: Account
) -> None:
    """
    On a connection that authenticated with SCRAM-SHA-256 a re-authentication AUTH
    is allowed; with a reserved flag bit set it is malformed: DISCONNECT 0x81 at most,
    and the close.
    """
    client, _ = authenticated(connect_client, scram_user, "auth-flags-scram")
    scram = ScramClient(*scram_user)
    client.send_bytes(with_reserved_flag(Auth(REAUTHENTICATE, auth_properties(scram.first()))))
    assert_disconnected(client, (0x81,))


# -- 4.12: methods the broker does not support, and none at all ---------------------------


@pytest.mark.mqtt5("MQTT-4.12.0-1", "MQTT-3.1.4-2")
def test_unsupported_authentication_method_refused(connect_client: Client, level: int) -> None:
    """
    A CONNECT naming an Authentication Method the broker does not support gets no
    AUTH and no success: at most a CONNACK 0x8C or 0x87, then the close.
    """
    client = connect_client(level)
    props: Properties = {PropertyId.AUTHENTICATION_METHOD: "conformance-no-such-method"}
    client.send(Connect(cid("auth-unsupported"), 5, properties=props))
    sent = decode(raw_until_closed(client), 5)
    assert len(sent) <= 1, sent
    for answer in sent:
        assert isinstance(answer, Connack), f"expected at most a CONNACK, got {answer!r}"
        assert answer.reason_code in (0x8C, 0x87), answer
        assert not answer.session_present, answer


@pytest.mark.mqtt5("MQTT-4.12.0-6")
def test_no_authentication_method_means_no_auth(connect_client: Client, level: int) -> None:
    """
    Without an Authentication Method in CONNECT the CONNACK carries neither method
    nor data, and the broker sends no AUTH while the connection is used.
    """
    client = connect_client(level)
    connack = client.connect(cid("auth-none"))
    assert connack.reason_code == 0, connack
    assert PropertyId.AUTHENTICATION_METHOD not in connack.properties, connack
    assert PropertyId.AUTHENTICATION_DATA not in connack.properties, connack
    t = topic("auth-none")
    subscribe(client, t, 1)
    client.send(Publish(t, b"own", 1, packet_id=1))
    answers = [client.receive(), client.receive()]  # the PUBACK and the delivery
    assert sorted(type(p).__name__ for p in answers) == ["Puback", "Publish"], answers
    for answer in answers:
        acknowledge(client, answer)
    still_usable(client)
    client.expect_nothing()


@pytest.mark.mqtt5("MQTT-4.12.0-6", "MQTT-4.13.1-1")
def test_auth_without_enhanced_authentication_is_a_protocol_error(
    connect_client: Client, level: int
) -> None:
    """
    A client that named no Authentication Method may not send AUTH ([MQTT-4.12.0-7]);
    when it does, even with a well-formed re-authentication request, the broker does
    not start an exchange (no AUTH back) but treats it as a protocol error: at most
    DISCONNECT 0x82 (or 0x8C), then the close.
    """
    client = connect(connect_client, level, cid("auth-unasked"))
    scram = ScramClient("conformance", "secret")
    client.send(Auth(REAUTHENTICATE, auth_properties(scram.first())))
    assert_disconnected(client, (0x82, 0x8C))


# -- 4.12: a SCRAM-SHA-256 exchange ---------------------------------------------------------


@needs_scram
@pytest.mark.mqtt5("MQTT-4.12.0-2", "MQTT-4.12.0-5", "MQTT-3.15.2-1", "MQTT-3.1.4-5")
def test_scram_exchange_succeeds(connect_client: Client, level: int, scram_user: Account) -> None:
    """
    The broker asks for the client-final message with an AUTH 0x18 that repeats the
    method; the success CONNACK repeats it too and carries the server-final message,
    which proves the broker knows the credentials; the connection is then usable.
    """
    client, _ = authenticated(connect_client, scram_user, "auth-scram")
    still_usable(client)


@needs_scram
@pytest.mark.mqtt5("MQTT-4.12.0-4", "MQTT-3.1.4-2", "MQTT-4.12.0-2", "MQTT-4.12.0-5")
def test_scram_wrong_password_refused(
    connect_client: Client, level: int, scram_user: Account
) -> None:
    """A wrong proof at the last step: at most a refusing CONNACK, then the close."""
    client, scram, server_first = begin(
        connect_client, scram_user, "auth-wrong", scram_user[1] + "-wrong"
    )
    client.send(Auth(CONTINUE, auth_properties(scram.final(server_first))))
    assert_refused(client)


@needs_scram
@pytest.mark.mqtt5("MQTT-4.12.0-4", "MQTT-3.1.4-2")
def test_scram_garbage_refused(connect_client: Client, level: int, scram_user: Account) -> None:
    """
    Authentication Data that is not SCRAM at all: the broker may refuse at once or
    after more steps (each an AUTH 0x18 with the method, answered with more garbage);
    either way the exchange ends with at most a refusing CONNACK and the close.
    """
    client = connect_client(level)
    client.send(Connect(cid("auth-garbage"), 5, properties=auth_properties(b"not scram")))
    for _ in range(3):
        answer = decode(raw_head(client), 5)
        if not answer:
            return  # closed without a CONNACK
        packet = answer[0]
        if isinstance(packet, Connack):
            assert packet.reason_code in CONNACK_CODES and packet.reason_code >= 0x80, packet
            assert not packet.session_present, packet
            assert raw_until_closed(client) == b"", "packets after a refusing CONNACK"
            return
        check_broker_auth(packet, CONTINUE)
        client.send(Auth(CONTINUE, auth_properties(b"still not scram")))
    raise AssertionError("the broker kept the exchange going")


# -- 4.12.1: re-authentication -----------------------------------------------------------


@needs_scram
@pytest.mark.mqtt5("MQTT-4.12.0-2", "MQTT-4.12.0-5", "MQTT-3.15.2-1")
def test_scram_reauthentication_succeeds(
    connect_client: Client, level: int, scram_user: Account
) -> None:
    """
    A re-authentication (AUTH 0x19) goes through AUTH 0x18 from the broker to an
    AUTH 0x00 carrying the server-final message, each repeating the method; the
    connection carries on.
    """
    client, _ = authenticated(connect_client, scram_user, "auth-reauth")
    scram = ScramClient(*scram_user)
    client.send(Auth(REAUTHENTICATE, auth_properties(scram.first())))
    challenge = check_broker_auth(client.receive(), CONTINUE)
    client.send(Auth(CONTINUE, auth_properties(scram.final(data_of(challenge)))))
    done = check_broker_auth(client.receive(), 0x00)
    assert scram.verify(data_of(done)), "the server-final message does not verify"
    still_usable(client)


@needs_scram
@pytest.mark.mqtt5(
    "MQTT-4.12.1-2",
    "MQTT-3.14.2-1",
    "MQTT-3.14.2-2",
    "MQTT-3.14.4-1",
    "MQTT-3.14.4-2",
)
def test_scram_failed_reauthentication_disconnects(
    connect_client: Client, level: int, scram_user: Account
) -> None:
    """
    A re-authentication with a wrong password ends the connection: at most a
    DISCONNECT with a code saying why (0x87, 0x8C, or the unspecified 0x80), as its
    last packet, then the close.
    """
    client, _ = authenticated(connect_client, scram_user, "auth-reauth-bad")
    scram = ScramClient(scram_user[0], scram_user[1] + "-wrong")
    client.send(Auth(REAUTHENTICATE, auth_properties(scram.first())))
    challenge = check_broker_auth(client.receive(), CONTINUE)
    client.send(Auth(CONTINUE, auth_properties(scram.final(data_of(challenge)))))
    assert_disconnected(client, (0x80, 0x87, 0x8C))


# -- 7.1.1 (3.1.1) / 4.2 (5.0): an ordered, lossless byte stream ---------------------------


def numbered(index: int) -> bytes:
    """
    Payload number C{index}: its number, then a pattern of a length that varies, so
    that packets of every size of remaining length (1, 2 and 3 bytes) go through.
    """
    size = 70_000 + index if index % 40 == 39 else (index * 7919) % 3000
    return index.to_bytes(4, "big") + bytes((index + k) & 0xFF for k in range(size))


@pytest.mark.mqtt311("MQTT-7.1.1-1")
@pytest.mark.mqtt5("MQTT-4.2.0-1")
@pytest.mark.parametrize("qos", [0, 1])
def test_byte_stream_is_ordered_and_lossless(connect_client: Client, level: int, qos: int) -> None:
    """
    Many numbered messages of varied sizes, written back to back on one connection,
    all reach the subscriber whole and in order, and at QoS 1 every one is
    acknowledged: the transport loses, reorders and corrupts nothing either way.
    """
    count = 200
    sub, pub = pair(connect_client, level, f"stream-q{qos}")
    t = topic(f"stream-q{qos}")
    subscribe(sub, t, qos)
    payloads = [numbered(i) for i in range(count)]
    pub.send(
        *(Publish(t, p, qos, packet_id=i + 1 if qos else None) for i, p in enumerate(payloads))
    )
    received: list[bytes] = []
    while len(received) < count:
        message = sub.expect(Publish)
        acknowledge(sub, message)
        received.append(message.payload)
    assert [int.from_bytes(p[:4], "big") for p in received] == list(range(count))
    assert received == payloads
    if qos:
        acks = [pub.expect(Puback).packet_id for _ in range(count)]
        assert sorted(acks) == list(range(1, count + 1))


# -- 3.8.3 (3.1.1): wildcard subscriptions -------------------------------------------------

WILDCARDS = {
    "single-level": ("{base}/+/leaf", ["{base}/a/leaf", "{base}/b/leaf"], ["{base}/a/x"]),
    "multi-level": ("{base}/#", ["{base}", "{base}/a", "{base}/a/b/c"], ["{base}x/a"]),
}


@pytest.mark.mqtt311("MQTT-3.8.3-2")
@pytest.mark.parametrize("kind", list(WILDCARDS))
def test_wildcard_subscription_granted_and_matched_or_refused(
    connect_client: Client, level: int, kind: str
) -> None:
    """
    A server may leave wildcards out, but then refuses such subscriptions (0x80). So
    either the SUBACK refuses the filter and nothing matching it is delivered, or it
    grants it and exactly the matching messages are delivered.
    """
    sub, pub = pair(connect_client, level, f"wild-{kind}")
    base = topic(f"wild-{kind}")
    pattern, matching, other = WILDCARDS[kind]
    marker_topic = topic(f"wild-{kind}-marker")
    sub.send(
        Subscribe(1, (Subscription(pattern.format(base=base), 1), Subscription(marker_topic, 1)))
    )
    suback = sub.expect(Suback)
    granted, marker_granted = suback.reason_codes
    assert marker_granted == 1, suback
    assert granted in (0, 1, 0x80), suback
    packet_id = 1
    for name in other + matching:
        publish(pub, name.format(base=base), b"w", 1, packet_id=packet_id)
        packet_id += 1
    publish(pub, marker_topic, MARKER, 1, packet_id=packet_id)
    delivered = [m.topic for m in messages_until_marker(sub)]
    expected = [name.format(base=base) for name in matching] if granted < 0x80 else []
    assert delivered == expected
