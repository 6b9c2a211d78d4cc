"""
First conformance checks, from the wire: the CONNECT handshake (section 3.1 and 3.2
of MQTT 3.1.1 and 5.0). The full clause-by-clause suite grows from here.
"""

from __future__ import annotations

import socket

from conformance.conftest import BrokerUnderTest
from mqttbroker.codec import Connack, Connect, Decoder, Packet, Pingreq, Pingresp, encode


def _exchange(broker: BrokerUnderTest, data: bytes, expect: int) -> tuple[list[Packet], bool]:
    """Send C{data}, read until C{expect} packets or the close; say whether it closed."""
    decoder = Decoder(protocol_level=broker.protocol)
    packets: list[Packet] = []
    with socket.create_connection((broker.host, broker.port), timeout=10) as sock:
        sock.sendall(data)
        while len(packets) < expect:
            chunk = sock.recv(65536)
            if not chunk:
                return packets, True
            packets.extend(decoder.feed(chunk))
        sock.settimeout(0.5)
        try:
            closed = sock.recv(1) == b""
        except TimeoutError:
            closed = False
    return packets, closed


def test_connect_gets_success_connack(broker: BrokerUnderTest) -> None:
    """[MQTT-3.2.0-1] [MQTT-3.2.2-1]: a valid CONNECT is answered by a CONNACK first."""
    level = broker.protocol
    packets, closed = _exchange(broker, encode(Connect("conf-smoke", level), level), 1)
    assert len(packets) == 1
    connack = packets[0]
    assert isinstance(connack, Connack)
    assert connack.reason_code == 0
    assert not closed


def test_pingreq_gets_pingresp(broker: BrokerUnderTest) -> None:
    """[MQTT-3.12.4-1]: the server answers PINGREQ with PINGRESP."""
    level = broker.protocol
    data = encode(Connect("conf-ping", level), level) + encode(Pingreq(), level)
    packets, _ = _exchange(broker, data, 2)
    assert packets[1:] == [Pingresp()]


def test_first_packet_must_be_connect(broker: BrokerUnderTest) -> None:
    """[MQTT-3.1.0-1]: a first packet that is not CONNECT makes the server close."""
    packets, closed = _exchange(broker, encode(Pingreq(), 4), 1)
    assert packets == []
    assert closed
