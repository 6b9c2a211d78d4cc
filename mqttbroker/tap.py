# -*- test-case-name: tests.test_tap -*-
"""
C{twist mqtt}: command-line options and the service they build.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import IService, MultiService
from twisted.python import usage

from mqttbroker.backends import (
    BackendError,
    backend_plugins,
    build_backend,
    parse_description,
)
from mqttbroker.broker import Broker, BrokerConfig
from mqttbroker.codec import MAX_PACKET_SIZE
from mqttbroker.endpoints import listener_service
from mqttbroker.interfaces import IReloadable
from mqttbroker.listeners import Listener, ListenerError, TLSSettings, parse_listener
from mqttbroker.observers import LoggingObserver
from mqttbroker.persistence import Journal, MemoryPersistence
from mqttbroker.scram import ScramSha256, load_credentials
from mqttbroker.service import (
    BackendsService,
    BrokerService,
    CollectorService,
    PersistenceService,
    Reloadable,
    ReloadService,
    ReloadThen,
)
from mqttbroker.session import SessionLimits
from mqttbroker.tls import TLSConfigurationError, build_options

__all__ = ["Options", "makeService"]

DEFAULT_PORT = 1883
DEFAULT_BACKLOG = 1024
_LIMITS = SessionLimits()


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"{value} is not a positive integer")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"{value} is negative")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if not 0 < number < float("inf"):
        raise ValueError(f"{value} is not a positive number")
    return number


class Options(usage.Options):
    """Options of C{twist mqtt}."""

    synopsis = "[options]"
    longdesc = (
        "Run the mqttbroker MQTT broker (MQTT 3.1, 3.1.1 and 5.0). With no listener "
        "option (--port, --listen, --tls-port, --ws-port, --wss-port) it listens on TCP "
        "port 1883 on every interface. Limits of 0 mean no limit."
    )

    optFlags = [
        [
            "require-client-cert",
            None,
            "With --ca: refuse, during the TLS handshake, clients without a certificate "
            "signed by one of those CAs (mutual TLS) on --tls-port and --wss-port.",
        ],
        [
            "use-identity-as-username",
            None,
            "With --ca: the common name (CN) of the client certificate is the MQTT user "
            "name on --tls-port and --wss-port; a client without one is refused.",
        ],
        [
            "server-moved",
            None,
            "With --server-reference: tell MQTT 5 clients the server has moved for good "
            "(CONNACK 0x9D) rather than to use another server for now (0x9C).",
        ],
        [
            "no-tcp-nodelay",
            None,
            "Leave Nagle's algorithm on for TCP connections (by default it is off: "
            "writes are already batched per reactor turn, and messages should not wait).",
        ],
        [
            "no-retain",
            None,
            "Keep no retained messages: MQTT 5 clients are told Retain Available 0, "
            "and a retained PUBLISH or will is refused (MQTT 5: reason code 0x9A; "
            "older clients: the connection is closed).",
        ],
        [
            "queue-qos0",
            None,
            "Also queue QoS 0 messages for offline persistent sessions (by default "
            "only QoS 1 and 2 messages wait for a client to come back).",
        ],
    ]

    optParameters = [
        [
            "port",
            "p",
            None,
            f"TCP port to listen on, on every interface (default {DEFAULT_PORT} when no "
            "other listener is given).",
            int,
        ],
        ["tls-port", None, None, "TCP port for MQTT over TLS (8883 by custom).", int],
        ["ws-port", None, None, "TCP port for MQTT over WebSocket (8083 by custom).", int],
        [
            "wss-port",
            None,
            None,
            "TCP port for MQTT over WebSocket over TLS (8084 by custom).",
            int,
        ],
        ["ws-path", None, "/mqtt", "The HTTP path of the WebSocket listeners."],
        [
            "persistence",
            None,
            "sqlite:",
            "Where sessions, queued messages and retained messages are kept: "
            "sqlite:[path=FILE] (the default: a file in --data-dir), "
            "redis:url=redis://HOST:PORT/DB,prefix=mqtt:, or memory (nothing survives "
            "a restart).",
        ],
        ["data-dir", None, "data", "The directory of the default SQLite store."],
        [
            "gc-threshold",
            None,
            50000,
            "New container objects between two runs of Python's cycle collector "
            "(Python's own default is 700, which costs a busy broker a fifth of its CPU "
            "time; 0 leaves Python's setting alone).",
            _non_negative_int,
        ],
        [
            "session-ttl",
            None,
            0.0,
            "Seconds an MQTT 3.1.1 persistent session (Clean Session 0) is kept without "
            "its client, with its queued messages (0: until a clean session replaces "
            "it; MQTT 5 sessions have their own Session Expiry Interval).",
            float,
        ],
        [
            "client-id-pattern",
            None,
            "",
            "Bind client ids to identities: a client may only use client ids matching "
            "this pattern, where %u is its user name and * and ? are wildcards (e.g. "
            "'%u' or '%u-*'); others are refused (0x85 / return code 2).",
        ],
        [
            "cert",
            None,
            None,
            "PEM file of the server certificate for --tls-port and --wss-port, followed "
            "by its intermediate CA certificates (and the private key, without --key).",
        ],
        ["key", None, None, "PEM file of the private key of --cert."],
        [
            "ca",
            None,
            None,
            "PEM file of the CAs that client certificates must be signed by; with it, "
            "TLS clients are asked for a certificate, and one that does not verify is "
            "refused.",
        ],
        [
            "tls-check-interval",
            None,
            10.0,
            "Seconds between checks of the TLS files: changed files are reloaded for "
            "new connections, as on SIGHUP (0: only on SIGHUP).",
            float,
        ],
        [
            "max-inflight",
            None,
            _LIMITS.max_inflight,
            "QoS 1 and 2 messages sent to a client and not yet acknowledged (at most "
            "65535, the packet identifiers there are); more wait in its queue.",
            _positive_int,
        ],
        [
            "max-queued-messages",
            None,
            _LIMITS.max_queued_messages,
            "Messages a session may hold waiting (client offline or behind its in-flight "
            "window); when full, new messages for it are dropped and logged.",
            _non_negative_int,
        ],
        [
            "max-queued-bytes",
            None,
            _LIMITS.max_queued_bytes,
            "Payload and topic bytes a session may hold waiting; when full, new "
            "messages for it are dropped and logged.",
            _non_negative_int,
        ],
        [
            "max-packet-size",
            None,
            MAX_PACKET_SIZE,
            "Largest MQTT packet accepted from a client, in bytes, fixed header included; "
            "larger ones are refused before they are buffered. The default is the "
            "protocol's maximum.",
            _positive_int,
        ],
        [
            "max-connections",
            None,
            0,
            "Client connections served at once, over all listeners; more are closed "
            "as they arrive, and counted and logged.",
            _non_negative_int,
        ],
        [
            "receive-maximum",
            None,
            65535,
            "QoS 2 messages a client may have awaiting PUBREL at once (1-65535); "
            "announced to MQTT 5 clients as Receive Maximum when below 65535, and "
            "exceeding it closes the connection (0x93).",
            _positive_int,
        ],
        [
            "topic-alias-maximum",
            None,
            10,
            "Topic aliases an MQTT 5 client may set on a connection (0-65535; 0 turns them off).",
            _non_negative_int,
        ],
        [
            "max-keepalive",
            None,
            0,
            "The longest keep alive granted, in seconds (0: whatever the client asks). "
            "MQTT 5 clients asking for more, or for none, are told Server Keep Alive; "
            "older clients keep theirs.",
            _non_negative_int,
        ],
        [
            "max-qos",
            None,
            2,
            "The highest QoS served (0, 1 or 2): subscriptions are granted at most this; "
            "MQTT 5 clients are told Maximum QoS and may not publish above it.",
            int,
        ],
        [
            "response-information",
            None,
            "",
            "Response Information for MQTT 5 clients that ask for it (request/response): "
            "a topic prefix, where %c stands for the client id, e.g. 'reply/%c/'.",
        ],
        [
            "server-reference",
            None,
            "",
            "Redirect every client to this server (MQTT 5 Server Reference, e.g. "
            "'mqtt2.example.com:1883'): MQTT 5 clients get CONNACK 0x9C (or 0x9D with "
            "--server-moved), older ones return code 3 (server unavailable).",
        ],
        [
            "scram-users",
            None,
            None,
            "Offer MQTT 5 enhanced authentication with SCRAM-SHA-256, for the users in "
            "this file (one 'NAME:SALT:ITERATIONS:STORED_KEY:SERVER_KEY' line each, as "
            "'python -m mqttbroker.scram NAME' prints them).",
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
        self["auth"] = []
        self["acl"] = []

    def opt_auth(self, description: str) -> None:
        """
        Add an authenticator to the chain (repeatable; the first that allows or
        denies a client decides, and a client none allows is refused): anonymous:,
        certificate:, passwd:file=PATH, http:url=URL, or a plugin's name.
        """
        self["auth"].append(description)

    def opt_acl(self, description: str) -> None:
        """
        Add an authorizer (repeatable; all must allow): aclfile:file=PATH,
        http:url=URL, or a plugin's name.
        """
        self["acl"].append(description)

    def opt_listen(self, description: str) -> None:
        """
        Listen as a listener description says (repeatable): a Twisted server endpoint
        description such as tcp:1883:interface=127.0.0.1, unix:/run/mqtt.sock or
        haproxy:tcp:1883, then options separated by spaces: protocol=mqtt|websocket,
        path=/mqtt, max-connections=N, allow=CIDR,..., deny=CIDR,..., cert=FILE,
        key=FILE, ca=FILE, require-client-cert=yes, identity-as-username=yes.
        """
        try:
            self["listen"].append(parse_listener(description))
        except ListenerError as error:
            raise usage.UsageError(f"--listen {description!r}: {error}") from None

    def postOptions(self) -> None:
        if self["port"] is not None and not 0 <= self["port"] <= 65535:
            raise usage.UsageError(f"--port {self['port']} is not 0-65535")
        if self["max-inflight"] > 65535:
            raise usage.UsageError("--max-inflight must be at most 65535")
        if self["scram-users"]:
            try:
                with open(self["scram-users"], encoding="utf-8") as lines:
                    load_credentials(lines)
            except (OSError, ValueError) as error:
                raise usage.UsageError(f"--scram-users {self['scram-users']}: {error}") from None
        if self["server-moved"] and not self["server-reference"]:
            raise usage.UsageError("--server-moved needs --server-reference")
        if self["max-qos"] not in (0, 1, 2):
            raise usage.UsageError("--max-qos must be 0, 1 or 2")
        if self["receive-maximum"] > 65535:
            raise usage.UsageError("--receive-maximum must be at most 65535")
        if self["topic-alias-maximum"] > 65535:
            raise usage.UsageError("--topic-alias-maximum must be at most 65535")
        if self["max-keepalive"] > 65535:
            raise usage.UsageError("--max-keepalive must be at most 65535")
        if not 0 <= self["session-ttl"] < float("inf"):
            raise usage.UsageError("--session-ttl must be 0 or more seconds")
        if self["max-packet-size"] < 2:
            raise usage.UsageError("--max-packet-size must be at least 2")
        for name in ("tls-port", "ws-port", "wss-port"):
            if self[name] is not None and not 0 <= self[name] <= 65535:
                raise usage.UsageError(f"--{name} {self[name]} is not 0-65535")
        secure = self["tls-port"] is not None or self["wss-port"] is not None
        if secure and not self["cert"]:
            raise usage.UsageError("--tls-port and --wss-port need --cert")
        if self["cert"] and not secure:
            raise usage.UsageError("--cert is for --tls-port or --wss-port, and none is given")
        if (self["require-client-cert"] or self["use-identity-as-username"]) and not self["ca"]:
            raise usage.UsageError("--require-client-cert and --use-identity-as-username need --ca")
        if not self["ws-path"].startswith("/"):
            raise usage.UsageError("--ws-path must start with /")
        self.authenticators: list[Any] = []
        self.authorizers: list[Any] = []
        for description in self["auth"]:
            try:
                self.authenticators.append(build_backend(description, "auth"))
            except BackendError as error:
                raise usage.UsageError(f"--auth: {error}") from None
        try:
            name, _ = parse_description(self["persistence"])
        except BackendError as error:
            raise usage.UsageError(f"--persistence: {error}") from None
        if name not in backend_plugins("persistence"):
            known = ", ".join(sorted(backend_plugins("persistence")))
            raise usage.UsageError(f"--persistence: no store named {name!r} (known: {known})")
        for description in self["acl"]:
            try:
                self.authorizers.append(build_backend(description, "acl"))
            except BackendError as error:
                raise usage.UsageError(f"--acl: {error}") from None
        for listener in self.listeners():
            if listener.tls is not None:
                try:
                    build_options(listener.tls)
                except TLSConfigurationError as error:
                    raise usage.UsageError(f"{listener.name}: {error}") from None

    def store(self) -> Any:
        """The store --persistence describes (built now: it opens files)."""
        description = self["persistence"]
        name, parameters = parse_description(description)
        if name == "sqlite" and "path" not in parameters:
            parameters.setdefault("data_dir", self["data-dir"])
        try:
            return backend_plugins("persistence")[name].build(parameters)
        except (ValueError, OSError) as error:
            raise usage.UsageError(f"--persistence {description!r}: {error}") from None

    def listeners(self) -> list[Listener]:
        """Every listener to start: --listen ones, then those the port options make."""
        listeners: list[Listener] = list(self["listen"])
        tls = None
        if self["cert"]:
            tls = TLSSettings(
                self["cert"], self["key"], self["ca"], bool(self["require-client-cert"])
            )
        identity = bool(self["use-identity-as-username"])
        # Twisted's default accept backlog (50) overflows under connection bursts
        # (thousands of phones reconnecting after an outage).
        tcp = "tcp:{}:backlog=" + str(DEFAULT_BACKLOG)
        if self["tls-port"] is not None:
            listeners.append(
                Listener(tcp.format(self["tls-port"]), tls=tls, identity_as_username=identity)
            )
        for option, protocol_tls in (("ws-port", None), ("wss-port", tls)):
            if self[option] is not None:
                listeners.append(
                    Listener(
                        tcp.format(self[option]),
                        protocol="websocket",
                        path=self["ws-path"],
                        tls=protocol_tls,
                        identity_as_username=identity and protocol_tls is not None,
                    )
                )
        if self["port"] is not None or not listeners:
            port = DEFAULT_PORT if self["port"] is None else self["port"]
            listeners.insert(0, Listener(tcp.format(port)))
        return listeners

    def broker_config(self) -> BrokerConfig:
        """The broker settings these options describe."""
        return BrokerConfig(
            session_limits=SessionLimits(
                max_inflight=self["max-inflight"],
                max_queued_messages=self["max-queued-messages"],
                max_queued_bytes=self["max-queued-bytes"],
                queue_qos0=bool(self["queue-qos0"]),
            ),
            max_packet_size=self["max-packet-size"],
            max_connections=self["max-connections"],
            connect_timeout=self["connect-timeout"],
            tcp_nodelay=not self["no-tcp-nodelay"],
            receive_maximum=self["receive-maximum"],
            topic_alias_maximum=self["topic-alias-maximum"],
            max_keep_alive=self["max-keepalive"],
            max_qos=self["max-qos"],
            retain_available=not self["no-retain"],
            client_id_pattern=self["client-id-pattern"],
            session_ttl=self["session-ttl"],
            response_information=self["response-information"],
            server_reference=self["server-reference"],
            server_moved=bool(self["server-moved"]),
        )


def makeService(options: Options) -> IService:
    """The broker service: one broker, one listener per endpoint description."""
    from twisted.internet import reactor  # noqa: PLC0415 (twist has installed it)

    methods = []
    if options["scram-users"]:
        methods.append(ScramSha256.from_file(options["scram-users"]))
    store = options.store()
    journal = None if isinstance(store, MemoryPersistence) else Journal(store, reactor)
    broker = Broker(
        options.broker_config(),
        observers=[LoggingObserver()],
        clock=reactor,
        auth_methods=methods,
        authenticators=options.authenticators,
        authorizers=options.authorizers,
        journal=journal,
    )
    top = MultiService()
    # First to start: the store's load and the restore run with it too.
    CollectorService(options["gc-threshold"]).setServiceParent(top)
    service: MultiService = top
    if journal is not None:
        # Everything else starts once the store is loaded, and stops before it closes.
        service = PersistenceService(broker, store, journal)
        service.setServiceParent(top)
    BrokerService(broker).setServiceParent(service)
    reloadables: list[Reloadable] = []
    for listener in options.listeners():
        listening, tls = listener_service(listener, broker, reactor)
        listening.setServiceParent(service)
        if tls is not None:
            reloadables.append(tls)
    for backend in options.authenticators:
        if IReloadable.providedBy(backend):
            reloadables.append(backend)
    for backend in options.authorizers:
        if IReloadable.providedBy(backend):
            # Access revoked by a new ACL stops deliveries at once.
            reloadables.append(ReloadThen(backend, broker.recheck_subscriptions))
    ReloadService(reloadables, reactor, options["tls-check-interval"]).setServiceParent(service)
    BackendsService([*options.authenticators, *options.authorizers]).setServiceParent(service)
    return top
