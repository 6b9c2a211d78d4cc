# -*- test-case-name: tests.test_observers -*-
"""
Built-in broker observers.

L{LoggingObserver} writes the broker's events to C{twisted.logger}: connections,
disconnections with their reason, and subscriptions at info level; nothing per
message above debug (a busy broker must not format a log line per message).
"""

from __future__ import annotations

from twisted.logger import Logger
from zope.interface import implementer

from mqttbroker.interfaces import IBrokerObserver

__all__ = ["LoggingObserver"]

_log = Logger(namespace="mqttbroker")


@implementer(IBrokerObserver)
class LoggingObserver:
    """Logs connections, disconnections and subscriptions."""

    def client_connected(
        self,
        client_id: str,
        address: str,
        protocol_level: int,
        clean_start: bool,
        session_present: bool,
    ) -> None:
        _log.info(
            "Client {client_id!r} connected from {address} (MQTT level {protocol_level}, "
            "clean {clean_start}, session present {session_present})",
            client_id=client_id,
            address=address,
            protocol_level=protocol_level,
            clean_start=clean_start,
            session_present=session_present,
        )

    def client_disconnected(self, client_id: str, reason: str, clean: bool) -> None:
        _log.info("Client {client_id!r} disconnected: {reason}", client_id=client_id, reason=reason)

    def subscribed(self, client_id: str, topic_filter: str, qos: int) -> None:
        _log.info(
            "Client {client_id!r} subscribed to {topic_filter!r} (QoS {qos})",
            client_id=client_id,
            topic_filter=topic_filter,
            qos=qos,
        )

    def unsubscribed(self, client_id: str, topic_filter: str) -> None:
        _log.info(
            "Client {client_id!r} unsubscribed from {topic_filter!r}",
            client_id=client_id,
            topic_filter=topic_filter,
        )

    def message_published(
        self, client_id: str | None, topic: str, qos: int, retain: bool, size: int
    ) -> None:
        pass

    def message_dropped(self, client_id: str, topic: str, qos: int, reason: str) -> None:
        pass
