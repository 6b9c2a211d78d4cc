"""
The MQTT 5 property table: every property identifier, its data type, the packets
that may carry it, and whether it may repeat.

Section 2.2.2.2 of the MQTT 5.0 standard:
U{https://docs.oasis-open.org/mqtt/mqtt/v5.0/os/mqtt-v5.0-os.html#_Toc3901029}.

Properties travel as a C{dict} keyed by L{PropertyId}. A property that may appear more
than once in some packet (User Property, Subscription Identifier) is always a C{list},
in wire order; User Property values are C{(name, value)} tuples.
"""

from __future__ import annotations

from enum import IntEnum

from mqttbroker.codec.reason_codes import PacketType

__all__ = [
    "PROPERTY_SPECS",
    "int_property",
    "Properties",
    "PropertyId",
    "PropertySpec",
    "PropertyType",
    "WILL_PROPERTIES",
]


class PropertyId(IntEnum):
    """Every MQTT 5 property identifier."""

    PAYLOAD_FORMAT_INDICATOR = 0x01
    MESSAGE_EXPIRY_INTERVAL = 0x02
    CONTENT_TYPE = 0x03
    RESPONSE_TOPIC = 0x08
    CORRELATION_DATA = 0x09
    SUBSCRIPTION_IDENTIFIER = 0x0B
    SESSION_EXPIRY_INTERVAL = 0x11
    ASSIGNED_CLIENT_IDENTIFIER = 0x12
    SERVER_KEEP_ALIVE = 0x13
    AUTHENTICATION_METHOD = 0x15
    AUTHENTICATION_DATA = 0x16
    REQUEST_PROBLEM_INFORMATION = 0x17
    WILL_DELAY_INTERVAL = 0x18
    REQUEST_RESPONSE_INFORMATION = 0x19
    RESPONSE_INFORMATION = 0x1A
    SERVER_REFERENCE = 0x1C
    REASON_STRING = 0x1F
    RECEIVE_MAXIMUM = 0x21
    TOPIC_ALIAS_MAXIMUM = 0x22
    TOPIC_ALIAS = 0x23
    MAXIMUM_QOS = 0x24
    RETAIN_AVAILABLE = 0x25
    USER_PROPERTY = 0x26
    MAXIMUM_PACKET_SIZE = 0x27
    WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
    SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
    SHARED_SUBSCRIPTION_AVAILABLE = 0x2A


class PropertyType(IntEnum):
    """The data types of section 1.5 that properties use."""

    BYTE = 1
    TWO_BYTE_INTEGER = 2
    FOUR_BYTE_INTEGER = 3
    VARIABLE_BYTE_INTEGER = 4
    UTF8_STRING = 5
    BINARY = 6
    UTF8_STRING_PAIR = 7


#: A property value: an int, a str, bytes, or for repeatable properties a list of
#: ints or of (name, value) string pairs.
PropertyValue = int | str | bytes | list[int] | list[tuple[str, str]]
Properties = dict[PropertyId, PropertyValue]

#: Pseudo packet type for the Will Properties of a CONNECT payload.
WILL_PROPERTIES = 0


class PropertySpec:
    """
    What the standard says of one property.

    @ivar identifier: the property identifier.
    @ivar type: its data type.
    @ivar packets: the packet types (and L{WILL_PROPERTIES}) that may carry it.
    @ivar repeatable: the packet types in which it may appear more than once.
    @ivar boolean: the value must be 0 or 1 (anything else is a Protocol Error).
    @ivar nonzero: a value of 0 is a Protocol Error.
    """

    __slots__ = ("boolean", "identifier", "nonzero", "packets", "repeatable", "type")

    def __init__(
        self,
        identifier: PropertyId,
        type: PropertyType,
        packets: frozenset[int],
        repeatable: frozenset[int] = frozenset(),
        boolean: bool = False,
        nonzero: bool = False,
    ) -> None:
        self.identifier = identifier
        self.type = type
        self.packets = packets
        self.repeatable = repeatable
        self.boolean = boolean
        self.nonzero = nonzero

    @property
    def multiple(self) -> bool:
        """The value is held as a list (the property may repeat in some packet)."""
        return bool(self.repeatable)


_T = PropertyType
_I = PropertyId
_W = WILL_PROPERTIES
(
    CONNECT,
    CONNACK,
    PUBLISH,
    PUBACK,
    PUBREC,
    PUBREL,
    PUBCOMP,
    SUBSCRIBE,
    SUBACK,
    UNSUBSCRIBE,
    UNSUBACK,
    _PINGREQ,
    _PINGRESP,
    DISCONNECT,
    AUTH,
) = tuple(PacketType)


def _spec(
    identifier: PropertyId,
    type: PropertyType,
    *packets: int,
    repeatable: tuple[int, ...] = (),
    boolean: bool = False,
    nonzero: bool = False,
) -> PropertySpec:
    return PropertySpec(
        identifier, type, frozenset(packets), frozenset(repeatable), boolean, nonzero
    )


_ALL_USER_PROPERTY_PACKETS = (
    CONNECT,
    CONNACK,
    PUBLISH,
    _W,
    PUBACK,
    PUBREC,
    PUBREL,
    PUBCOMP,
    SUBSCRIBE,
    SUBACK,
    UNSUBSCRIBE,
    UNSUBACK,
    DISCONNECT,
    AUTH,
)

#: The table, indexed by identifier.
PROPERTY_SPECS: dict[int, PropertySpec] = {
    s.identifier: s
    for s in [
        _spec(_I.PAYLOAD_FORMAT_INDICATOR, _T.BYTE, PUBLISH, _W, boolean=True),
        _spec(_I.MESSAGE_EXPIRY_INTERVAL, _T.FOUR_BYTE_INTEGER, PUBLISH, _W),
        _spec(_I.CONTENT_TYPE, _T.UTF8_STRING, PUBLISH, _W),
        _spec(_I.RESPONSE_TOPIC, _T.UTF8_STRING, PUBLISH, _W),
        _spec(_I.CORRELATION_DATA, _T.BINARY, PUBLISH, _W),
        _spec(
            _I.SUBSCRIPTION_IDENTIFIER,
            _T.VARIABLE_BYTE_INTEGER,
            PUBLISH,
            SUBSCRIBE,
            repeatable=(PUBLISH,),
            nonzero=True,
        ),
        _spec(_I.SESSION_EXPIRY_INTERVAL, _T.FOUR_BYTE_INTEGER, CONNECT, CONNACK, DISCONNECT),
        _spec(_I.ASSIGNED_CLIENT_IDENTIFIER, _T.UTF8_STRING, CONNACK),
        _spec(_I.SERVER_KEEP_ALIVE, _T.TWO_BYTE_INTEGER, CONNACK),
        _spec(_I.AUTHENTICATION_METHOD, _T.UTF8_STRING, CONNECT, CONNACK, AUTH),
        _spec(_I.AUTHENTICATION_DATA, _T.BINARY, CONNECT, CONNACK, AUTH),
        _spec(_I.REQUEST_PROBLEM_INFORMATION, _T.BYTE, CONNECT, boolean=True),
        _spec(_I.WILL_DELAY_INTERVAL, _T.FOUR_BYTE_INTEGER, _W),
        _spec(_I.REQUEST_RESPONSE_INFORMATION, _T.BYTE, CONNECT, boolean=True),
        _spec(_I.RESPONSE_INFORMATION, _T.UTF8_STRING, CONNACK),
        _spec(_I.SERVER_REFERENCE, _T.UTF8_STRING, CONNACK, DISCONNECT),
        _spec(
            _I.REASON_STRING,
            _T.UTF8_STRING,
            CONNACK,
            PUBACK,
            PUBREC,
            PUBREL,
            PUBCOMP,
            SUBACK,
            UNSUBACK,
            DISCONNECT,
            AUTH,
        ),
        _spec(_I.RECEIVE_MAXIMUM, _T.TWO_BYTE_INTEGER, CONNECT, CONNACK, nonzero=True),
        _spec(_I.TOPIC_ALIAS_MAXIMUM, _T.TWO_BYTE_INTEGER, CONNECT, CONNACK),
        _spec(_I.TOPIC_ALIAS, _T.TWO_BYTE_INTEGER, PUBLISH, nonzero=True),
        _spec(_I.MAXIMUM_QOS, _T.BYTE, CONNACK, boolean=True),
        _spec(_I.RETAIN_AVAILABLE, _T.BYTE, CONNACK, boolean=True),
        _spec(
            _I.USER_PROPERTY,
            _T.UTF8_STRING_PAIR,
            *_ALL_USER_PROPERTY_PACKETS,
            repeatable=_ALL_USER_PROPERTY_PACKETS,
        ),
        _spec(_I.MAXIMUM_PACKET_SIZE, _T.FOUR_BYTE_INTEGER, CONNECT, CONNACK, nonzero=True),
        _spec(_I.WILDCARD_SUBSCRIPTION_AVAILABLE, _T.BYTE, CONNACK, boolean=True),
        _spec(_I.SUBSCRIPTION_IDENTIFIER_AVAILABLE, _T.BYTE, CONNACK, boolean=True),
        _spec(_I.SHARED_SUBSCRIPTION_AVAILABLE, _T.BYTE, CONNACK, boolean=True),
    ]
}


def int_property(properties: Properties, key: PropertyId, default: int) -> int:
    """
    The value of an integer property (Byte, Two/Four Byte, Variable Byte Integer),
    or C{default} when absent; the decoder guarantees the type.
    """
    value = properties.get(key, default)
    if not isinstance(value, int):
        raise TypeError(f"property {key.name} is not an integer: {value!r}")
    return value
