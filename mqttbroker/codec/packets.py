"""
The MQTT control packets as plain value objects.

One class per packet type serves every protocol level (3 = MQTT 3.1, 4 = 3.1.1,
5 = 5.0): fields that only MQTT 5 has (properties, most reason codes) keep their
defaults at the older levels, and the encoder refuses to drop a non-default one
silently. Classes are slotted dataclasses with value equality; treat an instance as
immutable once it is handed on (they are not frozen only because frozen dataclasses
cost twice as much to build on the decode hot path).

Repeated fields are tuples, so a decoded packet compares equal to one built by hand
with tuples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from mqttbroker.codec.properties import Properties
from mqttbroker.codec.reason_codes import PacketType

__all__ = [
    "Auth",
    "Connack",
    "Connect",
    "Disconnect",
    "PROTOCOL_NAMES",
    "Packet",
    "Pingreq",
    "Pingresp",
    "Puback",
    "Pubcomp",
    "Publish",
    "Pubrec",
    "Pubrel",
    "Suback",
    "Subscribe",
    "Subscription",
    "Unsuback",
    "Unsubscribe",
    "Will",
]

#: The protocol name each protocol level's CONNECT carries.
PROTOCOL_NAMES: dict[int, str] = {3: "MQIsdp", 4: "MQTT", 5: "MQTT"}


@dataclass(slots=True)
class Will:
    """The will message of a CONNECT."""

    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    #: MQTT 5 Will Properties.
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Connect:
    """CONNECT: the client opens a session (3.1)."""

    packet_type: ClassVar[PacketType] = PacketType.CONNECT
    client_id: str = ""
    #: 3 (MQTT 3.1, protocol name "MQIsdp"), 4 (3.1.1) or 5 (5.0).
    protocol_level: int = 4
    #: "Clean Session" in 3.1/3.1.1, "Clean Start" in 5.0.
    clean_start: bool = True
    keep_alive: int = 0
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Connack:
    """CONNACK: the server's answer to CONNECT (3.2)."""

    packet_type: ClassVar[PacketType] = PacketType.CONNACK
    session_present: bool = False
    #: An MQTT 5 L{ReasonCode} at level 5; a L{ConnectReturnCode} at levels 3 and 4.
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Publish:
    """PUBLISH: an application message (3.3)."""

    packet_type: ClassVar[PacketType] = PacketType.PUBLISH
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    dup: bool = False
    #: None for QoS 0, 1-65535 otherwise.
    packet_id: int | None = None
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class _PublishResponse:
    """The common shape of PUBACK, PUBREC, PUBREL and PUBCOMP."""

    packet_id: int
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Puback(_PublishResponse):
    """PUBACK: QoS 1 acknowledgement (3.4)."""

    packet_type: ClassVar[PacketType] = PacketType.PUBACK


@dataclass(slots=True)
class Pubrec(_PublishResponse):
    """PUBREC: QoS 2 delivery part 1 (3.5)."""

    packet_type: ClassVar[PacketType] = PacketType.PUBREC


@dataclass(slots=True)
class Pubrel(_PublishResponse):
    """PUBREL: QoS 2 delivery part 2 (3.6)."""

    packet_type: ClassVar[PacketType] = PacketType.PUBREL


@dataclass(slots=True)
class Pubcomp(_PublishResponse):
    """PUBCOMP: QoS 2 delivery part 3 (3.7)."""

    packet_type: ClassVar[PacketType] = PacketType.PUBCOMP


@dataclass(slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with its options (3.8.3.1)."""

    topic_filter: str
    qos: int = 0
    #: MQTT 5 only.
    no_local: bool = False
    #: MQTT 5 only.
    retain_as_published: bool = False
    #: MQTT 5 only: 0 send retained on subscribe, 1 only if new, 2 never.
    retain_handling: int = 0


@dataclass(slots=True)
class Subscribe:
    """SUBSCRIBE (3.8)."""

    packet_type: ClassVar[PacketType] = PacketType.SUBSCRIBE
    packet_id: int
    subscriptions: tuple[Subscription, ...]
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Suback:
    """SUBACK (3.9): one reason (return) code per requested filter, in order."""

    packet_type: ClassVar[PacketType] = PacketType.SUBACK
    packet_id: int
    reason_codes: tuple[int, ...]
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Unsubscribe:
    """UNSUBSCRIBE (3.10)."""

    packet_type: ClassVar[PacketType] = PacketType.UNSUBSCRIBE
    packet_id: int
    topic_filters: tuple[str, ...]
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Unsuback:
    """UNSUBACK (3.11): MQTT 5 carries one reason code per filter; 3.1.1 none."""

    packet_type: ClassVar[PacketType] = PacketType.UNSUBACK
    packet_id: int
    reason_codes: tuple[int, ...] = ()
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Pingreq:
    """PINGREQ (3.12)."""

    packet_type: ClassVar[PacketType] = PacketType.PINGREQ


@dataclass(slots=True)
class Pingresp:
    """PINGRESP (3.13)."""

    packet_type: ClassVar[PacketType] = PacketType.PINGRESP


@dataclass(slots=True)
class Disconnect:
    """DISCONNECT (3.14); MQTT 5 lets either side send it, with a reason."""

    packet_type: ClassVar[PacketType] = PacketType.DISCONNECT
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


@dataclass(slots=True)
class Auth:
    """AUTH (3.15, MQTT 5 only): enhanced authentication exchange."""

    packet_type: ClassVar[PacketType] = PacketType.AUTH
    reason_code: int = 0
    properties: Properties = field(default_factory=dict)


Packet = (
    Connect
    | Connack
    | Publish
    | Puback
    | Pubrec
    | Pubrel
    | Pubcomp
    | Subscribe
    | Suback
    | Unsubscribe
    | Unsuback
    | Pingreq
    | Pingresp
    | Disconnect
    | Auth
)
