"""
Every zope.interface seam of mqttbroker, with its contract.

Implementations declare C{@implementer(...)} and are checked with
C{zope.interface.verify.verifyObject} in the tests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

if TYPE_CHECKING:
    from collections.abc import Sequence

    from twisted.internet.defer import Deferred

    from mqttbroker.persistence import Change, Snapshot

__all__ = [
    "AuthDecision",
    "AuthResult",
    "Credentials",
    "IAuthenticationExchange",
    "IAuthenticationMethod",
    "IAuthenticator",
    "IAuthorizer",
    "IBackendPlugin",
    "IBrokerObserver",
    "IClientLink",
    "IPersistence",
    "IReloadable",
    "Identity",
]


class IBrokerObserver(Interface):
    """
    Receives the broker's events: logging, metrics, C{$SYS} topics and plugins hang
    off this one seam.

    Methods are called synchronously, on the reactor thread, while the broker is
    handling the event; they must be quick and must not raise (an exception is
    logged and otherwise ignored). C{message_published} is called once per message
    routed, so an observer that does real work there should batch it.
    """

    def client_connected(
        client_id: str,
        address: str,
        protocol_level: int,
        clean_start: bool,
        session_present: bool,
    ) -> None:
        """
        A client completed its CONNECT handshake.

        @param client_id: the client identifier (assigned by the broker if empty).
        @param address: the peer address as a string.
        @param protocol_level: 3, 4 or 5.
        @param clean_start: the CONNECT's clean session / clean start flag.
        @param session_present: whether an existing session was resumed.
        """

    def client_disconnected(client_id: str, reason: str, clean: bool) -> None:
        """
        A connected client's network connection ended.

        @param reason: a short human-readable cause ("client DISCONNECT",
            "keep alive timeout", "session taken over", "protocol error: ...").
        @param clean: True when the client sent DISCONNECT (its will is discarded).
        """

    def subscribed(client_id: str, topic_filter: str, qos: int) -> None:
        """A subscription was granted, at C{qos}."""

    def unsubscribed(client_id: str, topic_filter: str) -> None:
        """A subscription was removed at the client's request."""

    def message_published(
        client_id: str | None, topic: str, qos: int, retain: bool, size: int
    ) -> None:
        """
        A message was accepted for routing.

        @param client_id: the publisher's client id (a will is reported with the id
            of the client it belonged to), or None for a message the broker made.
        @param size: the payload size in bytes.
        """

    def message_dropped(client_id: str, topic: str, qos: int, reason: str) -> None:
        """
        A message for C{client_id} was dropped instead of delivered.

        @param qos: the QoS it would have been delivered at (after the downgrade to
            the subscription's grant).
        @param reason: why: "queue full (messages)", "queue full (bytes)",
            "QoS 0 while offline", "expired" (MQTT 5 Message Expiry Interval ran out
            before it could be sent), or "larger than the client's maximum packet
            size".
        """


class IClientLink(Interface):
    """
    The connection a session is currently attached to, as the sans-I/O core sees it.

    The broker calls these to send to a client; the Twisted adapter implements them
    over a transport. Writes are fire-and-forget; C{writable} tells whether the
    transport has room (backpressure).
    """

    protocol_level = Attribute("3, 4 or 5: the level the client connected with.")
    receive_maximum = Attribute(
        "How many QoS 1/2 messages the client accepts in flight (MQTT 5 Receive "
        "Maximum; 65535 before MQTT 5)."
    )
    max_packet_size = Attribute(
        "The largest packet the client accepts (MQTT 5 Maximum Packet Size); larger "
        "messages are discarded as if sent."
    )
    writable = Attribute(
        "False while the transport's buffer is above its high-water mark: the session "
        "then queues instead of writing."
    )

    def write(data: bytes) -> None:
        """Send bytes (one or more whole packets)."""

    def write_sequence(chunks: list[bytes]) -> None:
        """Send the concatenation of C{chunks} (shared pieces of a PUBLISH)."""

    def close_by_server(reason_code: int, reason: str) -> None:
        """
        End the connection from the server side (takeover, administrative action):
        MQTT 5 clients get a DISCONNECT with C{reason_code} first. The session is
        detached and the will handled as for any connection lost without DISCONNECT.
        """


@dataclass(frozen=True)
class AuthResult:
    """
    One step's outcome in an MQTT 5 enhanced authentication exchange.

    @ivar done: False to continue (send C{data} in AUTH 0x18 and wait for the
        client's next AUTH), True when the exchange is over.
    @ivar success: with C{done}: whether the client is authenticated.
    @ivar data: Authentication Data to send (the challenge, or the server's final
        proof on success), or empty.
    @ivar identity: on success, who the client proved to be (a user name).
    @ivar reason: on failure, why (for the log and the Reason String).
    """

    done: bool
    success: bool = False
    data: bytes = b""
    identity: str | None = None
    reason: str = ""

    @classmethod
    def more(cls, data: bytes) -> AuthResult:
        """Send C{data} and wait for the client's next step."""
        return cls(False, False, data)

    @classmethod
    def succeeded(cls, data: bytes = b"", identity: str | None = None) -> AuthResult:
        """Authenticated; C{data} goes to the client with the success."""
        return cls(True, True, data, identity)

    @classmethod
    def failed(cls, reason: str) -> AuthResult:
        """Not authenticated."""
        return cls(True, False, b"", None, reason)


class IAuthenticationExchange(Interface):
    """One enhanced authentication conversation with one client (5.0 section 4.12)."""

    def step(data: bytes) -> AuthResult:
        """
        Take the client's next Authentication Data (from CONNECT, then from each AUTH
        0x18) and say what comes next. May return a Deferred that fires with the
        L{AuthResult}; it must not fail (a failure is an L{AuthResult.failed}).
        """


class IAuthenticationMethod(Interface):
    """An MQTT 5 enhanced authentication method, chosen by its name."""

    name = Attribute("The Authentication Method string clients send, e.g. 'SCRAM-SHA-256'.")

    def begin(client_id: str) -> IAuthenticationExchange:
        """Start a new exchange (at CONNECT, or for re-authentication)."""


# -- authentication and authorization (plugins: --auth, --acl) -----------------------


@dataclass(frozen=True)
class Credentials:
    """
    What a client presents when it connects, for authenticators to judge.

    @ivar client_id: the client identifier (assigned by the broker if it sent none).
    @ivar username: the CONNECT user name (or the certificate's common name on a
        listener with identity-as-username), None when absent.
    @ivar password: the CONNECT password, None when absent.
    @ivar peer_host: the client's address (the real one behind the PROXY protocol),
        None for a Unix socket.
    @ivar certificate_identity: the common name of the client's verified TLS
        certificate, None without one.
    @ivar listener: the name of the listener it came through (e.g. "mqtts tcp:8883").
    @ivar protocol_level: 3, 4 or 5.
    """

    client_id: str
    username: str | None = None
    password: bytes | None = None
    peer_host: str | None = None
    certificate_identity: str | None = None
    listener: str = ""
    protocol_level: int = 4


@dataclass(frozen=True)
class Identity:
    """
    Who a connected client is, as authorizers see it.

    @ivar username: the authenticated user name; None for an anonymous client.
    @ivar client_id: its client identifier.
    @ivar peer_host: its address, None for a Unix socket.
    @ivar attributes: anything an authenticator wants authorizers to know (an HTTP
        hook's answer, say).
    """

    username: str | None
    client_id: str
    peer_host: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AuthDecision:
    """
    An authenticator's answer about one client.

    @ivar outcome: C{"allow"}, C{"deny"}, or C{"ignore"} (no opinion: the next
        authenticator of the chain decides; when all ignore, the client is refused).
    @ivar username: on allow, the user name the client is known by from now on (None:
        the one it presented).
    @ivar reason: on deny, why (logged, and sent to MQTT 5 clients as Reason String).
    @ivar bad_credentials: on deny, the credentials were wrong (CONNACK 0x86 / return
        code 4) rather than the client not allowed (0x87 / 5).
    @ivar attributes: on allow, what to pass on in L{Identity.attributes}.
    """

    outcome: str
    username: str | None = None
    reason: str = ""
    bad_credentials: bool = False
    attributes: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def allow(
        cls, username: str | None = None, attributes: Mapping[str, str] | None = None
    ) -> AuthDecision:
        return cls("allow", username, attributes=attributes or {})

    @classmethod
    def deny(cls, reason: str, bad_credentials: bool = False) -> AuthDecision:
        return cls("deny", reason=reason, bad_credentials=bad_credentials)

    @classmethod
    def ignore(cls) -> AuthDecision:
        return cls("ignore")


class IAuthenticator(Interface):
    """
    Decides whether a connecting client may connect (C{--auth}). Authenticators are
    chained in the order given: the first that allows or denies decides.
    """

    def authenticate(credentials: Credentials) -> AuthDecision | Deferred[AuthDecision]:
        """
        Judge C{credentials}. May return a Deferred firing with the L{AuthDecision};
        it must not fail (a failure is treated as a denial, and logged). A plain
        value must not cost a reactor turn.
        """


class IAuthorizer(Interface):
    """
    Decides what a connected client may do (C{--acl}). Called on the hot path: an
    answer should come from memory; return a Deferred only when it must wait (a
    remote policy), and cache.
    """

    def may_publish(
        identity: Identity, topic: str, qos: int, retain: bool
    ) -> bool | Deferred[bool]:
        """Whether C{identity} may publish to C{topic} (or a Deferred firing with it)."""

    def may_subscribe(
        identity: Identity, topic_filter: str, qos: int
    ) -> int | Deferred[int | None] | None:
        """
        The highest QoS at which C{identity} may subscribe to C{topic_filter} (at most
        C{qos}), or None to refuse the subscription (or a Deferred firing with it).
        """

    def may_receive(identity: Identity, topic: str) -> bool:
        """
        Whether C{identity} may receive a message published to C{topic}, checked for
        every delivery through a subscription, so that a wildcard filter never lets
        through what the client may not read. Synchronous, and fast.
        """


class IReloadable(Interface):
    """A backend that rereads its files (on SIGHUP and when they change)."""

    def reload() -> bool:
        """Reread now; False (and the old state kept) when the files are unusable."""

    def reload_if_changed() -> bool:
        """L{reload} if a file changed since it was read."""


class IBackendPlugin(Interface):
    """
    A named backend that C{--auth}, C{--acl} (and later C{--persistence}) can select
    with a description string such as C{passwd:file=/etc/mqtt/passwd}. Provided by
    objects in a module of the C{twisted.plugins} package, found with
    C{twisted.plugin.getPlugins(IBackendPlugin)}.
    """

    name = Attribute("The prefix that selects it in a description, e.g. 'passwd'.")
    kind = Attribute("What it provides: 'auth' (IAuthenticator) or 'acl' (IAuthorizer).")
    description = Attribute("One line for --help-backends: what it is and its parameters.")

    def build(parameters: Mapping[str, str]) -> object:
        """
        The backend the parameters of a description ask for (C{file=...} and so
        on). Raises ValueError, with a message naming the parameter, when they are
        wrong; the message reaches the operator as a usage error.
        """


# -- persistence (--persistence) ---------------------------------------------------


class IPersistence(Interface):
    """
    A store of the broker's durable state. Changes come in order and in groups;
    a group is applied whole or not at all.
    """

    def load() -> Snapshot | Deferred[Snapshot]:
        """Everything stored, read once at start (before any listener opens)."""

    def apply(changes: Sequence[Change]) -> Deferred[None]:
        """
        Make C{changes} durable, in order, as one transaction. The Deferred fires
        once they would survive a crash of the broker (and, for a local store, of
        the machine), or fails with L{PersistenceError} when the store cannot take
        them; then none of them is applied.
        """

    def close() -> Deferred[None]:
        """Finish pending writes and release the store."""
