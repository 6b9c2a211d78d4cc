"""
Packet types, MQTT 5 reason codes and MQTT 3.1/3.1.1 return codes.

MQTT 5 gives some numeric reason codes different names in different packets (0x00 is
"Success" in PUBACK, "Normal disconnection" in DISCONNECT and "Granted QoS 0" in
SUBACK). L{ReasonCode} has one member per value, with the other names as aliases, and
L{reason_code_name} gives the name that a given packet uses.
See U{https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901031}.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = [
    "ALLOWED_REASON_CODES",
    "ConnectReturnCode",
    "PacketType",
    "ReasonCode",
    "SubackReturnCode",
    "connack_return_code_for",
    "reason_code_name",
]


class PacketType(IntEnum):
    """The control packet type: the high nibble of the first byte."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class ReasonCode(IntEnum):
    """
    Every MQTT 5 reason code (section 2.4 of the 5.0 standard).

    Values that carry several names have the first name as the member and the others
    as aliases, so C{ReasonCode.NORMAL_DISCONNECTION is ReasonCode.SUCCESS}.
    """

    SUCCESS = 0x00
    NORMAL_DISCONNECTION = 0x00
    GRANTED_QOS_0 = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    DISCONNECT_WITH_WILL_MESSAGE = 0x04
    NO_MATCHING_SUBSCRIBERS = 0x10
    NO_SUBSCRIPTION_EXISTED = 0x11
    CONTINUE_AUTHENTICATION = 0x18
    RE_AUTHENTICATE = 0x19
    UNSPECIFIED_ERROR = 0x80
    MALFORMED_PACKET = 0x81
    PROTOCOL_ERROR = 0x82
    IMPLEMENTATION_SPECIFIC_ERROR = 0x83
    UNSUPPORTED_PROTOCOL_VERSION = 0x84
    CLIENT_IDENTIFIER_NOT_VALID = 0x85
    BAD_USER_NAME_OR_PASSWORD = 0x86
    NOT_AUTHORIZED = 0x87
    SERVER_UNAVAILABLE = 0x88
    SERVER_BUSY = 0x89
    BANNED = 0x8A
    SERVER_SHUTTING_DOWN = 0x8B
    BAD_AUTHENTICATION_METHOD = 0x8C
    KEEP_ALIVE_TIMEOUT = 0x8D
    SESSION_TAKEN_OVER = 0x8E
    TOPIC_FILTER_INVALID = 0x8F
    TOPIC_NAME_INVALID = 0x90
    PACKET_IDENTIFIER_IN_USE = 0x91
    PACKET_IDENTIFIER_NOT_FOUND = 0x92
    RECEIVE_MAXIMUM_EXCEEDED = 0x93
    TOPIC_ALIAS_INVALID = 0x94
    PACKET_TOO_LARGE = 0x95
    MESSAGE_RATE_TOO_HIGH = 0x96
    QUOTA_EXCEEDED = 0x97
    ADMINISTRATIVE_ACTION = 0x98
    PAYLOAD_FORMAT_INVALID = 0x99
    RETAIN_NOT_SUPPORTED = 0x9A
    QOS_NOT_SUPPORTED = 0x9B
    USE_ANOTHER_SERVER = 0x9C
    SERVER_MOVED = 0x9D
    SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
    CONNECTION_RATE_EXCEEDED = 0x9F
    MAXIMUM_CONNECT_TIME = 0xA0
    SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
    WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2

    @property
    def is_error(self) -> bool:
        """Codes of 0x80 and above report a failure."""
        return self >= 0x80


_P = PacketType
_R = ReasonCode

#: The reason codes each MQTT 5 packet may carry (the "Reason Code" tables of
#: sections 3.2.2.2, 3.4.2.1, 3.5.2.1, 3.6.2.1, 3.7.2.1, 3.9.3, 3.11.3, 3.14.2.1
#: and 3.15.2.1). A decoder refuses any other value as a Malformed Packet.
ALLOWED_REASON_CODES: dict[PacketType, frozenset[int]] = {
    _P.CONNACK: frozenset(
        [
            0x00,
            0x80,
            0x81,
            0x82,
            0x83,
            0x84,
            0x85,
            0x86,
            0x87,
            0x88,
            0x89,
            0x8A,
            0x8C,
            0x90,
            0x95,
            0x97,
            0x99,
            0x9A,
            0x9B,
            0x9C,
            0x9D,
            0x9F,
        ]
    ),
    _P.PUBACK: frozenset([0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]),
    _P.PUBREC: frozenset([0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]),
    _P.PUBREL: frozenset([0x00, 0x92]),
    _P.PUBCOMP: frozenset([0x00, 0x92]),
    _P.SUBACK: frozenset([0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2]),
    _P.UNSUBACK: frozenset([0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]),
    _P.DISCONNECT: frozenset(
        [
            0x00,
            0x04,
            0x80,
            0x81,
            0x82,
            0x83,
            0x87,
            0x89,
            0x8B,
            0x8C,
            0x8D,
            0x8E,
            0x8F,
            0x90,
            0x93,
            0x94,
            0x95,
            0x96,
            0x97,
            0x98,
            0x99,
            0x9A,
            0x9B,
            0x9C,
            0x9D,
            0x9E,
            0x9F,
            0xA0,
            0xA1,
            0xA2,
        ]
    ),
    _P.AUTH: frozenset([0x00, 0x18, 0x19]),
}

_NAME_OVERRIDES: dict[tuple[PacketType, int], str] = {
    (_P.DISCONNECT, 0x00): "NORMAL_DISCONNECTION",
    (_P.SUBACK, 0x00): "GRANTED_QOS_0",
}


def reason_code_name(packet_type: PacketType, code: int) -> str:
    """
    The name MQTT 5 gives C{code} in a packet of C{packet_type}, or C{"0xNN"} for a
    value the standard does not define.
    """
    name = _NAME_OVERRIDES.get((packet_type, code))
    if name is not None:
        return name
    try:
        return ReasonCode(code).name
    except ValueError:
        return f"0x{code:02X}"


class ConnectReturnCode(IntEnum):
    """The CONNACK return codes of MQTT 3.1 and 3.1.1 (section 3.2.2.3 of 3.1.1)."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USERNAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


class SubackReturnCode(IntEnum):
    """The SUBACK return codes of MQTT 3.1.1 (section 3.9.3)."""

    GRANTED_QOS_0 = 0x00
    GRANTED_QOS_1 = 0x01
    GRANTED_QOS_2 = 0x02
    FAILURE = 0x80


_CONNACK_V5_TO_V3: dict[int, ConnectReturnCode] = {
    _R.SUCCESS: ConnectReturnCode.ACCEPTED,
    _R.UNSUPPORTED_PROTOCOL_VERSION: ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION,
    _R.CLIENT_IDENTIFIER_NOT_VALID: ConnectReturnCode.IDENTIFIER_REJECTED,
    _R.BAD_USER_NAME_OR_PASSWORD: ConnectReturnCode.BAD_USERNAME_OR_PASSWORD,
    _R.NOT_AUTHORIZED: ConnectReturnCode.NOT_AUTHORIZED,
    _R.BANNED: ConnectReturnCode.NOT_AUTHORIZED,
    _R.BAD_AUTHENTICATION_METHOD: ConnectReturnCode.NOT_AUTHORIZED,
}


def connack_return_code_for(reason_code: int) -> ConnectReturnCode:
    """
    The 3.1/3.1.1 CONNACK return code that best says what an MQTT 5 CONNACK reason
    code says, so one broker decision can be answered at every protocol level.

    Codes without a 3.1.1 counterpart (server busy, quota exceeded, ...) become
    "server unavailable", the closest meaning 3.1.1 offers.
    """
    return _CONNACK_V5_TO_V3.get(reason_code, ConnectReturnCode.SERVER_UNAVAILABLE)
