"""
Section 3.2.2.3.4 (Maximum QoS) and 3.2.2.3.5 (Retain Available) of MQTT 5.0: what a
broker that serves less than everything must say and do.

These statements only bind a broker configured with a Maximum QoS below 2 and with
retained messages switched off, so they run against a second broker set up that way
(C{--restricted-broker HOST:PORT}; when the suite starts this project's broker it
also starts one with C{--max-qos 1 --no-retain}). Without such a broker they are not
run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from conformance.conftest import BrokerUnderTest
from conformance.test_publish import RUN, cid, topic
from conformance.wire import ClosedError, WireClient
from mqttbroker.codec import (
    Connack,
    Connect,
    Disconnect,
    Pingreq,
    Pingresp,
    PropertyId,
    Puback,
    Publish,
    Pubrec,
    Suback,
    Subscribe,
    Subscription,
    Will,
    int_property,
)

pytestmark = pytest.mark.needs_restricted

#: The configuration the restricted broker is described to have.
MAXIMUM_QOS = 1

Restricted = Callable[[], WireClient]


@pytest.fixture
def restricted(restricted_broker: BrokerUnderTest) -> Iterator[Restricted]:
    """A factory of MQTT 5 clients of the restricted broker, closed after the test."""
    clients: list[WireClient] = []

    def make() -> WireClient:
        client = WireClient(restricted_broker.host, restricted_broker.port, 5)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def _refused(client: WireClient) -> Connack:
    """The refusing CONNACK that the broker sent before closing the connection."""
    packets = client.expect_closed()
    assert len(packets) == 1 and isinstance(packets[0], Connack), packets
    assert packets[0].reason_code >= 0x80
    return packets[0]


@pytest.mark.mqtt5("MQTT-3.2.2-9")
def test_maximum_qos_is_announced(restricted: Restricted) -> None:
    connack = restricted().connect(cid("maxqos"))
    assert connack.reason_code == 0
    assert int_property(connack.properties, PropertyId.MAXIMUM_QOS, 2) == MAXIMUM_QOS


@pytest.mark.mqtt5("MQTT-3.2.2-10")
def test_subscriptions_at_any_qos_are_accepted(restricted: Restricted) -> None:
    """Granted (at no more than the maximum), never refused for asking too much."""
    client = restricted()
    client.connect(cid("subqos"))
    name = topic("restricted/subqos")
    client.send(
        Subscribe(1, tuple(Subscription(f"{name}/{qos}", qos) for qos in (0, 1, 2))),
    )
    suback = client.expect(Suback)
    assert suback.reason_codes[0] == 0
    assert suback.reason_codes[1] == 1
    assert suback.reason_codes[2] in (0, 1)
    # The QoS 2 subscription works: a QoS 1 message reaches it at the granted QoS.
    client.send(Publish(f"{name}/2", b"m", 1, packet_id=7))
    _, delivery = client.receive_until(Publish)
    assert delivery.payload == b"m"
    assert delivery.qos == suback.reason_codes[2]


@pytest.mark.mqtt5("MQTT-3.2.2-12")
def test_will_above_maximum_qos_is_refused(restricted: Restricted) -> None:
    connack = _connect_refused(restricted(), will=Will(topic("restricted/will"), b"w", 2))
    assert connack.reason_code in (0x9B, 0x80, 0x83, 0x87, 0x97, 0x99)


@pytest.mark.mqtt5("MQTT-3.2.2-11")
def test_publish_above_maximum_qos_gets_disconnect_0x9b(restricted: Restricted) -> None:
    """The broker's answer to a client that breaks the client-side rule."""
    client = restricted()
    assert client.connect(cid("pubqos")).reason_code == 0
    client.send(Publish(topic("restricted/pubqos"), b"x", 2, packet_id=1))
    packets = client.expect_closed()
    assert [type(p) for p in packets] == [Disconnect]
    assert packets[0].reason_code == 0x9B  # type: ignore[attr-defined]


@pytest.mark.mqtt5("MQTT-3.2.2-13")
def test_retained_will_is_refused(restricted: Restricted) -> None:
    connack = _connect_refused(
        restricted(), will=Will(topic("restricted/rwill"), b"w", 0, retain=True)
    )
    assert connack.reason_code in (0x9A, 0x80, 0x83)


@pytest.mark.mqtt5("MQTT-3.2.2-14")
def test_retained_publish_gets_disconnect_0x9a(restricted: Restricted) -> None:
    """Retain Available 0 is announced, and a client that ignores it is disconnected."""
    client = restricted()
    connack = client.connect(cid("rpub"))
    assert int_property(connack.properties, PropertyId.RETAIN_AVAILABLE, 1) == 0
    client.send(Publish(topic("restricted/rpub"), b"x", 0, retain=True))
    packets = client.expect_closed()
    assert [type(p) for p in packets] == [Disconnect]
    assert packets[0].reason_code == 0x9A  # type: ignore[attr-defined]


def _connect_refused(client: WireClient, will: Will) -> Connack:
    client.send(Connect(cid("refused"), 5, True, 0, will=will))
    return _refused(client)


@pytest.mark.mqtt311("MQTT-3.3.5-2")
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_unauthorized_publish_acknowledged_or_closed(
    restricted_broker: BrokerUnderTest, qos: int
) -> None:
    """
    A PUBLISH the broker's ACL refuses (under refused/, which clients may only read)
    gets the acknowledgement its QoS calls for, or the connection is closed; if it
    stays open it still serves; either way the message reaches nobody.
    """
    name = f"refused/{RUN}/{qos}"
    with (
        WireClient(restricted_broker.host, restricted_broker.port, 4) as reader,
        WireClient(restricted_broker.host, restricted_broker.port, 4) as client,
    ):
        assert reader.connect(cid(f"refused-r{qos}")).reason_code == 0
        reader.send(Subscribe(1, (Subscription(name, 1),)))
        assert reader.expect(Suback).reason_codes == (1,)
        assert client.connect(cid(f"refused-{qos}")).reason_code == 0
        client.send(Publish(name, b"x", qos, packet_id=qos or None), Pingreq())
        try:
            packets, _ = client.receive_until(Pingresp)
        except (AssertionError, ClosedError):
            assert client.closed, "neither acknowledged nor closed"
        else:
            assert packets == {0: [], 1: [Puback(1)], 2: [Pubrec(2)]}[qos], packets
        reader.expect_nothing()
