"""
MQTT 5.0 limits and requests the client sets in CONNECT, and the encoding rule for
empty properties, from the wire:

- 2.2.2.1: a packet without properties still carries a Property Length of 0;
- 3.1.2.11.4: the client's Maximum Packet Size (nothing larger is sent, a too large
  publication is dropped as if delivered), and its consequence on the Reason String
  of CONNACK (3.2.2.3.9), PUBACK (3.4.2.2.2), PUBREC (3.5.2.2.2) and DISCONNECT
  (3.14.2.2.3): left out when it would not fit, the packet itself still sent;
- 3.1.2.11.5 and 3.3.2.3.4: outbound Topic Aliases within the client's Topic Alias
  Maximum, none when it is absent or 0, never 0;
- 3.1.2.11.6 and 3.1.2.11.7: Request Response Information and Request Problem
  Information.

Where the test has to see what the project's codec would hide (a Property Length,
the size of a packet), it reads the bytes the broker sent: the client's socket is
wrapped so that every byte received is kept, and split into packets by hand.

An omission is only worth checking where the broker would otherwise send what is
omitted. This project's broker annotates refusals (CONNACK), error acknowledgements
of a publication (PUBACK, PUBREC) and DISCONNECT with a Reason String, so these are
the provocations used; each test first shows the Reason String without the limit
and demands it when the suite runs its own broker, so a test cannot silently become
vacuous. Other brokers are not required to send Reason Strings.
"""

from __future__ import annotations

import socket

import pytest

from conformance.conftest import RESPONSE_INFORMATION, BrokerUnderTest
from conformance.test_publish import (
    MARKER,
    Client,
    acknowledge,
    cid,
    connect,
    end_session,
    messages_until_marker,
    next_message,
    publish,
    subscribe,
    topic,
)
from conformance.test_qos import reconnect
from conformance.wire import WireClient
from mqttbroker.codec import (
    Connack,
    Disconnect,
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
    int_property,
)

# -- raw bytes ------------------------------------------------------------------------


class _Recorder:
    """Stands in for a client's socket and keeps every byte the broker sent."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.received = bytearray()

    def recv(self, size: int) -> bytes:
        data = self._sock.recv(size)
        self.received += data
        return data

    def __getattr__(self, name: str) -> object:
        return getattr(self._sock, name)


def recording(client: WireClient) -> bytearray:
    """From now on, every byte C{client} receives is also appended to the result."""
    recorder = _Recorder(client.sock)
    client.sock = recorder  # type: ignore[assignment]
    return recorder.received


def read_varint(data: bytes | bytearray, offset: int) -> tuple[int, int]:
    """A Variable Byte Integer at C{offset}: its value and the offset after it."""
    value = shift = 0
    while True:
        byte = data[offset]
        offset += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, offset


def split_packets(data: bytes | bytearray) -> list[bytes]:
    """Whole control packets (fixed header included), as the broker framed them."""
    packets = []
    offset = 0
    while offset < len(data):
        length, body = read_varint(data, offset + 1)
        assert body + length <= len(data), f"a truncated packet: {data[offset:].hex()}"
        packets.append(bytes(data[offset : body + length]))
        offset = body + length
    return packets


def body_of(packet: bytes) -> bytes:
    """The variable header and payload of a whole packet."""
    _, start = read_varint(packet, 1)
    return packet[start:]


# -- 2.2.2.1 the Property Length is never left out ---------------------------------------


@pytest.mark.mqtt5("MQTT-2.2.2-1")
def test_v5_property_length_present_when_there_are_no_properties(
    connect_client: Client, level: int
) -> None:
    """
    CONNACK, SUBACK, UNSUBACK and PUBLISH always carry a Property Length, 0 when
    there are no properties. Proof from the raw bytes: each packet's length must be
    exactly its fields plus the Property Length and the properties it announces (a
    decoder could misread a missing length as the first payload or reason code byte).
    """
    t = topic("lim-proplen")
    sub = connect_client(level)
    raw = recording(sub)
    assert sub.connect(cid("lim-proplen-s")).reason_code == 0
    subscribe(sub, t, 2)
    pub = connect(connect_client, level, cid("lim-proplen-p"))
    payloads = {0: b"zero", 1: b"one", 2: b"two"}
    for qos, payload in payloads.items():
        publish(pub, t, payload, qos)
        message = next_message(sub)
        assert (message.payload, message.qos) == (payload, qos)
        acknowledge(sub, message)
    sub.expect(Pubrel)
    sub.send(Unsubscribe(2, (t,)))
    sub.expect(Unsuback)
    kinds = []
    for packet in split_packets(raw):
        kind, body = packet[0] >> 4, body_of(packet)
        if kind == 2:  # CONNACK: flags, reason code, properties
            length, start = read_varint(body, 2)
            assert start + length == len(body), packet.hex()
        elif kind in (9, 11):  # SUBACK, UNSUBACK: id, properties, one reason code
            length, start = read_varint(body, 2)
            assert start + length + 1 == len(body), packet.hex()
        elif kind == 3:  # PUBLISH: topic, [id], properties, payload
            qos = (packet[0] >> 1) & 3
            after_topic = 2 + int.from_bytes(body[:2], "big") + (2 if qos else 0)
            length, start = read_varint(body, after_topic)
            # Published without properties, to a subscriber that allowed no alias.
            assert length == 0, packet.hex()
            assert body[start:] == payloads[qos], packet.hex()
        else:
            continue
        kinds.append(kind)
    assert sorted(kinds) == [2, 3, 3, 3, 9, 11], kinds


# -- 3.1.2.11.4 the client's Maximum Packet Size: publications ----------------------------

#: The Maximum Packet Size a subscriber announces, and a payload that cannot fit it.
LIMIT = 128
BIG = b"B" * 200


def limited_subscriber(
    connect_client: Client, level: int, name: str, t: str, qos: int, properties: Properties
) -> tuple[WireClient, bytearray]:
    """
    A fresh persistent session with Maximum Packet Size L{LIMIT} (and C{properties}),
    subscribed to C{t}; and the record of the bytes it receives.
    """
    end_session(connect_client, level, name)
    sub = connect_client(level)
    raw = recording(sub)
    properties = {
        PropertyId.SESSION_EXPIRY_INTERVAL: 600,
        PropertyId.MAXIMUM_PACKET_SIZE: LIMIT,
        **properties,
    }
    assert sub.connect(name, properties=properties).reason_code == 0
    subscribe(sub, t, qos)
    return sub, raw


@pytest.mark.mqtt5("MQTT-3.1.2-24", "MQTT-3.1.2-25")
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_v5_publication_above_maximum_packet_size_is_dropped_as_delivered(
    connect_client: Client, level: int, qos: int
) -> None:
    """
    A message too large for the subscriber is not sent, and counts as delivered: the
    smaller messages around it arrive, and it is not sent either when the persistent
    session resumes on a connection without the limit.
    """
    t = topic(f"lim-mps{qos}")
    name = cid(f"lim-mps{qos}-s")
    sub, raw = limited_subscriber(connect_client, level, name, t, qos, {})
    pub = connect(connect_client, level, cid(f"lim-mps{qos}-p"))
    for packet_id, payload in enumerate((b"before", BIG, b"after", MARKER), 1):
        publish(pub, t, payload, qos, packet_id=packet_id)
    assert [m.payload for m in messages_until_marker(sub)] == [b"before", b"after"]
    assert all(len(p) <= LIMIT for p in split_packets(raw))
    sub.send(Disconnect())
    sub.close()
    resumed = reconnect(connect_client, level, name)
    publish(pub, t, MARKER, qos, packet_id=5)
    assert messages_until_marker(resumed) == []
    end_session(connect_client, level, name)


@pytest.mark.mqtt5("MQTT-3.1.2-25")
@pytest.mark.parametrize("qos", [1, 2])
def test_v5_dropped_publication_frees_its_receive_maximum_slot(
    connect_client: Client, level: int, qos: int
) -> None:
    """
    A QoS 1 or 2 message dropped as too large is done with: to a subscriber with
    Receive Maximum 1 the next message still goes, which it could not if the dropped
    one were counted as awaiting its acknowledgement.
    """
    t = topic(f"lim-mpsrm{qos}")
    name = cid(f"lim-mpsrm{qos}-s")
    window: Properties = {PropertyId.RECEIVE_MAXIMUM: 1}
    sub, raw = limited_subscriber(connect_client, level, name, t, qos, window)
    pub = connect(connect_client, level, cid(f"lim-mpsrm{qos}-p"))
    for packet_id, payload in enumerate((BIG, b"after", MARKER), 1):
        publish(pub, t, payload, qos, packet_id=packet_id)
    assert [m.payload for m in messages_until_marker(sub)] == [b"after"]
    assert all(len(p) <= LIMIT for p in split_packets(raw))
    end_session(connect_client, level, name)


# -- 3.1.2.11.5 and 3.3.2.3.4 outbound Topic Aliases --------------------------------------


@pytest.mark.mqtt5("MQTT-3.3.2-8")
@pytest.mark.parametrize(
    "maximum",
    [
        pytest.param(None, marks=pytest.mark.mqtt5("MQTT-3.1.2-27"), id="absent"),
        pytest.param(0, marks=pytest.mark.mqtt5("MQTT-3.1.2-27"), id="zero"),
        pytest.param(2, marks=pytest.mark.mqtt5("MQTT-3.1.2-26"), id="two"),
    ],
)
def test_v5_outbound_topic_aliases_within_the_client_maximum(
    connect_client: Client, level: int, maximum: int | None
) -> None:
    """
    Many messages on a few topics (where a broker that sets aliases would set them):
    every delivery uses only aliases from 1 to the subscriber's Topic Alias Maximum,
    none when it is absent or 0, and each resolves to the topic published. (An alias
    of 0 would fail the decoder, which refuses it.)
    """
    base = topic(f"lim-alias{maximum}")
    properties: Properties = {}
    if maximum is not None:
        properties[PropertyId.TOPIC_ALIAS_MAXIMUM] = maximum
    sub = connect_client(level)
    assert sub.connect(cid(f"lim-alias{maximum}-s"), properties=properties).reason_code == 0
    subscribe(sub, f"{base}/+", 0)
    pub = connect(connect_client, level, cid(f"lim-alias{maximum}-p"))
    sent = [(f"{base}/{n % 4}", f"m{n}".encode()) for n in range(24)]
    for name, payload in sent:
        publish(pub, name, payload)
    aliases: dict[int, str] = {}
    received = []
    for _ in sent:
        message = sub.expect(Publish)
        alias = message.properties.get(PropertyId.TOPIC_ALIAS)
        name = message.topic
        if alias is None:
            assert name, message
        else:
            assert isinstance(alias, int)
            assert 1 <= alias <= (maximum or 0), message
            if name:
                aliases[alias] = name
            else:
                assert alias in aliases, message
                name = aliases[alias]
        received.append((name, message.payload))
    assert sorted(received) == sorted(sent)


# -- 3.1.2.11.6 Request Response Information ----------------------------------------------


@pytest.mark.mqtt5("MQTT-3.1.2-28")
def test_v5_no_response_information_unless_requested(
    broker: BrokerUnderTest, request: pytest.FixtureRequest, level: int
) -> None:
    """
    A client that leaves Request Response Information out, or sets it to 0, gets no
    Response Information in its CONNACK, from a broker that gives it to those asking
    (the suite starts its own broker configured to give it).
    """
    answers = {}
    for asked in (None, 0, 1):
        properties: Properties = {}
        if asked is not None:
            properties[PropertyId.REQUEST_RESPONSE_INFORMATION] = asked
        with WireClient(broker.host, broker.port, level) as client:
            connack = client.connect(cid(f"lim-rri{asked}"), properties=properties)
            assert connack.reason_code == 0
            answers[asked] = connack.properties.get(PropertyId.RESPONSE_INFORMATION)
    assert answers[None] is None
    assert answers[0] is None
    if not request.config.getoption("--broker"):
        # Ours, configured to answer: the request is what makes the difference.
        assert answers[1] == RESPONSE_INFORMATION.replace("%c", cid("lim-rri1"))


# -- Reason Strings: Request Problem Information and the Maximum Packet Size -------------

#: An acknowledgement that the tests below provoke.
Ack = Connack | Puback | Pubrec | Pubrel | Pubcomp | Suback | Unsuback | Disconnect

#: The size of each kind of acknowledgement with a Property Length of 0 and no
#: properties, fixed header included.
BARE = {
    "connack": 5,
    "puback": 6,
    "pubrec": 6,
    "pubrel": 6,
    "pubcomp": 6,
    "suback": 6,
    "unsuback": 6,
    "disconnect": 4,
}


def provoke(
    connect_client: Client,
    level: int,
    kind: str,
    name: str,
    properties: Properties,
    request: pytest.FixtureRequest,
) -> tuple[Ack, list[bytes]]:
    """
    Connect with C{properties} and provoke an error acknowledgement of C{kind} that
    this project's broker gives a Reason String:

    - connack: an Authentication Method the broker does not know (refused, 0x8C);
    - puback, pubrec: a QoS 1 or 2 PUBLISH whose Payload Format Indicator says UTF-8
      over bytes that are not (0x99 where the broker checks, as it may);
    - pubrel, pubcomp: a PUBREC or PUBREL for a packet identifier the broker does not
      know (0x92 Packet Identifier not found, or 0x00: a broker may also answer so);
    - suback: the filter the broker is described to refuse (C{--refused-filter});
    - unsuback: unsubscribing from a filter never subscribed to (0x11);
    - disconnect: a Topic Alias above the broker's Topic Alias Maximum (0x94).

    The acknowledgement, and every packet the broker sent on the connection (raw).
    """
    client = connect_client(level)
    raw = recording(client)
    answer: Ack
    if kind == "connack":
        properties = {**properties, PropertyId.AUTHENTICATION_METHOD: f"none-{name}"}
        answer = client.connect(name, properties=properties)
        assert answer.reason_code >= 0x80, answer
        client.expect_closed()
        return answer, split_packets(raw)
    connack = client.connect(name, properties=properties)
    assert connack.reason_code == 0, connack
    t = topic(f"{name}-t")
    if kind == "disconnect":
        alias = int_property(connack.properties, PropertyId.TOPIC_ALIAS_MAXIMUM, 0) + 1
        client.send(Publish(t, b"alias", 0, properties={PropertyId.TOPIC_ALIAS: alias}))
        packets = client.expect_closed()
        assert len(packets) == 1 and isinstance(packets[0], Disconnect), packets
        answer = packets[0]
        assert answer.reason_code >= 0x80, answer
        return answer, split_packets(raw)
    if kind == "pubrel":
        client.send(Pubrec(77))
        return client.expect(Pubrel), split_packets(raw)
    if kind == "pubcomp":
        client.send(Pubrel(77))
        return client.expect(Pubcomp), split_packets(raw)
    if kind == "suback":
        refused = request.getfixturevalue("refused_filter")
        client.send(Subscribe(1, (Subscription(refused, 1),)))
        suback = client.expect(Suback)
        assert suback.reason_codes[0] >= 0x80, suback
        return suback, split_packets(raw)
    if kind == "unsuback":
        client.send(Unsubscribe(1, (t,)))
        unsuback = client.expect(Unsuback)
        assert unsuback.reason_codes == (0x11,), unsuback
        return unsuback, split_packets(raw)
    qos = 1 if kind == "puback" else 2
    invalid: Properties = {PropertyId.PAYLOAD_FORMAT_INDICATOR: 1}
    client.send(Publish(t, b"\xff\xfe", qos, packet_id=1, properties=invalid))
    answer = client.expect(Puback) if qos == 1 else client.expect(Pubrec)
    assert answer.packet_id == 1, answer
    return answer, split_packets(raw)


def codes(ack: Ack) -> object:
    """What an acknowledgement says: its reason code, or a SUBACK's/UNSUBACK's list."""
    return ack.reason_codes if isinstance(ack, (Suback, Unsuback)) else ack.reason_code


def own_broker(request: pytest.FixtureRequest) -> bool:
    """The suite runs this project's broker, which gives these Reason Strings."""
    return not request.config.getoption("--broker")


@pytest.mark.mqtt5("MQTT-3.1.2-29")
@pytest.mark.parametrize(
    "kind",
    [
        "puback",
        "pubrec",
        "pubrel",
        "pubcomp",
        pytest.param("suback", marks=pytest.mark.needs_refused_filter, id="suback"),
        "unsuback",
    ],
)
def test_v5_request_problem_information_0_removes_reason_strings(
    connect_client: Client, level: int, request: pytest.FixtureRequest, kind: str
) -> None:
    """
    With Request Problem Information 0 the error acknowledgement still comes, with
    the same reason code, but without Reason String or User Property; without the
    request it has the Reason String (demanded of this project's broker only).
    """
    name = cid(f"lim-rpi-{kind}")
    quiet, _ = provoke(
        connect_client, level, kind, name, {PropertyId.REQUEST_PROBLEM_INFORMATION: 0}, request
    )
    assert PropertyId.REASON_STRING not in quiet.properties, quiet
    assert PropertyId.USER_PROPERTY not in quiet.properties, quiet
    told, _ = provoke(connect_client, level, kind, name, {}, request)
    assert (type(told), codes(told)) == (type(quiet), codes(quiet)), (told, quiet)
    if own_broker(request):
        assert PropertyId.REASON_STRING in told.properties, told


@pytest.mark.mqtt5("MQTT-3.1.2-24")
@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("connack", marks=pytest.mark.mqtt5("MQTT-3.2.2-19"), id="connack"),
        pytest.param("puback", marks=pytest.mark.mqtt5("MQTT-3.4.2-2"), id="puback"),
        pytest.param("pubrec", marks=pytest.mark.mqtt5("MQTT-3.5.2-2"), id="pubrec"),
        pytest.param("pubrel", marks=pytest.mark.mqtt5("MQTT-3.6.2-2"), id="pubrel"),
        pytest.param("pubcomp", marks=pytest.mark.mqtt5("MQTT-3.7.2-2"), id="pubcomp"),
        pytest.param(
            "suback",
            marks=(pytest.mark.mqtt5("MQTT-3.9.2-1"), pytest.mark.needs_refused_filter),
            id="suback",
        ),
        pytest.param("unsuback", marks=pytest.mark.mqtt5("MQTT-3.11.2-1"), id="unsuback"),
        pytest.param("disconnect", marks=pytest.mark.mqtt5("MQTT-3.14.2-3"), id="disconnect"),
    ],
)
def test_v5_reason_string_left_out_above_maximum_packet_size(
    connect_client: Client, level: int, request: pytest.FixtureRequest, kind: str
) -> None:
    """
    A client whose Maximum Packet Size leaves room for the bare acknowledgement (and
    for the CONNACK before it) still gets the acknowledgement, with the same reason
    code, only without its Reason String; and no packet above the limit.
    """
    name = cid(f"lim-mps-{kind}")
    told, packets = provoke(connect_client, level, kind, name, {}, request)
    limit = BARE[kind] if kind == "connack" else max(BARE[kind], len(packets[0]))
    if own_broker(request):
        # Ours annotates this acknowledgement, and the annotation cannot fit.
        assert PropertyId.REASON_STRING in told.properties, told
        assert len(packets[-1]) > limit, packets[-1].hex()
    limited, packets = provoke(
        connect_client, level, kind, name, {PropertyId.MAXIMUM_PACKET_SIZE: limit}, request
    )
    assert (type(limited), codes(limited)) == (type(told), codes(told)), (limited, told)
    assert PropertyId.REASON_STRING not in limited.properties, limited
    assert all(len(p) <= limit for p in packets), [p.hex() for p in packets]
