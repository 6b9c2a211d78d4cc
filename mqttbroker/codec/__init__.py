"""
The MQTT 3.1 / 3.1.1 / 5.0 codec: packets, properties, reason codes, an incremental
decoder and an encoder. Sans-I/O: nothing here imports Twisted.
"""

from mqttbroker.codec.decoder import Decoder, decode_all
from mqttbroker.codec.encoder import EncodedPublish, encode, encode_properties
from mqttbroker.codec.packets import (
    PROTOCOL_NAMES,
    Auth,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
)
from mqttbroker.codec.primitives import MAX_PACKET_SIZE, MAX_REMAINING_LENGTH
from mqttbroker.codec.properties import (
    PROPERTY_SPECS,
    WILL_PROPERTIES,
    Properties,
    PropertyId,
    PropertySpec,
    PropertyType,
    int_property,
)
from mqttbroker.codec.reason_codes import (
    ALLOWED_REASON_CODES,
    ConnectReturnCode,
    PacketType,
    ReasonCode,
    SubackReturnCode,
    connack_return_code_for,
    reason_code_name,
)
from mqttbroker.errors import LocalProtocolError, MQTTError, RemoteProtocolError

__all__ = [
    "ALLOWED_REASON_CODES",
    "Auth",
    "Connack",
    "Connect",
    "ConnectReturnCode",
    "Decoder",
    "Disconnect",
    "EncodedPublish",
    "LocalProtocolError",
    "MAX_PACKET_SIZE",
    "MAX_REMAINING_LENGTH",
    "MQTTError",
    "PROPERTY_SPECS",
    "PROTOCOL_NAMES",
    "Packet",
    "PacketType",
    "Pingreq",
    "Pingresp",
    "Properties",
    "PropertyId",
    "PropertySpec",
    "PropertyType",
    "Puback",
    "Pubcomp",
    "Publish",
    "Pubrec",
    "Pubrel",
    "ReasonCode",
    "RemoteProtocolError",
    "Suback",
    "SubackReturnCode",
    "Subscribe",
    "Subscription",
    "Unsuback",
    "Unsubscribe",
    "WILL_PROPERTIES",
    "Will",
    "connack_return_code_for",
    "decode_all",
    "encode",
    "encode_properties",
    "int_property",
    "reason_code_name",
]
