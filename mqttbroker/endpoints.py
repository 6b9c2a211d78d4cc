# -*- test-case-name: tests.test_listeners -*-
"""
From a L{Listener} to a running Twisted service: the endpoint from its description,
then the protocol factory, wrapped in WebSocket and TLS as the listener asks.

The wrapping order is the order bytes arrive in: the endpoint (which, for
C{haproxy:}, first reads the PROXY header), then TLS, then WebSocket, then MQTT.
"""

from __future__ import annotations

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IProtocolFactory, IReactorCore
from twisted.protocols.tls import TLSMemoryBIOFactory

from mqttbroker.broker import Broker
from mqttbroker.listeners import Listener
from mqttbroker.protocol import MQTTServerFactory
from mqttbroker.tls import ReloadableTLS

__all__ = ["listener_factory", "listener_service"]


def listener_factory(
    listener: Listener, broker: Broker, reactor: IReactorCore
) -> tuple[IProtocolFactory, ReloadableTLS | None]:
    """The protocol factory serving C{listener}, and its TLS context if it has one."""
    factory: IProtocolFactory = MQTTServerFactory(broker, clock=reactor, listener=listener)  # type: ignore[arg-type]
    if listener.protocol == "websocket":
        from mqttbroker.websocket import MQTTWebSocketFactory  # noqa: PLC0415 (optional)

        factory = MQTTWebSocketFactory(factory, listener.path)
    tls = None
    if listener.tls is not None:
        tls = ReloadableTLS(listener.tls)
        factory = TLSMemoryBIOFactory(tls, False, factory)
    return factory, tls


def listener_service(
    listener: Listener, broker: Broker, reactor: IReactorCore
) -> tuple[IService, ReloadableTLS | None]:
    """A service that listens as C{listener} says while it runs."""
    factory, tls = listener_factory(listener, broker, reactor)
    endpoint = serverFromString(reactor, listener.endpoint)
    service = StreamServerEndpointService(endpoint, factory)
    # Fail the start (and so `twist`) when the port cannot be had, rather than log
    # and run without the listener.
    service._raiseSynchronously = True
    return service, tls
