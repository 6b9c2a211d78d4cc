# -*- test-case-name: tests.test_connection -*-
"""
Tests for L{mqttbroker.connection}: the per-connection rules (CONNECT first, connect
timeout, protocol levels, client identifiers, keep alive, PINGREQ, DISCONNECT,
packets a client must not send) through L{BrokerHarness}, misbehaving clients that
must not disturb the others, and L{ServerConnection} on its own over a recording
output.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from mqttbroker.broker import Broker, BrokerConfig
from mqttbroker.codec import (
    Auth,
    Connack,
    Connect,
    ConnectReturnCode,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    PropertyId,
    Publish,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Will,
    decode_all,
    encode,
)
from mqttbroker.connection import ServerConnection, State
from mqttbroker.interfaces import IClientLink
from mqttbroker.session import Message
from mqttbroker.testing import BrokerHarness, subscribe
from mqttbroker.testing import publish_shape as shape

# -- helpers -----------------------------------------------------------------------------


def raw_connect(level: int, name: bytes = b"MQTT", client_id: bytes = b"c") -> bytes:
    """A CONNECT with any protocol name and level byte (clean session, keep alive 0)."""
    body = (
        len(name).to_bytes(2, "big")
        + name
        + bytes((level, 0x02))
        + b"\x00\x00"
        + len(client_id).to_bytes(2, "big")
        + client_id
    )
    return bytes((0x10, len(body))) + body


# -- CONNECT --------------------------------------------------------------------------------


class ConnectTests(SynchronousTestCase):
    """The CONNECT handshake at levels 3, 4 and 5."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()

    def test_connect_accepted(self) -> None:
        """A valid CONNECT is answered with CONNACK 0 at the client's level [MQTT-3.2.0-1]."""
        for level in (3, 4, 5):
            with self.subTest(level=level):
                client = self.harness.client(level)
                client.send(Connect(f"c{level}", level))
                [connack] = client.received()
                assert isinstance(connack, Connack)
                self.assertEqual((connack.session_present, connack.reason_code), (False, 0))
                self.assertFalse(client.closed_by_server)
                self.assertIs(client.protocol.connection.state, State.CONNECTED)  # type: ignore[union-attr]

    def test_connect_must_be_first(self) -> None:
        """Any packet other than CONNECT first closes the connection unanswered [MQTT-3.1.0-1]."""
        for first in (
            Publish("t", b"x"),
            Subscribe(1, (Subscription("t", 0),)),
            Pingreq(),
            Disconnect(),
        ):
            with self.subTest(first=type(first).__name__):
                client = self.harness.client()
                client.send(first)
                self.assertTrue(client.closed_by_server)
                self.assertEqual(client.transport.value(), b"")
        self.assertEqual(self.harness.broker.sessions, {})

    def test_connect_timeout(self) -> None:
        """No CONNECT within connect_timeout: closed, not before, and unanswered."""
        client = self.harness.client()
        self.harness.clock.advance(9.9)
        self.assertFalse(client.closed_by_server)
        self.harness.clock.advance(0.2)
        self.assertTrue(client.closed_by_server)
        self.assertEqual(client.transport.value(), b"")

    def test_connect_timeout_configurable(self) -> None:
        """The connect timeout follows BrokerConfig.connect_timeout."""
        harness = BrokerHarness(BrokerConfig(connect_timeout=2))
        client = harness.client()
        harness.clock.advance(1.9)
        self.assertFalse(client.closed_by_server)
        harness.clock.advance(0.2)
        self.assertTrue(client.closed_by_server)

    def test_half_connect_closed_by_connect_timeout(self) -> None:
        """A CONNECT that never completes is closed by the connect timeout."""
        client = self.harness.client()
        client.send_bytes(encode(Connect("c", 4), 4)[:5])
        self.harness.clock.advance(10.1)
        self.assertTrue(client.closed_by_server)

    def test_connect_timeout_not_extended_by_trickle(self) -> None:
        """Bytes of an unfinished CONNECT do not extend the connect timeout (a total)."""
        client = self.harness.client()
        data = encode(Connect("slowloris", 4), 4)
        client.send_bytes(data[:3])
        self.harness.clock.advance(6)
        client.send_bytes(data[3:4])
        self.harness.clock.advance(4.1)
        self.assertTrue(
            client.closed_by_server,
            "still open 10.1 s after it was opened, without a CONNECT",
        )

    def test_connect_within_timeout_cancels_it(self) -> None:
        """Once CONNECT arrives (keep alive 0) no timer closes the connection."""
        client = self.harness.client()
        self.harness.clock.advance(9)
        client.send(Connect("c", 4))
        self.harness.clock.advance(10_000)
        self.assertFalse(client.closed_by_server)

    def test_unsupported_protocol_level(self) -> None:
        """An unsupported level gets CONNACK return code 1, then the close [MQTT-3.1.2-2]."""
        for level in (0, 1, 2, 6, 255):
            with self.subTest(level=level):
                client = self.harness.client()
                client.send_bytes(raw_connect(level))
                self.assertEqual(
                    decode_all(client.transport.value(), 4),
                    [Connack(False, ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION)],
                )
                self.assertTrue(client.closed_by_server)
        self.assertEqual(self.harness.broker.sessions, {})

    def test_empty_client_id_generated(self) -> None:
        """An empty client id with clean session 1 gets a unique server-made id [MQTT-3.1.3-6]."""
        first, connack1 = self.harness.connect("")
        second, connack2 = self.harness.connect("")
        self.assertEqual((connack1, connack2), (Connack(False, 0), Connack(False, 0)))
        ids = set(self.harness.broker.sessions)
        self.assertEqual(len(ids), 2)
        self.assertNotIn("", ids)
        self.assertFalse(first.closed_by_server or second.closed_by_server)

    def test_empty_client_id_without_clean_session(self) -> None:
        """Empty id with clean session 0: CONNACK 2, then close [MQTT-3.1.3-8], [MQTT-3.1.3-9]."""
        client = self.harness.client()
        client.send(Connect("", 4, clean_start=False))
        self.assertEqual(client.received(), [Connack(False, ConnectReturnCode.IDENTIFIER_REJECTED)])
        self.assertTrue(client.closed_by_server)
        self.assertEqual(self.harness.broker.sessions, {})

    def test_level3_empty_client_id_refused(self) -> None:
        """MQTT 3.1 requires a client id: an empty one gets CONNACK 2 and the close."""
        client = self.harness.client(3)
        client.send(Connect("", 3, clean_start=True))
        self.assertEqual(client.received(), [Connack(False, ConnectReturnCode.IDENTIFIER_REJECTED)])
        self.assertTrue(client.closed_by_server)

    def test_level5_assigned_client_id(self) -> None:
        """At level 5 an empty client id is assigned and returned in CONNACK."""
        _, connack = self.harness.connect("", level=5, clean_start=False)
        assigned = connack.properties.get(PropertyId.ASSIGNED_CLIENT_IDENTIFIER)
        self.assertTrue(assigned)
        self.assertIn(assigned, self.harness.broker.sessions)
        self.assertEqual(connack.reason_code, 0)

    def test_second_connect_closes(self) -> None:
        """A second CONNECT is a protocol violation: closed [MQTT-3.1.0-2]."""
        client, _ = self.harness.connect("c")
        client.send(Connect("c", 4))
        self.assertEqual(client.received(), [])
        self.assertTrue(client.closed_by_server)
        self.assertNotIn("c", self.harness.broker.sessions)

    def test_second_connect_level5(self) -> None:
        """At level 5 a second CONNECT gets DISCONNECT 0x82 (protocol error), then the close."""
        client, _ = self.harness.connect("c", level=5)
        client.send(Connect("c", 5))
        self.assertEqual(client.received(), [Disconnect(ReasonCode.PROTOCOL_ERROR)])
        self.assertTrue(client.closed_by_server)


# -- keep alive, PINGREQ, DISCONNECT ------------------------------------------------------------


class KeepAliveTests(SynchronousTestCase):
    """Keep alive is enforced at 1.5 times the client's value [MQTT-3.1.2-24]."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.clock = self.harness.clock

    def test_closed_after_one_and_a_half(self) -> None:
        """Not closed at 1.49 x keep alive, closed after 1.5 x [MQTT-3.1.2-24]."""
        client, _ = self.harness.connect("c", keep_alive=100)
        self.clock.advance(149)
        self.assertFalse(client.closed_by_server)
        self.clock.advance(1.01)
        self.assertTrue(client.closed_by_server)
        self.assertEqual(client.received(), [])
        self.assertNotIn("c", self.harness.broker.sessions)

    def test_any_packet_resets(self) -> None:
        """Every packet from the client restarts the keep-alive period."""
        client, _ = self.harness.connect("c", keep_alive=10)
        for packet in (
            Pingreq(),
            Publish("t", b"x"),
            Subscribe(1, (Subscription("t", 0),)),
            Publish("t", b"y", 1, packet_id=3),
        ):
            self.clock.advance(14.9)
            self.assertFalse(client.closed_by_server, packet)
            client.send(packet)
        self.clock.advance(14.9)
        self.assertFalse(client.closed_by_server)
        self.clock.advance(0.2)
        self.assertTrue(client.closed_by_server)

    def test_zero_disables(self) -> None:
        """Keep alive 0 turns the timeout off."""
        client, _ = self.harness.connect("c", keep_alive=0)
        self.clock.advance(10 * 65535)
        self.assertFalse(client.closed_by_server)

    def test_level5_keep_alive_disconnect(self) -> None:
        """At level 5 the keep-alive close is preceded by DISCONNECT 0x8D."""
        client, _ = self.harness.connect("c", level=5, keep_alive=4)
        self.clock.advance(6.1)
        self.assertEqual(client.received(), [Disconnect(ReasonCode.KEEP_ALIVE_TIMEOUT)])
        self.assertTrue(client.closed_by_server)

    def test_level3_keep_alive(self) -> None:
        """MQTT 3.1 clients get the same 1.5 x keep-alive enforcement."""
        client, _ = self.harness.connect("c", level=3, keep_alive=2)
        self.clock.advance(2.9)
        self.assertFalse(client.closed_by_server)
        self.clock.advance(0.2)
        self.assertTrue(client.closed_by_server)


class PingAndDisconnectTests(SynchronousTestCase):
    """PINGREQ and DISCONNECT."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()

    def test_pingreq(self) -> None:
        """PINGREQ is answered with PINGRESP [MQTT-3.12.4-1]."""
        for level in (3, 4, 5):
            with self.subTest(level=level):
                client, _ = self.harness.connect(f"c{level}", level=level)
                client.send(Pingreq(), Pingreq())
                self.assertEqual(client.received(), [Pingresp(), Pingresp()])

    def test_disconnect_closes_and_discards_will(self) -> None:
        """DISCONNECT closes the connection and discards the will [MQTT-3.14.4-3]."""
        watcher, _ = self.harness.connect("w")
        subscribe(watcher, ("will", 0))
        client, _ = self.harness.connect("c", will=Will("will", b"x"))
        client.send(Disconnect())
        self.assertTrue(client.closed_by_server)
        self.assertIs(client.protocol.connection.state, State.CLOSED)  # type: ignore[union-attr]
        client.finish()
        self.assertEqual(watcher.received(), [])
        self.assertNotIn("c", self.harness.broker.sessions)

    def test_nothing_after_disconnect(self) -> None:
        """Packets after DISCONNECT, even in the same read, are not acted on."""
        watcher, _ = self.harness.connect("w")
        subscribe(watcher, ("t", 0))
        client, _ = self.harness.connect("c")
        client.send(Disconnect(), Publish("t", b"late"), Pingreq())
        self.assertEqual(client.received(), [])
        self.assertEqual(watcher.received(), [])


# -- packets a client must not send ---------------------------------------------------------------


class ServerOnlyPacketTests(SynchronousTestCase):
    """Packets only a server sends close a client that sends them."""

    _PACKETS: tuple[Packet, ...] = (
        Connack(False, 0),
        Suback(1, (0,)),
        Unsuback(1),
        Pingresp(),
    )

    def test_level4(self) -> None:
        """CONNACK, SUBACK, UNSUBACK or PINGRESP from a client closes it, unanswered."""
        harness = BrokerHarness()
        for packet in self._PACKETS:
            with self.subTest(packet=type(packet).__name__):
                client, _ = harness.connect("c")
                client.send(packet)
                self.assertTrue(client.closed_by_server)
                self.assertEqual(client.received(), [])
                client.finish()

    def test_level5(self) -> None:
        """At level 5 those packets get DISCONNECT 0x82 before the close."""
        harness = BrokerHarness()
        for packet in (Connack(False, 0), Suback(1, (0,)), Unsuback(1, (0,)), Pingresp(), Auth()):
            with self.subTest(packet=type(packet).__name__):
                client, _ = harness.connect("c", level=5)
                client.send(packet)
                self.assertEqual(client.received(), [Disconnect(ReasonCode.PROTOCOL_ERROR)])
                self.assertTrue(client.closed_by_server)
                client.finish()

    def test_level5_topic_alias_refused(self) -> None:
        """A topic alias above the server's maximum gets DISCONNECT 0x94 and the close."""
        harness = BrokerHarness(BrokerConfig(topic_alias_maximum=2))
        client, _ = harness.connect("c", level=5)
        client.send(Publish("t", b"x", properties={PropertyId.TOPIC_ALIAS: 3}))
        self.assertEqual(client.received(), [Disconnect(ReasonCode.TOPIC_ALIAS_INVALID)])
        self.assertTrue(client.closed_by_server)


# -- misbehaving clients do not disturb the others ---------------------------------------------


class MisbehavingClientTests(SynchronousTestCase):
    """Each kind of misbehaviour closes that client; another client keeps getting messages."""

    def setUp(self) -> None:
        self.harness = BrokerHarness(BrokerConfig(max_packet_size=256))
        self.watcher, _ = self.harness.connect("watcher", keep_alive=60)
        subscribe(self.watcher, ("#", 1))
        self.publisher, _ = self.harness.connect("publisher")
        self.sent = 0

    def _others_unaffected(self) -> None:
        """A message published now still reaches the well-behaved subscriber."""
        self.sent += 1
        payload = b"still here %d" % self.sent
        self.publisher.send(Publish("news", payload, 1, packet_id=self.sent))
        self.assertEqual(shape(self.watcher.received()), [("news", payload, 1, False, False)])
        self.assertFalse(self.watcher.closed_by_server)
        self.assertFalse(self.publisher.closed_by_server)

    def test_garbage_before_connect(self) -> None:
        """Random bytes instead of CONNECT close the connection without an answer."""
        bad = self.harness.client()
        bad.send_bytes(b"\xde\xad\xbe\xef" * 8)
        self.assertTrue(bad.closed_by_server)
        self.assertEqual(bad.transport.value(), b"")
        self._others_unaffected()

    def test_garbage_after_connect(self) -> None:
        """A reserved packet type after CONNECT closes the connection."""
        bad, _ = self.harness.connect("bad")
        bad.send_bytes(b"\x00\x00\xff\xff")
        self.assertTrue(bad.closed_by_server)
        self._others_unaffected()

    def test_publish_before_connect(self) -> None:
        """A PUBLISH before CONNECT closes the connection and is not routed [MQTT-3.1.0-1]."""
        bad = self.harness.client()
        bad.send(Publish("news", b"sneaky"))
        self.assertTrue(bad.closed_by_server)
        self.assertEqual(self.watcher.received(), [])
        self._others_unaffected()

    def test_oversized_packet(self) -> None:
        """A packet over max_packet_size closes the connection and is not routed."""
        bad, _ = self.harness.connect("bad")
        bad.send(Publish("news", b"x" * 1000))
        self.assertTrue(bad.closed_by_server)
        self.assertEqual(bad.received(), [])
        self.assertEqual(self.watcher.received(), [])
        self._others_unaffected()

    def test_oversized_packet_level5(self) -> None:
        """At level 5 an oversized packet gets DISCONNECT 0x95 first."""
        bad, _ = self.harness.connect("bad", level=5)
        bad.send_bytes(b"\x30\xff\xff\x03")
        self.assertEqual(bad.received(), [Disconnect(ReasonCode.PACKET_TOO_LARGE)])
        self.assertTrue(bad.closed_by_server)
        self._others_unaffected()

    def test_half_sent_packet(self) -> None:
        """A half-sent packet is never acted on; keep alive closes its sender, others go on."""
        bad, _ = self.harness.connect("bad", keep_alive=10)
        data = encode(Publish("news", b"half", 1, packet_id=1), 4)
        bad.send_bytes(data[: len(data) // 2])
        self._others_unaffected()
        self.harness.clock.advance(15.1)
        self.assertTrue(bad.closed_by_server)
        self.assertEqual(bad.received(), [])
        self.assertEqual(self.watcher.received(), [])
        self._others_unaffected()

    def test_wildcard_in_topic_name(self) -> None:
        """A PUBLISH topic name with a wildcard closes the connection [MQTT-3.3.2-2]."""
        bad, _ = self.harness.connect("bad")
        bad.send_bytes(b"\x30\x05\x00\x03a/#")
        self.assertTrue(bad.closed_by_server)
        self.assertEqual(self.watcher.received(), [])
        self._others_unaffected()

    def test_qos3_publish(self) -> None:
        """A PUBLISH with QoS 3 closes the connection [MQTT-3.3.1-4]."""
        bad, _ = self.harness.connect("bad")
        bad.send_bytes(b"\x36\x07\x00\x03a/b\x00\x01")
        self.assertTrue(bad.closed_by_server)
        self._others_unaffected()

    def test_will_topic_with_wildcard(self) -> None:
        """A CONNECT whose will topic holds a wildcard is refused and closed [MQTT-4.7.1-1]."""

        def string(data: bytes) -> bytes:
            return len(data).to_bytes(2, "big") + data

        body = string(b"MQTT") + b"\x04\x06\x00\x00" + string(b"bad") + string(b"a/#")
        body += string(b"will")
        bad = self.harness.client()
        bad.send_bytes(bytes((0x10, len(body))) + body)
        self.assertTrue(bad.closed_by_server)
        self.assertNotIn("bad", self.harness.broker.sessions)
        self._others_unaffected()

    def test_bytes_after_close_ignored(self) -> None:
        """Bytes arriving after the server closed a connection are ignored."""
        bad, _ = self.harness.connect("bad")
        bad.send_bytes(b"\x00\x00")
        bad.transport.clear()
        bad.send(Publish("news", b"late"))
        bad.send_bytes(b"\xff" * 10)
        self.assertEqual(bad.transport.value(), b"")
        self.assertEqual(self.watcher.received(), [])
        self._others_unaffected()

    def test_many_bad_clients(self) -> None:
        """Many misbehaving clients in a row leave the broker serving the good ones."""
        for n in range(20):
            bad = self.harness.client()
            bad.send_bytes(bytes((n * 37 % 256, 0xFF)) + b"junk")
            bad.finish()
        self._others_unaffected()
        self.assertEqual(set(self.harness.broker.sessions), {"watcher", "publisher"})


# -- ServerConnection on its own ----------------------------------------------------------------


class RecordingOutput:
    """A ConnectionOutput that records what the connection does."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.closed = 0
        self.keep_alive: list[float | None] = []

    def write(self, data: bytes) -> None:
        self.data.append(data)

    def write_sequence(self, chunks: list[bytes]) -> None:
        self.data.append(b"".join(chunks))

    def close(self) -> None:
        self.closed += 1

    def set_keep_alive(self, seconds: float | None) -> None:
        self.keep_alive.append(seconds)

    def packets(self, level: int = 4) -> list[Packet]:
        data = b"".join(self.data)
        self.data.clear()
        return decode_all(data, level)


class ServerConnectionTests(SynchronousTestCase):
    """L{ServerConnection} fed packets directly, without Twisted."""

    def setUp(self) -> None:
        self.broker = Broker()
        self.output = RecordingOutput()
        self.connection = ServerConnection(self.broker, self.output, "peer")

    def test_provides_client_link(self) -> None:
        """ServerConnection provides IClientLink."""
        verifyObject(IClientLink, self.connection)

    def test_connect_sets_keep_alive(self) -> None:
        """CONNECT: CONNACK written, keep alive set to 1.5 x the client's value, state CONNECTED."""
        self.assertIs(self.connection.state, State.AWAIT_CONNECT)
        self.connection.packet_received(Connect("c", 4, keep_alive=20))
        self.assertEqual(self.output.packets(), [Connack(False, 0)])
        self.assertEqual(self.output.keep_alive, [30.0])
        self.assertIs(self.connection.state, State.CONNECTED)
        self.assertEqual(self.connection.client_id, "c")
        self.assertIs(self.broker.sessions["c"].link, self.connection)

    def test_keep_alive_zero_means_none(self) -> None:
        """Keep alive 0 clears the timer."""
        self.connection.packet_received(Connect("c", 4, keep_alive=0))
        self.assertEqual(self.output.keep_alive, [None])

    def test_closed_ignores_packets(self) -> None:
        """Once closed, further packets are ignored: no output, no second close."""
        self.connection.packet_received(Connect("c", 4))
        self.connection.packet_received(Disconnect())
        self.assertEqual(self.output.closed, 1)
        self.output.packets()
        self.connection.packet_received(Pingreq())
        self.connection.packet_received(Connack(False, 0))
        self.connection.connection_lost()
        self.assertEqual((self.output.data, self.output.closed), ([], 1))
        self.assertEqual(self.connection.close_reason, "client DISCONNECT")

    def test_connection_lost_does_not_close_output(self) -> None:
        """connection_lost() ends the session without asking the transport to close."""
        self.connection.packet_received(Connect("c", 4))
        self.connection.connection_lost("gone")
        self.assertEqual(self.output.closed, 0)
        self.assertIs(self.connection.state, State.CLOSED)
        self.assertEqual(self.connection.close_reason, "gone")
        self.assertNotIn("c", self.broker.sessions)

    def test_close_by_server(self) -> None:
        """close_by_server() closes; level 5 gets a DISCONNECT with the reason code first."""
        self.connection.packet_received(Connect("c", 4))
        self.output.packets()
        self.connection.close_by_server(0x8B, "shutting down")
        self.assertEqual((self.output.data, self.output.closed), ([], 1))
        output5 = RecordingOutput()
        connection5 = ServerConnection(self.broker, output5)
        connection5.packet_received(Connect("c5", 5))
        output5.packets(5)
        connection5.close_by_server(ReasonCode.SERVER_SHUTTING_DOWN, "shutting down")
        self.assertEqual(
            output5.packets(5),
            [
                Disconnect(
                    ReasonCode.SERVER_SHUTTING_DOWN, {PropertyId.REASON_STRING: "shutting down"}
                )
            ],
        )
        self.assertEqual(output5.closed, 1)

    def test_keep_alive_expired(self) -> None:
        """keep_alive_expired() closes and records the reason."""
        self.connection.packet_received(Connect("c", 4, keep_alive=5))
        self.connection.keep_alive_expired()
        self.assertEqual(self.output.closed, 1)
        self.assertEqual(self.connection.close_reason, "keep alive timeout")

    def test_pause_and_resume_writing(self) -> None:
        """pause_writing() makes deliveries queue; resume_writing() drains them."""
        self.connection.packet_received(Connect("c", 4))
        self.connection.packet_received(Subscribe(1, (Subscription("t", 1),)))
        self.output.packets()
        self.connection.pause_writing()
        self.assertFalse(self.connection.writable)
        self.broker.publish(Message("t", b"1", 1, False))
        self.broker.publish(Message("t", b"2", 0, False))
        self.assertEqual(self.output.data, [])
        self.connection.resume_writing()
        self.assertEqual(
            shape(self.output.packets()),
            [("t", b"1", 1, False, False), ("t", b"2", 0, False, False)],
        )
