# -*- test-case-name: tests.test_shared -*-
"""
Tests for shared subscriptions, C{$share/<name>/<filter>} (MQTT 5.0 section 4.8.2),
which the broker also offers to MQTT 3.1.1 clients.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mqttbroker.broker import BrokerConfig
from mqttbroker.codec import (
    PropertyId,
    Puback,
    Publish,
    ReasonCode,
    Subscribe,
    Subscription,
    Unsubscribe,
)
from mqttbroker.session import SessionLimits
from mqttbroker.testing import BrokerHarness, FakeClient, publish, publish_shape, subscribe


def _payloads(client: FakeClient) -> list[bytes]:
    return [p.payload for p in client.received() if isinstance(p, Publish)]


class SharedSubscriptionTests(SynchronousTestCase):
    """Each message goes to one member of the group."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.publisher, _ = self.harness.connect("pub")

    def _member(self, client_id: str, level: int = 4, qos: int = 1, **kw: object) -> FakeClient:
        client, _ = self.harness.connect(client_id, level=level, **kw)  # type: ignore[arg-type]
        self.assertEqual(subscribe(client, ("$share/workers/jobs/+", qos)), [qos])
        return client

    def test_round_robin(self) -> None:
        """Messages alternate between the members; each goes to exactly one."""
        a, b = self._member("a"), self._member("b", level=5)
        for n in range(6):
            publish(self.publisher, "jobs/x", b"%d" % n, 1, packet_id=n + 1)
        got_a, got_b = _payloads(a), _payloads(b)
        self.assertEqual(sorted(got_a + got_b), [b"%d" % n for n in range(6)])
        self.assertEqual((len(got_a), len(got_b)), (3, 3))

    def test_groups_and_plain_subscribers_each_get_a_copy(self) -> None:
        """Every group gets one copy, and ordinary subscribers get theirs as usual."""
        a = self._member("a")
        other, _ = self.harness.connect("other")
        subscribe(other, ("$share/auditors/jobs/#", 0))
        plain, _ = self.harness.connect("plain")
        subscribe(plain, ("jobs/x", 0))
        publish(self.publisher, "jobs/x", b"m", 1)
        self.assertEqual(_payloads(a), [b"m"])
        self.assertEqual(_payloads(other), [b"m"])
        self.assertEqual(_payloads(plain), [b"m"])

    def test_skips_member_whose_window_is_full(self) -> None:
        """A member with a full in-flight window is skipped while another has room."""
        harness = BrokerHarness(BrokerConfig(session_limits=SessionLimits(max_inflight=1)))
        publisher, _ = harness.connect("pub")
        a, _ = harness.connect("a")
        b, _ = harness.connect("b")
        subscribe(a, ("$share/g/t", 1))
        subscribe(b, ("$share/g/t", 1))
        for n in range(3):
            publish(publisher, "t", b"%d" % n, 1, packet_id=n + 1)
        # a got 0 (window now full), b got 1 (window full), 2 waits in a queue.
        self.assertEqual(len(_payloads(a)) + len(_payloads(b)), 2)

    def test_no_retained_on_shared_subscribe(self) -> None:
        """Retained messages are not sent to a shared subscription (5.0 4.8.2)."""
        publish(self.publisher, "jobs/r", b"kept", 1, retain=True)
        a = self._member("a")
        self.assertEqual(_payloads(a), [])

    def test_unsubscribe_leaves_group(self) -> None:
        """After UNSUBSCRIBE the member gets nothing more; the rest of the group does."""
        a, b = self._member("a"), self._member("b")
        a.send(Unsubscribe(9, ("$share/workers/jobs/+",)))
        a.received()
        for n in range(4):
            publish(self.publisher, "jobs/x", b"%d" % n, 1, packet_id=n + 1)
        self.assertEqual(_payloads(a), [])
        self.assertEqual(len(_payloads(b)), 4)

    def test_departing_member_hands_over_unacknowledged(self) -> None:
        """
        QoS 1 messages sent to a member whose clean session ends unacknowledged go to
        another member instead of being lost.
        """
        a, b = self._member("a"), self._member("b")
        for n in range(4):
            publish(self.publisher, "jobs/x", b"%d" % n, 1, packet_id=n + 1)
        got_b = _payloads(b)
        unacked = _payloads(a)  # a never acknowledges
        a.drop()
        handed = _payloads(b)
        self.assertEqual(sorted(handed), sorted(unacked))
        self.assertEqual(sorted(got_b + handed), [b"%d" % n for n in range(4)])

    def test_offline_persistent_member_queues(self) -> None:
        """With every member offline, a persistent member's session queues the message."""
        a = self._member("a", clean_start=False)
        a.drop()
        publish(self.publisher, "jobs/x", b"later", 1)
        back, connack = self.harness.connect("a", clean_start=False)
        self.assertTrue(connack.session_present)
        self.assertEqual([p[1] for p in publish_shape(back.received())], [b"later"])

    def test_quota_exceeded_when_only_member_is_full(self) -> None:
        """A v5 publisher hears 0x97 when the chosen member's queue is full."""
        harness = BrokerHarness(BrokerConfig(session_limits=SessionLimits(max_queued_messages=1)))
        member, _ = harness.connect("m", clean_start=False)
        subscribe(member, ("$share/g/t", 1))
        member.drop()
        publisher, _ = harness.connect("p", level=5)
        self.assertEqual(publish(publisher, "t", b"1", 1, packet_id=1), [Puback(1)])
        self.assertEqual(
            publish(publisher, "t", b"2", 1, packet_id=2),
            [Puback(2, ReasonCode.QUOTA_EXCEEDED)],
        )


class HandOverTests(SynchronousTestCase):
    """What a departing member passes on, and what it keeps ([MQTT-4.8.2-5])."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.publisher, _ = self.harness.connect("pub")

    def test_only_shared_messages_move(self) -> None:
        """
        A message the departing member got through an ordinary subscription is not
        handed to the group: the other member gets the shared copy once, not twice.
        """
        a, _ = self.harness.connect("a")
        subscribe(a, ("jobs/a", 1), ("$share/g/jobs/a", 1))
        b, _ = self.harness.connect("b")
        subscribe(b, ("$share/g/jobs/a", 1))
        publish(self.publisher, "jobs/a", b"m", 1)
        got_a, got_b = _payloads(a), _payloads(b)
        a.drop()
        self.assertEqual(len(got_a) + len(got_b), 2)
        self.assertEqual(sorted(got_b + _payloads(b)), [b"m"])

    def test_qos2_in_flight_stays(self) -> None:
        """A QoS 2 message already sent to the departing member is not sent to another."""
        a, _ = self.harness.connect("a")
        subscribe(a, ("$share/g/t", 2))
        b, _ = self.harness.connect("b")
        subscribe(b, ("$share/g/t", 2))
        publish(self.publisher, "t", b"q2", 2)
        holder, other = (a, b) if _payloads(a) else (b, a)
        holder.drop()
        self.assertEqual(_payloads(other), [])

    def test_handed_over_message_carries_receivers_identifier(self) -> None:
        """The member that takes over a message gets it with its own Subscription Identifier."""
        a, _ = self.harness.connect("a")
        subscribe(a, ("$share/g/t", 1))
        b, _ = self.harness.connect("b", level=5)
        b.send(
            Subscribe(
                1, (Subscription("$share/g/t", 1),), {PropertyId.SUBSCRIPTION_IDENTIFIER: [9]}
            )
        )
        b.received()
        publish(self.publisher, "t", b"1", 1, packet_id=1)
        publish(self.publisher, "t", b"2", 1, packet_id=2)
        b.received()
        a.drop()
        [handed] = [p for p in b.received() if isinstance(p, Publish)]
        self.assertEqual(handed.properties[PropertyId.SUBSCRIPTION_IDENTIFIER], [9])
