# -*- test-case-name: tests.test_redis_store -*-
"""
The shared store (C{--persistence redis:url=redis://127.0.0.1:6379/12,prefix=mqtt:}):
the broker's durable state in a Redis server, through C{txredisapi} (Twisted-native:
nothing blocks the reactor, no thread).

Every group of changes the journal hands over is written as one C{MULTI} ... C{EXEC}
block in a single write on one connection, and L{RedisStore.apply} fires once
C{EXEC} answered. Redis writes a transaction to its append-only file as a unit, so
that with C{appendonly yes} and C{appendfsync always} the group is on disk when the
answer comes; with weaker settings durability is Redis's (see
C{docs/backend-redis.rst}; L{RedisStore.load} warns about them).

When Redis is unreachable, or does not answer within C{timeout}, the group fails
with L{PersistenceError} (at once when there is no connection) and the connection
is reopened in the background with exponential backoff; later groups succeed once
it is back.

Records are stored in a compact binary form of our own (L{FORMAT}, first byte of
every value), not JSON: payloads stay raw bytes (no base64), reading is a few
C{struct} calls, and a later format can be told apart by that first byte.
"""

from __future__ import annotations

import importlib.util
import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mqttbroker.codec import WILL_PROPERTIES, Will, decode_properties, encode_properties
from mqttbroker.errors import MQTTError
from mqttbroker.interfaces import IPersistence
from mqttbroker.persistence import (
    AddAwaitingRel,
    Change,
    DeleteAwaitingRel,
    DeleteDelivery,
    DeleteRetained,
    DeleteSession,
    DeleteSubscription,
    DeleteWill,
    PersistenceError,
    PutDelivery,
    PutRetained,
    PutSession,
    PutSubscription,
    PutWill,
    Snapshot,
    StoredDelivery,
    StoredMessage,
    StoredSession,
    UpdateDelivery,
    check_snapshot,
)

__all__ = ["FORMAT", "PARAMETERS", "RedisStore", "build"]

_log = Logger()

#: What C{build} accepts; anything else is a mistake worth reporting.
PARAMETERS = ("url", "prefix", "timeout")

#: The version byte that starts every stored record.
FORMAT = 1

#: Longest wait between two reconnection attempts, in seconds (txredisapi starts at
#: one second and multiplies by e).
MAX_RECONNECT_DELAY = 5.0

#: Sessions read per round trip by L{RedisStore.load}.
LOAD_BATCH = 200

#: Reads hashes and sets (KEYS, with ARGV[1] saying h or s for each) and answers one
#: string: per key, a 32-bit count, then each item as a 32-bit length and its bytes.
_READ_SCRIPT = b"""
local out = {}
local kinds = ARGV[1]
for i = 1, #KEYS do
  local items
  if string.sub(kinds, i, i) == 's' then
    items = redis.call('SMEMBERS', KEYS[i])
  else
    items = redis.call('HGETALL', KEYS[i])
  end
  out[#out + 1] = struct.pack('>I4', #items)
  for j = 1, #items do
    out[#out + 1] = struct.pack('>I4', #items[j])
    out[#out + 1] = items[j]
  end
end
return table.concat(out)
"""

#: Commands whose arguments after the key can be concatenated: two in a row on one
#: key are one command.
_MERGEABLE = frozenset((b"HSET", b"HDEL", b"SADD", b"SREM"))

Command = tuple[bytes, ...]


def build(parameters: Mapping[str, str]) -> RedisStore:
    """
    The store a C{redis:} description names.

    @raise ValueError: a missing, unknown or malformed parameter (named), or
        txredisapi not installed.
    """
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"unknown parameter {unknown[0]!r} (known: {', '.join(PARAMETERS)})")
    url = parameters.get("url", "").strip()
    if not url:
        raise ValueError("parameter 'url' is required, e.g. url=redis://127.0.0.1:6379/0")
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise ValueError(f"parameter 'url': {parts.scheme!r} URLs are not supported, only redis://")
    if parts.query or parts.fragment:
        raise ValueError("parameter 'url': no query or fragment is allowed")
    try:
        port = parts.port or 6379
    except ValueError:
        raise ValueError("parameter 'url': the port is not a number from 0 to 65535") from None
    host = parts.hostname or "127.0.0.1"
    path = parts.path.strip("/")
    if path and not path.isdigit():
        raise ValueError(f"parameter 'url': {path!r} is not a database number")
    db = int(path) if path else 0
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if username is not None and password is None:
        # redis://secret@host: the single field is the password, as redis-cli reads it.
        username, password = None, username
    prefix = parameters.get("prefix", "mqtt:")
    try:
        timeout = float(parameters.get("timeout", "5"))
    except ValueError:
        raise ValueError("parameter 'timeout': not a number of seconds") from None
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError("parameter 'timeout': must be a positive number of seconds")
    if importlib.util.find_spec("txredisapi") is None:
        raise ValueError("the redis store needs txredisapi: pip install 'mqttbroker[redis]'")
    return RedisStore(host, port, db, prefix, timeout, username=username, password=password)


# -- the records' binary form --------------------------------------------------------------

_U8 = struct.Struct(">B")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_F64 = struct.Struct(">d")
_MESSAGE_HEAD = struct.Struct(">BB")  # flags, qos
_DELIVERY_HEAD = struct.Struct(">BqBBH")  # format, seq, qos, flags, subscription ids
_WILL_HEAD = struct.Struct(">BdBB")  # format, at, qos, retain
_STATE = struct.Struct(">BHB")  # format, packet id (0: none), released

_RETAIN, _PUBLISHER, _EXPIRES, _SHARED = 1, 2, 4, 2


class _Reader:
    """Reads a record front to back; any overrun or leftover is a corrupt record."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, layout: struct.Struct) -> tuple[Any, ...]:
        values = layout.unpack_from(self.data, self.pos)
        self.pos += layout.size
        return values

    def blob(self) -> bytes:
        (length,) = self.take(_U32)
        end = self.pos + length
        if end > len(self.data):
            raise ValueError("a field runs past the end of the record")
        value = self.data[self.pos : end]
        self.pos = end
        return value

    def text(self) -> str:
        return self.blob().decode("utf-8")

    def version(self) -> None:
        (version,) = self.take(_U8)
        if version != FORMAT:
            raise ValueError(f"record format {version}, this broker reads format {FORMAT}")

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ValueError(f"{len(self.data) - self.pos} bytes after the record")


def _blob(out: bytearray, value: bytes) -> None:
    out += _U32.pack(len(value))
    out += value


def _put_message(out: bytearray, message: StoredMessage) -> None:
    flags = (
        (_RETAIN if message.retain else 0)
        | (_PUBLISHER if message.publisher is not None else 0)
        | (_EXPIRES if message.expires_at is not None else 0)
    )
    out += _MESSAGE_HEAD.pack(flags, message.qos)
    if message.expires_at is not None:
        out += _F64.pack(message.expires_at)
    _blob(out, message.topic.encode("utf-8"))
    _blob(out, bytes(message.payload))
    _blob(out, bytes(message.properties))
    if message.publisher is not None:
        _blob(out, message.publisher.encode("utf-8"))


def _get_message(reader: _Reader) -> StoredMessage:
    flags, qos = reader.take(_MESSAGE_HEAD)
    expires_at = reader.take(_F64)[0] if flags & _EXPIRES else None
    topic = reader.text()
    payload = reader.blob()
    properties = reader.blob()
    publisher = reader.text() if flags & _PUBLISHER else None
    return StoredMessage(
        topic, payload, qos, bool(flags & _RETAIN), properties, publisher, expires_at
    )


def encode_message(message: StoredMessage) -> bytes:
    """A retained message as stored."""
    out = bytearray(_U8.pack(FORMAT))
    _put_message(out, message)
    return bytes(out)


def decode_message(data: bytes) -> StoredMessage:
    reader = _Reader(data)
    reader.version()
    message = _get_message(reader)
    reader.end()
    return message


def encode_delivery(delivery: StoredDelivery) -> bytes:
    """
    A delivery as stored, without its packet id and released flag: those change
    while it is in flight and are kept in a field of their own (L{encode_state}),
    because a transaction cannot read a record to rewrite it.
    """
    flags = (_RETAIN if delivery.retain else 0) | (_SHARED if delivery.shared is not None else 0)
    ids = delivery.subscription_ids
    out = bytearray(_DELIVERY_HEAD.pack(FORMAT, delivery.seq, delivery.qos, flags, len(ids)))
    for identifier in ids:
        out += _U32.pack(identifier)
    if delivery.shared is not None:
        _blob(out, delivery.shared.encode("utf-8"))
    _put_message(out, delivery.message)
    return bytes(out)


def decode_delivery(data: bytes, state: bytes | None = None) -> StoredDelivery:
    """A delivery from its record and its state (None: queued)."""
    reader = _Reader(data)
    version, seq, qos, flags, count = reader.take(_DELIVERY_HEAD)
    if version != FORMAT:
        raise ValueError(f"record format {version}, this broker reads format {FORMAT}")
    ids = tuple(reader.take(_U32)[0] for _ in range(count))
    shared = reader.text() if flags & _SHARED else None
    message = _get_message(reader)
    reader.end()
    packet_id, released = decode_state(state) if state is not None else (None, False)
    return StoredDelivery(
        seq, message, qos, bool(flags & _RETAIN), ids, packet_id, released, shared
    )


def encode_state(packet_id: int | None, released: bool) -> bytes:
    """Where a delivery is: queued (no packet id), in flight, or PUBREC'd (released)."""
    return _STATE.pack(FORMAT, packet_id or 0, released)


def decode_state(data: bytes) -> tuple[int | None, bool]:
    reader = _Reader(data)
    version, packet_id, released = reader.take(_STATE)
    if version != FORMAT:
        raise ValueError(f"record format {version}, this broker reads format {FORMAT}")
    reader.end()
    return packet_id or None, bool(released)


def encode_will(will: Will, at: float) -> bytes:
    out = bytearray(_WILL_HEAD.pack(FORMAT, at, will.qos, will.retain))
    _blob(out, will.topic.encode("utf-8"))
    _blob(out, bytes(will.payload))
    _blob(out, encode_properties(will.properties, WILL_PROPERTIES, "stored will"))
    return bytes(out)


def decode_will(data: bytes) -> tuple[Will, float]:
    reader = _Reader(data)
    version, at, qos, retain = reader.take(_WILL_HEAD)
    if version != FORMAT:
        raise ValueError(f"record format {version}, this broker reads format {FORMAT}")
    topic = reader.text()
    payload = reader.blob()
    properties = decode_properties(reader.blob(), WILL_PROPERTIES, "stored will")
    reader.end()
    return Will(topic, payload, qos, bool(retain), properties), at


# -- the store -----------------------------------------------------------------------------


@implementer(IPersistence)
class RedisStore:
    """
    The broker's state in Redis, under C{prefix} (see C{docs/backend-redis.rst} for
    the key layout). One connection, pipelined; one broker per prefix.

    @ivar healthy: whether the last request was answered.
    """

    def __init__(
        self,
        host: str,
        port: int,
        db: int,
        prefix: str,
        timeout: float,
        username: str | None = None,
        password: str | None = None,
        clock: IReactorTime | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.db = db
        self.prefix = prefix
        self.timeout = timeout
        self.username = username
        self.password = password
        self._clock = clock
        self._factory: Any = None
        self._closed = False
        self._connected_once = False
        self._pending: set[Deferred[list[object]]] = set()
        self.healthy = True
        p = prefix.encode("utf-8")
        self._sessions_key = p + b"sessions"
        self._retained_key = p + b"retained"
        self._wills_key = p + b"wills"
        self._session_prefix = p + b"session:"
        self._subs_prefix = p + b"subs:"
        self._deliveries_prefix = p + b"deliveries:"
        self._rel_prefix = p + b"awaiting_rel:"

    def __repr__(self) -> str:
        return f"<RedisStore redis://{self.host}:{self.port}/{self.db} prefix={self.prefix!r}>"

    @property
    def address(self) -> str:
        """Where Redis is, for log lines (never the password)."""
        return f"redis://{self.host}:{self.port}/{self.db}"

    # -- connection ------------------------------------------------------------------

    @property
    def clock(self) -> IReactorTime:
        """The reactor, looked up once running (not when the store is built)."""
        if self._clock is None:
            from twisted.internet import reactor  # noqa: PLC0415 (the running reactor)

            self._clock = cast(IReactorTime, reactor)
        return self._clock

    def _connect(self) -> None:
        """
        Start the connection (and its reconnections). txredisapi is imported here,
        not at module level: it imports the global reactor, which must not happen
        while C{twist} is still parsing options (before it installs its reactor).
        """
        if self._factory is not None or self._closed:
            return
        import txredisapi  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: PLC0415
        from twisted.internet import reactor  # noqa: PLC0415
        from twisted.internet.endpoints import HostnameEndpoint  # noqa: PLC0415

        factory = txredisapi.RedisFactory(
            self.address,
            self.db or None,
            1,
            isLazy=True,
            charset=None,
            password=self.password,
            replyTimeout=None,
            convertNumbers=False,
            username=self.username,
        )
        factory.maxDelay = MAX_RECONNECT_DELAY
        factory.startConnecting(HostnameEndpoint(reactor, self.host, self.port, self.timeout))
        self._factory = factory

    def _connection(self) -> Any:
        """The live connection, or None."""
        self._connect()
        for connection in self._factory.pool if self._factory is not None else ():
            if connection.connected:
                self._connected_once = True
                return connection
        return None

    def _wait_connected(self) -> Deferred[None]:
        """Fires once connected; fails with L{PersistenceError} after C{timeout}."""
        result: Deferred[None] = Deferred()
        deadline = self.clock.seconds() + self.timeout

        def poll() -> None:
            if self._connection() is not None:
                result.callback(None)
            elif self._closed or self.clock.seconds() >= deadline:
                result.errback(self._unreachable())
            else:
                self.clock.callLater(0.05, poll)

        poll()
        return result

    def _unreachable(self) -> PersistenceError:
        return PersistenceError(f"Redis at {self.address} is unreachable (reconnecting)")

    def _send(self, commands: Sequence[Command]) -> Deferred[list[object]]:
        """
        Write C{commands} in one go and collect their replies (a reply may be an
        exception instance). Fails with L{PersistenceError} at once without a
        connection, or when C{timeout} passes without any reply coming (a long
        answer that keeps arriving is not cut short); then the connection is
        dropped, so that Redis discards an unfinished C{MULTI} and nothing late can
        be mistaken for the answer to a later request.
        """
        connection = self._connection()
        if connection is None:
            self._set_health(False, "not connected")
            return fail(self._unreachable())
        try:
            replies = [connection.execute_command(*command) for command in commands]
        except Exception as error:
            connection.transport.abortConnection()
            self._set_health(False, str(error))
            return fail(PersistenceError(f"Redis at {self.address}: {error}"))
        result: Deferred[list[object]] = Deferred()
        clock = self.clock
        progress = [0, 0]  # replies received, replies received when the timer last looked

        def replied(value: object) -> object:
            progress[0] += 1
            return value

        def answered(outcome: list[tuple[bool, Any]]) -> None:
            if timers[0].active():
                timers[0].cancel()
            if result.called:
                return
            values: list[object] = []
            for ok, value in outcome:
                if not ok:
                    error = value.value if isinstance(value, Failure) else value
                    if _is_connection_error(error):
                        self._set_health(False, str(error))
                        result.errback(
                            PersistenceError(f"Redis at {self.address}: connection lost ({error})")
                        )
                        return
                    values.append(error)
                else:
                    values.append(value)
            self._set_health(True)
            result.callback(values)

        def look() -> None:
            if result.called:
                return
            if progress[0] != progress[1]:
                progress[1] = progress[0]
                timers[0] = clock.callLater(self.timeout, look)
                return
            self._set_health(False, f"no answer within {self.timeout:g} s")
            result.errback(
                PersistenceError(f"Redis at {self.address}: no answer within {self.timeout:g} s")
            )
            connection.transport.abortConnection()

        timers: list[IDelayedCall] = [clock.callLater(self.timeout, look)]
        for reply in replies:
            reply.addBoth(replied)
        DeferredList(replies, consumeErrors=True).addCallback(answered)
        self._pending.add(result)

        def forget(value: object) -> object:
            self._pending.discard(result)
            return value

        result.addBoth(forget)
        return result

    def _set_health(self, healthy: bool, why: str = "") -> None:
        if healthy and not self.healthy:
            _log.info("Redis store {address}: reachable again", address=self.address)
        elif not healthy and self.healthy:
            _log.warn(
                "Redis store {address}: failing ({why}); reconnecting with backoff",
                address=self.address,
                why=why,
            )
        self.healthy = healthy

    # -- keys ------------------------------------------------------------------------

    def _keys_of(self, client_id: bytes) -> tuple[bytes, bytes, bytes, bytes]:
        """A session's own keys (its will is a field of the wills hash)."""
        return (
            self._session_prefix + client_id,
            self._subs_prefix + client_id,
            self._deliveries_prefix + client_id,
            self._rel_prefix + client_id,
        )

    # -- IPersistence ----------------------------------------------------------------

    def commands(self, changes: Iterable[Change]) -> list[Command]:
        """
        The Redis commands that make C{changes}, in order (without MULTI/EXEC).

        Consecutive writes to one key are merged into one command (a hundred
        deliveries queued for one session are one C{HSET}): the group's cost is
        mostly per command, on both sides.
        """
        out: list[Command] = []
        # Everything stored for a client is found through the index, so that load()
        # brings back even a row whose session record is missing. Added by one SADD
        # at the end, for the clients not deleted after their last write.
        indexed: dict[bytes, bool] = {}
        sessions_key = self._sessions_key

        def emit(name: bytes, key: bytes, *arguments: bytes) -> None:
            if out:
                last = out[-1]
                if last[0] == name and last[1] == key and name in _MERGEABLE:
                    out[-1] = last + arguments
                    return
            out.append((name, key, *arguments))

        for change in changes:
            if isinstance(change, PutDelivery):
                cid = change.client_id.encode("utf-8")
                indexed[cid] = True
                stored = change.delivery
                seq = b"%d" % stored.seq
                state = encode_state(stored.packet_id, stored.released)
                record = encode_delivery(stored)
                emit(b"HSET", self._deliveries_prefix + cid, b"m" + seq, record, b"s" + seq, state)
            elif isinstance(change, UpdateDelivery):
                cid = change.client_id.encode("utf-8")
                state = encode_state(change.packet_id, change.released)
                emit(b"HSET", self._deliveries_prefix + cid, b"s%d" % change.seq, state)
            elif isinstance(change, DeleteDelivery):
                cid = change.client_id.encode("utf-8")
                seq = b"%d" % change.seq
                emit(b"HDEL", self._deliveries_prefix + cid, b"m" + seq, b"s" + seq)
            elif isinstance(change, PutSession):
                cid = change.client_id.encode("utf-8")
                indexed[cid] = True
                key = self._session_prefix + cid
                fields = [b"v", b"%d" % FORMAT]
                if change.expiry_interval is not None:
                    fields += [b"expiry", b"%d" % change.expiry_interval]
                if change.disconnected_at is not None:
                    fields += [b"disconnected_at", repr(float(change.disconnected_at)).encode()]
                if change.username is not None:
                    fields += [b"username", change.username.encode("utf-8")]
                out.append((b"DEL", key))
                out.append((b"HSET", key, *fields))
            elif isinstance(change, DeleteSession):
                cid = change.client_id.encode("utf-8")
                indexed[cid] = False
                emit(b"SREM", sessions_key, cid)
                out.append((b"DEL", *self._keys_of(cid)))
                emit(b"HDEL", self._wills_key, cid)
            elif isinstance(change, PutSubscription):
                cid = change.client_id.encode("utf-8")
                indexed[cid] = True
                topic_filter = change.topic_filter.encode("utf-8")
                emit(b"HSET", self._subs_prefix + cid, topic_filter, b"%d" % change.value)
            elif isinstance(change, DeleteSubscription):
                cid = change.client_id.encode("utf-8")
                emit(b"HDEL", self._subs_prefix + cid, change.topic_filter.encode("utf-8"))
            elif isinstance(change, AddAwaitingRel):
                cid = change.client_id.encode("utf-8")
                indexed[cid] = True
                emit(b"SADD", self._rel_prefix + cid, b"%d" % change.packet_id)
            elif isinstance(change, DeleteAwaitingRel):
                cid = change.client_id.encode("utf-8")
                emit(b"SREM", self._rel_prefix + cid, b"%d" % change.packet_id)
            elif isinstance(change, PutRetained):
                topic = change.message.topic.encode("utf-8")
                emit(b"HSET", self._retained_key, topic, encode_message(change.message))
            elif isinstance(change, DeleteRetained):
                emit(b"HDEL", self._retained_key, change.topic.encode("utf-8"))
            elif isinstance(change, PutWill):
                cid = change.client_id.encode("utf-8")
                indexed[cid] = True
                emit(b"HSET", self._wills_key, cid, encode_will(change.will, change.at))
            elif isinstance(change, DeleteWill):
                emit(b"HDEL", self._wills_key, change.client_id.encode("utf-8"))
            else:  # pragma: no cover (a Change this store does not know)
                raise TypeError(f"unknown change {change!r}")
        added = [cid for cid, present in indexed.items() if present]
        if added:
            out.append((b"SADD", sessions_key, *added))
        return out

    def apply(self, changes: Sequence[Change]) -> Deferred[None]:
        """
        One C{MULTI}/C{EXEC} for the whole group; fires after C{EXEC} answered
        without error. Fails with L{PersistenceError} when Redis is unreachable,
        too slow, or refuses the transaction (C{EXECABORT}: nothing applied).
        """
        if self._closed:
            return fail(PersistenceError("the Redis store is closed"))
        if not changes:
            return succeed(None)
        try:
            commands = self.commands(changes)
        except (ValueError, TypeError, UnicodeError, struct.error, MQTTError) as error:
            return fail(PersistenceError(f"cannot store the changes: {error}"))
        group = [(b"MULTI",), *commands, (b"EXEC",)]
        if not self._connected_once:
            # The first connection is still being made (load() was not called, or
            # is not done): worth waiting for, unlike a connection lost later.
            d = self._wait_connected().addCallback(lambda _: self._send(group))
        else:
            d = self._send(group)
        return d.addCallback(self._executed)

    def _executed(self, replies: list[object]) -> None:
        executed = replies[-1]
        if isinstance(executed, Exception):
            # EXECABORT: a command was refused while queued; Redis applied none.
            raise PersistenceError(f"Redis at {self.address} refused the group: {executed}")
        if not isinstance(executed, list):
            raise PersistenceError(f"Redis at {self.address}: unexpected EXEC answer {executed!r}")
        errors = [reply for reply in executed if isinstance(reply, Exception)]
        if errors:
            # A command failed while executing (a key of ours holds the wrong type:
            # something else writes under our prefix); Redis has no rollback.
            raise PersistenceError(
                f"Redis at {self.address}: {len(errors)} command(s) of the group failed,"
                f" the first: {errors[0]}"
            )

    def load(self) -> Deferred[Snapshot]:
        """Everything stored under the prefix; waits up to C{timeout} for Redis."""
        d = self._wait_connected()
        d.addCallback(lambda _: self._check_settings())
        return d.addCallback(lambda _: self._load())

    def _check_settings(self) -> Deferred[None]:
        def checked(replies: list[object]) -> None:
            settings: dict[bytes, bytes] = {}
            for reply in replies:
                if isinstance(reply, Exception):
                    _log.info(
                        "Redis store {address}: cannot check the durability settings"
                        " (CONFIG GET: {error}); make sure of appendonly yes and"
                        " appendfsync always",
                        address=self.address,
                        error=reply,
                    )
                    return
                if isinstance(reply, list) and len(reply) == 2:
                    settings[bytes(reply[0])] = bytes(reply[1])
            appendonly = settings.get(b"appendonly", b"").decode()
            appendfsync = settings.get(b"appendfsync", b"").decode()
            if appendonly != "yes" or appendfsync != "always":
                _log.warn(
                    "Redis store {address}: appendonly={appendonly} appendfsync={appendfsync};"
                    " acknowledged messages can be lost if Redis or its machine crashes."
                    " Set appendonly yes and appendfsync always for the broker's promise",
                    address=self.address,
                    appendonly=appendonly or "?",
                    appendfsync=appendfsync or "?",
                )

        d = self._send([(b"CONFIG", b"GET", b"appendonly"), (b"CONFIG", b"GET", b"appendfsync")])
        return d.addCallback(checked)

    async def _read(self, keys: Sequence[bytes], kinds: bytes) -> list[list[bytes]]:
        """
        The contents of C{keys} (C{kinds}: one C{h} for a hash, C{s} for a set, per
        key) in one round trip and one reply: a read-only script packs them all
        into a single string. txredisapi handles each element of a reply in a
        reactor turn of its own, so reading a hundred thousand sessions element by
        element would take most of a minute.
        """
        (reply,) = await self._send([(b"EVAL", _READ_SCRIPT, b"%d" % len(keys), *keys, kinds)])
        data = _ok(reply)
        if not isinstance(data, bytes):
            raise PersistenceError(f"Redis at {self.address}: unexpected answer {data!r}")
        contents: list[list[bytes]] = []
        pos = 0
        unpack = _U32.unpack_from
        for _ in keys:
            (count,) = unpack(data, pos)
            pos += 4
            items = []
            for _ in range(count):
                (length,) = unpack(data, pos)
                pos += 4
                items.append(data[pos : pos + length])
                pos += length
            contents.append(items)
        if pos != len(data):
            raise ValueError("the packed answer does not match the keys asked for")
        return contents

    async def _gather(self) -> Snapshot:
        members, retained_pairs, will_pairs = await self._read(
            [self._sessions_key, self._retained_key, self._wills_key], b"shh"
        )
        client_ids = sorted(members)
        wills = dict(_pairs(will_pairs))
        sessions: list[StoredSession] = []
        for start in range(0, len(client_ids), LOAD_BATCH):
            batch = client_ids[start : start + LOAD_BATCH]
            keys = [key for cid in batch for key in self._keys_of(cid)]
            contents = await self._read(keys, b"hhhs" * len(batch))
            for i, cid in enumerate(batch):
                own, subscriptions, deliveries, awaiting_rel = contents[4 * i : 4 * i + 4]
                will = wills.get(cid)
                sessions.append(_session(cid, own, subscriptions, deliveries, awaiting_rel, will))
        retained = [decode_message(value) for _, value in _pairs(retained_pairs)]
        retained.sort(key=lambda message: message.topic)
        snapshot = Snapshot(sessions, retained)
        check_snapshot(snapshot)
        return snapshot

    def _load(self) -> Deferred[Snapshot]:
        def corrupt(failure: Failure) -> Failure:
            failure.trap(ValueError, UnicodeError, struct.error, MQTTError, TypeError)
            raise PersistenceError(
                f"Redis store {self.address} prefix {self.prefix!r}: unreadable record:"
                f" {failure.getErrorMessage()}"
            )

        return Deferred.fromCoroutine(self._gather()).addErrback(corrupt)

    def close(self) -> Deferred[None]:
        """Let requests in flight finish (at most C{timeout}), then disconnect."""
        self._closed = True
        factory, self._factory = self._factory, None
        pending = [d for d in self._pending if not d.called]
        waiting: Deferred[Any] = (
            DeferredList(pending, consumeErrors=True) if pending else succeed(None)
        )

        def disconnect(_: object) -> Deferred[None] | None:
            if factory is None:
                return None
            done: Deferred[None] = factory.disconnect()
            return done.addCallback(lambda _: None)

        return waiting.addCallback(disconnect)


def _is_connection_error(error: object) -> bool:
    # txredisapi's ConnectionError (reply to everything pending when the connection
    # is lost) subclasses its RedisError, not the built-in; recognised by name so
    # that this module does not import txredisapi before the reactor is chosen.
    return type(error).__name__ in ("ConnectionError", "TimeoutError") or isinstance(
        error, ConnectionError | TimeoutError
    )


def _ok(reply: object) -> Any:
    if isinstance(reply, Exception):
        raise PersistenceError(f"Redis refused a read: {reply}")
    return reply


def _pairs(flat: Sequence[Any] | None) -> list[tuple[bytes, bytes]]:
    """HGETALL's flat [field, value, field, value...] answer as pairs."""
    if not flat:
        return []
    return [(bytes(flat[i]), bytes(flat[i + 1])) for i in range(0, len(flat), 2)]


def _session(
    cid: bytes,
    fields: Sequence[Any] | None,
    subscriptions: Sequence[Any] | None,
    deliveries: Sequence[Any] | None,
    awaiting_rel: Sequence[Any] | None,
    will: bytes | None,
) -> StoredSession:
    """One session from its keys' contents (missing ones are empty)."""
    own = dict(_pairs(fields))
    if own and own.get(b"v") != b"%d" % FORMAT:
        raise ValueError(f"session record format {own.get(b'v')!r}, expected {FORMAT}")
    expiry = own.get(b"expiry")
    disconnected_at = own.get(b"disconnected_at")
    username = own.get(b"username")
    session = StoredSession(
        cid.decode("utf-8"),
        int(expiry) if expiry is not None else None,
        float(disconnected_at) if disconnected_at is not None else None,
        username.decode("utf-8") if username is not None else None,
    )
    session.subscriptions = {
        topic_filter.decode("utf-8"): int(value) for topic_filter, value in _pairs(subscriptions)
    }
    records: list[tuple[int, bytes]] = []
    states: dict[bytes, bytes] = {}
    for field, value in _pairs(deliveries):
        if field[:1] == b"m":
            records.append((int(field[1:]), value))
        elif field[:1] == b"s":
            states[field[1:]] = value
        else:
            raise ValueError(f"unknown delivery field {field!r}")
    # A state without its record (UpdateDelivery after DeleteDelivery) is ignored.
    records.sort(key=lambda record: record[0])
    for seq, record in records:
        delivery = decode_delivery(record, states.get(b"%d" % seq))
        if delivery.seq != seq:
            raise ValueError(f"delivery {delivery.seq} stored as m{seq}")
        session.deliveries.append(delivery)
    session.awaiting_rel = {int(packet_id) for packet_id in awaiting_rel or ()}
    if will is not None:
        session.will, session.will_at = decode_will(will)
    return session
