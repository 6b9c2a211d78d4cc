"""
Twisted plugin dropin for mqttbroker: makes `twist mqtt` available.

This directory must not hold an C{__init__.py}: Twisted's C{twisted.plugins} package
gathers every C{twisted/plugins} directory on C{sys.path}, and an C{__init__.py}
would hide this one. The module stays import-light: C{ServiceMaker} loads
L{mqttbroker.tap} only when the command is used, so C{twist --help} stays fast.
"""

from twisted.application.service import ServiceMaker

from mqttbroker.backends import BackendPlugin

mqtt = ServiceMaker(
    "mqttbroker",
    "mqttbroker.tap",
    "An MQTT 3.1, 3.1.1 and 5.0 broker.",
    "mqtt",
)

# Backends for --auth and --acl, imported only when used.
anonymous = BackendPlugin(
    "anonymous",
    "auth",
    "Let clients without a user name connect (anonymous:).",
    "mqttbroker.backends.builtin:anonymous",
)
certificate = BackendPlugin(
    "certificate",
    "auth",
    "Let clients with a verified TLS certificate connect, named by its CN (certificate:).",
    "mqttbroker.backends.builtin:certificate",
)
passwd = BackendPlugin(
    "passwd",
    "auth",
    "A mosquitto password file (passwd:file=PATH).",
    "mqttbroker.backends.passwd:build",
)
aclfile = BackendPlugin(
    "aclfile",
    "acl",
    "A mosquitto ACL file (aclfile:file=PATH).",
    "mqttbroker.backends.aclfile:build",
)
http_auth = BackendPlugin(
    "http",
    "auth",
    "An HTTP hook deciding logins (http:url=URL,timeout=SECONDS).",
    "mqttbroker.backends.http:build",
)
http_acl = BackendPlugin(
    "http",
    "acl",
    "An HTTP hook deciding publishes and subscriptions (http:url=URL,timeout=SECONDS).",
    "mqttbroker.backends.http:build",
)

# Stores for --persistence.
sqlite = BackendPlugin(
    "sqlite",
    "persistence",
    "A SQLite file, the default (sqlite:path=FILE; without path, a file in --data-dir).",
    "mqttbroker.backends.sqlite:build",
)
memory = BackendPlugin(
    "memory",
    "persistence",
    "Nothing is stored: a restart loses every session and retained message (memory).",
    "mqttbroker.persistence:memory",
)
redis = BackendPlugin(
    "redis",
    "persistence",
    "A Redis server (redis:url=redis://HOST:PORT/DB,prefix=mqtt:,timeout=5).",
    "mqttbroker.backends.redis:build",
)
