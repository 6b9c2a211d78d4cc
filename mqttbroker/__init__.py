"""
mqttbroker: an MQTT 3.1, 3.1.1 and 5.0 broker built on Twisted.

The codec (L{mqttbroker.codec}) is sans-I/O; the Twisted adapters live in
L{mqttbroker.protocol} and L{mqttbroker.tap}.
"""

__version__ = "0.1.0.dev0"
