"""
Listeners: where clients connect, how (MQTT over a byte stream, or over WebSocket,
with or without TLS) and who may (a connection limit and address rules per listener).

A listener is written as a Twisted server endpoint description, then options, each
C{key=value}, separated by spaces::

    tcp:1883:interface=0.0.0.0 max-connections=10000 deny=10.1.0.0/16
    tcp:8883 cert=server.crt key=server.key ca=ca.crt require-client-cert=yes
    tcp:8083 protocol=websocket path=/mqtt
    haproxy:tcp:1883 allow=10.0.0.0/8

Any endpoint Twisted knows works (C{tcp:}, C{tcp6:}, C{unix:}, C{haproxy:}, C{ssl:},
plugins); TLS given by options rather than by C{ssl:} gets this project's extras
(certificate reload, client certificate identity). Nothing here imports the reactor:
this module only reads and checks descriptions.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network

__all__ = ["IPNetwork", "Listener", "ListenerError", "TLSSettings", "parse_listener"]

IPNetwork = IPv4Network | IPv6Network

#: How a listener speaks MQTT.
PROTOCOLS = ("mqtt", "websocket")


class ListenerError(ValueError):
    """A listener description that cannot be used, with what is wrong with it."""


@dataclass(frozen=True)
class TLSSettings:
    """
    TLS on a listener.

    @ivar cert: PEM file with the server certificate, then any intermediate
        certificates of its chain (and the private key, when C{key} is not given).
    @ivar key: PEM file with the private key.
    @ivar ca: PEM file of the certificate authorities that client certificates must
        chain to; without it, clients are not asked for certificates.
    @ivar require_client_cert: refuse, during the handshake, a client without a valid
        certificate (needs C{ca}).
    """

    cert: str
    key: str | None = None
    ca: str | None = None
    require_client_cert: bool = False


@dataclass(frozen=True)
class Listener:
    """
    One listener.

    @ivar endpoint: the Twisted server endpoint description.
    @ivar protocol: C{"mqtt"} (MQTT over the stream) or C{"websocket"}.
    @ivar path: the HTTP path of the WebSocket endpoint.
    @ivar max_connections: connections this listener serves at once (0: no limit
        besides the broker's).
    @ivar allow: when not empty, only clients from these networks are served.
    @ivar deny: clients from these networks are refused (before C{allow}).
    @ivar tls: TLS on this listener, or None.
    @ivar identity_as_username: with TLS, the client certificate's common name is the
        MQTT user name (a client without a certificate is refused).
    """

    endpoint: str
    protocol: str = "mqtt"
    path: str = "/mqtt"
    max_connections: int = 0
    allow: tuple[IPNetwork, ...] = ()
    deny: tuple[IPNetwork, ...] = ()
    tls: TLSSettings | None = None
    identity_as_username: bool = False

    @property
    def name(self) -> str:
        """How logs and events name this listener."""
        kind = {"mqtt": "mqtts" if self.tls else "mqtt", "websocket": "wss" if self.tls else "ws"}
        return f"{kind[self.protocol]} {self.endpoint}"

    def admits(self, host: str | None) -> bool:
        """
        Whether a client from C{host} may connect: not in a C{deny} network, and in
        an C{allow} network when there are any. A peer without an IP address (a UNIX
        socket) is admitted only by a listener without C{allow} rules.
        """
        if not self.allow and not self.deny:
            return True
        address = _address(host)
        if address is None:
            return not self.allow
        if any(address in network for network in self.deny):
            return False
        return not self.allow or any(address in network for network in self.allow)


def _address(host: str | None) -> IPv4Address | IPv6Address | None:
    if not host:
        return None
    try:
        address = ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        # An IPv4 client of a dual-stack socket: match it against IPv4 rules.
        return address.ipv4_mapped
    return address


def _networks(key: str, value: str) -> tuple[IPNetwork, ...]:
    networks = []
    for part in value.split(","):
        try:
            networks.append(ip_network(part.strip(), strict=False))
        except ValueError:
            raise ListenerError(f"{key}: {part!r} is not an address or CIDR network") from None
    return tuple(networks)


def _yes(key: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("yes", "true", "1", "on"):
        return True
    if lowered in ("no", "false", "0", "off"):
        return False
    raise ListenerError(f"{key}: {value!r} is neither yes nor no")


_KEYS = (
    "protocol",
    "path",
    "max-connections",
    "allow",
    "deny",
    "cert",
    "key",
    "ca",
    "require-client-cert",
    "identity-as-username",
)


def parse_listener(text: str) -> Listener:
    """
    Read a listener description (see the module docstring).

    @raise ListenerError: an unknown or malformed option, or options that do not go
        together, with a message that names it.
    """
    words = text.split()
    if not words:
        raise ListenerError("no endpoint description")
    endpoint, words = words[0], words[1:]
    options: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not value:
            raise ListenerError(f"{word!r}: options are written key=value")
        if key not in _KEYS:
            raise ListenerError(f"unknown option {key!r} (known: {', '.join(_KEYS)})")
        if key in options:
            raise ListenerError(f"option {key!r} given twice")
        options[key] = value
    protocol = options.get("protocol", "mqtt")
    if protocol not in PROTOCOLS:
        raise ListenerError(f"protocol: {protocol!r} is not one of {', '.join(PROTOCOLS)}")
    path = options.get("path", "/mqtt")
    if not path.startswith("/"):
        raise ListenerError(f"path: {path!r} does not start with /")
    try:
        max_connections = int(options.get("max-connections", "0"))
    except ValueError:
        raise ListenerError("max-connections: not a whole number") from None
    if max_connections < 0:
        raise ListenerError("max-connections: must not be negative")
    tls = None
    if "cert" in options:
        tls = TLSSettings(
            options["cert"],
            options.get("key"),
            options.get("ca"),
            _yes("require-client-cert", options.get("require-client-cert", "no")),
        )
        if tls.require_client_cert and tls.ca is None:
            raise ListenerError("require-client-cert needs ca= (the CAs to verify against)")
    else:
        for needs_cert in ("key", "ca", "require-client-cert"):
            if needs_cert in options:
                raise ListenerError(f"{needs_cert} needs cert= (TLS on this listener)")
    identity = _yes("identity-as-username", options.get("identity-as-username", "no"))
    if identity and (tls is None or tls.ca is None):
        raise ListenerError("identity-as-username needs TLS with client certificates (ca=)")
    return Listener(
        endpoint=endpoint,
        protocol=protocol,
        path=path,
        max_connections=max_connections,
        allow=_networks("allow", options["allow"]) if "allow" in options else (),
        deny=_networks("deny", options["deny"]) if "deny" in options else (),
        tls=tls,
        identity_as_username=identity,
    )
