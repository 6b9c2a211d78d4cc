"""
Sections 1.5 (data representation), 2 (packet format, packet identifiers, MQTT 5
properties) and the error handling of 4.8 (3.1.1) / 4.13 (5.0), from the wire.

Most tests send bytes the codec would refuse to produce, so this module also holds
the small raw-packet builders that C{test_connect} uses.

What the server must do with a malformed packet or a protocol violation differs
little between the versions: 3.1.1 closes the connection ([MQTT-4.8.0-1] and the
statements of 1.5.3 and 2.2.2); 5.0 closes it too ([MQTT-4.13.1-1]) and may first
send a DISCONNECT (or, while connecting, a CONNACK) whose reason code is 0x80 or
above ([MQTT-4.13.2-1]). The checks accept the DISCONNECT's absence but not a wrong
or successful reason code.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable

import pytest

from conformance.rawpackets import packet, string, varint
from conformance.wire import DEFAULT_TIMEOUT, WireClient
from mqttbroker.codec import (
    Connack,
    Decoder,
    Disconnect,
    Packet,
    Pingresp,
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
)

Client = Callable[[int], WireClient]

MALFORMED = 0x81
PROTOCOL_ERROR = 0x82

# -- raw packet builders --------------------------------------------------------------


def properties(*entries: bytes) -> bytes:
    """An MQTT 5 property block: its length, then the given identifier/value pairs."""
    block = b"".join(entries)
    return varint(len(block)) + block


def connect_bytes(
    level: int,
    client_id: bytes | str,
    flags: int = 0x02,
    keep_alive: int = 0,
    props: bytes | None = None,
    tail: bytes = b"",
    name: bytes = b"MQTT",
    version: int | None = None,
    first: int = 0x10,
) -> bytes:
    """
    A CONNECT built by hand: C{flags} is the Connect Flags byte as is, C{props} the
    MQTT 5 property block (default: none, for level 5), and C{tail} whatever follows
    the client identifier in the payload (will properties, will topic and payload,
    user name, password), already encoded.
    """
    header = string(name) + bytes([level if version is None else version, flags])
    header += struct.pack("!H", keep_alive)
    if level == 5:
        header += b"\x00" if props is None else props
    return packet(first, header + string(client_id) + tail)


def publish_bytes(
    level: int,
    topic: bytes | str,
    payload: bytes = b"",
    qos: int = 0,
    packet_id: int | None = None,
    props: bytes | None = None,
    retain: bool = False,
) -> bytes:
    """A PUBLISH built by hand (the topic given as its raw bytes, if need be)."""
    body = string(topic)
    if qos:
        body += struct.pack("!H", 1 if packet_id is None else packet_id)
    if level == 5:
        body += b"\x00" if props is None else props
    return packet(0x30 | qos << 1 | int(retain), body + payload)


def subscribe_bytes(
    level: int, topic_filter: bytes | str, packet_id: int = 1, first: int = 0x82
) -> bytes:
    """A SUBSCRIBE of one filter at QoS 0, built by hand."""
    body = struct.pack("!H", packet_id)
    if level == 5:
        body += b"\x00"
    return packet(first, body + string(topic_filter) + b"\x00")


def unsubscribe_bytes(
    level: int, topic_filter: bytes | str, packet_id: int = 1, first: int = 0xA2
) -> bytes:
    """An UNSUBSCRIBE of one filter, built by hand."""
    body = struct.pack("!H", packet_id)
    if level == 5:
        body += b"\x00"
    return packet(first, body + string(topic_filter))


# -- reading what the server does ------------------------------------------------------


def raw_until_closed(client: WireClient, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """
    Every byte the broker sends until it closes the connection (a reset counts as a
    close), read without decoding; fails if it is still open after C{timeout}.
    """
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"the broker did not close the connection (it sent {data!r})")
        client.sock.settimeout(left)
        try:
            chunk = client.sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:
            chunk = b""
        if not chunk:
            client.closed = True
            return data
        data += chunk


def read_raw_packet(client: WireClient, timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """
    The next packet from the broker as raw bytes (for checks the decoder would hide);
    only call it when the client's decoder holds nothing, and when nothing else
    should follow that packet at once.
    """
    deadline = time.monotonic() + timeout
    data = b""
    while True:
        if len(data) >= 2:
            digits = 1
            while digits < 5 and digits < len(data) and data[digits] & 0x80:
                digits += 1
            if digits < len(data):
                length = sum((data[1 + i] & 0x7F) << (7 * i) for i in range(digits))
                total = 1 + digits + length
                if len(data) >= total:
                    assert len(data) == total, f"unexpected bytes after a packet: {data!r}"
                    return data
        left = deadline - time.monotonic()
        assert left > 0, f"no whole packet from the broker within {timeout} s: {data!r}"
        client.sock.settimeout(left)
        try:
            chunk = client.sock.recv(65536)
        except TimeoutError:
            continue
        assert chunk, "the broker closed the connection"
        data += chunk


def decode(data: bytes, level: int) -> list[Packet]:
    """The packets in C{data}, which must be well-formed at C{level}."""
    decoder = Decoder(protocol_level=level)
    packets = list(decoder.feed(data))
    assert decoder.buffered == 0, f"the broker sent a truncated packet: {data!r}"
    return packets


def assert_connect_refused(client: WireClient, level: int) -> None:
    """
    The broker closes a connection whose CONNECT is malformed or violates the
    protocol. At 3.1.1 it sends no CONNACK at all ([MQTT-3.1.4-1]); at 5.0 it may send
    one failure CONNACK ([MQTT-3.1.4-1], [MQTT-3.2.2-6], [MQTT-4.13.2-1]) but never a
    DISCONNECT before a successful CONNACK ([MQTT-3.14.0-1]).
    """
    packets = decode(raw_until_closed(client), level)
    if level == 5:
        assert len(packets) <= 1, packets
        for sent in packets:
            assert isinstance(sent, Connack), f"expected at most a CONNACK, got {sent!r}"
            assert sent.reason_code >= 0x80, sent
            assert not sent.session_present, sent
    else:
        assert packets == [], f"a CONNECT that does not conform got {packets!r}"


def connected(connect_client: Client, level: int, client_id: str) -> WireClient:
    """A client connected with a clean session."""
    client = connect_client(level)
    assert client.connect(client_id).reason_code == 0
    return client


def subscribed(connect_client: Client, level: int, client_id: str, topic: str) -> WireClient:
    """A client connected and subscribed to C{topic} at QoS 1."""
    client = connected(connect_client, level, client_id)
    client.send(Subscribe(1, (Subscription(topic, 1),)))
    suback = client.expect(Suback)
    assert suback.reason_codes == (1,), suback
    return client


# -- 1.5 UTF-8 encoded strings ---------------------------------------------------------

#: Byte sequences that are not well-formed UTF-8: a lone continuation byte, an
#: overlong encoding of "/", a truncated sequence, a UTF-16 surrogate (U+D800),
#: a code point above U+10FFFF, and the bytes 0xFE/0xFF that never appear.
ILL_FORMED = {
    "continuation": b"a\x80b",
    "overlong": b"a\xc0\xafb",
    "truncated": b"ab\xe2\x82",
    "surrogate": b"a\xed\xa0\x80b",
    "above-max": b"a\xf4\x90\x80\x80b",
    "ff": b"a\xffb",
}


@pytest.mark.parametrize("sample", sorted(ILL_FORMED))
@pytest.mark.mqtt311("MQTT-1.5.3-1", "MQTT-4.8.0-1")
@pytest.mark.mqtt5("MQTT-1.5.4-1", "MQTT-4.13.1-1", "MQTT-4.13.2-1")
def test_ill_formed_utf8_topic_name_closes(connect_client: Client, level: int, sample: str) -> None:
    """A PUBLISH whose topic name is not well-formed UTF-8 makes the server close."""
    client = connected(connect_client, level, f"conf-utf8-topic-{sample}")
    client.send_bytes(publish_bytes(level, ILL_FORMED[sample]))
    client.expect_closed_for_error((MALFORMED,))


@pytest.mark.mqtt311("MQTT-1.5.3-1", "MQTT-4.8.0-1")
@pytest.mark.mqtt5("MQTT-1.5.4-1", "MQTT-4.13.1-1", "MQTT-4.13.2-1")
def test_ill_formed_utf8_topic_filter_closes(connect_client: Client, level: int) -> None:
    """A SUBSCRIBE whose topic filter is not well-formed UTF-8 makes the server close."""
    client = connected(connect_client, level, "conf-utf8-filter")
    client.send_bytes(subscribe_bytes(level, b"conf/\xed\xbf\xbf/#"))
    client.expect_closed_for_error((MALFORMED,))


@pytest.mark.mqtt311("MQTT-1.5.3-1", "MQTT-4.8.0-1")
@pytest.mark.mqtt5("MQTT-1.5.4-1", "MQTT-4.13.1-1", "MQTT-4.13.2-1")
def test_ill_formed_utf8_unsubscribe_filter_closes(connect_client: Client, level: int) -> None:
    """An UNSUBSCRIBE whose topic filter is not well-formed UTF-8 makes the server close."""
    client = connected(connect_client, level, "conf-utf8-unsub")
    client.send_bytes(unsubscribe_bytes(level, b"conf/\xc3"))
    client.expect_closed_for_error((MALFORMED,))


@pytest.mark.mqtt311("MQTT-1.5.3-2", "MQTT-4.8.0-1")
@pytest.mark.mqtt5("MQTT-1.5.4-2", "MQTT-4.13.1-1", "MQTT-4.13.2-1")
def test_null_character_in_topic_name_closes(connect_client: Client, level: int) -> None:
    """A topic name containing U+0000 makes the server close."""
    client = connected(connect_client, level, "conf-null-topic")
    client.send_bytes(publish_bytes(level, b"conf/a\x00b"))
    client.expect_closed_for_error((MALFORMED,))


@pytest.mark.mqtt311("MQTT-1.5.3-2", "MQTT-4.8.0-1")
@pytest.mark.mqtt5("MQTT-1.5.4-2", "MQTT-4.13.1-1", "MQTT-4.13.2-1")
def test_null_character_in_topic_filter_closes(connect_client: Client, level: int) -> None:
    """A topic filter containing U+0000 makes the server close."""
    client = connected(connect_client, level, "conf-null-filter")
    client.send_bytes(subscribe_bytes(level, b"conf/\x00/#"))
    client.expect_closed_for_error((MALFORMED,))


@pytest.mark.mqtt311("MQTT-1.5.3-1", "MQTT-3.1.3-4", "MQTT-3.1.4-1")
@pytest.mark.mqtt5("MQTT-1.5.4-1", "MQTT-3.1.3-4", "MQTT-3.1.4-1", "MQTT-3.14.0-1")
def test_ill_formed_utf8_client_id_closes(connect_client: Client, level: int) -> None:
    """A CONNECT whose client identifier is not well-formed UTF-8 is refused: closed."""
    client = connect_client(level)
    client.send_bytes(connect_bytes(level, b"conf-\xc3\x28-id"))
    assert_connect_refused(client, level)


@pytest.mark.mqtt311("MQTT-1.5.3-2", "MQTT-3.1.4-1")
@pytest.mark.mqtt5("MQTT-1.5.4-2", "MQTT-3.1.4-1", "MQTT-3.14.0-1")
def test_null_character_in_client_id_closes(connect_client: Client, level: int) -> None:
    """A CONNECT whose client identifier contains U+0000 is refused: closed."""
    client = connect_client(level)
    client.send_bytes(connect_bytes(level, b"conf-\x00-id"))
    assert_connect_refused(client, level)


@pytest.mark.mqtt311("MQTT-1.5.3-1", "MQTT-3.1.3-11", "MQTT-3.1.4-1")
@pytest.mark.mqtt5("MQTT-1.5.4-1", "MQTT-3.1.3-12", "MQTT-3.1.4-1", "MQTT-3.14.0-1")
def test_ill_formed_utf8_user_name_closes(connect_client: Client, level: int) -> None:
    """A CONNECT whose user name is not well-formed UTF-8 is refused: closed."""
    client = connect_client(level)
    client.send_bytes(
        connect_bytes(level, "conf-utf8-user", flags=0x82, tail=string(b"user\xed\xa0\x80"))
    )
    assert_connect_refused(client, level)


@pytest.mark.mqtt311("MQTT-1.5.3-1", "MQTT-3.1.3-10", "MQTT-3.1.4-1")
@pytest.mark.mqtt5("MQTT-1.5.4-1", "MQTT-3.1.3-11", "MQTT-3.1.4-1", "MQTT-3.14.0-1")
def test_ill_formed_utf8_will_topic_closes(connect_client: Client, level: int) -> None:
    """A CONNECT whose will topic is not well-formed UTF-8 is refused: closed."""
    client = connect_client(level)
    will = (b"\x00" if level == 5 else b"") + string(b"conf/will/\xff") + string(b"gone")
    client.send_bytes(connect_bytes(level, "conf-utf8-will", flags=0x06, tail=will))
    assert_connect_refused(client, level)


@pytest.mark.mqtt311("MQTT-1.5.3-3")
@pytest.mark.mqtt5("MQTT-1.5.4-3")
def test_byte_order_mark_is_kept(connect_client: Client, level: int) -> None:
    """
    U+FEFF (bytes EF BB BF) in a topic is an ordinary character: not stripped, so a
    message published with it reaches a filter with it, and not one without it.
    """
    with_bom = "\ufeffconf/bom"
    receiver = subscribed(connect_client, level, "conf-bom-sub", with_bom)
    plain = subscribed(connect_client, level, "conf-bom-plain", "conf/bom")
    sender = connected(connect_client, level, "conf-bom-pub")
    sender.send(Publish(with_bom, b"zwnbsp", 1, packet_id=7))
    sender.expect(Puback)
    message = receiver.expect(Publish)
    assert message.topic == with_bom
    assert message.payload == b"zwnbsp"
    plain.expect_nothing()


@pytest.mark.mqtt5("MQTT-1.5.4-1", "MQTT-1.5.7-1", "MQTT-4.13.1-1", "MQTT-4.13.2-1")
def test_ill_formed_utf8_in_user_property_closes(connect_client: Client, level: int) -> None:
    """Both strings of a UTF-8 string pair (User Property) must be well-formed."""
    client = connected(connect_client, level, "conf-utf8-pair")
    pair = b"\x26" + string(b"name") + string(b"val\xc0ue")
    client.send_bytes(publish_bytes(level, "conf/pair", props=properties(pair)))
    client.expect_closed_for_error((MALFORMED,))


# -- 1.5.5 / 2.1.4 variable byte integer -----------------------------------------------


@pytest.mark.mqtt311("MQTT-4.8.0-1")
@pytest.mark.mqtt5("MQTT-4.13.1-1", "MQTT-4.13.2-1")
def test_remaining_length_of_five_bytes_closes(connect_client: Client, level: int) -> None:
    """A remaining length that runs on to a fifth byte is malformed: the server closes."""
    client = connected(connect_client, level, "conf-varint-5")
    client.send_bytes(b"\x30\xff\xff\xff\xff\x01")
    client.expect_closed_for_error((MALFORMED, 0x95))


@pytest.mark.mqtt5("MQTT-1.5.5-1")
def test_server_remaining_length_is_minimal(connect_client: Client, level: int) -> None:
    """
    The server encodes the remaining length of what it sends in as few bytes as
    possible: forwarded PUBLISH packets of 200 and 20000 bytes use 2 and 3 bytes.
    """
    topic = "conf/varint/min"
    receiver = connected(connect_client, level, "conf-varint-sub")
    receiver.send(Subscribe(1, (Subscription(topic, 0),)))
    receiver.expect(Suback)
    sender = connected(connect_client, level, "conf-varint-pub")
    for size, digits in ((200, 2), (20000, 3)):
        sender.send(Publish(topic, b"x" * size))
        data = read_raw_packet(receiver)
        assert data[0] >> 4 == 3, data[:8]
        assert len(data) > 1 + digits and data[digits] < 0x80 and data[digits] != 0, data[:8]
        assert data.endswith(b"x" * size)


# -- 2.1.3 / 2.2.2 reserved flag bits of the fixed header ------------------------------


def _reserved_flags_packet(kind: str, level: int) -> bytes:
    if kind == "pingreq":
        return b"\xc1\x00"
    if kind == "subscribe":
        return subscribe_bytes(level, "conf/flags/#", first=0x80)
    if kind == "subscribe-dup":
        return subscribe_bytes(level, "conf/flags/#", first=0x8A)
    if kind == "unsubscribe":
        return unsubscribe_bytes(level, "conf/flags/#", first=0xA0)
    if kind == "pubrel":
        return packet(0x60, b"\x00\x05")
    if kind == "puback":
        return packet(0x41, b"\x00\x05")
    if kind == "pubrec":
        return packet(0x58, b"\x00\x05")
    if kind == "pubcomp":
        return packet(0x72, b"\x00\x05")
    raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind",
    [
        "pingreq",
        "subscribe",
        "subscribe-dup",
        "unsubscribe",
        "pubrel",
        "puback",
        "pubrec",
        "pubcomp",
    ],
)
@pytest.mark.mqtt311("MQTT-2.2.2-1", "MQTT-2.2.2-2")
@pytest.mark.mqtt5("MQTT-2.1.3-1", "MQTT-4.13.1-1", "MQTT-4.13.2-1")
def test_reserved_fixed_header_flags_close(connect_client: Client, level: int, kind: str) -> None:
    """A packet whose reserved fixed header flags are not the listed value: closed."""
    client = connected(connect_client, level, f"conf-flags-{kind}")
    client.send_bytes(_reserved_flags_packet(kind, level))
    client.expect_closed_for_error((MALFORMED,))


@pytest.mark.mqtt311("MQTT-2.2.2-1", "MQTT-2.2.2-2", "MQTT-3.1.4-1")
@pytest.mark.mqtt5("MQTT-2.1.3-1", "MQTT-3.1.4-1", "MQTT-3.14.0-1")
def test_connect_reserved_fixed_header_flags_close(connect_client: Client, level: int) -> None:
    """A CONNECT whose fixed header flags are not 0000 is refused: closed."""
    client = connect_client(level)
    client.send_bytes(connect_bytes(level, "conf-flags-connect", first=0x12))
    assert_connect_refused(client, level)


# -- 2.3 (3.1.1) / 2.2.1 (5.0) packet identifiers ----------------------------------------


@pytest.mark.mqtt311("MQTT-2.3.1-6", "MQTT-2.3.1-7")
@pytest.mark.mqtt5("MQTT-2.2.1-5", "MQTT-2.2.1-6")
def test_acknowledgements_carry_the_packet_identifier(connect_client: Client, level: int) -> None:
    """
    PUBACK, PUBREC, SUBACK and UNSUBACK carry the packet identifier of the packet
    they answer (and PUBCOMP that of the PUBREL), whatever its value.
    """
    client = connected(connect_client, level, "conf-pid-echo")
    client.send(Subscribe(0xFFFF, (Subscription("conf/pid/echo", 1),)))
    assert client.expect(Suback).packet_id == 0xFFFF
    client.send(Unsubscribe(0x0100, ("conf/pid/echo",)))
    assert client.expect(Unsuback).packet_id == 0x0100
    client.send(Publish("conf/pid/none", b"1", 1, packet_id=0x1234))
    assert client.expect(Puback).packet_id == 0x1234
    client.send(Publish("conf/pid/none", b"2", 2, packet_id=0x8001))
    assert client.expect(Pubrec).packet_id == 0x8001
    client.send(Pubrel(0x8001))
    assert client.expect(Pubcomp).packet_id == 0x8001


@pytest.mark.mqtt311("MQTT-2.3.1-1")
@pytest.mark.mqtt5("MQTT-2.2.1-4")
def test_server_publish_packet_identifiers(connect_client: Client, level: int) -> None:
    """
    The PUBLISH packets at QoS 1 the server sends carry non-zero packet identifiers,
    distinct while unacknowledged.
    """
    topic = "conf/pid/server"
    receiver = subscribed(connect_client, level, "conf-pid-sub", topic)
    sender = connected(connect_client, level, "conf-pid-pub")
    for n in range(1, 4):
        sender.send(Publish(topic, b"%d" % n, 1, packet_id=n))
        sender.expect(Puback)
    ids = [receiver.expect(Publish).packet_id for _ in range(3)]
    assert all(ids), ids
    assert len(set(ids)) == 3, ids
    for packet_id in ids:
        assert packet_id is not None
        receiver.send(Puback(packet_id))
    receiver.expect_nothing()


@pytest.mark.mqtt311("MQTT-2.3.1-5")
@pytest.mark.mqtt5("MQTT-2.2.1-2")
def test_qos0_publish_has_no_packet_identifier(connect_client: Client, level: int) -> None:
    """A QoS 0 PUBLISH from the server has no packet identifier (read byte by byte)."""
    topic = "conf/pid/qos0"
    receiver = connected(connect_client, level, "conf-pid0-sub")
    receiver.send(Subscribe(1, (Subscription(topic, 0),)))
    receiver.expect(Suback)
    sender = connected(connect_client, level, "conf-pid0-pub")
    sender.send(Publish(topic, b"payload-0"))
    data = read_raw_packet(receiver)
    assert data[0] == 0x30, f"first byte 0x{data[0]:02X}"
    assert data[1] < 0x80, data
    body = data[2:]
    assert body[:2] == struct.pack("!H", len(topic))
    rest = body[2 + len(topic) :]
    if level == 5:
        # Skip the properties (a one-byte length is enough for what a broker adds).
        assert rest[0] < 0x80
        rest = rest[1 + rest[0] :]
    assert rest == b"payload-0", f"bytes between topic and payload: {rest!r}"


@pytest.mark.parametrize("kind", ["publish-qos1", "publish-qos2", "subscribe", "unsubscribe"])
@pytest.mark.mqtt311("MQTT-4.8.0-1")
@pytest.mark.mqtt5("MQTT-4.13.1-1", "MQTT-4.13.2-1")
def test_packet_identifier_zero_closes(connect_client: Client, level: int, kind: str) -> None:
    """
    A packet that needs a packet identifier and carries 0 breaks [MQTT-2.3.1-1]
    (3.1.1) / [MQTT-2.2.1-3] (5.0): a protocol violation, and the server closes.
    """
    client = connected(connect_client, level, f"conf-pid-zero-{kind}")
    if kind == "publish-qos1":
        data = publish_bytes(level, "conf/pid/zero", b"x", 1, packet_id=0)
    elif kind == "publish-qos2":
        data = publish_bytes(level, "conf/pid/zero", b"x", 2, packet_id=0)
    elif kind == "subscribe":
        data = subscribe_bytes(level, "conf/pid/zero", packet_id=0)
    else:
        data = unsubscribe_bytes(level, "conf/pid/zero", packet_id=0)
    client.send_bytes(data)
    client.expect_closed_for_error((MALFORMED, PROTOCOL_ERROR))


# -- 2.2.2 (5.0) properties ------------------------------------------------------------


def _u32(identifier: int, value: int) -> bytes:
    return bytes([identifier]) + struct.pack("!I", value)


@pytest.mark.parametrize(
    "kind", ["message-expiry", "content-type", "payload-format", "topic-alias"]
)
@pytest.mark.mqtt5("MQTT-4.13.1-1", "MQTT-4.13.2-1")
def test_duplicate_publish_property_is_protocol_error(
    connect_client: Client, level: int, kind: str
) -> None:
    """A property that may appear once, twice in a PUBLISH: Protocol Error (0x82)."""
    one = {
        "message-expiry": _u32(0x02, 60),
        "content-type": b"\x03" + string("text/plain"),
        "payload-format": b"\x01\x00",
        "topic-alias": b"\x23\x00\x01",
    }[kind]
    client = connected(connect_client, level, f"conf-dup-prop-{kind}")
    client.send_bytes(publish_bytes(level, "conf/dup", b"x", props=properties(one, one)))
    client.expect_closed_for_error((PROTOCOL_ERROR,))


@pytest.mark.mqtt5("MQTT-4.13.1-1", "MQTT-4.13.2-1")
def test_duplicate_subscription_identifier_is_protocol_error(
    connect_client: Client, level: int
) -> None:
    """Two Subscription Identifiers in one SUBSCRIBE: Protocol Error (0x82)."""
    client = connected(connect_client, level, "conf-dup-subid")
    body = b"\x00\x09" + properties(b"\x0b\x01", b"\x0b\x02") + string("conf/dup/#") + b"\x00"
    client.send_bytes(packet(0x82, body))
    client.expect_closed_for_error((PROTOCOL_ERROR,))


@pytest.mark.mqtt5("MQTT-3.1.4-1", "MQTT-3.14.0-1", "MQTT-4.13.2-1")
def test_duplicate_connect_property_is_refused(connect_client: Client, level: int) -> None:
    """Session Expiry Interval twice in CONNECT: Protocol Error, the server closes."""
    client = connect_client(level)
    props = properties(_u32(0x11, 10), _u32(0x11, 20))
    client.send_bytes(connect_bytes(level, "conf-dup-connect", props=props))
    assert_connect_refused(client, level)


@pytest.mark.parametrize("kind", ["unknown", "wrong-packet", "overrun", "truncated-value"])
@pytest.mark.mqtt5("MQTT-4.13.1-1", "MQTT-4.13.2-1")
def test_malformed_properties_close(connect_client: Client, level: int, kind: str) -> None:
    """
    An unknown property identifier, a property the packet may not carry (Session
    Expiry Interval in PUBLISH), a property length past the end of the packet, or a
    value cut short: a Malformed Packet (0x81).
    """
    client = connected(connect_client, level, f"conf-bad-prop-{kind}")
    if kind == "unknown":
        props = properties(b"\x7f\x00")
    elif kind == "wrong-packet":
        props = properties(_u32(0x11, 10))
    elif kind == "truncated-value":
        props = properties(b"\x02\x00\x00")
    else:
        props = b"\x20\x01\x00"
    client.send_bytes(publish_bytes(level, "conf/props", props=props))
    client.expect_closed_for_error((MALFORMED,))


# -- 4.8 (3.1.1) / 4.13 (5.0) malformed packets and protocol violations ----------------


@pytest.mark.parametrize("kind", ["topic-overrun", "subscribe-no-options", "publish-truncated"])
@pytest.mark.mqtt311("MQTT-4.8.0-1")
@pytest.mark.mqtt5("MQTT-4.13.1-1", "MQTT-4.13.2-1")
def test_malformed_packet_closes(connect_client: Client, level: int, kind: str) -> None:
    """A packet whose fields do not fit its remaining length: the server closes."""
    client = connected(connect_client, level, f"conf-malformed-{kind}")
    if kind == "topic-overrun":
        data = packet(0x30, struct.pack("!H", 40) + b"conf/short")
    elif kind == "subscribe-no-options":
        body = b"\x00\x01" + (b"\x00" if level == 5 else b"") + string("conf/no/options")
        data = packet(0x82, body)
    else:
        data = packet(0x32, string("conf/qos1")[:-1])
    client.send_bytes(data)
    client.expect_closed_for_error((MALFORMED,))


def _violation(kind: str, level: int) -> bytes:
    v5 = level == 5
    return {
        "connack": b"\x20\x03\x00\x00\x00" if v5 else b"\x20\x02\x00\x00",
        "suback": b"\x90\x04\x00\x01\x00\x00" if v5 else b"\x90\x03\x00\x01\x00",
        "unsuback": b"\xb0\x04\x00\x01\x00\x00" if v5 else b"\xb0\x02\x00\x01",
        "pingresp": b"\xd0\x00",
        "reserved-type-0": b"\x00\x00",
    }[kind]


@pytest.mark.parametrize("kind", ["connack", "suback", "unsuback", "pingresp", "reserved-type-0"])
@pytest.mark.mqtt311("MQTT-4.8.0-1")
@pytest.mark.mqtt5("MQTT-4.13.1-1", "MQTT-4.13.2-1")
def test_protocol_violation_closes(connect_client: Client, level: int, kind: str) -> None:
    """
    A packet only a server may send (or packet type 0, reserved) from a client is a
    protocol violation: the server closes the connection.
    """
    client = connected(connect_client, level, f"conf-violation-{kind}")
    client.send_bytes(_violation(kind, level))
    client.expect_closed_for_error((MALFORMED, PROTOCOL_ERROR))


@pytest.mark.mqtt311("MQTT-4.8.0-1")
def test_packet_type_15_closes_at_311(connect_client: Client, level: int) -> None:
    """Packet type 15 is reserved in 3.1.1 (AUTH came with 5.0): the server closes."""
    client = connected(connect_client, level, "conf-violation-type-15")
    client.send_bytes(b"\xf0\x00")
    client.expect_closed_for_error((MALFORMED,))


@pytest.mark.mqtt5("MQTT-4.13.1-1", "MQTT-4.13.2-1")
def test_disconnect_cannot_set_session_expiry_after_zero(
    connect_client: Client, level: int
) -> None:
    """
    A DISCONNECT that sets a non-zero Session Expiry Interval when CONNECT set 0 is
    a Protocol Error (5.0 3.14.2.2.2): the server may say so with DISCONNECT 0x82.
    """
    client = connected(connect_client, level, "conf-disconnect-expiry")
    client.send_bytes(packet(0xE0, b"\x00" + properties(_u32(0x11, 60))))
    packets = client.expect_closed()
    assert len(packets) <= 1, packets
    for sent in packets:
        assert isinstance(sent, Disconnect), sent
        assert sent.reason_code == PROTOCOL_ERROR, sent


@pytest.mark.mqtt311("MQTT-4.8.0-1")
@pytest.mark.mqtt5("MQTT-4.13.1-1")
def test_packets_before_a_malformed_one_are_answered(connect_client: Client, level: int) -> None:
    """
    A well-formed PINGREQ sent ahead of a malformed packet (a PUBLISH whose topic is
    not UTF-8) is still answered; the connection is then closed, and the PINGREQ sent
    behind the malformed packet is not answered.
    """
    client = connected(connect_client, level, "conf-malformed-after-ping")
    client.send_bytes(b"\xc0\x00" + publish_bytes(level, b"conf/\xff") + b"\xc0\x00")
    packets = client.expect_closed()
    assert packets[:1] == [Pingresp()], packets
    rest = packets[1:]
    if level == 5:
        assert all(isinstance(p, Disconnect) and p.reason_code >= 0x80 for p in rest), rest
    else:
        assert rest == [], rest


@pytest.mark.parametrize("version", [4, 5])
def test_raw_builders_make_valid_packets(connect_client: Client, version: int) -> None:
    """
    Control for the negative tests here: the raw builders, given valid contents, make
    packets the broker accepts (so a close elsewhere is down to the fault put in).
    """
    client = connect_client(version)
    client.send_bytes(connect_bytes(version, "conf-raw-control", keep_alive=60))
    assert client.expect(Connack).reason_code == 0
    client.send_bytes(subscribe_bytes(version, "conf/raw/control", packet_id=9))
    assert client.expect(Suback).packet_id == 9
    client.send_bytes(unsubscribe_bytes(version, "conf/raw/control", packet_id=10))
    assert client.expect(Unsuback).packet_id == 10
    props = (
        properties(_u32(0x02, 60), b"\x26" + string("k") + string("v")) if version == 5 else None
    )
    client.send_bytes(publish_bytes(version, "conf/raw/other", b"x", 1, 11, props))
    assert client.expect(Puback).packet_id == 11
    client.send_bytes(b"\xc0\x00")
    client.expect(Pingresp)
    client.expect_nothing()
