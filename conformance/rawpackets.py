"""
Hand-built wire pieces for the conformance tests: what a test needs to write packets
this project's codec refuses to produce (malformed and protocol-violating ones),
written independently of the codec.
"""

from __future__ import annotations

import struct

__all__ = ["packet", "string", "varint", "websocket_frame"]


def varint(value: int) -> bytes:
    """A Variable Byte Integer (remaining length, property length...)."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def string(data: bytes | str) -> bytes:
    """A length-prefixed string (or binary data); a str is encoded as UTF-8."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return len(raw).to_bytes(2, "big") + raw


def packet(first: int, body: bytes) -> bytes:
    """A whole control packet: first byte, remaining length, body."""
    return bytes((first,)) + varint(len(body)) + body


def websocket_frame(opcode: int, payload: bytes, mask: bytes, *, fin: bool = True) -> bytes:
    """A WebSocket frame as a client sends it: masked with C{mask} (RFC 6455 5.2, 5.3)."""
    size = len(payload)
    head = bytes([(0x80 if fin else 0) | opcode])
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + struct.pack("!H", size)
    else:
        head += bytes([0x80 | 127]) + struct.pack("!Q", size)
    return head + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
