# -*- test-case-name: tests.test_protocol -*-
"""
The Twisted adapter: bytes from a transport in, MQTT packets out.

This first version speaks the connection handshake only (CONNECT/CONNACK, PINGREQ,
DISCONNECT, protocol errors); the publish/subscribe core arrives with the broker
issue. It already has the adapter's final shape: the codec does all parsing, the
protocol writes bytes and owns timers.
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from mqttbroker.codec import (
    ALLOWED_REASON_CODES,
    MAX_PACKET_SIZE,
    Connack,
    Connect,
    ConnectReturnCode,
    Decoder,
    Disconnect,
    Packet,
    PacketType,
    Pingreq,
    Pingresp,
    ReasonCode,
    RemoteProtocolError,
    encode,
)

__all__ = ["MQTTServerFactory", "MQTTServerProtocol"]

_log = Logger()


class MQTTServerProtocol(Protocol, TimeoutMixin):
    """One client connection."""

    factory: MQTTServerFactory

    def __init__(self) -> None:
        self._decoder: Decoder | None = None
        self._level: int | None = None
        self._connected = False

    def connectionMade(self) -> None:
        self._decoder = Decoder(self.factory.max_packet_size)
        self.setTimeout(self.factory.connect_timeout)

    def timeoutConnection(self) -> None:
        _log.info(
            "Closing {peer}: no CONNECT within {timeout} s",
            peer=self.transport.getPeer() if self.transport else None,
            timeout=self.factory.connect_timeout,
        )
        self._close()

    def dataReceived(self, data: bytes) -> None:
        decoder = self._decoder
        if decoder is None:
            return
        if self._connected:
            # Any packet counts as keep-alive activity (3.1.1 [MQTT-3.1.2-24], 5.0 [MQTT-3.1.2-22]).
            self.resetTimeout()
        try:
            for packet in decoder.feed(data):
                self._packet_received(packet)
                if self._decoder is None:
                    return
        except RemoteProtocolError as error:
            self._protocol_error(error)

    def _packet_received(self, packet: Packet) -> None:
        if isinstance(packet, Connect):
            if self._connected:
                self._protocol_error(
                    RemoteProtocolError(ReasonCode.PROTOCOL_ERROR, "second CONNECT")
                )
                return
            self._connected = True
            self._level = packet.protocol_level
            self.setTimeout(packet.keep_alive * 1.5 if packet.keep_alive else None)
            self._send(Connack(False, 0))
            _log.info(
                "Client {client_id!r} connected from {peer} (MQTT level {protocol_level})",
                client_id=packet.client_id,
                peer=self._peer(),
                protocol_level=packet.protocol_level,
            )
        elif isinstance(packet, Pingreq):
            self._send(Pingresp())
        elif isinstance(packet, Disconnect):
            self._close()
        else:
            self._protocol_error(
                RemoteProtocolError(
                    ReasonCode.IMPLEMENTATION_SPECIFIC_ERROR,
                    f"{packet.packet_type.name} is not served by this build yet",
                )
            )

    def _protocol_error(self, error: RemoteProtocolError) -> None:
        _log.info("Closing {peer}: {error}", peer=self._peer(), error=str(error))
        level = self._level or error.protocol_level
        if not self._connected:
            # A faulty CONNECT is answered with a CONNACK the client can read
            # (3.1.1 [MQTT-3.1.2-2], 5.0 section 3.2.2.2); 3.1.1 has no code for a
            # malformed CONNECT, so there the socket is just closed.
            if level == 5:
                code = error.reason_code
                if code not in ALLOWED_REASON_CODES[PacketType.CONNACK]:
                    code = ReasonCode.PROTOCOL_ERROR
                self._send_raw(encode(Connack(False, code), 5))
            elif error.reason_code == ReasonCode.UNSUPPORTED_PROTOCOL_VERSION:
                self._send_raw(
                    encode(Connack(False, ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION), 4)
                )
        elif level == 5:
            self._send(Disconnect(error.reason_code))
        self._close()

    def _send(self, packet: Packet) -> None:
        self._send_raw(encode(packet, self._level or 4))

    def _send_raw(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _close(self) -> None:
        self._decoder = None
        self.setTimeout(None)
        if self.transport is not None:
            self.transport.loseConnection()

    def _peer(self) -> IAddress | None:
        return self.transport.getPeer() if self.transport is not None else None

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._decoder = None
        self.setTimeout(None)


class MQTTServerFactory(Factory[MQTTServerProtocol]):
    """
    Builds L{MQTTServerProtocol}s and holds the limits they share.

    @ivar max_packet_size: the largest packet accepted from a client.
    @ivar connect_timeout: seconds a new connection may take to send CONNECT.
    @ivar clock: the time source for timeouts (the reactor unless a test gives a
        L{twisted.internet.task.Clock}).
    """

    def __init__(
        self,
        max_packet_size: int = MAX_PACKET_SIZE,
        connect_timeout: float = 10.0,
        clock: IReactorTime | None = None,
    ) -> None:
        self.max_packet_size = max_packet_size
        self.connect_timeout = connect_timeout
        if clock is None:
            from twisted.internet import reactor  # noqa: PLC0415 (installed late)

            clock = reactor
        self.clock: IReactorTime = clock

    def buildProtocol(self, addr: IAddress | None) -> MQTTServerProtocol:
        protocol = MQTTServerProtocol()
        protocol.factory = self
        protocol.callLater = self.clock.callLater  # type: ignore[assignment]
        return protocol
