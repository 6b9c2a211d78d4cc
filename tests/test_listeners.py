# -*- test-case-name: tests.test_listeners -*-
"""
Tests for listeners: L{mqttbroker.listeners} (descriptions and address rules), the
limits and refusals of L{MQTTServerFactory}, and the PROXY protocol (C{haproxy:}
endpoints) over real loopback sockets.

The parsing, rule and limit tests are deterministic (C{StringTransport} with fixed
peer addresses, a C{Clock}); the PROXY tests start a listener in this process on the
real reactor with L{listener_service}, as C{twist mqtt --listen} does, and talk to
it over 127.0.0.1 with headers claiming documentation addresses (RFC 5737).
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import struct
import tempfile
from ipaddress import ip_network
from typing import Any

from twisted.application.service import IService
from twisted.internet import defer, endpoints, protocol, reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import capturedLogs, formatEvent

# What the haproxy: endpoint wraps a listener's factory in (not exported by name).
from twisted.protocols.haproxy._wrapper import HAProxyWrappingFactory
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface import implementer

from mqttbroker.broker import Broker, BrokerConfig
from mqttbroker.codec import Connack, Connect, ReasonCode, decode_all, encode
from mqttbroker.endpoints import listener_service
from mqttbroker.interfaces import IBrokerObserver
from mqttbroker.listeners import Listener, ListenerError, TLSSettings, parse_listener
from mqttbroker.protocol import MQTTServerFactory, MQTTServerProtocol

# -- parse_listener ---------------------------------------------------------------------


class ParseListenerTests(SynchronousTestCase):
    """Every option of a listener description, its default, and every refusal."""

    def test_defaults(self) -> None:
        """An endpoint alone is an MQTT listener without limits, rules or TLS."""
        self.assertEqual(
            parse_listener("tcp:1883"),
            Listener(
                endpoint="tcp:1883",
                protocol="mqtt",
                path="/mqtt",
                max_connections=0,
                allow=(),
                deny=(),
                tls=None,
                identity_as_username=False,
            ),
        )

    def test_endpoint_kept_verbatim(self) -> None:
        """The endpoint's own colons and equals signs belong to Twisted, untouched."""
        listener = parse_listener("  haproxy:tcp:1883:interface=127.0.0.1   protocol=mqtt ")
        self.assertEqual(listener.endpoint, "haproxy:tcp:1883:interface=127.0.0.1")

    def test_every_option(self) -> None:
        """All options at once, each read into its field."""
        listener = parse_listener(
            "tcp:8084 protocol=websocket path=/ws max-connections=50 "
            "allow=10.0.0.0/8,2001:db8::/32 deny=10.1.0.0/16 cert=s.crt key=s.key "
            "ca=ca.crt require-client-cert=yes identity-as-username=on"
        )
        self.assertEqual(listener.protocol, "websocket")
        self.assertEqual(listener.path, "/ws")
        self.assertEqual(listener.max_connections, 50)
        self.assertEqual(listener.allow, (ip_network("10.0.0.0/8"), ip_network("2001:db8::/32")))
        self.assertEqual(listener.deny, (ip_network("10.1.0.0/16"),))
        self.assertEqual(listener.tls, TLSSettings("s.crt", "s.key", "ca.crt", True))
        self.assertTrue(listener.identity_as_username)

    def test_tls_defaults(self) -> None:
        """cert= alone: the key is in the certificate file, no client certificates."""
        self.assertEqual(parse_listener("tcp:8883 cert=both.pem").tls, TLSSettings("both.pem"))

    def test_single_address_and_host_bits(self) -> None:
        """A bare address is a one-address network; host bits after the prefix are cleared."""
        listener = parse_listener("tcp:1 allow=192.0.2.5,::1 deny=10.9.8.7/8")
        self.assertEqual(listener.allow, (ip_network("192.0.2.5/32"), ip_network("::1/128")))
        self.assertEqual(listener.deny, (ip_network("10.0.0.0/8"),))

    def test_yes_and_no_spellings(self) -> None:
        """yes/true/1/on and no/false/0/off, in any case."""
        for word, value in [
            ("yes", True),
            ("TRUE", True),
            ("1", True),
            ("On", True),
            ("no", False),
            ("False", False),
            ("0", False),
            ("OFF", False),
        ]:
            with self.subTest(word=word):
                listener = parse_listener(f"tcp:1 cert=c ca=a require-client-cert={word}")
                assert listener.tls is not None
                self.assertIs(listener.tls.require_client_cert, value)

    def assert_refused(self, text: str, message: str) -> None:
        with self.assertRaises(ListenerError) as caught:
            parse_listener(text)
        self.assertEqual(str(caught.exception), message)

    def test_listener_error_is_value_error(self) -> None:
        """Callers that catch ValueError (option parsing) catch these too."""
        self.assertTrue(issubclass(ListenerError, ValueError))

    def test_empty(self) -> None:
        """Nothing at all, or only blanks."""
        self.assert_refused("", "no endpoint description")
        self.assert_refused("   ", "no endpoint description")

    def test_unknown_option(self) -> None:
        """An unknown key is named, with the known ones."""
        self.assert_refused(
            "tcp:1883 backlog=10",
            "unknown option 'backlog' (known: protocol, path, max-connections, allow, deny, "
            "cert, key, ca, require-client-cert, identity-as-username)",
        )

    def test_key_without_value(self) -> None:
        """A word without '=' or with nothing after it."""
        self.assert_refused("tcp:1883 deny", "'deny': options are written key=value")
        self.assert_refused("tcp:1883 deny=", "'deny=': options are written key=value")

    def test_duplicate(self) -> None:
        """An option given twice is refused rather than one silently winning."""
        self.assert_refused(
            "tcp:1883 deny=10.0.0.0/8 deny=192.0.2.0/24", "option 'deny' given twice"
        )

    def test_bad_protocol(self) -> None:
        self.assert_refused(
            "tcp:1883 protocol=http", "protocol: 'http' is not one of mqtt, websocket"
        )

    def test_bad_path(self) -> None:
        self.assert_refused("tcp:8083 path=mqtt", "path: 'mqtt' does not start with /")

    def test_bad_max_connections(self) -> None:
        self.assert_refused("tcp:1 max-connections=ten", "max-connections: not a whole number")
        self.assert_refused("tcp:1 max-connections=1.5", "max-connections: not a whole number")
        self.assert_refused("tcp:1 max-connections=-1", "max-connections: must not be negative")

    def test_bad_cidr(self) -> None:
        """The faulty part of a list is named, for allow and for deny."""
        self.assert_refused(
            "tcp:1 allow=10.0.0.0/8,10.0.0.300/8",
            "allow: '10.0.0.300/8' is not an address or CIDR network",
        )
        self.assert_refused(
            "tcp:1 deny=10.0.0.0/33", "deny: '10.0.0.0/33' is not an address or CIDR network"
        )
        self.assert_refused(
            "tcp:1 deny=example.com", "deny: 'example.com' is not an address or CIDR network"
        )
        self.assert_refused(
            "tcp:1 allow=10.0.0.0/8,", "allow: '' is not an address or CIDR network"
        )

    def test_tls_options_need_cert(self) -> None:
        """key=, ca= and require-client-cert= mean nothing without cert=."""
        for option in ("key=k.pem", "ca=ca.pem", "require-client-cert=yes"):
            with self.subTest(option=option):
                self.assert_refused(
                    f"tcp:8883 {option}",
                    f"{option.split('=')[0]} needs cert= (TLS on this listener)",
                )

    def test_require_client_cert_needs_ca(self) -> None:
        self.assert_refused(
            "tcp:8883 cert=s.pem require-client-cert=yes",
            "require-client-cert needs ca= (the CAs to verify against)",
        )

    def test_bad_yes_no(self) -> None:
        self.assert_refused(
            "tcp:8883 cert=s.pem ca=ca.pem require-client-cert=maybe",
            "require-client-cert: 'maybe' is neither yes nor no",
        )
        self.assert_refused(
            "tcp:8883 identity-as-username=sure",
            "identity-as-username: 'sure' is neither yes nor no",
        )

    def test_identity_as_username_needs_ca(self) -> None:
        """Without TLS, or with TLS but no client certificates, there is no identity."""
        message = "identity-as-username needs TLS with client certificates (ca=)"
        self.assert_refused("tcp:1883 identity-as-username=yes", message)
        self.assert_refused("tcp:8883 cert=s.pem identity-as-username=yes", message)
        # Explicitly off is fine anywhere.
        self.assertFalse(parse_listener("tcp:1 identity-as-username=no").identity_as_username)

    def test_name(self) -> None:
        """Logs name a listener by its kind (TLS or not) and endpoint."""
        self.assertEqual(parse_listener("tcp:1883").name, "mqtt tcp:1883")
        self.assertEqual(parse_listener("tcp:8883 cert=s.pem").name, "mqtts tcp:8883")
        self.assertEqual(parse_listener("tcp:8083 protocol=websocket").name, "ws tcp:8083")
        self.assertEqual(
            parse_listener("tcp:8084 protocol=websocket cert=s.pem").name, "wss tcp:8084"
        )
        self.assertEqual(parse_listener("unix:/run/mqtt.sock").name, "mqtt unix:/run/mqtt.sock")


# -- Listener.admits ---------------------------------------------------------------------


class AdmitsTests(SynchronousTestCase):
    """Address rules: deny first, then allow when there is any allow rule."""

    def test_no_rules(self) -> None:
        """Without rules every peer is admitted, addressless ones too."""
        listener = parse_listener("tcp:1")
        for host in ("10.0.0.1", "::1", None, "/run/mqtt.sock", "not an address"):
            self.assertTrue(listener.admits(host), host)

    def test_allow_only(self) -> None:
        listener = parse_listener("tcp:1 allow=10.0.0.0/8,192.0.2.7")
        self.assertTrue(listener.admits("10.200.3.4"))
        self.assertTrue(listener.admits("192.0.2.7"))
        self.assertFalse(listener.admits("192.0.2.8"))
        self.assertFalse(listener.admits("11.0.0.1"))
        self.assertFalse(listener.admits("::1"))

    def test_deny_only(self) -> None:
        listener = parse_listener("tcp:1 deny=10.0.0.0/8")
        self.assertFalse(listener.admits("10.0.0.1"))
        self.assertTrue(listener.admits("11.0.0.1"))
        self.assertTrue(listener.admits("2001:db8::1"))

    def test_deny_wins_over_allow(self) -> None:
        """An address in both an allow and a deny network is refused."""
        listener = parse_listener("tcp:1 allow=10.0.0.0/8 deny=10.1.0.0/16")
        self.assertTrue(listener.admits("10.2.0.1"))
        self.assertFalse(listener.admits("10.1.0.1"))
        listener = parse_listener("tcp:1 allow=10.1.2.3 deny=10.0.0.0/8")
        self.assertFalse(listener.admits("10.1.2.3"))

    def test_ipv6(self) -> None:
        listener = parse_listener("tcp6:1 allow=2001:db8::/32 deny=2001:db8:dead::/48")
        self.assertTrue(listener.admits("2001:db8::7"))
        self.assertTrue(listener.admits("2001:DB8:0:0::7"))
        self.assertFalse(listener.admits("2001:db8:dead::7"))
        self.assertFalse(listener.admits("2001:db9::1"))
        self.assertFalse(listener.admits("10.0.0.1"))

    def test_ipv4_mapped(self) -> None:
        """An IPv4 client of a dual-stack socket (::ffff:a.b.c.d) meets the IPv4 rules."""
        denying = parse_listener("tcp6:1 deny=10.0.0.0/8")
        self.assertFalse(denying.admits("::ffff:10.0.0.1"))
        self.assertTrue(denying.admits("::ffff:11.0.0.1"))
        allowing = parse_listener("tcp6:1 allow=10.0.0.0/8")
        self.assertTrue(allowing.admits("::ffff:10.0.0.1"))
        self.assertFalse(allowing.admits("::ffff:11.0.0.1"))

    def test_zone_id(self) -> None:
        """A link-local peer's zone (fe80::1%eth0) does not stop it matching its network."""
        listener = parse_listener("tcp6:1 allow=fe80::/10")
        self.assertTrue(listener.admits("fe80::1%eth0"))
        self.assertTrue(listener.admits("fe80::1%2"))
        self.assertFalse(parse_listener("tcp6:1 deny=fe80::/10").admits("fe80::1%eth0"))

    def test_unix_socket_peer(self) -> None:
        """
        A peer without an IP address (a UNIX socket: no host, or a path) is served
        by deny-only rules, and not by a listener that lists whom it allows.
        """
        for host in (None, "", "/run/mqtt.sock"):
            with self.subTest(host=host):
                self.assertTrue(parse_listener("unix:/s deny=0.0.0.0/0,::/0").admits(host))
                self.assertFalse(parse_listener("unix:/s allow=0.0.0.0/0").admits(host))


# -- MQTTServerFactory: limits and refusals ------------------------------------------------


@implementer(IBrokerObserver)
class RecordingObserver:
    """Records the broker's connection events; fires C{connected} at the first one."""

    def __init__(self) -> None:
        self.connections: list[tuple[str, str]] = []
        self.connected: defer.Deferred[tuple[str, str]] = defer.Deferred()

    def client_connected(
        self,
        client_id: str,
        address: str,
        protocol_level: int,
        clean_start: bool,
        session_present: bool,
    ) -> None:
        self.connections.append((client_id, address))
        if not self.connected.called:
            self.connected.callback((client_id, address))

    def client_disconnected(self, client_id: str, reason: str, clean: bool) -> None:
        pass

    def subscribed(self, client_id: str, topic_filter: str, qos: int) -> None:
        pass

    def unsubscribed(self, client_id: str, topic_filter: str) -> None:
        pass

    def message_published(
        self, client_id: str | None, topic: str, qos: int, retain: bool, size: int
    ) -> None:
        pass

    def message_dropped(self, client_id: str, topic: str, qos: int, reason: str) -> None:
        pass


def _refusal_lines(events: Any) -> list[str]:
    return [
        formatEvent(event)
        for event in events
        if event.get("log_format", "").startswith("Refusing connection")
    ]


class LimitTests(SynchronousTestCase):
    """Connection limits and address rules, on in-memory transports."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.observer = RecordingObserver()
        self.broker = Broker(
            BrokerConfig(max_connections=0), observers=[self.observer], clock=self.clock
        )

    def factory(self, description: str, broker: Broker | None = None) -> MQTTServerFactory:
        return MQTTServerFactory(
            broker or self.broker, clock=self.clock, listener=parse_listener(description)
        )

    def connect(
        self, factory: MQTTServerFactory, host: str = "192.0.2.1", port: int = 40000
    ) -> tuple[MQTTServerProtocol, StringTransport]:
        address: Any = (
            IPv6Address("TCP", host, port) if ":" in host else IPv4Address("TCP", host, port)
        )
        proto = factory.buildProtocol(address)
        transport = StringTransport(peerAddress=address)
        proto.makeConnection(transport)
        return proto, transport

    def hang_up(self, proto: MQTTServerProtocol) -> None:
        proto.connectionLost(Failure(ConnectionDone()))

    def assert_served(self, proto: MQTTServerProtocol, transport: StringTransport) -> None:
        """The connection stays open and a CONNECT on it is answered with success."""
        self.assertFalse(transport.disconnecting)
        proto.dataReceived(encode(Connect(f"c{id(proto)}", 4), 4))
        self.assertEqual(decode_all(transport.value(), 4), [Connack(False, 0)])

    def assert_refused(self, proto: MQTTServerProtocol, transport: StringTransport) -> None:
        """
        Closed at once, without a byte; a CONNECT sent anyway (before the close
        lands) never reaches the broker: no session, no event.
        """
        self.assertTrue(transport.disconnecting)
        sessions, events = dict(self.broker.sessions), list(self.observer.connections)
        proto.dataReceived(encode(Connect("sneaky", 4), 4))
        self.assertEqual(transport.value(), b"")
        self.assertIsNone(proto.connection)
        self.assertEqual(self.broker.sessions, sessions)
        self.assertEqual(self.observer.connections, events)
        self.assertNotIn("sneaky", self.broker.sessions)

    def assert_told_busy(
        self, proto: MQTTServerProtocol, transport: StringTransport, level: int = 4
    ) -> None:
        """
        Refused by a limit, politely: the CONNECT is answered "server unavailable"
        (3.1.1 return code 3, MQTT 5 0x97), then the connection closes; it never
        reaches the broker.
        """
        self.assertFalse(transport.disconnecting)
        sessions, events = dict(self.broker.sessions), list(self.observer.connections)
        proto.dataReceived(encode(Connect("sneaky", level), level))
        busy = 3 if level < 5 else ReasonCode.QUOTA_EXCEEDED
        self.assertEqual(decode_all(transport.value(), level), [Connack(False, busy)])
        self.assertTrue(transport.disconnecting)
        self.assertIsNone(proto.connection)
        self.assertEqual(self.broker.sessions, sessions)
        self.assertEqual(self.observer.connections, events)

    def test_busy_answers(self) -> None:
        """
        An MQTT 5 client is told 0x97; a CONNECT in pieces is waited for; garbage or
        silence (the connect timeout) just closes; past busy_answers waiting at once,
        refused connections are closed without an answer.
        """
        factory = self.factory("tcp:1883 max-connections=1")
        self.assert_served(*self.connect(factory, port=1))
        told = self.connect(factory, port=2)
        self.assert_told_busy(*told, level=5)
        self.hang_up(told[0])
        proto, transport = self.connect(factory, port=3)
        data = encode(Connect("pieces", 4), 4)
        proto.dataReceived(data[:3])
        self.assertEqual(transport.value(), b"")
        proto.dataReceived(data[3:])
        self.assertEqual(decode_all(transport.value(), 4), [Connack(False, 3)])
        self.hang_up(proto)
        proto, transport = self.connect(factory, port=4)
        proto.dataReceived(b"\xff\xff")
        self.assertEqual((transport.value(), transport.disconnecting), (b"", True))
        self.hang_up(proto)
        proto, transport = self.connect(factory, port=5)
        self.clock.advance(self.broker.config.connect_timeout)
        self.assertEqual((transport.value(), transport.disconnecting), (b"", True))
        self.hang_up(proto)
        self.assertEqual(factory.answering_busy, 0)
        factory.busy_answers = 2
        waiting = [self.connect(factory, port=10 + i) for i in range(2)]
        self.assertEqual(factory.answering_busy, 2)
        self.assert_refused(*self.connect(factory, port=20))
        self.hang_up(waiting[0][0])
        self.assertEqual(factory.answering_busy, 1)
        self.assert_told_busy(*self.connect(factory, port=21))

    def test_listener_max_connections(self) -> None:
        """The (N+1)th connection is refused; after one closes, a new one is served."""
        factory = self.factory("tcp:1883 max-connections=2")
        first = self.connect(factory, port=1)
        second = self.connect(factory, port=2)
        self.assert_served(*first)
        self.assert_served(*second)
        third = self.connect(factory, port=3)
        self.assert_told_busy(*third)
        self.assertEqual((factory.connections, factory.refused), (2, 1))
        # The refused connection's close does not count down what it never counted.
        self.hang_up(third[0])
        self.assertEqual(factory.connections, 2)
        self.hang_up(first[0])
        self.assertEqual(factory.connections, 1)
        self.assert_served(*self.connect(factory, port=4))
        self.assertEqual((factory.connections, factory.refused), (2, 1))
        self.assert_told_busy(*self.connect(factory, port=5))
        self.assertEqual(self.broker.connection_count, 2)

    def test_global_max_connections_across_listeners(self) -> None:
        """BrokerConfig.max_connections counts the connections of every listener."""
        broker = Broker(BrokerConfig(max_connections=3), clock=self.clock)
        self.broker = broker
        tcp = self.factory("tcp:1883", broker)
        ws = self.factory("tcp:8083 protocol=websocket", broker)
        a = self.connect(tcp, port=1)
        self.connect(tcp, port=2)
        self.connect(ws, port=3)
        self.assertEqual(broker.connection_count, 3)
        with capturedLogs() as events:
            self.assert_told_busy(*self.connect(ws, port=4))
            self.assert_told_busy(*self.connect(tcp, port=5))
        self.assertEqual((tcp.refused, ws.refused), (1, 1))
        self.assertEqual(
            _refusal_lines(events),
            [
                "Refusing connection from 192.0.2.1:4 on ws tcp:8083: the broker serves 3 "
                "connections already (1 refused since start, 1 since the last such line)",
                "Refusing connection from 192.0.2.1:5 on mqtt tcp:1883: the broker serves 3 "
                "connections already (1 refused since start, 1 since the last such line)",
            ],
        )
        self.hang_up(a[0])
        self.assert_served(*self.connect(ws, port=6))
        self.assertEqual((tcp.connections, ws.connections, broker.connection_count), (1, 2, 3))

    def test_listener_limit_below_global(self) -> None:
        """The listener's own limit is reported when it is the one reached."""
        broker = Broker(BrokerConfig(max_connections=10), clock=self.clock)
        self.broker = broker
        factory = self.factory("tcp:1883 max-connections=1", broker)
        self.connect(factory)
        self.assertEqual(factory.refusal("192.0.2.1"), "this listener serves 1 connections already")

    def test_deny(self) -> None:
        """A denied address is refused; others on the same listener are served."""
        factory = self.factory("tcp:1883 deny=192.0.2.0/24")
        with capturedLogs() as events:
            self.assert_refused(*self.connect(factory, "192.0.2.99", 5555))
        self.assert_served(*self.connect(factory, "198.51.100.1"))
        self.assertEqual(
            _refusal_lines(events),
            [
                "Refusing connection from 192.0.2.99:5555 on mqtt tcp:1883: its address is "
                "not allowed on this listener (1 refused since start, 1 since the last such "
                "line)"
            ],
        )
        self.assertEqual((factory.connections, factory.refused), (1, 1))

    def test_allow(self) -> None:
        """Only allowed addresses are served, IPv4-mapped IPv6 ones included."""
        factory = self.factory("tcp6:1883 allow=198.51.100.0/24,2001:db8::/32")
        self.assert_served(*self.connect(factory, "198.51.100.1"))
        self.assert_served(*self.connect(factory, "::ffff:198.51.100.2"))
        self.assert_served(*self.connect(factory, "2001:db8::1"))
        self.assert_refused(*self.connect(factory, "203.0.113.1"))
        self.assert_refused(*self.connect(factory, "::1"))
        self.assertEqual((factory.connections, factory.refused), (3, 2))

    def test_rules_checked_before_limits(self) -> None:
        """A denied client is told so even when the listener is also full."""
        factory = self.factory("tcp:1883 max-connections=1 deny=203.0.113.0/24")
        self.connect(factory)
        self.assertEqual(
            factory.refusal("203.0.113.5"), "its address is not allowed on this listener"
        )

    def test_unix_peer(self) -> None:
        """A UNIX-socket client has no address: served unless allow rules exist."""
        for description, served in [
            ("unix:/tmp/m.sock", True),
            ("unix:/tmp/m.sock deny=0.0.0.0/0", True),
            ("unix:/tmp/m.sock allow=127.0.0.1", False),
        ]:
            with self.subTest(description=description):
                factory = self.factory(description)
                proto = factory.buildProtocol(UNIXAddress(None))
                transport = StringTransport(peerAddress=UNIXAddress(None))  # type: ignore[arg-type]
                proto.makeConnection(transport)
                if served:
                    self.assert_served(proto, transport)
                else:
                    self.assert_refused(proto, transport)

    def test_refusal_log_rate_limited(self) -> None:
        """
        A reconnect storm against a limit logs one line per refusal_log_interval,
        with the count in between; every refusal is counted.
        """
        factory = self.factory("tcp:1883 deny=203.0.113.0/24")
        self.assertEqual(factory.refusal_log_interval, 10.0)
        with capturedLogs() as events:
            for port in range(1, 6):
                self.connect(factory, "203.0.113.9", port)
            self.clock.advance(9.9)
            self.connect(factory, "203.0.113.9", 6)
            self.clock.advance(0.1)
            self.connect(factory, "203.0.113.9", 7)
            self.connect(factory, "203.0.113.9", 8)
        self.assertEqual(factory.refused, 8)
        self.assertEqual(
            _refusal_lines(events),
            [
                "Refusing connection from 203.0.113.9:1 on mqtt tcp:1883: its address is "
                "not allowed on this listener (1 refused since start, 1 since the last such "
                "line)",
                "Refusing connection from 203.0.113.9:7 on mqtt tcp:1883: its address is "
                "not allowed on this listener (7 refused since start, 6 since the last such "
                "line)",
            ],
        )
        [first, _] = [e for e in events if e.get("log_format", "").startswith("Refusing")]
        # Structured fields, for log processors.
        self.assertEqual(first["log_level"].name, "warn")
        self.assertEqual(first["listener"], "mqtt tcp:1883")
        self.assertEqual(first["peer"], "203.0.113.9:1")


# -- PROXY protocol ------------------------------------------------------------------------

#: The client a load balancer claims, and the address it says the client reached.
CLIENT_HOST, CLIENT_PORT = "203.0.113.7", 56324
V1_HEADER = f"PROXY TCP4 {CLIENT_HOST} 10.0.0.1 {CLIENT_PORT} 1883\r\n".encode()


def proxy_v2_header(
    source: str = CLIENT_HOST,
    source_port: int = CLIENT_PORT,
    destination: str = "10.0.0.1",
    destination_port: int = 1883,
) -> bytes:
    """A PROXY protocol v2 header (PROXY command, TCP over IPv4 or IPv6), by hand."""
    family = socket.AF_INET6 if ":" in source else socket.AF_INET
    addresses = (
        socket.inet_pton(family, source)
        + socket.inet_pton(family, destination)
        + struct.pack("!HH", source_port, destination_port)
    )
    # Version 2, command PROXY; then the address family (1: INET, 2: INET6) and
    # transport (1: STREAM) nibbles; then the length of what follows.
    family_byte = 0x11 if family == socket.AF_INET else 0x21
    return (
        b"\r\n\r\n\x00\r\nQUIT\n"
        + bytes([0x21, family_byte])
        + struct.pack("!H", len(addresses))
        + addresses
    )


class ProxyHeaderUnitTests(SynchronousTestCase):
    """Twisted's PROXY wrapper in front of the MQTT factory, on in-memory transports."""

    def setUp(self) -> None:
        self.clock = Clock()
        self.observer = RecordingObserver()
        self.broker = Broker(BrokerConfig(connect_timeout=5), [self.observer], self.clock)

    def connect(self, description: str) -> tuple[Any, StringTransport, MQTTServerFactory]:
        factory = MQTTServerFactory(
            self.broker, clock=self.clock, listener=parse_listener(description)
        )
        socket_peer = IPv4Address("TCP", "127.0.0.1", 40001)
        wrapper = HAProxyWrappingFactory(factory).buildProtocol(socket_peer)
        transport = StringTransport(peerAddress=socket_peer)
        wrapper.makeConnection(transport)
        return wrapper, transport, factory

    def test_peer_from_v1_header(self) -> None:
        """The connection's peer and the event's address are the proxied client's."""
        wrapper, transport, factory = self.connect("haproxy:tcp:1883")
        wrapper.dataReceived(V1_HEADER + encode(Connect("p1", 4), 4))
        self.assertEqual(decode_all(transport.value(), 4), [Connack(False, 0)])
        self.assertEqual(wrapper.wrappedProtocol.connection.peer, "203.0.113.7:56324")
        self.assertEqual(self.observer.connections, [("p1", "203.0.113.7:56324")])
        self.assertEqual(factory.connections, 1)

    def test_peer_from_v1_header_tcp6(self) -> None:
        wrapper, transport, _ = self.connect("haproxy:tcp:1883 deny=2001:db8:bad::/48")
        wrapper.dataReceived(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 1883\r\n")
        wrapper.dataReceived(encode(Connect("p6", 4), 4))
        self.assertEqual(decode_all(transport.value(), 4), [Connack(False, 0)])
        [(client_id, address)] = self.observer.connections
        host, port = address.rsplit(":", 1)
        self.assertEqual((client_id, host.strip("[]"), port), ("p6", "2001:db8::7", "4000"))

    def test_header_and_connect_in_pieces(self) -> None:
        """
        The header split over reads, then CONNECT a byte at a time. (Twisted's
        wrapper needs the first read to hold the 16-byte v2 signature.)
        """
        wrapper, transport, _ = self.connect("haproxy:tcp:1883")
        data = proxy_v2_header() + encode(Connect("p2", 4), 4)
        wrapper.dataReceived(data[:16])
        for i in range(16, len(data)):
            wrapper.dataReceived(data[i : i + 1])
        self.assertEqual(decode_all(transport.value(), 4), [Connack(False, 0)])
        self.assertEqual(self.observer.connections, [("p2", "203.0.113.7:56324")])

    def test_deny_applies_to_proxied_address(self) -> None:
        """deny= matches the client the header names, not the balancer (127.0.0.1)."""
        wrapper, transport, factory = self.connect("haproxy:tcp:1883 deny=203.0.113.0/24")
        with capturedLogs() as events:
            wrapper.dataReceived(V1_HEADER + encode(Connect("p3", 4), 4))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.broker.sessions, {})
        self.assertEqual((factory.connections, factory.refused), (0, 1))
        self.assertEqual(
            _refusal_lines(events),
            [
                "Refusing connection from 203.0.113.7:56324 on mqtt haproxy:tcp:1883: its "
                "address is not allowed on this listener (1 refused since start, 1 since "
                "the last such line)"
            ],
        )

    def test_allow_applies_to_proxied_address(self) -> None:
        """allow=127.0.0.1 does not let every proxied client in."""
        wrapper, transport, factory = self.connect("haproxy:tcp:1883 allow=127.0.0.1")
        wrapper.dataReceived(V1_HEADER + encode(Connect("p4", 4), 4))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.refused, 1)

    def test_limit_counts_after_header(self) -> None:
        """max-connections counts admitted clients; the refused one is named by its address."""
        first, _, factory = self.connect("haproxy:tcp:1883 max-connections=1")
        first.dataReceived(V1_HEADER + encode(Connect("a", 4), 4))
        self.assertEqual(factory.connections, 1)
        wrapper = HAProxyWrappingFactory(factory).buildProtocol(None)
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40002))
        wrapper.makeConnection(transport)
        with capturedLogs() as events:
            wrapper.dataReceived(proxy_v2_header("198.51.100.3", 999) + encode(Connect("b", 4), 4))
        # Told the broker is full (return code 3), then closed.
        self.assertEqual(decode_all(transport.value(), 4), [Connack(False, 3)])
        self.assertTrue(transport.disconnecting)
        self.assertIn("from 198.51.100.3:999 on", _refusal_lines(events)[0])
        self.assertNotIn("b", self.broker.sessions)
        first.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(factory.connections, 0)

    def test_no_data_after_header_times_out(self) -> None:
        """A connection that never gets past the header is closed at the connect timeout."""
        wrapper, transport, factory = self.connect("haproxy:tcp:1883")
        wrapper.dataReceived(V1_HEADER)
        self.clock.advance(4.9)
        self.assertFalse(transport.disconnecting)
        self.clock.advance(0.2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(factory.connections, 0)

    def test_silent_connection_times_out(self) -> None:
        """A connection that sends nothing at all, not even the header, is closed too."""
        _, transport, _ = self.connect("haproxy:tcp:1883")
        self.clock.advance(5.1)
        self.assertTrue(transport.disconnecting)

    def test_not_a_proxy_listener(self) -> None:
        """Without haproxy: the MQTT protocol is admitted at once, by the socket peer."""
        factory = MQTTServerFactory(
            self.broker, clock=self.clock, listener=parse_listener("tcp:1883")
        )
        self.assertFalse(factory.proxied)
        self.assertTrue(MQTTServerFactory(listener=parse_listener("HAProxy:tcp:1")).proxied)
        # The WebSocket layer reads the header before it builds the MQTT protocol.
        websocket = parse_listener("haproxy:tcp:1 protocol=websocket")
        self.assertFalse(MQTTServerFactory(listener=websocket).proxied)


class _Client(protocol.Protocol):
    """Sends what it is given on connect; collects what comes back and the close."""

    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting
        self.data = b""
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.received: defer.Deferred[bytes] | None = None

    def connectionMade(self) -> None:
        self.transport.write(self.greeting)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        waiting, self.received = self.received, None
        if waiting is not None:
            waiting.callback(self.data)

    def connectionLost(self, reason: object = None) -> None:
        self.closed.callback(None)
        waiting, self.received = self.received, None
        if waiting is not None:
            waiting.callback(self.data)

    def wait_for(self, marker: bytes) -> defer.Deferred[bytes]:
        """Fires once C{marker} was received (or the connection closed)."""

        @defer.inlineCallbacks
        def waiting() -> Any:
            while marker not in self.data and not self.closed.called:
                self.received = defer.Deferred()
                yield self.received
            return self.data

        return waiting()


class ProxyProtocolIntegrationTests(TestCase):
    """
    A C{haproxy:tcp:0} listener on the real reactor, as C{twist mqtt --listen}
    starts it, with clients on real loopback sockets that send PROXY headers.
    """

    timeout = 20

    @defer.inlineCallbacks
    def start(self, options: str = "") -> Any:
        """Start the listener; returns its port number."""
        self.observer = RecordingObserver()
        self.broker = Broker(BrokerConfig(), observers=[self.observer])
        service: IService
        service, _ = listener_service(
            parse_listener(f"haproxy:tcp:0:interface=127.0.0.1 {options}"), self.broker, reactor
        )
        listening: defer.Deferred[Any] = defer.Deferred()

        def got_port(port: Any) -> Any:
            listening.callback(port)
            return port  # stopService stops it

        service.startService()
        self.addCleanup(service.stopService)
        service._waitingForPort.addCallback(got_port)  # type: ignore[attr-defined]
        port = yield listening
        return port.getHost().port

    @defer.inlineCallbacks
    def open(self, port: int, greeting: bytes) -> Any:
        client = _Client(greeting)
        yield endpoints.connectProtocol(
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port), client
        )
        self.addCleanup(lambda: client.transport.abortConnection() or client.closed)
        return client

    @defer.inlineCallbacks
    def assert_connects_as_client(self, header: bytes, options: str = "") -> Any:
        port = yield self.start(options)
        client = yield self.open(port, header + encode(Connect("proxied", 4), 4))
        data = yield client.wait_for(b"\x20\x02")
        self.assertEqual(decode_all(data, 4), [Connack(False, 0)])
        self.assertEqual(self.observer.connections, [("proxied", "203.0.113.7:56324")])
        link = self.broker.sessions["proxied"].link
        self.assertEqual(link.peer, "203.0.113.7:56324")  # type: ignore[union-attr]

    def test_v1_header(self) -> None:
        """PROXY v1: the connection's peer and the event are the client's, not 127.0.0.1."""
        return self.assert_connects_as_client(V1_HEADER)  # type: ignore[no-any-return]

    def test_v2_header(self) -> None:
        """The same with a binary PROXY v2 header."""
        return self.assert_connects_as_client(proxy_v2_header())  # type: ignore[no-any-return]

    def test_allow_matches_proxied_address(self) -> None:
        """allow= is matched against the proxied address (127.0.0.1 is not in it)."""
        return self.assert_connects_as_client(V1_HEADER, "allow=203.0.113.0/24")  # type: ignore[no-any-return]

    @defer.inlineCallbacks
    def test_deny_matches_proxied_address(self) -> Any:
        """deny=203.0.113.0/24 refuses that client although the socket peer is 127.0.0.1."""
        port = yield self.start("deny=203.0.113.0/24")
        with capturedLogs() as events:
            client = yield self.open(port, proxy_v2_header() + encode(Connect("denied", 4), 4))
            yield client.closed
        self.assertEqual(client.data, b"")
        self.assertEqual(self.broker.sessions, {})
        self.assertEqual(self.observer.connections, [])
        [line] = _refusal_lines(events)
        self.assertIn("from 203.0.113.7:56324 on mqtt haproxy:tcp:0:interface=127.0.0.1", line)

    @defer.inlineCallbacks
    def test_no_header_closed(self) -> Any:
        """A client that speaks MQTT straight away, without a PROXY header, is closed."""
        port = yield self.start()
        client = yield self.open(port, encode(Connect("direct", 4), 4))
        yield client.closed
        self.assertEqual(client.data, b"")
        self.assertEqual(self.broker.sessions, {})

    @defer.inlineCallbacks
    def test_websocket_behind_proxy(self) -> Any:
        """A WebSocket listener behind PROXY sees the client's address too."""
        port = yield self.start("protocol=websocket")
        key = base64.b64encode(os.urandom(16))
        upgrade = (
            b"GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
            b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        )
        client = yield self.open(port, V1_HEADER + upgrade)
        data = yield client.wait_for(b"\r\n\r\n")
        self.assertTrue(data.startswith(b"HTTP/1.1 101"), data)
        client.data = b""
        client.transport.write(_masked_binary_frame(encode(Connect("ws-proxied", 4), 4)))
        connected = yield self.observer.connected
        self.assertEqual(connected, ("ws-proxied", "203.0.113.7:56324"))
        # The CONNACK comes back as one binary frame.
        data = yield client.wait_for(b"\x20\x02\x00\x00")
        self.assertEqual(data, b"\x82\x04\x20\x02\x00\x00")

    @defer.inlineCallbacks
    def test_websocket_behind_proxy_denied(self) -> Any:
        """deny= on a WebSocket listener behind PROXY matches the proxied address."""
        port = yield self.start("protocol=websocket deny=203.0.113.0/24")
        upgrade = (
            b"GET /mqtt HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: mqtt\r\n\r\n"
        )
        with capturedLogs() as events:
            client = yield self.open(port, V1_HEADER + upgrade)
            yield client.wait_for(b"\r\n\r\n")
            # Refused at the WebSocket open: a close frame comes, no CONNACK.
            data = yield client.wait_for(b"\x88")
            self.assertIn(b"\r\n\r\n\x88", data)
            # Answer the close, so the server drops the connection now.
            client.transport.write(b"\x88\x80" + os.urandom(4))
            yield client.closed
        self.assertEqual(self.broker.sessions, {})
        [line] = _refusal_lines(events)
        self.assertIn("from 203.0.113.7:56324 on ws haproxy:tcp:0", line)


def _masked_binary_frame(payload: bytes) -> bytes:
    """One final binary WebSocket frame, masked as a client must send it (RFC 6455 5.3)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return bytes([0x82, 0x80 | len(payload)]) + mask + masked


class UnixListenerTests(TestCase):
    """A Unix socket listener (C{unix:PATH}) on the real reactor serves MQTT."""

    timeout = 20

    @defer.inlineCallbacks
    def test_unix_socket(self) -> Any:
        """CONNECT over a Unix socket gets its CONNACK; the peer is named by the socket."""
        directory = tempfile.mkdtemp(prefix="mqttbroker-unix-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "mqtt.sock")
        observer = RecordingObserver()
        broker = Broker(BrokerConfig(), observers=[observer])
        service, _ = listener_service(parse_listener(f"unix:{path}:mode=600"), broker, reactor)
        service.startService()
        self.addCleanup(service.stopService)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        client = _Client(encode(Connect("local", 4), 4))
        yield endpoints.connectProtocol(endpoints.UNIXClientEndpoint(reactor, path), client)
        self.addCleanup(lambda: client.transport.abortConnection() or client.closed)
        data = yield client.wait_for(b"\x20\x02")
        self.assertEqual(decode_all(data, 4), [Connack(False, 0)])
        self.assertEqual([name for name, _ in observer.connections], ["local"])
