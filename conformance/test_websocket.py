"""
Section 6 (Using WebSocket as a network transport) of MQTT 3.1.1 and 5.0, from the
wire: the sub-protocol the server picks, binary frames only, and packets that need
not line up with frames.

The WebSocket client here is written on a plain socket (the HTTP upgrade of RFC 6455
section 4 and masked frames of section 5), so the suite depends on no WebSocket
library and can say exactly which frames it sends. The tests need the broker's
WebSocket listener (C{--ws-broker HOST:PORT[/PATH]}; the broker the suite starts
has one); without it they are not run.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from conformance.conftest import WebSocketBrokerUnderTest
from conformance.rawpackets import websocket_frame
from conformance.test_publish import cid, topic
from conformance.wire import DEFAULT_TIMEOUT
from mqttbroker.codec import (
    Connack,
    Connect,
    Decoder,
    Packet,
    Pingreq,
    Pingresp,
    Publish,
    Suback,
    Subscribe,
    Subscription,
    encode,
)

pytestmark = pytest.mark.needs_websocket

#: RFC 6455 section 1.3: the GUID appended to the key for Sec-WebSocket-Accept.
_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

P = TypeVar("P")

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocketClosedError(Exception):
    """The server closed the TCP connection."""


class WebSocketWire:
    """
    One WebSocket connection to the broker under test, carrying MQTT at C{level}.

    @ivar status: the HTTP status of the upgrade response.
    @ivar headers: its headers, with lower-case names.
    @ivar frames: every data frame received: (opcode, payload), in order.
    @ivar close_code: the status code of the server's close frame, once it sent one.
    """

    def __init__(
        self,
        address: WebSocketBrokerUnderTest,
        level: int,
        protocols: tuple[str, ...] = ("mqtt",),
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.level = level
        self.timeout = timeout
        self.sock = socket.create_connection((address.host, address.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buffer = b""
        self._decoder = Decoder(protocol_level=level)
        self._pending: list[Packet] = []
        self.frames: list[tuple[int, bytes]] = []
        self.close_code: int | None = None
        self.closed = False
        self._upgrade(address, protocols)

    def close(self) -> None:
        """Close our side."""
        with contextlib.suppress(OSError):
            self.sock.close()

    # -- the opening handshake (RFC 6455 section 4.1) ----------------------------------

    def _upgrade(self, address: WebSocketBrokerUnderTest, protocols: tuple[str, ...]) -> None:
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        lines = [
            f"GET {address.path} HTTP/1.1",
            f"Host: {address.host}:{address.port}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
        ]
        if protocols:
            lines.append(f"Sec-WebSocket-Protocol: {', '.join(protocols)}")
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
        deadline = time.monotonic() + self.timeout
        while b"\r\n\r\n" not in self._buffer:
            if not self._read(deadline):
                raise AssertionError(f"no HTTP response within {self.timeout} s")
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        self.headers: dict[str, str] = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        if self.status == 101:
            expected = base64.b64encode(hashlib.sha1((key + _GUID).encode()).digest()).decode()
            assert self.headers.get("sec-websocket-accept") == expected, self.headers

    # -- frames (RFC 6455 section 5) ------------------------------------------------------

    def send_frame(self, opcode: int, payload: bytes, *, fin: bool = True) -> None:
        """Send one masked frame (a closed connection is noted, not raised)."""
        try:
            self.sock.sendall(websocket_frame(opcode, payload, os.urandom(4), fin=fin))
        except OSError:
            self.closed = True

    def send_binary(self, data: bytes) -> None:
        """Send bytes in one binary frame."""
        self.send_frame(BINARY, data)

    def send_packets(self, *packets: Packet) -> None:
        """Send packets, each in a binary frame of its own."""
        for packet in packets:
            self.send_binary(encode(packet, self.level))

    def _read(self, deadline: float) -> bool:
        """Read once into the buffer; False when the deadline passed with nothing."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:
            data = b""
        if not data:
            self.closed = True
            raise WebSocketClosedError("the broker closed the connection")
        self._buffer += data
        return True

    def _frame(self) -> tuple[bool, int, bytes] | None:
        """Take one whole frame out of the buffer: (fin, opcode, payload), or None."""
        data = self._buffer
        if len(data) < 2:
            return None
        masked, size, offset = data[1] & 0x80, data[1] & 0x7F, 2
        if size == 126:
            if len(data) < 4:
                return None
            (size,) = struct.unpack_from("!H", data, 2)
            offset = 4
        elif size == 127:
            if len(data) < 10:
                return None
            (size,) = struct.unpack_from("!Q", data, 2)
            offset = 10
        assert not masked, "a server must not mask the frames it sends (RFC 6455 5.1)"
        if len(data) < offset + size:
            return None
        self._buffer = data[offset + size :]
        return bool(data[0] & 0x80), data[0] & 0x0F, data[offset : offset + size]

    def _read_message(self, deadline: float) -> tuple[int, bytes] | None:
        """The next data message (fragments joined); control frames handled on the way."""
        opcode, parts = None, []
        while True:
            frame = self._frame()
            if frame is None:
                if not self._read(deadline):
                    return None
                continue
            fin, frame_opcode, payload = frame
            if frame_opcode == CLOSE:
                if self.close_code is None:
                    self.close_code = struct.unpack("!H", payload[:2])[0] if payload else 1005
                    # Answer the close, as RFC 6455 5.5.1 asks; the server then ends TCP.
                    self.send_frame(CLOSE, payload[:2])
                continue
            if frame_opcode == PING:
                self.send_frame(PONG, payload)
                continue
            if frame_opcode == PONG:
                continue
            if frame_opcode != CONTINUATION:
                opcode = frame_opcode
            parts.append(payload)
            if fin:
                assert opcode is not None, "a continuation frame that continues nothing"
                message = (opcode, b"".join(parts))
                self.frames.append(message)
                return message

    # -- MQTT over the binary messages ------------------------------------------------------

    def receive(self, timeout: float | None = None) -> Packet:
        """The next MQTT packet; fails after C{timeout} seconds or on close."""
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while not self._pending:
            message = self._read_message(deadline)
            if message is None:
                raise AssertionError(f"no packet from the broker within {wait} s")
            opcode, payload = message
            assert opcode == BINARY, f"MQTT data came in a frame of opcode {opcode}, not binary"
            self._pending.extend(self._decoder.feed(payload))
        return self._pending.pop(0)

    def expect(self, kind: type[P], timeout: float | None = None) -> P:
        """The next packet, which must be of type C{kind}."""
        packet = self.receive(timeout)
        assert isinstance(packet, kind), f"expected {kind.__name__}, got {packet!r}"
        return packet

    def connect(self, client_id: str) -> Connack:
        """CONNECT (clean) in one binary frame; the CONNACK, which must accept."""
        self.send_packets(Connect(client_id, self.level))
        connack = self.expect(Connack)
        assert isinstance(connack, Connack) and connack.reason_code == 0, connack
        return connack

    def expect_closed(
        self, timeout: float | None = None, *, refused: type[Packet] | None = None
    ) -> list[Packet]:
        """
        The broker closes the connection (a close frame, then TCP, or TCP at once)
        within C{timeout}; the MQTT packets it sent meanwhile. A packet of type
        C{refused} fails at once: the broker served what it should not have.
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        packets, self._pending = self._pending, []
        try:
            while True:
                for packet in packets:
                    if refused is not None and isinstance(packet, refused):
                        raise AssertionError(f"the broker answered with {packet!r}")
                message = self._read_message(deadline)
                if message is None:
                    raise AssertionError(
                        f"the broker did not close the connection (received {packets!r})"
                    )
                packets.extend(self._decoder.feed(message[1]))
        except WebSocketClosedError:
            pass
        return packets


Connector = Callable[..., WebSocketWire]


@pytest.fixture
def ws_client(ws_broker: WebSocketBrokerUnderTest) -> Iterator[Connector]:
    """A factory of L{WebSocketWire}s to the broker under test, closed after the test."""
    clients: list[WebSocketWire] = []

    def make(level: int, protocols: tuple[str, ...] = ("mqtt",)) -> WebSocketWire:
        client = WebSocketWire(ws_broker, level, protocols)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# -- [MQTT-6.0.0-4]: the sub-protocol --------------------------------------------------------


@pytest.mark.mqtt311("MQTT-6.0.0-4")
@pytest.mark.mqtt5("MQTT-6.0.0-4")
@pytest.mark.parametrize("offered", [("mqtt",), ("x-unknown", "mqtt")], ids=["mqtt", "mqtt-second"])
def test_server_selects_mqtt_subprotocol(
    ws_client: Connector, level: int, offered: tuple[str, ...]
) -> None:
    """
    A client offering C{mqtt} (alone, or after a sub-protocol the server does not
    know) gets C{mqtt} back as the selected sub-protocol, and MQTT then works.
    """
    client = ws_client(level, offered)
    assert client.status == 101, (client.status, client.headers)
    assert client.headers.get("sec-websocket-protocol") == "mqtt", client.headers
    client.connect(cid(f"ws-subprotocol-{level}"))


# -- [MQTT-6.0.0-1]: binary frames only ----------------------------------------------------


@pytest.mark.mqtt311("MQTT-6.0.0-1")
@pytest.mark.mqtt5("MQTT-6.0.0-1")
def test_packets_travel_in_binary_frames(ws_client: Connector, level: int) -> None:
    """
    Every data frame the server sends is binary: the CONNACK, a SUBACK, a PUBLISH
    and a PINGRESP all come in binary frames.
    """
    client = ws_client(level)
    client.connect(cid(f"ws-binary-{level}"))
    name = topic(f"ws-binary-{level}")
    client.send_packets(Subscribe(1, (Subscription(name, 0),)))
    client.expect(Suback)
    client.send_packets(Publish(name, b"echo", 0))
    message = client.expect(Publish)
    assert isinstance(message, Publish) and message.payload == b"echo", message
    client.send_packets(Pingreq())
    client.expect(Pingresp)
    assert client.frames, "no data frame received"
    assert {opcode for opcode, _ in client.frames} == {BINARY}, client.frames


@pytest.mark.mqtt311("MQTT-6.0.0-1")
@pytest.mark.mqtt5("MQTT-6.0.0-1")
def test_text_frame_closes_connection(ws_client: Connector, level: int) -> None:
    """
    A text data frame (even one holding a well-formed PINGREQ) makes the server close
    the connection; the PINGREQ is not answered.
    """
    client = ws_client(level)
    client.connect(cid(f"ws-text-{level}"))
    client.send_frame(TEXT, encode(Pingreq(), level))
    client.expect_closed(refused=Pingresp)


@pytest.mark.mqtt311("MQTT-6.0.0-1")
@pytest.mark.mqtt5("MQTT-6.0.0-1")
def test_text_frame_connect_closes_connection(ws_client: Connector, level: int) -> None:
    """A CONNECT sent in a text frame is not served: the connection is closed."""
    client = ws_client(level)
    client.send_frame(TEXT, encode(Connect(cid(f"ws-text-connect-{level}"), level), level))
    client.expect_closed(refused=Connack)


# -- [MQTT-6.0.0-2]: frames and packets need not line up -------------------------------------


@pytest.mark.mqtt311("MQTT-6.0.0-2")
@pytest.mark.mqtt5("MQTT-6.0.0-2")
def test_several_packets_in_one_frame(ws_client: Connector, level: int) -> None:
    """CONNECT, SUBSCRIBE and PUBLISH in one binary frame are all served, in order."""
    client = ws_client(level)
    name = topic(f"ws-several-{level}")
    client.send_binary(
        b"".join(
            encode(packet, level)
            for packet in (
                Connect(cid(f"ws-several-{level}"), level),
                Subscribe(1, (Subscription(name, 0),)),
                Publish(name, b"in the same frame", 0),
            )
        )
    )
    connack = client.expect(Connack)
    assert isinstance(connack, Connack) and connack.reason_code == 0, connack
    client.expect(Suback)
    message = client.expect(Publish)
    assert isinstance(message, Publish), message
    assert (message.topic, message.payload) == (name, b"in the same frame")


@pytest.mark.mqtt311("MQTT-6.0.0-2")
@pytest.mark.mqtt5("MQTT-6.0.0-2")
@pytest.mark.parametrize("cut", ["first-byte", "length", "middle", "last-byte"])
def test_packet_split_across_frames(ws_client: Connector, level: int, cut: str) -> None:
    """
    A CONNECT cut in two binary frames, anywhere (after the first byte, inside the
    remaining length, in the middle, before the last byte), is served once whole; so
    is a PUBLISH cut the same way.
    """
    client = ws_client(level)
    connect = encode(Connect(cid(f"ws-split-{cut}-{level}"), level), level)
    at = {"first-byte": 1, "length": 2, "middle": len(connect) // 2, "last-byte": -1}[cut]
    client.send_binary(connect[:at])
    client.send_binary(connect[at:])
    connack = client.expect(Connack)
    assert isinstance(connack, Connack) and connack.reason_code == 0, connack
    name = topic(f"ws-split-{cut}-{level}")
    client.send_packets(Subscribe(1, (Subscription(name, 0),)))
    client.expect(Suback)
    publish = encode(Publish(name, b"x" * 300, 0), level)
    split = {"first-byte": 1, "length": 2, "middle": len(publish) // 2, "last-byte": -1}[cut]
    client.send_binary(publish[:split])
    client.send_binary(publish[split:])
    message = client.expect(Publish)
    assert isinstance(message, Publish) and message.payload == b"x" * 300, message


@pytest.mark.mqtt311("MQTT-6.0.0-2")
@pytest.mark.mqtt5("MQTT-6.0.0-2")
def test_packets_straddling_frames(ws_client: Connector, level: int) -> None:
    """
    The end of one packet and the start of the next in the same frame: CONNECT and
    SUBSCRIBE sent as three frames cut across the packet boundary.
    """
    client = ws_client(level)
    name = topic(f"ws-straddle-{level}")
    data = encode(Connect(cid(f"ws-straddle-{level}"), level), level) + encode(
        Subscribe(7, (Subscription(name, 0),)), level
    )
    boundary = len(encode(Connect(cid(f"ws-straddle-{level}"), level), level))
    for start, end in ((0, boundary - 3), (boundary - 3, boundary + 4), (boundary + 4, None)):
        client.send_binary(data[start:end])
    client.expect(Connack)
    suback = client.expect(Suback)
    assert isinstance(suback, Suback) and suback.packet_id == 7, suback


@pytest.mark.mqtt311("MQTT-6.0.0-2")
@pytest.mark.mqtt5("MQTT-6.0.0-2")
def test_packet_in_fragmented_message(ws_client: Connector, level: int) -> None:
    """A CONNECT in one binary message sent as three fragments is served."""
    client = ws_client(level)
    connect = encode(Connect(cid(f"ws-fragments-{level}"), level), level)
    client.send_frame(BINARY, connect[:2], fin=False)
    client.send_frame(CONTINUATION, connect[2:7], fin=False)
    client.send_frame(CONTINUATION, connect[7:], fin=True)
    connack = client.expect(Connack)
    assert isinstance(connack, Connack) and connack.reason_code == 0, connack
