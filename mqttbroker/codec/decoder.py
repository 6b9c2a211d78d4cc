# -*- test-case-name: tests.test_codec_golden,tests.test_codec_properties -*-
"""
The incremental MQTT decoder: bytes in, packets out, in chunks of any size.

The decoder is sans-I/O: it never touches a socket or a clock. It reads the fixed
header first and refuses a packet larger than the configured maximum before it
buffers any of its body, so a peer cannot make it hold more than C{max_packet_size}
bytes. Every fault in the input raises L{RemoteProtocolError} carrying the MQTT 5
reason code to answer with; nothing else escapes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

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
from mqttbroker.codec.primitives import (
    MAX_PACKET_SIZE,
    malformed,
    protocol_error,
    read_binary,
    read_string,
    read_u16,
    read_u32,
    read_varint,
)
from mqttbroker.codec.properties import (
    PROPERTY_SPECS,
    WILL_PROPERTIES,
    Properties,
    PropertyId,
    PropertyType,
)
from mqttbroker.codec.reason_codes import (
    ALLOWED_REASON_CODES,
    PacketType,
    ReasonCode,
)
from mqttbroker.errors import RemoteProtocolError

__all__ = ["Decoder", "decode_all", "decode_properties"]

_CONNECT = PacketType.CONNECT
_PUBLISH_TYPE = 3
_TOPIC_ALIAS = PropertyId.TOPIC_ALIAS
_RESPONSE_TOPIC = PropertyId.RESPONSE_TOPIC
_SUBACK_V3_CODES = frozenset((0x00, 0x01, 0x02, 0x80))

# MQTT 3.1 (level 3) sent PUBREL, SUBSCRIBE and UNSUBSCRIBE "at QoS 1" and let a
# client set DUP on their re-sends; 3.1.1 made those flags fixed at 0010. At level 3
# the decoder therefore also accepts 1010 for these three packets.

_BodyDecoder = Callable[[bytes, int, int, int, int], Packet]


def _read_byte(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    if pos >= end:
        raise malformed(f"{what}: truncated")
    return data[pos], pos + 1


def _read_string_pair(data: bytes, pos: int, end: int, what: str) -> tuple[tuple[str, str], int]:
    name, pos = read_string(data, pos, end, f"{what} name")
    value, pos = read_string(data, pos, end, f"{what} value")
    return (name, value), pos


_READERS: dict[PropertyType, Callable[[bytes, int, int, str], tuple[Any, int]]] = {
    PropertyType.BYTE: _read_byte,
    PropertyType.TWO_BYTE_INTEGER: read_u16,
    PropertyType.FOUR_BYTE_INTEGER: read_u32,
    PropertyType.VARIABLE_BYTE_INTEGER: read_varint,
    PropertyType.UTF8_STRING: read_string,
    PropertyType.BINARY: read_binary,
    PropertyType.UTF8_STRING_PAIR: _read_string_pair,
}

#: Per identifier, what the property loop needs, looked up once:
#: (key, allowed contexts, reader, boolean, nonzero, repeatable contexts, label).
_PROPERTY_TABLE: dict[
    int,
    tuple[
        PropertyId,
        frozenset[int],
        Callable[[bytes, int, int, str], tuple[Any, int]],
        bool,
        bool,
        frozenset[int],
        str,
    ],
] = {
    ident: (
        spec.identifier,
        spec.packets,
        _READERS[spec.type],
        spec.boolean,
        spec.nonzero,
        spec.repeatable,
        f"property {spec.identifier.name}",
    )
    for ident, spec in PROPERTY_SPECS.items()
}


def _decode_properties(
    data: bytes, pos: int, end: int, context: int, name: str
) -> tuple[Properties, int]:
    """
    The property list at C{pos}: its length, then identifier/value pairs.

    C{context} is the packet type (or L{WILL_PROPERTIES}) whose rules apply; C{name}
    prefixes error messages.
    """
    if pos < end and data[pos] == 0:
        return {}, pos + 1
    try:
        length, pos = read_varint(data, pos, end, "property length")
        stop = pos + length
        if stop > end:
            raise malformed("property length runs past the end of the packet")
        props: Properties = {}
        table = _PROPERTY_TABLE
        while pos < stop:
            ident = data[pos]
            if ident < 0x80:
                pos += 1
            else:
                ident, pos = read_varint(data, pos, stop, "property identifier")
            entry = table.get(ident)
            if entry is None:
                raise malformed(f"unknown property identifier 0x{ident:02X}")
            key, contexts, reader, boolean, nonzero, repeatable, label = entry
            if context not in contexts:
                raise malformed(f"{label} is not allowed here")
            value, pos = reader(data, pos, stop, label)
            if boolean and value not in (0, 1):
                raise protocol_error(f"{label}: value {value!r} is neither 0 nor 1")
            if nonzero and value == 0:
                if key is _TOPIC_ALIAS:
                    raise RemoteProtocolError(
                        ReasonCode.TOPIC_ALIAS_INVALID,
                        f"{label}: a topic alias of 0 is not allowed",
                    )
                raise protocol_error(f"{label}: a value of 0 is not allowed")
            if repeatable:
                existing = props.get(key)
                if existing is None:
                    props[key] = [value]
                elif context in repeatable:
                    existing.append(value)  # type: ignore[union-attr]
                else:
                    raise protocol_error(f"{label}: may appear only once here")
            elif key in props:
                raise protocol_error(f"{label}: may appear only once")
            else:
                props[key] = value
    except RemoteProtocolError as error:
        error.message = f"{name} {error.message}"
        error.args = (error.reason_code, error.message)
        raise
    return props, stop


def decode_properties(data: bytes, context: int, name: str = "stored") -> Properties:
    """
    A whole property block, length prefix included (as L{encode_properties} writes
    it), read with the rules of C{context}: for properties kept outside packets.
    """
    properties, end = _decode_properties(data, 0, len(data), context, name)
    if end != len(data):
        raise malformed(f"{name}: {len(data) - end} bytes after the property block")
    return properties


def _read_packet_id(data: bytes, pos: int, end: int, name: str) -> tuple[int, int]:
    """A packet identifier, which is never 0 where a packet carries one [MQTT-2.2.1-3]."""
    packet_id, pos = read_u16(data, pos, end, f"{name} packet identifier")
    if not packet_id:
        raise protocol_error(f"{name}: packet identifier 0 [MQTT-2.2.1-3]")
    return packet_id, pos


def _read_reason_codes(
    data: bytes, pos: int, end: int, name: str, allowed: frozenset[int]
) -> tuple[int, ...]:
    """The list of one-byte reason codes that fills the rest of a SUBACK or UNSUBACK."""
    codes = tuple(data[pos:end])
    for code in codes:
        if code not in allowed:
            raise malformed(f"{name}: reason code 0x{code:02X} is not allowed")
    if not codes:
        raise protocol_error(f"{name}: no reason code")
    return codes


def _check_authentication(properties: Properties, name: str) -> None:
    if (
        PropertyId.AUTHENTICATION_DATA in properties
        and PropertyId.AUTHENTICATION_METHOD not in properties
    ):
        raise protocol_error(
            f"{name}: authentication data without an authentication method "
            "(MQTT 5.0 section 3.1.2.11.10)"
        )


def _check_response_topic(properties: Properties, what: str) -> None:
    """A Response Topic names where to publish, so it holds no wildcard [MQTT-3.3.2-14]."""
    response_topic = properties.get(_RESPONSE_TOPIC)
    if response_topic is not None and ("+" in response_topic or "#" in response_topic):  # type: ignore[operator]
        raise protocol_error(
            f"{what}: Response Topic {response_topic!r} contains a wildcard character "
            "[MQTT-3.3.2-14]"
        )


def _check_topic_name(topic: str, what: str) -> None:
    if "+" in topic or "#" in topic:
        raise RemoteProtocolError(
            ReasonCode.TOPIC_NAME_INVALID,
            f"{what} {topic!r} contains a wildcard character [MQTT-3.3.2-2]",
        )


def _decode_connect(data: bytes, first: int, pos: int, end: int, level: int) -> Connect:
    if first & 0x0F:
        raise malformed("CONNECT: reserved fixed header flags are not 0")
    name_len, _ = read_u16(data, pos, end, "CONNECT protocol name")
    if pos + 2 + name_len + 1 > end:
        raise malformed("CONNECT: truncated protocol name or level")
    name = data[pos + 2 : pos + 2 + name_len]
    pos += 2 + name_len
    declared = data[pos]
    pos += 1
    if (name == b"MQTT" and declared in (4, 5)) or (name == b"MQIsdp" and declared == 3):
        level = declared
    else:
        shown = name.decode("utf-8", "replace")
        raise RemoteProtocolError(
            ReasonCode.UNSUPPORTED_PROTOCOL_VERSION,
            f"CONNECT: unsupported protocol name {shown!r} with level {declared}",
            PacketType.CONNECT,
            declared,
        )
    try:
        return _decode_connect_rest(data, pos, end, level)
    except RemoteProtocolError as error:
        error.protocol_level = level
        raise


def _decode_connect_rest(data: bytes, pos: int, end: int, level: int) -> Connect:
    if pos >= end:
        raise malformed("CONNECT: truncated connect flags")
    flags = data[pos]
    pos += 1
    if flags & 0x01:
        raise malformed("CONNECT: the reserved connect flag is not 0 [MQTT-3.1.2-3]")
    will_flag = flags & 0x04
    will_qos = (flags >> 3) & 0x03
    will_retain = bool(flags & 0x20)
    has_password = flags & 0x40
    has_username = flags & 0x80
    if will_flag:
        if will_qos == 3:
            raise malformed("CONNECT: will QoS is 3 [MQTT-3.1.2-14]")
    elif will_qos or will_retain:
        raise malformed("CONNECT: will QoS or will retain set without the will flag")
    if has_password and not has_username and level < 5:
        raise malformed("CONNECT: password flag set without the user name flag [MQTT-3.1.2-22]")
    keep_alive, pos = read_u16(data, pos, end, "CONNECT keep alive")
    if level == 5:
        properties, pos = _decode_properties(data, pos, end, _CONNECT, "CONNECT")
        _check_authentication(properties, "CONNECT")
    else:
        properties = {}
    client_id, pos = read_string(data, pos, end, "CONNECT client identifier")
    will = None
    if will_flag:
        if level == 5:
            will_props, pos = _decode_properties(data, pos, end, WILL_PROPERTIES, "CONNECT will")
            if will_props:
                _check_response_topic(will_props, "CONNECT will")
        else:
            will_props = {}
        will_topic, pos = read_string(data, pos, end, "CONNECT will topic")
        if not will_topic:
            raise RemoteProtocolError(
                ReasonCode.TOPIC_NAME_INVALID, "CONNECT: will topic is empty [MQTT-4.7.3-1]"
            )
        _check_topic_name(will_topic, "CONNECT will topic")
        will_payload, pos = read_binary(data, pos, end, "CONNECT will payload")
        will = Will(will_topic, will_payload, will_qos, will_retain, will_props)
    username = None
    password = None
    if has_username:
        username, pos = read_string(data, pos, end, "CONNECT user name")
    if has_password:
        password, pos = read_binary(data, pos, end, "CONNECT password")
    if pos != end:
        raise malformed(f"CONNECT: {end - pos} unexpected bytes after the payload")
    return Connect(
        client_id,
        level,
        bool(flags & 0x02),
        keep_alive,
        username,
        password,
        will,
        properties,
    )


def _decode_connack(data: bytes, first: int, pos: int, end: int, level: int) -> Connack:
    if first & 0x0F:
        raise malformed("CONNACK: reserved fixed header flags are not 0")
    if pos + 2 > end:
        raise malformed("CONNACK: truncated")
    ack_flags = data[pos]
    code = data[pos + 1]
    pos += 2
    if ack_flags & (0xFF if level == 3 else 0xFE):
        raise malformed("CONNACK: reserved acknowledge flags are not 0")
    if level == 5:
        if code not in ALLOWED_REASON_CODES[PacketType.CONNACK]:
            raise malformed(f"CONNACK: reason code 0x{code:02X} is not allowed")
        properties, pos = _decode_properties(data, pos, end, PacketType.CONNACK, "CONNACK")
        _check_authentication(properties, "CONNACK")
    else:
        if code > 5:
            raise malformed(f"CONNACK: return code {code} is not defined")
        properties = {}
    if pos != end:
        raise malformed(f"CONNACK: {end - pos} unexpected bytes at the end")
    if code and ack_flags:
        raise protocol_error("CONNACK: session present set on a refusal [MQTT-3.2.2-4]")
    return Connack(bool(ack_flags), code, properties)


def _decode_publish(data: bytes, first: int, pos: int, end: int, level: int) -> Publish:
    # The hot path: kept flat on purpose.
    qos = (first >> 1) & 0x03
    if qos == 3:
        raise malformed("PUBLISH: QoS 3 [MQTT-3.3.1-4]")
    dup = first & 0x08
    if dup and not qos:
        raise malformed("PUBLISH: DUP set on a QoS 0 message [MQTT-3.3.1-2]")
    if pos + 2 > end:
        raise malformed("PUBLISH topic name: truncated string length")
    stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if stop > end:
        raise malformed("PUBLISH topic name: string runs past the end of its packet")
    raw = data[pos + 2 : stop]
    try:
        topic = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise malformed("PUBLISH topic name: not well-formed UTF-8 [MQTT-1.5.4-1]") from None
    if b"+" in raw or b"#" in raw or b"\x00" in raw:
        if b"\x00" in raw:
            raise malformed("PUBLISH topic name: UTF-8 string contains U+0000 [MQTT-1.5.4-2]")
        _check_topic_name(topic, "PUBLISH topic name")
    pos = stop
    packet_id = None
    if qos:
        if pos + 2 > end:
            raise malformed("PUBLISH: truncated packet identifier")
        packet_id = (data[pos] << 8) | data[pos + 1]
        if not packet_id:
            raise protocol_error("PUBLISH: packet identifier 0 [MQTT-2.2.1-3]")
        pos += 2
    if level == 5:
        properties, pos = _decode_properties(data, pos, end, _PUBLISH_TYPE, "PUBLISH")
        if properties:
            _check_response_topic(properties, "PUBLISH")
        if not topic and _TOPIC_ALIAS not in properties:
            raise protocol_error("PUBLISH: empty topic name without a topic alias")
    else:
        properties = {}
        if not topic:
            raise protocol_error("PUBLISH: empty topic name [MQTT-4.7.3-1]")
    return Publish(topic, data[pos:end], qos, bool(first & 0x01), bool(dup), packet_id, properties)


def _make_publish_response_decoder(
    cls: type[Puback] | type[Pubrec] | type[Pubrel] | type[Pubcomp],
) -> _BodyDecoder:
    ptype = cls.packet_type
    name = ptype.name
    flags = 0x02 if ptype == PacketType.PUBREL else 0x00
    allowed = ALLOWED_REASON_CODES[ptype]

    def decode(data: bytes, first: int, pos: int, end: int, level: int) -> Packet:
        if first & 0x0F != flags and not (level == 3 and first & 0x0F == flags | 0x08):
            raise malformed(f"{name}: reserved fixed header flags are not {flags:04b}")
        packet_id, pos = _read_packet_id(data, pos, end, name)
        code = 0
        properties: Properties = {}
        if level == 5 and pos < end:
            code = data[pos]
            pos += 1
            if code not in allowed:
                raise malformed(f"{name}: reason code 0x{code:02X} is not allowed")
            if pos < end:
                properties, pos = _decode_properties(data, pos, end, ptype, name)
        if pos != end:
            raise malformed(f"{name}: {end - pos} unexpected bytes at the end")
        return cls(packet_id, code, properties)

    return decode


def _decode_subscribe(data: bytes, first: int, pos: int, end: int, level: int) -> Subscribe:
    if first & 0x0F != 0x02 and not (level == 3 and first & 0x0F == 0x0A):
        raise malformed("SUBSCRIBE: reserved fixed header flags are not 0010 [MQTT-3.8.1-1]")
    packet_id, pos = _read_packet_id(data, pos, end, "SUBSCRIBE")
    if level == 5:
        properties, pos = _decode_properties(data, pos, end, PacketType.SUBSCRIBE, "SUBSCRIBE")
    else:
        properties = {}
    reserved = 0xC0 if level == 5 else 0xFC
    subscriptions = []
    while pos < end:
        topic_filter, pos = read_string(data, pos, end, "SUBSCRIBE topic filter")
        if pos >= end:
            raise malformed("SUBSCRIBE: truncated subscription options")
        options = data[pos]
        pos += 1
        if options & reserved:
            raise malformed(
                f"SUBSCRIBE: reserved bits of the options of {topic_filter!r} are not 0"
            )
        qos = options & 0x03
        if qos == 3:
            # 3.1.1 [MQTT-3-8.3-4] calls this malformed; 5.0 (3.8.3.1) a protocol error.
            fault = protocol_error if level == 5 else malformed
            raise fault(f"SUBSCRIBE: QoS 3 requested for {topic_filter!r}")
        retain_handling = (options >> 4) & 0x03
        if retain_handling == 3:
            raise protocol_error(f"SUBSCRIBE: retain handling 3 for {topic_filter!r}")
        subscriptions.append(
            Subscription(
                topic_filter, qos, bool(options & 0x04), bool(options & 0x08), retain_handling
            )
        )
    if not subscriptions:
        raise protocol_error("SUBSCRIBE: no topic filter [MQTT-3.8.3-3]")
    return Subscribe(packet_id, tuple(subscriptions), properties)


def _decode_suback(data: bytes, first: int, pos: int, end: int, level: int) -> Suback:
    if first & 0x0F:
        raise malformed("SUBACK: reserved fixed header flags are not 0")
    packet_id, pos = _read_packet_id(data, pos, end, "SUBACK")
    if level == 5:
        properties, pos = _decode_properties(data, pos, end, PacketType.SUBACK, "SUBACK")
        allowed = ALLOWED_REASON_CODES[PacketType.SUBACK]
    else:
        properties = {}
        allowed = _SUBACK_V3_CODES
    return Suback(packet_id, _read_reason_codes(data, pos, end, "SUBACK", allowed), properties)


def _decode_unsubscribe(data: bytes, first: int, pos: int, end: int, level: int) -> Unsubscribe:
    if first & 0x0F != 0x02 and not (level == 3 and first & 0x0F == 0x0A):
        raise malformed("UNSUBSCRIBE: reserved fixed header flags are not 0010 [MQTT-3.10.1-1]")
    packet_id, pos = _read_packet_id(data, pos, end, "UNSUBSCRIBE")
    if level == 5:
        properties, pos = _decode_properties(data, pos, end, PacketType.UNSUBSCRIBE, "UNSUBSCRIBE")
    else:
        properties = {}
    filters = []
    while pos < end:
        topic_filter, pos = read_string(data, pos, end, "UNSUBSCRIBE topic filter")
        filters.append(topic_filter)
    if not filters:
        raise protocol_error("UNSUBSCRIBE: no topic filter [MQTT-3.10.3-2]")
    return Unsubscribe(packet_id, tuple(filters), properties)


def _decode_unsuback(data: bytes, first: int, pos: int, end: int, level: int) -> Unsuback:
    if first & 0x0F:
        raise malformed("UNSUBACK: reserved fixed header flags are not 0")
    packet_id, pos = _read_packet_id(data, pos, end, "UNSUBACK")
    if level != 5:
        if pos != end:
            raise malformed(f"UNSUBACK: {end - pos} unexpected bytes at the end")
        return Unsuback(packet_id)
    properties, pos = _decode_properties(data, pos, end, PacketType.UNSUBACK, "UNSUBACK")
    codes = _read_reason_codes(
        data, pos, end, "UNSUBACK", ALLOWED_REASON_CODES[PacketType.UNSUBACK]
    )
    return Unsuback(packet_id, codes, properties)


def _decode_pingreq(data: bytes, first: int, pos: int, end: int, level: int) -> Pingreq:
    if first & 0x0F or pos != end:
        raise malformed("PINGREQ: flags or remaining length are not 0")
    return Pingreq()


def _decode_pingresp(data: bytes, first: int, pos: int, end: int, level: int) -> Pingresp:
    if first & 0x0F or pos != end:
        raise malformed("PINGRESP: flags or remaining length are not 0")
    return Pingresp()


def _make_reason_only_decoder(cls: type[Disconnect] | type[Auth]) -> _BodyDecoder:
    ptype = cls.packet_type
    name = ptype.name
    allowed = ALLOWED_REASON_CODES[ptype]

    def decode(data: bytes, first: int, pos: int, end: int, level: int) -> Packet:
        if first & 0x0F:
            raise malformed(f"{name}: reserved fixed header flags are not 0")
        code = 0
        properties: Properties = {}
        if level == 5:
            if pos < end:
                code = data[pos]
                pos += 1
                if code not in allowed:
                    raise malformed(f"{name}: reason code 0x{code:02X} is not allowed")
                if pos < end:
                    properties, pos = _decode_properties(data, pos, end, ptype, name)
                    _check_authentication(properties, name)
        elif ptype == PacketType.AUTH:
            raise malformed("AUTH: packet type 15 is reserved before MQTT 5")
        if pos != end:
            raise malformed(f"{name}: {end - pos} unexpected bytes at the end")
        return cls(code, properties)

    return decode


def _decode_reserved(data: bytes, first: int, pos: int, end: int, level: int) -> Packet:
    raise malformed("packet type 0 is reserved")


#: Body decoders indexed by packet type (the high nibble of the first byte).
_DECODERS: tuple[_BodyDecoder, ...] = (
    _decode_reserved,
    _decode_connect,
    _decode_connack,
    _decode_publish,
    _make_publish_response_decoder(Puback),
    _make_publish_response_decoder(Pubrec),
    _make_publish_response_decoder(Pubrel),
    _make_publish_response_decoder(Pubcomp),
    _decode_subscribe,
    _decode_suback,
    _decode_unsubscribe,
    _decode_unsuback,
    _decode_pingreq,
    _decode_pingresp,
    _make_reason_only_decoder(Disconnect),
    _make_reason_only_decoder(Auth),
)


class Decoder:
    """
    Turns a byte stream into MQTT packets.

    A server-side decoder starts with C{protocol_level=None}: the first packet must
    then be a CONNECT, and the level it declares applies to every later packet. A
    client-side decoder is given the level it negotiated.

    After a L{RemoteProtocolError} the stream cannot be trusted: every later call to
    L{feed} raises the same error again.

    @ivar max_packet_size: the largest whole packet (fixed header included) accepted.
    @ivar protocol_level: 3, 4 or 5, or None until a CONNECT has been decoded.
    """

    __slots__ = ("_error", "_need", "_pending", "_pending_len", "max_packet_size", "protocol_level")

    def __init__(
        self, max_packet_size: int = MAX_PACKET_SIZE, protocol_level: int | None = None
    ) -> None:
        if protocol_level not in (None, 3, 4, 5):
            raise ValueError(f"protocol level {protocol_level!r} is not 3, 4, 5 or None")
        if max_packet_size < 2:
            raise ValueError(f"maximum packet size {max_packet_size} is below 2 bytes")
        self.max_packet_size = max_packet_size
        self.protocol_level = protocol_level
        self._pending: list[bytes] = []
        self._pending_len = 0
        self._need = 0
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held for a packet that has not fully arrived."""
        return self._pending_len

    def _stash(self, rest: bytes, need: int) -> None:
        self._pending = [rest] if rest else []
        self._pending_len = len(rest)
        self._need = need

    def feed(self, data: bytes) -> Iterator[Packet]:
        """
        Add C{data} to the stream and yield every packet it completes, in order.

        This is a generator: the bytes are only consumed as it is iterated. Packets
        that precede a fault are yielded before the fault is raised, so a server can
        act on them (or not) before it closes the connection.

        @raise RemoteProtocolError: the stream is malformed or breaks a rule of the
            protocol, or announces a packet larger than C{max_packet_size}.
        """
        if self._error is not None:
            raise self._error
        if self._pending:
            self._pending.append(data)
            self._pending_len += len(data)
            if self._pending_len < self._need:
                return
            data = b"".join(self._pending)
            self._pending = []
            self._pending_len = 0
        elif not isinstance(data, bytes):
            data = bytes(data)
        size = len(data)
        pos = 0
        level = self.protocol_level
        max_size = self.max_packet_size
        decoders = _DECODERS
        try:
            while pos < size:
                first = data[pos]
                ptype = first >> 4
                if level is None and ptype != 1:
                    raise protocol_error(
                        f"the first packet must be CONNECT, not packet type {ptype} [MQTT-3.1.0-1]"
                    )
                if pos + 1 >= size:
                    self._stash(data[pos:], 2)
                    return
                length = data[pos + 1]
                body = pos + 2
                if length >= 0x80:
                    length, body = _remaining_length(data, pos + 1, size)
                    if body < 0:
                        # The length is still arriving; what has come sets a lower
                        # bound (the missing last byte is at least 1), so a packet
                        # that must be too large is refused now.
                        digits = size - pos - 1
                        smallest = 1 + digits + 1 + length + (1 << (7 * digits))
                        if smallest > max_size:
                            raise RemoteProtocolError(
                                ReasonCode.PACKET_TOO_LARGE,
                                f"packet of at least {smallest} bytes is larger than the "
                                f"maximum of {max_size}",
                            )
                        self._stash(data[pos:], size - pos + 1)
                        return
                end = body + length
                if end - pos > max_size:
                    raise RemoteProtocolError(
                        ReasonCode.PACKET_TOO_LARGE,
                        f"packet of {end - pos} bytes is larger than the maximum of {max_size}",
                    )
                if end > size:
                    self._stash(data[pos:], end - pos)
                    return
                packet = decoders[ptype](data, first, body, end, level or 4)
                if level is None:
                    level = self.protocol_level = packet.protocol_level  # type: ignore[union-attr]
                pos = end
                try:
                    yield packet
                except GeneratorExit:
                    self._stash(data[pos:], 1)
                    raise
        except RemoteProtocolError as error:
            if error.packet_type is None and pos < size:
                error.packet_type = data[pos] >> 4
            if error.protocol_level is None:
                error.protocol_level = level
            self._error = error
            raise


def _remaining_length(data: bytes, pos: int, size: int) -> tuple[int, int]:
    """
    The Remaining Length starting at C{pos}, and where the body starts; when C{data}
    ends before the length does, the value of the digits so far and -1.
    """
    value = 0
    shift = 0
    start = pos
    while pos < size:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and pos - start > 1:
                raise malformed("remaining length not in its shortest form [MQTT-1.5.5-1]")
            return value, pos
        shift += 7
        if shift == 28:
            raise malformed("remaining length longer than four bytes")
    return value, -1


def decode_all(
    data: bytes, protocol_level: int | None = None, max_packet_size: int = MAX_PACKET_SIZE
) -> list[Packet]:
    """
    Decode a byte string that holds whole packets only.

    @raise RemoteProtocolError: as L{Decoder.feed}, and when the string ends in the
        middle of a packet.
    """
    decoder = Decoder(max_packet_size, protocol_level)
    packets = list(decoder.feed(data))
    if decoder.buffered:
        raise malformed(f"{decoder.buffered} bytes of an incomplete packet at the end")
    return packets
