# -*- test-case-name: tests.test_session -*-
"""
Per-client session state, sans-I/O: subscriptions, outbound packet identifiers and
in-flight window, the queue of messages owed to the client, and inbound QoS 2
identifiers awaiting PUBREL.

A session outlives its network connections when the client asked for a persistent
one (3.1.1 Clean Session = 0). While a connection is attached (L{Session.link}), the
session writes to it directly; while none is, or while the connection's transport is
full, messages wait in a bounded queue.
"""

from __future__ import annotations

import math
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from mqttbroker.codec import EncodedPublish, Properties, PropertyId, Publish, Will
from mqttbroker.interfaces import IClientLink, Identity
from mqttbroker.persistence import (
    AddAwaitingRel,
    DeleteAwaitingRel,
    DeleteDelivery,
    Journal,
    PutDelivery,
    StoredDelivery,
    StoredMessage,
    UpdateDelivery,
    restored_message,
    stored_message,
)

__all__ = ["EXPIRED", "QOS0_OFFLINE", "TOO_LARGE", "Message", "Session", "SessionLimits"]

_pack_ack = struct.Struct("!BBH").pack


class Message:
    """
    An application message as the broker routes it: decoded once, encoded once per
    shape of receiver (protocol level, QoS, retain flag, and at MQTT 5 the
    subscription identifiers and remaining expiry) and shared by every receiver of
    that shape.

    @ivar publisher: the client id of the sender (None for messages the broker makes).
    @ivar size: payload plus topic bytes, what queue byte limits count.
    @ivar expires_at: when the MQTT 5 Message Expiry Interval runs out, on the
        broker's clock, or None.
    """

    __slots__ = (
        "_encoded",
        "_encoded_v5",
        "expires_at",
        "payload",
        "properties",
        "publisher",
        "qos",
        "retain",
        "size",
        "stored",
        "topic",
    )

    def __init__(
        self,
        topic: str,
        payload: bytes,
        qos: int,
        retain: bool,
        properties: Properties | None = None,
        publisher: str | None = None,
        expires_at: float | None = None,
    ) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties: Properties = properties if properties is not None else {}
        self.publisher = publisher
        self.expires_at = expires_at
        self.size = len(payload) + (len(topic) if topic.isascii() else len(topic.encode()))
        self._encoded: dict[int, EncodedPublish] = {}
        self._encoded_v5: dict[tuple[int, bool, tuple[int, ...], int | None], EncodedPublish] = {}
        #: Its stored form, made once however many persistent sessions it goes to.
        self.stored: StoredMessage | None = None

    def encoded(
        self,
        level: int,
        qos: int,
        retain: bool,
        subscription_ids: tuple[int, ...] = (),
        remaining: int | None = None,
    ) -> EncodedPublish:
        """
        The shared encoding of this message for one shape of receiver.

        @param subscription_ids: MQTT 5 Subscription Identifiers of the receiver's
            matching subscriptions ([MQTT-3.3.4-3]).
        @param remaining: MQTT 5 Message Expiry Interval left, in whole seconds
            ([MQTT-3.3.2-6]); None when the message does not expire.
        """
        if level == 5 and (subscription_ids or remaining is not None):
            key5 = (qos, retain, subscription_ids, remaining)
            encoded = self._encoded_v5.get(key5)
            if encoded is None:
                properties = dict(self.properties)
                if remaining is not None:
                    properties[PropertyId.MESSAGE_EXPIRY_INTERVAL] = remaining
                if subscription_ids:
                    properties[PropertyId.SUBSCRIPTION_IDENTIFIER] = list(subscription_ids)
                encoded = self._encoded_v5[key5] = EncodedPublish(
                    Publish(self.topic, self.payload, qos, retain, properties=properties), 5
                )
            return encoded
        key = (level << 3) | (qos << 1) | retain
        encoded = self._encoded.get(key)
        if encoded is None:
            properties = self.properties if level == 5 else {}
            encoded = self._encoded[key] = EncodedPublish(
                Publish(self.topic, self.payload, qos, retain, properties=properties), level
            )
        return encoded

    def remaining(self, now: float) -> int | None:
        """Whole seconds of expiry left (at least 1), 0 if expired, None if it never expires."""
        if self.expires_at is None:
            return None
        left = self.expires_at - now
        if left <= 0:
            return 0
        return max(1, math.ceil(left))

    def __repr__(self) -> str:
        return f"<Message {self.topic!r} qos={self.qos} retain={self.retain} {self.size} B>"


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """
    The bounds every session keeps.

    @ivar max_inflight: QoS 1/2 messages sent and not yet acknowledged, per session;
        more wait in the queue.
    @ivar max_queued_messages: messages waiting (offline, or behind a full window or
        a full transport); 0 means no limit.
    @ivar max_queued_bytes: their payload and topic bytes; 0 means no limit.
    @ivar queue_qos0: whether QoS 0 messages are queued for offline persistent
        sessions (the spec allows either; off by default, as in mosquitto).
    """

    max_inflight: int = 20
    max_queued_messages: int = 1000
    max_queued_bytes: int = 0
    queue_qos0: bool = False


class _Outbound:
    """A QoS 1/2 message sent to the client and not yet fully acknowledged."""

    __slots__ = ("message", "qos", "released", "retain", "seq", "shared", "subscription_ids")

    def __init__(
        self,
        message: Message,
        qos: int,
        retain: bool,
        subscription_ids: tuple[int, ...],
        shared: object = None,
        seq: int = 0,
    ) -> None:
        self.message = message
        #: Its place in the session's store (0: not stored).
        self.seq = seq
        self.qos = qos
        self.retain = retain
        self.subscription_ids = subscription_ids
        #: The shared subscription group the message came through, if any.
        self.shared = shared
        #: QoS 2 only: PUBREC received and PUBREL sent; awaiting PUBCOMP.
        self.released = False


#: Reason given when a QoS 0 message finds its persistent session offline.
QOS0_OFFLINE = "QoS 0 while offline"
#: Reason given when a message's MQTT 5 expiry ran out before it could be sent.
EXPIRED = "expired"
#: Reason given when a message is larger than the client's Maximum Packet Size.
TOO_LARGE = "larger than the client's maximum packet size"

#: Drop reasons that are the configured policy, not a full queue.
_POLICY_DROPS = frozenset((QOS0_OFFLINE, EXPIRED, TOO_LARGE))

#: (message, qos, retain flag, subscription ids, the shared group it came through,
#: its place in the session's store: 0 when not stored).
_QueueEntry = tuple[Message, int, bool, tuple[int, ...], object, int]

#: Called when a message is dropped: (session, message, qos, reason, first), where
#: C{qos} is the QoS it would have been delivered at and C{first} is True for the
#: first drop since the queue was last below its limits.
DropCallback = Callable[["Session", Message, int, str, bool], None]


def _ignore_drop(session: Session, message: Message, qos: int, reason: str, first: bool) -> None:
    pass


def _no_time() -> float:
    return 0.0


def _group_name(shared: object) -> str | None:
    """How a store names the shared group a message came through."""
    if shared is None:
        return None
    name = getattr(shared, "name", None)
    topic_filter = getattr(shared, "topic_filter", None)
    return f"{name}/{topic_filter}" if name is not None else None


class Session:
    """
    One client's session.

    @ivar client_id: the client identifier.
    @ivar persistent: the session survives its connection (Clean Session 0).
    @ivar subscriptions: topic filter -> granted QoS.
    @ivar link: the connection now attached, or None while the client is offline.
    @ivar awaiting_rel: packet identifiers of inbound QoS 2 messages that were
        routed and are waiting for the client's PUBREL (exactly-once delivery).
    @ivar dropped: how many messages were dropped for this session.
    """

    __slots__ = (
        "_drop",
        "_inflight",
        "_next_pid",
        "_now",
        "_overflowing",
        "_queue",
        "_queued_bytes",
        "_seq",
        "_window",
        "awaiting_rel",
        "client_id",
        "dropped",
        "expiry_call",
        "expiry_interval",
        "identity",
        "journal",
        "limits",
        "link",
        "pending_will",
        "persistent",
        "subscriptions",
        "will_call",
    )

    def __init__(
        self,
        client_id: str,
        persistent: bool,
        limits: SessionLimits,
        on_drop: DropCallback = _ignore_drop,
        now: Callable[[], float] = _no_time,
    ) -> None:
        self.client_id = client_id
        self.persistent = persistent
        self.limits = limits
        #: MQTT 5 Session Expiry Interval in seconds (0xFFFFFFFF: never); None for
        #: 3.1/3.1.1 sessions, which last until a clean session replaces them.
        self.expiry_interval: int | None = None
        #: The pending expiry while offline (an IDelayedCall), owned by the broker.
        self.expiry_call: object | None = None
        #: An MQTT 5 will waiting for its Will Delay Interval, and its timer.
        self.pending_will: Will | None = None
        self.will_call: object | None = None
        self._now = now
        self._window = limits.max_inflight
        self.subscriptions: dict[str, int] = {}
        self.link: IClientLink | None = None
        #: Who the client is (an interfaces.Identity) since its last CONNECT, for
        #: the authorizers' read check on every delivery.
        self.identity: Identity | None = None
        self.awaiting_rel: set[int] = set()
        self.dropped = 0
        self._drop = on_drop
        self._inflight: dict[int, _Outbound] = {}
        self._queue: deque[_QueueEntry] = deque()
        self._queued_bytes = 0
        self._next_pid = 1
        self._overflowing = False
        #: Where changes to this session are recorded: set exactly while the broker's
        #: store holds the session (persistent, with a store), else None.
        self.journal: Journal | None = None
        self._seq = 0

    def __repr__(self) -> str:
        state = "online" if self.link is not None else "offline"
        return (
            f"<Session {self.client_id!r} {state} inflight={len(self._inflight)} "
            f"queued={len(self._queue)}>"
        )

    @property
    def inflight_count(self) -> int:
        """QoS 1/2 messages sent and not fully acknowledged."""
        return len(self._inflight)

    @property
    def queued_count(self) -> int:
        """Messages waiting to be sent."""
        return len(self._queue)

    @property
    def queued_bytes(self) -> int:
        """Payload and topic bytes of the waiting messages."""
        return self._queued_bytes

    @property
    def overflowing(self) -> bool:
        """The queue hit a limit and has not drained below it since (drops happen)."""
        return self._overflowing

    # -- delivery ---------------------------------------------------------------

    def deliver(
        self,
        message: Message,
        qos: int,
        retain: bool,
        subscription_ids: tuple[int, ...] = (),
        shared: object = None,
    ) -> bool:
        """
        Send C{message} at C{qos} (already downgraded to the subscription's grant)
        now if the client is online with room, else queue it within the limits.

        @return: False only when a full queue refused it (quota exceeded); a message
            dropped by policy (QoS 0 while offline, expired, too large for the client)
            counts as handled.
        """
        link = self.link
        if qos == 0:
            # Behind a non-empty queue even QoS 0 waits its turn: messages of one
            # topic and QoS reach the client in the order they came ([MQTT-4.6.0-6]).
            if link is not None and link.writable and not self._queue:
                if message.expires_at is None and not subscription_ids:
                    encoded = message.encoded(link.protocol_level, 0, retain)
                    if encoded.size <= link.max_packet_size:
                        link.write(encoded.whole)
                        return True
                self._send_qos0(link, message, retain, subscription_ids)
                return True
            if link is None and not self.limits.queue_qos0:
                self._dropped(message, 0, QOS0_OFFLINE)
                return True
        elif (
            link is not None
            and link.writable
            and not self._queue
            and len(self._inflight) < self._window
        ):
            self._send_new(link, message, qos, retain, subscription_ids, shared, 0)
            return True
        return self._enqueue(message, qos, retain, subscription_ids, shared)

    def _enqueue(
        self,
        message: Message,
        qos: int,
        retain: bool,
        subscription_ids: tuple[int, ...],
        shared: object = None,
    ) -> bool:
        reason = self._full(message.size)
        if reason is not None and self._queue:
            # Expired messages must not hold the place of live ones.
            self.drop_expired()
            reason = self._full(message.size)
        if reason is not None:
            self._dropped(message, qos, reason)
            return False
        seq = 0
        if self.journal is not None and qos:
            seq = self._store_new(message, qos, retain, subscription_ids, shared, None)
        self._queue.append((message, qos, retain, subscription_ids, shared, seq))
        self._queued_bytes += message.size
        return True

    def _store_new(
        self,
        message: Message,
        qos: int,
        retain: bool,
        subscription_ids: tuple[int, ...],
        shared: object,
        packet_id: int | None,
    ) -> int:
        """Record a new delivery (queued, or sent as C{packet_id}); its place."""
        assert self.journal is not None
        self._seq = seq = self._seq + 1
        delivery = StoredDelivery(
            seq, stored_message(message), qos, retain, subscription_ids, packet_id,
            False, _group_name(shared),
        )  # fmt: skip
        self.journal.record(PutDelivery(self.client_id, delivery))
        return seq

    def _full(self, size: int) -> str | None:
        """Why a message of C{size} bytes does not fit in the queue, or None."""
        limits = self.limits
        if limits.max_queued_messages and len(self._queue) >= limits.max_queued_messages:
            return "queue full (messages)"
        if limits.max_queued_bytes and self._queued_bytes + size > limits.max_queued_bytes:
            return "queue full (bytes)"
        return None

    def _dropped(self, message: Message, qos: int, reason: str) -> None:
        self.dropped += 1
        first = False
        if reason not in _POLICY_DROPS and not self._overflowing:
            self._overflowing = first = True
        self._drop(self, message, qos, reason, first)

    def _allocate_pid(self) -> int:
        pid = self._next_pid
        inflight = self._inflight
        while pid in inflight:
            pid = pid + 1 if pid < 0xFFFF else 1
        self._next_pid = pid + 1 if pid < 0xFFFF else 1
        return pid

    def _encoding(
        self,
        link: IClientLink,
        message: Message,
        qos: int,
        retain: bool,
        subscription_ids: tuple[int, ...],
    ) -> EncodedPublish | None:
        """
        The bytes to send, or None when the message must not go out: its expiry ran
        out ([MQTT-3.3.2-5]) or it is larger than the client accepts ([MQTT-3.1.2-25]:
        discarded as if sent).
        """
        level = link.protocol_level
        if message.expires_at is None:
            if level == 5 and subscription_ids:
                encoded = message.encoded(5, qos, retain, subscription_ids)
            else:
                encoded = message.encoded(level, qos, retain)
        else:
            remaining = message.remaining(self._now())
            if remaining == 0:
                self._dropped(message, qos, EXPIRED)
                return None
            encoded = message.encoded(level, qos, retain, subscription_ids, remaining)
        if encoded.size > link.max_packet_size:
            self._dropped(message, qos, TOO_LARGE)
            return None
        return encoded

    def _send_qos0(
        self,
        link: IClientLink,
        message: Message,
        retain: bool,
        subscription_ids: tuple[int, ...],
    ) -> None:
        if message.expires_at is None and not subscription_ids:
            encoded: EncodedPublish | None = message.encoded(link.protocol_level, 0, retain)
            if encoded.size <= link.max_packet_size:  # type: ignore[union-attr]
                link.write(encoded.whole)  # type: ignore[union-attr]
                return
        encoded = self._encoding(link, message, 0, retain, subscription_ids)
        if encoded is not None:
            link.write(encoded.whole)

    def _send_new(
        self,
        link: IClientLink,
        message: Message,
        qos: int,
        retain: bool,
        subscription_ids: tuple[int, ...],
        shared: object,
        seq: int,
    ) -> None:
        """Send a QoS 1/2 message now: new (C{seq} 0), or from the queue."""
        encoded = self._encoding(link, message, qos, retain, subscription_ids)
        journal = self.journal
        if encoded is None:
            if seq and journal is not None:
                journal.record(DeleteDelivery(self.client_id, seq))
            return
        pid = self._allocate_pid()
        if journal is not None:
            if seq:
                journal.record(UpdateDelivery(self.client_id, seq, pid, False))
            else:
                seq = self._store_new(message, qos, retain, subscription_ids, shared, pid)
        self._inflight[pid] = _Outbound(message, qos, retain, subscription_ids, shared, seq)
        link.write_sequence(encoded.chunks(pid))

    def drain(self) -> None:
        """Send queued messages while the client is online, writable and has room."""
        link = self.link
        queue = self._queue
        if link is None or not queue:
            return
        inflight = self._inflight
        window = self._window
        while queue and link.writable:
            message, qos, retain, subscription_ids, shared, seq = queue[0]
            if qos:
                if len(inflight) >= window:
                    break
                queue.popleft()
                self._send_new(link, message, qos, retain, subscription_ids, shared, seq)
            else:
                queue.popleft()
                self._send_qos0(link, message, retain, subscription_ids)
            self._queued_bytes -= message.size
        if self._overflowing and self._below_limits():
            self._overflowing = False

    @property
    def has_room(self) -> bool:
        """Online, writable, nothing queued and room in the in-flight window."""
        link = self.link
        return (
            link is not None
            and link.writable
            and not self._queue
            and len(self._inflight) < self._window
        )

    def unfinished_shared(self) -> list[tuple[Message, int, object]]:
        """
        The messages that came through shared subscriptions and that this session
        could still hand to another member: QoS 1 ones in flight, and QoS 1/2 ones
        queued, in order, with their group. A QoS 2 message already sent stays with
        this session ([MQTT-4.8.2-5], [MQTT-4.8.2-6]).
        """
        owed: list[tuple[Message, int, object]] = [
            (entry.message, entry.qos, entry.shared)
            for entry in self._inflight.values()
            if entry.shared is not None and entry.qos == 1
        ]
        owed.extend(
            (message, qos, shared)
            for message, qos, _, _, shared, _ in self._queue
            if qos and shared is not None
        )
        return owed

    def drop_expired(self) -> int:
        """Remove queued messages whose expiry ran out; how many went."""
        if not self._queue:
            return 0
        now = self._now()
        kept: deque[_QueueEntry] = deque()
        gone = 0
        for entry in self._queue:
            message = entry[0]
            if message.expires_at is not None and message.expires_at <= now:
                gone += 1
                self._queued_bytes -= message.size
                self._forget(entry[5])
                self._dropped(message, entry[1], EXPIRED)
            else:
                kept.append(entry)
        self._queue = kept
        return gone

    def _below_limits(self) -> bool:
        limits = self.limits
        return (
            not limits.max_queued_messages or len(self._queue) < limits.max_queued_messages
        ) and (not limits.max_queued_bytes or self._queued_bytes < limits.max_queued_bytes)

    # -- acknowledgements from the client ------------------------------------------

    def puback(self, packet_id: int) -> bool:
        """The client acknowledged a QoS 1 message; True if it was in flight."""
        entry = self._inflight.get(packet_id)
        if entry is None or entry.qos != 1:
            return False
        del self._inflight[packet_id]
        self._forget(entry.seq)
        if self._queue:
            self.drain()
        return True

    def _forget(self, seq: int) -> None:
        """A stored delivery is over (acknowledged, dropped)."""
        if seq and self.journal is not None:
            self.journal.record(DeleteDelivery(self.client_id, seq))

    def pubrec(self, packet_id: int) -> bool:
        """
        The client received a QoS 2 message: from now on only PUBREL/PUBCOMP remain,
        and the message itself is released. True if it was in flight.
        """
        entry = self._inflight.get(packet_id)
        if entry is None or entry.qos != 2:
            return False
        if not entry.released and entry.seq and self.journal is not None:
            self.journal.record(UpdateDelivery(self.client_id, entry.seq, packet_id, True))
        entry.released = True
        return True

    def abandon(self, packet_id: int) -> bool:
        """
        The client refused a QoS 2 message (MQTT 5 PUBREC with an error code): drop
        it from the in-flight window; True if it was there.
        """
        entry = self._inflight.get(packet_id)
        if entry is None or entry.qos != 2 or entry.released:
            return False
        del self._inflight[packet_id]
        self._forget(entry.seq)
        if self._queue:
            self.drain()
        return True

    def pubcomp(self, packet_id: int) -> bool:
        """The client completed a QoS 2 delivery; True if it was awaiting PUBCOMP."""
        entry = self._inflight.get(packet_id)
        if entry is None or not entry.released:
            return False
        del self._inflight[packet_id]
        self._forget(entry.seq)
        if self._queue:
            self.drain()
        return True

    def await_release(self, packet_id: int) -> None:
        """An inbound QoS 2 message was routed; its PUBREL is awaited."""
        self.awaiting_rel.add(packet_id)
        if self.journal is not None:
            self.journal.record(AddAwaitingRel(self.client_id, packet_id))

    def released(self, packet_id: int) -> bool:
        """The client's PUBREL came; True if the identifier was awaited."""
        if packet_id not in self.awaiting_rel:
            return False
        self.awaiting_rel.discard(packet_id)
        if self.journal is not None:
            self.journal.record(DeleteAwaitingRel(self.client_id, packet_id))
        return True

    def restore(
        self,
        deliveries: list[StoredDelivery],
        awaiting_rel: set[int],
        shared_groups: Callable[[str], object],
    ) -> None:
        """
        Take back what a store held for this session (at start): deliveries in
        flight keep their packet identifiers and are re-sent with DUP when the
        client comes back; queued ones keep their order.
        """
        for delivery in sorted(deliveries, key=lambda d: d.seq):
            message = restored_message(delivery.message)
            shared = shared_groups(delivery.shared) if delivery.shared else None
            if delivery.packet_id is None:
                self._queue.append(
                    (message, delivery.qos, delivery.retain, delivery.subscription_ids,
                     shared, delivery.seq)
                )  # fmt: skip
                self._queued_bytes += message.size
            else:
                entry = _Outbound(
                    message, delivery.qos, delivery.retain, delivery.subscription_ids,
                    shared, delivery.seq,
                )  # fmt: skip
                entry.released = delivery.released
                self._inflight[delivery.packet_id] = entry
            self._seq = max(self._seq, delivery.seq)
        self.awaiting_rel.update(awaiting_rel)

    # -- connection lifecycle -------------------------------------------------------

    def attach(self, link: IClientLink) -> None:
        """
        A connection took this session: re-send what is in flight, in the original
        order, PUBLISH with DUP set and PUBREL as they were ([MQTT-4.4.0-1]), then
        the queue. The in-flight window is the smaller of the configured one and the
        client's MQTT 5 Receive Maximum ([MQTT-3.3.4-9]).
        """
        self.link = link
        self._window = min(self.limits.max_inflight, link.receive_maximum)
        self.drop_expired()
        now = self._now()
        level = link.protocol_level
        for pid, entry in list(self._inflight.items()):
            if entry.released:
                link.write(_pack_ack(0x62, 2, pid))
                continue
            message = entry.message
            remaining = None
            if message.expires_at is not None:
                # Delivery has started, so the message goes again even if its expiry
                # ran out ([MQTT-3.3.2-5] deletes only what was not started).
                remaining = max(1, message.remaining(now) or 1)
            encoded = message.encoded(
                level, entry.qos, entry.retain, entry.subscription_ids, remaining
            )
            if encoded.size > link.max_packet_size:
                # Too large for the new connection: discarded as if delivered.
                del self._inflight[pid]
                self._forget(entry.seq)
                self._dropped(message, entry.qos, TOO_LARGE)
                continue
            link.write_sequence(encoded.chunks(pid, dup=True))
        self.drain()

    def detach(self) -> None:
        """The connection went away; keep the state for the next one."""
        self.link = None

    def discard_state(self) -> None:
        """Forget everything owed (a clean session ends)."""
        self._inflight.clear()
        self._queue.clear()
        self._queued_bytes = 0
        self.awaiting_rel.clear()
        self.subscriptions.clear()
