# -*- test-case-name: tests.test_protocol -*-
"""
Tests for L{mqttbroker.protocol}: the Twisted adapter's handshake, driven through a
C{StringTransport} and a C{Clock} (no sockets, no sleeping), and once over a real
loopback socket.
"""

from __future__ import annotations

from twisted.internet import defer, endpoints, protocol, reactor
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ITCPTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from mqttbroker.broker import Broker, BrokerConfig
from mqttbroker.codec import (
    Connack,
    Connect,
    ConnectReturnCode,
    Disconnect,
    Pingreq,
    Pingresp,
    PropertyId,
    ReasonCode,
    decode_all,
    encode,
)
from mqttbroker.protocol import MQTTServerFactory, MQTTServerProtocol


def _connected(max_packet_size: int = 1024) -> tuple[MQTTServerProtocol, StringTransport, Clock]:
    clock = Clock()
    broker = Broker(BrokerConfig(max_packet_size=max_packet_size, connect_timeout=5))
    factory = MQTTServerFactory(broker, clock=clock)
    proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 12345))
    transport = StringTransport()
    proto.makeConnection(transport)
    return proto, transport, clock


class HandshakeTests(SynchronousTestCase):
    """The CONNECT handshake and what may follow it."""

    def test_connect_accepted_each_level(self) -> None:
        """A CONNECT at levels 3, 4 and 5 gets a success CONNACK of the same level."""
        for level in (3, 4, 5):
            with self.subTest(level=level):
                proto, transport, _ = _connected()
                proto.dataReceived(encode(Connect("c1", level, keep_alive=30), level))
                [connack] = decode_all(transport.value(), level)
                assert isinstance(connack, Connack)
                self.assertEqual((connack.session_present, connack.reason_code), (False, 0))
                self.assertFalse(transport.disconnecting)

    def test_connect_byte_at_a_time(self) -> None:
        """A CONNECT that arrives one byte at a time is answered once, when complete."""
        proto, transport, _ = _connected()
        data = encode(Connect("slow", 4), 4)
        for i in range(len(data)):
            self.assertEqual(transport.value(), b"")
            proto.dataReceived(data[i : i + 1])
        self.assertEqual(decode_all(transport.value(), 4), [Connack(False, 0)])

    def test_ping(self) -> None:
        """PINGREQ is answered with PINGRESP."""
        proto, transport, _ = _connected()
        proto.dataReceived(encode(Connect("c", 4), 4) + encode(Pingreq(), 4))
        self.assertEqual(decode_all(transport.value(), 4), [Connack(False, 0), Pingresp()])

    def test_disconnect_closes(self) -> None:
        """DISCONNECT makes the server close the connection."""
        proto, transport, _ = _connected()
        proto.dataReceived(encode(Connect("c", 4), 4) + encode(Disconnect(), 4))
        self.assertTrue(transport.disconnecting)

    def test_first_packet_not_connect(self) -> None:
        """A PUBLISH before CONNECT closes the connection without an answer."""
        proto, transport, _ = _connected()
        proto.dataReceived(b"\x30\xff\xff\xff\x7f")
        self.assertEqual(transport.value(), b"")
        self.assertTrue(transport.disconnecting)

    def test_unsupported_level_v3_answer(self) -> None:
        """An unknown protocol level gets CONNACK return code 1, then the close."""
        proto, transport, _ = _connected()
        proto.dataReceived(bytes.fromhex("100d00044d51545406020000000163"))
        self.assertEqual(
            decode_all(transport.value(), 4),
            [Connack(False, ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION)],
        )
        self.assertTrue(transport.disconnecting)

    def test_malformed_v5_connect_gets_connack_reason(self) -> None:
        """A v5 CONNECT with the reserved flag set gets CONNACK 0x81 and a close."""
        proto, transport, _ = _connected()
        proto.dataReceived(bytes.fromhex("100e00044d5154540503000000000163"))
        [connack] = decode_all(transport.value(), 5)
        assert isinstance(connack, Connack)
        self.assertEqual(connack.reason_code, ReasonCode.MALFORMED_PACKET)
        # MQTT 5 clients are told why, in a Reason String naming the field.
        self.assertIn("reserved connect flag", connack.properties[PropertyId.REASON_STRING])
        self.assertTrue(transport.disconnecting)

    def test_too_large_after_connect_v5(self) -> None:
        """A v5 packet over the maximum size gets DISCONNECT 0x95 before its body comes."""
        proto, transport, _ = _connected(max_packet_size=100)
        proto.dataReceived(encode(Connect("c", 5), 5))
        transport.clear()
        proto.dataReceived(b"\x30\xff\xff\xff\x7f")
        [disconnect] = decode_all(transport.value(), 5)
        assert isinstance(disconnect, Disconnect)
        self.assertEqual(disconnect.reason_code, ReasonCode.PACKET_TOO_LARGE)
        self.assertTrue(transport.disconnecting)

    def test_second_connect_closes(self) -> None:
        """A second CONNECT is a protocol violation that closes the connection."""
        proto, transport, _ = _connected()
        proto.dataReceived(encode(Connect("c", 4), 4) * 2)
        self.assertEqual(decode_all(transport.value(), 4), [Connack(False, 0)])
        self.assertTrue(transport.disconnecting)


class TimeoutTests(SynchronousTestCase):
    """Timers, driven by a Clock."""

    def test_connect_timeout(self) -> None:
        """A connection that sends no CONNECT is closed after the connect timeout."""
        _, transport, clock = _connected()
        clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.2)
        self.assertTrue(transport.disconnecting)

    def test_keep_alive_one_and_a_half(self) -> None:
        """A silent client is closed after 1.5 times its keep alive, not before."""
        proto, transport, clock = _connected()
        proto.dataReceived(encode(Connect("c", 4, keep_alive=10), 4))
        clock.advance(14.9)
        self.assertFalse(transport.disconnecting)
        proto.dataReceived(encode(Pingreq(), 4))
        clock.advance(14.9)
        self.assertFalse(transport.disconnecting)
        clock.advance(0.2)
        self.assertTrue(transport.disconnecting)


class _Collect(protocol.Protocol):
    def __init__(self) -> None:
        self.data = b""
        self.closed: defer.Deferred[None] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: object = None) -> None:
        self.closed.callback(None)


class LoopbackTests(TestCase):
    """The factory behind a real TCP listener on 127.0.0.1."""

    @defer.inlineCallbacks
    def test_connect_ping_disconnect(self) -> defer.Generator[defer.Deferred[object], object, None]:
        """Over a real socket: CONNECT, PINGREQ and DISCONNECT are served."""
        port = yield endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            MQTTServerFactory()
        )
        self.addCleanup(port.stopListening)
        client = _Collect()
        yield endpoints.connectProtocol(
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), client
        )
        client.transport.write(
            encode(Connect("loop", 4), 4) + encode(Pingreq(), 4) + encode(Disconnect(), 4)
        )
        yield client.closed
        self.assertEqual(decode_all(client.data, 4), [Connack(False, 0), Pingresp()])


class NoDelayTests(SynchronousTestCase):
    """Nagle's algorithm on TCP connections."""

    def _nodelay(self, config: BrokerConfig) -> object:
        factory = MQTTServerFactory(Broker(config), clock=Clock())
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = _TCPStringTransport()
        proto.makeConnection(transport)
        return transport.nodelay

    def test_nodelay_by_default(self) -> None:
        """TCP connections get TCP_NODELAY unless the configuration says otherwise."""
        self.assertIs(self._nodelay(BrokerConfig()), True)
        self.assertIs(self._nodelay(BrokerConfig(tcp_nodelay=False)), None)


@implementer(ITCPTransport)
class _TCPStringTransport(StringTransport):
    """A StringTransport that records setTcpNoDelay, as a TCP transport has it."""

    nodelay: bool | None = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.nodelay = enabled
