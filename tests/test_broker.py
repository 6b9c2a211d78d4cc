# -*- test-case-name: tests.test_broker -*-
"""
Tests for L{mqttbroker.broker}: the publish pipeline in both directions (QoS 0/1/2),
subscriptions, retained messages, wills and backpressure, driven through
L{BrokerHarness} clients (no sockets, time only through the harness clock), plus a
few direct calls on L{Broker}.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from mqttbroker.broker import Broker, BrokerConfig
from mqttbroker.codec import (
    Connack,
    Disconnect,
    Pingreq,
    Pingresp,
    PropertyId,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from mqttbroker.session import Message, SessionLimits
from mqttbroker.testing import BrokerHarness, FakeClient, disconnect, publish, subscribe
from mqttbroker.testing import publish_shape as shape

# -- helpers -----------------------------------------------------------------------------


# -- inbound publish ------------------------------------------------------------------------


class InboundPublishTests(SynchronousTestCase):
    """What a publishing client gets back, per QoS."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.subscriber, _ = self.harness.connect("sub")
        subscribe(self.subscriber, ("t", 2))
        self.publisher, _ = self.harness.connect("pub")

    def test_qos0_no_ack(self) -> None:
        """A QoS 0 PUBLISH gets no answer and is delivered once, at QoS 0."""
        self.assertEqual(publish(self.publisher, "t", b"x", 0), [])
        self.assertEqual(shape(self.subscriber.received()), [("t", b"x", 0, False, False)])

    def test_qos1_puback(self) -> None:
        """A QoS 1 PUBLISH is answered with PUBACK of its packet id [MQTT-4.3.2-2]."""
        self.assertEqual(publish(self.publisher, "t", b"x", 1, packet_id=42), [Puback(42)])
        self.assertEqual(shape(self.subscriber.received()), [("t", b"x", 1, False, False)])

    def test_qos1_duplicate_delivered_again(self) -> None:
        """A re-sent QoS 1 PUBLISH (DUP) is acked and routed again (at least once)."""
        self.publisher.send(Publish("t", b"x", 1, packet_id=5))
        self.publisher.send(Publish("t", b"x", 1, dup=True, packet_id=5))
        self.assertEqual(self.publisher.received(), [Puback(5), Puback(5)])
        self.assertEqual(len(shape(self.subscriber.received())), 2)

    def test_qos2_handshake(self) -> None:
        """QoS 2: PUBREC, then PUBREL is answered with PUBCOMP, same packet id [MQTT-4.3.3-2]."""
        self.publisher.send(Publish("t", b"x", 2, packet_id=7))
        self.assertEqual(self.publisher.received(), [Pubrec(7)])
        self.assertEqual(shape(self.subscriber.received()), [("t", b"x", 2, False, False)])
        self.publisher.send(Pubrel(7))
        self.assertEqual(self.publisher.received(), [Pubcomp(7)])
        self.assertEqual(self.harness.broker.sessions["pub"].awaiting_rel, set())

    def test_qos2_resend_not_delivered_twice(self) -> None:
        """QoS 2 PUBLISH re-sent before PUBREL: PUBREC again, not routed twice [MQTT-4.3.3-2]."""
        self.publisher.send(Publish("t", b"x", 2, packet_id=7))
        self.publisher.send(Publish("t", b"x", 2, dup=True, packet_id=7))
        self.publisher.send(Publish("t", b"x", 2, dup=True, packet_id=7))
        self.assertEqual(self.publisher.received(), [Pubrec(7)] * 3)
        self.assertEqual(len(shape(self.subscriber.received())), 1)

    def test_qos2_id_new_after_pubrel(self) -> None:
        """After PUBREL the packet id is free: a new PUBLISH with it is a new message."""
        publish(self.publisher, "t", b"first", 2, packet_id=7)
        publish(self.publisher, "t", b"second", 2, packet_id=7)
        self.assertEqual([p[1] for p in shape(self.subscriber.received())], [b"first", b"second"])

    def test_qos2_independent_ids(self) -> None:
        """Different packet ids awaiting PUBREL are independent messages."""
        self.publisher.send(Publish("t", b"a", 2, packet_id=1))
        self.publisher.send(Publish("t", b"b", 2, packet_id=2))
        self.publisher.send(Pubrel(1))
        self.publisher.send(Publish("t", b"b", 2, dup=True, packet_id=2))
        self.assertEqual(self.publisher.received(), [Pubrec(1), Pubrec(2), Pubcomp(1), Pubrec(2)])
        self.assertEqual([p[1] for p in shape(self.subscriber.received())], [b"a", b"b"])

    def test_qos2_awaiting_pubrel_survives_reconnect(self) -> None:
        """A persistent session remembers ids awaiting PUBREL across reconnects (no duplicate)."""
        publisher, _ = self.harness.connect("pp", clean_start=False)
        publisher.send(Publish("t", b"x", 2, packet_id=9))
        publisher.drop()
        publisher, _ = self.harness.connect("pp", clean_start=False)
        publisher.send(Publish("t", b"x", 2, dup=True, packet_id=9))
        publisher.send(Pubrel(9))
        self.assertEqual(publisher.received(), [Pubrec(9), Pubcomp(9)])
        self.assertEqual(len(shape(self.subscriber.received())), 1)

    def test_unknown_pubrel_level4(self) -> None:
        """At level 4 a PUBREL for an unknown id is still answered with PUBCOMP."""
        self.publisher.send(Pubrel(99))
        self.assertEqual(self.publisher.received(), [Pubcomp(99)])
        self.assertFalse(self.publisher.closed_by_server)

    def test_level3_flows(self) -> None:
        """MQTT 3.1 clients publish and receive at QoS 0, 1 and 2."""
        publisher, _ = self.harness.connect("p3", level=3)
        receiver, _ = self.harness.connect("r3", level=3)
        self.assertEqual(subscribe(receiver, ("t", 2)), [2])
        self.assertEqual(publish(publisher, "t", b"1", 1, packet_id=1), [Puback(1)])
        self.assertEqual(publish(publisher, "t", b"2", 2, packet_id=2), [Pubrec(2), Pubcomp(2)])
        packets = receiver.received()
        self.assertEqual(
            shape(packets), [("t", b"1", 1, False, False), ("t", b"2", 2, False, False)]
        )
        receiver.send(Puback(packets[0].packet_id), Pubrec(packets[1].packet_id))  # type: ignore[union-attr]
        self.assertEqual(receiver.received(), [Pubrel(packets[1].packet_id)])  # type: ignore[union-attr]
        self.assertEqual(len(shape(self.subscriber.received())), 2)


# -- outbound publish ---------------------------------------------------------------------------


class OutboundPublishTests(SynchronousTestCase):
    """What a subscribing client gets: packet ids, window, re-sends, QoS."""

    def _harness(self, **limits: Any) -> BrokerHarness:
        return BrokerHarness(BrokerConfig(session_limits=SessionLimits(**limits)))

    def test_packet_ids_allocated(self) -> None:
        """Each QoS 1/2 delivery gets a non-zero packet id not in flight [MQTT-2.3.1-4]."""
        harness = self._harness()
        sub, _ = harness.connect("s")
        subscribe(sub, ("t", 2))
        pub, _ = harness.connect("p")
        for n in range(5):
            publish(pub, "t", b"%d" % n, 1 + n % 2, packet_id=1)
        ids = [p.packet_id for p in sub.received() if isinstance(p, Publish)]
        self.assertEqual(len(ids), 5)
        self.assertEqual(len(set(ids)), 5)
        self.assertTrue(all(i is not None and 1 <= i <= 0xFFFF for i in ids))

    def test_inflight_window(self) -> None:
        """At most max_inflight unacked; the rest follow acks, in order [MQTT-4.6.0-6]."""
        harness = self._harness(max_inflight=2)
        sub, _ = harness.connect("s")
        subscribe(sub, ("t", 1))
        pub, _ = harness.connect("p")
        for n in range(5):
            publish(pub, "t", b"%d" % n, 1, packet_id=n + 1)
        session = harness.broker.sessions["s"]
        unacked = sub.received()
        self.assertEqual([p[1] for p in shape(unacked)], [b"0", b"1"])
        seen = [p[1] for p in shape(unacked)]
        while unacked:
            oldest = unacked.pop(0)
            assert isinstance(oldest, Publish) and oldest.packet_id is not None
            sub.send(Puback(oldest.packet_id))
            arrived = sub.received()
            self.assertLessEqual(len(arrived), 1)
            unacked += arrived
            seen += [p[1] for p in shape(arrived)]
            self.assertLessEqual(session.inflight_count, 2)
        self.assertEqual(seen, [b"0", b"1", b"2", b"3", b"4"])
        self.assertEqual(harness.broker.sessions["s"].inflight_count, 0)

    def test_qos0_not_held_by_window(self) -> None:
        """QoS 0 messages are not counted in the in-flight window."""
        harness = self._harness(max_inflight=1)
        sub, _ = harness.connect("s")
        subscribe(sub, ("t", 1))
        pub, _ = harness.connect("p")
        publish(pub, "t", b"a", 1)
        publish(pub, "t", b"b", 0)
        self.assertEqual([p[1] for p in shape(sub.received())], [b"a", b"b"])

    def test_unacked_resent_on_reconnect(self) -> None:
        """Unacked messages are re-sent with DUP in order, then the queue [MQTT-4.4.0-1]."""
        harness = self._harness(max_inflight=3)
        sub, _ = harness.connect("s", clean_start=False)
        subscribe(sub, ("t", 2))
        pub, _ = harness.connect("p")
        for n in range(5):
            publish(pub, "t", b"%d" % n, 1 + n % 2, packet_id=n + 1)
        first = sub.received()
        ids = [p.packet_id for p in first]  # type: ignore[union-attr]
        self.assertEqual(len(ids), 3)
        sub.drop()
        sub, connack = harness.connect("s", clean_start=False)
        self.assertTrue(connack.session_present)
        again = sub.received()
        self.assertEqual(
            shape(again),
            [
                ("t", b"0", 1, False, True),
                ("t", b"1", 2, False, True),
                ("t", b"2", 1, False, True),
            ],
        )
        self.assertEqual([p.packet_id for p in again], ids)  # type: ignore[union-attr]
        sub.send(Puback(ids[0]))  # type: ignore[arg-type]
        self.assertEqual(shape(sub.received()), [("t", b"3", 2, False, False)])

    def test_qos2_outbound_flow(self) -> None:
        """Outbound QoS 2: PUBREC is answered with PUBREL, PUBCOMP completes it [MQTT-4.3.3-1]."""
        harness = self._harness()
        sub, _ = harness.connect("s")
        subscribe(sub, ("t", 2))
        pub, _ = harness.connect("p")
        publish(pub, "t", b"x", 2)
        [message] = sub.received()
        assert isinstance(message, Publish) and message.packet_id is not None
        self.assertEqual(message.qos, 2)
        sub.send(Pubrec(message.packet_id))
        self.assertEqual(sub.received(), [Pubrel(message.packet_id)])
        self.assertEqual(harness.broker.sessions["s"].inflight_count, 1)
        sub.send(Pubcomp(message.packet_id))
        self.assertEqual(sub.received(), [])
        self.assertEqual(harness.broker.sessions["s"].inflight_count, 0)

    def test_pubrel_resent_on_reconnect(self) -> None:
        """After PUBREC, a reconnect re-sends PUBREL (not the PUBLISH) [MQTT-4.4.0-1]."""
        harness = self._harness()
        sub, _ = harness.connect("s", clean_start=False)
        subscribe(sub, ("t", 2))
        pub, _ = harness.connect("p")
        publish(pub, "t", b"x", 2)
        [message] = sub.received()
        assert isinstance(message, Publish) and message.packet_id is not None
        sub.send(Pubrec(message.packet_id))
        self.assertEqual(sub.received(), [Pubrel(message.packet_id)])
        sub.drop()
        sub, _ = harness.connect("s", clean_start=False)
        self.assertEqual(sub.received(), [Pubrel(message.packet_id)])
        sub.send(Pubcomp(message.packet_id))
        self.assertEqual(harness.broker.sessions["s"].inflight_count, 0)

    def test_qos_downgraded_to_granted(self) -> None:
        """Delivery QoS is the minimum of the message's and the granted QoS [MQTT-3.8.4-6]."""
        harness = self._harness()
        subs = {}
        for granted in (0, 1, 2):
            subs[granted], _ = harness.connect(f"s{granted}")
            subscribe(subs[granted], ("t", granted))
        pub, _ = harness.connect("p")
        for qos in (0, 1, 2):
            publish(pub, "t", b"%d" % qos, qos, packet_id=qos or None)
        for granted, client in subs.items():
            with self.subTest(granted=granted):
                got = [(p[1], p[2]) for p in shape(client.received())]
                self.assertEqual(got, [(b"%d" % q, min(q, granted)) for q in (0, 1, 2)])

    def test_overlapping_subscriptions_one_copy(self) -> None:
        """Overlapping subscriptions deliver one copy at the highest granted QoS [MQTT-3.3.5-1]."""
        harness = self._harness()
        sub, _ = harness.connect("s")
        self.assertEqual(subscribe(sub, ("a/b", 0), ("a/+", 1), ("#", 2), ("a/#", 0)), [0, 1, 2, 0])
        pub, _ = harness.connect("p")
        publish(pub, "a/b", b"x", 2)
        self.assertEqual(shape(sub.received()), [("a/b", b"x", 2, False, False)])
        publish(pub, "a/b", b"y", 1)
        self.assertEqual(shape(sub.received()), [("a/b", b"y", 1, False, False)])
        publish(pub, "a/c", b"z", 2)
        self.assertEqual(shape(sub.received()), [("a/c", b"z", 2, False, False)])

    def test_publisher_receives_own_message(self) -> None:
        """At levels 3/4 a client subscribed to its own topic receives its own messages."""
        harness = self._harness()
        client, _ = harness.connect("c")
        subscribe(client, ("t", 0))
        client.send(Publish("t", b"echo"))
        self.assertEqual(shape(client.received()), [("t", b"echo", 0, False, False)])

    def test_properties_only_to_level5(self) -> None:
        """MQTT 5 message properties reach level 5 subscribers and are not sent at level 4."""
        harness = self._harness()
        v4, _ = harness.connect("v4")
        v5, _ = harness.connect("v5", level=5)
        subscribe(v4, ("t", 0))
        subscribe(v5, ("t", 0))
        pub, _ = harness.connect("p", level=5)
        pub.send(Publish("t", b"x", properties={PropertyId.CONTENT_TYPE: "text/plain"}))
        [to_v5] = v5.received()
        [to_v4] = v4.received()
        self.assertEqual(to_v5.properties, {PropertyId.CONTENT_TYPE: "text/plain"})  # type: ignore[union-attr]
        self.assertEqual(to_v4, Publish("t", b"x"))


# -- subscriptions ---------------------------------------------------------------------------------


class SubscribeTests(SynchronousTestCase):
    """SUBSCRIBE / SUBACK and UNSUBSCRIBE / UNSUBACK."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.client, _ = self.harness.connect("c")
        self.publisher, _ = self.harness.connect("p")

    def test_suback_codes(self) -> None:
        """One SUBACK, same packet id, a code per filter in order [MQTT-3.8.4-4], [MQTT-3.8.4-5]."""
        self.client.send(
            Subscribe(
                77,
                (
                    Subscription("a", 0),
                    Subscription("b/+", 1),
                    Subscription("c/#", 2),
                    Subscription("bad#", 1),
                    Subscription("d", 2),
                ),
            )
        )
        self.assertEqual(self.client.received(), [Suback(77, (0, 1, 2, 0x80, 2))])

    def test_invalid_filters_refused(self) -> None:
        """Invalid topic filters get 0x80 and no subscription [MQTT-4.7.1-2], [MQTT-4.7.1-3]."""
        for topic_filter in ("a/#/b", "a+", "#/", "x/++", "/".join(["l"] * 129)):
            with self.subTest(topic_filter=topic_filter):
                self.assertEqual(subscribe(self.client, (topic_filter, 1)), [0x80])
        self.assertEqual(self.harness.broker.sessions["c"].subscriptions, {})
        self.assertEqual(len(self.harness.broker.subscriptions), 0)

    def test_invalid_shared_subscription_refused(self) -> None:
        """A malformed '$share/...' filter is refused with 0x80 at level 4 [MQTT-4.8.2-1]."""
        self.assertEqual(
            subscribe(self.client, ("$share//t", 1), ("$share/g+/t", 1), ("$share/g", 1)),
            [0x80, 0x80, 0x80],
        )

    def test_max_qos_caps_grant(self) -> None:
        """A broker configured with max_qos grants no more than it."""
        harness = BrokerHarness(BrokerConfig(max_qos=1))
        client, _ = harness.connect("c")
        self.assertEqual(subscribe(client, ("a", 2), ("b", 0)), [1, 0])

    def test_unsubscribe(self) -> None:
        """UNSUBACK has the packet id; no more messages follow [MQTT-3.10.4-2], [MQTT-3.10.4-4]."""
        subscribe(self.client, ("t", 1), ("u/+", 1))
        self.client.send(Unsubscribe(5, ("t", "u/+")))
        self.assertEqual(self.client.received(), [Unsuback(5)])
        publish(self.publisher, "t", b"x", 1)
        publish(self.publisher, "u/1", b"x", 1)
        self.assertEqual(self.client.received(), [])
        self.assertEqual(len(self.harness.broker.subscriptions), 0)

    def test_unsubscribe_unknown(self) -> None:
        """UNSUBSCRIBE of a filter never subscribed still gets UNSUBACK [MQTT-3.10.4-5]."""
        self.client.send(Unsubscribe(6, ("nothing/here",)))
        self.assertEqual(self.client.received(), [Unsuback(6)])

    def test_unsubscribe_keeps_others(self) -> None:
        """Unsubscribing one filter leaves the client's other filters working."""
        subscribe(self.client, ("a", 1), ("b", 1))
        self.client.send(Unsubscribe(2, ("a",)))
        self.client.received()
        publish(self.publisher, "a", b"1", 1)
        publish(self.publisher, "b", b"2", 1)
        self.assertEqual([p[0] for p in shape(self.client.received())], ["b"])

    def test_resubscribe_replaces_qos(self) -> None:
        """Subscribing to the same filter again replaces its QoS [MQTT-3.8.4-3]."""
        subscribe(self.client, ("t", 2))
        self.assertEqual(subscribe(self.client, ("t", 0), packet_id=2), [0])
        self.assertEqual(self.harness.broker.sessions["c"].subscriptions, {"t": 0})
        self.assertEqual(len(self.harness.broker.subscriptions), 1)
        publish(self.publisher, "t", b"x", 2)
        self.assertEqual(shape(self.client.received()), [("t", b"x", 0, False, False)])

    def test_level5_unsuback_reason_codes(self) -> None:
        """At level 5 UNSUBACK has 0x00 per removed filter and 0x11 for one that did not exist."""
        client, _ = self.harness.connect("v5", level=5)
        subscribe(client, ("a", 1))
        client.send(Unsubscribe(3, ("a", "b")))
        self.assertEqual(
            client.received(), [Unsuback(3, (0x00, ReasonCode.NO_SUBSCRIPTION_EXISTED))]
        )
        self.assertEqual(client.reason_strings, ["no subscription existed to 'b'"])


# -- retained messages ------------------------------------------------------------------------


class RetainedTests(SynchronousTestCase):
    """Retained messages: store, replace, delete, send on subscribe."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.publisher, _ = self.harness.connect("p")

    def _new_subscriber(self, *filters: tuple[str, int]) -> list[tuple[Any, ...]]:
        client, _ = self.harness.connect()
        subscribe(client, *filters)
        return shape(client.received())

    def test_sent_on_subscribe(self) -> None:
        """A new subscriber gets the retained message, RETAIN 1 [MQTT-3.3.1-6], [MQTT-3.3.1-8]."""
        publish(self.publisher, "t", b"v", 1, retain=True)
        self.assertEqual(self._new_subscriber(("t", 1)), [("t", b"v", 1, True, False)])

    def test_retained_after_suback(self) -> None:
        """The SUBACK comes before the retained messages of that subscription."""
        publish(self.publisher, "t", b"v", 0, retain=True)
        client, _ = self.harness.connect("c")
        client.send(Subscribe(1, (Subscription("t", 0),)))
        self.assertEqual(client.received(), [Suback(1, (0,)), Publish("t", b"v", 0, retain=True)])

    def test_retained_qos_downgraded(self) -> None:
        """A retained message is sent at the minimum of its QoS and the granted QoS."""
        publish(self.publisher, "t", b"v", 2, retain=True)
        self.assertEqual(self._new_subscriber(("t", 1)), [("t", b"v", 1, True, False)])
        self.assertEqual(self._new_subscriber(("t", 0)), [("t", b"v", 0, True, False)])

    def test_replaced(self) -> None:
        """A new retained message replaces the old, QoS 0 too [MQTT-3.3.1-5], [MQTT-3.3.1-7]."""
        publish(self.publisher, "t", b"old", 1, retain=True)
        publish(self.publisher, "t", b"new", 0, retain=True)
        self.assertEqual(self._new_subscriber(("t", 1)), [("t", b"new", 0, True, False)])
        self.assertEqual(len(self.harness.broker.retained), 1)

    def test_deleted_by_empty_payload(self) -> None:
        """An empty retained PUBLISH deletes and is not stored [MQTT-3.3.1-10], [MQTT-3.3.1-11]."""
        existing, _ = self.harness.connect("existing")
        subscribe(existing, ("t", 1))
        publish(self.publisher, "t", b"v", 1, retain=True)
        publish(self.publisher, "t", b"", 1, retain=True)
        # Existing subscribers get the empty message as normal, with RETAIN 0.
        self.assertEqual(
            shape(existing.received()),
            [("t", b"v", 1, False, False), ("t", b"", 1, False, False)],
        )
        self.assertEqual(self._new_subscriber(("t", 1)), [])
        self.assertEqual(len(self.harness.broker.retained), 0)

    def test_non_retained_leaves_retained(self) -> None:
        """RETAIN 0 neither stores nor replaces the retained message [MQTT-3.3.1-12]."""
        publish(self.publisher, "t", b"kept", 0, retain=True)
        publish(self.publisher, "t", b"passing", 0, retain=False)
        publish(self.publisher, "t", b"", 0, retain=False)
        publish(self.publisher, "u", b"not kept", 0, retain=False)
        self.assertEqual(self._new_subscriber(("t", 0)), [("t", b"kept", 0, True, False)])
        self.assertEqual(self._new_subscriber(("u", 0)), [])

    def test_forwarded_with_retain_cleared(self) -> None:
        """Existing subscribers get a retained PUBLISH with RETAIN 0 [MQTT-3.3.1-9]."""
        existing, _ = self.harness.connect("existing")
        subscribe(existing, ("t", 1))
        publish(self.publisher, "t", b"v", 1, retain=True)
        self.assertEqual(shape(existing.received()), [("t", b"v", 1, False, False)])

    def test_wildcard_subscribe_gets_all_matching(self) -> None:
        """A wildcard subscribe gets all matching retained, not '$' topics [MQTT-4.7.2-1]."""
        for topic in ("a", "a/b", "a/b/c", "b", "$ops/x"):
            publish(self.publisher, topic, topic.encode(), 0, retain=True)
        self.assertEqual(
            sorted(p[0] for p in self._new_subscriber(("a/#", 0))), ["a", "a/b", "a/b/c"]
        )
        self.assertEqual(sorted(p[0] for p in self._new_subscriber(("+", 0))), ["a", "b"])
        self.assertEqual(
            sorted(p[0] for p in self._new_subscriber(("#", 0))), ["a", "a/b", "a/b/c", "b"]
        )
        self.assertEqual([p[0] for p in self._new_subscriber(("$ops/+", 0))], ["$ops/x"])
        self.assertTrue(all(p[3] for p in self._new_subscriber(("#", 0))))

    def test_resent_on_resubscribe(self) -> None:
        """Re-subscribing re-sends the matching retained messages [MQTT-3.8.4-3]."""
        publish(self.publisher, "t", b"v", 0, retain=True)
        client, _ = self.harness.connect("c")
        subscribe(client, ("t", 0))
        self.assertEqual(len(shape(client.received())), 1)
        subscribe(client, ("t", 1), packet_id=2)
        self.assertEqual(shape(client.received()), [("t", b"v", 0, True, False)])

    def test_no_retained_for_refused_filter(self) -> None:
        """A refused filter gets no retained messages."""
        publish(self.publisher, "a/b", b"v", 0, retain=True)
        self.assertEqual(self._new_subscriber(("a/#/b", 0)), [])

    def test_retained_on_subscribe_resent_if_unacked(self) -> None:
        """Retained QoS 1 messages sent on subscribe are re-sent if unacked, like any other."""
        publish(self.publisher, "t", b"v", 1, retain=True)
        client, _ = self.harness.connect("c", clean_start=False)
        subscribe(client, ("t", 1))
        [message] = client.received()
        client.drop()
        client, _ = self.harness.connect("c", clean_start=False)
        self.assertEqual(shape(client.received()), [("t", b"v", 1, True, True)])
        self.assertEqual(message.retain, True)  # type: ignore[union-attr]


# -- wills ---------------------------------------------------------------------------------


class WillTests(SynchronousTestCase):
    """The will message: when it is published, and how [MQTT-3.1.2-8]."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.watcher, _ = self.harness.connect("watcher")
        subscribe(self.watcher, ("wills/#", 2))

    def _with_will(
        self, qos: int = 1, retain: bool = False, keep_alive: int = 0, **fields: Any
    ) -> FakeClient:
        client, connack = self.harness.connect(
            "dying",
            keep_alive=keep_alive,
            will=Will("wills/dying", b"bye", qos, retain),
            **fields,
        )
        self.assertEqual(connack.reason_code, 0)
        return client

    def test_on_keep_alive_timeout(self) -> None:
        """A keep-alive timeout publishes the will, exactly once."""
        client = self._with_will(keep_alive=10)
        self.harness.clock.advance(15.1)
        self.assertTrue(client.closed_by_server)
        self.assertEqual(shape(self.watcher.received()), [("wills/dying", b"bye", 1, False, False)])
        client.finish()
        self.assertEqual(self.watcher.received(), [])

    def test_on_connection_lost(self) -> None:
        """A network connection lost without DISCONNECT publishes the will."""
        client = self._with_will()
        client.drop()
        self.assertEqual(shape(self.watcher.received()), [("wills/dying", b"bye", 1, False, False)])

    def test_on_protocol_violation(self) -> None:
        """A protocol violation closes the connection and publishes the will."""
        client = self._with_will()
        client.send(Connack(False, 0))
        self.assertTrue(client.closed_by_server)
        self.assertEqual(shape(self.watcher.received()), [("wills/dying", b"bye", 1, False, False)])
        client.finish()
        self.assertEqual(self.watcher.received(), [])

    def test_on_malformed_bytes(self) -> None:
        """Malformed bytes after CONNECT close the connection and publish the will."""
        client = self._with_will()
        client.send_bytes(b"\x00\x00")
        self.assertTrue(client.closed_by_server)
        self.assertEqual(len(shape(self.watcher.received())), 1)

    def test_on_takeover(self) -> None:
        """A session takeover publishes the old connection's will [MQTT-3.1.4-2]."""
        old = self._with_will()
        self.harness.connect("dying")
        self.assertTrue(old.closed_by_server)
        self.assertEqual(shape(self.watcher.received()), [("wills/dying", b"bye", 1, False, False)])

    def test_not_after_disconnect(self) -> None:
        """DISCONNECT discards the will [MQTT-3.1.2-10], [MQTT-3.14.4-3]."""
        client = self._with_will()
        disconnect(client)
        self.assertTrue(client.closed_by_server)
        self.assertEqual(self.watcher.received(), [])

    def test_qos_honoured(self) -> None:
        """The will is published at its Will QoS (3.1.2.6)."""
        for qos in (0, 1, 2):
            with self.subTest(qos=qos):
                self._with_will(qos=qos).drop()
                [packet] = self.watcher.received()
                self.assertEqual(packet.qos, qos)  # type: ignore[union-attr]
                if qos:
                    self.watcher.send(
                        Puback(packet.packet_id) if qos == 1 else Pubrec(packet.packet_id)
                    )  # type: ignore[union-attr]
                    self.watcher.received()

    def test_retain_honoured(self) -> None:
        """A will with Will Retain is stored as a retained message [MQTT-3.1.2-17]."""
        self._with_will(retain=True).drop()
        self.assertEqual(shape(self.watcher.received()), [("wills/dying", b"bye", 1, False, False)])
        late, _ = self.harness.connect("late")
        subscribe(late, ("wills/+", 1))
        self.assertEqual(shape(late.received()), [("wills/dying", b"bye", 1, True, False)])

    def test_not_retained_without_flag(self) -> None:
        """A will without Will Retain is not stored [MQTT-3.1.2-16]."""
        self._with_will(retain=False).drop()
        self.assertEqual(len(self.harness.broker.retained), 0)

    def test_level5_disconnect_with_will(self) -> None:
        """At level 5, DISCONNECT with reason 0x04 keeps the will, which is then published."""
        client = self._with_will(level=5)
        client.send(Disconnect(ReasonCode.DISCONNECT_WITH_WILL_MESSAGE))
        self.assertTrue(client.closed_by_server)
        self.assertEqual(len(shape(self.watcher.received())), 1)


# -- backpressure ------------------------------------------------------------------------------


class BackpressureTests(SynchronousTestCase):
    """A client whose transport is full gets its messages later, in order."""

    def test_pause_queues_resume_drains(self) -> None:
        """While paused deliveries queue; resume() sends them in order."""
        harness = BrokerHarness()
        sub, _ = harness.connect("s")
        subscribe(sub, ("t", 2))
        pub, _ = harness.connect("p")
        sub.pause()
        for n in range(6):
            publish(pub, "t", b"%d" % n, n % 3, packet_id=(n + 1) if n % 3 else None)
        self.assertEqual(sub.received(), [])
        self.assertEqual(harness.broker.sessions["s"].queued_count, 6)
        sub.resume()
        self.assertEqual(
            [(p[1], p[2]) for p in shape(sub.received())],
            [(b"%d" % n, n % 3) for n in range(6)],
        )
        self.assertEqual(harness.broker.sessions["s"].queued_count, 0)

    def test_paused_client_still_acked(self) -> None:
        """A paused client's own PUBLISH and PINGREQ are still answered (acks are not queued)."""
        harness = BrokerHarness()
        client, _ = harness.connect("c")
        client.pause()
        self.assertEqual(publish(client, "t", b"x", 1, packet_id=4), [Puback(4)])
        client.send(Pingreq())
        self.assertEqual(client.received(), [Pingresp()])

    def test_paused_queue_limit(self) -> None:
        """While paused the queue limit applies: newest messages are dropped."""
        harness = BrokerHarness(BrokerConfig(session_limits=SessionLimits(max_queued_messages=3)))
        sub, _ = harness.connect("s")
        subscribe(sub, ("t", 1))
        pub, _ = harness.connect("p")
        sub.pause()
        for n in range(5):
            publish(pub, "t", b"%d" % n, 1, packet_id=n + 1)
        sub.resume()
        self.assertEqual([p[1] for p in shape(sub.received())], [b"0", b"1", b"2"])
        self.assertEqual(harness.broker.sessions["s"].dropped, 2)

    def test_takeover_of_paused_connection(self) -> None:
        """Messages queued behind a full transport move with the session on takeover."""
        harness = BrokerHarness()
        old, _ = harness.connect("s", clean_start=False)
        subscribe(old, ("t", 1))
        pub, _ = harness.connect("p")
        old.pause()
        for n in range(3):
            publish(pub, "t", b"%d" % n, 1, packet_id=n + 1)
        self.assertEqual(old.received(), [])
        new, connack = harness.connect("s", clean_start=False)
        self.assertTrue(old.closed_by_server)
        self.assertTrue(connack.session_present)
        self.assertEqual([p[1] for p in shape(new.received())], [b"0", b"1", b"2"])

    def test_others_unaffected(self) -> None:
        """One paused subscriber does not hold up another."""
        harness = BrokerHarness()
        slow, _ = harness.connect("slow")
        fast, _ = harness.connect("fast")
        subscribe(slow, ("t", 1))
        subscribe(fast, ("t", 1))
        slow.pause()
        pub, _ = harness.connect("p")
        publish(pub, "t", b"x", 1)
        self.assertEqual(len(shape(fast.received())), 1)
        self.assertEqual(slow.received(), [])


# -- the Broker object directly ----------------------------------------------------------------


class BrokerObjectTests(SynchronousTestCase):
    """L{Broker} methods called directly."""

    def test_publish_returns_receiver_count(self) -> None:
        """publish() says how many sessions got the message, overlapping ones once."""
        harness = BrokerHarness()
        a, _ = harness.connect("a")
        b, _ = harness.connect("b")
        subscribe(a, ("t/+", 0), ("t/#", 0))
        subscribe(b, ("t/x", 0))
        broker: Broker = harness.broker
        self.assertEqual(broker.publish(Message("t/x", b"", 0, False)), (2, 0))
        self.assertEqual(broker.publish(Message("t/y", b"", 0, False)), (1, 0))
        self.assertEqual(broker.publish(Message("u", b"", 0, False)), (0, 0))

    def test_generated_client_ids_unique(self) -> None:
        """generate_client_id() never returns an id in use."""
        broker = Broker()
        ids = {broker.generate_client_id() for _ in range(50)}
        self.assertEqual(len(ids), 50)

    def test_connack_for_clean_connect(self) -> None:
        """A plain CONNECT gets CONNACK accepted, session present 0 [MQTT-3.2.2-1]."""
        harness = BrokerHarness()
        _, connack = harness.connect("c")
        self.assertEqual(connack, Connack(False, 0))


# -- a few MQTT 5 basics ------------------------------------------------------------------------


class Level5Tests(SynchronousTestCase):
    """MQTT 5 behaviour of the publish pipeline and subscription options."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.client, _ = self.harness.connect("c", level=5)
        self.publisher, _ = self.harness.connect("p", level=5)

    def test_unknown_packet_ids(self) -> None:
        """PUBREC / PUBREL for an unknown id are answered with reason 0x92 (id not found)."""
        self.client.send(Pubrec(9), Pubrel(8))
        self.assertEqual(
            self.client.received(),
            [
                Pubrel(9, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND),
                Pubcomp(8, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND),
            ],
        )
        self.assertEqual(
            self.client.reason_strings,
            [
                "no QoS 2 delivery with packet identifier 9 awaits PUBREC",
                "no QoS 2 message with packet identifier 8 awaits PUBREL",
            ],
        )
        self.assertFalse(self.client.closed_by_server)

    def test_refused_subscriptions_explained(self) -> None:
        """A SUBACK refusing a filter says which one and why, in its Reason String."""
        self.client.send(Subscribe(4, (Subscription("ok"), Subscription("a/#/b", 1))))
        self.assertEqual(self.client.received(), [Suback(4, (0x00, 0x8F))])
        self.assertEqual(self.client.reason_strings, ["refused 'a/#/b': TOPIC_FILTER_INVALID"])
        self.client.send(Subscribe(5, (Subscription("fine"),)))
        self.client.received()
        self.assertEqual(len(self.client.reason_strings), 1)

    def test_qos_flows(self) -> None:
        """
        QoS 1 and 2 publishes are acknowledged at level 5 as at level 4, with 0x10 (No
        matching subscribers) when nobody is subscribed.
        """
        self.assertEqual(
            publish(self.publisher, "t", b"1", 1, packet_id=1),
            [Puback(1, ReasonCode.NO_MATCHING_SUBSCRIBERS)],
        )
        subscribe(self.client, ("t", 2))
        self.assertEqual(publish(self.publisher, "t", b"1", 1, packet_id=1), [Puback(1)])
        self.assertEqual(
            publish(self.publisher, "t", b"2", 2, packet_id=2), [Pubrec(2), Pubcomp(2)]
        )

    def test_client_subscription_identifier_not_forwarded(self) -> None:
        """A client's Subscription Identifier never reaches subscribers [MQTT-3.3.4-6]."""
        subscribe(self.client, ("t", 0))
        self.publisher.send(
            Publish("t", b"x", properties={PropertyId.SUBSCRIPTION_IDENTIFIER: [5]})
        )
        forwarded = [
            p
            for p in self.client.received()
            if isinstance(p, Publish) and PropertyId.SUBSCRIPTION_IDENTIFIER in p.properties
        ]
        self.assertEqual(forwarded, [])

    def test_no_local(self) -> None:
        """With No Local, a client's own messages are not sent back to it [MQTT-3.8.3-3]."""
        self.client.send(Subscribe(1, (Subscription("t", 0, no_local=True),)))
        self.client.received()
        self.client.send(Publish("t", b"mine"))
        self.assertEqual(self.client.received(), [])
        self.publisher.send(Publish("t", b"theirs"))
        self.assertEqual(shape(self.client.received()), [("t", b"theirs", 0, False, False)])

    def test_retain_handling_2(self) -> None:
        """Retain Handling 2: no retained messages are sent on subscribe [MQTT-3.3.1-11 (5.0)]."""
        self.publisher.send(Publish("r", b"v", retain=True))
        self.client.send(Subscribe(1, (Subscription("r", 0, retain_handling=2),)))
        self.assertEqual(self.client.received(), [Suback(1, (0,))])

    def test_retain_as_published(self) -> None:
        """Retain As Published keeps the RETAIN flag on forwarded messages [MQTT-3.3.1-13 (5.0)]."""
        self.client.send(Subscribe(1, (Subscription("q", 0, retain_as_published=True),)))
        self.client.received()
        self.publisher.send(Publish("q", b"v", retain=True))
        self.assertEqual(shape(self.client.received()), [("q", b"v", 0, True, False)])
