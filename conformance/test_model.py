"""
A model-based test: several clients connect, subscribe, publish at every QoS,
disconnect and come back with and without clean sessions, while a small reference
model of MQTT's semantics predicts what each client must receive (sections 3.1.2.4,
3.3, 4.3, 4.4 and 4.6). Hypothesis chooses the sequences; the broker under test runs
them over real sockets.

Bounded: MQTTBROKER_MODEL_EXAMPLES examples (default 8) of at most 20 steps.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from conformance.conftest import BrokerUnderTest
from conformance.wire import WireClient
from mqttbroker.codec import (
    Disconnect,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
)

CLIENTS = ("alice", "bob", "carol")
TOPICS = ("inbox", "news")
EXAMPLES = int(os.environ.get("MQTTBROKER_MODEL_EXAMPLES", "8"))


class _Model:
    """What MQTT says each session holds."""

    def __init__(self) -> None:
        #: client -> {topic: granted QoS}, for sessions that exist on the broker.
        self.sessions: dict[str, dict[str, int]] = {}
        #: client -> whether its session is persistent (Clean Session 0).
        self.persistent: dict[str, bool] = {}
        #: client -> messages (topic, payload, qos) queued while it was offline.
        self.queued: dict[str, list[tuple[str, bytes, int]]] = {}


def _machine(broker: BrokerUnderTest, level: int) -> type[RuleBasedStateMachine]:
    class BrokerModel(RuleBasedStateMachine):
        """Drives the broker and the model side by side."""

        def __init__(self) -> None:
            super().__init__()
            self.run = uuid.uuid4().hex[:8]
            self.model = _Model()
            self.online: dict[str, WireClient] = {}
            self.count = 0

        def _id(self, name: str) -> str:
            return f"model-{self.run}-{name}"

        def _topic(self, topic: str) -> str:
            return f"model/{self.run}/{topic}"

        def _receive(self, client: WireClient, expected: list[tuple[str, bytes, int]]) -> None:
            """Receive exactly the expected messages, in order, acknowledging each."""
            for topic, payload, qos in expected:
                packet = client.expect(Publish)
                assert (packet.topic, packet.payload, packet.qos) == (
                    self._topic(topic),
                    payload,
                    qos,
                ), f"expected {(topic, payload, qos)}, got {packet!r}"
                if qos == 1:
                    assert packet.packet_id is not None
                    client.send(Puback(packet.packet_id))
                elif qos == 2:
                    assert packet.packet_id is not None
                    client.send(Pubrec(packet.packet_id))
                    assert client.expect(Pubrel).packet_id == packet.packet_id
                    client.send(Pubcomp(packet.packet_id))

        @initialize()
        def start(self) -> None:
            pass

        @rule(name=st.sampled_from(CLIENTS), clean=st.booleans())
        def connect(self, name: str, clean: bool) -> None:
            if name in self.online:
                return
            client = WireClient(broker.host, broker.port, level)
            model = self.model
            existed = name in model.sessions and model.persistent.get(name, False)
            props: dict[Any, Any] = {}
            if level == 5 and not clean:
                props = {0x11: 0xFFFFFFFF}  # Session Expiry: keep it, as 3.1.1 does
            connack = client.connect(self._id(name), clean, properties=props)
            # [MQTT-3.2.2-1], [MQTT-3.2.2-2]: session present says whether it resumed.
            assert connack.session_present == (existed and not clean)
            if clean or not existed:
                model.sessions[name] = {}
                model.queued[name] = []
            model.persistent[name] = not clean
            self.online[name] = client
            # [MQTT-4.4.0-1] / 3.1.2.4: what waited for it arrives now, in order.
            self._receive(client, model.queued.pop(name, []))
            model.queued[name] = []

        @precondition(lambda self: bool(self.online))
        @rule(data=st.data(), topic=st.sampled_from(TOPICS), qos=st.integers(0, 2))
        def subscribe(self, data: st.DataObject, topic: str, qos: int) -> None:
            name = data.draw(st.sampled_from(sorted(self.online)))
            client = self.online[name]
            client.send(Subscribe(1, (Subscription(self._topic(topic), qos),)))
            suback = client.expect(Suback)
            assert suback.reason_codes == (qos,)
            self.model.sessions[name][topic] = qos

        @precondition(lambda self: bool(self.online))
        @rule(data=st.data(), topic=st.sampled_from(TOPICS), qos=st.integers(0, 2))
        def publish(self, data: st.DataObject, topic: str, qos: int) -> None:
            sender = data.draw(st.sampled_from(sorted(self.online)))
            client = self.online[sender]
            self.count += 1
            payload = b"m%d" % self.count
            pid = self.count % 65535 + 1
            client.send(Publish(self._topic(topic), payload, qos, packet_id=pid if qos else None))
            # First the publisher's own flow: a broker may pass a QoS 2 message on
            # when the PUBLISH arrives or only after PUBREL (4.3.3 allows both).
            if qos == 1:
                packets, ack = client.receive_until(Puback)
                assert ack.packet_id == pid
            elif qos == 2:
                packets, rec = client.receive_until(Pubrec)
                assert rec.packet_id == pid
                client.send(Pubrel(pid))
                more, comp = client.receive_until(Pubcomp)
                packets += more
                assert comp.packet_id == pid
            else:
                packets = []
            for packet in packets:
                client._pending.append(packet)
            for name, subscriptions in self.model.sessions.items():
                if topic not in subscriptions:
                    continue
                delivered = min(qos, subscriptions[topic])  # [MQTT-3.8.4-6] downgrade
                entry = (topic, payload, delivered)
                if name in self.online:
                    self._receive(self.online[name], [entry])
                elif self.model.persistent.get(name) and delivered > 0:
                    self.model.queued.setdefault(name, []).append(entry)

        @precondition(lambda self: bool(self.online))
        @rule(data=st.data(), clean_exit=st.booleans())
        def disconnect(self, data: st.DataObject, clean_exit: bool) -> None:
            name = data.draw(st.sampled_from(sorted(self.online)))
            client = self.online.pop(name)
            if clean_exit:
                client.send(Disconnect())
                # The server SHOULD close now (3.1.1 3.14.4); the client MUST close
                # ([MQTT-3.14.4-1]): give the server a moment, then close ourselves.
                with contextlib.suppress(AssertionError):
                    client.expect_closed(timeout=1.0)
            client.close()
            if not self.model.persistent.get(name):
                # [MQTT-3.1.2-6]: a clean session ends with its connection.
                self.model.sessions.pop(name, None)
                self.model.queued.pop(name, None)

        @invariant()
        def nothing_unexpected(self) -> None:
            for client in self.online.values():
                assert not client._pending, client._pending

        def teardown(self) -> None:
            for client in self.online.values():
                client.close()
            # Leave no persistent sessions behind on the broker under test.
            for name in self.model.persistent:
                cleaner = WireClient(broker.host, broker.port, level)
                cleaner.connect(self._id(name), True)
                cleaner.send(Disconnect())
                cleaner.close()

    return BrokerModel


@pytest.mark.mqtt311("MQTT-3.2.2-1", "MQTT-3.2.2-2", "MQTT-3.1.2-6", "MQTT-4.3.3-1", "MQTT-4.6.0-6")
@pytest.mark.mqtt5("MQTT-3.2.2-2", "MQTT-3.2.2-3", "MQTT-4.6.0-6")
def test_model(broker: BrokerUnderTest, level: int) -> None:
    """Random sessions of connect/subscribe/publish/disconnect match the model."""
    machine = _machine(broker, level)
    machine.TestCase.settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=20,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    machine.TestCase().runTest()
