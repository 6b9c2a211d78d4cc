# -*- test-case-name: tests.test_codec_golden -*-
"""
Golden vectors for the MQTT codec.

Every byte string here was written by hand from the packet layout tables of the
MQTT 3.1, 3.1.1 (OASIS, 2014) and 5.0 (OASIS, 2019) standards: fixed header, then
variable header, then payload, one field per hex literal with a comment naming it.
None of them came out of our own encoder, so they check the codec against the
standard and not against itself.

For each positive vector the tests check that decoding the bytes gives the packet,
that encoding the packet gives the bytes, and that feeding the bytes to an
incremental L{Decoder} one byte at a time gives the same packet. A few vectors are
marked C{canonical=False}: valid but non-minimal encodings (an explicit success
reason code, properties out of identifier order) that a decoder must accept but an
encoder need not produce.

The negative vectors are hand-made malformed packets, one per decoder rule, each
with the MQTT 5 reason code the resulting L{RemoteProtocolError} must carry.

Property lists in canonical vectors are written in ascending identifier order, and
the property dicts are built in the same order, so an encoder that keeps dict
order and one that sorts by identifier both reproduce the bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from mqttbroker.codec import (
    Auth,
    Connack,
    Connect,
    Decoder,
    Disconnect,
    Pingreq,
    Pingresp,
    PropertyId,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    RemoteProtocolError,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    decode_all,
    encode,
)
from mqttbroker.codec import encoder as encoder_module

P = PropertyId
RC = ReasonCode


def h(*fields: str) -> bytes:
    """
    Join hex fields (spaces inside a field are allowed) into one byte string.
    """
    return bytes.fromhex("".join(fields))


@dataclass(frozen=True)
class Golden:
    """
    One positive vector.

    @ivar name: what the vector shows.
    @ivar level: the protocol level (3, 4 or 5) it is valid at.
    @ivar wire: the hand-written bytes.
    @ivar packet: the packet the bytes stand for.
    @ivar canonical: C{encode(packet, level)} must give exactly C{wire}; False for
        valid but non-minimal encodings that only the decoder is held to.
    """

    name: str
    level: int
    wire: bytes
    packet: Any
    canonical: bool = True


@dataclass(frozen=True)
class Bad:
    """
    One negative vector: bytes that must be refused with C{reason}.

    @ivar level: the protocol level the decoder is told, or None for a decoder that
        expects a CONNECT first.
    @ivar max_packet_size: a maximum to give the decoder, or None for its default.
    """

    name: str
    level: int | None
    wire: bytes
    reason: int
    max_packet_size: int | None = None


# ---------------------------------------------------------------------------
# CONNECT (3.1: "MQIsdp" level 3; 3.1.1 section 3.1; 5.0 section 3.1)
#
# Connect flags byte: bit 7 User Name, bit 6 Password, bit 5 Will Retain,
# bits 4-3 Will QoS, bit 2 Will Flag, bit 1 Clean Session / Clean Start,
# bit 0 reserved (must be 0).
# ---------------------------------------------------------------------------

CONNECT_VECTORS: list[Golden] = [
    Golden(
        "CONNECT 3.1 minimal",
        3,
        h(
            "10",  # CONNECT, flags 0000
            "10",  # remaining length 16
            "0006 4d5149736470",  # protocol name "MQIsdp"
            "03",  # protocol level 3
            "02",  # connect flags: clean session
            "000a",  # keep alive 10 s
            "0002 6331",  # client identifier "c1"
        ),
        Connect(client_id="c1", protocol_level=3, clean_start=True, keep_alive=10),
    ),
    Golden(
        "CONNECT 3.1 with will, user name and password",
        3,
        h(
            "10",  # CONNECT
            "27",  # remaining length 39
            "0006 4d5149736470",  # protocol name "MQIsdp"
            "03",  # protocol level 3
            "ee",  # flags: user name, password, will retain, will QoS 1, will, clean
            "003c",  # keep alive 60 s
            "0002 6331",  # client identifier "c1"
            "0004 77696c6c",  # will topic "will"
            "0003 627965",  # will message "bye"
            "0004 75736572",  # user name "user"
            "0004 70617373",  # password "pass"
        ),
        Connect(
            client_id="c1",
            protocol_level=3,
            clean_start=True,
            keep_alive=60,
            username="user",
            password=b"pass",
            will=Will(topic="will", payload=b"bye", qos=1, retain=True),
        ),
    ),
    Golden(
        "CONNECT 3.1.1 minimal, empty client identifier",
        4,
        h(
            "10",  # CONNECT
            "0c",  # remaining length 12
            "0004 4d515454",  # protocol name "MQTT"
            "04",  # protocol level 4
            "02",  # connect flags: clean session
            "003c",  # keep alive 60 s
            "0000",  # client identifier "" (zero length)
        ),
        Connect(client_id="", protocol_level=4, clean_start=True, keep_alive=60),
    ),
    Golden(
        "CONNECT 3.1.1 persistent session with user name only",
        4,
        h(
            "10",  # CONNECT
            "18",  # remaining length 24
            "0004 4d515454",  # protocol name "MQTT"
            "04",  # protocol level 4
            "80",  # connect flags: user name (clean session 0)
            "0000",  # keep alive 0 (off)
            "0006 636c69656e74",  # client identifier "client"
            "0004 75736572",  # user name "user"
        ),
        Connect(
            client_id="client",
            protocol_level=4,
            clean_start=False,
            keep_alive=0,
            username="user",
        ),
    ),
    Golden(
        "CONNECT 3.1.1 with QoS 2 will, binary will payload, user name, password",
        4,
        h(
            "10",  # CONNECT
            "22",  # remaining length 34
            "0004 4d515454",  # protocol name "MQTT"
            "04",  # protocol level 4
            "d6",  # flags: user name, password, will QoS 2, will, clean session
            "012c",  # keep alive 300 s
            "0002 6331",  # client identifier "c1"
            "0003 612f62",  # will topic "a/b"
            "0002 00ff",  # will message: 2 bytes 00 ff
            "0004 75736572",  # user name "user"
            "0003 010203",  # password: bytes 01 02 03
        ),
        Connect(
            client_id="c1",
            protocol_level=4,
            clean_start=True,
            keep_alive=300,
            username="user",
            password=b"\x01\x02\x03",
            will=Will(topic="a/b", payload=b"\x00\xff", qos=2, retain=False),
        ),
    ),
    Golden(
        "CONNECT 5.0 minimal",
        5,
        h(
            "10",  # CONNECT
            "0d",  # remaining length 13
            "0004 4d515454",  # protocol name "MQTT"
            "05",  # protocol version 5
            "02",  # connect flags: clean start
            "003c",  # keep alive 60 s
            "00",  # property length 0
            "0000",  # client identifier ""
        ),
        Connect(client_id="", protocol_level=5, clean_start=True, keep_alive=60),
    ),
    Golden(
        "CONNECT 5.0 with connect properties, will properties, user name, password",
        5,
        h(
            "10",  # CONNECT
            "7f",  # remaining length 127
            "0004 4d515454",  # protocol name "MQTT"
            "05",  # protocol version 5
            "ee",  # flags: user name, password, will retain, will QoS 1, will, clean
            "001e",  # keep alive 30 s
            "26",  # property length 38
            "11 00000e10",  # Session Expiry Interval 3600
            "15 0003 746f6b",  # Authentication Method "tok"
            "16 0002 beef",  # Authentication Data be ef
            "17 00",  # Request Problem Information 0
            "19 01",  # Request Response Information 1
            "21 0014",  # Receive Maximum 20
            "22 000a",  # Topic Alias Maximum 10
            "26 0001 6b 0001 76",  # User Property ("k", "v")
            "27 00100000",  # Maximum Packet Size 1048576
            # payload
            "0002 6331",  # client identifier "c1"
            "32",  # will property length 50
            "01 01",  # Payload Format Indicator 1 (UTF-8)
            "02 0000003c",  # Message Expiry Interval 60
            "03 000a 746578742f706c61696e",  # Content Type "text/plain"
            "08 0003 722f74",  # Response Topic "r/t"
            "09 0002 cafe",  # Correlation Data ca fe
            "18 00000005",  # Will Delay Interval 5
            "26 0001 61 0001 31",  # User Property ("a", "1")
            "26 0001 61 0001 32",  # User Property ("a", "2"), same name again
            "0004 77696c6c",  # will topic "will"
            "0003 627965",  # will payload "bye"
            "0004 75736572",  # user name "user"
            "0004 70617373",  # password "pass"
        ),
        Connect(
            client_id="c1",
            protocol_level=5,
            clean_start=True,
            keep_alive=30,
            username="user",
            password=b"pass",
            will=Will(
                topic="will",
                payload=b"bye",
                qos=1,
                retain=True,
                properties={
                    P.PAYLOAD_FORMAT_INDICATOR: 1,
                    P.MESSAGE_EXPIRY_INTERVAL: 60,
                    P.CONTENT_TYPE: "text/plain",
                    P.RESPONSE_TOPIC: "r/t",
                    P.CORRELATION_DATA: b"\xca\xfe",
                    P.WILL_DELAY_INTERVAL: 5,
                    P.USER_PROPERTY: [("a", "1"), ("a", "2")],
                },
            ),
            properties={
                P.SESSION_EXPIRY_INTERVAL: 3600,
                P.AUTHENTICATION_METHOD: "tok",
                P.AUTHENTICATION_DATA: b"\xbe\xef",
                P.REQUEST_PROBLEM_INFORMATION: 0,
                P.REQUEST_RESPONSE_INFORMATION: 1,
                P.RECEIVE_MAXIMUM: 20,
                P.TOPIC_ALIAS_MAXIMUM: 10,
                P.USER_PROPERTY: [("k", "v")],
                P.MAXIMUM_PACKET_SIZE: 1048576,
            },
        ),
    ),
    Golden(
        "CONNECT 5.0 password without user name, will without will properties",
        5,
        h(
            "10",  # CONNECT
            "19",  # remaining length 25
            "0004 4d515454",  # protocol name "MQTT"
            "05",  # protocol version 5
            "44",  # flags: password, will (QoS 0), clean start 0
            "0000",  # keep alive 0
            "00",  # property length 0
            "0002 6331",  # client identifier "c1"
            "00",  # will property length 0
            "0001 74",  # will topic "t"
            "0000",  # will payload: empty
            "0002 0102",  # password: bytes 01 02
        ),
        Connect(
            client_id="c1",
            protocol_level=5,
            clean_start=False,
            keep_alive=0,
            password=b"\x01\x02",
            will=Will(topic="t"),
        ),
    ),
]

# ---------------------------------------------------------------------------
# CONNACK (3.1.1 section 3.2: acknowledge flags, return code;
#          5.0 section 3.2: acknowledge flags, reason code, properties)
# ---------------------------------------------------------------------------

CONNACK_VECTORS: list[Golden] = [
    Golden(
        "CONNACK 3.1 accepted",
        3,
        h(
            "20",  # CONNACK
            "02",  # remaining length 2
            "00",  # reserved byte
            "00",  # return code 0: accepted
        ),
        Connack(reason_code=0),
    ),
    Golden(
        "CONNACK 3.1 not authorised",
        3,
        h("20", "02", "00", "05"),  # CONNACK, length 2, reserved, return code 5
        Connack(reason_code=5),
    ),
    Golden(
        "CONNACK 3.1.1 session present, accepted",
        4,
        h(
            "20",  # CONNACK
            "02",  # remaining length 2
            "01",  # acknowledge flags: session present
            "00",  # return code 0: accepted
        ),
        Connack(session_present=True, reason_code=0),
    ),
    Golden(
        "CONNACK 3.1.1 bad user name or password",
        4,
        h("20", "02", "00", "04"),  # CONNACK, length 2, no session, return code 4
        Connack(session_present=False, reason_code=4),
    ),
    Golden(
        "CONNACK 3.1.1 unacceptable protocol version",
        4,
        h("20", "02", "00", "01"),  # CONNACK, length 2, no session, return code 1
        Connack(reason_code=1),
    ),
    Golden(
        "CONNACK 5.0 minimal success",
        5,
        h(
            "20",  # CONNACK
            "03",  # remaining length 3
            "00",  # acknowledge flags: no session present
            "00",  # reason code Success
            "00",  # property length 0
        ),
        Connack(),
    ),
    Golden(
        "CONNACK 5.0 session present",
        5,
        h("20", "03", "01", "00", "00"),  # CONNACK, len 3, session present, ok, no props
        Connack(session_present=True),
    ),
    Golden(
        "CONNACK 5.0 success with the server's capability properties",
        5,
        h(
            "20",  # CONNACK
            "2c",  # remaining length 44
            "00",  # acknowledge flags: no session present
            "00",  # reason code Success
            "29",  # property length 41
            "11 00000078",  # Session Expiry Interval 120
            "12 0004 6175746f",  # Assigned Client Identifier "auto"
            "13 0014",  # Server Keep Alive 20
            "1f 0002 6f6b",  # Reason String "ok"
            "21 000a",  # Receive Maximum 10
            "22 0005",  # Topic Alias Maximum 5
            "24 01",  # Maximum QoS 1
            "25 00",  # Retain Available 0
            "27 00004000",  # Maximum Packet Size 16384
            "28 00",  # Wildcard Subscription Available 0
            "29 01",  # Subscription Identifier Available 1
            "2a 00",  # Shared Subscription Available 0
        ),
        Connack(
            properties={
                P.SESSION_EXPIRY_INTERVAL: 120,
                P.ASSIGNED_CLIENT_IDENTIFIER: "auto",
                P.SERVER_KEEP_ALIVE: 20,
                P.REASON_STRING: "ok",
                P.RECEIVE_MAXIMUM: 10,
                P.TOPIC_ALIAS_MAXIMUM: 5,
                P.MAXIMUM_QOS: 1,
                P.RETAIN_AVAILABLE: 0,
                P.MAXIMUM_PACKET_SIZE: 16384,
                P.WILDCARD_SUBSCRIPTION_AVAILABLE: 0,
                P.SUBSCRIPTION_IDENTIFIER_AVAILABLE: 1,
                P.SHARED_SUBSCRIPTION_AVAILABLE: 0,
            }
        ),
    ),
    Golden(
        "CONNACK 5.0 not authorized with reason string",
        5,
        h(
            "20",  # CONNACK
            "0c",  # remaining length 12
            "00",  # acknowledge flags
            "87",  # reason code Not authorized
            "09",  # property length 9
            "1f 0006 64656e696564",  # Reason String "denied"
        ),
        Connack(reason_code=RC.NOT_AUTHORIZED, properties={P.REASON_STRING: "denied"}),
    ),
    Golden(
        "CONNACK 5.0 use another server with server reference and user property",
        5,
        h(
            "20",  # CONNACK
            "12",  # remaining length 18
            "00",  # acknowledge flags
            "9c",  # reason code Use another server
            "0f",  # property length 15
            "1c 0005 686f737432",  # Server Reference "host2"
            "26 0001 78 0001 79",  # User Property ("x", "y")
        ),
        Connack(
            reason_code=RC.USE_ANOTHER_SERVER,
            properties={P.SERVER_REFERENCE: "host2", P.USER_PROPERTY: [("x", "y")]},
        ),
    ),
]

# ---------------------------------------------------------------------------
# PUBLISH (3.1.1 / 5.0 section 3.3). First byte: 0011 DUP QoS(2 bits) RETAIN.
# Variable header: topic name, packet identifier if QoS > 0, then (5.0) properties.
# ---------------------------------------------------------------------------

PUBLISH_VECTORS: list[Golden] = [
    Golden(
        "PUBLISH 3.1 QoS 1",
        3,
        h(
            "32",  # PUBLISH, QoS 1
            "09",  # remaining length 9
            "0003 612f62",  # topic "a/b"
            "000a",  # packet identifier 10
            "6869",  # payload "hi"
        ),
        Publish(topic="a/b", payload=b"hi", qos=1, packet_id=10),
    ),
    Golden(
        "PUBLISH 3.1.1 QoS 0",
        4,
        h(
            "30",  # PUBLISH, DUP 0, QoS 0, RETAIN 0
            "07",  # remaining length 7
            "0003 612f62",  # topic "a/b" (no packet identifier at QoS 0)
            "6869",  # payload "hi"
        ),
        Publish(topic="a/b", payload=b"hi"),
    ),
    Golden(
        "PUBLISH 3.1.1 QoS 0 retained",
        4,
        h("31", "07", "0003 612f62", "6869"),  # PUBLISH retain, len 7, "a/b", "hi"
        Publish(topic="a/b", payload=b"hi", retain=True),
    ),
    Golden(
        "PUBLISH 3.1.1 QoS 1",
        4,
        h(
            "32",  # PUBLISH, QoS 1
            "09",  # remaining length 9
            "0003 612f62",  # topic "a/b"
            "000a",  # packet identifier 10
            "6869",  # payload "hi"
        ),
        Publish(topic="a/b", payload=b"hi", qos=1, packet_id=10),
    ),
    Golden(
        "PUBLISH 3.1.1 QoS 1 duplicate",
        4,
        h("3a", "09", "0003 612f62", "000b", "6869"),  # DUP QoS 1, len 9, id 11
        Publish(topic="a/b", payload=b"hi", qos=1, dup=True, packet_id=11),
    ),
    Golden(
        "PUBLISH 3.1.1 QoS 2 duplicate retained, packet identifier 65535",
        4,
        h(
            "3d",  # PUBLISH, DUP 1, QoS 2, RETAIN 1
            "09",  # remaining length 9
            "0003 612f62",  # topic "a/b"
            "ffff",  # packet identifier 65535
            "0001",  # payload: bytes 00 01
        ),
        Publish(
            topic="a/b",
            payload=b"\x00\x01",
            qos=2,
            retain=True,
            dup=True,
            packet_id=65535,
        ),
    ),
    Golden(
        "PUBLISH 3.1.1 empty payload",
        4,
        h("30", "05", "0003 612f62"),  # PUBLISH, len 5, topic "a/b", no payload
        Publish(topic="a/b"),
    ),
    Golden(
        "PUBLISH 3.1.1 non-ASCII topic",
        4,
        h(
            "30",  # PUBLISH
            "08",  # remaining length 8
            "0006 c3bc2fe282ac",  # topic "\u00fc/\u20ac" (6 UTF-8 bytes)
        ),
        Publish(topic="\u00fc/\u20ac"),
    ),
    Golden(
        "PUBLISH 5.0 QoS 0 without properties",
        5,
        h(
            "30",  # PUBLISH
            "08",  # remaining length 8
            "0003 612f62",  # topic "a/b"
            "00",  # property length 0
            "6869",  # payload "hi"
        ),
        Publish(topic="a/b", payload=b"hi"),
    ),
    Golden(
        "PUBLISH 5.0 QoS 1 retained with every PUBLISH property",
        5,
        h(
            "33",  # PUBLISH, QoS 1, RETAIN
            "40",  # remaining length 64
            "0003 612f62",  # topic "a/b"
            "0001",  # packet identifier 1
            "36",  # property length 54
            "01 01",  # Payload Format Indicator 1
            "02 0000000a",  # Message Expiry Interval 10
            "03 0004 74657874",  # Content Type "text"
            "08 0005 7265706c79",  # Response Topic "reply"
            "09 0003 010203",  # Correlation Data 01 02 03
            "0b 01",  # Subscription Identifier 1
            "0b 8001",  # Subscription Identifier 128 (two-byte varint)
            "23 0007",  # Topic Alias 7
            "26 0002 6b31 0002 7631",  # User Property ("k1", "v1")
            "26 0002 6b30 0002 7630",  # User Property ("k0", "v0"), order kept
            "7b7d",  # payload "{}"
        ),
        Publish(
            topic="a/b",
            payload=b"{}",
            qos=1,
            retain=True,
            packet_id=1,
            properties={
                P.PAYLOAD_FORMAT_INDICATOR: 1,
                P.MESSAGE_EXPIRY_INTERVAL: 10,
                P.CONTENT_TYPE: "text",
                P.RESPONSE_TOPIC: "reply",
                P.CORRELATION_DATA: b"\x01\x02\x03",
                P.SUBSCRIPTION_IDENTIFIER: [1, 128],
                P.TOPIC_ALIAS: 7,
                P.USER_PROPERTY: [("k1", "v1"), ("k0", "v0")],
            },
        ),
    ),
    Golden(
        "PUBLISH 5.0 QoS 2 duplicate with empty payload",
        5,
        h(
            "3c",  # PUBLISH, DUP 1, QoS 2
            "08",  # remaining length 8
            "0003 612f62",  # topic "a/b"
            "1234",  # packet identifier 0x1234
            "00",  # property length 0 (and no payload)
        ),
        Publish(topic="a/b", qos=2, dup=True, packet_id=0x1234),
    ),
    Golden(
        "PUBLISH 5.0 QoS 1 with empty payload",
        5,
        h("32", "06", "0001 74", "0002", "00"),  # QoS 1, len 6, "t", id 2, no props
        Publish(topic="t", qos=1, packet_id=2),
    ),
    Golden(
        "PUBLISH 5.0 empty topic name with a Topic Alias",
        5,
        h(
            "30",  # PUBLISH
            "07",  # remaining length 7
            "0000",  # topic name "" (the alias stands for it)
            "03",  # property length 3
            "23 0005",  # Topic Alias 5
            "78",  # payload "x"
        ),
        Publish(topic="", payload=b"x", properties={P.TOPIC_ALIAS: 5}),
    ),
    Golden(
        "PUBLISH 5.0 properties not in identifier order (decode only)",
        5,
        h(
            "30",  # PUBLISH
            "10",  # remaining length 16
            "0001 74",  # topic "t"
            "0c",  # property length 12
            "26 0001 6b 0001 76",  # User Property ("k", "v")
            "02 0000003c",  # Message Expiry Interval 60
        ),
        Publish(
            topic="t",
            properties={P.USER_PROPERTY: [("k", "v")], P.MESSAGE_EXPIRY_INTERVAL: 60},
        ),
        canonical=False,
    ),
]

# ---------------------------------------------------------------------------
# PUBACK, PUBREC, PUBREL, PUBCOMP (3.4-3.7). PUBREL's first byte is 0110 0010.
# 5.0: remaining length 2 means Success without properties; 3 adds a reason code;
# 4 or more adds a property length and properties.
# ---------------------------------------------------------------------------

ACK_VECTORS: list[Golden] = [
    Golden("PUBACK 3.1", 3, h("40", "02", "0001"), Puback(1)),  # len 2, id 1
    Golden("PUBREL 3.1", 3, h("62", "02", "0002"), Pubrel(2)),  # flags 0010, id 2
    # MQTT 3.1 let a client set DUP on a re-sent PUBREL/SUBSCRIBE/UNSUBSCRIBE
    # (flags 1010); the encoder never writes that form, so these are decode-only.
    Golden("PUBREL 3.1 re-sent with DUP", 3, h("6a", "02", "0002"), Pubrel(2), False),
    Golden(
        "SUBSCRIBE 3.1 re-sent with DUP",
        3,
        h("8a", "08", "0003", "0003 612f62", "01"),
        Subscribe(3, (Subscription("a/b", 1),)),
        False,
    ),
    Golden(
        "UNSUBSCRIBE 3.1 re-sent with DUP",
        3,
        h("aa", "07", "0004", "0003 612f62"),
        Unsubscribe(4, ("a/b",)),
        False,
    ),
    Golden("PUBACK 3.1.1", 4, h("40", "02", "0001"), Puback(1)),  # PUBACK, len 2, id 1
    Golden("PUBREC 3.1.1", 4, h("50", "02", "0002"), Pubrec(2)),  # PUBREC, len 2, id 2
    Golden("PUBREL 3.1.1", 4, h("62", "02", "0003"), Pubrel(3)),  # PUBREL, len 2, id 3
    Golden("PUBCOMP 3.1.1", 4, h("70", "02", "ffff"), Pubcomp(65535)),  # id 65535
    Golden("PUBACK 5.0 short form", 5, h("40", "02", "0001"), Puback(1)),
    Golden("PUBREC 5.0 short form", 5, h("50", "02", "0002"), Pubrec(2)),
    Golden("PUBREL 5.0 short form", 5, h("62", "02", "0003"), Pubrel(3)),
    Golden("PUBCOMP 5.0 short form", 5, h("70", "02", "0004"), Pubcomp(4)),
    Golden(
        "PUBACK 5.0 reason code only",
        5,
        h(
            "40",  # PUBACK
            "03",  # remaining length 3
            "0001",  # packet identifier 1
            "10",  # reason code No matching subscribers
        ),
        Puback(1, reason_code=RC.NO_MATCHING_SUBSCRIBERS),
    ),
    Golden(
        "PUBREC 5.0 reason code only",
        5,
        h("50", "03", "0002", "97"),  # PUBREC, len 3, id 2, Quota exceeded
        Pubrec(2, reason_code=RC.QUOTA_EXCEEDED),
    ),
    Golden(
        "PUBREL 5.0 reason code only",
        5,
        h("62", "03", "0003", "92"),  # PUBREL, len 3, id 3, Packet Identifier not found
        Pubrel(3, reason_code=RC.PACKET_IDENTIFIER_NOT_FOUND),
    ),
    Golden(
        "PUBCOMP 5.0 reason code only",
        5,
        h("70", "03", "0004", "92"),  # PUBCOMP, len 3, id 4, Packet Identifier not found
        Pubcomp(4, reason_code=RC.PACKET_IDENTIFIER_NOT_FOUND),
    ),
    Golden(
        "PUBACK 5.0 with reason string and user property",
        5,
        h(
            "40",  # PUBACK
            "14",  # remaining length 20
            "0005",  # packet identifier 5
            "87",  # reason code Not authorized
            "10",  # property length 16
            "1f 0006 64656e696564",  # Reason String "denied"
            "26 0001 6b 0001 76",  # User Property ("k", "v")
        ),
        Puback(
            5,
            reason_code=RC.NOT_AUTHORIZED,
            properties={P.REASON_STRING: "denied", P.USER_PROPERTY: [("k", "v")]},
        ),
    ),
    Golden(
        "PUBREC 5.0 success with a user property",
        5,
        h(
            "50",  # PUBREC
            "0b",  # remaining length 11
            "0006",  # packet identifier 6
            "00",  # reason code Success (needed because properties follow)
            "07",  # property length 7
            "26 0001 6b 0001 76",  # User Property ("k", "v")
        ),
        Pubrec(6, properties={P.USER_PROPERTY: [("k", "v")]}),
    ),
    Golden(
        "PUBREL 5.0 with reason string",
        5,
        h(
            "62",  # PUBREL
            "0a",  # remaining length 10
            "0007",  # packet identifier 7
            "92",  # reason code Packet Identifier not found
            "06",  # property length 6
            "1f 0003 676f6e",  # Reason String "gon"
        ),
        Pubrel(
            7,
            reason_code=RC.PACKET_IDENTIFIER_NOT_FOUND,
            properties={P.REASON_STRING: "gon"},
        ),
    ),
    Golden(
        "PUBCOMP 5.0 success with reason string",
        5,
        h(
            "70",  # PUBCOMP
            "09",  # remaining length 9
            "0004",  # packet identifier 4
            "00",  # reason code Success
            "05",  # property length 5
            "1f 0002 6f6b",  # Reason String "ok"
        ),
        Pubcomp(4, properties={P.REASON_STRING: "ok"}),
    ),
    Golden(
        "PUBACK 5.0 explicit Success reason code (decode only)",
        5,
        h("40", "03", "0001", "00"),  # PUBACK, len 3, id 1, reason code Success
        Puback(1),
        canonical=False,
    ),
    Golden(
        "PUBACK 5.0 explicit Success and empty property list (decode only)",
        5,
        h("40", "04", "0001", "00", "00"),  # len 4, id 1, Success, property length 0
        Puback(1),
        canonical=False,
    ),
]

# ---------------------------------------------------------------------------
# SUBSCRIBE (3.8): first byte 1000 0010. 5.0 subscription options byte:
# bits 1-0 QoS, bit 2 No Local, bit 3 Retain As Published, bits 5-4 Retain
# Handling, bits 7-6 reserved. 3.1/3.1.1: only the QoS bits, the rest reserved.
# ---------------------------------------------------------------------------

SUBSCRIBE_VECTORS: list[Golden] = [
    Golden(
        "SUBSCRIBE 3.1 one filter",
        3,
        h(
            "82",  # SUBSCRIBE, flags 0010
            "08",  # remaining length 8
            "0002",  # packet identifier 2
            "0003 612f62",  # topic filter "a/b"
            "01",  # requested QoS 1
        ),
        Subscribe(2, (Subscription("a/b", qos=1),)),
    ),
    Golden(
        "SUBSCRIBE 3.1.1 three filters",
        4,
        h(
            "82",  # SUBSCRIBE, flags 0010
            "12",  # remaining length 18
            "0001",  # packet identifier 1
            "0003 612f62",  # topic filter "a/b"
            "00",  # requested QoS 0
            "0003 632f23",  # topic filter "c/#"
            "01",  # requested QoS 1
            "0001 2b",  # topic filter "+"
            "02",  # requested QoS 2
        ),
        Subscribe(
            1,
            (
                Subscription("a/b", qos=0),
                Subscription("c/#", qos=1),
                Subscription("+", qos=2),
            ),
        ),
    ),
    Golden(
        "SUBSCRIBE 5.0 minimal",
        5,
        h(
            "82",  # SUBSCRIBE
            "07",  # remaining length 7
            "000a",  # packet identifier 10
            "00",  # property length 0
            "0001 74",  # topic filter "t"
            "00",  # options: QoS 0
        ),
        Subscribe(10, (Subscription("t"),)),
    ),
    Golden(
        "SUBSCRIBE 5.0 options bits and subscription identifier",
        5,
        h(
            "82",  # SUBSCRIBE
            "1e",  # remaining length 30
            "0001",  # packet identifier 1
            "0b",  # property length 11
            "0b 808001",  # Subscription Identifier 16384 (three-byte varint)
            "26 0001 6b 0001 76",  # User Property ("k", "v")
            "0003 612f62",  # topic filter "a/b"
            "05",  # options: QoS 1, No Local
            "0003 632f23",  # topic filter "c/#"
            "1a",  # options: QoS 2, Retain As Published, Retain Handling 1
            "0001 64",  # topic filter "d"
            "20",  # options: QoS 0, Retain Handling 2
        ),
        Subscribe(
            1,
            (
                Subscription("a/b", qos=1, no_local=True),
                Subscription("c/#", qos=2, retain_as_published=True, retain_handling=1),
                Subscription("d", qos=0, retain_handling=2),
            ),
            properties={
                P.SUBSCRIPTION_IDENTIFIER: [16384],
                P.USER_PROPERTY: [("k", "v")],
            },
        ),
    ),
]

# ---------------------------------------------------------------------------
# SUBACK (3.9): packet identifier, (5.0) properties, one code per filter.
# ---------------------------------------------------------------------------

SUBACK_VECTORS: list[Golden] = [
    Golden(
        "SUBACK 3.1",
        3,
        h("90", "03", "0002", "01"),  # SUBACK, len 3, id 2, granted QoS 1
        Suback(2, (1,)),
    ),
    Golden(
        "SUBACK 3.1.1 granted QoS 0, 1, 2 and failure",
        4,
        h(
            "90",  # SUBACK
            "06",  # remaining length 6
            "0001",  # packet identifier 1
            "00",  # success, maximum QoS 0
            "01",  # success, maximum QoS 1
            "02",  # success, maximum QoS 2
            "80",  # failure
        ),
        Suback(1, (0, 1, 2, 0x80)),
    ),
    Golden(
        "SUBACK 5.0 minimal",
        5,
        h("90", "04", "0002", "00", "00"),  # SUBACK, len 4, id 2, no props, QoS 0
        Suback(2, (RC.GRANTED_QOS_0,)),
    ),
    Golden(
        "SUBACK 5.0 reason codes and reason string",
        5,
        h(
            "90",  # SUBACK
            "0d",  # remaining length 13
            "0001",  # packet identifier 1
            "07",  # property length 7
            "1f 0004 70617274",  # Reason String "part"
            "01",  # Granted QoS 1
            "87",  # Not authorized
            "a2",  # Wildcard Subscriptions not supported
        ),
        Suback(
            1,
            (
                RC.GRANTED_QOS_1,
                RC.NOT_AUTHORIZED,
                RC.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
            ),
            properties={P.REASON_STRING: "part"},
        ),
    ),
]

# ---------------------------------------------------------------------------
# UNSUBSCRIBE (3.10, first byte 1010 0010) and UNSUBACK (3.11).
# ---------------------------------------------------------------------------

UNSUBSCRIBE_VECTORS: list[Golden] = [
    Golden(
        "UNSUBSCRIBE 3.1",
        3,
        h("a2", "07", "0004", "0003 612f62"),  # UNSUBSCRIBE, len 7, id 4, "a/b"
        Unsubscribe(4, ("a/b",)),
    ),
    Golden(
        "UNSUBSCRIBE 3.1.1 two filters",
        4,
        h(
            "a2",  # UNSUBSCRIBE, flags 0010
            "0c",  # remaining length 12
            "0003",  # packet identifier 3
            "0003 612f62",  # topic filter "a/b"
            "0003 632f23",  # topic filter "c/#"
        ),
        Unsubscribe(3, ("a/b", "c/#")),
    ),
    Golden(
        "UNSUBSCRIBE 5.0 with user property",
        5,
        h(
            "a2",  # UNSUBSCRIBE
            "0f",  # remaining length 15
            "0003",  # packet identifier 3
            "07",  # property length 7
            "26 0001 6b 0001 76",  # User Property ("k", "v")
            "0003 612f62",  # topic filter "a/b"
        ),
        Unsubscribe(3, ("a/b",), properties={P.USER_PROPERTY: [("k", "v")]}),
    ),
    Golden(
        "UNSUBACK 3.1",
        3,
        h("b0", "02", "0004"),  # UNSUBACK, len 2, id 4
        Unsuback(4),
    ),
    Golden(
        "UNSUBACK 3.1.1",
        4,
        h("b0", "02", "0003"),  # UNSUBACK, len 2, id 3 (no reason codes in 3.1.1)
        Unsuback(3, ()),
    ),
    Golden(
        "UNSUBACK 5.0 two reason codes",
        5,
        h(
            "b0",  # UNSUBACK
            "05",  # remaining length 5
            "0003",  # packet identifier 3
            "00",  # property length 0
            "00",  # Success
            "11",  # No subscription existed
        ),
        Unsuback(3, (RC.SUCCESS, RC.NO_SUBSCRIPTION_EXISTED)),
    ),
    Golden(
        "UNSUBACK 5.0 with reason string",
        5,
        h(
            "b0",  # UNSUBACK
            "09",  # remaining length 9
            "0003",  # packet identifier 3
            "05",  # property length 5
            "1f 0002 6e6f",  # Reason String "no"
            "87",  # Not authorized
        ),
        Unsuback(3, (RC.NOT_AUTHORIZED,), properties={P.REASON_STRING: "no"}),
    ),
]

# ---------------------------------------------------------------------------
# PINGREQ (3.12), PINGRESP (3.13): fixed header only.
# ---------------------------------------------------------------------------

PING_VECTORS: list[Golden] = [
    Golden(f"{name} level {level}", level, h(first, "00"), packet)
    for level in (3, 4, 5)
    for name, first, packet in (("PINGREQ", "c0", Pingreq()), ("PINGRESP", "d0", Pingresp()))
]

# ---------------------------------------------------------------------------
# DISCONNECT (3.14). 5.0: length 0 means Normal disconnection without properties;
# length 1 is a reason code alone; longer adds a property length and properties.
# ---------------------------------------------------------------------------

DISCONNECT_VECTORS: list[Golden] = [
    Golden("DISCONNECT 3.1", 3, h("e0", "00"), Disconnect()),
    Golden("DISCONNECT 3.1.1", 4, h("e0", "00"), Disconnect()),
    Golden("DISCONNECT 5.0 empty", 5, h("e0", "00"), Disconnect()),
    Golden(
        "DISCONNECT 5.0 reason code only",
        5,
        h(
            "e0",  # DISCONNECT
            "01",  # remaining length 1
            "04",  # reason code Disconnect with Will Message
        ),
        Disconnect(reason_code=RC.DISCONNECT_WITH_WILL_MESSAGE),
    ),
    Golden(
        "DISCONNECT 5.0 with session expiry and reason string",
        5,
        h(
            "e0",  # DISCONNECT
            "0d",  # remaining length 13
            "00",  # reason code Normal disconnection
            "0b",  # property length 11
            "11 0000012c",  # Session Expiry Interval 300
            "1f 0003 627965",  # Reason String "bye"
        ),
        Disconnect(properties={P.SESSION_EXPIRY_INTERVAL: 300, P.REASON_STRING: "bye"}),
    ),
    Golden(
        "DISCONNECT 5.0 use another server with server reference",
        5,
        h(
            "e0",  # DISCONNECT
            "0a",  # remaining length 10
            "9c",  # reason code Use another server
            "08",  # property length 8
            "1c 0005 686f737432",  # Server Reference "host2"
        ),
        Disconnect(reason_code=RC.USE_ANOTHER_SERVER, properties={P.SERVER_REFERENCE: "host2"}),
    ),
    Golden(
        "DISCONNECT 5.0 explicit Normal disconnection (decode only)",
        5,
        h("e0", "01", "00"),  # DISCONNECT, len 1, reason code 0
        Disconnect(),
        canonical=False,
    ),
    Golden(
        "DISCONNECT 5.0 explicit reason code and empty properties (decode only)",
        5,
        h("e0", "02", "00", "00"),  # DISCONNECT, len 2, reason 0, property length 0
        Disconnect(),
        canonical=False,
    ),
]

# ---------------------------------------------------------------------------
# AUTH (5.0 section 3.15): length 0 means Success without properties.
# ---------------------------------------------------------------------------

AUTH_VECTORS: list[Golden] = [
    Golden("AUTH 5.0 empty (success)", 5, h("f0", "00"), Auth()),
    Golden(
        "AUTH 5.0 continue authentication with method and data",
        5,
        h(
            "f0",  # AUTH
            "10",  # remaining length 16
            "18",  # reason code Continue authentication
            "0e",  # property length 14
            "15 0005 736372616d",  # Authentication Method "scram"
            "16 0003 010203",  # Authentication Data 01 02 03
        ),
        Auth(
            reason_code=RC.CONTINUE_AUTHENTICATION,
            properties={
                P.AUTHENTICATION_METHOD: "scram",
                P.AUTHENTICATION_DATA: b"\x01\x02\x03",
            },
        ),
    ),
    Golden(
        "AUTH 5.0 re-authenticate with method only",
        5,
        h(
            "f0",  # AUTH
            "0a",  # remaining length 10
            "19",  # reason code Re-authenticate
            "08",  # property length 8
            "15 0005 736372616d",  # Authentication Method "scram"
        ),
        Auth(
            reason_code=RC.RE_AUTHENTICATE,
            properties={P.AUTHENTICATION_METHOD: "scram"},
        ),
    ),
    Golden(
        "AUTH 5.0 success with method and data",
        5,
        h(
            "f0",  # AUTH
            "0e",  # remaining length 14
            "00",  # reason code Success
            "0c",  # property length 12
            "15 0005 736372616d",  # Authentication Method "scram"
            "16 0001 ff",  # Authentication Data ff
        ),
        Auth(properties={P.AUTHENTICATION_METHOD: "scram", P.AUTHENTICATION_DATA: b"\xff"}),
    ),
]

# ---------------------------------------------------------------------------
# Variable Byte Integer boundaries inside a packet: a 5.0 SUBSCRIBE whose
# Subscription Identifier takes each boundary value (section 1.5.5 table).
# ---------------------------------------------------------------------------

_VARINT_BOUNDARIES: list[tuple[int, str]] = [
    (1, "01"),
    (127, "7f"),
    (128, "8001"),
    (16383, "ff7f"),
    (16384, "808001"),
    (2097151, "ffff7f"),
    (2097152, "80808001"),
    (268435455, "ffffff7f"),
]

VARINT_VECTORS: list[Golden] = [
    Golden(
        f"SUBSCRIBE 5.0 Subscription Identifier {value}",
        5,
        h(
            "82",  # SUBSCRIBE
            f"{8 + len(encoded) // 2:02x}",  # remaining length 8 + varint size
            "0001",  # packet identifier 1
            f"{1 + len(encoded) // 2:02x}",  # property length
            "0b",  # Subscription Identifier
            encoded,  # ... its value as a Variable Byte Integer
            "0001 74",  # topic filter "t"
            "00",  # options: QoS 0
        ),
        Subscribe(1, (Subscription("t"),), properties={P.SUBSCRIPTION_IDENTIFIER: [value]}),
    )
    for value, encoded in _VARINT_BOUNDARIES
]

GOLDEN_VECTORS: list[Golden] = (
    CONNECT_VECTORS
    + CONNACK_VECTORS
    + PUBLISH_VECTORS
    + ACK_VECTORS
    + SUBSCRIBE_VECTORS
    + SUBACK_VECTORS
    + UNSUBSCRIBE_VECTORS
    + PING_VECTORS
    + DISCONNECT_VECTORS
    + AUTH_VECTORS
    + VARINT_VECTORS
)

# ---------------------------------------------------------------------------
# Remaining Length boundaries (section 2.2.3 / 2.1.4): 3.1.1 QoS 0 PUBLISH to
# topic "t" (3 bytes of variable header), so the payload is length - 3 bytes.
# ---------------------------------------------------------------------------

#: (remaining length, its hand-written Variable Byte Integer encoding)
REMAINING_LENGTH_BOUNDARIES: list[tuple[int, str]] = [
    (127, "7f"),
    (128, "8001"),
    (16383, "ff7f"),
    (16384, "808001"),
    (2097151, "ffff7f"),
    (2097152, "80808001"),
]

_BIG_MAX_PACKET_SIZE = 4 * 1024 * 1024


def _boundary_publish(remaining_length: int, encoded: str) -> tuple[bytes, Publish]:
    payload = b"\xaa" * (remaining_length - 3)
    wire = h("30", encoded, "0001 74") + payload  # PUBLISH QoS 0, length, topic "t"
    return wire, Publish(topic="t", payload=payload)


# ---------------------------------------------------------------------------
# Negative vectors: (name, level, bytes, reason code).
# ---------------------------------------------------------------------------

MALFORMED = RC.MALFORMED_PACKET
PROTOCOL = RC.PROTOCOL_ERROR

#: CONNECT 3.1.1 variable header prefix: protocol name "MQTT", level 4.
_MQTT4 = "0004 4d515454 04"
#: CONNECT 5.0 variable header prefix: protocol name "MQTT", version 5.
_MQTT5 = "0004 4d515454 05"

NEGATIVE_VECTORS: list[Bad] = [
    # A Response Topic is a topic name: no wildcards [MQTT-3.3.2-14].
    Bad(
        "PUBLISH 5.0 Response Topic with a wildcard",
        5,
        h("30", "0a", "0001 74", "06", "08 0003 612f2b"),
        PROTOCOL,
    ),
    Bad(
        "CONNECT 5.0 will Response Topic with a wildcard",
        None,
        h("10", "18", _MQTT5, "06", "003c", "00", "0001 63", "04 08 0001 23", "0001 77", "0000"),
        PROTOCOL,
    ),
    # Reserved fixed-header flags (2.2.2 / 2.1.3).
    Bad("PUBREL with flags 0000", 4, h("60", "02", "0001"), MALFORMED),
    Bad("PUBREL 3.1.1 with DUP (flags 1010)", 4, h("6a", "02", "0001"), MALFORMED),
    # Authentication Data needs an Authentication Method (5.0 section 3.1.2.11.10).
    Bad(
        "AUTH 5.0 data without method",
        5,
        h("f0", "05", "18", "03", "16 0000"),
        PROTOCOL,
    ),
    Bad(
        "CONNECT 5.0 authentication data without method",
        None,
        h("10", "11", "0004 4d515454", "05", "02", "003c", "03", "16 0000", "0001 63"),
        PROTOCOL,
    ),
    Bad(
        "SUBSCRIBE with flags 0000",
        4,
        h("80", "08", "0001", "0003 612f62", "00"),
        MALFORMED,
    ),
    Bad("UNSUBSCRIBE with flags 0000", 4, h("a0", "07", "0001", "0003 612f62"), MALFORMED),
    Bad("PUBACK with flags 0010", 4, h("42", "02", "0001"), MALFORMED),
    Bad("PINGREQ with flags 0001", 4, h("c1", "00"), MALFORMED),
    Bad("CONNACK with flags 1000", 4, h("28", "02", "00", "00"), MALFORMED),
    Bad("DISCONNECT 5.0 with flags 0001", 5, h("e1", "00"), MALFORMED),
    Bad(
        "CONNECT with flags 0001",
        None,
        h("11", "0c", _MQTT4, "02", "003c", "0000"),
        MALFORMED,
    ),
    # PUBLISH fixed header.
    Bad("PUBLISH QoS 3", 4, h("36", "07", "0003 612f62", "0001"), MALFORMED),
    Bad("PUBLISH 5.0 QoS 3", 5, h("36", "08", "0003 612f62", "0001", "00"), MALFORMED),
    Bad("PUBLISH DUP with QoS 0", 4, h("38", "05", "0003 612f62"), MALFORMED),
    # Packet identifier 0 (2.2.1 / 2.3.1).
    Bad("PUBLISH QoS 1 packet identifier 0", 4, h("32", "07", "0003 612f62", "0000"), PROTOCOL),
    Bad("PUBACK packet identifier 0", 4, h("40", "02", "0000"), PROTOCOL),
    Bad("PUBREL 5.0 packet identifier 0", 5, h("62", "02", "0000"), PROTOCOL),
    Bad(
        "SUBSCRIBE 5.0 packet identifier 0",
        5,
        h("82", "07", "0000", "00", "0001 74", "00"),
        PROTOCOL,
    ),
    Bad("UNSUBACK packet identifier 0", 4, h("b0", "02", "0000"), PROTOCOL),
    # Variable Byte Integers (1.5.5 / 2.2.3).
    Bad("remaining length 0 in two bytes", 4, h("c0", "8000"), MALFORMED),
    Bad("remaining length 128 in three bytes", 4, h("30", "808100") + bytes(128), MALFORMED),
    Bad("remaining length of five bytes", 4, h("30", "ffffffff01"), MALFORMED),
    Bad(
        "property length 0 in two bytes",
        5,
        h("30", "05", "0001 74", "8000"),
        MALFORMED,
    ),
    Bad(
        "Subscription Identifier 5 in two bytes",
        5,
        h("82", "0a", "0001", "03", "0b 8500", "0001 74", "00"),
        MALFORMED,
    ),
    # UTF-8 strings (1.5.4).
    Bad("topic with invalid UTF-8 (c3 28)", 4, h("30", "04", "0002 c328"), MALFORMED),
    Bad("topic with overlong UTF-8 (c0 af)", 4, h("30", "04", "0002 c0af"), MALFORMED),
    Bad("topic with a UTF-16 surrogate (ed a0 80)", 4, h("30", "05", "0003 eda080"), MALFORMED),
    Bad("topic with U+0000", 4, h("30", "05", "0003 610062"), MALFORMED),
    Bad(
        "client identifier with invalid UTF-8",
        None,
        h("10", "0d", _MQTT4, "02", "003c", "0001 ff"),
        MALFORMED,
    ),
    Bad(
        "user property name with U+0000",
        5,
        h("40", "0b", "0001", "00", "07", "26 0001 00 0001 76"),
        MALFORMED,
    ),
    Bad("topic filter with invalid UTF-8", 4, h("82", "06", "0001", "0001 ff", "00"), MALFORMED),
    # Properties not allowed where they appear (2.2.2.2).
    Bad(
        "Session Expiry Interval in PUBLISH",
        5,
        h("30", "09", "0001 74", "05", "11 0000000a"),
        MALFORMED,
    ),
    Bad(
        "Will Delay Interval in CONNECT properties",
        None,
        h("10", "12", _MQTT5, "02", "003c", "05", "18 00000005", "0000"),
        MALFORMED,
    ),
    Bad(
        "Session Expiry Interval in Will Properties",
        None,
        h(
            "10",
            "18",
            _MQTT5,
            "06",
            "003c",
            "00",  # flags: will, clean start
            "0000",  # client identifier ""
            "05",
            "11 0000000a",  # will properties: Session Expiry Interval
            "0001 74",
            "0000",  # will topic "t", empty will payload
        ),
        MALFORMED,
    ),
    Bad("unknown property identifier 0x7f", 5, h("30", "06", "0001 74", "02", "7f 00"), MALFORMED),
    Bad(
        "Reason String in SUBSCRIBE",
        5,
        h("82", "0b", "0001", "04", "1f 0001 78", "0001 74", "00"),
        MALFORMED,
    ),
    # Duplicate non-repeatable properties.
    Bad(
        "Message Expiry Interval twice",
        5,
        h("30", "0e", "0001 74", "0a", "02 0000000a", "02 0000000b"),
        PROTOCOL,
    ),
    Bad(
        "Subscription Identifier twice in SUBSCRIBE",
        5,
        h("82", "0b", "0001", "04", "0b 01", "0b 02", "0001 74", "00"),
        PROTOCOL,
    ),
    Bad(
        "Reason String twice in PUBACK",
        5,
        h("40", "0c", "0001", "00", "08", "1f 0001 61", "1f 0001 62"),
        PROTOCOL,
    ),
    # Byte properties that must be 0 or 1.
    Bad("Payload Format Indicator 2", 5, h("30", "06", "0001 74", "02", "01 02"), PROTOCOL),
    Bad(
        "Request Problem Information 2",
        None,
        h("10", "0f", _MQTT5, "02", "003c", "02", "17 02", "0000"),
        PROTOCOL,
    ),
    Bad("Maximum QoS 2 in CONNACK", 5, h("20", "05", "00", "00", "02", "24 02"), PROTOCOL),
    # Properties that must not be 0.
    Bad(
        "Receive Maximum 0",
        None,
        h("10", "10", _MQTT5, "02", "003c", "03", "21 0000", "0000"),
        PROTOCOL,
    ),
    Bad(
        "Maximum Packet Size 0",
        5,
        h("20", "08", "00", "00", "05", "27 00000000"),
        PROTOCOL,
    ),
    Bad(
        "Subscription Identifier 0",
        5,
        h("82", "09", "0001", "02", "0b 00", "0001 74", "00"),
        PROTOCOL,
    ),
    Bad(
        "Topic Alias 0",
        5,
        h("30", "07", "0001 74", "03", "23 0000"),
        RC.TOPIC_ALIAS_INVALID,
    ),
    # PUBLISH topic names (4.7).
    Bad("PUBLISH topic with +", 4, h("30", "05", "0003 612f2b"), RC.TOPIC_NAME_INVALID),
    Bad("PUBLISH 5.0 topic with #", 5, h("30", "06", "0003 612f23", "00"), RC.TOPIC_NAME_INVALID),
    Bad("PUBLISH 3.1.1 empty topic", 4, h("30", "04", "0000", "6869"), PROTOCOL),
    Bad("PUBLISH 5.0 empty topic without Topic Alias", 5, h("30", "03", "0000", "00"), PROTOCOL),
    # Reason codes not defined for the packet.
    Bad("PUBACK reason code 0x01", 5, h("40", "03", "0001", "01"), MALFORMED),
    Bad("PUBREL reason code 0x10", 5, h("62", "03", "0001", "10"), MALFORMED),
    Bad("SUBACK reason code 0x03", 5, h("90", "04", "0001", "00", "03"), MALFORMED),
    Bad("UNSUBACK reason code 0x01", 5, h("b0", "04", "0001", "00", "01"), MALFORMED),
    Bad("CONNACK 5.0 reason code 0x01", 5, h("20", "03", "00", "01", "00"), MALFORMED),
    Bad("DISCONNECT reason code 0x05", 5, h("e0", "01", "05"), MALFORMED),
    Bad("AUTH reason code 0x80", 5, h("f0", "02", "80", "00"), MALFORMED),
    Bad("SUBACK 3.1.1 return code 0x03", 4, h("90", "03", "0001", "03"), MALFORMED),
    # Bytes left over after the packet's fields, or fields overrunning the packet.
    Bad("PINGREQ with a body", 4, h("c0", "01", "00"), MALFORMED),
    Bad("PUBACK 3.1.1 with a third byte", 4, h("40", "03", "0001", "00"), MALFORMED),
    Bad("UNSUBACK 3.1.1 with a third byte", 4, h("b0", "03", "0001", "00"), MALFORMED),
    Bad("DISCONNECT 3.1.1 with a body", 4, h("e0", "01", "00"), MALFORMED),
    Bad("CONNACK 3.1.1 with a third byte", 4, h("20", "03", "00", "00", "00"), MALFORMED),
    Bad("CONNACK 5.0 byte after properties", 5, h("20", "04", "00", "00", "00", "ff"), MALFORMED),
    Bad("PUBACK 5.0 byte after properties", 5, h("40", "05", "0001", "00", "00", "ff"), MALFORMED),
    Bad(
        "CONNECT with a byte after the payload",
        None,
        h("10", "0d", _MQTT4, "02", "003c", "0000", "ff"),
        MALFORMED,
    ),
    Bad("CONNECT without client identifier", None, h("10", "0a", _MQTT4, "02", "003c"), MALFORMED),
    Bad("topic length past the packet end", 4, h("30", "03", "0005 61"), MALFORMED),
    Bad("property length past the packet end", 5, h("40", "04", "0001", "00", "05"), MALFORMED),
    # CONNECT flags (3.1.2.3).
    Bad(
        "CONNECT reserved flag bit set",
        None,
        h("10", "0c", _MQTT4, "03", "003c", "0000"),
        MALFORMED,
    ),
    Bad(
        "CONNECT will QoS without will flag",
        None,
        h("10", "0c", _MQTT4, "0a", "003c", "0000"),
        MALFORMED,
    ),
    Bad(
        "CONNECT will retain without will flag",
        None,
        h("10", "0c", _MQTT4, "22", "003c", "0000"),
        MALFORMED,
    ),
    Bad(
        "CONNECT will QoS 3",
        None,
        h("10", "11", _MQTT4, "1e", "003c", "0000", "0001 74", "0000"),
        MALFORMED,
    ),
    Bad(
        "CONNECT 3.1.1 password without user name",
        None,
        h("10", "0f", _MQTT4, "42", "003c", "0000", "0001 70"),
        MALFORMED,
    ),
    # Protocol name and level (3.1.2.1, 3.1.2.2).
    Bad(
        "CONNECT name MQTT with level 3",
        None,
        h("10", "0c", "0004 4d515454", "03", "02", "003c", "0000"),
        RC.UNSUPPORTED_PROTOCOL_VERSION,
    ),
    Bad(
        "CONNECT name MQIsdp with level 4",
        None,
        h("10", "0e", "0006 4d5149736470", "04", "02", "003c", "0000"),
        RC.UNSUPPORTED_PROTOCOL_VERSION,
    ),
    Bad(
        "CONNECT unknown level 6",
        None,
        h("10", "0c", "0004 4d515454", "06", "02", "003c", "0000"),
        RC.UNSUPPORTED_PROTOCOL_VERSION,
    ),
    Bad(
        "CONNECT unknown protocol name MQTX",
        None,
        h("10", "0c", "0004 4d515458", "04", "02", "003c", "0000"),
        RC.UNSUPPORTED_PROTOCOL_VERSION,
    ),
    # SUBSCRIBE / UNSUBSCRIBE payload (3.8.3, 3.10.3).
    Bad("SUBSCRIBE 3.1.1 without filters", 4, h("82", "02", "0001"), PROTOCOL),
    Bad("SUBSCRIBE 5.0 without filters", 5, h("82", "03", "0001", "00"), PROTOCOL),
    Bad("UNSUBSCRIBE 3.1.1 without filters", 4, h("a2", "02", "0001"), PROTOCOL),
    Bad(
        "SUBSCRIBE 3.1.1 options reserved bit 2",
        4,
        h("82", "08", "0001", "0003 612f62", "04"),
        MALFORMED,
    ),
    Bad("SUBSCRIBE 3.1.1 QoS 3", 4, h("82", "08", "0001", "0003 612f62", "03"), MALFORMED),
    Bad(
        "SUBSCRIBE 5.0 options reserved bit 6",
        5,
        h("82", "07", "0001", "00", "0001 74", "40"),
        MALFORMED,
    ),
    Bad("SUBSCRIBE 5.0 QoS 3", 5, h("82", "07", "0001", "00", "0001 74", "03"), PROTOCOL),
    Bad(
        "SUBSCRIBE 5.0 Retain Handling 3",
        5,
        h("82", "07", "0001", "00", "0001 74", "30"),
        PROTOCOL,
    ),
    # Packet types.
    Bad("AUTH at level 4", 4, h("f0", "00"), MALFORMED),
    Bad("AUTH at level 3", 3, h("f0", "00"), MALFORMED),
    Bad("packet type 0", 4, h("00", "00"), MALFORMED),
    Bad("packet type 0 at level 5", 5, h("00", "00"), MALFORMED),
    # Maximum packet size: 11 bytes against a maximum of 10.
    Bad(
        "packet larger than the maximum",
        4,
        h("30", "09", "0003 612f62", "00000000"),
        RC.PACKET_TOO_LARGE,
        max_packet_size=10,
    ),
]


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _decoder(level: int | None, max_packet_size: int | None = None) -> Decoder:
    if max_packet_size is None:
        return Decoder(protocol_level=level)
    return Decoder(max_packet_size=max_packet_size, protocol_level=level)


def _decode_all(data: bytes, level: int | None, max_packet_size: int | None = None) -> list[Any]:
    if max_packet_size is None:
        return decode_all(data, level)
    return decode_all(data, level, max_packet_size=max_packet_size)


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _feed(decoder: Decoder, pieces: Iterable[bytes]) -> list[Any]:
    packets: list[Any] = []
    for piece in pieces:
        packets.extend(decoder.feed(piece))
    return packets


def _read_remaining_length(wire: bytes) -> tuple[int, int]:
    """
    Read the fixed header's Remaining Length by the section 1.5.5 algorithm;
    returns (value, header size). Independent of the codec under test.
    """
    value = 0
    multiplier = 1
    pos = 1
    while True:
        byte = wire[pos]
        value += (byte & 0x7F) * multiplier
        pos += 1
        if not byte & 0x80:
            return value, pos
        multiplier *= 128


class _VectorTestCase(SynchronousTestCase):
    """
    Runs one check per vector and reports every failing vector, not just the first.
    """

    maxDiff = None

    def each(
        self, items: Iterable[Any], label: Callable[[Any], str], check: Callable[[Any], None]
    ) -> None:
        """
        Call C{check} on each item; fail once at the end listing every item whose
        check raised, labelled by C{label(item)}.
        """
        items = list(items)
        failures: list[str] = []
        for item in items:
            name = label(item)
            with self.subTest(name):
                try:
                    check(item)
                except Exception as e:
                    failures.append(f"  {name}: {type(e).__name__}: {e}")
        if failures:
            self.fail(f"{len(failures)} of {len(items)} vectors failed:\n" + "\n".join(failures))


def _name(vector: Golden | Bad) -> str:
    return vector.name


class VectorSanityTests(_VectorTestCase):
    """
    The hand-written vectors agree with themselves, before any codec is involved.
    """

    def test_remaining_length_matches(self) -> None:
        """Each golden vector's Remaining Length equals the bytes that follow it."""

        def check(vector: Golden) -> None:
            length, header = _read_remaining_length(vector.wire)
            self.assertEqual(length, len(vector.wire) - header)

        self.each(GOLDEN_VECTORS, _name, check)

    def test_negative_remaining_length_matches(self) -> None:
        """Negative vectors fail for their stated reason, not a length slip."""

        def check(vector: Bad) -> None:
            length, header = _read_remaining_length(vector.wire)
            self.assertEqual(length, len(vector.wire) - header)

        self.each(
            [v for v in NEGATIVE_VECTORS if v.name != "remaining length of five bytes"],
            _name,
            check,
        )

    def test_vector_names_unique(self) -> None:
        """No two vectors share a name, so a failure report is unambiguous."""
        names = [v.name for v in GOLDEN_VECTORS] + [v.name for v in NEGATIVE_VECTORS]
        self.assertEqual(len(names), len(set(names)))

    def test_every_packet_type_at_every_level(self) -> None:
        """Golden vectors cover all packet types at each level that has them."""
        covered = {(v.level, type(v.packet).__name__) for v in GOLDEN_VECTORS}
        at_3 = {
            "Connect",
            "Connack",
            "Publish",
            "Puback",
            "Pubrel",
            "Subscribe",
            "Suback",
            "Unsubscribe",
            "Unsuback",
            "Pingreq",
            "Pingresp",
            "Disconnect",
        }
        at_4 = at_3 | {"Pubrec", "Pubcomp"}
        at_5 = at_4 | {"Auth"}
        for level, names in ((3, at_3), (4, at_4), (5, at_5)):
            for name in names:
                self.assertIn((level, name), covered)


class GoldenDecodeTests(_VectorTestCase):
    """
    The hand-written bytes decode to the expected packets.
    """

    def test_decode_all(self) -> None:
        """decode_all turns each vector's bytes into exactly its packet."""

        def check(vector: Golden) -> None:
            self.assertEqual(decode_all(vector.wire, vector.level), [vector.packet])

        self.each(GOLDEN_VECTORS, _name, check)

    def test_decode_byte_at_a_time(self) -> None:
        """Fed one byte at a time, the Decoder yields the same packet once."""

        def check(vector: Golden) -> None:
            decoder = _decoder(vector.level)
            self.assertEqual(_feed(decoder, _chunks(vector.wire, 1)), [vector.packet])
            self.assertEqual(decoder.buffered, 0)

        self.each(GOLDEN_VECTORS, _name, check)

    def test_decode_connect_adopts_level(self) -> None:
        """A decoder without a level accepts each CONNECT vector and adopts its level."""

        def check(vector: Golden) -> None:
            self.assertEqual(decode_all(vector.wire), [vector.packet])
            decoder = _decoder(None)
            self.assertEqual(_feed(decoder, _chunks(vector.wire, 1)), [vector.packet])
            self.assertEqual(decoder.protocol_level, vector.level)

        self.each(CONNECT_VECTORS, _name, check)

    def test_session_stream_per_level(self) -> None:
        """A CONNECT then every other vector of its level decodes in order, any chunking."""

        def check(level: int) -> None:
            connect = next(v for v in CONNECT_VECTORS if v.level == level)
            rest = [
                v for v in GOLDEN_VECTORS if v.level == level and not isinstance(v.packet, Connect)
            ]
            wire = connect.wire + b"".join(v.wire for v in rest)
            expected = [connect.packet] + [v.packet for v in rest]
            self.assertEqual(decode_all(wire), expected)
            for size in (1, 2, 3, 7, 64, len(wire)):
                self.assertEqual(_feed(_decoder(None), _chunks(wire, size)), expected)

        self.each((3, 4, 5), lambda level: f"level {level}", check)

    def test_empty_input(self) -> None:
        """No bytes decode to no packets."""
        self.assertEqual(decode_all(b"", 4), [])
        self.assertEqual(list(_decoder(4).feed(b"")), [])


class GoldenEncodeTests(_VectorTestCase):
    """
    The expected packets encode to exactly the hand-written bytes.
    """

    def test_encode(self) -> None:
        """encode gives each canonical vector's bytes, byte for byte."""

        def check(vector: Golden) -> None:
            self.assertEqual(encode(vector.packet, vector.level).hex(" "), vector.wire.hex(" "))

        self.each([v for v in GOLDEN_VECTORS if v.canonical], _name, check)

    def test_non_canonical_round_trip(self) -> None:
        """Non-minimal vectors re-encode to no more bytes, decoding to the same packet."""

        def check(vector: Golden) -> None:
            wire = encode(vector.packet, vector.level)
            self.assertLessEqual(len(wire), len(vector.wire))
            self.assertEqual(decode_all(wire, vector.level), [vector.packet])

        self.each([v for v in GOLDEN_VECTORS if not v.canonical], _name, check)

    def test_vectors_catch_a_broken_encoder(self) -> None:
        """
        The vectors are a real check: an encoder that swaps the will flag and the
        will retain bit (a bug its own decoder could share) no longer matches them.
        """
        original = encoder_module._encode_connect

        def swapped(packet: Connect, level: int) -> bytes:
            data = bytearray(original(packet, level))
            flags_at = data.index(bytes((level,)), 2) + 1
            flags = data[flags_at]
            will, retain = flags & 0x04, flags & 0x20
            data[flags_at] = (flags & ~0x24) | (0x20 if will else 0) | (0x04 if retain else 0)
            return bytes(data)

        self.patch(encoder_module, "_ENCODERS", {**encoder_module._ENCODERS, Connect: swapped})
        mismatches = [
            v.name for v in GOLDEN_VECTORS if v.canonical and encode(v.packet, v.level) != v.wire
        ]
        self.assertTrue(mismatches, "no golden vector noticed the broken encoder")


class RemainingLengthBoundaryTests(_VectorTestCase):
    """
    The fixed header's Remaining Length at each Variable Byte Integer boundary.
    """

    def test_zero(self) -> None:
        """Remaining Length 0 is the single byte 00 (PINGREQ, DISCONNECT)."""
        self.assertEqual(decode_all(h("c0", "00"), 4), [Pingreq()])
        self.assertEqual(encode(Pingreq(), 4), h("c0", "00"))
        self.assertEqual(decode_all(h("e0", "00"), 5), [Disconnect()])
        self.assertEqual(encode(Disconnect(), 5), h("e0", "00"))

    def test_boundaries(self) -> None:
        """PUBLISH packets whose length is 127, 128, 16383, 16384, 2^21-1 and 2^21."""

        def check(boundary: tuple[int, str]) -> None:
            remaining_length, encoded = boundary
            wire, packet = _boundary_publish(remaining_length, encoded)
            self.assertEqual(len(wire), 1 + len(encoded) // 2 + remaining_length)
            self.assertEqual(decode_all(wire, 4, max_packet_size=_BIG_MAX_PACKET_SIZE), [packet])
            got = encode(packet, 4)
            self.assertEqual(got[:8].hex(" "), wire[:8].hex(" "))
            self.assertEqual(len(got), len(wire))
            self.assertTrue(got == wire)
            # Header and topic byte by byte, then the payload in pieces.
            decoder = _decoder(4, _BIG_MAX_PACKET_SIZE)
            head = 1 + len(encoded) // 2 + 3
            pieces = list(_chunks(wire[:head], 1)) + list(_chunks(wire[head:], 4093))
            self.assertEqual(_feed(decoder, pieces), [packet])

        self.each(REMAINING_LENGTH_BOUNDARIES, lambda b: f"remaining length {b[0]}", check)

    def test_small_boundaries_byte_at_a_time(self) -> None:
        """The 127/128/16383/16384 PUBLISH vectors decode fed one byte at a time."""

        def check(boundary: tuple[int, str]) -> None:
            wire, packet = _boundary_publish(*boundary)
            self.assertEqual(_feed(_decoder(4), _chunks(wire, 1)), [packet])

        self.each(REMAINING_LENGTH_BOUNDARIES[:4], lambda b: f"remaining length {b[0]}", check)


class TruncationTests(_VectorTestCase):
    """
    A packet cut short is an error for decode_all and a wait for the Decoder.
    """

    def test_truncated(self) -> None:
        """Every proper prefix of a vector is refused whole and yields nothing when fed."""

        def check(vector: Golden) -> None:
            level = None if isinstance(vector.packet, Connect) else vector.level
            for cut in range(1, len(vector.wire)):
                prefix = vector.wire[:cut]
                self.assertRaises(RemoteProtocolError, decode_all, prefix, level)
                decoder = _decoder(level)
                self.assertEqual(_feed(decoder, _chunks(prefix, 1)), [])
                self.assertEqual(decoder.buffered, cut)

        self.each(GOLDEN_VECTORS, _name, check)


class NegativeVectorTests(_VectorTestCase):
    """
    Hand-made malformed packets are refused with the right reason code.
    """

    def test_whole(self) -> None:
        """decode_all raises RemoteProtocolError with the vector's reason code."""

        def check(vector: Bad) -> None:
            try:
                packets = _decode_all(vector.wire, vector.level, vector.max_packet_size)
            except RemoteProtocolError as e:
                self.assertEqual(
                    f"0x{int(e.reason_code):02X}",
                    f"0x{int(vector.reason):02X}",
                    f"codec said: {e.message}",
                )
            else:
                self.fail(f"accepted, decoded to {packets!r}")

        self.each(NEGATIVE_VECTORS, _name, check)

    def test_byte_at_a_time(self) -> None:
        """Fed one byte at a time, the Decoder raises the same reason code."""

        def check(vector: Bad) -> None:
            decoder = _decoder(vector.level, vector.max_packet_size)
            try:
                packets = _feed(decoder, _chunks(vector.wire, 1))
            except RemoteProtocolError as e:
                self.assertEqual(
                    f"0x{int(e.reason_code):02X}",
                    f"0x{int(vector.reason):02X}",
                    f"codec said: {e.message}",
                )
            else:
                self.fail(f"accepted, decoded to {packets!r}")

        self.each(NEGATIVE_VECTORS, _name, check)

    def test_first_packet_must_be_connect(self) -> None:
        """Without a level, a first packet other than CONNECT is refused."""
        wires = [h("c0", "00"), h("30", "05", "0003 612f62"), h("20", "02", "00", "00")]

        def check(wire: bytes) -> None:
            self.assertRaises(RemoteProtocolError, decode_all, wire)
            self.assertRaises(RemoteProtocolError, _feed, _decoder(None), _chunks(wire, 1))

        self.each(wires, lambda wire: wire.hex(" "), check)


class MaximumPacketSizeTests(SynchronousTestCase):
    """
    The maximum counts the whole packet and is enforced from the fixed header.
    """

    #: PUBLISH QoS 0 to "a/b" with a 4-byte payload: 11 bytes in all.
    WIRE = h("30", "09", "0003 612f62", "00000000")
    PACKET = Publish(topic="a/b", payload=bytes(4))

    def test_exactly_the_maximum(self) -> None:
        """A packet exactly max_packet_size bytes long (fixed header included) is accepted."""
        self.assertEqual(decode_all(self.WIRE, 4, max_packet_size=11), [self.PACKET])
        decoder = _decoder(4, 11)
        self.assertEqual(_feed(decoder, _chunks(self.WIRE, 1)), [self.PACKET])

    def test_one_over(self) -> None:
        """One byte over the maximum is Packet too large."""
        with self.assertRaises(RemoteProtocolError) as caught:
            decode_all(self.WIRE, 4, max_packet_size=10)
        self.assertEqual(caught.exception.reason_code, RC.PACKET_TOO_LARGE)

    def test_refused_from_fixed_header(self) -> None:
        """The Decoder refuses an oversized packet from its fixed header alone."""
        decoder = _decoder(4, 10)
        with self.assertRaises(RemoteProtocolError) as caught:
            _feed(decoder, [self.WIRE[:2]])
        self.assertEqual(caught.exception.reason_code, RC.PACKET_TOO_LARGE)

    def test_huge_declared_length(self) -> None:
        """A header declaring 268,435,455 bytes is refused before any body arrives."""
        decoder = _decoder(4, 1024)
        with self.assertRaises(RemoteProtocolError) as caught:
            _feed(decoder, _chunks(h("30", "ffffff7f"), 1))
        self.assertEqual(caught.exception.reason_code, RC.PACKET_TOO_LARGE)
