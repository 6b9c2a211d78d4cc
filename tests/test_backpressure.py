# -*- test-case-name: tests.test_backpressure -*-
"""
Backpressure on every transport: a subscriber that stops reading must not make the
broker buffer without bound, and must not hold up the other clients.

Each test starts a broker in this process on the real reactor, with a plain TCP
listener (for a publisher and a healthy subscriber) and a listener of the kind under
test (TCP, TLS, WebSocket, WebSocket over TLS) for a stuck subscriber: a raw blocking
socket with a small receive buffer that connects, subscribes at QoS 0 and at QoS 1,
and then never reads again. The publisher floods (a bounded number of 1 KB messages,
in batches, each batch waited for at the healthy subscriber) while the test samples,
after every batch, what the broker holds for the stuck client: the bytes in its
transport's write buffers (Twisted's TCP buffer, the TLS layer's buffers, Autobahn's
send queue) and its session's queue and in-flight window. These must stay below a
bound of the order of Twisted's high-water mark plus a few messages, far below what
was published, while the healthy subscriber receives every message, in order.

The bound is explained at L{_bound}. The kernel's socket buffers also hold some
megabytes for the stuck client (bounded by C{net.ipv4.tcp_wmem}); they are not the
broker's memory, and the flood is large enough to go well past them.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import ssl
import struct
import tempfile
from typing import Any

import trustme
from twisted.internet import defer, endpoints, protocol, reactor, threads
from twisted.internet.abstract import FileDescriptor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from mqttbroker.broker import Broker, BrokerConfig
from mqttbroker.codec import (
    Connack,
    Connect,
    Decoder,
    Puback,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    encode,
)
from mqttbroker.endpoints import listener_service
from mqttbroker.interfaces import IBrokerObserver
from mqttbroker.listeners import parse_listener
from mqttbroker.protocol import MQTTServerProtocol
from mqttbroker.session import SessionLimits
from mqttbroker.websocket import _MessageTransport

#: Messages published per test, and their payload size. 20 MB in all: several times
#: what the kernel's socket buffers can take for the stuck client.
MESSAGES = 20_000
PAYLOAD_SIZE = 1024
#: Messages per batch; the next batch goes once the healthy subscriber has them all.
BATCH = 200

#: The session bounds under test: smaller than the defaults, so that they are
#: reached quickly and any overshoot shows.
LIMITS = SessionLimits(max_inflight=20, max_queued_messages=200, max_queued_bytes=0)

#: Twisted's high-water mark: a transport pauses its producer past this many bytes.
HIGH_WATER = FileDescriptor.bufferSize


def _bound(tls: bool) -> int:
    """
    What the broker may hold for the stuck client's transport, in bytes.

    The MQTT protocol writes until the socket's buffer passes the high-water mark
    (then it is paused), so the buffer ends at most one write past it; a write is
    one packet, or the few packets of one publisher read fanned out. TLS adds its
    small-write aggregation (flushed at 64 000 bytes or at the end of the reactor
    turn) on top of the socket below it. 32 messages of slack covers one write and
    the packet framing; anything that grows with the messages published breaks it
    within a few batches.
    """
    slack = 32 * (PAYLOAD_SIZE + 64)
    return HIGH_WATER + (64_000 if tls else 0) + slack


# -- what the broker buffers for one connection -------------------------------------------


def buffered_bytes(transport: Any) -> int:
    """
    The bytes waiting in C{transport} and every transport under it: Autobahn's send
    queue, the TLS layer's pending writes and aggregation buffer, the socket's
    Twisted write buffer (the sum Twisted compares with its high-water mark).
    """
    total = 0
    while transport is not None:
        if isinstance(transport, _MessageTransport):
            websocket = transport._websocket
            total += sum(len(chunk) for chunk, _ in websocket.send_queue)
            transport = websocket.transport
        elif hasattr(transport, "_appSendBuffer"):  # TLSMemoryBIOProtocol
            total += sum(len(chunk) for chunk in transport._appSendBuffer)
            aggregator = getattr(transport, "_aggregator", None)
            total += sum(len(chunk) for chunk in getattr(aggregator, "_buffer", ()))
            transport = transport.transport
        elif isinstance(transport, FileDescriptor):
            return total + len(transport.dataBuffer) + transport._tempDataLen
        elif hasattr(transport, "wrappedProtocol"):  # any other protocol wrapper
            transport = transport.transport
        else:
            raise AssertionError(f"unexpected transport {transport!r}")
    return total


# -- the clients in this process ----------------------------------------------------------


@implementer(IBrokerObserver)
class DropCounter:
    """Counts the messages dropped per client (a full queue)."""

    def __init__(self) -> None:
        self.dropped: dict[str, int] = {}

    def message_dropped(self, client_id: str, topic: str, qos: int, reason: str) -> None:
        self.dropped[client_id] = self.dropped.get(client_id, 0) + 1

    def client_connected(self, *args: object) -> None:
        pass

    def client_disconnected(self, *args: object) -> None:
        pass

    def subscribed(self, *args: object) -> None:
        pass

    def unsubscribed(self, *args: object) -> None:
        pass

    def message_published(self, *args: object) -> None:
        pass


class MQTTClient(protocol.Protocol):
    """
    A minimal MQTT 3.1.1 client on the reactor: acknowledges QoS 1 messages, records
    the sequence numbers of the messages it receives, and lets a test wait for a
    number of them.
    """

    def __init__(self, client_id: str) -> None:
        self.client_id = client_id
        self.decoder = Decoder(protocol_level=4)
        self.sequence: list[int] = []
        self.acks: list[object] = []
        self._waiting: list[tuple[int, defer.Deferred[None]]] = []
        self._ack_waiting: list[tuple[type, defer.Deferred[None]]] = []

    def connectionMade(self) -> None:
        self.transport.write(encode(Connect(self.client_id, 4), 4))  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        acks = []
        for packet in self.decoder.feed(data):
            if isinstance(packet, Publish):
                self.sequence.append(int.from_bytes(packet.payload[:4], "big"))
                if packet.qos == 1:
                    acks.append(encode(Puback(packet.packet_id or 0), 4))
            else:
                self.acks.append(packet)
                for kind, waiting in list(self._ack_waiting):
                    if isinstance(packet, kind):
                        self._ack_waiting.remove((kind, waiting))
                        waiting.callback(None)
        if acks:
            self.transport.writeSequence(acks)  # type: ignore[union-attr]
        for count, waiting in list(self._waiting):
            if len(self.sequence) >= count:
                self._waiting.remove((count, waiting))
                waiting.callback(None)

    def wait_for(self, kind: type) -> defer.Deferred[None]:
        """Fires at the next packet of C{kind} that is not a PUBLISH."""
        waiting: defer.Deferred[None] = defer.Deferred()
        self._ack_waiting.append((kind, waiting))
        return waiting

    def received(self, count: int) -> defer.Deferred[None]:
        """Fires once C{count} messages have arrived."""
        waiting: defer.Deferred[None] = defer.Deferred()
        if len(self.sequence) >= count:
            waiting.callback(None)
        else:
            self._waiting.append((count, waiting))
        return waiting


def publish_batch(start: int, count: int) -> bytes:
    """
    Messages C{start} to C{start + count - 1}: even ones at QoS 0 to C{flood/0}, odd
    ones at QoS 1 to C{flood/1}; the payload starts with the sequence number.
    """
    filler = b"x" * (PAYLOAD_SIZE - 4)
    packets = []
    for seq in range(start, start + count):
        payload = seq.to_bytes(4, "big") + filler
        if seq % 2:
            packets.append(encode(Publish("flood/1", payload, 1, packet_id=seq % 65535 + 1), 4))
        else:
            packets.append(encode(Publish("flood/0", payload, 0), 4))
    return b"".join(packets)


# -- the stuck subscriber: raw blocking sockets, in a thread until subscribed -------------


def _connect_and_subscribe(client_id: str, qos: int) -> tuple[bytes, bytes]:
    """CONNECT and SUBSCRIBE to C{flood/#} at C{qos}; and the CONNACK and SUBACK due."""
    request = encode(Connect(client_id, 4, keep_alive=0), 4) + encode(
        Subscribe(1, (Subscription("flood/#", qos),)), 4
    )
    return request, encode(Connack(False, 0), 4) + encode(Suback(1, (qos,)), 4)


def _small_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Before connect(), so that the advertised window stays small.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    return sock


def _recv_exactly(sock: Any, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"closed after {data!r}")
        data += chunk
    return data


def stuck_mqtt(port: int, context: ssl.SSLContext | None, client_id: str, qos: int) -> Any:
    """Connect and subscribe over MQTT (over TLS with C{context}); never read again."""
    request, expected = _connect_and_subscribe(client_id, qos)
    sock: Any = _small_socket(port)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname="localhost")
    sock.sendall(request)
    reply = _recv_exactly(sock, len(expected))
    assert reply == expected, reply
    return sock


def _client_frame(payload: bytes) -> bytes:
    """One masked binary WebSocket frame (RFC 6455 5.2), as clients send them."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    if len(payload) < 126:
        header = bytes([0x82, 0x80 | len(payload)])
    else:
        header = bytes([0x82, 0x80 | 126]) + struct.pack("!H", len(payload))
    return header + mask + masked


def stuck_websocket(port: int, context: ssl.SSLContext | None, client_id: str, qos: int) -> Any:
    """The same over WebSocket: upgrade, connect and subscribe; never read again."""
    request, expected_reply = _connect_and_subscribe(client_id, qos)
    sock: Any = _small_socket(port)
    if context is not None:
        sock = context.wrap_socket(sock, server_hostname="localhost")
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET /mqtt HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
    )
    response = b""
    while b"\r\n\r\n" not in response:
        response += _recv_exactly(sock, 1)
    assert response.startswith(b"HTTP/1.1 101"), response
    sock.sendall(_client_frame(request))
    # The CONNACK and the SUBACK, each in a binary frame of its own.
    connack, suback = expected_reply[:4], expected_reply[4:]
    expected = bytes([0x82, len(connack)]) + connack + bytes([0x82, len(suback)]) + suback
    reply = _recv_exactly(sock, len(expected))
    assert reply == expected, reply
    return sock


# -- the tests -------------------------------------------------------------------------------


class BackpressureTests(TestCase):
    """A subscriber that stops reading, on each kind of listener."""

    timeout = 90

    def setUp(self) -> None:
        self.drops = DropCounter()
        self.broker = Broker(
            BrokerConfig(session_limits=LIMITS, connect_timeout=10), observers=[self.drops]
        )

    @defer.inlineCallbacks
    def listen(self, description: str) -> Any:
        """Start a listener of this broker on the reactor; returns its port."""
        service, _ = listener_service(parse_listener(description), self.broker, reactor)
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
    def client(self, port: int, client_id: str) -> Any:
        """A connected L{MQTTClient} on the plain TCP listener."""
        client = MQTTClient(client_id)
        connack = client.wait_for(Connack)
        yield endpoints.connectProtocol(
            endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port), client
        )
        self.addCleanup(client.transport.abortConnection)
        yield connack
        return client

    def tls_files(self) -> tuple[str, ssl.SSLContext]:
        """A server certificate file (key and chain in it) and a client context trusting it."""
        ca = trustme.CA()
        directory = tempfile.mkdtemp(prefix="mqttbroker-backpressure-")
        self.addCleanup(shutil.rmtree, directory)
        cert = os.path.join(directory, "server.pem")
        ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(cert)
        context = ssl.create_default_context()
        ca.configure_trust(context)
        return cert, context

    @defer.inlineCallbacks
    def flood_with_stuck_subscriber(self, options: str, websocket: bool = False) -> Any:
        tcp_port = yield self.listen("tcp:0:interface=127.0.0.1")
        context = None
        if "cert=" in options:
            cert, context = self.tls_files()
            options = options.replace("cert=", f"cert={cert}")
        port = yield self.listen(f"tcp:0:interface=127.0.0.1 {options}")

        healthy = yield self.client(tcp_port, "healthy")
        suback = healthy.wait_for(Suback)
        healthy.transport.write(encode(Subscribe(1, (Subscription("flood/#", 1),)), 4))
        yield suback

        # Two stuck subscribers: at QoS 0 nothing but the transport can stop the
        # flow to it; at QoS 1 its in-flight window fills (it never acknowledges)
        # and the session queues behind it.
        setup = stuck_websocket if websocket else stuck_mqtt
        stuck = {}
        for qos in (0, 1):
            client_id = f"stuck-qos{qos}"
            sock = yield threads.deferToThread(setup, port, context, client_id, qos)
            self.addCleanup(sock.close)
            session = self.broker.sessions[client_id]
            self.assertEqual(session.subscriptions, {"flood/#": qos})
            output = session.link._output  # type: ignore[union-attr]
            assert isinstance(output, MQTTServerProtocol)
            stuck[client_id] = (session, session.link, output)

        publisher = yield self.client(tcp_port, "publisher")
        largest = {
            (client_id, what): 0 for client_id in stuck for what in ("buffer", "queue", "window")
        }
        paused_seen = set()
        for start in range(0, MESSAGES, BATCH):
            publisher.transport.write(publish_batch(start, BATCH))
            yield healthy.received(start + BATCH)
            # Let the reactor write what it can for the stuck clients too.
            yield deferLater(reactor, 0, lambda: None)
            for client_id, (session, link, output) in stuck.items():
                self.assertIs(session.link, link, f"{client_id} was disconnected")
                for what, value in [
                    ("buffer", buffered_bytes(output.transport)),
                    ("queue", session.queued_count),
                    ("window", session.inflight_count),
                ]:
                    largest[client_id, what] = max(largest[client_id, what], value)
                if not link.writable:  # type: ignore[union-attr]
                    paused_seen.add(client_id)

        bound = _bound(tls=context is not None)
        summary = (
            f"{MESSAGES} messages of {PAYLOAD_SIZE} bytes; buffer bound {bound}, queue limit "
            f"{LIMITS.max_queued_messages}, window {LIMITS.max_inflight}; "
            + "; ".join(
                f"{client_id}: largest buffer {largest[client_id, 'buffer']}, queue "
                f"{largest[client_id, 'queue']}, in flight {largest[client_id, 'window']}, "
                f"dropped {self.drops.dropped.get(client_id, 0)}, paused "
                f"{client_id in paused_seen}"
                for client_id in stuck
            )
        )
        # The pressure was real: the QoS 0 subscriber's transport paused (had the
        # kernel taken everything, this would prove nothing) and both queues overflowed.
        self.assertIn("stuck-qos0", paused_seen, summary)
        for client_id in stuck:
            self.assertGreater(self.drops.dropped.get(client_id, 0), 0, summary)
            # What the broker holds for each stayed bounded.
            self.assertLessEqual(largest[client_id, "buffer"], bound, summary)
            self.assertLessEqual(largest[client_id, "queue"], LIMITS.max_queued_messages, summary)
            self.assertLessEqual(largest[client_id, "window"], LIMITS.max_inflight, summary)
        # The healthy subscriber got everything, in order; nothing dropped for it.
        self.assertEqual(healthy.sequence, list(range(MESSAGES)))
        self.assertNotIn("healthy", self.drops.dropped)
        return summary

    def test_tcp(self) -> Any:
        """Plain TCP: the socket's Twisted buffer pauses the MQTT protocol."""
        return self.flood_with_stuck_subscriber("")

    def test_tls(self) -> Any:
        """TLS: the socket under the TLS layer pauses the MQTT protocol through it."""
        return self.flood_with_stuck_subscriber("cert=")

    def test_websocket(self) -> Any:
        """WebSocket: the socket under Autobahn pauses the MQTT protocol."""
        return self.flood_with_stuck_subscriber("protocol=websocket", websocket=True)

    def test_secure_websocket(self) -> Any:
        """WebSocket over TLS: both layers between the socket and MQTT pass the pause."""
        return self.flood_with_stuck_subscriber("protocol=websocket cert=", websocket=True)
