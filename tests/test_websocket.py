# -*- test-case-name: tests.test_websocket -*-
"""
Tests for L{mqttbroker.websocket}: MQTT over WebSocket (section 6 of MQTT 3.1.1 and
5.0).

The unit tests drive the WebSocket protocol through a C{StringTransport}: the HTTP
upgrade request and the masked client frames are written by hand here (a few lines
of RFC 6455), not by a WebSocket library, so that a bug shared with Autobahn's client
side cannot hide. Time is a L{Clock}, for the broker and for Autobahn's timers alike.

The integration tests run C{twist mqtt --ws-port 0 [--wss-port 0]} as a process and
connect real clients to it: paho-mqtt over WebSocket (and over secure WebSocket), and
mqtt.js both from Node and from a real headless Chromium page, each talking with a
plain TCP client through the same broker.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import queue
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
import trustme
import txaio
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from conformance.rawpackets import websocket_frame
from mqttbroker.broker import BrokerConfig
from mqttbroker.codec import (
    Connack,
    Connect,
    Decoder,
    Disconnect,
    Packet,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    Will,
    encode,
)
from mqttbroker.testing import BrokerHarness, FakeClient, publish, subscribe
from mqttbroker.websocket import MQTTWebSocketFactory, MQTTWebSocketProtocol
from tests.support import (
    HOST,
    REPO_ROOT,
    TIMEOUT,
    BrokerProcess,
    IntegrationTestCase,
    PahoClient,
)

# -- a tiny WebSocket client side (RFC 6455), for the unit tests -----------------------

#: The key and answer from RFC 6455 section 1.3.
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="

TEXT, BINARY, CLOSE, PING, PONG, CONTINUATION = 0x1, 0x2, 0x8, 0x9, 0xA, 0x0


def upgrade_request(path: str = "/mqtt", protocols: tuple[str, ...] = ("mqtt",)) -> bytes:
    """The HTTP request a browser sends to open a WebSocket."""
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: 127.0.0.1:8083",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {KEY}",
        "Sec-WebSocket-Version: 13",
    ]
    if protocols:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(protocols)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


def client_frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bytes = b"\x37\xfa\x21\x3d"
) -> bytes:
    """One frame as a client must send it: masked (RFC 6455 5.3)."""
    return websocket_frame(opcode, payload, mask, fin=fin)


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of every whole frame a server sent (unmasked, RFC 6455 5.1)."""
    frames = []
    offset = 0
    while offset < len(data):
        first, second = data[offset], data[offset + 1]
        assert not second & 0x80, "a server must not mask its frames"
        size, offset = second & 0x7F, offset + 2
        if size == 126:
            (size,) = struct.unpack_from("!H", data, offset)
            offset += 2
        elif size == 127:
            (size,) = struct.unpack_from("!Q", data, offset)
            offset += 8
        assert first & 0x80, "fragmented server frames are not expected here"
        frames.append((first & 0x0F, data[offset : offset + size]))
        offset += size
    assert offset == len(data), "a partial frame"
    return frames


def split_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    """The status, headers (lower-case names) and what follows, of an HTTP response."""
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, rest


class SocketLikeTransport(StringTransport):
    """
    A C{StringTransport} that, like Twisted's socket and TLS transports, lets
    C{unregisterProducer} be called with no producer registered: Autobahn does so
    whenever it drops a connection.
    """

    def unregisterProducer(self) -> None:
        if self.producer is not None:
            super().unregisterProducer()


class WebSocketPeer:
    """
    One WebSocket connection to an L{MQTTWebSocketFactory}, over a C{StringTransport}:
    the test writes the client's bytes and reads what the server wrote.
    """

    def __init__(self, factory: MQTTWebSocketFactory, port: int, level: int = 4) -> None:
        address = IPv4Address("TCP", "127.0.0.1", port)
        self.protocol: MQTTWebSocketProtocol = factory.buildProtocol(address)  # type: ignore[assignment]
        self.transport = SocketLikeTransport(peerAddress=address)
        self.protocol.makeConnection(self.transport)
        self._decoder = Decoder(protocol_level=level)
        self.level = level

    def upgrade(self, path: str = "/mqtt", protocols: tuple[str, ...] = ("mqtt",)) -> int:
        """Send the HTTP upgrade request; the response status (its headers: L{headers})."""
        self.protocol.dataReceived(upgrade_request(path, protocols))
        status, self.headers, rest = split_response(self.transport.value())
        self.transport.clear()
        assert rest == b"", rest
        return status

    def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        """Deliver one client frame to the server."""
        self.protocol.dataReceived(client_frame(opcode, payload, fin=fin))

    def send_packets(self, *packets: Packet) -> None:
        """Deliver MQTT packets, each in a binary message of its own."""
        for packet in packets:
            self.send_frame(BINARY, encode(packet, self.level))

    def frames(self) -> list[tuple[int, bytes]]:
        """The frames the server sent since the last call."""
        frames = server_frames(self.transport.value())
        self.transport.clear()
        return frames

    def packets(self) -> list[Packet]:
        """The MQTT packets in the binary frames the server sent since the last call."""
        frames = self.frames()
        assert all(opcode == BINARY for opcode, _ in frames), frames
        return list(self._decoder.feed(b"".join(payload for _, payload in frames)))

    def lose(self, reason: Failure | None = None) -> None:
        """The TCP connection ends (as the reactor would report it)."""
        self.protocol.connectionLost(reason or Failure(ConnectionLost("gone")))


class WebSocketUnitTestCase(SynchronousTestCase):
    """A broker harness with a WebSocket factory in front; Autobahn's timers on its clock."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        # Autobahn schedules its handshake timeouts through txaio's event loop: make
        # that the test's clock, so nothing lands on the global reactor.
        previous = txaio.config.loop
        txaio.config.loop = self.harness.clock
        self.addCleanup(setattr, txaio.config, "loop", previous)
        self.factory = MQTTWebSocketFactory(self.harness.factory)
        self._port = 50000

    def peer(self, level: int = 4) -> WebSocketPeer:
        """A new WebSocket connection (nothing sent yet)."""
        self._port += 1
        return WebSocketPeer(self.factory, self._port, level)

    def opened(self, level: int = 4) -> WebSocketPeer:
        """A WebSocket connection past the upgrade, with sub-protocol mqtt."""
        peer = self.peer(level)
        self.assertEqual(peer.upgrade(), 101)
        return peer

    def mqtt_connected(self, client_id: str, level: int = 4, **fields: Any) -> WebSocketPeer:
        """A WebSocket connection that sent CONNECT and got a successful CONNACK."""
        peer = self.opened(level)
        peer.send_packets(Connect(client_id, level, **fields))
        [connack] = peer.packets()
        assert isinstance(connack, Connack) and connack.reason_code == 0, connack
        return peer

    def tcp_subscriber(self, topic_filter: str) -> FakeClient:
        """A plain (non-WebSocket) client of the same broker, subscribed."""
        client, _ = self.harness.connect("tcp-subscriber")
        self.assertEqual(subscribe(client, (topic_filter, 1)), [1])
        return client


class HandshakeTests(WebSocketUnitTestCase):
    """The HTTP upgrade: path and sub-protocol negotiation ([MQTT-6.0.0-3/4])."""

    def test_mqtt_chosen(self) -> None:
        """A client offering C{mqtt} gets C{mqtt} back, with the RFC 6455 accept key."""
        peer = self.peer()
        self.assertEqual(peer.upgrade(protocols=("mqtt",)), 101)
        self.assertEqual(peer.headers["sec-websocket-protocol"], "mqtt")
        self.assertEqual(peer.headers["sec-websocket-accept"], ACCEPT)

    def test_mqtt_chosen_among_others(self) -> None:
        """Unknown sub-protocols offered first are passed over for C{mqtt}."""
        peer = self.peer()
        self.assertEqual(peer.upgrade(protocols=("wamp.2.json", "mqtt")), 101)
        self.assertEqual(peer.headers["sec-websocket-protocol"], "mqtt")

    def test_mqttv31_accepted(self) -> None:
        """MQTT 3.1 clients (old Paho JavaScript) ask for C{mqttv3.1}: it is accepted."""
        peer = self.peer(level=3)
        self.assertEqual(peer.upgrade(protocols=("mqttv3.1",)), 101)
        self.assertEqual(peer.headers["sec-websocket-protocol"], "mqttv3.1")
        peer.send_packets(Connect("old", 3))
        [connack] = peer.packets()
        assert isinstance(connack, Connack)
        self.assertEqual(connack.reason_code, 0)

    def test_other_subprotocol_refused(self) -> None:
        """
        Offering only sub-protocols other than MQTT's is refused with HTTP 400: the
        client means to speak something else.
        """
        peer = self.peer()
        self.assertEqual(peer.upgrade(protocols=("wamp.2.json", "chat")), 400)
        self.assertNotIn("sec-websocket-protocol", peer.headers)
        self.assertEqual(self.harness.broker.connection_count, 0)

    def test_no_subprotocol_accepted(self) -> None:
        """
        A client that names no sub-protocol (older libraries) is served MQTT anyway,
        and the response names none either (RFC 6455 4.2.2).
        """
        peer = self.peer()
        self.assertEqual(peer.upgrade(protocols=()), 101)
        self.assertNotIn("sec-websocket-protocol", peer.headers)
        peer.send_packets(Connect("plain", 4))
        [connack] = peer.packets()
        assert isinstance(connack, Connack)
        self.assertEqual(connack.reason_code, 0)

    def test_wrong_path_not_found(self) -> None:
        """Another path than the configured one is HTTP 404, and no MQTT connection."""
        peer = self.peer()
        self.assertEqual(peer.upgrade(path="/ws"), 404)
        self.assertEqual(self.harness.broker.connection_count, 0)

    def test_configured_path(self) -> None:
        """The path is the one the factory was given."""
        self.factory = MQTTWebSocketFactory(self.harness.factory, "/brokers/mqtt")
        self.assertEqual(self.peer().upgrade(path="/brokers/mqtt"), 101)
        self.assertEqual(self.peer().upgrade(path="/mqtt"), 404)

    def test_mqtt_connection_made_on_open(self) -> None:
        """The MQTT connection exists (and counts) from the WebSocket's opening on."""
        self.opened()
        self.assertEqual(self.harness.broker.connection_count, 1)


class FramingTests(WebSocketUnitTestCase):
    """MQTT bytes in binary frames, with no alignment to packets ([MQTT-6.0.0-1/2])."""

    def test_connack_in_binary_frame(self) -> None:
        """CONNECT in a binary frame is answered by a CONNACK in a binary frame."""
        peer = self.opened()
        peer.send_frame(BINARY, encode(Connect("c1", 4), 4))
        frames = peer.frames()
        self.assertEqual(frames, [(BINARY, b"\x20\x02\x00\x00")])

    def test_mqtt5_connack_in_binary_frame(self) -> None:
        """The same for MQTT 5."""
        peer = self.opened(level=5)
        peer.send_frame(BINARY, encode(Connect("c5", 5), 5))
        [(opcode, payload)] = peer.frames()
        self.assertEqual(opcode, BINARY)
        [connack] = Decoder(protocol_level=5).feed(payload)
        assert isinstance(connack, Connack)
        self.assertEqual(connack.reason_code, 0)

    def test_several_packets_in_one_frame(self) -> None:
        """CONNECT, SUBSCRIBE and PUBLISH in one frame are all served, in order."""
        peer = self.opened()
        data = b"".join(
            encode(packet, 4)
            for packet in (
                Connect("c1", 4),
                Subscribe(1, (Subscription("t/1", 0),)),
                Publish("t/1", b"to myself", 0),
            )
        )
        peer.send_frame(BINARY, data)
        packets = peer.packets()
        self.assertEqual([type(packet) for packet in packets], [Connack, Suback, Publish])
        self.assertEqual(packets[2].payload, b"to myself")  # type: ignore[attr-defined]

    def test_packet_split_across_frames(self) -> None:
        """
        A packet cut anywhere, even inside its fixed header, across two binary
        messages is read once whole.
        """
        connect = encode(Connect("split-client", 4), 4)
        for cut in (1, 2, len(connect) // 2, len(connect) - 1):
            with self.subTest(cut=cut):
                peer = self.opened()
                peer.send_frame(BINARY, connect[:cut])
                self.assertEqual(peer.frames(), [])
                peer.send_frame(BINARY, connect[cut:])
                [connack] = peer.packets()
                self.assertIsInstance(connack, Connack)

    def test_packet_in_fragmented_message(self) -> None:
        """A packet in one message sent as several fragments (continuation frames)."""
        peer = self.opened()
        connect = encode(Connect("fragments", 4), 4)
        peer.send_frame(BINARY, connect[:3], fin=False)
        peer.send_frame(CONTINUATION, connect[3:9], fin=False)
        peer.send_frame(CONTINUATION, connect[9:], fin=True)
        [connack] = peer.packets()
        self.assertIsInstance(connack, Connack)

    def test_packets_straddling_frames(self) -> None:
        """The end of one packet and the start of the next share a frame."""
        peer = self.mqtt_connected("straddle")
        data = encode(Subscribe(1, (Subscription("a", 0),)), 4) + encode(
            Subscribe(2, (Subscription("b", 0),)), 4
        )
        peer.send_frame(BINARY, data[:5])
        peer.send_frame(BINARY, data[5:12])
        peer.send_frame(BINARY, data[12:])
        packets = peer.packets()
        self.assertEqual([p.packet_id for p in packets], [1, 2])  # type: ignore[attr-defined]

    def test_large_packet_in_extended_length_frame(self) -> None:
        """A PUBLISH over 64 KiB (a frame with a 64-bit length) goes both ways."""
        subscriber = self.mqtt_connected("big-sub")
        subscriber.send_packets(Subscribe(1, (Subscription("big", 0),)))
        self.assertIsInstance(subscriber.packets()[0], Suback)
        publisher = self.mqtt_connected("big-pub")
        payload = bytes(range(256)) * 300
        publisher.send_packets(Publish("big", payload, 0))
        [message] = subscriber.packets()
        assert isinstance(message, Publish)
        self.assertEqual(message.payload, payload)

    def test_message_size_bounded_by_packets_not_messages(self) -> None:
        """
        Frames are streamed to the MQTT decoder, not assembled: with a packet limit
        of 1000 bytes, one message holding 2 KB of small packets is served, and a
        frame announcing 10 MB whose first bytes declare an oversized PUBLISH closes
        the connection at once, before the rest of the frame arrives.
        """
        harness = BrokerHarness(BrokerConfig(max_packet_size=1000))
        self.factory = MQTTWebSocketFactory(harness.factory)
        self.harness = harness
        subscriber = self.mqtt_connected("small-sub")
        subscriber.send_packets(Subscribe(1, (Subscription("s", 0),)))
        self.assertIsInstance(subscriber.packets()[0], Suback)
        publisher = self.mqtt_connected("small-pub")
        many = b"".join(encode(Publish("s", bytes([i]) * 90, 0), 4) for i in range(20))
        self.assertGreater(len(many), 1000)
        publisher.send_frame(BINARY, many)
        self.assertEqual(len(subscriber.packets()), 20)
        # A frame header for 10 MB, then only a PUBLISH fixed header declaring 5 MB.
        head = bytes([0x80 | BINARY, 0x80 | 127]) + struct.pack("!Q", 10_000_000)
        mask = b"\x01\x02\x03\x04"
        declared = b"\x30\xc0\x96\xb1\x02"  # PUBLISH, remaining length 5,000,000
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(declared))
        publisher.protocol.dataReceived(head + mask + masked)
        # The MQTT side refused it from its fixed header: the WebSocket is closing.
        self.assertIn(CLOSE, [opcode for opcode, _ in publisher.frames()])

    def test_text_frame_closes(self) -> None:
        """
        A text frame is not MQTT: the server starts the closing handshake with 1003
        (unsupported data), reads nothing more, and once the connection is gone the
        MQTT connection ends as for any network failure: the will is published.
        """
        watcher = self.tcp_subscriber("will/#")
        peer = self.mqtt_connected("texter", will=Will("will/texter", b"gone", 0, False))
        peer.send_frame(TEXT, b"\x30\x05\x00\x01tab")
        [(opcode, payload)] = peer.frames()
        self.assertEqual(opcode, CLOSE)
        self.assertEqual(struct.unpack("!H", payload[:2])[0], 1003)
        # What follows the text frame is not served.
        peer.send_packets(Subscribe(1, (Subscription("x", 0),)))
        self.assertEqual(peer.frames(), [])
        # The client answers the close; the server then drops the TCP connection.
        peer.send_frame(CLOSE, payload[:2])
        self.assertTrue(peer.transport.disconnecting)
        peer.lose(Failure(ConnectionDone("closed")))
        self.assertEqual(
            [(p.topic, p.payload) for p in watcher.received() if isinstance(p, Publish)],
            [("will/texter", b"gone")],
        )
        self.assertEqual(self.harness.broker.connection_count, 1)

    def test_text_frame_before_connect_closes(self) -> None:
        """The same before any MQTT packet."""
        peer = self.opened()
        peer.send_frame(TEXT, b"CONNECT")
        [(opcode, payload)] = peer.frames()
        self.assertEqual((opcode, struct.unpack("!H", payload[:2])[0]), (CLOSE, 1003))

    def test_ping_answered_by_websocket(self) -> None:
        """WebSocket pings are answered at that layer and mean nothing to MQTT."""
        peer = self.mqtt_connected("pinger")
        peer.send_frame(PING, b"hello")
        self.assertEqual(peer.frames(), [(PONG, b"hello")])
        peer.send_packets(Subscribe(1, (Subscription("x", 0),)))
        self.assertIsInstance(peer.packets()[0], Suback)


class TeardownTests(WebSocketUnitTestCase):
    """The MQTT connection ends with the WebSocket, whichever side ends it."""

    def test_connection_lost_publishes_will(self) -> None:
        """A WebSocket that drops (no close handshake) publishes the will."""
        watcher = self.tcp_subscriber("will/#")
        peer = self.mqtt_connected("dropper", will=Will("will/dropper", b"lost", 1, False))
        self.assertEqual(self.harness.broker.connection_count, 2)
        peer.lose()
        self.assertEqual(
            [(p.topic, p.payload) for p in watcher.received() if isinstance(p, Publish)],
            [("will/dropper", b"lost")],
        )
        self.assertEqual(self.harness.broker.connection_count, 1)

    def test_websocket_close_detaches_session(self) -> None:
        """
        A client that closes the WebSocket (close frame, no MQTT DISCONNECT) leaves
        its persistent session detached, not connected: the messages published
        meanwhile wait for it, and it comes back to them over a new WebSocket.
        """
        peer = self.mqtt_connected("persistent", clean_start=False)
        peer.send_packets(Subscribe(1, (Subscription("news", 1),)))
        self.assertIsInstance(peer.packets()[0], Suback)
        peer.send_frame(CLOSE, struct.pack("!H", 1000))
        [(opcode, payload)] = peer.frames()
        self.assertEqual((opcode, payload[:2]), (CLOSE, struct.pack("!H", 1000)))
        self.assertTrue(peer.transport.disconnecting)
        peer.lose(Failure(ConnectionDone("closed")))
        self.assertEqual(self.harness.broker.connection_count, 0)

        publisher, _ = self.harness.connect("publisher")
        publish(publisher, "news", b"while away", qos=1)
        again = self.opened()
        again.send_packets(Connect("persistent", 4, clean_start=False))
        connack, message = again.packets()
        assert isinstance(connack, Connack) and isinstance(message, Publish)
        self.assertTrue(connack.session_present)
        self.assertEqual((message.topic, message.payload), ("news", b"while away"))

    def test_mqtt_disconnect_closes_websocket(self) -> None:
        """
        MQTT DISCONNECT makes the server close the WebSocket (code 1000), and no will
        is published.
        """
        watcher = self.tcp_subscriber("will/#")
        peer = self.mqtt_connected("polite", will=Will("will/polite", b"no", 0, False))
        peer.send_packets(Disconnect())
        [(opcode, payload)] = peer.frames()
        self.assertEqual((opcode, payload[:2]), (CLOSE, struct.pack("!H", 1000)))
        peer.send_frame(CLOSE, payload[:2])
        self.assertTrue(peer.transport.disconnecting)
        peer.lose(Failure(ConnectionDone("closed")))
        self.assertEqual([p for p in watcher.received() if isinstance(p, Publish)], [])
        self.assertEqual(self.harness.broker.connection_count, 1)

    def test_connect_timeout_closes_websocket(self) -> None:
        """A WebSocket that sends no CONNECT in time is closed like a TCP connection."""
        peer = self.opened()
        self.harness.clock.advance(self.harness.broker.config.connect_timeout + 1)
        [(opcode, _)] = peer.frames()
        self.assertEqual(opcode, CLOSE)

    def test_lost_before_open(self) -> None:
        """A connection lost during the HTTP upgrade leaves no MQTT connection."""
        peer = self.peer()
        peer.protocol.dataReceived(upgrade_request()[:20])
        peer.lose()
        self.assertEqual(self.harness.broker.connection_count, 0)


# -- integration: real clients, real sockets --------------------------------------------

#: Where the Node package of the browser and Node tests lives (.ci/run installs it).
JS_DIR = os.path.join(REPO_ROOT, "tests", "js")
MQTT_JS = os.path.join(JS_DIR, "node_modules", "mqtt")

_WS_STARTING_ON = r"MQTTWebSocketFactory starting on (\d+)"
_WSS_STARTING_ON = r"MQTTWebSocketFactory \(TLS\) starting on (\d+)"


def started_port(broker: BrokerProcess, pattern: str) -> int:
    """The port a listener of C{broker} logged it listens on."""
    match = re.search(pattern, broker.wait_for_log(pattern))
    assert match is not None
    return int(match.group(1))


def require_mqtt_js() -> str:
    """The C{node} executable, once mqtt.js is installed in tests/js; else skip."""
    node = shutil.which("node")
    if node is None or not os.path.isdir(MQTT_JS):
        raise SkipTest(
            "mqtt.js is not installed: install Node.js (apt-get install nodejs npm) and "
            "run 'npm ci' in tests/js (.ci/run does both)"
        )
    return node


def require_chromium() -> str:
    """A Chromium executable; else skip."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found is not None:
            return found
    raise SkipTest("Chromium is not installed: apt-get install chromium (.ci/run does)")


class JsonLines:
    """The JSON lines a process prints, read on a thread, waited for with a timeout."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process
        self.seen: list[Any] = []
        #: Lines that are not JSON (error output), for failure messages.
        self.other: list[str] = []
        self._lines: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            try:
                self._lines.put(json.loads(line))
            except ValueError:
                self.other.append(line.decode(errors="replace"))
        self._lines.put(None)

    def next(self, event: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        """The next line, which must be an object whose "event" is C{event}."""
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no {event!r} within {timeout} s (seen {self.seen}; other output "
                f"{''.join(self.other)!r})"
            ) from None
        self.seen.append(line)
        assert line is not None, (
            f"the process ended before {event!r} (seen {self.seen}; other output "
            f"{''.join(self.other)!r})"
        )
        assert line.get("event") == event, f"expected {event!r}, got {line}"
        return line  # type: ignore[no-any-return]


def websocket_paho(
    port: int, *, path: str = "/mqtt", ca: str | None = None, **kwargs: Any
) -> PahoClient:
    """A paho client (not yet connected) over WebSocket, or secure WebSocket with C{ca}."""
    client = PahoClient(port, **kwargs)
    client.client.transport = "websockets"
    client.client.ws_set_options(path=path)
    if ca is not None:
        client.client.tls_set(ca_certs=ca)
    return client


class WebSocketIntegrationTestCase(IntegrationTestCase):
    """A broker with a TCP and a WebSocket listener."""

    broker_args: tuple[str, ...] = ("--ws-port", "0")

    def setUp(self) -> None:
        self.broker = self.start_broker(*self.broker_args)
        self.ws_port = started_port(self.broker, _WS_STARTING_ON)

    def ws_paho(self, client_id: str = "", **kwargs: Any) -> PahoClient:
        """A connected paho client over WebSocket; closed after the test."""
        client = websocket_paho(self.ws_port, client_id=client_id, **kwargs)
        self.addCleanup(client.close)
        return client.connect()


class PahoWebSocketTests(WebSocketIntegrationTestCase):
    """paho-mqtt with transport="websockets", meeting TCP clients on the same broker."""

    def test_websocket_subscriber_tcp_publisher(self) -> None:
        """A message published over TCP reaches a subscriber on WebSocket, 3.1.1 and 5."""
        for protocol in (mqtt.MQTTv311, mqtt.MQTTv5):
            with self.subTest(protocol=protocol):
                subscriber = self.ws_paho(f"ws-sub-{protocol}", protocol=protocol)
                self.assertEqual(len(subscriber.subscribe("ws/in", qos=1)), 1)
                publisher = self.paho(self.broker, f"tcp-pub-{protocol}", protocol=protocol)
                publisher.publish("ws/in", b"over tcp", qos=1)
                message = subscriber.next_message()
                self.assertEqual(
                    (message.topic, message.payload, message.qos), ("ws/in", b"over tcp", 1)
                )
                subscriber.disconnect()

    def test_tcp_subscriber_websocket_publisher(self) -> None:
        """A message published over WebSocket reaches a TCP subscriber, at each QoS."""
        subscriber = self.paho(self.broker, "tcp-sub")
        subscriber.subscribe("ws/out/#", qos=2)
        publisher = self.ws_paho("ws-pub")
        for qos in (0, 1, 2):
            publisher.publish(f"ws/out/{qos}", f"qos {qos}".encode(), qos=qos)
            message = subscriber.next_message()
            self.assertEqual(
                (message.topic, message.payload), (f"ws/out/{qos}", f"qos {qos}".encode())
            )

    def test_large_message(self) -> None:
        """A 1 MiB payload crosses WebSocket frames and TCP reads intact."""
        subscriber = self.ws_paho("ws-big-sub")
        subscriber.subscribe("big", qos=1)
        payload = os.urandom(1 << 20)
        self.paho(self.broker, "tcp-big-pub").publish("big", payload, qos=1)
        self.assertEqual(subscriber.next_message().payload, payload)

    def test_will_when_websocket_drops(self) -> None:
        """A WebSocket client that vanishes has its will published to TCP clients."""
        watcher = self.paho(self.broker, "watcher")
        watcher.subscribe("will/#")
        client = self.ws_paho("ws-will", will=("will/ws", b"gone", 1, False))
        # Reset the TCP connection under paho's WebSocket wrapper: no MQTT
        # DISCONNECT, no WebSocket close frame.
        client.stop_loop()
        raw = client.client.socket()._socket  # type: ignore[union-attr]
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()
        message = watcher.next_message()
        self.assertEqual((message.topic, message.payload), ("will/ws", b"gone"))

    def test_wrong_path_refused(self) -> None:
        """paho on another path than /mqtt does not connect."""
        client = websocket_paho(self.ws_port, path="/elsewhere")
        self.addCleanup(client.close)
        with self.assertRaisesRegex(mqtt.WebsocketConnectionError, "handshake"):
            client.connect(timeout=3)


def _run_node_subscriber(
    case: IntegrationTestCase, url: str, topic: str, version: int, env: dict[str, str] | None = None
) -> JsonLines:
    """Start the mqtt.js Node subscriber and wait until it subscribed."""
    node = require_mqtt_js()
    process = subprocess.Popen(
        [node, os.path.join(JS_DIR, "subscribe.js"), url, topic, str(version), "15000"],
        cwd=JS_DIR,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, **(env or {})),
    )
    case.addCleanup(_end_process, process)
    lines = JsonLines(process)
    subscribed = lines.next("subscribed", timeout=15)
    case.assertEqual(subscribed["granted"], [1])
    return lines


def _end_process(process: subprocess.Popen[bytes]) -> None:
    """Kill a process if it still runs, and reap it."""
    if process.poll() is None:
        process.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=TIMEOUT)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


class MqttJsNodeTests(WebSocketIntegrationTestCase):
    """mqtt.js (npm package mqtt) in Node over WebSocket; mosquitto_pub over TCP."""

    def _deliver(self, version: int) -> None:
        lines = _run_node_subscriber(
            self, f"ws://{HOST}:{self.ws_port}/mqtt", f"node/{version}", version
        )
        payload = f"from mosquitto_pub to mqtt.js v{version}"
        status, _, err = self.run_program(
            [
                "mosquitto_pub",
                "-h",
                HOST,
                "-p",
                str(self.broker.port),
                "-q",
                "1",
                "-t",
                f"node/{version}",
                "-m",
                payload,
            ]
        )
        self.assertEqual(status, 0, err)
        message = lines.next("message", timeout=15)
        self.assertEqual(
            (message["topic"], message["payload"], message["qos"]), (f"node/{version}", payload, 1)
        )
        self.assertEqual(lines.process.wait(timeout=TIMEOUT), 0)

    def test_mqtt311(self) -> None:
        """mqtt.js speaking MQTT 3.1.1 receives a message published over TCP."""
        self._deliver(4)

    def test_mqtt5(self) -> None:
        """mqtt.js speaking MQTT 5 receives a message published over TCP."""
        self._deliver(5)


class _Reports(http.server.BaseHTTPRequestHandler):
    """Serves the test page and mqtt.js's browser bundle; takes the page's reports."""

    reports: queue.Queue[Any]
    files: dict[str, tuple[str, str]]

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path not in self.files:
            self.send_error(404)
            return
        filename, content_type = self.files[path]
        with open(filename, "rb") as f:
            body = f.read()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with contextlib.suppress(ValueError):
            self.reports.put(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def page_server() -> Iterator[tuple[int, queue.Queue[Any]]]:
    """A local HTTP server of the page; its port and the queue of the page's reports."""
    reports: queue.Queue[Any] = queue.Queue()
    handler = type(
        "Handler",
        (_Reports,),
        {
            "reports": reports,
            "files": {
                "/page.html": (os.path.join(JS_DIR, "page.html"), "text/html; charset=utf-8"),
                "/mqtt.min.js": (
                    os.path.join(MQTT_JS, "dist", "mqtt.min.js"),
                    "text/javascript; charset=utf-8",
                ),
            },
        },
    )
    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1], reports
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def _kill_process_group(process: subprocess.Popen[bytes]) -> None:
    """End a browser and every process it started (its own process group)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=TIMEOUT)


class ChromiumTests(WebSocketIntegrationTestCase):
    """mqtt.js's browser bundle in a real headless Chromium page."""

    def test_page_receives_tcp_publish(self) -> None:
        """
        The page connects over WebSocket, subscribes, and shows (and reports) the
        message a TCP client publishes.
        """
        chromium = require_chromium()
        require_mqtt_js()
        profile = tempfile.mkdtemp(prefix="mqttbroker-chromium-")
        self.addCleanup(shutil.rmtree, profile, True)
        log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by the cleanup)
        self.addCleanup(log.close)
        with page_server() as (http_port, reports):
            url = (
                f"http://{HOST}:{http_port}/page.html?version=4&topic=browser/in"
                f"&ws=ws://{HOST}:{self.ws_port}/mqtt"
            )
            browser = subprocess.Popen(
                [
                    chromium,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    f"--user-data-dir={profile}",
                    url,
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group, so that the renderers and helpers it starts
                # are killed with it.
                start_new_session=True,
            )
            try:
                subscribed = self._report(reports, "subscribed", 30)
                self.assertEqual(subscribed["granted"], [1])
                self.paho(self.broker, "tcp-to-browser").publish(
                    "browser/in", "héllo, browser".encode(), qos=1
                )
                message = self._report(reports, "message", TIMEOUT)
            except AssertionError:
                log.seek(0)
                sys.stderr.write(f"\n----- chromium output -----\n{log.read()[-4000:]!r}\n")
                raise
            finally:
                _kill_process_group(browser)
        self.assertEqual(
            (message["topic"], message["payload"], message["qos"]),
            ("browser/in", "héllo, browser", 1),
        )
        self.assertIn("Chrome", message["userAgent"])

    def _report(self, reports: queue.Queue[Any], event: str, timeout: float) -> dict[str, Any]:
        try:
            report = reports.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"the page did not report {event!r} within {timeout} s") from None
        self.assertEqual(report.get("event"), event, report)
        return report  # type: ignore[no-any-return]


class SecureWebSocketTests(IntegrationTestCase):
    """--wss-port: MQTT over WebSocket over TLS, with a certificate made by the test."""

    def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="mqttbroker-wss-")
        self.addCleanup(shutil.rmtree, directory, True)
        ca = trustme.CA()
        self.ca_path = os.path.join(directory, "ca.pem")
        ca.cert_pem.write_to_path(self.ca_path)
        server = ca.issue_cert(HOST, "localhost")
        cert_path = os.path.join(directory, "server.pem")
        server.private_key_and_cert_chain_pem.write_to_path(cert_path)
        self.broker = self.start_broker("--wss-port", "0", "--cert", cert_path)
        self.wss_port = started_port(self.broker, _WSS_STARTING_ON)

    def test_paho_over_wss(self) -> None:
        """paho over WebSocket and TLS receives a message published over TCP, and back."""
        client = websocket_paho(self.wss_port, ca=self.ca_path, client_id="wss-client")
        self.addCleanup(client.close)
        client.connect()
        client.subscribe("secure/#", qos=1)
        tcp = self.paho(self.broker, "tcp-client")
        tcp.subscribe("back", qos=1)
        tcp.publish("secure/in", b"to wss", qos=1)
        message = client.next_message()
        self.assertEqual((message.topic, message.payload), ("secure/in", b"to wss"))
        client.publish("back", b"from wss", qos=1)
        self.assertEqual(tcp.next_message().payload, b"from wss")

    def test_untrusted_certificate_refused(self) -> None:
        """A client that does not trust the server's CA does not connect."""
        other = tempfile.NamedTemporaryFile(suffix=".pem", delete=False)  # noqa: SIM115
        other.close()
        self.addCleanup(os.unlink, other.name)
        trustme.CA().cert_pem.write_to_path(other.name)
        client = websocket_paho(self.wss_port, ca=other.name)
        self.addCleanup(client.close)
        with self.assertRaises(ssl.SSLCertVerificationError):
            client.connect(timeout=3)

    def test_mqtt_js_over_wss(self) -> None:
        """mqtt.js in Node over wss://, trusting the test CA, receives a TCP publish."""
        lines = _run_node_subscriber(
            self,
            f"wss://{HOST}:{self.wss_port}/mqtt",
            "secure/node",
            4,
            env={"NODE_EXTRA_CA_CERTS": self.ca_path},
        )
        self.paho(self.broker, "tcp-to-node").publish("secure/node", b"over tls", qos=1)
        message = lines.next("message", timeout=15)
        self.assertEqual((message["topic"], message["payload"]), ("secure/node", "over tls"))
