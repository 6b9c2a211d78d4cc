# -*- test-case-name: tests.test_protocol -*-
"""
The Twisted adapter: bytes from a transport in, bytes out; timers; backpressure.

L{MQTTServerProtocol} feeds the transport's bytes to the codec's L{Decoder} and the
packets to a sans-I/O L{ServerConnection}, and gives that connection its output:
writes go straight to the transport, the keep-alive is a L{TimeoutMixin} timer. The
protocol registers itself as the transport's push producer: when the transport's
buffer passes its high-water mark (a client that reads slower than it is sent to),
the connection stops writing and its session queues (bounded) until it drains.
"""

from __future__ import annotations

from twisted.internet.interfaces import IAddress, IPushProducer, IReactorTime, ITCPTransport
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from mqttbroker.broker import Broker
from mqttbroker.codec import (
    Connack,
    Connect,
    ConnectReturnCode,
    Decoder,
    ReasonCode,
    RemoteProtocolError,
    encode,
)
from mqttbroker.connection import ServerConnection, State
from mqttbroker.listeners import Listener
from mqttbroker.tls import certificate_identity, tls_failure

__all__ = ["MQTTServerFactory", "MQTTServerProtocol"]

_log = Logger()

#: The largest packet read from a connection that is only told the broker is full:
#: a CONNECT with a modest will fits, and the wait costs little memory.
_BUSY_PACKET_SIZE = 65536
_SERVER_UNAVAILABLE = ConnectReturnCode.SERVER_UNAVAILABLE


def _describe(address: IAddress | None) -> str:
    host = getattr(address, "host", None)
    port = getattr(address, "port", None)
    if host is not None and port is not None:
        # Brackets keep an IPv6 address apart from its port, as in URLs.
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)


@implementer(IPushProducer)
class MQTTServerProtocol(Protocol, TimeoutMixin):
    """One client connection, over any stream transport."""

    factory: MQTTServerFactory

    def __init__(self) -> None:
        self._decoder: Decoder | None = None
        self.connection: ServerConnection | None = None
        self._counted = False
        #: The listener speaks the PROXY protocol and its header has not come yet.
        self._awaiting_proxy_header = False
        #: Refused by a connection limit, waiting for the CONNECT to answer "busy".
        self._busy = False
        #: Registered as the transport's producer (backpressure).
        self._producing = False

    # -- Protocol -------------------------------------------------------------------

    def connectionMade(self) -> None:
        factory = self.factory
        if factory.proxied:
            # Behind the PROXY protocol the client's address arrives in a header,
            # after this; the first bytes passed on here come after that header, so
            # the address rules, limits and peer name wait for them. Until then the
            # connect timeout bounds how long the connection may stay silent.
            self._awaiting_proxy_header = True
            self.setTimeout(factory.broker.config.connect_timeout)
            return
        self._admit()

    def _admit(self) -> bool:
        """
        Serve the connection, or refuse it (address rules, connection limits): the
        peer's address is known now. Returns whether it is served.
        """
        factory = self.factory
        address = self.transport.getPeer() if self.transport is not None else None
        peer = _describe(address)
        host = getattr(address, "host", None)
        refusal = factory.refusal(host)
        if refusal is not None:
            factory.connection_refused(peer, refusal)
            if factory.listener.admits(host) and factory.answering_busy < factory.busy_answers:
                # Full, not forbidden: say so, so that the client backs off.
                self._answer_busy()
                return False
            self.setTimeout(None)
            self.transport.loseConnection()  # type: ignore[union-attr]
            return False
        factory.connections += 1
        factory.broker.connection_count += 1
        self._counted = True
        # The hot path writes straight to the transport, one call level less.
        self.write = self.transport.write  # type: ignore[method-assign,union-attr]
        self.write_sequence = self.transport.writeSequence  # type: ignore[assignment,method-assign,union-attr]
        self._decoder = Decoder(factory.broker.config.max_packet_size)
        self.connection = ServerConnection(
            factory.broker,
            self,
            peer,
            factory.listener.identity_as_username,
            host,
            factory.listener.name,
        )
        self.transport.registerProducer(self, True)  # type: ignore[union-attr]
        self._producing = True
        if factory.broker.config.tcp_nodelay and ITCPTransport.providedBy(self.transport):
            # Messages are latency-sensitive and already batched per reactor turn by
            # the transport; Nagle's algorithm would only hold them back.
            self.transport.setTcpNoDelay(True)
        if not self._awaiting_proxy_header:
            self.setTimeout(factory.broker.config.connect_timeout)
        return True

    def _answer_busy(self) -> None:
        """
        A connection refused by a connection limit: read its CONNECT (no more than
        a small packet, within the connect timeout) and answer CONNACK "server
        unavailable" (3.1.1 return code 3, MQTT 5 0x97 Quota exceeded), then close.
        """
        self._busy = True
        self.factory.answering_busy += 1
        self._decoder = Decoder(min(self.factory.broker.config.max_packet_size, _BUSY_PACKET_SIZE))
        self.setTimeout(self.factory.broker.config.connect_timeout)

    def _busy_data(self, data: bytes) -> None:
        decoder = self._decoder
        if decoder is None:
            return
        try:
            for packet in decoder.feed(data):
                if isinstance(packet, Connect):
                    level = packet.protocol_level
                    code = ReasonCode.QUOTA_EXCEEDED if level == 5 else _SERVER_UNAVAILABLE
                    self.transport.write(encode(Connack(False, code), level))  # type: ignore[union-attr]
                break
            else:
                return  # the CONNECT is still arriving
        except RemoteProtocolError:
            pass
        self.close()

    def dataReceived(self, data: bytes) -> None:
        decoder = self._decoder
        connection = self.connection
        if decoder is None or connection is None:
            if self._busy:
                self._busy_data(data)
                return
            if not self._awaiting_proxy_header:
                return
            # The first bytes after the PROXY header: the real peer is known.
            if not self._admit():
                self._awaiting_proxy_header = False
                if self._busy:
                    self._busy_data(data)
                return
            self._awaiting_proxy_header = False
            decoder = self._decoder
            connection = self.connection
            assert decoder is not None and connection is not None
        if connection.identity_as_username and connection.state is State.AWAIT_CONNECT:
            # The TLS handshake is over once application data arrives.
            connection.certificate_identity = certificate_identity(self.transport)
        if self.timeOut and connection.state is State.CONNECTED:
            # Any packet counts as keep-alive activity (3.1.1 [MQTT-3.1.2-24], 5.0
            # [MQTT-3.1.2-22]); before CONNECT the connect timeout runs unextended,
            # so trickling bytes cannot hold a connection open.
            self.resetTimeout()
        try:
            for packet in decoder.feed(data):
                connection.packet_received(packet)
                if connection.state is State.CLOSED:
                    return
        except RemoteProtocolError as error:
            connection.protocol_violation(error)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.setTimeout(None)
        self._decoder = None
        if self._busy:
            self._busy = False
            self.factory.answering_busy -= 1
        if self._counted:
            self._counted = False
            self.factory.connections -= 1
            self.factory.broker.connection_count -= 1
        connection = self.connection
        if connection is not None:
            if connection.state is State.AWAIT_CONNECT:
                failed = tls_failure(reason)
                if failed is not None:
                    # Counted and logged (rate limited) like the other refusals: a
                    # phone with the wrong certificate is the operator's question.
                    self.factory.connection_refused(
                        connection.peer, f"TLS handshake failed: {failed}"
                    )
            connection.connection_lost(_reason_text(reason))

    def timeoutConnection(self) -> None:
        connection = self.connection
        if self._busy:
            self.close()
            return
        if connection is None:
            if self._awaiting_proxy_header:
                _log.info(
                    "Closing {peer}: no data after the PROXY header within {timeout} s",
                    peer=_describe(self.transport.getPeer() if self.transport else None),
                    timeout=self.factory.broker.config.connect_timeout,
                )
                self._awaiting_proxy_header = False
                self.close()
            return
        if connection.deciding:
            # The CONNECT came, but the authentication backend has not answered.
            connection.decision_timed_out()
            return
        if connection.state is not State.CONNECTED:
            _log.info(
                "Closing {peer}: no CONNECT (or no authentication) within {timeout} s",
                peer=connection.peer,
                timeout=self.factory.broker.config.connect_timeout,
            )
            connection.connection_lost("connect timeout")
            self.close()
        else:
            connection.keep_alive_expired()

    # -- ConnectionOutput ---------------------------------------------------------------

    def write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def write_sequence(self, chunks: list[bytes]) -> None:
        self.transport.writeSequence(chunks)  # type: ignore[union-attr]

    def close(self) -> None:
        self.setTimeout(None)
        self._decoder = None
        if self.transport is not None:
            if self._producing:
                # A TLS transport does not shut down while a producer is registered.
                self._producing = False
                self.transport.unregisterProducer()  # type: ignore[attr-defined]
            self.transport.loseConnection()

    def set_keep_alive(self, seconds: float | None) -> None:
        self.setTimeout(seconds)

    def pause_reading(self) -> None:
        pause = getattr(self.transport, "pauseProducing", None)
        if pause is not None:
            pause()

    def resume_reading(self) -> None:
        resume = getattr(self.transport, "resumeProducing", None)
        if resume is not None:
            resume()

    # -- IPushProducer: the transport tells us when its buffer is full -----------------

    def pauseProducing(self) -> None:
        if self.connection is not None:
            self.connection.pause_writing()

    def resumeProducing(self) -> None:
        if self.connection is not None:
            self.connection.resume_writing()

    def stopProducing(self) -> None:
        pass


def _reason_text(reason: Failure) -> str:
    from twisted.internet.error import ConnectionDone  # noqa: PLC0415

    if reason.check(ConnectionDone):
        return "connection closed"
    return f"connection lost: {reason.getErrorMessage()}"


class MQTTServerFactory(Factory[MQTTServerProtocol]):
    """
    Builds L{MQTTServerProtocol}s of one listener for a L{Broker} that several
    listeners (TCP, TLS, UNIX, WebSocket) may share.

    @ivar broker: the broker every connection of this factory joins.
    @ivar listener: the listener's settings (its limit and address rules).
    @ivar clock: the time source for timeouts (the reactor unless a test gives a
        L{twisted.internet.task.Clock}).
    @ivar connections: connections of this listener being served now.
    @ivar refused: connections this listener refused since start (limits, rules).
    @ivar answering_busy: connections refused by a limit that wait to be told so.
    @ivar proxied: the listener's endpoint reads a PROXY protocol header before the
        MQTT bytes (C{haproxy:}): connections are admitted once it has come.
    """

    def __init__(
        self,
        broker: Broker | None = None,
        clock: IReactorTime | None = None,
        listener: Listener | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor  # noqa: PLC0415 (installed late)

            clock = reactor
        self.clock: IReactorTime = clock
        self.broker = broker if broker is not None else Broker(clock=clock)
        self.listener = listener if listener is not None else Listener("")
        self.connections = 0
        self.refused = 0
        self.answering_busy = 0
        # A WebSocket listener builds its MQTT protocol after the HTTP upgrade, when
        # the PROXY header has long been read.
        self.proxied = (
            self.listener.protocol == "mqtt"
            and self.listener.endpoint.lower().startswith("haproxy:")
        )
        self._last_refusal_log: float | None = None
        self._refused_logged = 0

    #: At most one "refusing connections" line per this many seconds: a reconnect
    #: storm against a limit must not flood the log.
    refusal_log_interval = 10.0
    #: Connections refused by a limit that may wait at once to be answered "busy";
    #: beyond that (a reconnect storm) they are closed at once, without an answer.
    busy_answers = 100

    def refusal(self, host: str | None) -> str | None:
        """Why a new connection from C{host} may not be served, or None."""
        listener = self.listener
        if not listener.admits(host):
            return "its address is not allowed on this listener"
        if listener.max_connections and self.connections >= listener.max_connections:
            return f"this listener serves {listener.max_connections} connections already"
        limit = self.broker.config.max_connections
        if limit and self.broker.connection_count >= limit:
            return f"the broker serves {limit} connections already"
        return None

    def connection_refused(self, peer: str, why: str) -> None:
        """Count a refused connection, and log it (rate limited)."""
        self.refused += 1
        now = self.clock.seconds()
        if self._last_refusal_log is None or now - self._last_refusal_log >= (
            self.refusal_log_interval
        ):
            _log.warn(
                "Refusing connection from {peer} on {listener}: {why} ({refused} "
                "refused since start, {since} since the last such line)",
                peer=peer,
                listener=self.listener.name,
                why=why,
                refused=self.refused,
                since=self.refused - self._refused_logged,
            )
            self._last_refusal_log = now
            self._refused_logged = self.refused

    def buildProtocol(self, addr: IAddress | None) -> MQTTServerProtocol:
        protocol = MQTTServerProtocol()
        protocol.factory = self
        protocol.callLater = self.clock.callLater  # type: ignore[assignment]
        return protocol
