# -*- test-case-name: tests.test_websocket -*-
"""
MQTT over WebSocket (MQTT 3.1.1 and 5.0 section 6), with Autobahn's Twisted
integration.

The WebSocket side speaks HTTP, negotiates the C{mqtt} sub-protocol, checks the path
and turns binary messages into a byte stream for an ordinary L{MQTTServerProtocol}:
message boundaries mean nothing to MQTT, so one message may hold several packets or
part of one ([MQTT-6.0.0-2]). The MQTT protocol writes through a small transport that
sends each write as one binary message and passes backpressure to the socket below.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IProtocolFactory, IPushProducer, ITransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

__all__ = ["SUBPROTOCOLS", "MQTTWebSocketFactory", "MQTTWebSocketProtocol"]

_log = Logger()

#: The sub-protocols accepted, in order of preference: C{mqtt} (MQTT 3.1.1 and 5.0,
#: [MQTT-6.0.0-4]) and C{mqttv3.1}, which MQTT 3.1 clients ask for.
SUBPROTOCOLS = ("mqtt", "mqttv3.1")

#: Close code for a text frame: MQTT travels in binary frames only ([MQTT-6.0.0-1]).
_UNSUPPORTED_DATA = 1003
#: Close code when no MQTT connection can be served now (RFC 6455 7.4.1, 1013).
_TRY_AGAIN_LATER = 1013


@implementer(ITransport)
class _MessageTransport:
    """What the MQTT protocol writes to: one binary WebSocket message per write."""

    def __init__(self, websocket: MQTTWebSocketProtocol) -> None:
        self._websocket = websocket
        self.disconnecting = False

    def write(self, data: bytes) -> None:
        if data and not self.disconnecting:
            self._websocket.sendMessage(data, isBinary=True)

    def writeSequence(self, data: Iterable[bytes]) -> None:  # noqa: N802 (Twisted's name)
        self.write(b"".join(data))

    def loseConnection(self) -> None:  # noqa: N802
        if not self.disconnecting:
            self.disconnecting = True
            self._websocket.sendClose(1000)

    def abortConnection(self) -> None:  # noqa: N802
        self.disconnecting = True
        self._websocket.transport.abortConnection()  # type: ignore[union-attr]

    def getPeer(self) -> IAddress:  # noqa: N802
        return self._websocket.transport.getPeer()  # type: ignore[union-attr]

    def getHost(self) -> IAddress:  # noqa: N802
        return self._websocket.transport.getHost()  # type: ignore[union-attr]

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:  # noqa: N802
        # The socket's buffer is where a slow reader shows: let it pause MQTT.
        self._websocket.transport.registerProducer(producer, streaming)  # type: ignore[union-attr]

    def pauseProducing(self) -> None:  # noqa: N802
        """Stop reading from the client (a decision about it is awaited)."""
        self._websocket.transport.pauseProducing()  # type: ignore[union-attr]

    def resumeProducing(self) -> None:  # noqa: N802
        self._websocket.transport.resumeProducing()  # type: ignore[union-attr]

    def unregisterProducer(self) -> None:  # noqa: N802
        self._websocket.transport.unregisterProducer()  # type: ignore[union-attr]

    def getPeerCertificate(self) -> Any:  # noqa: N802
        """The TLS client certificate, for a WebSocket over TLS."""
        get = getattr(self._websocket.transport, "getPeerCertificate", None)
        return get() if get is not None else None


class MQTTWebSocketProtocol(WebSocketServerProtocol):
    """One WebSocket connection carrying one MQTT connection."""

    factory: MQTTWebSocketFactory

    def __init__(self) -> None:
        super().__init__()
        self._mqtt: Any = None
        self._mqtt_transport: _MessageTransport | None = None

    def onConnect(self, request: ConnectionRequest) -> str | None:  # noqa: N802
        if request.path != self.factory.path:
            raise ConnectionDeny(404, f"MQTT is served on {self.factory.path}")
        for offered in request.protocols:
            if offered in SUBPROTOCOLS:
                return offered  # type: ignore[no-any-return]
        if request.protocols:
            raise ConnectionDeny(
                400, f"no supported WebSocket sub-protocol offered (use {SUBPROTOCOLS[0]})"
            )
        # Clients that name no sub-protocol at all break [MQTT-6.0.0-3] but are common
        # among old libraries; MQTT is what this endpoint speaks anyway.
        return None

    def onOpen(self) -> None:  # noqa: N802
        transport = _MessageTransport(self)
        protocol = self.factory.mqtt_factory.buildProtocol(self.transport.getPeer())  # type: ignore[union-attr]
        if protocol is None:
            self._close(_TRY_AGAIN_LATER, "try again later")
            return
        self._mqtt_transport = transport
        self._mqtt = protocol
        protocol.makeConnection(transport)

    # Autobahn's frame-level callbacks, so that MQTT bytes go to the decoder as they
    # arrive: the MQTT decoder bounds what is buffered (by the packet size limit,
    # from the fixed header on), and Autobahn never holds a whole message.

    def onMessageBegin(self, isBinary: bool) -> None:  # noqa: N802, N803
        super().onMessageBegin(isBinary)
        transport = self._mqtt_transport
        if not isBinary and transport is not None and not transport.disconnecting:
            # [MQTT-6.0.0-1]: anything but binary data frames closes the connection.
            transport.disconnecting = True
            self._close(_UNSUPPORTED_DATA, "MQTT is carried in binary frames only")

    def onMessageFrameData(self, payload: bytes) -> None:  # noqa: N802
        transport = self._mqtt_transport
        if (
            self._mqtt is None
            or transport is None
            or transport.disconnecting  # closing: nothing more is read
            or not self.message_is_binary
        ):
            return
        self._mqtt.dataReceived(payload)

    def onMessageFrameEnd(self) -> None:  # noqa: N802
        """Nothing was kept, so nothing is assembled."""

    def onMessageEnd(self) -> None:  # noqa: N802
        """Nothing was kept, so there is no message to hand on."""

    def _close(self, code: int, reason: str) -> None:
        """
        Start the closing handshake with a protocol-level close code: Autobahn's
        C{sendClose} takes only 1000 and application codes (3000-4999), and raises
        for the RFC 6455 codes (1003, 1013) that say what went wrong here.
        """
        self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8"), isReply=False)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:  # noqa: N802, N803
        protocol, self._mqtt = self._mqtt, None
        if protocol is not None:
            if self._mqtt_transport is not None:
                self._mqtt_transport.disconnecting = True
            text = f"WebSocket closed ({code}{': ' + reason if reason else ''})"
            protocol.connectionLost(Failure(ConnectionDone(text)))


class MQTTWebSocketFactory(WebSocketServerFactory):
    """
    Serves MQTT over WebSocket on C{path}, for the MQTT connections that
    C{mqtt_factory} builds.
    """

    protocol = MQTTWebSocketProtocol  # type: ignore[assignment]

    def __init__(self, mqtt_factory: IProtocolFactory, path: str = "/mqtt") -> None:
        super().__init__(protocols=list(SUBPROTOCOLS))
        self.mqtt_factory = mqtt_factory
        self.path = path
        broker = getattr(mqtt_factory, "broker", None)
        self.setProtocolOptions(
            # Messages are not buffered (see the protocol's frame callbacks), so their
            # size is not limited here: the MQTT decoder limits each packet.
            maxMessagePayloadSize=0,
            maxFramePayloadSize=0,
            # A client has as long to finish the HTTP upgrade as to send CONNECT.
            openHandshakeTimeout=getattr(broker.config, "connect_timeout", 10.0)
            if broker is not None
            else 10.0,
            closeHandshakeTimeout=5,
        )
