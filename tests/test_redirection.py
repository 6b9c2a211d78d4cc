# -*- test-case-name: tests.test_redirection -*-
"""
Tests for MQTT 5 server redirection (5.0 section 4.11) and Response Information
(section 4.10), which a server configures rather than negotiates.
"""

from __future__ import annotations

from twisted.python import usage
from twisted.trial.unittest import SynchronousTestCase

from mqttbroker import tap
from mqttbroker.broker import BrokerConfig
from mqttbroker.codec import Connack, Connect, Disconnect, PropertyId, ReasonCode, Will
from mqttbroker.testing import BrokerHarness, subscribe


class RedirectionTests(SynchronousTestCase):
    """Server redirection (5.0 section 4.11) and Response Information (4.10)."""

    def test_use_another_server(self) -> None:
        """With a server reference, MQTT 5 clients get CONNACK 0x9C and the reference."""

        for moved, code in (
            (False, ReasonCode.USE_ANOTHER_SERVER),
            (True, ReasonCode.SERVER_MOVED),
        ):
            harness = BrokerHarness(BrokerConfig(server_reference="b:1883", server_moved=moved))
            client = harness.client(5)
            client.send(Connect("c", 5))
            self.assertEqual(
                client.received(),
                [Connack(False, code, {PropertyId.SERVER_REFERENCE: "b:1883"})],
            )
            self.assertTrue(client.closed_by_server)
            old = harness.client(4)
            old.send(Connect("c", 4))
            self.assertEqual(old.received(), [Connack(False, 3)])

    def test_response_information(self) -> None:
        """A client that asks gets Response Information with its client id filled in."""
        harness = BrokerHarness(BrokerConfig(response_information="reply/%c/"))
        _, connack = harness.connect(
            "dev1", level=5, properties={PropertyId.REQUEST_RESPONSE_INFORMATION: 1}
        )
        self.assertEqual(connack.properties[PropertyId.RESPONSE_INFORMATION], "reply/dev1/")
        _, plain = harness.connect("dev2", level=5)
        self.assertNotIn(PropertyId.RESPONSE_INFORMATION, plain.properties)


class SizeAndLifecycleTests(SynchronousTestCase):
    """Limits the client set apply from its CONNECT on; state that ends with the process."""

    def test_refusal_respects_client_maximum_packet_size(self) -> None:
        """
        A refusal CONNACK leaves out its Reason String when it would exceed the
        client's Maximum Packet Size ([MQTT-3.1.2-24]).
        """
        harness = BrokerHarness(BrokerConfig(server_reference="elsewhere.example:1883"))
        client = harness.client(5)
        client.send(Connect("c", 5, properties={PropertyId.MAXIMUM_PACKET_SIZE: 40}))
        data = client.transport.value()
        self.assertLessEqual(len(data), 40)
        [connack] = client.received()
        assert isinstance(connack, Connack)
        self.assertEqual(connack.reason_code, ReasonCode.USE_ANOTHER_SERVER)

    def test_server_moved_needs_reference(self) -> None:
        """--server-moved alone is a usage error."""
        options = tap.Options()
        self.assertRaises(usage.UsageError, options.parseOptions, ["--server-moved"])

    def test_shutdown_publishes_delayed_wills(self) -> None:
        """At shutdown a will still waiting for its delay is published, not lost."""
        harness = BrokerHarness()
        watcher, _ = harness.connect("watcher", clean_start=False)
        subscribe(watcher, ("wills/#", 1))
        device, _ = harness.connect(
            "dev",
            level=5,
            clean_start=False,
            will=Will("wills/dev", b"gone", 1, False, {PropertyId.WILL_DELAY_INTERVAL: 600}),
            properties={PropertyId.SESSION_EXPIRY_INTERVAL: 3600},
        )
        device.drop()
        harness.broker.shutdown()
        self.assertEqual(harness.broker.sessions["watcher"].queued_count, 1)


class AdministrativeActionTests(SynchronousTestCase):
    """An operator closing a client's connection."""

    def test_disconnect_client(self) -> None:
        """MQTT 5 clients get DISCONNECT 0x98 (Administrative action) and the close."""
        harness = BrokerHarness()
        client, _ = harness.connect("victim", level=5)
        self.assertTrue(harness.broker.disconnect_client("victim", "maintenance"))
        self.assertEqual(client.received(), [Disconnect(ReasonCode.ADMINISTRATIVE_ACTION)])
        self.assertEqual(client.reason_strings, ["maintenance"])
        self.assertTrue(client.closed_by_server)
        self.assertFalse(harness.broker.disconnect_client("nobody"))
