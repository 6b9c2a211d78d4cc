# -*- test-case-name: tests.test_codec_golden,tests.test_codec_properties -*-
"""
The MQTT encoder: (packet, protocol level) -> bytes.

It refuses, with L{LocalProtocolError}, to produce what a conforming receiver would
have to refuse, and to drop silently an MQTT 5 field that an older level cannot carry.
L{EncodedPublish} encodes a PUBLISH once for many receivers.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from mqttbroker.codec.packets import (
    PROTOCOL_NAMES,
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
    Unsuback,
    Unsubscribe,
)
from mqttbroker.codec.primitives import (
    MAX_REMAINING_LENGTH,
    MAX_STRING_LENGTH,
    MAX_VARINT,
    write_binary,
    write_string,
    write_varint,
)
from mqttbroker.codec.properties import (
    PROPERTY_SPECS,
    WILL_PROPERTIES,
    Properties,
    PropertyId,
    PropertyType,
)
from mqttbroker.codec.reason_codes import ALLOWED_REASON_CODES, PacketType, ReasonCode
from mqttbroker.errors import LocalProtocolError

__all__ = ["EncodedPublish", "encode", "encode_properties"]

_MALFORMED = ReasonCode.MALFORMED_PACKET
_PROTOCOL_ERROR = ReasonCode.PROTOCOL_ERROR
_SUBACK_V3_CODES = frozenset((0x00, 0x01, 0x02, 0x80))
_pack_ack = struct.Struct("!BBH").pack


def _refuse(message: str, code: ReasonCode = _MALFORMED) -> LocalProtocolError:
    return LocalProtocolError(code, message)


def _fixed_header(first: int, body_length: int) -> bytes:
    if body_length > MAX_REMAINING_LENGTH:
        raise _refuse(f"remaining length {body_length} is larger than {MAX_REMAINING_LENGTH}")
    if body_length < 0x80:
        return bytes((first, body_length))
    return bytes((first,)) + write_varint(body_length)


def _u16(value: int, what: str) -> bytes:
    if not 0 <= value <= 0xFFFF:
        raise _refuse(f"{what}: {value} does not fit in two bytes")
    return value.to_bytes(2, "big")


def _packet_id(value: int | None, what: str) -> bytes:
    if value is None or not 1 <= value <= 0xFFFF:
        raise _refuse(f"{what}: packet identifier {value!r} is not 1-65535", _PROTOCOL_ERROR)
    return value.to_bytes(2, "big")


def _encode_value(kind: PropertyType, value: Any, what: str) -> bytes:
    if kind == PropertyType.BYTE:
        if not 0 <= value <= 0xFF:
            raise _refuse(f"{what}: {value} does not fit in a byte")
        return bytes((value,))
    if kind == PropertyType.TWO_BYTE_INTEGER:
        return _u16(value, what)
    if kind == PropertyType.FOUR_BYTE_INTEGER:
        if not 0 <= value <= 0xFFFFFFFF:
            raise _refuse(f"{what}: {value} does not fit in four bytes")
        return int(value).to_bytes(4, "big")
    if kind == PropertyType.VARIABLE_BYTE_INTEGER:
        if not 0 <= value <= MAX_VARINT:
            raise _refuse(f"{what}: {value} is not 0-{MAX_VARINT}")
        return write_varint(value)
    if kind == PropertyType.UTF8_STRING:
        return write_string(value, what)
    if kind == PropertyType.BINARY:
        return write_binary(value, what)
    name, pair_value = value
    return write_string(name, f"{what} name") + write_string(pair_value, f"{what} value")


_LABELS = {ident: f"property {spec.identifier.name}" for ident, spec in PROPERTY_SPECS.items()}
_IDENTS = {ident: write_varint(ident) for ident in PROPERTY_SPECS}


def encode_properties(properties: Properties, context: int, name: str) -> bytes:
    """
    A property list with its length prefix, checked against the property table for
    C{context} (a packet type or L{WILL_PROPERTIES}). Properties go out in the dict's
    order; repeated ones in their list's order.
    """
    if not properties:
        return b"\x00"
    out = []
    try:
        for key, value in properties.items():
            spec = PROPERTY_SPECS.get(key)
            if spec is None:
                raise _refuse(f"unknown property identifier {key!r}")
            label = _LABELS[key]
            if context not in spec.packets:
                raise _refuse(f"{label} is not allowed here")
            if spec.repeatable:
                if not isinstance(value, list):
                    raise _refuse(f"{label}: must be a list")
                if len(value) > 1 and context not in spec.repeatable:
                    raise _refuse(f"{label}: may appear only once here", _PROTOCOL_ERROR)
                values = value
            else:
                values = (value,)  # type: ignore[assignment]
            ident = _IDENTS[key]
            kind = spec.type
            for item in values:
                if spec.boolean and item not in (0, 1):
                    raise _refuse(f"{label}: {item!r} is neither 0 nor 1", _PROTOCOL_ERROR)
                if spec.nonzero and item == 0:
                    raise _refuse(f"{label}: 0 is not allowed", _PROTOCOL_ERROR)
                out.append(ident)
                out.append(_encode_value(kind, item, label))
    except LocalProtocolError as error:
        error.message = f"{name} {error.message}"
        error.args = (error.reason_code, error.message)
        raise
    body = b"".join(out)
    return write_varint(len(body)) + body


def _no_v5_fields(name: str, properties: Properties, reason_code: int = 0) -> None:
    if properties:
        raise _refuse(f"{name}: properties need MQTT 5")
    if reason_code:
        raise _refuse(f"{name}: reason code 0x{reason_code:02X} needs MQTT 5")


def _check_qos(qos: int, what: str) -> None:
    if qos not in (0, 1, 2):
        raise _refuse(f"{what}: QoS {qos!r} is not 0, 1 or 2")


def _check_topic_name(topic: str, what: str) -> None:
    if "+" in topic or "#" in topic:
        raise _refuse(f"{what} {topic!r} contains a wildcard", ReasonCode.TOPIC_NAME_INVALID)


def _encode_connect(packet: Connect, level: int) -> bytes:
    if packet.protocol_level != level:
        raise _refuse(
            f"CONNECT: protocol level {packet.protocol_level} given to an encoder for {level}"
        )
    flags = 0x02 if packet.clean_start else 0x00
    parts = [write_string(PROTOCOL_NAMES[level], "CONNECT protocol name"), bytes((level,))]
    payload = [write_string(packet.client_id, "CONNECT client identifier")]
    will = packet.will
    if will is not None:
        _check_qos(will.qos, "CONNECT will")
        if not will.topic:
            raise _refuse("CONNECT: will topic is empty", ReasonCode.TOPIC_NAME_INVALID)
        _check_topic_name(will.topic, "CONNECT will topic")
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
        if level == 5:
            payload.append(encode_properties(will.properties, WILL_PROPERTIES, "CONNECT will"))
        else:
            _no_v5_fields("CONNECT will", will.properties)
        payload.append(write_string(will.topic, "CONNECT will topic"))
        payload.append(write_binary(will.payload, "CONNECT will payload"))
    if packet.username is not None:
        flags |= 0x80
        payload.append(write_string(packet.username, "CONNECT user name"))
    if packet.password is not None:
        if packet.username is None and level < 5:
            raise _refuse("CONNECT: a password needs a user name before MQTT 5")
        flags |= 0x40
        payload.append(write_binary(packet.password, "CONNECT password"))
    parts.append(bytes((flags,)))
    parts.append(_u16(packet.keep_alive, "CONNECT keep alive"))
    if level == 5:
        parts.append(encode_properties(packet.properties, PacketType.CONNECT, "CONNECT"))
    else:
        _no_v5_fields("CONNECT", packet.properties)
    body = b"".join(parts + payload)
    return _fixed_header(0x10, len(body)) + body


def _encode_connack(packet: Connack, level: int) -> bytes:
    code = packet.reason_code
    if packet.session_present and (level == 3 or code):
        raise _refuse("CONNACK: session present needs MQTT 3.1.1 or later and success")
    flags = 0x01 if packet.session_present else 0x00
    if level == 5:
        if code not in ALLOWED_REASON_CODES[PacketType.CONNACK]:
            raise _refuse(f"CONNACK: reason code 0x{code:02X} is not allowed")
        body = bytes((flags, code)) + encode_properties(
            packet.properties, PacketType.CONNACK, "CONNACK"
        )
        return _fixed_header(0x20, len(body)) + body
    if not 0 <= code <= 5:
        raise _refuse(f"CONNACK: return code {code} is not 0-5")
    _no_v5_fields("CONNACK", packet.properties)
    return bytes((0x20, 2, flags, code))


def _publish_parts(packet: Publish, level: int) -> tuple[int, bytes, bytes]:
    """The first byte (DUP clear), the length-prefixed topic, and what follows the id."""
    qos = packet.qos
    _check_qos(qos, "PUBLISH")
    topic = packet.topic
    if "+" in topic or "#" in topic:
        _check_topic_name(topic, "PUBLISH topic name")
    if level == 5:
        tail = encode_properties(packet.properties, PacketType.PUBLISH, "PUBLISH")
        if not topic and not packet.properties.get(PropertyId.TOPIC_ALIAS):
            raise _refuse("PUBLISH: empty topic name without a topic alias", _PROTOCOL_ERROR)
    else:
        _no_v5_fields("PUBLISH", packet.properties)
        if not topic:
            raise _refuse("PUBLISH: empty topic name", _PROTOCOL_ERROR)
        tail = b""
    first = 0x30 | (qos << 1) | (0x01 if packet.retain else 0x00)
    return first, write_string(topic, "PUBLISH topic name"), tail + bytes(packet.payload)


def _encode_publish(packet: Publish, level: int) -> bytes:
    first, topic, tail = _publish_parts(packet, level)
    if packet.qos:
        if packet.dup:
            first |= 0x08
        pid = _packet_id(packet.packet_id, "PUBLISH")
        return _fixed_header(first, len(topic) + 2 + len(tail)) + topic + pid + tail
    if packet.dup:
        raise _refuse("PUBLISH: DUP set on a QoS 0 message")
    if packet.packet_id is not None:
        raise _refuse("PUBLISH: a QoS 0 message has no packet identifier")
    return _fixed_header(first, len(topic) + len(tail)) + topic + tail


def _make_publish_response_encoder(ptype: PacketType) -> Callable[[Any, int], bytes]:
    first = (ptype << 4) | (0x02 if ptype == PacketType.PUBREL else 0x00)
    name = ptype.name
    allowed = ALLOWED_REASON_CODES[ptype]

    def encode_response(packet: Any, level: int) -> bytes:
        pid: int = packet.packet_id
        if pid is None or not 1 <= pid <= 0xFFFF:
            _packet_id(pid, name)
        code = packet.reason_code
        if level == 5 and (code or packet.properties):
            if code not in allowed:
                raise _refuse(f"{name}: reason code 0x{code:02X} is not allowed")
            if packet.properties:
                body = (
                    pid.to_bytes(2, "big")
                    + bytes((code,))
                    + encode_properties(packet.properties, ptype, name)
                )
                return _fixed_header(first, len(body)) + body
            return bytes((first, 3)) + pid.to_bytes(2, "big") + bytes((code,))
        if level != 5:
            _no_v5_fields(name, packet.properties, code)
        return _pack_ack(first, 2, pid)

    return encode_response


def _encode_subscribe(packet: Subscribe, level: int) -> bytes:
    parts = [_packet_id(packet.packet_id, "SUBSCRIBE")]
    if level == 5:
        parts.append(encode_properties(packet.properties, PacketType.SUBSCRIBE, "SUBSCRIBE"))
    else:
        _no_v5_fields("SUBSCRIBE", packet.properties)
    if not packet.subscriptions:
        raise _refuse("SUBSCRIBE: no topic filter", _PROTOCOL_ERROR)
    for sub in packet.subscriptions:
        _check_qos(sub.qos, f"SUBSCRIBE {sub.topic_filter!r}")
        options = sub.qos
        if sub.no_local or sub.retain_as_published or sub.retain_handling:
            if level != 5:
                raise _refuse("SUBSCRIBE: subscription options beyond QoS need MQTT 5")
            if sub.retain_handling not in (0, 1, 2):
                raise _refuse(f"SUBSCRIBE: retain handling {sub.retain_handling!r}")
            options |= (
                (0x04 if sub.no_local else 0)
                | (0x08 if sub.retain_as_published else 0)
                | (sub.retain_handling << 4)
            )
        parts.append(write_string(sub.topic_filter, "SUBSCRIBE topic filter"))
        parts.append(bytes((options,)))
    body = b"".join(parts)
    return _fixed_header(0x82, len(body)) + body


def _reason_code_list(name: str, codes: tuple[int, ...], allowed: frozenset[int]) -> bytes:
    if not codes:
        raise _refuse(f"{name}: no reason code", _PROTOCOL_ERROR)
    for code in codes:
        if code not in allowed:
            raise _refuse(f"{name}: reason code {code!r} is not allowed")
    return bytes(codes)


def _encode_suback(packet: Suback, level: int) -> bytes:
    pid = _packet_id(packet.packet_id, "SUBACK")
    if level == 5:
        body = (
            pid
            + encode_properties(packet.properties, PacketType.SUBACK, "SUBACK")
            + _reason_code_list(
                "SUBACK", packet.reason_codes, ALLOWED_REASON_CODES[PacketType.SUBACK]
            )
        )
    else:
        _no_v5_fields("SUBACK", packet.properties)
        body = pid + _reason_code_list("SUBACK", packet.reason_codes, _SUBACK_V3_CODES)
    return _fixed_header(0x90, len(body)) + body


def _encode_unsubscribe(packet: Unsubscribe, level: int) -> bytes:
    parts = [_packet_id(packet.packet_id, "UNSUBSCRIBE")]
    if level == 5:
        parts.append(encode_properties(packet.properties, PacketType.UNSUBSCRIBE, "UNSUBSCRIBE"))
    else:
        _no_v5_fields("UNSUBSCRIBE", packet.properties)
    if not packet.topic_filters:
        raise _refuse("UNSUBSCRIBE: no topic filter", _PROTOCOL_ERROR)
    for topic_filter in packet.topic_filters:
        parts.append(write_string(topic_filter, "UNSUBSCRIBE topic filter"))
    body = b"".join(parts)
    return _fixed_header(0xA2, len(body)) + body


def _encode_unsuback(packet: Unsuback, level: int) -> bytes:
    pid = _packet_id(packet.packet_id, "UNSUBACK")
    if level != 5:
        _no_v5_fields("UNSUBACK", packet.properties)
        if packet.reason_codes:
            raise _refuse("UNSUBACK: reason codes need MQTT 5")
        return b"\xb0\x02" + pid
    body = (
        pid
        + encode_properties(packet.properties, PacketType.UNSUBACK, "UNSUBACK")
        + _reason_code_list(
            "UNSUBACK", packet.reason_codes, ALLOWED_REASON_CODES[PacketType.UNSUBACK]
        )
    )
    return _fixed_header(0xB0, len(body)) + body


def _encode_pingreq(packet: Pingreq, level: int) -> bytes:
    return b"\xc0\x00"


def _encode_pingresp(packet: Pingresp, level: int) -> bytes:
    return b"\xd0\x00"


def _make_reason_only_encoder(ptype: PacketType) -> Callable[[Any, int], bytes]:
    first = ptype << 4
    name = ptype.name
    allowed = ALLOWED_REASON_CODES[ptype]

    def encode_reason_only(packet: Any, level: int) -> bytes:
        code = packet.reason_code
        if level != 5:
            if ptype == PacketType.AUTH:
                raise _refuse("AUTH needs MQTT 5")
            _no_v5_fields(name, packet.properties, code)
            return bytes((first, 0))
        if code not in allowed:
            raise _refuse(f"{name}: reason code 0x{code:02X} is not allowed")
        if packet.properties:
            body = bytes((code,)) + encode_properties(packet.properties, ptype, name)
            return _fixed_header(first, len(body)) + body
        if code:
            return bytes((first, 1, code))
        return bytes((first, 0))

    return encode_reason_only


_ENCODERS: dict[type, Callable[[Any, int], bytes]] = {
    Connect: _encode_connect,
    Connack: _encode_connack,
    Publish: _encode_publish,
    Puback: _make_publish_response_encoder(PacketType.PUBACK),
    Pubrec: _make_publish_response_encoder(PacketType.PUBREC),
    Pubrel: _make_publish_response_encoder(PacketType.PUBREL),
    Pubcomp: _make_publish_response_encoder(PacketType.PUBCOMP),
    Subscribe: _encode_subscribe,
    Suback: _encode_suback,
    Unsubscribe: _encode_unsubscribe,
    Unsuback: _encode_unsuback,
    Pingreq: _encode_pingreq,
    Pingresp: _encode_pingresp,
    Disconnect: _make_reason_only_encoder(PacketType.DISCONNECT),
    Auth: _make_reason_only_encoder(PacketType.AUTH),
}


def encode(packet: Packet, protocol_level: int) -> bytes:
    """
    The wire bytes of C{packet} at C{protocol_level} (3, 4 or 5).

    @raise LocalProtocolError: the packet cannot be expressed at that level, or
        breaks a rule a receiver would enforce.
    """
    if protocol_level not in (3, 4, 5):
        raise ValueError(f"protocol level {protocol_level!r} is not 3, 4 or 5")
    try:
        encoder = _ENCODERS[type(packet)]
    except KeyError:
        raise TypeError(f"{packet!r} is not an MQTT packet") from None
    data: bytes = encoder(packet, protocol_level)
    return data


class EncodedPublish:
    """
    A PUBLISH encoded once, for every receiver that gets it with the same QoS,
    retain flag and properties at the same protocol level; per receiver only the
    packet identifier (and, on a re-send, the DUP flag) differs.

    The topic and payload are not copied per receiver: L{chunks} returns the shared
    pieces for C{transport.writeSequence}, and L{for_packet_id} joins them.

    @ivar qos: the QoS of the encoded message.
    @ivar size: the size of the whole packet on the wire.
    @ivar whole: for QoS 0, the complete packet (every receiver gets the same bytes);
        empty otherwise.
    """

    __slots__ = ("_first", "_head", "_tail", "qos", "size", "whole")

    def __init__(self, packet: Publish, protocol_level: int) -> None:
        if protocol_level not in (3, 4, 5):
            raise ValueError(f"protocol level {protocol_level!r} is not 3, 4 or 5")
        first, topic, tail = _publish_parts(packet, protocol_level)
        self.qos = packet.qos
        self._first = first
        if self.qos:
            header = _fixed_header(first, len(topic) + 2 + len(tail))
            self._head = header + topic
            self._tail = tail
            self.whole = b""
            self.size = len(self._head) + 2 + len(tail)
        else:
            self.whole = _fixed_header(first, len(topic) + len(tail)) + topic + tail
            self._head = self._tail = b""
            self.size = len(self.whole)

    def for_packet_id(self, packet_id: int | None, dup: bool = False) -> bytes:
        """The whole packet for one receiver (C{packet_id} None for QoS 0)."""
        return b"".join(self.chunks(packet_id, dup))

    def chunks(self, packet_id: int | None, dup: bool = False) -> list[bytes]:
        """The packet for one receiver as pieces that share the topic and payload."""
        if not self.qos:
            if packet_id is not None or dup:
                raise _refuse("PUBLISH: a QoS 0 message has no packet identifier or DUP")
            return [self.whole]
        if packet_id is None or not 1 <= packet_id <= 0xFFFF:
            _packet_id(packet_id, "PUBLISH")
        head = self._head
        if dup:
            head = bytes((self._first | 0x08,)) + head[1:]
        return [head, packet_id.to_bytes(2, "big"), self._tail]  # type: ignore[union-attr]


# Kept for the length checks above; documents that strings share one limit.
assert MAX_STRING_LENGTH == 0xFFFF
