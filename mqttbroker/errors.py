# -*- test-case-name: tests.test_codec_errors -*-
"""
The errors the MQTT core raises.

Two kinds, after h11: L{RemoteProtocolError} means the peer broke the protocol (its
bytes are malformed, or a packet is not allowed where it came); L{LocalProtocolError}
means our own code asked for something the protocol cannot express. Each carries the
MQTT 5 reason code that a server should answer with, so the layer that owns the
connection can choose between CONNACK, DISCONNECT and closing the socket without
parsing a message string.
"""

from __future__ import annotations

from mqttbroker.codec.reason_codes import ReasonCode

__all__ = ["LocalProtocolError", "MQTTError", "RemoteProtocolError"]


class MQTTError(Exception):
    """
    Base of the errors raised by the MQTT core.

    @ivar reason_code: the MQTT 5 reason code that describes the fault.
    @ivar message: a human-readable explanation naming the offending field.
    @ivar packet_type: the control packet type being processed, when known.
    @ivar protocol_level: the protocol level (3, 4 or 5) in force, when known; for a
        faulty CONNECT this is the level that the CONNECT itself declared, if it got
        that far, so that a server can answer with a CONNACK of the right version.
    """

    reason_code: ReasonCode
    message: str
    packet_type: int | None
    protocol_level: int | None

    def __init__(
        self,
        reason_code: ReasonCode,
        message: str,
        packet_type: int | None = None,
        protocol_level: int | None = None,
    ) -> None:
        super().__init__(reason_code, message)
        self.reason_code = reason_code
        self.message = message
        self.packet_type = packet_type
        self.protocol_level = protocol_level

    def __str__(self) -> str:
        return f"{self.message} (reason code 0x{int(self.reason_code):02X} {self.reason_code.name})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.reason_code.name}, {self.message!r})"


class RemoteProtocolError(MQTTError):
    """
    The peer sent bytes that break the MQTT specification.

    This is the only exception that L{mqttbroker.codec.Decoder} lets escape.
    """


class LocalProtocolError(MQTTError):
    """
    Our own code asked the codec to produce something MQTT cannot express (a string
    over 65,535 bytes, a packet identifier of 0, an MQTT 5 field on a 3.1.1 packet...).
    """
