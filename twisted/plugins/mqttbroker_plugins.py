"""
Twisted plugin dropin for mqttbroker: makes `twist mqtt` available.

This directory must not hold an C{__init__.py}: Twisted's C{twisted.plugins} package
gathers every C{twisted/plugins} directory on C{sys.path}, and an C{__init__.py}
would hide this one. The module stays import-light: C{ServiceMaker} loads
L{mqttbroker.tap} only when the command is used, so C{twist --help} stays fast.
"""

from twisted.application.service import ServiceMaker

mqtt = ServiceMaker(
    "mqttbroker",
    "mqttbroker.tap",
    "An MQTT 3.1, 3.1.1 and 5.0 broker.",
    "mqtt",
)
