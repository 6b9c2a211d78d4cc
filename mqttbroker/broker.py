# -*- test-case-name: tests.test_broker -*-
"""
The broker: the session registry, takeover, the publish pipeline, retained messages
and subscriptions. Sans-I/O: it talks to connections only through L{IClientLink}.

One inbound PUBLISH: the connection decodes and validates it, then calls
L{Broker.publish}: retained store (if retain), route (exact dict + wildcard trie),
then for each receiving session the QoS downgrade and L{Session.deliver}, which
writes the shared encoded bytes or queues. Nothing on this path allocates per
subscriber beyond the packet identifier, logs, or waits on a Deferred.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from mqttbroker.access import Policy
from mqttbroker.codec import MAX_PACKET_SIZE, PropertyId, Will, int_property
from mqttbroker.interfaces import (
    IAuthenticationMethod,
    IAuthenticator,
    IAuthorizer,
    IBrokerObserver,
    IClientLink,
    Identity,
)
from mqttbroker.persistence import (
    DeleteRetained,
    DeleteSession,
    DeleteSubscription,
    DeleteWill,
    Journal,
    PutRetained,
    PutSession,
    PutSubscription,
    PutWill,
    Snapshot,
    restored_message,
    stored_message,
)
from mqttbroker.session import Message, Session, SessionLimits
from mqttbroker.topics import (
    RetainedStore,
    SubscriptionIndex,
    shared_subscription,
    topic_filter_error,
)

__all__ = [
    "NEVER_EXPIRES",
    "NO_LOCAL",
    "RETAIN_AS_PUBLISHED",
    "SUBSCRIPTION_ID_SHIFT",
    "Broker",
    "BrokerConfig",
    "SharedGroup",
]

_log = Logger()

#: SUBACK return code for a refused filter (3.1.1 section 3.9.3).
SUBSCRIPTION_FAILURE = 0x80
#: The MQTT 5 SUBACK reason code for an invalid filter; 3.1.1 clients get 0x80.
TOPIC_FILTER_INVALID = 0x8F

#: Bits kept with a subscription's granted QoS (bits 0-1) in the index: MQTT 5's No
#: Local (do not send a client its own messages) and Retain As Published (keep the
#: retain flag when forwarding). One int per subscription keeps the index small and
#: the fan-out loop free of attribute lookups.
NO_LOCAL = 0x04
RETAIN_AS_PUBLISHED = 0x08
#: The MQTT 5 Subscription Identifier sits above those bits (0: none).
SUBSCRIPTION_ID_SHIFT = 4

#: MQTT 5 Session Expiry Interval meaning "never" (3.1.2.11.2).
NEVER_EXPIRES = 0xFFFFFFFF


def _shared_error(name: str, topic_filter: str) -> str | None:
    """Why C{$share/name/topic_filter} is not a valid shared subscription, or None."""
    if not name or "+" in name or "#" in name:
        return "a share name must be non-empty, without '+' or '#' [MQTT-4.8.2-1]"
    if not topic_filter:
        return "a shared subscription needs a topic filter after its share name [MQTT-4.8.2-2]"
    return topic_filter_error(topic_filter)


class SharedGroup:
    """
    The members of one shared subscription C{$share/<name>/<filter>} (5.0 section
    4.8.2): each matching message goes to one member, round robin, preferring
    members that are online with room in their in-flight window.

    @ivar members: member session -> its subscription value (QoS and option bits).
    """

    __slots__ = ("_cursor", "_order", "members", "name", "topic_filter")

    def __init__(self, name: str, topic_filter: str) -> None:
        self.name = name
        self.topic_filter = topic_filter
        self.members: dict[Session, int] = {}
        self._order: list[Session] = []
        self._cursor = 0

    def __repr__(self) -> str:
        return f"<SharedGroup $share/{self.name}/{self.topic_filter} {len(self.members)} members>"

    def add(self, session: Session, value: int) -> bool:
        """Add or update a member; True if it is new."""
        new = session not in self.members
        self.members[session] = value
        if new:
            self._order.append(session)
        return new

    def remove(self, session: Session) -> bool:
        """Remove a member; True if it was one."""
        if self.members.pop(session, None) is None:
            return False
        self._order.remove(session)
        return True

    def pick(self) -> Session | None:
        """
        The member for the next message: the next one in turn that is online with
        room; failing that the next online one (it queues); failing that the next
        one at all (an offline persistent session queues it).
        """
        order = self._order
        count = len(order)
        if not count:
            return None
        start = self._cursor
        fallback = None
        offline = None
        for step in range(count):
            index = (start + step) % count
            session = order[index]
            if session.has_room:
                self._cursor = index + 1
                return session
            if fallback is None and session.link is not None:
                fallback = index
            if offline is None:
                offline = index
        chosen = fallback if fallback is not None else offline
        if chosen is None:
            return None
        self._cursor = chosen + 1
        return order[chosen]


@dataclass(frozen=True)
class BrokerConfig:
    """
    The broker's settings; every default is the documented default of C{twist mqtt}.

    @ivar session_limits: in-flight window and queue bounds of every session.
    @ivar max_packet_size: the largest packet accepted from a client.
    @ivar max_connections: connections served at once (0: no limit).
    @ivar connect_timeout: seconds a connection may take to send CONNECT.
    @ivar max_qos: the highest QoS granted to a subscription.
    @ivar retain_available: keep retained messages; when off, MQTT 5 clients are
        told Retain Available 0 and a retained PUBLISH or will is refused (0x9A).
    @ivar session_ttl: seconds an MQTT 3.1.1 persistent session (which has no expiry
        of its own) lasts without its client (0: until a clean session replaces it).
    @ivar client_id_pattern: when set, a client may use only client ids that match
        it (C{%u}: its user name, C{*}/C{?}: wildcards); others are refused with
        0x85 / return code 2.
    @ivar tcp_nodelay: disable Nagle's algorithm on TCP connections.
    @ivar receive_maximum: QoS 2 messages a client may have awaiting PUBREL (MQTT 5
        Receive Maximum, announced when below 65535).
    @ivar topic_alias_maximum: topic aliases an MQTT 5 client may set (0: none).
    @ivar max_keep_alive: the longest keep alive granted (0: as the client asks); an
        MQTT 5 client asking more, or 0, is told Server Keep Alive.
    @ivar response_information: given to MQTT 5 clients that ask for Response
        Information, with C{%c} replaced by the client id ("" to give none).
    @ivar server_reference: when set, every client is redirected there: MQTT 5
        clients get CONNACK 0x9C (use another server) or, with C{server_moved},
        0x9D (server moved) and this Server Reference; older clients get return
        code 3 (server unavailable).
    """

    session_limits: SessionLimits = field(default_factory=SessionLimits)
    max_packet_size: int = MAX_PACKET_SIZE
    max_connections: int = 0
    connect_timeout: float = 10.0
    max_qos: int = 2
    retain_available: bool = True
    client_id_pattern: str = ""
    session_ttl: float = 0.0
    tcp_nodelay: bool = True
    receive_maximum: int = 65535
    topic_alias_maximum: int = 10
    max_keep_alive: int = 0
    response_information: str = ""
    server_reference: str = ""
    server_moved: bool = False


class Broker:
    """
    The hub every connection of one broker process shares.

    @ivar sessions: client id -> session, online or not.
    @ivar retained: topic -> retained message.
    """

    def __init__(
        self,
        config: BrokerConfig | None = None,
        observers: Iterable[IBrokerObserver] = (),
        clock: IReactorTime | None = None,
        auth_methods: Iterable[IAuthenticationMethod] = (),
        authenticators: Iterable[IAuthenticator] = (),
        authorizers: Iterable[IAuthorizer] = (),
        journal: Journal | None = None,
    ) -> None:
        self.config = config if config is not None else BrokerConfig()
        #: The --auth chain; empty: every client may connect.
        self.authenticators: list[IAuthenticator] = list(authenticators)
        #: Where changes to durable state are recorded (None: nothing is stored).
        self.journal = journal
        #: The --acl authorizers (all must allow); None: everything is allowed.
        self.policy: Policy | None = Policy(list(authorizers)) if authorizers else None
        #: MQTT 5 enhanced authentication methods, by name.
        self.auth_methods: dict[str, IAuthenticationMethod] = {m.name: m for m in auth_methods}
        #: Time for expiries (sessions, messages, delayed wills): the reactor in
        #: production, a Clock in tests. None means the global reactor, looked up
        #: when first needed so that importing this module installs no reactor.
        self._clock = clock
        self.observers: list[IBrokerObserver] = list(observers)
        self.sessions: dict[str, Session] = {}
        #: Network connections being served, on every listener (for max_connections).
        self.connection_count = 0
        self.subscriptions: SubscriptionIndex[Session, int] = SubscriptionIndex()
        #: Shared subscriptions: the real filter -> its groups (a group is the key).
        self.shared: SubscriptionIndex[SharedGroup, int] = SubscriptionIndex()
        self._groups: dict[tuple[str, str], SharedGroup] = {}
        self.retained: RetainedStore[Message] = RetainedStore()

    @property
    def clock(self) -> IReactorTime:
        """The broker's time source."""
        if self._clock is None:
            from twisted.internet import reactor  # noqa: PLC0415 (see __init__)

            self._clock = reactor
        assert self._clock is not None
        return self._clock

    def now(self) -> float:
        """The current time on the broker's clock, in seconds."""
        return self.clock.seconds()

    # -- sessions -------------------------------------------------------------------

    def generate_client_id(self) -> str:
        """A fresh client id for a client that sent an empty one."""
        while True:
            client_id = f"auto-{uuid.uuid4().hex}"
            if client_id not in self.sessions:
                return client_id

    def open_session(
        self,
        client_id: str,
        clean_start: bool,
        persistent: bool,
        expiry_interval: int | None = None,
        identity: Identity | None = None,
    ) -> tuple[Session, bool]:
        """
        The session for a CONNECT that was accepted, and whether it existed already
        (the CONNACK's session present flag).

        A connection still attached to that client id is closed first (session
        takeover, [MQTT-3.1.4-2]); its will is handled as for any connection lost
        without DISCONNECT. With C{clean_start} any stored session is discarded
        ([MQTT-3.1.2-6]); C{persistent} says whether the session outlives this
        connection, C{expiry_interval} for how long (MQTT 5; None: until replaced).
        The caller sends CONNACK, then calls L{Session.attach}.
        """
        existing = self.sessions.get(client_id)
        if existing is not None and existing.link is not None:
            existing.link.close_by_server(0x8E, "session taken over")
        if existing is not None and (clean_start or not existing.persistent):
            self._discard(existing)
            existing = None
        if existing is not None:
            self._cancel_expiry(existing)
            self._cancel_will(existing)
            existing.persistent = persistent
            existing.expiry_interval = expiry_interval
            existing.identity = identity
            self._store_session(existing, None)
            return existing, True
        session = Session(
            client_id, persistent, self.config.session_limits, self._message_dropped, self.now
        )
        session.expiry_interval = expiry_interval
        session.identity = identity
        self.sessions[client_id] = session
        self._store_session(session, None)
        return session, False

    def restore(self, snapshot: Snapshot) -> None:
        """
        Take back what a store held (at start, before any listener opens): the
        persistent sessions, offline, with their subscriptions and expiry timers,
        the messages owed to them (in flight with their packet identifiers, then
        queued), the QoS 2 identifiers awaiting PUBREL, and the retained messages.
        """
        now = self.now()
        for stored in snapshot.retained:
            self.retained.set(stored.topic, restored_message(stored))
        for record in snapshot.sessions:
            session = Session(
                record.client_id,
                True,
                self.config.session_limits,
                self._message_dropped,
                self.now,
            )
            session.expiry_interval = record.expiry_interval
            session.journal = self.journal
            self.sessions[record.client_id] = session
            for topic_filter, value in record.subscriptions.items():
                self._index_subscription(session, topic_filter, value)
            session.restore(record.deliveries, record.awaiting_rel, self._group_named)
            lifetime = self._offline_lifetime(session)
            if lifetime is not None:
                since = record.disconnected_at if record.disconnected_at is not None else now
                left = max(0.0, since + lifetime - now)
                session.expiry_call = self.clock.callLater(left, self._expire, session)
            if record.will is not None:
                session.pending_will = record.will
                at = record.will_at if record.will_at is not None else now
                session.will_call = self.clock.callLater(
                    max(0.0, at - now), self._delayed_will, session
                )

    def _group_named(self, name: str) -> SharedGroup | None:
        """The shared group a stored delivery names (C{"group/filter"}), if it exists."""
        group_name, _, topic_filter = name.partition("/")
        return self._groups.get((group_name, topic_filter))

    def _index_subscription(self, session: Session, topic_filter: str, value: int) -> bool:
        """Put a checked subscription into the indexes; whether it is new there."""
        shared = shared_subscription(topic_filter)
        if shared is not None:
            group = self._groups.get(shared)
            if group is None:
                group = self._groups[shared] = SharedGroup(*shared)
                self.shared.add(shared[1], group, 0)
            new = group.add(session, value)
        else:
            new = self.subscriptions.add(topic_filter, session, value)
        session.subscriptions[topic_filter] = value
        return new

    def _store_session(self, session: Session, disconnected_at: float | None) -> None:
        """Record a persistent session's own fields (and forget a stored one that no
        longer is persistent)."""
        journal = self.journal
        if journal is None:
            return
        if session.persistent:
            journal.record(
                PutSession(
                    session.client_id,
                    session.expiry_interval,
                    disconnected_at,
                    session.identity.username if session.identity is not None else None,
                )
            )
            if session.journal is None:
                session.journal = journal
                # Subscriptions it already had (a session that became persistent).
                for topic_filter, value in session.subscriptions.items():
                    journal.record(PutSubscription(session.client_id, topic_filter, value))
        elif session.journal is not None:
            self._unstore(session)

    def _unstore(self, session: Session) -> None:
        """Take a session out of the store (with everything it held there)."""
        journal, session.journal = session.journal, None
        if journal is not None:
            journal.record(DeleteSession(session.client_id))

    def close_session(self, session: Session, link: IClientLink) -> None:
        """
        C{link}'s connection ended: detach it, and discard the session unless it is
        persistent (a clean session lasts as long as its connection, [MQTT-3.1.2-6]).
        A persistent MQTT 5 session is discarded when its Session Expiry Interval
        has passed without a new connection ([MQTT-3.1.2-23]); 0xFFFFFFFF never
        expires.
        """
        if session.link is not link:
            return
        session.detach()
        if not session.persistent:
            self._discard(session)
            return
        self._store_session(session, self.now())
        lifetime = self._offline_lifetime(session)
        if lifetime is not None:
            session.expiry_call = self.clock.callLater(lifetime, self._expire, session)

    def _offline_lifetime(self, session: Session) -> float | None:
        """
        How long a persistent session lasts without a client: its MQTT 5 Session
        Expiry Interval, or for a 3.1.1 session the configured TTL; None: forever.
        """
        interval = session.expiry_interval
        if interval is None:
            return self.config.session_ttl or None
        return None if interval == NEVER_EXPIRES else float(interval)

    def _expire(self, session: Session) -> None:
        session.expiry_call = None
        if session.link is None and self.sessions.get(session.client_id) is session:
            _log.info(
                "Session of {client_id!r} expired after {interval} s offline",
                client_id=session.client_id,
                interval=self._offline_lifetime(session),
            )
            self._discard(session)

    def _cancel_expiry(self, session: Session) -> None:
        call = session.expiry_call
        session.expiry_call = None
        if call is not None and call.active():  # type: ignore[attr-defined]
            call.cancel()  # type: ignore[attr-defined]

    def publish_will(self, session: Session, will: Will, delay: int = 0) -> None:
        """
        Publish C{session}'s will now, or after its MQTT 5 Will Delay Interval:
        then the will waits until the delay has passed or the session ends,
        whichever comes first, and a new connection to the session cancels it
        ([MQTT-3.1.3-9]).
        """
        if delay and session.persistent and self.sessions.get(session.client_id) is session:
            interval = session.expiry_interval
            if interval is not None and interval != NEVER_EXPIRES:
                delay = min(delay, interval)
            self._cancel_will(session)
            session.pending_will = will
            session.will_call = self.clock.callLater(delay, self._delayed_will, session)
            if session.journal is not None:
                # A restart in between publishes it on time, not never.
                session.journal.record(PutWill(session.client_id, will, self.now() + delay))
            return
        self._publish_will_now(session.client_id, will)

    def _delayed_will(self, session: Session) -> None:
        session.will_call = None
        will = session.pending_will
        session.pending_will = None
        if will is not None:
            if session.journal is not None:
                session.journal.record(DeleteWill(session.client_id))
            self._publish_will_now(session.client_id, will)

    def _publish_will_now(self, client_id: str, will: Will) -> None:
        properties = dict(will.properties)
        properties.pop(PropertyId.WILL_DELAY_INTERVAL, None)
        expires_at = None
        if PropertyId.MESSAGE_EXPIRY_INTERVAL in properties:
            expires_at = self.now() + int_property(
                properties, PropertyId.MESSAGE_EXPIRY_INTERVAL, 0
            )
        self.publish(
            Message(
                will.topic, will.payload, will.qos, will.retain, properties, client_id, expires_at
            )
        )

    def _cancel_will(self, session: Session) -> None:
        """Forget a delayed will without publishing it (the client came back)."""
        call = session.will_call
        session.will_call = None
        if session.pending_will is not None and session.journal is not None:
            session.journal.record(DeleteWill(session.client_id))
        session.pending_will = None
        if call is not None and call.active():  # type: ignore[attr-defined]
            call.cancel()  # type: ignore[attr-defined]

    def _discard(self, session: Session) -> None:
        if session.pending_will is not None:
            # The session ends before the will's delay: publish it now.
            will = session.pending_will
            self._cancel_will(session)
            self._publish_will_now(session.client_id, will)
        self._cancel_expiry(session)
        groups = [
            group
            for topic_filter in session.subscriptions
            if (group := self._remove_subscription(session, topic_filter)) is not None
        ]
        if groups:
            self._hand_over(session, groups)
        session.discard_state()
        self._unstore(session)
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]

    def _hand_over(self, session: Session, groups: list[SharedGroup]) -> None:
        """
        A shared-subscription member's session ends: the messages it received through
        a group and could still pass on go to another member of that group instead
        of being lost (5.0 section 4.8.2 lets a server do so).
        """
        for message, qos, group in session.unfinished_shared():
            if not isinstance(group, SharedGroup) or group not in groups or not group.members:
                continue
            member = group.pick()
            if member is None:
                continue
            value = group.members[member]
            granted = value & 3
            subscription_id = value >> SUBSCRIPTION_ID_SHIFT
            member.deliver(
                message,
                min(granted, qos),
                False,
                (subscription_id,) if subscription_id else (),
                group,
            )

    def disconnect_client(self, client_id: str, reason: str = "administrative action") -> bool:
        """
        Close a client's connection on an operator's request: MQTT 5 clients are told
        0x98 (Administrative action) first; the will is published as for any
        connection the server ends. True if the client was connected.
        """
        session = self.sessions.get(client_id)
        if session is None or session.link is None:
            return False
        session.link.close_by_server(0x98, reason)
        return True

    def shutdown(self) -> None:
        """
        Close every client connection: MQTT 5 clients are told 0x8B (server shutting
        down) first. Wills are published, as for any connection the server closes
        without a DISCONNECT from the client.
        """
        for session in list(self.sessions.values()):
            if session.link is not None:
                session.link.close_by_server(0x8B, "server shutting down")
        for session in list(self.sessions.values()):
            if session.pending_will is not None:
                # Sessions live in memory: they end with the process, and a will
                # waiting for its delay goes now rather than never (3.1.3.2.2).
                will = session.pending_will
                self._cancel_will(session)
                self._publish_will_now(session.client_id, will)

    # -- subscriptions ------------------------------------------------------------------

    def subscribe(
        self,
        session: Session,
        topic_filter: str,
        qos: int,
        options: int = 0,
        subscription_id: int = 0,
    ) -> tuple[int, bool]:
        """
        Add or replace a subscription: the granted QoS (or 0x80 if it is refused) and
        whether the subscription is new. The caller sends SUBACK, then
        L{send_retained}.

        @param options: MQTT 5 options as L{NO_LOCAL} and L{RETAIN_AS_PUBLISHED} bits.
        @param subscription_id: the MQTT 5 Subscription Identifier (0: none).
        """
        shared = shared_subscription(topic_filter)
        if shared is not None:
            name, real_filter = shared
            error = _shared_error(name, real_filter)
        else:
            error = topic_filter_error(topic_filter)
        if error is not None:
            _log.info(
                "Refused subscription of {client_id!r} to {topic_filter!r}: {error}",
                client_id=session.client_id,
                topic_filter=topic_filter,
                error=error,
            )
            return TOPIC_FILTER_INVALID, False
        granted = min(qos, self.config.max_qos)
        value = granted | options | (subscription_id << SUBSCRIPTION_ID_SHIFT)
        new = self._index_subscription(session, topic_filter, value)
        if session.journal is not None:
            session.journal.record(PutSubscription(session.client_id, topic_filter, value))
        self.notify("subscribed", session.client_id, topic_filter, granted)
        return granted, new

    def send_retained(
        self, session: Session, topic_filter: str, granted: int, subscription_id: int = 0
    ) -> None:
        """
        Deliver the retained messages matching a new (or replaced) subscription, with
        their retain flag set ([MQTT-3.3.1-6], [MQTT-3.8.4-3]).
        """
        if not len(self.retained) or topic_filter.startswith("$share/"):
            # Not for shared subscriptions (5.0 section 4.8.2).
            return
        ids = (subscription_id,) if subscription_id else ()
        policy = self.policy
        for topic, message in self.retained.matching(topic_filter):
            if policy is not None and not policy.may_receive(session.identity, topic):
                continue
            session.deliver(message, min(granted, message.qos), True, ids)

    def recheck_subscriptions(self) -> int:
        """
        After the authorizers changed (an ACL reloaded): drop every subscription they
        no longer allow, so revoked access stops deliveries at once. Answers that
        need to wait (a remote policy) drop the subscription when they refuse. The
        number of subscriptions dropped at once.
        """
        policy = self.policy
        if policy is None:
            return 0
        dropped = 0
        for session in list(self.sessions.values()):
            identity = session.identity
            for topic_filter, value in list(session.subscriptions.items()):
                allowed: Any = None
                if identity is not None:
                    allowed = policy.may_subscribe(identity, topic_filter, value & 3)
                if hasattr(allowed, "addCallback"):
                    allowed.addCallback(
                        lambda ok, s=session, f=topic_filter: ok is None and self.unsubscribe(s, f)
                    )
                elif allowed is None:
                    self.unsubscribe(session, topic_filter)
                    dropped += 1
        return dropped

    def unsubscribe(self, session: Session, topic_filter: str) -> bool:
        """Remove a subscription; True if there was one."""
        if session.subscriptions.pop(topic_filter, None) is None:
            return False
        if session.journal is not None:
            session.journal.record(DeleteSubscription(session.client_id, topic_filter))
        self._remove_subscription(session, topic_filter)
        self.notify("unsubscribed", session.client_id, topic_filter)
        return True

    def _remove_subscription(self, session: Session, topic_filter: str) -> SharedGroup | None:
        """Take one subscription out of the indexes; the shared group it left, if any."""
        shared = shared_subscription(topic_filter)
        if shared is None:
            self.subscriptions.remove(topic_filter, session)
            return None
        group = self._groups.get(shared)
        if group is None:
            return None
        group.remove(session)
        if not group.members:
            del self._groups[shared]
            self.shared.remove(shared[1], group)
        return group

    # -- publishing -------------------------------------------------------------------

    def publish(self, message: Message) -> tuple[int, int]:
        """
        Route one message to every matching session.

        @return: C{(matched, refused)}: how many sessions it matched, and how many of
            them refused it because their queue was full (MQTT 5 publishers are told
            0x97 Quota exceeded when every one of them did).

        A message with the retain flag replaces the topic's retained message, or
        deletes it when the payload is empty ([MQTT-3.3.1-10], [MQTT-3.3.1-11]); it
        reaches existing subscribers with the flag cleared ([MQTT-3.3.1-9]) unless
        they asked for Retain As Published. Overlapping subscriptions of one session
        get one copy at the highest QoS granted among them ([MQTT-3.3.4-2]), with
        all their Subscription Identifiers ([MQTT-3.3.4-3]).
        """
        if message.retain:
            if message.payload:
                self.retained.set(message.topic, message)
            else:
                self.retained.discard(message.topic)
            if self.journal is not None:
                self.journal.record(
                    PutRetained(stored_message(message))
                    if message.payload
                    else DeleteRetained(message.topic)
                )
        if self.observers:
            self.notify(
                "message_published",
                message.publisher,
                message.topic,
                message.qos,
                message.retain,
                len(message.payload),
            )
        matched, refused = self._publish_shared(message) if self._groups else (0, 0)
        tables = self.subscriptions.match(message.topic)
        if not tables:
            return matched, refused
        qos = message.qos
        publisher = message.publisher
        retain = message.retain
        # With authorizers, every delivery is checked: a wildcard filter never lets
        # through a topic the subscriber may not read.
        policy = self.policy
        topic = message.topic
        if len(tables) == 1:
            receivers = list(tables[0].items())
            if policy is not None:
                receivers = [r for r in receivers if policy.may_receive(r[0].identity, topic)]
            for session, value in receivers:
                if value < 4:
                    # The common case: a plain subscription (QoS only).
                    ok = session.deliver(message, value if value < qos else qos, False)
                else:
                    if value & NO_LOCAL and session.client_id == publisher:
                        continue
                    granted = value & 3
                    subscription_id = value >> SUBSCRIPTION_ID_SHIFT
                    ok = session.deliver(
                        message,
                        granted if granted < qos else qos,
                        retain and bool(value & RETAIN_AS_PUBLISHED),
                        (subscription_id,) if subscription_id else (),
                    )
                matched += 1
                if not ok:
                    refused += 1
            return matched, refused
        # Several filters match: one copy per session ([MQTT-3.3.4-2]); a No Local
        # subscription does not count for the publisher itself.
        merged: dict[Session, list[int]] = {}
        for table in tables:
            for session, value in table.items():
                if value & NO_LOCAL and session.client_id == publisher:
                    continue
                if policy is not None and not policy.may_receive(session.identity, topic):
                    continue
                known = merged.get(session)
                subscription_id = value >> SUBSCRIPTION_ID_SHIFT
                if known is None:
                    merged[session] = [value & 3, value & RETAIN_AS_PUBLISHED, subscription_id]
                else:
                    known[0] = max(known[0], value & 3)
                    known[1] |= value & RETAIN_AS_PUBLISHED
                    if subscription_id:
                        known.append(subscription_id)
        for session, (granted, as_published, *ids) in merged.items():
            ok = session.deliver(
                message,
                granted if granted < qos else qos,
                retain and bool(as_published),
                tuple(sorted(i for i in ids if i)),
            )
            if not ok:
                refused += 1
        return matched + len(merged), refused

    def _publish_shared(self, message: Message) -> tuple[int, int]:
        """Give C{message} to one member of each matching shared group."""
        matched = refused = 0
        qos = message.qos
        policy = self.policy
        for table in self.shared.match(message.topic):
            for group in table:
                member = group.pick()
                if member is None:
                    continue
                if policy is not None and not policy.may_receive(member.identity, message.topic):
                    # Another member that may read it, if there is one.
                    member = next(
                        (m for m in group.members if policy.may_receive(m.identity, message.topic)),
                        None,
                    )
                    if member is None:
                        continue
                value = group.members[member]
                granted = value & 3
                subscription_id = value >> SUBSCRIPTION_ID_SHIFT
                matched += 1
                if not member.deliver(
                    message,
                    granted if granted < qos else qos,
                    message.retain and bool(value & RETAIN_AS_PUBLISHED),
                    (subscription_id,) if subscription_id else (),
                    group,
                ):
                    refused += 1
        return matched, refused

    def notify(self, event: str, *args: object) -> None:
        """Call every observer's C{event}; one that raises is logged and skipped."""
        for observer in self.observers:
            try:
                getattr(observer, event)(*args)
            except Exception:
                _log.failure(
                    "Observer {observer!r} failed on {event}", observer=observer, event=event
                )

    def _message_dropped(
        self, session: Session, message: Message, qos: int, reason: str, first: bool
    ) -> None:
        if first:
            # Once per overflow episode: the policy is to drop the newest message
            # and keep what is queued, so the client gets the oldest first.
            _log.warn(
                "Queue of {client_id!r} is full ({reason}; limits {messages} messages, "
                "{bytes} bytes, 0 = none): dropping new messages for it until it drains",
                client_id=session.client_id,
                reason=reason,
                messages=session.limits.max_queued_messages,
                bytes=session.limits.max_queued_bytes,
            )
        self.notify("message_dropped", session.client_id, message.topic, qos, reason)
