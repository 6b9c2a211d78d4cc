# -*- test-case-name: tests.test_tap -*-
"""
C{twist mqtt}: command-line options and the service they build.
"""

from __future__ import annotations

from twisted.application import strports
from twisted.application.service import IService, MultiService
from twisted.python import usage

from mqttbroker.codec import MAX_PACKET_SIZE
from mqttbroker.protocol import MQTTServerFactory

__all__ = ["Options", "makeService"]

DEFAULT_PORT = 1883


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"{value} is not a positive integer")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(f"{value} is not a positive number")
    return number


class Options(usage.Options):
    """Options of C{twist mqtt}."""

    synopsis = "[options]"
    longdesc = (
        "Run the mqttbroker MQTT broker (MQTT 3.1, 3.1.1 and 5.0). With no --port and no "
        "--listen it listens on TCP port 1883 on every interface."
    )

    optParameters = [
        [
            "port",
            "p",
            None,
            f"TCP port to listen on, on every interface (default {DEFAULT_PORT} when no "
            "--listen is given).",
            int,
        ],
        [
            "max-packet-size",
            None,
            MAX_PACKET_SIZE,
            "Largest MQTT packet accepted from a client, in bytes, fixed header included; "
            f"larger ones are refused before they are buffered (default {MAX_PACKET_SIZE}, "
            "the protocol's maximum).",
            _positive_int,
        ],
        [
            "connect-timeout",
            None,
            10.0,
            "Seconds a new connection may take to send its CONNECT before it is closed.",
            _positive_float,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """
        Listen on a Twisted server endpoint description, e.g.
        tcp:1883:interface=127.0.0.1 or unix:/run/mqtt.sock (repeatable).
        """
        self["listen"].append(description)

    def postOptions(self) -> None:
        if self["port"] is not None and not 0 <= self["port"] <= 65535:
            raise usage.UsageError(f"--port {self['port']} is not 0-65535")

    def endpoint_descriptions(self) -> list[str]:
        """Every listener to start."""
        descriptions = list(self["listen"])
        if self["port"] is not None or not descriptions:
            port = DEFAULT_PORT if self["port"] is None else self["port"]
            descriptions.insert(0, f"tcp:{port}")
        return descriptions


def makeService(options: Options) -> IService:
    """The broker service: one listener per endpoint description."""
    factory = MQTTServerFactory(
        max_packet_size=options["max-packet-size"],
        connect_timeout=options["connect-timeout"],
    )
    service = MultiService()
    for description in options.endpoint_descriptions():
        strports.service(description, factory).setServiceParent(service)
    return service
