# -*- test-case-name: tests.test_tap -*-
"""
The broker's lifecycle as a Twisted service.
"""

from __future__ import annotations

from twisted.application.service import Service

from mqttbroker.broker import Broker

__all__ = ["BrokerService"]


class BrokerService(Service):
    """
    Owns a L{Broker} for the time the application runs.

    Add it to the application before the listeners: a L{MultiService} stops its
    children in reverse order, so the listeners stop accepting first and then this
    service closes the connections that remain.
    """

    def __init__(self, broker: Broker) -> None:
        self.broker = broker

    def stopService(self) -> None:
        super().stopService()
        self.broker.shutdown()
