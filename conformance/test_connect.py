"""
Section 3.1 (CONNECT), 3.2 (CONNACK) and 3.12-3.13 (PINGREQ/PINGRESP), from the wire.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conformance.wire import WireClient
from mqttbroker.codec import Connack, Connect, Pingreq, Pingresp, encode

Client = Callable[[int], WireClient]


@pytest.mark.mqtt311("MQTT-3.2.0-1")
@pytest.mark.mqtt5("MQTT-3.2.0-1")
def test_connect_gets_connack_first(connect_client: Client, level: int) -> None:
    """A valid CONNECT is answered, first, by a success CONNACK."""
    client = connect_client(level)
    connack = client.connect("conf-connect")
    assert connack.reason_code == 0
    client.expect_nothing()


@pytest.mark.mqtt311("MQTT-3.12.4-1")
@pytest.mark.mqtt5("MQTT-3.12.4-1")
def test_pingreq_gets_pingresp(connect_client: Client, level: int) -> None:
    """The server answers PINGREQ with PINGRESP."""
    client = connect_client(level)
    client.connect("conf-ping")
    client.send(Pingreq())
    client.expect(Pingresp)


@pytest.mark.mqtt311("MQTT-3.1.0-1")
@pytest.mark.mqtt5("MQTT-3.1.0-1")
def test_first_packet_must_be_connect(connect_client: Client, level: int) -> None:
    """A first packet other than CONNECT makes the server close the connection."""
    client = connect_client(level)
    client.send_bytes(encode(Pingreq(), 4))
    assert client.expect_closed() == []


@pytest.mark.mqtt311("MQTT-3.1.0-2")
@pytest.mark.mqtt5("MQTT-3.1.0-2")
def test_second_connect_is_a_violation(connect_client: Client, level: int) -> None:
    """A second CONNECT on a connection is a protocol violation: the server closes."""
    client = connect_client(level)
    client.connect("conf-second")
    client.send(Connect("conf-second", level))
    packets = client.expect_closed()
    assert all(not isinstance(p, Connack) for p in packets)
