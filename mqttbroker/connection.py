# -*- test-case-name: tests.test_connection -*-
"""
One client connection's MQTT logic, sans-I/O.

L{ServerConnection} is fed decoded packets (and the decoder's errors, and the end
of the connection) by the Twisted adapter, applies the protocol's per-connection
rules, and acts through the L{Broker} and through an output object the adapter
provides (write, close, keep-alive timer). Which packet is allowed in which state is
data, in C{_HANDLERS}; a packet missing from the table is a protocol violation.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from enum import Enum
from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mqttbroker.access import authenticate, client_id_allowed, gather
from mqttbroker.broker import NO_LOCAL, RETAIN_AS_PUBLISHED, SUBSCRIPTION_FAILURE, Broker
from mqttbroker.codec import (
    ALLOWED_REASON_CODES,
    MAX_PACKET_SIZE,
    Auth,
    Connack,
    Connect,
    ConnectReturnCode,
    Disconnect,
    MQTTError,
    Packet,
    PacketType,
    Pingreq,
    Properties,
    PropertyId,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    RemoteProtocolError,
    Suback,
    Subscribe,
    Subscription,
    Unsuback,
    Unsubscribe,
    Will,
    connack_return_code_for,
    encode,
    int_property,
    reason_code_name,
)
from mqttbroker.interfaces import (
    AuthDecision,
    AuthResult,
    Credentials,
    IAuthenticationExchange,
    IClientLink,
    Identity,
)
from mqttbroker.session import Message, Session
from mqttbroker.topics import shared_subscription, topic_filter_error

__all__ = ["ConnectionOutput", "ServerConnection", "State"]

_log = Logger()
_pack_ack = struct.Struct("!BBH").pack
_PINGRESP = b"\xd0\x00"


#: Reason Strings are diagnostics, not payloads: keep them short.
_MAX_REASON_STRING = 200

_PUBLISH_REASONS: dict[int, str] = {
    ReasonCode.QUOTA_EXCEEDED: "every receiver's queue is full",
    ReasonCode.NO_MATCHING_SUBSCRIBERS: "",
}


def _auth_data(properties: Properties) -> bytes:
    data = properties.get(PropertyId.AUTHENTICATION_DATA, b"")
    return data if isinstance(data, bytes) else b""


def _with_reason_string(packet: Packet, reason: str) -> Packet:
    """A copy of C{packet} that carries C{reason} as its Reason String."""
    properties = dict(packet.properties)  # type: ignore[union-attr]
    properties[PropertyId.REASON_STRING] = reason
    return replace(packet, properties=properties)  # type: ignore[arg-type]


class ConnectionOutput(TypingProtocol):
    """What the I/O adapter offers a L{ServerConnection}."""

    def write(self, data: bytes) -> None:
        """Send bytes."""

    def write_sequence(self, chunks: list[bytes]) -> None:
        """Send the concatenation of C{chunks}."""

    def close(self) -> None:
        """Close the connection once what was written is flushed."""

    def set_keep_alive(self, seconds: float | None) -> None:
        """Close the connection after C{seconds} without a packet (None: never)."""

    def pause_reading(self) -> None:
        """Stop reading from the client for now (a decision is awaited)."""

    def resume_reading(self) -> None:
        """Read from the client again."""


class State(Enum):
    """Where a connection is in its life."""

    AWAIT_CONNECT = "awaiting CONNECT"
    AUTHENTICATING = "authenticating"
    CONNECTED = "connected"
    CLOSED = "closed"


#: Packets a client may send while a decision about it is awaited (a remote
#: authentication or authorization backend); more is a flood, and closes.
_MAX_HELD = 1000

#: Refusals 3.1/3.1.1 have no return code for: the connection closes without a
#: CONNACK (3.1.1 [MQTT-3.2.2-6]) rather than with a return code that says
#: something else (a client told "server unavailable" would just retry).
_NO_RETURN_CODE = frozenset({ReasonCode.RETAIN_NOT_SUPPORTED})


def _refusals(subscriptions: Sequence[Subscription], codes: Sequence[int]) -> str | None:
    """A Reason String for a SUBACK: which filters were refused, and why."""
    refused = [
        f"{sub.topic_filter!r}: {reason_code_name(PacketType.SUBACK, code)}"
        for sub, code in zip(subscriptions, codes, strict=True)
        if code >= 0x80
    ]
    return "refused " + "; ".join(refused) if refused else None


class _RefusedError(Exception):
    """A CONNECT that is answered with a failure CONNACK (MQTT 5 reason code)."""

    def __init__(
        self, reason_code: ReasonCode, reason: str, server_reference: str | None = None
    ) -> None:
        super().__init__(reason)
        self.reason_code = reason_code
        self.reason = reason
        self.server_reference = server_reference


@implementer(IClientLink)
class ServerConnection:
    """
    The server side of one MQTT connection.

    @ivar state: the L{State}.
    @ivar protocol_level: 3, 4 or 5 once CONNECT arrived (4 before).
    @ivar client_id: the client identifier once connected.
    @ivar session: the attached session once connected.
    @ivar writable: False while the transport is over its high-water mark.
    @ivar close_reason: why the connection ended, for the log and the observers.
    @ivar certificate_identity: the common name of the client's verified TLS
        certificate, when it has one (set by the transport adapter).
    @ivar identity_as_username: the listener makes C{certificate_identity} the user
        name, and refuses clients without one.
    @ivar username: the user name the client is known by once connected.
    """

    def __init__(
        self,
        broker: Broker,
        output: ConnectionOutput,
        peer: str = "?",
        identity_as_username: bool = False,
        peer_host: str | None = None,
        listener: str = "",
    ) -> None:
        self.broker = broker
        self.peer = peer
        self.identity_as_username = identity_as_username
        self.certificate_identity: str | None = None
        self.username: str | None = None
        self.peer_host = peer_host
        self.listener = listener
        #: Who the client is once accepted, for the authorizers.
        self.client_identity: Identity | None = None
        #: Packets held back while a decision is awaited (None: none is).
        self._held: list[Packet] | None = None
        self._refused_publishes = 0
        #: Acknowledgements waiting for the store (None: none is).
        self._acks: deque[list[Any]] | None = None
        #: The acks waiting for the journal's next group: (its number, their entries).
        self._ack_batch: tuple[int, list[list[Any]]] | None = None
        self.state = State.AWAIT_CONNECT
        self.protocol_level = 4
        self.client_id: str | None = None
        self.session: Session | None = None
        self.writable = True
        self.close_reason: str | None = None
        self._output = output
        # Bound once: the hot path writes through these without another call level.
        self.write = output.write
        self.write_sequence = output.write_sequence
        self._will: Will | None = None
        self._clean_disconnect = False
        #: The client's MQTT 5 Receive Maximum and Maximum Packet Size: what the
        #: session may have in flight to it and the largest packet it accepts.
        self.receive_maximum = 65535
        self.max_packet_size = MAX_PACKET_SIZE
        #: Inbound topic aliases (MQTT 5): alias -> topic, for this connection only.
        self._aliases: dict[int, str] = {}
        self._connect_expiry = 0
        self._problem_information = True
        #: Enhanced authentication: the method CONNECT chose, the exchange under way,
        #: the CONNECT waiting for it, and whether a step is being checked.
        self._auth_method: str | None = None
        self._exchange: IAuthenticationExchange | None = None
        self._pending_connect: tuple[Connect, str, bool] | None = None
        self._auth_pending = False
        #: Who the client proved to be (enhanced authentication), if anyone.
        self.identity: str | None = None

    # -- input from the adapter ---------------------------------------------------

    def packet_received(self, packet: Packet) -> None:
        """Act on one decoded packet."""
        handler = _HANDLERS[self.state].get(type(packet))
        if handler is None:
            if self.state is State.CLOSED:
                return
            self.protocol_violation(
                RemoteProtocolError(
                    ReasonCode.PROTOCOL_ERROR,
                    f"{packet.packet_type.name} is not allowed from a client {self.state.value}",
                )
            )
            return
        handler(self, packet)

    def _hold(self) -> None:
        """Keep later packets back until L{_release}: a decision is awaited."""
        if self._held is None:
            self._held = []
            # While held, packets go to _keep (an instance attribute shadowing the
            # method), so the usual path pays nothing for this.
            self.packet_received = self._keep  # type: ignore[method-assign]
            self._output.pause_reading()

    def _keep(self, packet: Packet) -> None:
        """
        A decision (authentication, authorization) is awaited: later packets wait
        for it, in order (nothing after CONNECT is acted on before the CONNACK).
        Reading is paused, so only what was already read can pile up, and that is
        bounded too.
        """
        held = self._held
        assert held is not None
        if len(held) >= _MAX_HELD:
            self._unhold()
            self.protocol_violation(
                RemoteProtocolError(
                    ReasonCode.QUOTA_EXCEEDED,
                    f"more than {_MAX_HELD} packets sent while a decision was awaited",
                )
            )
            return
        held.append(packet)

    def _unhold(self) -> list[Packet] | None:
        held, self._held = self._held, None
        self.__dict__.pop("packet_received", None)
        return held

    @property
    def deciding(self) -> bool:
        """A CONNECT waits for an authentication backend's answer."""
        return self._held is not None and self.state is not State.CONNECTED

    def decision_timed_out(self) -> None:
        """
        The authentication backend did not answer within the connect timeout: the
        client is told the server is unavailable (0x88 / return code 3) rather
        than left guessing, and may try again later.
        """
        self._unhold()
        self._refuse_connect(
            ReasonCode.SERVER_UNAVAILABLE,
            "the authentication backend did not answer in time",
        )

    def _ended(self) -> bool:
        return self.state is State.CLOSED

    def _release(self, result: object = None) -> object:
        """Act on the packets held back, in order (some may hold again)."""
        held = self._unhold()
        if held is None or self.state is State.CLOSED:
            return result
        self._output.resume_reading()
        for index, packet in enumerate(held):
            self.packet_received(packet)
            if self._ended():
                break
            if self._held is not None:
                # Waiting again: the rest keeps its place, ahead of newer packets.
                self._held[:0] = held[index + 1 :]
                break
        return result

    def protocol_violation(self, error: MQTTError) -> None:
        """
        The client broke the protocol (or its bytes were malformed): answer with the
        reason code where the protocol level has a way to say it, then close. The
        will is published, as for any connection that ends without DISCONNECT.
        """
        if self.state is State.CLOSED:
            return
        code = error.reason_code
        if self.state is State.AWAIT_CONNECT or self.state is State.AUTHENTICATING:
            level = error.protocol_level or self.protocol_level
            if level == 5:
                if code not in ALLOWED_REASON_CODES[PacketType.CONNACK]:
                    code = ReasonCode.PROTOCOL_ERROR
                self._send_v5(Connack(False, code), error.message)
            elif code == ReasonCode.UNSUPPORTED_PROTOCOL_VERSION:
                # [MQTT-3.1.2-2]: answer return code 1, then close.
                self.write(
                    encode(Connack(False, ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION), 4)
                )
            _log.info(
                "Refused connection from {peer}: {error}", peer=self.peer, error=error.message
            )
        elif self.protocol_level == 5:
            if code not in ALLOWED_REASON_CODES[PacketType.DISCONNECT]:
                code = ReasonCode.PROTOCOL_ERROR
            self._send_v5(Disconnect(code), error.message)
        self._end(f"protocol error: {error.message}")

    def keep_alive_expired(self) -> None:
        """Nothing came from the client for 1.5 times its keep alive ([MQTT-3.1.2-24])."""
        if self.state is State.CONNECTED and self.protocol_level == 5:
            self._send_v5(
                Disconnect(ReasonCode.KEEP_ALIVE_TIMEOUT), "no packet within 1.5 x keep alive"
            )
        self._end("keep alive timeout")

    def connection_lost(self, reason: str = "connection lost") -> None:
        """The transport is gone (for whatever reason)."""
        self._end(reason, close=False)

    def pause_writing(self) -> None:
        """The transport's buffer is full: queue instead of writing."""
        self.writable = False

    def resume_writing(self) -> None:
        """The transport drained: send what queued meanwhile."""
        self.writable = True
        if self.session is not None and self.session.link is self:
            self.session.drain()

    def _send_v5(self, packet: Packet, reason: str | None = None) -> None:
        """
        Write an MQTT 5 packet, with C{reason} as its Reason String where the client
        allows one: always on CONNACK and DISCONNECT, elsewhere only if it did not
        set Request Problem Information to 0 ([MQTT-3.1.2-29]); never when it would
        make the packet larger than the client accepts ([MQTT-3.1.2-25]).
        """
        if reason and (self._problem_information or isinstance(packet, (Connack, Disconnect))):
            with_reason = encode(_with_reason_string(packet, reason[:_MAX_REASON_STRING]), 5)
            if len(with_reason) <= self.max_packet_size:
                self.write(with_reason)
                return
        bare = encode(packet, 5)
        if len(bare) <= self.max_packet_size:
            # A client that cannot take even this gets nothing ([MQTT-3.1.2-24]).
            self.write(bare)

    # -- IClientLink -------------------------------------------------------------------

    def close_by_server(self, reason_code: int, reason: str) -> None:
        """End the connection from the server's side (takeover, shutdown, ...)."""
        if self.state is State.CONNECTED and self.protocol_level == 5:
            self._send_v5(Disconnect(reason_code), reason)
        self._end(reason)

    # -- ending -----------------------------------------------------------------------

    def _end(self, reason: str, close: bool = True) -> None:
        state = self.state
        self.state = State.CLOSED
        if state is State.CONNECTED:
            self.close_reason = reason
            session = self.session
            assert session is not None and self.client_id is not None
            will = self._will
            self._will = None
            self.broker.close_session(session, self)
            if not self._clean_disconnect and will is not None:
                # [MQTT-3.1.2-8]: the connection ended without a normal DISCONNECT.
                delay = 0
                if self.protocol_level == 5:
                    delay = int_property(will.properties, PropertyId.WILL_DELAY_INTERVAL, 0)
                self.broker.publish_will(session, will, delay)
            self.broker.notify(
                "client_disconnected", self.client_id, reason, self._clean_disconnect
            )
        elif state is not State.CLOSED:
            self.close_reason = reason
        if close and state is not State.CLOSED:
            self._output.close()

    # -- handlers (state table below) ---------------------------------------------------------

    def _on_connect(self, packet: Connect) -> None:
        level = self.protocol_level = packet.protocol_level
        if level == 5:
            # Known before any answer: nothing we send may exceed it ([MQTT-3.1.2-24]).
            self.max_packet_size = int_property(
                packet.properties, PropertyId.MAXIMUM_PACKET_SIZE, MAX_PACKET_SIZE
            )
            self._problem_information = bool(
                int_property(packet.properties, PropertyId.REQUEST_PROBLEM_INFORMATION, 1)
            )
        if self.identity_as_username:
            if self.certificate_identity is None:
                self._refuse_connect(
                    ReasonCode.NOT_AUTHORIZED,
                    "this listener takes the user name from a client certificate, "
                    "and the client presented none",
                )
                return
            # Whatever the CONNECT says, the certificate names the user.
            packet = replace(packet, username=self.certificate_identity)
        self.username = packet.username
        try:
            client_id, assigned = self._client_id_for(packet)
        except _RefusedError as refusal:
            properties: Properties = {}
            if refusal.server_reference:
                properties[PropertyId.SERVER_REFERENCE] = refusal.server_reference
            self._refuse_connect(refusal.reason_code, refusal.reason, properties)
            return
        method = packet.properties.get(PropertyId.AUTHENTICATION_METHOD) if level == 5 else None
        if method is not None:
            self._begin_authentication(packet, client_id, assigned, str(method))
            return
        self._authenticate(packet, client_id, assigned)

    # -- who the client is: the --auth chain, client id binding, the will's topic ----

    def _authenticate(
        self,
        packet: Connect,
        client_id: str,
        assigned: bool,
        auth_properties: Properties | None = None,
    ) -> None:
        """
        Decide about a CONNECT that passed the protocol checks (and any enhanced
        authentication): the authenticator chain, when there is one, then the rest
        of L{_authenticated}.
        """
        authenticators = self.broker.authenticators
        if self.identity is not None or not authenticators:
            # Enhanced authentication proved who it is; or nobody is asked.
            decision = AuthDecision.allow(self.identity)
        else:
            credentials = Credentials(
                client_id,
                packet.username,
                packet.password,
                self.peer_host,
                self.certificate_identity,
                self.listener,
                packet.protocol_level,
            )
            answer = authenticate(authenticators, credentials)
            if isinstance(answer, Deferred):
                self._hold()
                answer.addCallback(
                    self._authenticated, packet, client_id, assigned, auth_properties
                ).addBoth(self._release)
                return
            decision = answer
        self._authenticated(decision, packet, client_id, assigned, auth_properties)

    def _authenticated(
        self,
        decision: AuthDecision,
        packet: Connect,
        client_id: str,
        assigned: bool,
        auth_properties: Properties | None,
    ) -> None:
        if self.state is State.CLOSED:
            return
        if decision.outcome != "allow":
            code = (
                ReasonCode.BAD_USER_NAME_OR_PASSWORD
                if decision.bad_credentials
                else ReasonCode.NOT_AUTHORIZED
            )
            self._refuse_connect(code, decision.reason or "not authorized")
            return
        username = decision.username if decision.username is not None else packet.username
        pattern = self.broker.config.client_id_pattern
        if pattern and not client_id_allowed(pattern, client_id, username):
            # Nobody who merely knows a device's client id may take its session over.
            self._refuse_connect(
                ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                f"client identifier {client_id!r} is not one that user {username!r} may use",
            )
            return
        identity = Identity(username, client_id, self.peer_host, decision.attributes)
        policy = self.broker.policy
        will = packet.will
        if will is not None and (will.topic == "$SYS" or will.topic.startswith("$SYS/")):
            allowed: Any = False
        elif policy is not None and will is not None:
            allowed = policy.may_publish(identity, will.topic, will.qos, will.retain)
            if isinstance(allowed, Deferred):
                self._hold()
                allowed.addCallback(
                    self._will_checked, identity, packet, client_id, assigned, auth_properties
                ).addBoth(self._release)
                return
        else:
            allowed = True
        self._will_checked(allowed, identity, packet, client_id, assigned, auth_properties)

    def _will_checked(
        self,
        allowed: bool,
        identity: Identity,
        packet: Connect,
        client_id: str,
        assigned: bool,
        auth_properties: Properties | None,
    ) -> None:
        if self.state is State.CLOSED:
            return
        if not allowed:
            assert packet.will is not None
            self._refuse_connect(
                ReasonCode.NOT_AUTHORIZED,
                f"the will's topic {packet.will.topic!r} is not one this client may publish to",
            )
            return
        self.username = identity.username
        self.client_identity = identity
        self._accept(packet, client_id, assigned, auth_properties)

    def _refuse_connect(
        self, code: ReasonCode, reason: str, properties: Properties | None = None
    ) -> None:
        """Answer a CONNECT with a failure CONNACK (MQTT 5: with C{properties}), close."""
        if self.protocol_level == 5:
            self._send_v5(Connack(False, code, properties or {}), reason)
        elif code not in _NO_RETURN_CODE:
            self.write(encode(Connack(False, connack_return_code_for(code)), self.protocol_level))
        _log.info("Refused CONNECT from {peer}: {reason}", peer=self.peer, reason=reason)
        self._end(f"refused: {reason}")

    def _accept(
        self,
        packet: Connect,
        client_id: str,
        assigned: bool,
        auth_properties: Properties | None = None,
    ) -> None:
        """Open the session for an accepted CONNECT and send the success CONNACK."""
        level = self.protocol_level
        config = self.broker.config
        expiry: int | None = None
        wants_response_information = False
        if level == 5:
            props = packet.properties
            expiry = self._connect_expiry = int_property(
                props, PropertyId.SESSION_EXPIRY_INTERVAL, 0
            )
            persistent = bool(expiry)
            self.receive_maximum = int_property(props, PropertyId.RECEIVE_MAXIMUM, 65535)
            wants_response_information = bool(
                int_property(props, PropertyId.REQUEST_RESPONSE_INFORMATION, 0)
            )
        else:
            persistent = not packet.clean_start
        keep_alive = packet.keep_alive
        properties: Properties = dict(auth_properties or {})
        if level == 5:
            if assigned:
                properties[PropertyId.ASSIGNED_CLIENT_IDENTIFIER] = client_id
            # Capabilities (5.0 3.2.2.3): only what differs from the defaults a client
            # assumes when a property is absent.
            if config.receive_maximum < 65535:
                properties[PropertyId.RECEIVE_MAXIMUM] = config.receive_maximum
            if config.max_qos < 2:
                properties[PropertyId.MAXIMUM_QOS] = config.max_qos
            if not config.retain_available:
                properties[PropertyId.RETAIN_AVAILABLE] = 0
            if config.topic_alias_maximum:
                properties[PropertyId.TOPIC_ALIAS_MAXIMUM] = config.topic_alias_maximum
            if config.max_packet_size < MAX_PACKET_SIZE:
                properties[PropertyId.MAXIMUM_PACKET_SIZE] = config.max_packet_size
            if wants_response_information and config.response_information:
                # The basis of response topics for request/response (4.10).
                properties[PropertyId.RESPONSE_INFORMATION] = config.response_information.replace(
                    "%c", client_id
                )
            if config.max_keep_alive and (keep_alive == 0 or keep_alive > config.max_keep_alive):
                # The server's cap replaces what the client asked ([MQTT-3.1.2-21]).
                keep_alive = config.max_keep_alive
                properties[PropertyId.SERVER_KEEP_ALIVE] = keep_alive
        if level == 5 and not self._connack_fits(properties):
            self._refuse_connect(
                ReasonCode.PACKET_TOO_LARGE,
                f"even the CONNACK is larger than the client's Maximum Packet Size "
                f"of {self.max_packet_size} bytes [MQTT-3.1.2-24]",
            )
            return
        session, present = self.broker.open_session(
            client_id, packet.clean_start, persistent, expiry, self.client_identity
        )
        self.client_id = client_id
        self.session = session
        session.identity = self.client_identity
        self._will = packet.will
        self.state = State.CONNECTED
        # MQTT 3.1 has no session present flag: its CONNACK byte is reserved.
        self.write(encode(Connack(present and level > 3, 0, properties), level))
        self._output.set_keep_alive(keep_alive * 1.5 if keep_alive else None)
        self.broker.notify(
            "client_connected", client_id, self.peer, level, packet.clean_start, present
        )
        session.attach(self)

    def _connack_fits(self, properties: Properties) -> bool:
        """
        Whether the success CONNACK fits the client's Maximum Packet Size
        ([MQTT-3.1.2-24]), once the properties a client can do without (Topic Alias
        Maximum: it then sends no aliases; Response Information) are left out if
        need be. The others change what the client may send, so they must arrive.
        """
        if len(encode(Connack(False, 0, properties), 5)) <= self.max_packet_size:
            return True
        properties.pop(PropertyId.TOPIC_ALIAS_MAXIMUM, None)
        properties.pop(PropertyId.RESPONSE_INFORMATION, None)
        return len(encode(Connack(False, 0, properties), 5)) <= self.max_packet_size

    # -- enhanced authentication (5.0 section 4.12) ---------------------------------

    def _begin_authentication(
        self, packet: Connect, client_id: str, assigned: bool, method: str
    ) -> None:
        authenticator = self.broker.auth_methods.get(method)
        if authenticator is None:
            self._refuse_connect(
                ReasonCode.BAD_AUTHENTICATION_METHOD,
                f"authentication method {method!r} is not supported",
            )
            return
        self._pending_connect = (packet, client_id, assigned)
        self._auth_method = method
        self._exchange = authenticator.begin(client_id)
        self.state = State.AUTHENTICATING
        self._authentication_step(_auth_data(packet.properties))

    def _authentication_step(self, data: bytes) -> None:
        exchange = self._exchange
        assert exchange is not None
        self._auth_pending = True
        result = exchange.step(data)
        if hasattr(result, "addCallback"):
            result.addCallback(self._authentication_result)
        else:
            self._authentication_result(result)

    def _authentication_result(self, result: AuthResult) -> None:
        self._auth_pending = False
        if self.state is State.CLOSED:
            return
        reauthenticating = self.state is State.CONNECTED
        method = self._auth_method
        assert method is not None
        properties: Properties = {PropertyId.AUTHENTICATION_METHOD: method}
        if result.data:
            properties[PropertyId.AUTHENTICATION_DATA] = result.data
        if not result.done:
            self._send_v5(Auth(ReasonCode.CONTINUE_AUTHENTICATION, properties))
            return
        self._exchange = None
        if not result.success:
            _log.info(
                "Authentication of {peer} failed: {reason}", peer=self.peer, reason=result.reason
            )
            if reauthenticating:
                # [MQTT-4.12.1-2]: a failed re-authentication ends the connection.
                self._send_v5(Disconnect(ReasonCode.NOT_AUTHORIZED), "re-authentication failed")
                self._end("re-authentication failed")
            else:
                self._refuse_connect(ReasonCode.NOT_AUTHORIZED, "authentication failed")
            return
        self.identity = result.identity
        if reauthenticating:
            self._send_v5(Auth(ReasonCode.SUCCESS, properties))
            return
        pending = self._pending_connect
        assert pending is not None
        self._pending_connect = None
        packet, client_id, assigned = pending
        self._authenticate(packet, client_id, assigned, properties)

    def _on_disconnect_while_authenticating(self, packet: Disconnect) -> None:
        self._end("client DISCONNECT during authentication")

    def _on_auth(self, packet: Auth) -> None:
        method = packet.properties.get(PropertyId.AUTHENTICATION_METHOD)
        if self._auth_method is None or method != self._auth_method:
            # [MQTT-4.12.0-?]: AUTH only with the method the CONNECT chose.
            self.protocol_violation(
                RemoteProtocolError(
                    ReasonCode.PROTOCOL_ERROR,
                    "AUTH without, or with another, authentication method than CONNECT's",
                )
            )
            return
        code = packet.reason_code
        if self._auth_pending:
            error = "AUTH while the previous step is still being checked"
        elif code == ReasonCode.CONTINUE_AUTHENTICATION and self._exchange is not None:
            self._authentication_step(_auth_data(packet.properties))
            return
        elif code == ReasonCode.RE_AUTHENTICATE and self.state is State.CONNECTED:
            authenticator = self.broker.auth_methods[self._auth_method]
            assert self.client_id is not None
            self._exchange = authenticator.begin(self.client_id)
            self._authentication_step(_auth_data(packet.properties))
            return
        else:
            error = f"unexpected AUTH with reason code 0x{code:02X}"
        self.protocol_violation(RemoteProtocolError(ReasonCode.PROTOCOL_ERROR, error))

    def _client_id_for(self, packet: Connect) -> tuple[str, bool]:
        """The client id to use, and whether the broker assigned it."""
        config = self.broker.config
        if config.server_reference:
            # Redirection (5.0 section 4.11): every client is sent elsewhere.
            raise _RefusedError(
                ReasonCode.SERVER_MOVED if config.server_moved else ReasonCode.USE_ANOTHER_SERVER,
                f"use the server at {config.server_reference}",
                config.server_reference,
            )
        will = packet.will
        if will is not None and will.qos > config.max_qos and packet.protocol_level == 5:
            raise _RefusedError(
                ReasonCode.QOS_NOT_SUPPORTED,
                f"will QoS {will.qos} is above the server's Maximum QoS {config.max_qos} "
                "[MQTT-3.2.2-12]",
            )
        if will is not None and will.retain and not config.retain_available:
            # MQTT 5 says so with 0x9A ([MQTT-3.2.2-13]); 3.1.1 has no return code for
            # it, so that connection is closed without a CONNACK (3.1.1 [MQTT-3.2.2-6]).
            raise _RefusedError(
                ReasonCode.RETAIN_NOT_SUPPORTED,
                "a retained will, but this server keeps no retained messages",
            )
        if packet.client_id:
            return packet.client_id, False
        if packet.protocol_level == 3:
            raise _RefusedError(
                ReasonCode.CLIENT_IDENTIFIER_NOT_VALID, "MQTT 3.1 requires a client identifier"
            )
        if packet.protocol_level == 4 and not packet.clean_start:
            raise _RefusedError(
                ReasonCode.CLIENT_IDENTIFIER_NOT_VALID,
                "an empty client identifier needs clean session [MQTT-3.1.3-8]",
            )
        return self.broker.generate_client_id(), True

    def _on_second_connect(self, packet: Connect) -> None:
        self.protocol_violation(
            RemoteProtocolError(ReasonCode.PROTOCOL_ERROR, "a second CONNECT [MQTT-3.1.0-2]")
        )

    def _on_publish(self, packet: Publish) -> None:
        qos = packet.qos
        if qos > self.broker.config.max_qos and self.protocol_level == 5:
            # Above the Maximum QoS the CONNACK announced ([MQTT-3.2.2-11]).
            self.protocol_violation(
                RemoteProtocolError(
                    ReasonCode.QOS_NOT_SUPPORTED,
                    f"QoS {qos} is above the server's Maximum QoS {self.broker.config.max_qos}",
                )
            )
            return
        if packet.retain and not self.broker.config.retain_available:
            # MQTT 5 clients were told Retain Available 0 (3.3.1.3); older ones have
            # no way to learn it, and a broker that silently kept nothing would lose
            # what they rely on, so both are answered the same way.
            self.protocol_violation(
                RemoteProtocolError(
                    ReasonCode.RETAIN_NOT_SUPPORTED,
                    "a retained PUBLISH, but this server keeps no retained messages",
                )
            )
            return
        journal = self.broker.journal
        if qos and journal is not None and not journal.healthy:
            # The store fails: a message that may not be kept is not taken at all
            # (QoS 0 still flows), rather than delivered now and refused after.
            self._send_ack(False, 0x40 if qos == 1 else 0x50, packet.packet_id, 0)  # type: ignore[arg-type]
            return
        topic = packet.topic
        properties = packet.properties
        expires_at = None
        if properties and self.protocol_level == 5:
            checked = self._v5_publish(packet)
            if checked is None:
                return
            topic, properties, expires_at = checked
        if topic and topic[0] == "$" and (topic == "$SYS" or topic.startswith("$SYS/")):
            # The broker's own namespace: no client may write there (spoofed
            # statistics), whatever the ACL says.
            self._publish_refused(packet, topic)
            return
        policy = self.broker.policy
        if policy is not None and (qos < 2 or packet.packet_id not in self._awaiting()):
            identity = self.client_identity
            assert identity is not None
            allowed = policy.may_publish(identity, topic, qos, packet.retain)
            if isinstance(allowed, Deferred):
                # Wait for the answer; later packets wait behind this one, in order.
                self._hold()
                allowed.addCallback(
                    self._publish_checked, packet, topic, properties, expires_at
                ).addBoth(self._release)
                return
            if not allowed:
                self._publish_refused(packet, topic)
                return
        self._route(packet, topic, properties, expires_at)

    def _awaiting(self) -> set[int]:
        session = self.session
        assert session is not None
        return session.awaiting_rel

    def _publish_checked(
        self,
        allowed: bool,
        packet: Publish,
        topic: str,
        properties: Properties,
        expires_at: float | None,
    ) -> None:
        if self.state is not State.CONNECTED:
            return
        if allowed:
            self._route(packet, topic, properties, expires_at)
        else:
            self._publish_refused(packet, topic)

    def _publish_refused(self, packet: Publish, topic: str) -> None:
        """
        A PUBLISH the authorizers refuse: not routed. MQTT 5 says so (0x87 in PUBACK
        or PUBREC); 3.1.1 has no way to, so the message is acknowledged as usual and
        dropped ([MQTT-3.3.5-2] allows either that or closing).
        """
        self._refused_publishes += 1
        count = self._refused_publishes
        if count & (count - 1) == 0:
            # The 1st, 2nd, 4th, 8th... refusal on a connection: no log flood.
            _log.info(
                "Refused PUBLISH from {client_id} to {topic!r}: not authorized "
                "({count} refused on this connection)",
                client_id=self.client_id,
                topic=topic,
                count=count,
            )
        pid = packet.packet_id
        if packet.qos == 0 or pid is None:
            return
        if self.protocol_level == 5:
            self._send_v5_ack(
                0x40 if packet.qos == 1 else 0x50,
                pid,
                ReasonCode.NOT_AUTHORIZED,
                f"not authorized to publish to {topic!r}",
            )
        elif packet.qos == 1:
            self.write(_pack_ack(0x40, 2, pid))
        else:
            # Acknowledged as any QoS 2 message: its PUBREL is awaited (and stored).
            session = self.session
            assert session is not None
            session.await_release(pid)
            self.write(_pack_ack(0x50, 2, pid))

    def _route(
        self, packet: Publish, topic: str, properties: Properties, expires_at: float | None
    ) -> None:
        """Route an accepted PUBLISH and acknowledge it as its QoS requires."""
        qos = packet.qos
        message = Message(
            topic, packet.payload, qos, packet.retain, properties, self.client_id, expires_at
        )
        if qos == 0:
            self.broker.publish(message)
            return
        pid = packet.packet_id
        assert pid is not None
        journal = self.broker.journal
        mark = journal.recorded if journal is not None else 0
        if qos == 1:
            matched, refused = self.broker.publish(message)
            code = 0
            if self.protocol_level == 5 and (not matched or refused == matched):
                code = self._publish_code(matched, refused)
            if journal is None and not self._acks and not code:
                self.write(_pack_ack(0x40, 2, pid))  # the common case, inline
            else:
                self._when_stored(mark, self._send_ack, 0x40, pid, code)
            return
        # QoS 2: route once per packet identifier until the PUBREL releases it, so a
        # re-sent PUBLISH is acknowledged again but not delivered twice (4.3.3).
        session = self.session
        assert session is not None
        awaiting = session.awaiting_rel
        code = 0
        if pid not in awaiting:
            if len(awaiting) >= self.broker.config.receive_maximum:
                # More unreleased QoS 2 messages than the Receive Maximum the CONNACK
                # gave ([MQTT-3.3.4-7]); 3.1.1 has no such limit but the same bound
                # keeps the set from growing without end.
                self.protocol_violation(
                    RemoteProtocolError(
                        ReasonCode.RECEIVE_MAXIMUM_EXCEEDED,
                        f"more than {self.broker.config.receive_maximum} QoS 2 messages "
                        "awaiting PUBREL",
                    )
                )
                return
            matched, refused = self.broker.publish(message)
            if self.protocol_level == 5:
                code = self._publish_code(matched, refused)
            if code < 0x80:
                session.await_release(pid)
        if journal is None and not self._acks and not code:
            self.write(_pack_ack(0x50, 2, pid))
        else:
            self._when_stored(mark, self._send_ack, 0x50, pid, code)

    # -- acknowledgements that promise durability ----------------------------------------

    def _store_mark(self) -> int:
        """The journal's count of recorded changes, for L{_when_stored} (0 without one)."""
        journal = self.broker.journal
        return journal.recorded if journal is not None else 0

    def _when_stored(self, mark: int, send: Callable[..., None], *args: Any) -> None:
        """
        Call C{send(stored, *args)} once what changed in the store since C{mark} (the
        journal's C{recorded} count before the packet was handled) is committed, so
        that what the client is told survives a crash: PUBACK, PUBREC, PUBCOMP, SUBACK
        and UNSUBACK. Acknowledgements leave in the order their packets came
        ([MQTT-4.6.0-2] to [MQTT-4.6.0-4]), so one that waits holds back those after
        it. C{stored} is False when the commit failed.
        """
        journal = self.broker.journal
        waiting = journal is not None and journal.recorded != mark
        acks = self._acks
        if not waiting and not acks:
            send(True, *args)
            return
        entry: list[Any] = [not waiting, True, send, args]
        if acks is None:
            acks = self._acks = deque()
        acks.append(entry)
        if waiting:
            assert journal is not None
            # Every wait begun before the journal's next group leaves ends with that
            # group: the acks of one turn share one Deferred.
            batch = self._ack_batch
            if batch is not None and batch[0] == journal.groups:
                batch[1].append(entry)
                return
            entries = [entry]
            self._ack_batch = (journal.groups, entries)
            journal.durable().addCallbacks(
                self._stored, self._not_stored, callbackArgs=(entries,), errbackArgs=(entries,)
            )

    def _stored(self, result: object, entries: list[list[Any]]) -> None:
        for entry in entries:
            entry[0] = True
        self._flush_acks()

    def _not_stored(self, failure: Failure, entries: list[list[Any]]) -> None:
        for entry in entries:
            entry[0] = True
            entry[1] = False
        self._flush_acks()

    def _flush_acks(self) -> None:
        acks = self._acks
        while acks and acks[0][0]:
            _, stored, send, args = acks.popleft()
            if self.state is not State.CONNECTED:
                acks.clear()
                break
            send(stored, *args)
        if not acks:
            self._acks = None

    def _store_failed(self, what: str) -> None:
        """
        An acknowledgement that has no error code for a failed store (PUBCOMP,
        SUBACK, UNSUBACK, a 3.1.1 PUBACK or PUBREC) is never sent: the connection
        ends instead, and the client repeats the packet once reconnected. The change
        stays in the journal, tried again until the store takes it.
        """
        _log.warn(
            "Could not store {what} of {client_id}: closing its connection",
            what=what,
            client_id=self.client_id,
        )
        if self.protocol_level == 5:
            self._send_v5(
                Disconnect(ReasonCode.UNSPECIFIED_ERROR),
                f"the broker could not store {what}; try again later",
            )
        self._end("the message store failed")

    def _send_ack(self, stored: bool, first: int, pid: int, code: int) -> None:
        """A PUBACK (C{first} 0x40) or PUBREC (0x50) for a routed message."""
        if not stored:
            # Not acknowledged: the client keeps the message and sends it again. An
            # MQTT 5 client is told why; a 3.1.1 client has no way to be, and its
            # connection is closed instead of acknowledged (it re-sends on reconnect).
            if self.protocol_level == 5:
                _log.warn(
                    "Could not store a message from {client_id}: refusing it",
                    client_id=self.client_id,
                )
                self._send_v5_ack(
                    first,
                    pid,
                    ReasonCode.UNSPECIFIED_ERROR,
                    "the broker could not store the message; try again later",
                )
                if first == 0x50 and self.session is not None:
                    self.session.released(pid)
            else:
                self._store_failed("a message")
            return
        if code:
            self._send_v5_ack(first, pid, code, _PUBLISH_REASONS.get(code))
        else:
            self.write(_pack_ack(first, 2, pid))

    def _send_v5_ack(self, first: int, pid: int, code: int, reason: str | None) -> None:
        """An MQTT 5 PUBACK (C{first} 0x40) or PUBREC (0x50) with a reason code."""
        ack: Puback | Pubrec = Puback(pid, code) if first == 0x40 else Pubrec(pid, code)
        self._send_v5(ack, reason)

    @staticmethod
    def _publish_code(matched: int, refused: int) -> int:
        """The MQTT 5 PUBACK/PUBREC reason code for a routed message."""
        if not matched:
            return ReasonCode.NO_MATCHING_SUBSCRIBERS
        if refused == matched:
            # Every receiver's queue was full: never silent ([MQTT-3.4.2-?], 0x97).
            return ReasonCode.QUOTA_EXCEEDED
        return ReasonCode.SUCCESS

    def _v5_publish(self, packet: Publish) -> tuple[str, Properties, float | None] | None:
        """
        Apply MQTT 5's PUBLISH rules: topic aliases, Subscription Identifier,
        Payload Format Indicator, Message Expiry Interval. The topic, the properties
        to forward and the expiry time; None when the packet was refused (the
        connection is then closed, or the refusal acknowledged).
        """
        properties = packet.properties
        topic = packet.topic
        if PropertyId.SUBSCRIPTION_IDENTIFIER in properties:
            self.protocol_violation(
                RemoteProtocolError(
                    ReasonCode.PROTOCOL_ERROR,
                    "a client PUBLISH must not carry a Subscription Identifier [MQTT-3.3.4-6]",
                )
            )
            return None
        alias = int_property(properties, PropertyId.TOPIC_ALIAS, 0)
        if alias:
            maximum = self.broker.config.topic_alias_maximum
            if alias > maximum:
                self.protocol_violation(
                    RemoteProtocolError(
                        ReasonCode.TOPIC_ALIAS_INVALID,
                        f"topic alias {alias} is above the maximum of {maximum} [MQTT-3.3.2-9]",
                    )
                )
                return None
            if topic:
                self._aliases[alias] = topic
            else:
                known = self._aliases.get(alias)
                if known is None:
                    self.protocol_violation(
                        RemoteProtocolError(
                            ReasonCode.PROTOCOL_ERROR,
                            f"topic alias {alias} was never set on this connection",
                        )
                    )
                    return None
                topic = known
            # The alias belongs to this connection only: it is not forwarded.
            properties = {k: v for k, v in properties.items() if k != PropertyId.TOPIC_ALIAS}
        if properties.get(PropertyId.PAYLOAD_FORMAT_INDICATOR) == 1:
            try:
                packet.payload.decode("utf-8")
            except UnicodeDecodeError:
                self._payload_format_invalid(packet)
                return None
        expires_at = None
        if PropertyId.MESSAGE_EXPIRY_INTERVAL in properties:
            interval = int_property(properties, PropertyId.MESSAGE_EXPIRY_INTERVAL, 0)
            expires_at = self.broker.now() + interval
        return topic, properties, expires_at

    def _payload_format_invalid(self, packet: Publish) -> None:
        """
        The payload says it is UTF-8 and is not (5.0 3.3.2.3.2): a QoS 1/2 message
        is acknowledged with 0x99 and not routed; a QoS 0 one closes the connection,
        as there is nothing else to answer it with.
        """
        reason = "the payload is not the UTF-8 its Payload Format Indicator says"
        if packet.qos == 0 or packet.packet_id is None:
            self.protocol_violation(RemoteProtocolError(ReasonCode.PAYLOAD_FORMAT_INVALID, reason))
            return
        ack = Puback if packet.qos == 1 else Pubrec
        self._send_v5(ack(packet.packet_id, ReasonCode.PAYLOAD_FORMAT_INVALID), reason)

    def _on_puback(self, packet: Puback) -> None:
        assert self.session is not None
        self.session.puback(packet.packet_id)

    def _on_pubrec(self, packet: Pubrec) -> None:
        assert self.session is not None
        if packet.reason_code >= 0x80 and self.protocol_level == 5:
            # The client refused the message: the exchange ends here, without
            # PUBREL ([MQTT-4.3.3-4]), and its in-flight slot is free again.
            self.session.abandon(packet.packet_id)
            return
        if self.session.pubrec(packet.packet_id) or self.protocol_level != 5:
            self.write(_pack_ack(0x62, 2, packet.packet_id))
        else:
            self._send_v5(
                Pubrel(packet.packet_id, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND),
                f"no QoS 2 delivery with packet identifier {packet.packet_id} awaits PUBREC",
            )

    def _on_pubrel(self, packet: Pubrel) -> None:
        assert self.session is not None
        mark = self._store_mark()
        found = self.session.released(packet.packet_id)
        # The PUBCOMP waits for the identifier's release to be stored: were it lost
        # in a crash, the client's next message with that identifier would be taken
        # for a re-sent one and never delivered.
        self._when_stored(mark, self._send_pubcomp, packet.packet_id, found)

    def _send_pubcomp(self, stored: bool, pid: int, found: bool) -> None:
        if not stored:
            self._store_failed("the release of a QoS 2 message")
        elif found or self.protocol_level != 5:
            self.write(_pack_ack(0x70, 2, pid))
        else:
            self._send_v5(
                Pubcomp(pid, ReasonCode.PACKET_IDENTIFIER_NOT_FOUND),
                f"no QoS 2 message with packet identifier {pid} awaits PUBREL",
            )

    def _on_pubcomp(self, packet: Pubcomp) -> None:
        assert self.session is not None
        self.session.pubcomp(packet.packet_id)

    def _on_subscribe(self, packet: Subscribe) -> None:
        if self.protocol_level == 5:
            for sub in packet.subscriptions:
                if sub.no_local and sub.topic_filter.startswith("$share/"):
                    self.protocol_violation(
                        RemoteProtocolError(
                            ReasonCode.PROTOCOL_ERROR,
                            "No Local on a shared subscription [MQTT-3.8.3-4]",
                        )
                    )
                    return
        policy = self.broker.policy
        if policy is None:
            self._subscribe(packet, None)
            return
        identity = self.client_identity
        assert identity is not None
        caps: list[Any] = []
        for sub in packet.subscriptions:
            shared = shared_subscription(sub.topic_filter)
            topic_filter = shared[1] if shared is not None else sub.topic_filter
            if topic_filter_error(topic_filter) is not None:
                caps.append(sub.qos)  # refused for what it is, below
            else:
                caps.append(policy.may_subscribe(identity, topic_filter, sub.qos))
        if any(isinstance(cap, Deferred) for cap in caps):
            self._hold()
            gather(caps).addCallback(self._subscribe_checked, packet).addBoth(self._release)
            return
        self._subscribe(packet, caps)

    def _subscribe_checked(self, caps: list[int | None], packet: Subscribe) -> None:
        if self.state is State.CONNECTED:
            self._subscribe(packet, caps)

    def _subscribe(self, packet: Subscribe, caps: Sequence[int | None] | None) -> None:
        """
        Subscribe as the authorizers allow (C{caps}: the highest QoS each filter may
        have, None to refuse it; None for all when there are no authorizers).
        """
        session = self.session
        assert session is not None
        broker = self.broker
        level = self.protocol_level
        mark = self._store_mark()
        ids = packet.properties.get(PropertyId.SUBSCRIPTION_IDENTIFIER)
        subscription_id = ids[0] if isinstance(ids, list) and ids else 0
        assert isinstance(subscription_id, int)
        results: list[tuple[int, bool]] = []
        for index, sub in enumerate(packet.subscriptions):
            qos = sub.qos
            if caps is not None:
                cap = caps[index]
                if cap is None:
                    results.append((int(ReasonCode.NOT_AUTHORIZED), False))
                    continue
                qos = min(qos, cap)
            options = 0
            if level == 5:
                options = (NO_LOCAL if sub.no_local else 0) | (
                    RETAIN_AS_PUBLISHED if sub.retain_as_published else 0
                )
            results.append(
                broker.subscribe(session, sub.topic_filter, qos, options, subscription_id)
            )
        # The SUBACK (and the retained messages after it) wait for the subscriptions
        # of a persistent session to be stored.
        self._when_stored(mark, self._send_suback, packet, results, subscription_id)

    def _send_suback(
        self,
        stored: bool,
        packet: Subscribe,
        results: list[tuple[int, bool]],
        subscription_id: int,
    ) -> None:
        if not stored:
            self._store_failed("a subscription")
            return
        session = self.session
        assert session is not None
        broker = self.broker
        level = self.protocol_level
        if level == 5:
            codes = tuple(granted for granted, _ in results)
            self._send_v5(Suback(packet.packet_id, codes), _refusals(packet.subscriptions, codes))
        else:
            codes = tuple(
                SUBSCRIPTION_FAILURE if granted >= 0x80 else granted for granted, _ in results
            )
            self.write(encode(Suback(packet.packet_id, codes), level))
        for sub, (granted, new) in zip(packet.subscriptions, results, strict=True):
            # Retain Handling (5.0 3.8.3.1): 0 send retained messages, 1 only for a
            # new subscription, 2 never. MQTT 3.1.1 always sends them.
            if granted < 0x80 and (sub.retain_handling == 0 or (sub.retain_handling == 1 and new)):
                broker.send_retained(session, sub.topic_filter, granted, subscription_id)

    def _on_unsubscribe(self, packet: Unsubscribe) -> None:
        session = self.session
        assert session is not None
        mark = self._store_mark()
        found = [self.broker.unsubscribe(session, f) for f in packet.topic_filters]
        self._when_stored(mark, self._send_unsuback, packet, found)

    def _send_unsuback(self, stored: bool, packet: Unsubscribe, found: list[bool]) -> None:
        if not stored:
            self._store_failed("an unsubscription")
            return
        if self.protocol_level == 5:
            codes = tuple(0x00 if ok else ReasonCode.NO_SUBSCRIPTION_EXISTED for ok in found)
            missing = [f for f, ok in zip(packet.topic_filters, found, strict=True) if not ok]
            self._send_v5(
                Unsuback(packet.packet_id, codes),
                f"no subscription existed to {', '.join(map(repr, missing))}" if missing else None,
            )
        else:
            self.write(_pack_ack(0xB0, 2, packet.packet_id))

    def _on_pingreq(self, packet: Pingreq) -> None:
        self.write(_PINGRESP)

    def _on_disconnect(self, packet: Disconnect) -> None:
        expiry = packet.properties.get(PropertyId.SESSION_EXPIRY_INTERVAL)
        if expiry is not None:
            if expiry and not self._connect_expiry:
                # 5.0 section 3.14.2.2.2: 0 at CONNECT cannot become non-zero later.
                self.protocol_violation(
                    RemoteProtocolError(
                        ReasonCode.PROTOCOL_ERROR,
                        "DISCONNECT sets a Session Expiry Interval after CONNECT set 0",
                    )
                )
                return
            session = self.session
            assert session is not None
            session.expiry_interval = int_property(
                packet.properties, PropertyId.SESSION_EXPIRY_INTERVAL, 0
            )
            session.persistent = bool(expiry)
        # A normal DISCONNECT discards the will ([MQTT-3.14.4-3]); MQTT 5's
        # "disconnect with will message" (0x04) keeps it.
        self._clean_disconnect = packet.reason_code != ReasonCode.DISCONNECT_WITH_WILL_MESSAGE
        self._end("client DISCONNECT")


_HANDLERS: dict[State, dict[type, Callable[[ServerConnection, Any], None]]] = {
    State.AWAIT_CONNECT: {Connect: ServerConnection._on_connect},
    State.AUTHENTICATING: {
        Auth: ServerConnection._on_auth,
        # A client may give up during the exchange ([MQTT-3.1.2-30] allows it).
        Disconnect: ServerConnection._on_disconnect_while_authenticating,
    },
    State.CONNECTED: {
        Publish: ServerConnection._on_publish,
        Puback: ServerConnection._on_puback,
        Pubrec: ServerConnection._on_pubrec,
        Pubrel: ServerConnection._on_pubrel,
        Pubcomp: ServerConnection._on_pubcomp,
        Subscribe: ServerConnection._on_subscribe,
        Unsubscribe: ServerConnection._on_unsubscribe,
        Pingreq: ServerConnection._on_pingreq,
        Disconnect: ServerConnection._on_disconnect,
        Connect: ServerConnection._on_second_connect,
        Auth: ServerConnection._on_auth,
    },
    State.CLOSED: {},
}
