"""
The data representations of MQTT (section 1.5 of 5.0, 1.5 of 3.1.1) as pure functions.

Readers take C{(data, pos, end, what)} and return C{(value, new_pos)}; C{end} is the end
of the field's enclosing structure, so a length that runs past it is a Malformed Packet
even when more bytes (of the next packet) follow in C{data}. C{what} names the field
for the error message. Writers return C{bytes}.
"""

from __future__ import annotations

from mqttbroker.codec.reason_codes import ReasonCode
from mqttbroker.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_PACKET_SIZE",
    "MAX_REMAINING_LENGTH",
    "MAX_STRING_LENGTH",
    "MAX_VARINT",
    "malformed",
    "protocol_error",
    "read_binary",
    "read_string",
    "read_u16",
    "read_u32",
    "read_varint",
    "write_binary",
    "write_string",
    "write_varint",
]

#: The largest value a Variable Byte Integer can hold (4 bytes).
MAX_VARINT = 268_435_455
#: The largest Remaining Length.
MAX_REMAINING_LENGTH = MAX_VARINT
#: The largest whole packet: 1 byte of type and flags, 4 of length, and the rest.
MAX_PACKET_SIZE = 1 + 4 + MAX_REMAINING_LENGTH
#: UTF-8 strings and binary data carry a two-byte length.
MAX_STRING_LENGTH = 65_535

_MALFORMED = ReasonCode.MALFORMED_PACKET
_PROTOCOL_ERROR = ReasonCode.PROTOCOL_ERROR


def malformed(message: str) -> RemoteProtocolError:
    """A Malformed Packet (0x81) error, to be raised by the caller."""
    return RemoteProtocolError(_MALFORMED, message)


def protocol_error(message: str) -> RemoteProtocolError:
    """A Protocol Error (0x82) error, to be raised by the caller."""
    return RemoteProtocolError(_PROTOCOL_ERROR, message)


def read_u16(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """A Two Byte Integer, big-endian."""
    if pos + 2 > end:
        raise malformed(f"{what}: truncated two-byte integer")
    return (data[pos] << 8) | data[pos + 1], pos + 2


def read_u32(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """A Four Byte Integer, big-endian."""
    if pos + 4 > end:
        raise malformed(f"{what}: truncated four-byte integer")
    return int.from_bytes(data[pos : pos + 4], "big"), pos + 4


def read_varint(data: bytes, pos: int, end: int, what: str) -> tuple[int, int]:
    """
    A Variable Byte Integer: at most four bytes, in its shortest form
    ([MQTT-1.5.5-1] of 5.0; a longer form is refused as malformed).
    """
    value = 0
    shift = 0
    start = pos
    while True:
        if pos >= end:
            raise malformed(f"{what}: truncated variable byte integer")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            if byte == 0 and pos - start > 1:
                raise malformed(f"{what}: variable byte integer not in its shortest form")
            return value, pos
        shift += 7
        if shift == 28:
            raise malformed(f"{what}: variable byte integer longer than four bytes")


def _check_text(text: str, what: str) -> None:
    if "\x00" in text:
        raise malformed(f"{what}: UTF-8 string contains U+0000 [MQTT-1.5.4-2]")


def read_string(data: bytes, pos: int, end: int, what: str) -> tuple[str, int]:
    """
    A UTF-8 Encoded String: well-formed UTF-8 without surrogates ([MQTT-1.5.4-1])
    and without U+0000 ([MQTT-1.5.4-2]). Python's strict UTF-8 decoder already refuses
    overlong forms, surrogates and code points past U+10FFFF. A U+FEFF is kept as is
    ([MQTT-1.5.4-3]).
    """
    if pos + 2 > end:
        raise malformed(f"{what}: truncated string length")
    stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if stop > end:
        raise malformed(f"{what}: string runs past the end of its packet")
    raw = data[pos + 2 : stop]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise malformed(f"{what}: not well-formed UTF-8 [MQTT-1.5.4-1]") from None
    if b"\x00" in raw:
        _check_text(text, what)
    return text, stop


def read_binary(data: bytes, pos: int, end: int, what: str) -> tuple[bytes, int]:
    """Binary Data: a two-byte length and that many bytes."""
    if pos + 2 > end:
        raise malformed(f"{what}: truncated binary length")
    stop = pos + 2 + ((data[pos] << 8) | data[pos + 1])
    if stop > end:
        raise malformed(f"{what}: binary data runs past the end of its packet")
    return bytes(data[pos + 2 : stop]), stop


def write_varint(value: int) -> bytes:
    """A Variable Byte Integer in its shortest form."""
    if value < 0x80:
        if value < 0:
            raise LocalProtocolError(_MALFORMED, f"variable byte integer {value} is negative")
        return bytes((value,))
    if value > MAX_VARINT:
        raise LocalProtocolError(
            _MALFORMED, f"variable byte integer {value} is larger than {MAX_VARINT}"
        )
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def write_string(text: str, what: str) -> bytes:
    """A UTF-8 Encoded String; refuses what a receiver would have to refuse."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise LocalProtocolError(
            _MALFORMED, f"{what}: contains a surrogate, which UTF-8 cannot carry"
        ) from None
    if len(raw) > MAX_STRING_LENGTH:
        raise LocalProtocolError(
            _MALFORMED, f"{what}: {len(raw)} bytes is longer than {MAX_STRING_LENGTH}"
        )
    if b"\x00" in raw:
        raise LocalProtocolError(_MALFORMED, f"{what}: contains U+0000")
    return len(raw).to_bytes(2, "big") + raw


def write_binary(data: bytes, what: str) -> bytes:
    """Binary Data."""
    if len(data) > MAX_STRING_LENGTH:
        raise LocalProtocolError(
            _MALFORMED, f"{what}: {len(data)} bytes is longer than {MAX_STRING_LENGTH}"
        )
    return len(data).to_bytes(2, "big") + bytes(data)
