# -*- test-case-name: tests.test_redirection -*-
"""
Tests for MQTT 5 server redirection (5.0 section 4.11) and Response Information
(section 4.10), which a server configures rather than negotiates.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mqttbroker.broker import BrokerConfig
from mqttbroker.codec import Connack, Connect, PropertyId, ReasonCode
from mqttbroker.testing import BrokerHarness


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
