"""
Integration tests: the broker as a real process on 127.0.0.1, driven by clients this
project did not write (Debian's mosquitto_pub / mosquitto_sub, paho-mqtt) and by raw
sockets that break the protocol on purpose.

Every test starts its own broker (C{python -m twisted mqtt}) on a port the kernel
picks, and every wait is bounded: when something does not arrive, the test fails
after a timeout and prints the broker's log. Absence ("no will", "not delivered")
is checked with a marker message published afterwards, never with a sleep.
"""

from __future__ import annotations

import random
import signal

import paho.mqtt.client as mqtt

from tests.support import (
    HOST,
    TIMEOUT,
    BrokerProcess,
    IntegrationTestCase,
    PahoClient,
    connect_packet,
    publish_packet,
    require_executables,
    varint,
)

MQTT31 = mqtt.MQTTv31
MQTT311 = mqtt.MQTTv311
MQTT5 = mqtt.MQTTv5

#: What the keep-alive test allows before calling the connection "not closed": the
#: broker should close it after 1.5 s; this only bounds the wait.
KEEPALIVE_WAIT = 6.0


class MosquittoClientsTests(IntegrationTestCase):
    """Debian's mosquitto_sub and mosquitto_pub against the broker."""

    def setUp(self) -> None:
        require_executables("mosquitto_sub", "mosquitto_pub")
        self.broker = self.start_broker()

    def _sub(self, *args: str) -> list[str]:
        return ["mosquitto_sub", "-h", HOST, "-p", str(self.broker.port), *args]

    def _pub(self, *args: str) -> list[str]:
        return ["mosquitto_pub", "-h", HOST, "-p", str(self.broker.port), *args]

    def _offline_delivery(self, sub_version: str, pub_version: str, payload: str) -> None:
        """
        The flow the project started from: a persistent subscriber (client id
        client_id_test_10007, QoS 1) goes away, a message is published for it, and
        it gets the message when it comes back.
        """
        client_id, topic = "client_id_test_10007", "user/10007"
        # -E: exit as soon as the SUBACK arrived, so the persistent session exists.
        status, out, err = self.run_program(
            self._sub("-V", sub_version, "-c", "-i", client_id, "-t", topic, "-q", "1", "-E")
        )
        self.assertEqual(status, 0, f"first mosquitto_sub failed: {out!r} {err!r}")
        self.broker.wait_for_log(rf"Client '{client_id}' disconnected")

        status, out, err = self.run_program(
            self._pub("-V", pub_version, "-t", topic, "-q", "1", "-m", payload)
        )
        self.assertEqual(status, 0, f"mosquitto_pub failed: {out!r} {err!r}")

        status, out, err = self.run_program(
            self._sub(
                "-V", sub_version, "-c", "-i", client_id, "-t", topic, "-q", "1",
                "-C", "1", "-W", "10", "-F", "%t|%q|%r|%p",
            ),
            timeout=15,
        )  # fmt: skip
        self.assertEqual(status, 0, f"second mosquitto_sub got nothing: {out!r} {err!r}")
        self.assertEqual(out, f"{topic}|1|0|{payload}\n")

    def test_offline_message_mqtt311(self) -> None:
        """
        mosquitto_sub -c -i client_id_test_10007 -t user/10007 -q 1, stopped; a
        mosquitto_pub -q 1 to user/10007; the subscriber started again receives the
        message at QoS 1 (all MQTT 3.1.1).
        """
        self._offline_delivery("mqttv311", "mqttv311", "hello 10007")

    def test_offline_message_publisher_mqtt5(self) -> None:
        """The same flow with an MQTT 5 publisher and an MQTT 3.1.1 subscriber."""
        self._offline_delivery("mqttv311", "mqttv5", "from a v5 publisher")

    def test_offline_message_subscriber_mqtt5(self) -> None:
        """
        The same flow with an MQTT 5 subscriber (session expiry: never, as -c sets
        it) and an MQTT 3.1 publisher.
        """
        self._offline_delivery("mqttv5", "mqttv31", "from a 3.1 publisher")

    def test_wildcard_subscription(self) -> None:
        """
        mosquitto_sub -t 'sensors/#' receives what is published to sensors/a,
        sensors/b/c and sensors itself, and nothing published to other/x or
        sensorsX/a (-C 4: it exits after four messages, the last one a marker).
        """
        subscriber = self.spawn(
            self._sub("-i", "wild", "-q", "1", "-t", "sensors/#", "-C", "4", "-W", "15",
                      "-F", "%t %p")
        )  # fmt: skip
        self.broker.wait_for_log(r"Client 'wild' subscribed to 'sensors/#'")
        for topic in (
            "sensors/a",
            "other/x",
            "sensors/b/c",
            "sensorsX/a",
            "sensors",
            "sensors/end",
        ):
            status, out, err = self.run_program(
                self._pub("-t", topic, "-q", "1", "-m", f"to {topic}")
            )
            self.assertEqual(status, 0, f"mosquitto_pub to {topic} failed: {out!r} {err!r}")
        out, err = subscriber.communicate(timeout=TIMEOUT)
        self.assertEqual(subscriber.returncode, 0, f"mosquitto_sub: {out!r} {err!r}")
        self.assertEqual(
            out.decode().splitlines(),
            [
                "sensors/a to sensors/a",
                "sensors/b/c to sensors/b/c",
                "sensors to sensors",
                "sensors/end to sensors/end",
            ],
        )

    def test_will_of_killed_client(self) -> None:
        """
        A mosquitto_sub with a will (QoS 2), killed with SIGKILL, so that it never
        sends DISCONNECT: a subscriber receives the will.
        """
        watcher = self.paho(self.broker, "watcher")
        watcher.subscribe("wills/#", 2)
        doomed = self.spawn(
            self._sub(
                "-i", "doomed", "-t", "anything",
                "--will-topic", "wills/doomed", "--will-payload", "gone", "--will-qos", "2",
            )
        )  # fmt: skip
        self.broker.wait_for_log(r"Client 'doomed' subscribed to 'anything'")
        doomed.send_signal(signal.SIGKILL)
        message = watcher.next_message()
        self.assertEqual(
            (message.topic, message.payload, message.qos), ("wills/doomed", b"gone", 2)
        )
        self.assertFalse(message.retain)
        self.broker.wait_for_log(r"Client 'doomed' disconnected: connection (closed|lost)")


class QualityOfServiceTests(IntegrationTestCase):
    """paho-mqtt publishers and subscribers at each QoS, over each protocol version."""

    def _round_trip(
        self, pub_qos: int, sub_qos: int, pub_protocol: int = MQTT311, sub_protocol: int = MQTT311
    ) -> None:
        """
        Five messages published at C{pub_qos} reach a subscription of C{sub_qos}
        once each, in order, at the lower of the two QoS. The broker runs with an
        in-flight window of 2, so that all five arrive only if the broker completes
        its outbound QoS 1/2 exchanges (PUBACK, or PUBREC/PUBREL/PUBCOMP) and frees
        the window. A marker published last shows that nothing came twice.
        """
        broker = self.start_broker("--max-inflight", "2")
        subscriber = self.paho(broker, "subscriber", protocol=sub_protocol)
        granted = subscriber.subscribe("qos/test", sub_qos)
        self.assertEqual([code.value for code in granted], [sub_qos])
        publisher = self.paho(broker, "publisher", protocol=pub_protocol)
        payloads = [f"message {n} at QoS {pub_qos}".encode() for n in range(5)]
        for payload in payloads:
            publisher.publish("qos/test", payload, pub_qos)
        publisher.publish("qos/test", b"marker", pub_qos)
        received = subscriber.messages_until("qos/test", b"marker")
        self.assertEqual([m.payload for m in received], [*payloads, b"marker"])
        expected_qos = min(pub_qos, sub_qos)
        self.assertEqual({m.qos for m in received}, {expected_qos})
        self.assertEqual({bool(m.retain) for m in received}, {False})
        self.assertEqual({bool(m.dup) for m in received}, {False})

    def test_qos2_mqtt311(self) -> None:
        """QoS 2 in (publisher -> broker) and out (broker -> subscriber), MQTT 3.1.1."""
        self._round_trip(2, 2)

    def test_qos2_mqtt5(self) -> None:
        """QoS 2 in and out, MQTT 5 on both sides."""
        self._round_trip(2, 2, MQTT5, MQTT5)

    def test_qos2_mqtt31_to_mqtt5(self) -> None:
        """QoS 2 from an MQTT 3.1 publisher to an MQTT 5 subscriber."""
        self._round_trip(2, 2, MQTT31, MQTT5)

    def test_qos1_mqtt311(self) -> None:
        """QoS 1 in and out, MQTT 3.1.1."""
        self._round_trip(1, 1)

    def test_qos1_mqtt5_to_mqtt311(self) -> None:
        """QoS 1 from an MQTT 5 publisher to an MQTT 3.1.1 subscriber."""
        self._round_trip(1, 1, MQTT5, MQTT311)

    def test_qos0_mqtt311(self) -> None:
        """QoS 0 in and out, MQTT 3.1.1."""
        self._round_trip(0, 0)

    def test_qos0_mqtt5(self) -> None:
        """QoS 0 in and out, MQTT 5."""
        self._round_trip(0, 0, MQTT5, MQTT5)

    def test_qos2_published_to_qos0_subscription(self) -> None:
        """A QoS 2 message reaches a QoS 0 subscription at QoS 0."""
        self._round_trip(2, 0)

    def test_qos1_published_to_qos2_subscription(self) -> None:
        """A QoS 1 message reaches a QoS 2 subscription at QoS 1 (never upgraded)."""
        self._round_trip(1, 2)


class WillTests(IntegrationTestCase):
    """Will messages, with paho-mqtt clients."""

    def _abrupt_close(self, protocol: int) -> None:
        broker = self.start_broker()
        watcher = self.paho(broker, "watcher", protocol=protocol)
        watcher.subscribe("wills/#", 2)
        doomed = self.paho(
            broker, "doomed", protocol=protocol, will=("wills/doomed", b"gone", 1, True)
        )
        doomed.abort()

        message = watcher.next_message()
        self.assertEqual(
            (message.topic, message.payload, message.qos), ("wills/doomed", b"gone", 1)
        )
        # An established subscription gets it with RETAIN 0 ([MQTT-3.3.1-9])...
        self.assertFalse(message.retain)
        broker.wait_for_log(r"Client 'doomed' disconnected: connection lost")

        # ... and it was retained: a new subscription gets it with RETAIN 1.
        late = self.paho(broker, "late", protocol=protocol)
        late.subscribe("wills/doomed", 2)
        message = late.next_message()
        self.assertEqual(
            (message.topic, message.payload, message.qos), ("wills/doomed", b"gone", 1)
        )
        self.assertTrue(message.retain)

    def test_will_on_abrupt_close_mqtt311(self) -> None:
        """
        A client with a will (QoS 1, retained) whose socket is reset without
        DISCONNECT: the will reaches a subscriber at QoS 1, and is retained.
        """
        self._abrupt_close(MQTT311)

    def test_will_on_abrupt_close_mqtt5(self) -> None:
        """The same over MQTT 5."""
        self._abrupt_close(MQTT5)

    def test_no_will_after_disconnect(self) -> None:
        """A client with a will that disconnects with DISCONNECT: no will is published."""
        broker = self.start_broker()
        watcher = self.paho(broker, "watcher")
        watcher.subscribe("wills/#", 2)
        polite = self.paho(broker, "polite", will=("wills/polite", b"gone", 1, False))
        polite.disconnect()
        broker.wait_for_log(r"Client 'polite' disconnected: client DISCONNECT")

        watcher.publish("wills/marker", b"end", 1)
        received = watcher.messages_until("wills/marker", b"end")
        self.assertEqual([(m.topic, m.payload) for m in received], [("wills/marker", b"end")])


class RetainedMessageTests(IntegrationTestCase):
    """Retained messages, with paho-mqtt clients."""

    def test_retained_message(self) -> None:
        """
        A retained message reaches an existing subscriber with RETAIN 0, and a
        later subscriber (wildcard filter) with RETAIN 1; a newer retained message
        replaces it.
        """
        broker = self.start_broker()
        early = self.paho(broker, "early")
        early.subscribe("status/door", 1)
        publisher = self.paho(broker, "publisher")
        publisher.publish("status/door", b"open", 1, retain=True)
        message = early.next_message()
        self.assertEqual((message.payload, message.qos, bool(message.retain)), (b"open", 1, False))

        late = self.paho(broker, "late")
        late.subscribe("status/+", 2)
        message = late.next_message()
        self.assertEqual(
            (message.topic, message.payload, message.qos, bool(message.retain)),
            ("status/door", b"open", 1, True),
        )

        publisher.publish("status/door", b"closed", 0, retain=True)
        later = self.paho(broker, "later")
        later.subscribe("status/door", 2)
        message = later.next_message()
        self.assertEqual((message.payload, message.qos, bool(message.retain)), (b"closed", 0, True))

    def test_empty_retained_payload_deletes(self) -> None:
        """A retained message with an empty payload deletes the topic's retained message."""
        broker = self.start_broker()
        publisher = self.paho(broker, "publisher")
        publisher.publish("status/lamp", b"on", 1, retain=True)
        first = self.paho(broker, "first")
        first.subscribe("status/lamp", 1)
        self.assertEqual(first.next_message().payload, b"on")

        publisher.publish("status/lamp", b"", 1, retain=True)
        second = self.paho(broker, "second")
        second.subscribe("status/lamp", 1)
        # The broker sends retained messages right after the SUBACK, so a marker
        # published once the SUBACK is in comes after any of them.
        publisher.publish("status/lamp", b"marker", 1)
        received = second.messages_until("status/lamp", b"marker")
        self.assertEqual([m.payload for m in received], [b"marker"])


class TakeoverTests(IntegrationTestCase):
    """Two paho-mqtt clients with the same client id."""

    def test_takeover_clean_session(self) -> None:
        """The second connection with a client id closes the first; the second works."""
        broker = self.start_broker()
        first = self.paho(broker, "twin")
        second = self.paho(broker, "twin")
        first.wait_disconnected()
        broker.wait_for_log(r"Client 'twin' disconnected: session taken over")
        self.assertFalse(second.disconnected.is_set())
        second.subscribe("twin/topic", 1)
        second.publish("twin/topic", b"still here", 1)
        self.assertEqual(second.next_message().payload, b"still here")

    def _takeover_with_messages(self, protocol: int) -> PahoClient:
        """
        The first connection (persistent session, in-flight window 2) has received
        two QoS 1 messages without acknowledging them, and three more wait in its
        session. The second connection with the same client id finds the session,
        gets the two unacknowledged ones again (DUP 1), then the three queued ones,
        each once and in order. Returns the first client.
        """
        broker = self.start_broker("--max-inflight", "2")
        first = self.paho(
            broker, "twin", protocol=protocol, clean_session=False, session_expiry=3600,
            manual_ack=True,
        )  # fmt: skip
        first.subscribe("jobs", 1)
        publisher = self.paho(broker, "publisher")
        jobs = [f"job {n}".encode() for n in range(5)]
        for job in jobs:
            publisher.publish("jobs", job, 1)
        self.assertEqual([first.next_message().payload for _ in range(2)], jobs[:2])

        second = self.paho(
            broker, "twin", protocol=protocol, clean_session=False, session_expiry=3600
        )
        self.assertTrue(second.session_present)
        first.wait_disconnected()
        broker.wait_for_log(r"Client 'twin' disconnected: session taken over")

        publisher.publish("jobs", b"marker", 1)
        received = second.messages_until("jobs", b"marker")
        self.assertEqual([m.payload for m in received], [*jobs, b"marker"])
        self.assertEqual([bool(m.dup) for m in received], [True, True, False, False, False, False])
        self.assertEqual({m.qos for m in received}, {1})
        self.assertFalse(second.disconnected.is_set())
        return first

    def test_takeover_persistent_session_mqtt311(self) -> None:
        """The persistent session and its messages pass to the new connection (3.1.1)."""
        self._takeover_with_messages(MQTT311)

    def test_takeover_persistent_session_mqtt5(self) -> None:
        """
        The same over MQTT 5, where the first connection is told why it is closed:
        DISCONNECT with reason code 0x8E (Session taken over).
        """
        first = self._takeover_with_messages(MQTT5)
        self.assertEqual(first.disconnect_reason.value, 0x8E)


class MisbehavingClientTests(IntegrationTestCase):
    """
    Raw sockets that break the protocol. Each time, the broker closes (only) that
    connection, does not crash, logs no traceback, and keeps serving a well-behaved
    paho subscriber.
    """

    def _start(self, *args: str) -> BrokerProcess:
        broker = self.start_broker(*args)
        self.watcher = self.paho(broker, "watcher")
        self.watcher.subscribe("feed", 1)
        self.watcher.subscribe("wills/#", 1)
        self.publisher = self.paho(broker, "publisher")
        self.assert_serving("before")
        return broker

    def assert_serving(self, label: str) -> None:
        """The publisher's next message reaches the watcher, and is the next it gets."""
        payload = f"feed {label}".encode()
        self.publisher.publish("feed", payload, 1)
        message = self.watcher.next_message()
        self.assertEqual((message.topic, message.payload), ("feed", payload))

    def test_garbage_bytes(self) -> None:
        """Bytes that are no MQTT packet, instead of CONNECT: closed, no answer."""
        broker = self._start()
        raw = self.raw(broker)
        raw.send(b"\x00\xffGARBAGE\xff\xff\xff\xff\x7f")
        self.assertEqual(raw.wait_closed(), b"")
        self.assert_serving("after garbage")

    def test_garbage_after_connect(self) -> None:
        """
        Garbage from a connected client (a reserved packet type 0): the connection
        is closed, and as it ended without DISCONNECT its will is published.
        """
        broker = self._start()
        raw = self.raw(broker)
        connack = raw.connect("garbler", will=("wills/garbler", b"garbled", 1, False))
        self.assertEqual(connack, b"\x20\x02\x00\x00")
        raw.send(b"\x00\x00")
        self.assertEqual(raw.wait_closed(), b"")
        message = self.watcher.next_message()
        self.assertEqual((message.topic, message.payload), ("wills/garbler", b"garbled"))
        self.assert_serving("after garbage")

    def test_random_bytes(self) -> None:
        """
        Forty connections send seeded random bytes (half of them after a valid
        CONNECT) and hang up: the broker survives without a traceback.
        """
        broker = self._start()
        rng = random.Random(20240607)
        for n in range(40):
            raw = self.raw(broker)
            if n % 2:
                raw.connect(f"random-{n}")
            raw.send(bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 300))))
            raw.close()
        self.assert_serving("after random bytes")

    def test_publish_before_connect(self) -> None:
        """A PUBLISH as the first packet: closed, and the message goes nowhere."""
        broker = self._start()
        raw = self.raw(broker)
        raw.send(publish_packet("feed", b"sneaky", qos=1))
        self.assertEqual(raw.wait_closed(), b"")
        # The next message the watcher gets is this one, not "sneaky".
        self.assert_serving("after sneaky publish")

    def test_oversized_packet_mqtt311(self) -> None:
        """
        With --max-packet-size 1024, a connected 3.1.1 client announcing a PUBLISH
        of 100 000 bytes is closed at once (it never sends the body), and the
        message goes nowhere.
        """
        broker = self._start("--max-packet-size", "1024")
        raw = self.raw(broker)
        self.assertEqual(raw.connect("big"), b"\x20\x02\x00\x00")
        raw.send(b"\x30" + varint(100_000) + b"\x00\x04feed" + b"x" * 100)
        self.assertEqual(raw.wait_closed(), b"")
        self.assert_serving("after oversized")
        broker.wait_for_log(r"Client 'big' disconnected: protocol error")

    def test_oversized_packet_mqtt5(self) -> None:
        """
        The same over MQTT 5: the broker says why, with DISCONNECT reason code
        0x95 (Packet too large), then closes.
        """
        broker = self._start("--max-packet-size", "1024")
        raw = self.raw(broker)
        connack = raw.connect("big5", level=5)
        self.assertEqual(connack[0], 0x20)
        self.assertEqual(connack[3], 0x00, f"CONNACK {connack!r}")
        raw.send(b"\x30" + varint(100_000) + b"\x00\x04feed\x00" + b"x" * 100)
        data = raw.wait_closed()
        self.assertEqual(data[:1], b"\xe0", f"expected DISCONNECT, got {data!r}")
        self.assertEqual(data[2], 0x95, f"expected reason 0x95, got {data!r}")
        self.assert_serving("after oversized")

    def test_mqtt5_connack_announces_maximum_packet_size(self) -> None:
        """
        With --max-packet-size 1024, the MQTT 5 CONNACK carries Maximum Packet Size
        1024: without it a client must assume no limit (MQTT 5, 3.2.2.3.6) and has
        no way to know its 2 kB PUBLISH would be refused.
        """
        broker = self.start_broker("--max-packet-size", "1024")
        client = self.paho(broker, "probe", protocol=MQTT5)
        properties = client.connack_properties
        self.assertEqual(properties.get("MaximumPacketSize"), 1024, f"CONNACK {properties}")

    def _half_sent_packet(self, level: int) -> bytes:
        """
        A client with keep alive 1 s and a will sends the first bytes of a PUBLISH
        and nothing more. Meanwhile the watcher keeps getting messages; the broker
        closes the connection after 1.5 times the keep alive (the wait is bounded
        by a few seconds, the time is not asserted) and publishes the will.
        Returns what the broker sent before closing.
        """
        broker = self._start()
        raw = self.raw(broker)
        connack = raw.connect(
            "halfway", keepalive=1, level=level, will=("wills/halfway", b"timed out", 1, False)
        )
        self.assertEqual(connack[0], 0x20)
        whole = publish_packet("feed", b"never finished " * 4, level=level)
        raw.send(whole[:10])
        self.assert_serving("while a packet is half sent")

        data = raw.wait_closed(KEEPALIVE_WAIT)
        message = self.watcher.next_message()
        self.assertEqual((message.topic, message.payload), ("wills/halfway", b"timed out"))
        broker.wait_for_log(r"Client 'halfway' disconnected: keep alive timeout")
        self.assert_serving("after the half-sent packet")
        return data

    def test_half_sent_packet_mqtt311(self) -> None:
        """A 3.1.1 client stops in the middle of a PUBLISH: closed after its keep alive."""
        self.assertEqual(self._half_sent_packet(4), b"")

    def test_half_sent_packet_mqtt5(self) -> None:
        """
        The same over MQTT 5, where the broker first sends DISCONNECT with reason
        code 0x8D (Keep Alive timeout).
        """
        data = self._half_sent_packet(5)
        self.assertEqual(data[:1], b"\xe0", f"expected DISCONNECT, got {data!r}")
        self.assertEqual(data[2], 0x8D, f"expected reason 0x8D, got {data!r}")

    def test_half_sent_connect(self) -> None:
        """
        A client that sends half a CONNECT and stops is closed after the connect
        timeout (--connect-timeout 1), without any answer.
        """
        broker = self._start("--connect-timeout", "1")
        raw = self.raw(broker)
        raw.send(connect_packet("slow")[:7])
        self.assertEqual(raw.wait_closed(KEEPALIVE_WAIT), b"")
        broker.wait_for_log(r"no CONNECT (\(or no authentication\) )?within 1\.0 s")
        self.assert_serving("after the half-sent CONNECT")
