"""
Sections 3.14 (DISCONNECT) and 3.2 (CONNACK) of MQTT 5.0 from the server's side, and
the Response Topic and Content Type rules of 3.3.2.3.5 and 3.3.2.3.9, from the wire.

A server DISCONNECT is provoked in several ways (topic alias errors, a second
CONNECT, a malformed packet, a Session Expiry Interval the client may not set, a
session takeover), and every byte the broker sends until it closes the connection is
read raw, so that "nothing follows the DISCONNECT" is seen on the wire rather than
inferred from a decoder.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conformance.rawpackets import packet, string, varint
from conformance.test_malformed import (
    connect_bytes,
    decode,
    properties,
    publish_bytes,
    raw_until_closed,
)
from conformance.test_publish import (
    MARKER,
    cid,
    connect,
    messages_until_marker,
    publish,
    subscribe,
    topic,
)
from conformance.wire import WireClient
from mqttbroker.codec import Connack, Connect, Disconnect, PropertyId, Publish

Client = Callable[[int], WireClient]

#: The reason codes of the DISCONNECT table (5.0 section 3.14.2.1).
DISCONNECT_CODES = frozenset(
    {0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90}
    | set(range(0x93, 0xA3))
)
#: The reason codes of the CONNACK table (5.0 section 3.2.2.2).
CONNACK_CODES = frozenset(
    {0x00, *range(0x80, 0x8B), 0x8C, 0x90, 0x95, 0x97, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F}
)


# -- 3.14: the DISCONNECT the broker sends ----------------------------------------------


def _alias_zero(client: WireClient, connack: Connack, connect_client: Client) -> None:
    client.send_bytes(
        publish_bytes(5, topic("disc-alias0"), b"x", props=properties(b"\x23\x00\x00"))
    )


def _alias_above_maximum(client: WireClient, connack: Connack, connect_client: Client) -> None:
    maximum = connack.properties.get(PropertyId.TOPIC_ALIAS_MAXIMUM, 0)
    assert isinstance(maximum, int)
    alias = (maximum + 1).to_bytes(2, "big")
    client.send_bytes(
        publish_bytes(5, topic("disc-alias"), b"x", props=properties(b"\x23" + alias))
    )


def _second_connect(client: WireClient, connack: Connack, connect_client: Client) -> None:
    client.send(Connect(cid("disc-second"), 5))


def _malformed(client: WireClient, connack: Connack, connect_client: Client) -> None:
    # A QoS 0 PUBLISH with both QoS bits set: QoS 3 is malformed ([MQTT-3.3.1-4]).
    body = string(topic("disc-malformed")) + b"\x00\x01" + b"\x00"
    client.send_bytes(bytes([0x36]) + varint(len(body)) + body)


def _expiry_after_zero(client: WireClient, connack: Connack, connect_client: Client) -> None:
    # CONNECT had no Session Expiry Interval (0); setting one at DISCONNECT is a
    # protocol error (3.14.2.2.2), and the answer must not echo an expiry either.
    client.send_bytes(packet(0xE0, b"\x00" + properties(b"\x11\x00\x00\x00\x3c")))


def _takeover(client: WireClient, connack: Connack, connect_client: Client) -> None:
    connect(connect_client, 5, cid("disc-takeover"))


PROVOCATIONS: dict[str, tuple[str, Callable[[WireClient, Connack, Client], None]]] = {
    "topic-alias-0": ("disc-alias0", _alias_zero),
    "topic-alias-above-maximum": ("disc-alias", _alias_above_maximum),
    "second-connect": ("disc-second", _second_connect),
    "malformed-publish": ("disc-malformed", _malformed),
    "session-expiry-after-0": ("disc-expiry", _expiry_after_zero),
    "session-takeover": ("disc-takeover", _takeover),
}


@pytest.mark.mqtt5("MQTT-3.14.2-1", "MQTT-3.14.2-2", "MQTT-3.14.4-1", "MQTT-3.14.4-2")
@pytest.mark.parametrize("provocation", list(PROVOCATIONS))
def test_server_disconnect_is_last_and_closes(
    connect_client: Client, level: int, provocation: str
) -> None:
    """
    Whatever makes the broker end a connection, its DISCONNECT uses a code of the
    DISCONNECT table, carries no Session Expiry Interval, is the last thing on the
    wire, and the connection is then closed. (4.13 lets a broker close without a
    DISCONNECT; then only the close is checked.)
    """
    name, provoke = PROVOCATIONS[provocation]
    client = connect_client(level)
    connack = client.connect(cid(name))
    assert connack.reason_code == 0, connack
    provoke(client, connack, connect_client)
    data = raw_until_closed(client)
    sent = decode(data, 5)
    disconnects = [p for p in sent if isinstance(p, Disconnect)]
    assert len(disconnects) <= 1, sent
    if not disconnects:
        return
    last = sent[-1]
    assert isinstance(last, Disconnect), f"packets after the DISCONNECT: {sent!r}"
    assert last.reason_code in DISCONNECT_CODES, last
    # The broker ended the connection for a cause: not 0x00, and 0x04 is a client's.
    assert last.reason_code >= 0x80, last
    assert PropertyId.SESSION_EXPIRY_INTERVAL not in last.properties, last


# -- 3.2: CONNACK ------------------------------------------------------------------------


@pytest.mark.mqtt5("MQTT-3.2.0-2")
@pytest.mark.parametrize("when", ["after-connack", "pipelined"])
def test_second_connect_gets_no_second_connack(
    connect_client: Client, level: int, when: str
) -> None:
    """
    A second CONNECT on a connection is never answered with a second CONNACK, whether
    it comes after the first CONNACK or right behind the first CONNECT; the broker
    closes the connection.
    """
    client = connect_client(level)
    first = connect_bytes(5, cid(f"connack-once-{when}"))
    second = connect_bytes(5, cid(f"connack-once-{when}-2"))
    if when == "pipelined":
        client.send_bytes(first + second)
        data = raw_until_closed(client)
    else:
        client.send_bytes(first)
        head = client.expect(Connack)
        assert head.reason_code == 0, head
        client.send_bytes(second)
        data = raw_until_closed(client)
    sent = decode(data, 5)
    connacks = [p for p in sent if isinstance(p, Connack)]
    assert len(connacks) == (1 if when == "pipelined" else 0), sent


#: CONNECTs the broker must refuse or may answer with an error CONNACK.
REFUSED_CONNECTS: dict[str, bytes] = {
    # An Authentication Method nobody implements: 0x8C or 0x87 ([MQTT-4.12.0-1]).
    "unsupported-auth-method": connect_bytes(
        5, cid("connack-auth"), props=properties(b"\x15" + string("conformance-no-such-method"))
    ),
    # Malformed: the reserved connect flag set.
    "reserved-flag": connect_bytes(5, cid("connack-reserved"), flags=0x03),
    # Malformed: Will QoS 3.
    "will-qos-3": connect_bytes(
        5, cid("connack-wq3"), flags=0x1E, tail=b"\x00" + string("w/t") + string(b"p")
    ),
    # Malformed: an unknown property identifier.
    "unknown-property": connect_bytes(5, cid("connack-prop"), props=properties(b"\x7f\x00")),
}


@pytest.mark.mqtt5("MQTT-3.2.2-8", "MQTT-3.2.0-2")
@pytest.mark.parametrize("case", list(REFUSED_CONNECTS))
def test_refusing_connack_codes_come_from_the_table(
    connect_client: Client, level: int, case: str
) -> None:
    """
    A CONNECT the broker refuses gets at most one CONNACK, whose reason code is in
    the CONNACK table, and the connection is closed.

    (Protocol version 6 is not among the cases: both this project's broker and
    mosquitto answer it with a 3.1.1-layout CONNACK, return code 1, which a server
    may do as it cannot know which layout the client reads; test_connect covers it.)
    """
    client = connect_client(level)
    client.send_bytes(REFUSED_CONNECTS[case])
    sent = decode(raw_until_closed(client), 5)
    assert len(sent) <= 1, sent
    for answer in sent:
        assert isinstance(answer, Connack), sent
        assert answer.reason_code in CONNACK_CODES, answer
        assert answer.reason_code >= 0x80, answer


@pytest.mark.mqtt5("MQTT-3.2.2-8")
def test_accepting_connack_code_comes_from_the_table(connect_client: Client, level: int) -> None:
    """An accepted CONNECT gets a CONNACK with reason 0x00, a code of the table."""
    client = connect_client(level)
    client.send_bytes(connect_bytes(5, cid("connack-ok")))
    connack = client.expect(Connack)
    assert connack.reason_code in CONNACK_CODES
    assert connack.reason_code == 0x00, connack
    client.expect_nothing()


# -- 3.3.2.3.5 / 3.3.2.3.9: Response Topic and Content Type ----------------------------

#: Property identifiers of the two UTF-8 string properties of PUBLISH tested here.
STRING_PROPERTIES = {"response-topic": 0x08, "content-type": 0x03}
ILL_FORMED_UTF8 = b"a/\xed\xa0\x80/b"  # an encoded surrogate, U+D800


def _subscriber(connect_client: Client, name: str) -> tuple[WireClient, str]:
    t = topic(name)
    sub = connect(connect_client, 5, cid(f"{name}-s"))
    subscribe(sub, t, 1)
    return sub, t


def _nothing_delivered(connect_client: Client, sub: WireClient, t: str, name: str) -> None:
    """A marker published afterwards is the first thing the subscriber gets."""
    marker = connect(connect_client, 5, cid(f"{name}-m"))
    publish(marker, t, MARKER, 1)
    assert messages_until_marker(sub) == []


@pytest.mark.mqtt5("MQTT-3.3.2-13", "MQTT-3.3.2-19", "MQTT-1.5.4-1")
@pytest.mark.parametrize("name", list(STRING_PROPERTIES))
def test_ill_formed_utf8_property_closes(connect_client: Client, level: int, name: str) -> None:
    """
    A Response Topic or Content Type that is not well-formed UTF-8 makes the PUBLISH
    malformed: the broker closes the connection (after at most a DISCONNECT 0x81)
    and delivers nothing.
    """
    sub, t = _subscriber(connect_client, f"utf8-{name}")
    pub = connect(connect_client, level, cid(f"utf8-{name}-p"))
    prop = bytes([STRING_PROPERTIES[name]]) + string(ILL_FORMED_UTF8)
    pub.send_bytes(publish_bytes(5, t, b"bad", qos=1, packet_id=1, props=properties(prop)))
    sent = decode(raw_until_closed(pub), 5)
    assert len(sent) <= 1, sent
    for answer in sent:
        assert isinstance(answer, Disconnect) and answer.reason_code == 0x81, answer
    _nothing_delivered(connect_client, sub, t, f"utf8-{name}")


@pytest.mark.mqtt5("MQTT-3.3.2-14")
# Named, not shown: "#" would start a comment in a --deviations file.
@pytest.mark.parametrize("wildcard", ["+", "#"], ids=["plus", "hash"])
def test_wildcard_response_topic_is_refused(
    connect_client: Client, level: int, wildcard: str
) -> None:
    """
    A Response Topic containing a wildcard character violates the protocol: the broker
    closes the connection (after at most a DISCONNECT 0x81 or 0x82) and does not pass
    the message on.
    """
    name = "rt-plus" if wildcard == "+" else "rt-hash"
    sub, t = _subscriber(connect_client, name)
    pub = connect(connect_client, level, cid(f"{name}-p"))
    response = f"{t}/reply/{wildcard}"
    prop = b"\x08" + string(response)
    pub.send_bytes(publish_bytes(5, t, b"bad", qos=1, packet_id=1, props=properties(prop)))
    sent = decode(raw_until_closed(pub, 2), 5)
    assert len(sent) <= 1, f"the broker took the PUBLISH: {sent!r}"
    for answer in sent:
        assert isinstance(answer, Disconnect), f"the broker took the PUBLISH: {sent!r}"
        assert answer.reason_code in (0x81, 0x82), answer
    _nothing_delivered(connect_client, sub, t, name)


@pytest.mark.mqtt5("MQTT-3.3.2-13", "MQTT-3.3.2-19")
def test_utf8_response_topic_and_content_type_forwarded(connect_client: Client, level: int) -> None:
    """
    Well-formed UTF-8 values (non-ASCII, and a U+FEFF the receiver must not strip)
    are accepted and reach the subscriber byte for byte.
    """
    sub, t = _subscriber(connect_client, "utf8-ok")
    pub = connect(connect_client, level, cid("utf8-ok-p"))
    response = f"{t}/r\u00e9ponse/\u2713\ufeff"
    content = "text/plain; charset=utf-8; \u00fc=\U0001f600"
    publish(
        pub,
        t,
        b"ok",
        1,
        properties={PropertyId.RESPONSE_TOPIC: response, PropertyId.CONTENT_TYPE: content},
    )
    message = sub.expect(Publish)
    assert message.payload == b"ok"
    assert message.properties.get(PropertyId.RESPONSE_TOPIC) == response
    assert message.properties.get(PropertyId.CONTENT_TYPE) == content
