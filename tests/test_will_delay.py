# -*- test-case-name: tests.test_will_delay -*-
"""
Tests for MQTT 5's Will Delay Interval (5.0 section 3.1.3.2.2), driven by a Clock.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from mqttbroker.codec import PropertyId, Will
from mqttbroker.testing import BrokerHarness, FakeClient, publish_shape, subscribe


def _will(delay: int) -> Will:
    return Will("wills/dev", b"gone", 1, False, {PropertyId.WILL_DELAY_INTERVAL: delay})


class WillDelayTests(SynchronousTestCase):
    """The will waits for its delay, and a new connection in time cancels it."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.watcher, _ = self.harness.connect("watcher")
        subscribe(self.watcher, ("wills/#", 1))

    def _device(self, delay: int, expiry: int = 3600) -> FakeClient:
        client, _ = self.harness.connect(
            "dev",
            level=5,
            clean_start=False,
            will=_will(delay),
            properties={PropertyId.SESSION_EXPIRY_INTERVAL: expiry},
        )
        return client

    def _wills(self) -> list[tuple[object, ...]]:
        return publish_shape(self.watcher.received())

    def test_published_after_delay(self) -> None:
        """The will is published when the delay has passed, not before [MQTT-3.1.3-9]."""
        self._device(30).drop()
        self.harness.clock.advance(29)
        self.assertEqual(self._wills(), [])
        self.harness.clock.advance(1)
        self.assertEqual(self._wills(), [("wills/dev", b"gone", 1, False, False)])

    def test_reconnect_in_time_cancels(self) -> None:
        """A new connection to the session before the delay ends cancels the will."""
        self._device(30).drop()
        self.harness.clock.advance(10)
        self._device(30)
        self.harness.clock.advance(60)
        self.assertEqual(self._wills(), [])

    def test_session_end_publishes_early(self) -> None:
        """A session that expires before the will delay publishes the will then."""
        self._device(300, expiry=20).drop()
        self.harness.clock.advance(20)
        self.assertEqual(self._wills(), [("wills/dev", b"gone", 1, False, False)])

    def test_no_delay_without_persistent_session(self) -> None:
        """With Session Expiry 0 the session ends at once, and so the will goes at once."""
        self._device(300, expiry=0).drop()
        self.assertEqual(self._wills(), [("wills/dev", b"gone", 1, False, False)])

    def test_delay_property_not_forwarded(self) -> None:
        """The Will Delay Interval is not a message property subscribers get."""
        v5, _ = self.harness.connect("v5watcher", level=5)
        subscribe(v5, ("wills/#", 1))
        self._device(0).drop()
        [message] = [p for p in v5.received() if hasattr(p, "payload")]
        self.assertNotIn(PropertyId.WILL_DELAY_INTERVAL, message.properties)  # type: ignore[union-attr]
