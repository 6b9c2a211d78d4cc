"""
What the broker keeps on disk, and how it is written: the records a store holds, the
changes the broker makes to them, and the journal that commits them in groups.

The broker's state (sessions, their subscriptions, the messages owed to them, the
QoS 2 identifiers awaiting PUBREL, retained messages, delayed wills) changes as
packets come and go. Each change is a small record (L{Change}); the L{Journal}
gathers the changes of one reactor turn and hands them to the store
(L{IPersistence.apply}) as one transaction, off the reactor thread for stores that
block. Acknowledgements that promise durability wait for L{Journal.durable}, which
fires once everything recorded before it is committed: group commit, so that a
thousand PUBACKs of one turn cost one disk sync.

Stores are backends (C{--persistence sqlite:path=...}, C{redis:url=...},
C{memory}); this module is the contract between them and the broker, and imports no
reactor.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mqttbroker.codec import PacketType, Will, decode_properties, encode_properties
from mqttbroker.errors import MQTTError
from mqttbroker.interfaces import IPersistence
from mqttbroker.topics import shared_subscription, topic_filter_error

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from mqttbroker.session import Message

__all__ = [
    "AddAwaitingRel",
    "Change",
    "DeleteAwaitingRel",
    "DeleteDelivery",
    "DeleteRetained",
    "DeleteSession",
    "DeleteSubscription",
    "DeleteWill",
    "Journal",
    "MemoryPersistence",
    "PersistenceError",
    "PutDelivery",
    "PutRetained",
    "PutSession",
    "PutSubscription",
    "PutWill",
    "Snapshot",
    "StoredDelivery",
    "StoredMessage",
    "StoredSession",
    "UpdateDelivery",
    "check_snapshot",
    "restored_message",
    "stored_message",
]

_log = Logger()


class PersistenceError(Exception):
    """The store could not take the changes (unreachable, disk full, corrupt)."""


# -- records ---------------------------------------------------------------------------
#
# Records are never changed once made. The few made for every delivery (the message, the
# delivery and its put, update and delete) are plain slotted dataclasses rather than
# frozen ones: a frozen dataclass sets each field through object.__setattr__, which
# cost about 2 µs of the broker's 25 µs or so per stored delivery.


@dataclass(slots=True)
class StoredMessage:
    """
    A message as stored.

    @ivar properties: the MQTT 5 properties, encoded as a property block (the codec's
        wire form, so every property round-trips); empty without properties.
    @ivar expires_at: when it expires, in seconds since the epoch (wall clock, so that
        it means the same after a restart), or None.
    """

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: bytes = b""
    publisher: str | None = None
    expires_at: float | None = None


@dataclass(slots=True)
class StoredDelivery:
    """
    A message owed to a session: queued (C{packet_id} None) or in flight.

    @ivar seq: its place in the session's order; unique per session, increasing.
    @ivar qos: the QoS it is delivered at (after downgrade).
    @ivar released: QoS 2 in flight whose PUBREC came: PUBREL is what is re-sent.
    @ivar shared: the shared group it came through (C{"group/filter"}), if any.
    """

    seq: int
    message: StoredMessage
    qos: int
    retain: bool = False
    subscription_ids: tuple[int, ...] = ()
    packet_id: int | None = None
    released: bool = False
    shared: str | None = None


@dataclass
class StoredSession:
    """
    A persistent session as stored, with everything that belongs to it.

    @ivar expiry_interval: MQTT 5 Session Expiry Interval (None: a 3.1.1 session,
        kept until a clean session replaces it or its TTL passes).
    @ivar disconnected_at: when its client went away (epoch seconds), None while
        connected; with C{expiry_interval} it says when the session expires.
    """

    client_id: str
    expiry_interval: int | None = None
    disconnected_at: float | None = None
    username: str | None = None
    subscriptions: dict[str, int] = field(default_factory=dict)
    deliveries: list[StoredDelivery] = field(default_factory=list)
    awaiting_rel: set[int] = field(default_factory=set)
    will: Will | None = None
    will_at: float | None = None


@dataclass
class Snapshot:
    """Everything a store holds, as the broker reads it at start."""

    sessions: list[StoredSession] = field(default_factory=list)
    retained: list[StoredMessage] = field(default_factory=list)


# -- checking what a store gave back ----------------------------------------------------

#: The largest MQTT 5 Subscription Identifier (a variable byte integer).
_MAX_SUBSCRIPTION_ID = 268_435_455


def check_snapshot(snapshot: Snapshot) -> None:
    """
    Raise ValueError, naming the record, if anything a store read back could not
    have been written by a broker: a damaged file or a foreign writer under our
    prefix. The broker then refuses to start with that message rather than take
    in state that would fail later, when a client comes back. (Messages are only
    put together for a record found wrong: this runs over every record at start.)
    """
    for stored in snapshot.retained:
        problem = _message_problem(stored)
        if problem:
            raise ValueError(f"retained message {stored.topic!r}: {problem}")
    for session in snapshot.sessions:
        problem = _session_problem(session)
        if problem:
            raise ValueError(f"session {session.client_id!r}{problem}")


def _session_problem(session: StoredSession) -> str | None:
    """What is wrong with a stored session (": ..." or ", delivery N: ..."), if anything."""
    if not isinstance(session.client_id, str):
        return ": client id is not text"
    for value, kind, what in (
        (session.expiry_interval, int, "expiry interval"),
        (session.disconnected_at, (int, float), "time it left"),
        (session.username, str, "user name"),
        (session.will_at, (int, float), "will time"),
    ):
        if not _optional_ok(value, kind):
            return f": {what} {value!r} is not of the right kind"
    for topic_filter, value in session.subscriptions.items():
        if not (isinstance(topic_filter, str) and _filter_ok(topic_filter)):
            return f": subscription filter {topic_filter!r} is not valid"
        if not (type(value) is int and value >= 0 and value & 3 <= 2):
            return f": subscription {topic_filter!r} has the value {value!r}"
    for packet_id in session.awaiting_rel:
        if not _is_packet_id(packet_id):
            return f": packet id {packet_id!r} awaiting PUBREL"
    seen: set[int] = set()
    for delivery in session.deliveries:
        problem = _delivery_problem(delivery, seen)
        if problem:
            return f", delivery {delivery.seq!r}: {problem}"
    will = session.will
    if will is not None:
        problem = _publication_problem(will.topic, will.payload, will.qos)
        if problem:
            return f": will: {problem}"
    return None


def _delivery_problem(delivery: StoredDelivery, seen: set[int]) -> str | None:
    seq = delivery.seq
    if type(seq) is not int or seq <= 0 or seq in seen:
        return "its place is not a positive whole number of its own"
    seen.add(seq)
    if delivery.qos not in (0, 1, 2):
        return f"QoS {delivery.qos!r}"
    if delivery.packet_id is not None and not _is_packet_id(delivery.packet_id):
        return f"packet id {delivery.packet_id!r}"
    for i in delivery.subscription_ids:
        if not (type(i) is int and 0 < i <= _MAX_SUBSCRIPTION_ID):
            return f"subscription identifiers {delivery.subscription_ids!r}"
    if not _optional_ok(delivery.shared, str):
        return f"shared group {delivery.shared!r} is not of the right kind"
    return _message_problem(delivery.message)


def _message_problem(message: StoredMessage) -> str | None:
    problem = _publication_problem(message.topic, message.payload, message.qos)
    if problem:
        return problem
    if not isinstance(message.properties, bytes):
        return "properties are not bytes"
    if not _optional_ok(message.publisher, str):
        return f"publisher {message.publisher!r} is not of the right kind"
    if not _optional_ok(message.expires_at, (int, float)):
        return f"expiry time {message.expires_at!r} is not of the right kind"
    if message.properties:
        try:
            decode_properties(message.properties, _PUBLISH)
        except MQTTError as error:
            return f"properties do not decode: {error}"
    return None


def _publication_problem(topic: object, payload: object, qos: object) -> str | None:
    """What a stored message and a stored will have in common."""
    if not (isinstance(topic, str) and _topic_ok(topic)):
        return f"topic {topic!r} is not a valid topic name"
    if not isinstance(payload, bytes):
        return "payload is not bytes"
    if qos not in (0, 1, 2):
        return f"QoS {qos!r}"
    return None


def _optional_ok(value: object, kind: type | tuple[type, ...]) -> bool:
    return value is None or (isinstance(value, kind) and not isinstance(value, bool))


def _is_packet_id(value: object) -> bool:
    return type(value) is int and 0 < value <= 0xFFFF


def _topic_ok(topic: str) -> bool:
    return bool(topic) and "+" not in topic and "#" not in topic and "\0" not in topic


def _filter_ok(topic_filter: str) -> bool:
    shared = shared_subscription(topic_filter)
    return topic_filter_error(shared[1] if shared is not None else topic_filter) is None


def stored_message(message: Message) -> StoredMessage:
    """A broker message as a store keeps it (properties in their wire form)."""
    stored = message.stored
    if stored is None:
        properties = message.properties
        stored = message.stored = StoredMessage(
            message.topic,
            message.payload,
            message.qos,
            message.retain,
            encode_properties(properties, _PUBLISH, "stored message") if properties else b"",
            message.publisher,
            message.expires_at,
        )
    return stored


def restored_message(stored: StoredMessage) -> Message:
    """The broker message a stored one stands for."""
    from mqttbroker.session import Message  # noqa: PLC0415 (session imports this module)

    properties = decode_properties(stored.properties, _PUBLISH) if stored.properties else {}
    message = Message(
        stored.topic,
        stored.payload,
        stored.qos,
        stored.retain,
        properties,
        stored.publisher,
        stored.expires_at,
    )
    message.stored = stored
    return message


_PUBLISH = int(PacketType.PUBLISH)


# -- changes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PutSession:
    """Create a session, or update its own fields (not what belongs to it)."""

    client_id: str
    expiry_interval: int | None
    disconnected_at: float | None
    username: str | None = None


@dataclass(frozen=True)
class DeleteSession:
    """Remove a session and everything that belongs to it."""

    client_id: str


@dataclass(frozen=True)
class PutSubscription:
    client_id: str
    topic_filter: str
    #: The broker's subscription value: QoS | options | subscription id << 4.
    value: int


@dataclass(frozen=True)
class DeleteSubscription:
    client_id: str
    topic_filter: str


@dataclass(slots=True)
class PutDelivery:
    client_id: str
    delivery: StoredDelivery


@dataclass(slots=True)
class UpdateDelivery:
    """A delivery left the queue (got a packet id) or was PUBREC'd."""

    client_id: str
    seq: int
    packet_id: int | None
    released: bool


@dataclass(slots=True)
class DeleteDelivery:
    client_id: str
    seq: int


@dataclass(frozen=True)
class AddAwaitingRel:
    client_id: str
    packet_id: int


@dataclass(frozen=True)
class DeleteAwaitingRel:
    client_id: str
    packet_id: int


@dataclass(frozen=True)
class PutRetained:
    message: StoredMessage


@dataclass(frozen=True)
class DeleteRetained:
    topic: str


@dataclass(frozen=True)
class PutWill:
    """A will waiting for its delay; published at C{at} (epoch seconds) unless cancelled."""

    client_id: str
    will: Will
    at: float


@dataclass(frozen=True)
class DeleteWill:
    client_id: str


Change = (
    PutSession
    | DeleteSession
    | PutSubscription
    | DeleteSubscription
    | PutDelivery
    | UpdateDelivery
    | DeleteDelivery
    | AddAwaitingRel
    | DeleteAwaitingRel
    | PutRetained
    | DeleteRetained
    | PutWill
    | DeleteWill
)


@implementer(IPersistence)
class MemoryPersistence:
    """
    No store: nothing survives a restart (what mosquitto does without persistence).
    Every group is "committed" at once.
    """

    def __init__(self) -> None:
        self.applied = 0

    def load(self) -> Snapshot:
        return Snapshot()

    def apply(self, changes: Sequence[Change]) -> Deferred[None]:
        self.applied += len(changes)
        return succeed(None)

    def close(self) -> Deferred[None]:
        return succeed(None)


def memory(parameters: Mapping[str, str]) -> MemoryPersistence:
    """C{--persistence memory}: keep nothing."""
    if parameters:
        raise ValueError(f"memory takes no parameters, got {', '.join(sorted(parameters))}")
    return MemoryPersistence()


# -- the journal: group commit ---------------------------------------------------------


def _row_of(change: Change) -> tuple[Any, ...] | None:
    """The single store row a change writes whole (put or delete), if it is one."""
    kind = type(change)
    if kind is PutSession:
        return ("session", change.client_id)  # type: ignore[union-attr]
    if kind is PutSubscription or kind is DeleteSubscription:
        return ("subscription", change.client_id, change.topic_filter)  # type: ignore[union-attr]
    if kind is PutWill or kind is DeleteWill:
        return ("will", change.client_id)  # type: ignore[union-attr]
    if kind is PutRetained:
        return ("retained", change.message.topic)  # type: ignore[union-attr]
    if kind is DeleteRetained:
        return ("retained", change.topic)  # type: ignore[union-attr]
    return None


class Journal:
    """
    Gathers the broker's changes and commits them in groups, one group at a time, in
    order: what one reactor turn records goes to the store together, after the
    previous group is committed.

    @ivar delay: seconds to wait before committing a group (0: at the end of this
        reactor turn), so that a burst spread over a few turns shares one commit.
    @ivar failed: the changes of groups the store refused, counted.
    """

    #: Seconds between probes of a store that failed (doubling up to the maximum).
    probe_delay = 1.0
    probe_max_delay = 30.0

    def __init__(self, store: IPersistence, clock: IReactorTime, delay: float = 0.0) -> None:
        self.store = store
        self.clock = clock
        self.delay = delay
        #: Changes not yet handed to the store, in order; None marks a change that a
        #: later one cancelled (see L{record}).
        self._pending: list[Change | None] = []
        #: The changes of a group the store refused: they go first into the next one.
        self._retry: list[Change] = []
        #: Where the not yet submitted changes of each delivery are in C{_pending},
        #: by (client id, seq): a delivery acknowledged before its group leaves is
        #: never written at all.
        self._fresh: dict[tuple[str, int], list[int]] = {}
        #: Where the last not yet submitted write of each single-row record is in
        #: C{_pending} (a session's row, a subscription, a will, a retained message):
        #: a later write of the same row makes it pointless.
        self._latest: dict[tuple[Any, ...], int] = {}
        #: Changes dropped either way (counted for benchmarks and tests).
        self.absorbed = 0
        #: Groups handed to the store so far: the waits of L{durable} begun while it
        #: holds the same number end together.
        self.groups = 0
        self._waiters: list[Deferred[None]] = []
        self._scheduled = False
        self._committing = False
        self.failed = 0
        #: Changes recorded since start: a caller compares it before and after an
        #: action to know whether the action changed stored state.
        self.recorded = 0
        #: Called with the failure when a group could not be committed (the broker
        #: logs it and refuses new QoS 1/2 messages until a commit succeeds).
        self.on_failure: Callable[[Failure], object] = lambda failure: None
        #: Whether the last commit succeeded. While not, the broker refuses new QoS
        #: 1/2 messages; an empty group probes the store until it works again.
        self.healthy = True
        self._probe_call: Any = None
        self._next_probe = self.probe_delay

    def record(self, change: Change) -> None:
        """
        Add a change to the next group, dropping what it makes pointless there.

        A delivery that is put and deleted before its group leaves for the store
        (its receiver acknowledged it while the group before was being committed:
        a receiver that answers faster than the disk syncs) cancels out: neither the
        put, nor its updates, nor the delete are written. The publisher's
        acknowledgement still waits for the group, and the message was already
        acknowledged by its receiver, so nothing is promised that the store would
        have had to keep. Of several writes of one row (see L{_row_of}) only the
        last is made. Only changes never handed to the store are dropped: a refused
        group's changes are kept as they are, since the store may have applied them
        after all.
        """
        self.recorded += 1
        pending = self._pending
        kind = type(change)
        if kind is DeleteDelivery:
            key = (change.client_id, change.seq)  # type: ignore[union-attr]
            places = self._fresh.pop(key, None)
            if places is not None:
                for place in places:
                    pending[place] = None
                # The put asked for the group already; its waiters still get it.
                self.absorbed += len(places) + 1
                return
        elif kind is PutDelivery:
            self._fresh[(change.client_id, change.delivery.seq)] = [len(pending)]  # type: ignore[union-attr]
        elif kind is UpdateDelivery:
            places = self._fresh.get((change.client_id, change.seq))  # type: ignore[union-attr]
            if places is not None:
                places.append(len(pending))
        elif kind is DeleteSession:
            if self._fresh:
                # A session made again under the same client id counts seq from 1 anew.
                client_id = change.client_id  # type: ignore[union-attr]
                for key in [key for key in self._fresh if key[0] == client_id]:
                    del self._fresh[key]
        else:
            row = _row_of(change)
            if row is not None:
                # The row ends as the last write says whatever came between (a
                # DeleteSession included): an earlier write of it need not be made.
                # Reconnection storms and retained "last value" topics write the
                # same rows over and over, above all while the store is down.
                latest = self._latest
                earlier = latest.get(row)
                if earlier is not None:
                    pending[earlier] = None
                    self.absorbed += 1
                latest[row] = len(pending)
        pending.append(change)
        self._schedule()

    def durable(self) -> Deferred[None]:
        """
        Fires once every change recorded so far is committed; fails with
        L{PersistenceError} if their group could not be.
        """
        waiter: Deferred[None] = Deferred()
        self._waiters.append(waiter)
        self._schedule()
        return waiter

    def _schedule(self) -> None:
        # While the store fails, only the probe tries again (no retry storm).
        if not self._scheduled and not self._committing and self.healthy:
            self._scheduled = True
            self.clock.callLater(self.delay, self._commit)

    def _commit(self) -> None:
        self._scheduled = False
        self.groups += 1
        fresh, self._pending = self._pending, []
        self._fresh = {}
        self._latest = {}
        changes, self._retry = self._retry, []
        changes.extend(change for change in fresh if change is not None)
        waiters, self._waiters = self._waiters, []
        if not changes:
            for waiter in waiters:
                waiter.callback(None)
            return
        self._committing = True
        try:
            result: Any = self.store.apply(changes)
        except Exception:
            result = Failure()
        if isinstance(result, Failure):
            self._done(result, changes, waiters)
            return
        result.addBoth(self._done, changes, waiters)

    def _done(self, result: object, changes: list[Change], waiters: list[Deferred[None]]) -> None:
        self._committing = False
        if isinstance(result, Failure):
            self.failed += len(changes)
            self.healthy = False
            # The group was not applied (a store applies all or nothing); its changes
            # go first into the next one, so the store catches up with the broker's
            # state once it works again. Every change is safe to apply twice (a Redis
            # timeout may hide a group that was applied after all).
            self._retry = changes
            self.on_failure(result)
            self._schedule_probe()
            error = result.value if isinstance(result.value, PersistenceError) else None
            for waiter in waiters:
                waiter.errback(error or PersistenceError(result.getErrorMessage()))
        else:
            self._recovered()
            for waiter in waiters:
                waiter.callback(None)
        if self.healthy and (self._pending or self._retry or self._waiters):
            self._schedule()

    def _recovered(self) -> None:
        if not self.healthy:
            _log.info("The message store works again")
        self.healthy = True
        self._next_probe = self.probe_delay
        call, self._probe_call = self._probe_call, None
        if call is not None and call.active():
            call.cancel()

    def _schedule_probe(self) -> None:
        if self._probe_call is None or not self._probe_call.active():
            self._probe_call = self.clock.callLater(self._next_probe, self._probe)
            self._next_probe = min(self._next_probe * 2, self.probe_max_delay)

    def _probe(self) -> None:
        """
        Try again: the changes kept from failed groups (or an empty group), which
        succeeds once the store takes transactions again.
        """
        self._probe_call = None
        if self.healthy or self._committing:
            return
        if self._pending or self._retry or self._waiters:
            self._scheduled = True
            self._commit()
            return
        try:
            result: Any = self.store.apply([])
        except Exception:
            self._schedule_probe()
            return
        result.addCallbacks(lambda _: self._recovered(), lambda _: self._schedule_probe())
