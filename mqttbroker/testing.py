"""
Test helpers for mqttbroker and for code built on it: an in-memory broker harness
whose clients talk to real L{MQTTServerProtocol}s over C{StringTransport}s, with
time driven by a L{Clock}. Deterministic: no sockets, no reactor, no sleeping.
"""

from __future__ import annotations

from collections.abc import Iterable

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from mqttbroker.broker import Broker, BrokerConfig
from mqttbroker.codec import Connack, Connect, Decoder, Packet, Will, encode
from mqttbroker.interfaces import IBrokerObserver
from mqttbroker.protocol import MQTTServerFactory, MQTTServerProtocol

__all__ = ["BrokerHarness", "FakeClient"]


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
        self._lost = False

    def send(self, *packets: Packet) -> None:
        """Encode C{packets} at this client's level and deliver them to the server."""
        self.send_bytes(b"".join(encode(p, self.level) for p in packets))

    def send_bytes(self, data: bytes) -> None:
        """Deliver raw bytes to the server."""
        self.protocol.dataReceived(data)

    def received(self) -> list[Packet]:
        """Everything the server sent since the last call, decoded."""
        data = self.transport.value()
        self.transport.clear()
        return list(self._decoder.feed(data))

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
        self, config: BrokerConfig | None = None, observers: Iterable[IBrokerObserver] = ()
    ) -> None:
        self.clock = Clock()
        self.broker = Broker(config, observers)
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
        if len(packets) > 1:
            # Re-sent messages that followed the CONNACK: keep them for received().
            client.transport.write(b"".join(encode(p, level) for p in packets[1:]))
        return client, packets[0]
