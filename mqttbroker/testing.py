"""
Test helpers for mqttbroker and for code built on it: an in-memory broker harness
whose clients talk to real L{MQTTServerProtocol}s over C{StringTransport}s, with
time driven by a L{Clock}. Deterministic: no sockets, no reactor, no sleeping.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mqttbroker.broker import Broker, BrokerConfig
from mqttbroker.codec import (
    Connack,
    Connect,
    Decoder,
    Disconnect,
    Packet,
    PropertyId,
    Publish,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Will,
    encode,
)
from mqttbroker.interfaces import IBrokerObserver
from mqttbroker.persistence import Journal
from mqttbroker.protocol import MQTTServerFactory, MQTTServerProtocol

__all__ = ["BrokerHarness", "FakeClient", "disconnect", "publish", "publish_shape", "subscribe"]


class FakeClient:
    """
    One client connection to a L{BrokerHarness}: packets in, packets out.

    @ivar transport: the server protocol's transport; C{disconnecting} tells whether
        the server closed the connection.
    """

    def __init__(self, harness: BrokerHarness, level: int, port: int) -> None:
        self.harness = harness
        self.level = level
        self.protocol: MQTTServerProtocol = harness.factory.buildProtocol(
            IPv4Address("TCP", "127.0.0.1", port)
        )
        self.transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", port))
        self.protocol.makeConnection(self.transport)
        self._decoder = Decoder(protocol_level=level)
        self._pending: list[Packet] = []
        self._lost = False
        #: Reason Strings the server sent, taken out of the packets by L{received}.
        self.reason_strings: list[str] = []

    def send(self, *packets: Packet) -> None:
        """Encode C{packets} at this client's level and deliver them to the server."""
        self.send_bytes(b"".join(encode(p, self.level) for p in packets))

    def send_bytes(self, data: bytes) -> None:
        """Deliver raw bytes to the server."""
        self.protocol.dataReceived(data)

    def received(self) -> list[Packet]:
        """
        Everything the server sent since the last call, decoded.

        Reason Strings (MQTT 5 diagnostics in free text) are taken out of the packets
        so that tests compare reason codes; they are kept, in order, in
        L{reason_strings}.
        """
        data = self.transport.value()
        self.transport.clear()
        packets, self._pending = self._pending, []
        for packet in self._decoder.feed(data):
            properties = getattr(packet, "properties", None)
            if properties and PropertyId.REASON_STRING in properties:
                properties = dict(properties)
                self.reason_strings.append(str(properties.pop(PropertyId.REASON_STRING)))
                packet = replace(packet, properties=properties)  # type: ignore[arg-type]
            packets.append(packet)
        return packets

    def keep(self, packets: list[Packet]) -> None:
        """Put C{packets} back, to be returned first by the next L{received}."""
        self._pending[:0] = packets

    @property
    def closed_by_server(self) -> bool:
        """The server asked its transport to close."""
        return bool(self.transport.disconnecting)

    def drop(self, reason: str = "connection lost") -> None:
        """The network connection ends without DISCONNECT (the server sees it lost)."""
        if not self._lost:
            self._lost = True
            from twisted.internet.error import ConnectionLost  # noqa: PLC0415
            from twisted.python.failure import Failure  # noqa: PLC0415

            self.protocol.connectionLost(Failure(ConnectionLost(reason)))

    def finish(self) -> None:
        """Deliver the close the server asked for (as the reactor would)."""
        if self.transport.disconnecting and not self._lost:
            self._lost = True
            from twisted.internet.error import ConnectionDone  # noqa: PLC0415
            from twisted.python.failure import Failure  # noqa: PLC0415

            self.protocol.connectionLost(Failure(ConnectionDone()))

    def pause(self) -> None:
        """The client stops reading: the transport tells the server its buffer is full."""
        self.protocol.pauseProducing()

    def resume(self) -> None:
        """The client reads again."""
        self.protocol.resumeProducing()


class BrokerHarness:
    """A broker, its factory and a clock, for deterministic tests."""

    def __init__(
        self,
        config: BrokerConfig | None = None,
        observers: Iterable[IBrokerObserver] = (),
        authenticators: Iterable[object] = (),
        authorizers: Iterable[object] = (),
        store: object | None = None,
    ) -> None:
        self.clock = Clock()
        journal = Journal(store, self.clock) if store is not None else None  # type: ignore[arg-type]
        self.broker = Broker(
            config,
            observers,
            clock=self.clock,
            journal=journal,
            authenticators=authenticators,  # type: ignore[arg-type]
            authorizers=authorizers,  # type: ignore[arg-type]
        )
        self.factory = MQTTServerFactory(self.broker, clock=self.clock)
        self._port = 40000

    def client(self, level: int = 4) -> FakeClient:
        """A new connection (nothing sent yet)."""
        self._port += 1
        return FakeClient(self, level, self._port)

    def connect(
        self,
        client_id: str = "",
        level: int = 4,
        clean_start: bool = True,
        keep_alive: int = 0,
        will: Will | None = None,
        **fields: object,
    ) -> tuple[FakeClient, Connack]:
        """A client that sent CONNECT, and the CONNACK it got (other packets stay)."""
        client = self.client(level)
        client.send(Connect(client_id, level, clean_start, keep_alive, will=will, **fields))  # type: ignore[arg-type]
        packets = client.received()
        assert packets and isinstance(packets[0], Connack), packets
        # Re-sent messages that followed the CONNACK stay for received().
        client.keep(packets[1:])
        return client, packets[0]


def subscribe(client: FakeClient, *filters: tuple[str, int], packet_id: int = 1) -> list[int]:
    """
    Subscribe; the SUBACK codes (retained messages that follow stay for received()).
    A persistent session's SUBACK waits for the store: the clock turns once for it.
    """
    client.send(Subscribe(packet_id, tuple(Subscription(f, q) for f, q in filters)))
    packets = client.received()
    if not any(isinstance(packet, Suback) for packet in packets):
        client.harness.clock.advance(0)
        client.keep(packets)
        packets = client.received()
    packets.sort(key=lambda packet: not isinstance(packet, Suback))
    suback = packets[0]
    assert isinstance(suback, Suback) and suback.packet_id == packet_id, packets
    client.keep(packets[1:])
    return list(suback.reason_codes)


def publish(
    client: FakeClient,
    topic: str,
    payload: bytes,
    qos: int = 0,
    retain: bool = False,
    packet_id: int | None = None,
) -> list[Packet]:
    """Publish (completing the QoS 2 handshake); what the publisher got back."""
    if qos and packet_id is None:
        packet_id = 1
    client.send(Publish(topic, payload, qos, retain, packet_id=packet_id))
    got = client.received()
    if qos == 2:
        assert packet_id is not None
        client.send(Pubrel(packet_id))
        got += client.received()
    return got


def disconnect(client: FakeClient) -> None:
    """Send DISCONNECT and let the server's close complete."""
    client.send(Disconnect())
    client.finish()


def publish_shape(packets: list[Packet]) -> list[tuple[object, ...]]:
    """(topic, payload, qos, retain, dup) of every PUBLISH among C{packets}."""
    return [(p.topic, p.payload, p.qos, p.retain, p.dup) for p in packets if isinstance(p, Publish)]
