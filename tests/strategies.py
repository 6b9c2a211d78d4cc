"""
Hypothesis strategies for every MQTT control packet at every protocol level.

Each strategy produces only packets that the codec must accept: for protocol level
C{level} (3 = MQTT 3.1, 4 = 3.1.1, 5 = 5.0), C{encode(packet, level)} must succeed
and C{decode_all(encode(packet, level), level)} must give the packet back. The rules
they follow are those of the packet classes in L{mqttbroker.codec.packets}, the
property table L{mqttbroker.codec.properties.PROPERTY_SPECS} and the reason code
table L{mqttbroker.codec.reason_codes.ALLOWED_REASON_CODES}:

  - strings are valid UTF-8 without U+0000 or surrogates, 0 to 65,535 encoded
    bytes; multi-byte characters (and the U+FEFF byte order mark, which must not
    be stripped) are common, and with small probability a string is exactly
    65,535 bytes long;
  - QoS 0 PUBLISH has C{packet_id=None} (and DUP 0), other packet identifiers run
    over 1-65,535;
  - MQTT 5 properties: every property the packet allows, each optional, User
    Property and Subscription Identifier as lists (several entries where the
    table allows repeats), booleans 0/1, "non-zero" properties from 1;
    Authentication Data only with an Authentication Method; a Payload Format
    Indicator of 1 comes with a UTF-8 payload;
  - PUBLISH topics have no wildcards and are non-empty, except at level 5 with a
    Topic Alias property, where the topic may be empty;
  - topic filters are well formed ('+' a whole level, '#' only as the whole last
    level); at level 5 some are shared subscriptions ("$share/name/filter", never
    with No Local);
  - reason codes come from ALLOWED_REASON_CODES at level 5; at levels 3 and 4
    CONNACK uses return codes 0-5, SUBACK 0, 1, 2 and 0x80, and everything else
    keeps the default 0 and no properties;
  - at levels 3 and 4 a password comes with a user name; at level 3 CONNACK never
    sets Session Present (MQTT 3.1 has no such flag), and at every level Session
    Present is set only with return code 0.

Only the value-object modules are imported, so the strategies can be used by tests
of any layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import strategies as st

from mqttbroker.codec.packets import (
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
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
    Will,
)
from mqttbroker.codec.properties import (
    PROPERTY_SPECS,
    WILL_PROPERTIES,
    Properties,
    PropertyId,
    PropertySpec,
    PropertyType,
)
from mqttbroker.codec.reason_codes import ALLOWED_REASON_CODES, PacketType

__all__ = [
    "LEVELS",
    "MAX_PACKET_ID",
    "MAX_STRING_BYTES",
    "MAX_VARIABLE_BYTE_INTEGER",
    "PACKET_STRATEGIES",
    "auths",
    "binary_data",
    "connacks",
    "connects",
    "disconnects",
    "fixed_header_prefixes",
    "mqtt_strings",
    "non_connect_packets",
    "packet_ids",
    "packet_streams",
    "packets",
    "packets_of_type",
    "pingreqs",
    "pingresps",
    "properties",
    "pubacks",
    "pubcomps",
    "publishes",
    "pubrecs",
    "pubrels",
    "subacks",
    "subscribes",
    "subscriptions",
    "topic_filters",
    "topic_names",
    "unsubacks",
    "unsubscribes",
    "wills",
]

#: The protocol levels: 3 = MQTT 3.1, 4 = MQTT 3.1.1, 5 = MQTT 5.0.
LEVELS: tuple[int, ...] = (3, 4, 5)
#: The longest UTF-8 string or binary field (two-byte length prefix).
MAX_STRING_BYTES = 65_535
#: The largest Variable Byte Integer (and so the largest remaining length).
MAX_VARIABLE_BYTE_INTEGER = 268_435_455
MAX_PACKET_ID = 65_535
MAX_TWO_BYTE = 0xFFFF
MAX_FOUR_BYTE = 0xFFFF_FFFF

#: One draw in C{_RARE + 1} picks a 65,535-byte string or binary value.
_RARE = 63

#: Code points at the edges of each UTF-8 encoding length, and a few with special
#: meaning (the byte order mark, non-characters, C1 controls, the topic separator).
_INTERESTING_CHARACTERS = (
    "\x01\x1f\x7f\x80\x9f\xa0\xe9\u07ff\u0800\u20ac\u4e2d\ufeff\ufffd\ufffe\uffff"
    "\U00010000\U0001d11e\U0001f600\U0010ffff/ $"
)


def _characters(exclude: str = "") -> st.SearchStrategy[str]:
    """
    Single characters that MQTT allows in a UTF-8 string: anything encodable
    (so no surrogates) except U+0000 and C{exclude}.
    """
    bad = "\x00" + exclude
    return st.one_of(
        st.characters(codec="utf-8", exclude_characters=bad),
        st.sampled_from([c for c in _INTERESTING_CHARACTERS if c not in bad]),
    )


def _rarely() -> st.SearchStrategy[bool]:
    """C{True} about once in 64 draws."""
    return st.integers(0, _RARE).map(lambda n: n == _RARE)


@st.composite
def _full_length_strings(draw: st.DrawFn, exclude: str = "") -> str:
    """
    A string of exactly 65,535 UTF-8 bytes: a drawn piece (usually with multi-byte
    characters) repeated, cut at a character boundary and padded with ASCII.
    """
    piece = draw(st.text(_characters(exclude), min_size=1, max_size=8))
    per = len(piece.encode("utf-8"))
    text = piece * (MAX_STRING_BYTES // per)
    text += "x" * (MAX_STRING_BYTES - len(text.encode("utf-8")))
    assert len(text.encode("utf-8")) == MAX_STRING_BYTES
    return text


def mqtt_strings(
    *, exclude: str = "", min_size: int = 0, max_size: int = 20, allow_full: bool = True
) -> st.SearchStrategy[str]:
    """
    UTF-8 strings MQTT may carry: no U+0000, no surrogates, none of C{exclude};
    mostly short, with small probability exactly 65,535 encoded bytes.
    """
    short = st.text(_characters(exclude), min_size=min_size, max_size=max_size)
    if not allow_full:
        return short
    return _rarely().flatmap(lambda full: _full_length_strings(exclude) if full else short)


def binary_data(*, max_size: int = 40, allow_full: bool = True) -> st.SearchStrategy[bytes]:
    """Binary Data fields: mostly short, rarely exactly 65,535 bytes."""
    short = st.binary(max_size=max_size)
    if not allow_full:
        return short
    return _rarely().flatmap(
        lambda full: (
            st.binary(min_size=MAX_STRING_BYTES, max_size=MAX_STRING_BYTES) if full else short
        )
    )


def _payloads() -> st.SearchStrategy[bytes]:
    """
    Application message payloads: mostly short, rarely longer than any 2-byte
    length could express (the payload has no length prefix of its own).
    """
    return _rarely().flatmap(
        lambda big: (
            st.binary(min_size=MAX_STRING_BYTES - 2, max_size=MAX_STRING_BYTES + 300)
            if big
            else st.binary(max_size=64)
        )
    )


def _utf8_payloads() -> st.SearchStrategy[bytes]:
    """Payloads that are valid UTF-8 (for a Payload Format Indicator of 1)."""
    return st.text(_characters(), max_size=30).map(lambda s: s.encode("utf-8"))


def packet_ids() -> st.SearchStrategy[int]:
    """Packet identifiers: 1-65,535."""
    return st.integers(1, MAX_PACKET_ID)


def _topic_levels(exclude: str = "") -> st.SearchStrategy[str]:
    """One topic level: no '/', '+', '#' (may be empty)."""
    return st.text(_characters("/+#" + exclude), max_size=8)


def topic_names(*, allow_full: bool = True) -> st.SearchStrategy[str]:
    """
    PUBLISH (and Will, Response) topic names: non-empty, no wildcards, any number
    of possibly empty levels; rarely 65,535 bytes.
    """
    short = st.lists(_topic_levels(), min_size=1, max_size=5).map("/".join).filter(bool)
    if not allow_full:
        return short
    return _rarely().flatmap(lambda full: _full_length_strings("+#") if full else short)


@st.composite
def _plain_topic_filters(draw: st.DrawFn) -> str:
    """A non-shared topic filter: levels, '+' for whole levels, optional final '#'."""
    levels = draw(st.lists(st.one_of(_topic_levels(), st.just("+")), min_size=0, max_size=5))
    if not levels or draw(st.booleans()):
        levels.append("#")
    text = "/".join(levels)
    return text if text else "+"


@st.composite
def _shared_topic_filters(draw: st.DrawFn) -> str:
    """An MQTT 5 shared subscription: C{$share/<name>/<filter>}."""
    name = draw(st.text(_characters("/+#"), min_size=1, max_size=6))
    return f"$share/{name}/{draw(_plain_topic_filters())}"


def topic_filters(level: int, *, shared: bool | None = None) -> st.SearchStrategy[str]:
    """
    Well-formed topic filters. At level 5, some are shared subscriptions unless
    C{shared} is C{False} (C{True} gives only shared ones). Rarely 65,535 bytes.
    """
    choices: list[st.SearchStrategy[str]] = []
    if shared is not True:
        choices.append(_plain_topic_filters())
    if level == 5 and shared is not False:
        choices.append(_shared_topic_filters())
    short = st.one_of(*choices)
    if shared:
        return short
    return _rarely().flatmap(lambda full: _full_length_strings("+#") if full else short)


def _user_properties() -> st.SearchStrategy[list[tuple[str, str]]]:
    """User Property lists: one or more (name, value) pairs, names may repeat."""
    pair = st.tuples(mqtt_strings(max_size=8), mqtt_strings(max_size=8))
    return st.lists(pair, min_size=1, max_size=4).flatmap(
        # Sometimes repeat a name with another value: order must be kept.
        lambda pairs: (
            st.just(pairs)
            | st.builds(lambda v: [*pairs, (pairs[0][0], v)], mqtt_strings(max_size=4))
        )
    )


def _property_values(spec: PropertySpec, packet_type: int) -> st.SearchStrategy[Any]:
    """The values one property may take in one packet type."""
    pid = spec.identifier
    if pid == PropertyId.USER_PROPERTY:
        return _user_properties()
    if pid == PropertyId.SUBSCRIPTION_IDENTIFIER:
        one = st.integers(1, MAX_VARIABLE_BYTE_INTEGER)
        max_size = 4 if packet_type in spec.repeatable else 1
        return st.lists(one, min_size=1, max_size=max_size)
    if pid == PropertyId.RESPONSE_TOPIC:
        return topic_names()
    low = 1 if spec.nonzero else 0
    t = spec.type
    if t == PropertyType.BYTE:
        return st.integers(0, 1) if spec.boolean else st.integers(low, 0xFF)
    if t == PropertyType.TWO_BYTE_INTEGER:
        return st.integers(low, MAX_TWO_BYTE)
    if t == PropertyType.FOUR_BYTE_INTEGER:
        return st.integers(low, MAX_FOUR_BYTE)
    if t == PropertyType.VARIABLE_BYTE_INTEGER:
        one = st.integers(low, MAX_VARIABLE_BYTE_INTEGER)
        return st.lists(one, min_size=1, max_size=1) if spec.multiple else one
    if t == PropertyType.UTF8_STRING:
        return mqtt_strings()
    if t == PropertyType.BINARY:
        return binary_data()
    raise AssertionError(f"no strategy for property type {t!r}")  # pragma: no cover


def _allowed_specs(packet_type: int) -> list[PropertySpec]:
    return [s for s in PROPERTY_SPECS.values() if packet_type in s.packets]


def _fix_properties(props: dict[PropertyId, Any]) -> Properties:
    """Authentication Data without Authentication Method is a Protocol Error."""
    if PropertyId.AUTHENTICATION_DATA in props and PropertyId.AUTHENTICATION_METHOD not in props:
        del props[PropertyId.AUTHENTICATION_DATA]
    return props


def properties(
    packet_type: int, *, exclude: frozenset[PropertyId] = frozenset()
) -> st.SearchStrategy[Properties]:
    """
    MQTT 5 property dicts for C{packet_type} (a L{PacketType} or
    L{WILL_PROPERTIES}): any subset of the properties the table allows there.
    """
    optional = {
        spec.identifier: _property_values(spec, packet_type)
        for spec in _allowed_specs(packet_type)
        if spec.identifier not in exclude
    }
    return st.fixed_dictionaries({}, optional=optional).map(_fix_properties)


def _no_properties(level: int, packet_type: int) -> st.SearchStrategy[Properties]:
    """Properties at level 5, an empty dict at levels 3 and 4."""
    return properties(packet_type) if level == 5 else st.just({})


@st.composite
def _payload_for(draw: st.DrawFn, props: Properties) -> bytes:
    """A payload that agrees with a Payload Format Indicator of 1, if present."""
    if props.get(PropertyId.PAYLOAD_FORMAT_INDICATOR) == 1:
        return draw(_utf8_payloads())
    return draw(_payloads())


@st.composite
def wills(draw: st.DrawFn, level: int) -> Will:
    """The will of a CONNECT (Will Properties only at level 5)."""
    props = draw(_no_properties(level, WILL_PROPERTIES))
    if props.get(PropertyId.PAYLOAD_FORMAT_INDICATOR) == 1:
        payload = draw(_utf8_payloads())
    else:
        payload = draw(binary_data())
    return Will(
        topic=draw(topic_names()),
        payload=payload,
        qos=draw(st.integers(0, 2)),
        retain=draw(st.booleans()),
        properties=props,
    )


@st.composite
def connects(draw: st.DrawFn, level: int) -> Connect:
    """CONNECT packets for C{level}."""
    username = draw(st.none() | mqtt_strings())
    password = draw(st.none() | binary_data())
    if level < 5 and username is None:
        # MQTT-3.1.2-22: a password requires a user name before MQTT 5.
        password = None
    return Connect(
        client_id=draw(mqtt_strings()),
        protocol_level=level,
        clean_start=draw(st.booleans()),
        keep_alive=draw(st.integers(0, MAX_TWO_BYTE)),
        username=username,
        password=password,
        will=draw(st.none() | wills(level)),
        properties=draw(_no_properties(level, PacketType.CONNECT)),
    )


def _connack_codes(level: int) -> st.SearchStrategy[int]:
    if level == 5:
        return st.sampled_from(sorted(ALLOWED_REASON_CODES[PacketType.CONNACK]))
    return st.integers(0, 5)


@st.composite
def connacks(draw: st.DrawFn, level: int) -> Connack:
    """CONNACK packets for C{level}."""
    code = draw(_connack_codes(level))
    # 3.1 has no Session Present flag; it is 0 with a non-zero code
    # (MQTT-3.2.2-4 in 3.1.1, MQTT-3.2.2-6 in 5.0).
    session_present = False if level == 3 or code != 0 else draw(st.booleans())
    return Connack(
        session_present=session_present,
        reason_code=code,
        properties=draw(_no_properties(level, PacketType.CONNACK)),
    )


@st.composite
def publishes(draw: st.DrawFn, level: int, qos: int | None = None) -> Publish:
    """PUBLISH packets for C{level} (of the given QoS, or any)."""
    if qos is None:
        qos = draw(st.integers(0, 2))
    props = draw(_no_properties(level, PacketType.PUBLISH))
    topic = "" if PropertyId.TOPIC_ALIAS in props and draw(st.booleans()) else draw(topic_names())
    return Publish(
        topic=topic,
        payload=draw(_payload_for(props)),
        qos=qos,
        retain=draw(st.booleans()),
        dup=False if qos == 0 else draw(st.booleans()),
        packet_id=None if qos == 0 else draw(packet_ids()),
        properties=props,
    )


def _response_codes(level: int, packet_type: PacketType) -> st.SearchStrategy[int]:
    if level == 5:
        return st.sampled_from(sorted(ALLOWED_REASON_CODES[packet_type]))
    return st.just(0)


_Response = TypeVar("_Response", Puback, Pubrec, Pubrel, Pubcomp)


def _publish_responses(cls: type[_Response], level: int) -> st.SearchStrategy[_Response]:
    return st.builds(
        cls,
        packet_id=packet_ids(),
        reason_code=_response_codes(level, cls.packet_type),
        properties=_no_properties(level, cls.packet_type),
    )


def pubacks(level: int) -> st.SearchStrategy[Puback]:
    """PUBACK packets for C{level}."""
    return _publish_responses(Puback, level)


def pubrecs(level: int) -> st.SearchStrategy[Pubrec]:
    """PUBREC packets for C{level}."""
    return _publish_responses(Pubrec, level)


def pubrels(level: int) -> st.SearchStrategy[Pubrel]:
    """PUBREL packets for C{level}."""
    return _publish_responses(Pubrel, level)


def pubcomps(level: int) -> st.SearchStrategy[Pubcomp]:
    """PUBCOMP packets for C{level}."""
    return _publish_responses(Pubcomp, level)


@st.composite
def subscriptions(draw: st.DrawFn, level: int) -> Subscription:
    """One SUBSCRIBE entry; the MQTT 5 options only at level 5."""
    if level < 5:
        return Subscription(draw(topic_filters(level)), qos=draw(st.integers(0, 2)))
    topic_filter = draw(topic_filters(level))
    shared = topic_filter.startswith("$share/")
    return Subscription(
        topic_filter=topic_filter,
        qos=draw(st.integers(0, 2)),
        # MQTT-3.8.3-4: No Local on a shared subscription is a Protocol Error.
        no_local=False if shared else draw(st.booleans()),
        retain_as_published=draw(st.booleans()),
        retain_handling=draw(st.integers(0, 2)),
    )


def subscribes(level: int) -> st.SearchStrategy[Subscribe]:
    """SUBSCRIBE packets for C{level}: one to five entries."""
    return st.builds(
        Subscribe,
        packet_id=packet_ids(),
        subscriptions=st.lists(subscriptions(level), min_size=1, max_size=5).map(tuple),
        properties=_no_properties(level, PacketType.SUBSCRIBE),
    )


def _suback_codes(level: int) -> st.SearchStrategy[int]:
    if level == 5:
        return st.sampled_from(sorted(ALLOWED_REASON_CODES[PacketType.SUBACK]))
    return st.sampled_from([0x00, 0x01, 0x02, 0x80])


def subacks(level: int) -> st.SearchStrategy[Suback]:
    """SUBACK packets for C{level}: one to eight codes."""
    return st.builds(
        Suback,
        packet_id=packet_ids(),
        reason_codes=st.lists(_suback_codes(level), min_size=1, max_size=8).map(tuple),
        properties=_no_properties(level, PacketType.SUBACK),
    )


def unsubscribes(level: int) -> st.SearchStrategy[Unsubscribe]:
    """UNSUBSCRIBE packets for C{level}: one to five filters."""
    return st.builds(
        Unsubscribe,
        packet_id=packet_ids(),
        topic_filters=st.lists(topic_filters(level), min_size=1, max_size=5).map(tuple),
        properties=_no_properties(level, PacketType.UNSUBSCRIBE),
    )


def unsubacks(level: int) -> st.SearchStrategy[Unsuback]:
    """UNSUBACK packets: reason codes (one or more) only at level 5."""
    if level == 5:
        codes = st.lists(
            st.sampled_from(sorted(ALLOWED_REASON_CODES[PacketType.UNSUBACK])),
            min_size=1,
            max_size=8,
        ).map(tuple)
    else:
        codes = st.just(())
    return st.builds(
        Unsuback,
        packet_id=packet_ids(),
        reason_codes=codes,
        properties=_no_properties(level, PacketType.UNSUBACK),
    )


def pingreqs(level: int) -> st.SearchStrategy[Pingreq]:
    """PINGREQ (the same at every level)."""
    return st.just(Pingreq())


def pingresps(level: int) -> st.SearchStrategy[Pingresp]:
    """PINGRESP (the same at every level)."""
    return st.just(Pingresp())


def disconnects(level: int) -> st.SearchStrategy[Disconnect]:
    """DISCONNECT: reason code and properties only at level 5."""
    if level < 5:
        return st.just(Disconnect())
    return st.builds(
        Disconnect,
        reason_code=_response_codes(level, PacketType.DISCONNECT),
        properties=properties(PacketType.DISCONNECT),
    )


def auths(level: int = 5) -> st.SearchStrategy[Auth]:
    """AUTH packets (MQTT 5 only)."""
    if level != 5:
        raise ValueError("AUTH exists only in MQTT 5")
    return st.builds(
        Auth,
        reason_code=_response_codes(level, PacketType.AUTH),
        properties=properties(PacketType.AUTH),
    )


#: The strategy factory of each packet type; each takes the protocol level.
PACKET_STRATEGIES: dict[PacketType, Callable[[int], st.SearchStrategy[Any]]] = {
    PacketType.CONNECT: connects,
    PacketType.CONNACK: connacks,
    PacketType.PUBLISH: publishes,
    PacketType.PUBACK: pubacks,
    PacketType.PUBREC: pubrecs,
    PacketType.PUBREL: pubrels,
    PacketType.PUBCOMP: pubcomps,
    PacketType.SUBSCRIBE: subscribes,
    PacketType.SUBACK: subacks,
    PacketType.UNSUBSCRIBE: unsubscribes,
    PacketType.UNSUBACK: unsubacks,
    PacketType.PINGREQ: pingreqs,
    PacketType.PINGRESP: pingresps,
    PacketType.DISCONNECT: disconnects,
    PacketType.AUTH: auths,
}


def packet_types(level: int) -> list[PacketType]:
    """The packet types that exist at C{level} (AUTH only at 5)."""
    return [t for t in PacketType if level == 5 or t != PacketType.AUTH]


def packets_of_type(packet_type: PacketType, level: int) -> st.SearchStrategy[Any]:
    """Packets of one type for C{level}."""
    return PACKET_STRATEGIES[packet_type](level)


def packets(level: int) -> st.SearchStrategy[Packet]:
    """Any packet that exists at C{level}."""
    return st.one_of(*(packets_of_type(t, level) for t in packet_types(level)))


def non_connect_packets(level: int) -> st.SearchStrategy[Packet]:
    """Any packet but CONNECT that exists at C{level}."""
    return st.one_of(
        *(packets_of_type(t, level) for t in packet_types(level) if t != PacketType.CONNECT)
    )


def packet_streams(
    level: int, *, connect_first: bool | None = None, max_size: int = 6
) -> st.SearchStrategy[list[Packet]]:
    """
    Lists of packets as one connection might carry them: an optional CONNECT
    first (always with C{connect_first=True}, never with C{False}), then up to
    C{max_size} other packets.
    """
    rest = st.lists(non_connect_packets(level), max_size=max_size)
    if connect_first is None:
        first = st.lists(connects(level), max_size=1)
    elif connect_first:
        first = st.lists(connects(level), min_size=1, max_size=1)
    else:
        first = st.just([])
    return st.builds(lambda a, b: a + b, first, rest)


def fixed_header_prefixes() -> st.SearchStrategy[bytes]:
    """
    A first byte of a fixed header (any type nibble, any flags), to start random
    byte streams that get past the first check more often than pure noise.
    """
    return st.builds(
        lambda t, f: bytes([(t << 4) | f]),
        st.integers(0, 15),
        st.one_of(st.just(0), st.just(2), st.integers(0, 15)),
    )
