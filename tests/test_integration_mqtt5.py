"""
Integration tests of the MQTT 5 features with real MQTT 5 clients: paho-mqtt in
MQTTv5 mode and Debian's mosquitto_pub / mosquitto_sub with -V mqttv5, against the
broker as a process (C{python -m twisted mqtt}) on 127.0.0.1.

Every wait is bounded (a missing message fails the test after a timeout and prints
the broker's log). Absence is checked with a marker message published afterwards;
the only sleeps are the ones that let an expiry interval pass in real time.
"""

from __future__ import annotations

import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support import (
    HOST,
    TIMEOUT,
    BrokerProcess,
    IntegrationTestCase,
    PahoClient,
    require_executables,
)

MQTT5 = mqtt.MQTTv5


class Paho5(PahoClient):
    """A L{PahoClient} that can send MQTT 5 properties on SUBSCRIBE and PUBLISH."""

    def subscribe_with(
        self, topic: str, qos: int = 0, timeout: float = TIMEOUT, **properties: Any
    ) -> list[Any]:
        """Subscribe with SUBSCRIBE properties (paho names) and wait for the SUBACK."""
        props = Properties(PacketTypes.SUBSCRIBE)
        for name, value in properties.items():
            setattr(props, name, value)
        result, mid = self.client.subscribe(topic, qos, properties=props)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise AssertionError(f"subscribe failed locally: {mqtt.error_string(result)}")
        with self._condition:
            if not self._condition.wait_for(lambda: mid in self._subacks, timeout):
                raise AssertionError(f"no SUBACK for {topic!r} within {timeout} s")
            return self._subacks.pop(mid)

    def publish_with(
        self, topic: str, payload: bytes, qos: int = 0, timeout: float = TIMEOUT, **properties: Any
    ) -> None:
        """Publish with PUBLISH properties (paho names) and wait until paho is done."""
        props = Properties(PacketTypes.PUBLISH)
        for name, value in properties.items():
            setattr(props, name, value)
        info = self.client.publish(topic, payload, qos, properties=props)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise AssertionError(f"publish to {topic!r} (QoS {qos}) not completed in {timeout} s")


def prop(message: mqtt.MQTTMessage, name: str) -> Any:
    """A property of a received message, or None when it is absent."""
    properties = getattr(message, "properties", None)
    return getattr(properties, name, None) if properties is not None else None


class PahoMQTT5Tests(IntegrationTestCase):
    """paho-mqtt clients in MQTT 5 mode."""

    def setUp(self) -> None:
        self.broker = self.start_broker()

    def v5(self, client_id: str = "", **kwargs: Any) -> Paho5:
        """A connected MQTT 5 paho client; closed after the test."""
        client = Paho5(self.broker.port, client_id, protocol=MQTT5, **kwargs)
        self.addCleanup(client.close)
        return client.connect()  # type: ignore[return-value]

    def test_connack_capabilities(self) -> None:
        """paho sees the CONNACK's Topic Alias Maximum (10) and an Assigned Client Identifier
        for an empty client id [MQTT-3.2.2-16]."""
        client = self.v5("")
        self.assertEqual(client.connack_properties.get("TopicAliasMaximum"), 10)
        assigned = client.connack_properties.get("AssignedClientIdentifier")
        self.assertTrue(assigned)
        self.broker.wait_for_log(rf"Client '{assigned}' connected")

    def test_properties_pass_through(self) -> None:
        """
        User Properties (in order, a name repeated), Content Type and Payload Format
        Indicator reach an MQTT 5 subscriber unaltered [MQTT-3.3.2-4],
        [MQTT-3.3.2-17], [MQTT-3.3.2-18], [MQTT-3.3.2-20].
        """
        subscriber = self.v5("sub")
        subscriber.subscribe("props/#", 1)
        publisher = self.v5("pub")
        user = [("k", "v"), ("a", "1"), ("k", "w")]
        publisher.publish_with(
            "props/x", b"{}", 1,
            UserProperty=user, ContentType="application/json", PayloadFormatIndicator=1,
        )  # fmt: skip
        message = subscriber.next_message()
        self.assertEqual((message.topic, message.payload, message.qos), ("props/x", b"{}", 1))
        self.assertEqual(prop(message, "UserProperty"), user)
        self.assertEqual(prop(message, "ContentType"), "application/json")
        self.assertEqual(prop(message, "PayloadFormatIndicator"), 1)

    def test_request_response(self) -> None:
        """
        Request/response (5.0 §4.10): the requester's Response Topic and Correlation
        Data reach the responder unaltered [MQTT-3.3.2-15], [MQTT-3.3.2-16], which
        answers on that topic with the same Correlation Data.
        """
        requester = self.v5("requester")
        requester.subscribe("replies/requester", 1)
        responder = self.v5("responder")
        responder.subscribe("requests/time", 1)
        correlation = b"\x00\x01req-7\xff"
        requester.publish_with(
            "requests/time", b"what time is it?", 1,
            ResponseTopic="replies/requester", CorrelationData=correlation,
        )  # fmt: skip

        request = responder.next_message()
        self.assertEqual(request.payload, b"what time is it?")
        self.assertEqual(prop(request, "ResponseTopic"), "replies/requester")
        self.assertEqual(prop(request, "CorrelationData"), correlation)
        responder.publish_with(
            prop(request, "ResponseTopic"), b"noon", 1,
            CorrelationData=prop(request, "CorrelationData"),
        )  # fmt: skip

        response = requester.next_message()
        self.assertEqual(
            (response.topic, response.payload, prop(response, "CorrelationData")),
            ("replies/requester", b"noon", correlation),
        )

    def test_subscription_identifier(self) -> None:
        """A subscription made with Subscription Identifier 42 gets it back on its
        messages [MQTT-3.3.4-3]."""
        subscriber = self.v5("sub")
        subscriber.subscribe_with("ids/+", 1, SubscriptionIdentifier=42)
        self.v5("pub").publish_with("ids/a", b"x", 1)
        message = subscriber.next_message()
        self.assertEqual(prop(message, "SubscriptionIdentifier"), [42])

    def test_shared_subscription(self) -> None:
        """
        Two paho clients (one MQTT 5, one 3.1.1) share `$share/workers/jobs/#`: each
        of ten jobs reaches exactly one of them, and both get some (5.0 section 4.8.2).
        """
        first = self.v5("worker-1")
        second = PahoClient(self.broker.port, "worker-2", protocol=mqtt.MQTTv311)
        self.addCleanup(second.close)
        second.connect()
        for worker in (first, second):
            worker.subscribe("$share/workers/jobs/#", 1)
            worker.subscribe("done", 1)
        publisher = self.v5("boss")
        for n in range(10):
            publisher.publish_with(f"jobs/{n}", b"%d" % n, 1)
        # A marker on an ordinary subscription arrives after each worker's share.
        publisher.publish_with("done", b"end", 1)
        shares = [
            [m.payload for m in worker.messages_until("done", b"end") if m.topic != "done"]
            for worker in (first, second)
        ]
        self.assertEqual(sorted(shares[0] + shares[1]), sorted(b"%d" % n for n in range(10)))
        self.assertEqual([len(share) for share in shares], [5, 5])

    def test_message_expiry_online(self) -> None:
        """An online subscriber gets the Message Expiry Interval (at most the published
        60 s, less the time spent) [MQTT-3.3.2-6]."""
        subscriber = self.v5("sub")
        subscriber.subscribe("exp", 1)
        self.v5("pub").publish_with("exp", b"x", 1, MessageExpiryInterval=60)
        interval = prop(subscriber.next_message(), "MessageExpiryInterval")
        self.assertIsNotNone(interval)
        self.assertTrue(55 <= interval <= 60, interval)

    def test_message_expiry_offline(self) -> None:
        """
        A persistent subscriber is offline while three QoS 1 messages are queued for
        it: one expiring after 1 s, one after 60 s, one never. After 1.6 s it comes
        back and gets the last two, the second with less than 60 s left
        [MQTT-3.3.2-5], [MQTT-3.3.2-6].
        """
        subscriber = self.v5("offline", clean_session=False, session_expiry=60)
        subscriber.subscribe("queued", 1)
        subscriber.disconnect()
        publisher = self.v5("pub")
        publisher.publish_with("queued", b"stale", 1, MessageExpiryInterval=1)
        publisher.publish_with("queued", b"fresh", 1, MessageExpiryInterval=60)
        publisher.publish_with("queued", b"marker", 1)
        time.sleep(1.6)

        back = self.v5("offline", clean_session=False, session_expiry=60)
        self.assertTrue(back.session_present)
        received = back.messages_until("queued", b"marker")
        self.assertEqual([m.payload for m in received], [b"fresh", b"marker"])
        left = prop(received[0], "MessageExpiryInterval")
        self.assertIsNotNone(left)
        self.assertTrue(50 <= left <= 59, left)
        self.assertIsNone(prop(received[1], "MessageExpiryInterval"))

    def test_session_expiry_keeps_session(self) -> None:
        """
        Connect with Session Expiry Interval 60 and Clean Start 0, subscribe,
        disconnect; a QoS 1 message is published; reconnecting gets Session Present 1
        and the message [MQTT-3.1.2-23], [MQTT-3.2.2-3].
        """
        first = self.v5("keeper", clean_session=False, session_expiry=60)
        self.assertFalse(first.session_present)
        first.subscribe("inbox/keeper", 1)
        first.disconnect()
        self.broker.wait_for_log(r"Client 'keeper' disconnected")

        self.v5("pub").publish_with("inbox/keeper", b"while you were away", 1)

        back = self.v5("keeper", clean_session=False, session_expiry=60)
        self.assertTrue(back.session_present)
        message = back.next_message()
        self.assertEqual(
            (message.topic, message.payload, message.qos),
            ("inbox/keeper", b"while you were away", 1),
        )

    def test_session_expiry_elapsed(self) -> None:
        """With Session Expiry Interval 1, a session is gone 1.5 s after the disconnection:
        Session Present 0 [MQTT-3.1.2-23]."""
        first = self.v5("brief", clean_session=False, session_expiry=1)
        first.subscribe("inbox/brief", 1)
        first.disconnect()
        self.broker.wait_for_log(r"Client 'brief' disconnected")
        time.sleep(1.5)
        back = self.v5("brief", clean_session=False, session_expiry=60)
        self.assertFalse(back.session_present)

    def test_v5_properties_to_mqtt311_subscriber(self) -> None:
        """A v5 message with properties reaches a paho 3.1.1 subscriber as a plain message."""
        old = self.paho(self.broker, "old", protocol=mqtt.MQTTv311)
        old.subscribe("mixed", 1)
        self.v5("pub").publish_with(
            "mixed", b"plain", 1, UserProperty=[("k", "v")], ContentType="text/plain",
            MessageExpiryInterval=60,
        )  # fmt: skip
        message = old.next_message()
        self.assertEqual((message.topic, message.payload, message.qos), ("mixed", b"plain", 1))


class MosquittoMQTT5Tests(IntegrationTestCase):
    """mosquitto_pub / mosquitto_sub -V mqttv5: properties as mosquitto prints them."""

    def setUp(self) -> None:
        require_executables("mosquitto_sub", "mosquitto_pub")
        self.broker: BrokerProcess = self.start_broker()

    def _sub(self, *args: str) -> list[str]:
        return ["mosquitto_sub", "-h", HOST, "-p", str(self.broker.port), *args]

    def _pub(self, *args: str) -> list[str]:
        return ["mosquitto_pub", "-h", HOST, "-p", str(self.broker.port), *args]

    def _receive_one(self, client_id: str, topic: str, fmt: str, sub_args: list[str],
                     pub_args: list[str]) -> str:  # fmt: skip
        """Start mosquitto_sub (-C 1), publish with mosquitto_pub, return what sub printed."""
        subscriber = self.spawn(
            self._sub("-i", client_id, "-t", topic, "-q", "1", "-C", "1", "-W", "10",
                      "-F", fmt, *sub_args)
        )  # fmt: skip
        self.broker.wait_for_log(rf"Client '{client_id}' subscribed to '{topic}'")
        status, out, err = self.run_program(self._pub("-t", topic, "-q", "1", *pub_args))
        self.assertEqual(status, 0, f"mosquitto_pub failed: {out!r} {err!r}")
        out_b, err_b = subscriber.communicate(timeout=TIMEOUT)
        self.assertEqual(subscriber.returncode, 0, f"mosquitto_sub: {out_b!r} {err_b!r}")
        return out_b.decode()

    def test_user_property_and_content_type(self) -> None:
        """
        mosquitto_pub -V mqttv5 -D publish user-property k v -D publish content-type
        text/plain; mosquitto_sub -V mqttv5 -F '%P %C %t %p' prints them
        [MQTT-3.3.2-17], [MQTT-3.3.2-20].
        """
        out = self._receive_one(
            "msub", "mq5/props", "%P %C %t %p", ["-V", "mqttv5"],
            ["-V", "mqttv5", "-m", "hello",
             "-D", "publish", "user-property", "k", "v",
             "-D", "publish", "content-type", "text/plain"],
        )  # fmt: skip
        self.assertEqual(out, "k:v text/plain mq5/props hello\n")

    def test_more_properties(self) -> None:
        """
        Response Topic, Correlation Data, Payload Format Indicator, Message Expiry
        Interval and two User Properties from mosquitto_pub, and the Subscription
        Identifier mosquitto_sub subscribed with, printed by mosquitto_sub
        [MQTT-3.3.2-4], [MQTT-3.3.2-6], [MQTT-3.3.2-15], [MQTT-3.3.2-16],
        [MQTT-3.3.2-18], [MQTT-3.3.4-3].
        """
        out = self._receive_one(
            "msub2", "mq5/more", "%R|%D|%F|%E|%S|%P|%p",
            ["-V", "mqttv5", "-D", "subscribe", "subscription-identifier", "7"],
            ["-V", "mqttv5", "-m", "body",
             "-D", "publish", "response-topic", "replies/x",
             "-D", "publish", "correlation-data", "corr-1",
             "-D", "publish", "payload-format-indicator", "1",
             "-D", "publish", "message-expiry-interval", "600",
             "-D", "publish", "user-property", "a", "1",
             "-D", "publish", "user-property", "a", "2"],
        )  # fmt: skip
        fields = out.rstrip("\n").split("|")
        self.assertEqual(len(fields), 7, out)
        response_topic, correlation, pfi, expiry, sub_id, user, payload = fields
        self.assertEqual(
            (response_topic, correlation, pfi, sub_id, user, payload),
            ("replies/x", "corr-1", "1", "7", "a:1 a:2", "body"),
        )
        self.assertTrue(expiry.isdigit() and 590 <= int(expiry) <= 600, expiry)

    def test_v5_properties_to_mqtt311_subscriber(self) -> None:
        """A mosquitto_pub -V mqttv5 message with properties reaches a 3.1.1 mosquitto_sub
        as a plain message (no property is printed, payload intact)."""
        out = self._receive_one(
            "msub311", "mq5/old", "%P|%C|%t|%p", ["-V", "mqttv311"],
            ["-V", "mqttv5", "-m", "plain",
             "-D", "publish", "user-property", "k", "v",
             "-D", "publish", "content-type", "text/plain"],
        )  # fmt: skip
        self.assertEqual(out, "||mq5/old|plain\n")
