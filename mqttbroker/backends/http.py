# -*- test-case-name: tests.test_http_backend -*-
"""
The HTTP hook: a remote service decides who may connect (C{--auth http:url=...})
and what they may do (C{--acl http:url=...}), asked with JSON over HTTP POST.

Decisions are cached (allows longer than denials) so that the hot path rarely
waits for the network; every failure of the service (an HTTP status other than
200, a timeout, a refused connection, an answer that is not the expected JSON)
denies, and is logged without the password. See C{docs/backend-http.rst}.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import os
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any
from urllib.parse import urlsplit

from twisted.internet import error
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IConsumer, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.iweb import IBodyProducer, IResponse
from zope.interface import implementer

from mqttbroker.interfaces import AuthDecision, Credentials, IAuthenticator, IAuthorizer, Identity
from mqttbroker.topics import shared_subscription, topic_matches

__all__ = ["HTTPHook", "HookError", "build"]

_log = Logger()

#: What C{build} accepts; anything else is a mistake worth reporting.
PARAMETERS = ("url", "timeout", "cache_ttl", "deny_ttl", "cache_size", "receive_miss")

#: Seconds between two log lines about failures of the same kind.
LOG_INTERVAL = 10.0

#: Seconds without background refreshes (for deliveries) after the service failed, so
#: that a broken service is not asked once per message.
RETRY_AFTER_FAILURE = 1.0

#: The longest answer read, in bytes: a decision is a few hundred.
MAX_BODY = 64 * 1024

#: What a client is told when the service cannot answer (details go to the log only).
UNAVAILABLE = "the authorization service is unavailable"

#: A Post sends a JSON body and fires with the HTTP status and the response body.
Post = Callable[[bytes], "Deferred[tuple[int, bytes]]"]


class HookError(Exception):
    """The service gave no usable answer; the message says why (never a password)."""


@implementer(IBodyProducer)
class _Body:
    """A request body written in one go: no cooperator, no reactor turn."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.length = len(data)

    def startProducing(self, consumer: IConsumer) -> Deferred[None]:  # noqa: N802
        consumer.write(self.data)
        return succeed(None)

    def pauseProducing(self) -> None:  # noqa: N802
        pass

    def resumeProducing(self) -> None:  # noqa: N802
        pass

    def stopProducing(self) -> None:  # noqa: N802
        pass


class _BodyReader(Protocol):
    """
    Collects a response body of at most L{MAX_BODY} bytes (Twisted's C{readBody}
    has no bound, and warns about the transports of short responses). A longer body
    is read to its end but not kept, so the connection stays usable; the request's
    timeout bounds a body that never ends.
    """

    def __init__(self, done: Deferred[bytes]) -> None:
        self.done = done
        self.parts: list[bytes] = []
        self.size = 0

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        self.size += len(data)
        if self.size <= MAX_BODY:
            self.parts.append(data)
        else:
            self.parts = []

    def connectionLost(self, reason: Failure = connectionDone) -> None:  # noqa: N802
        if self.done.called:
            return
        if self.size > MAX_BODY:
            self.done.errback(HookError(f"the answer is longer than {MAX_BODY} bytes"))
        elif reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


def _read_body(response: IResponse) -> Deferred[bytes]:
    """The body of C{response}; cancelling drops the connection."""
    reader: _BodyReader

    def cancel(_: Deferred[bytes]) -> None:
        if reader.transport is not None:
            reader.transport.stopProducing()  # type: ignore[attr-defined]

    done: Deferred[bytes] = Deferred(cancel)
    reader = _BodyReader(done)
    response.deliverBody(reader)
    return done


class _Cache:
    """
    Decisions by key, each with an expiry time; at most C{size} of them, the least
    recently used going first. An expired entry stays (as a stale answer) until it is
    pushed out or replaced, for the callers that prefer stale to nothing.
    """

    def __init__(self, size: int, clock: IReactorTime) -> None:
        self.size = size
        self.clock = clock
        self.entries: OrderedDict[Hashable, tuple[Any, float]] = OrderedDict()

    def get(self, key: Hashable, stale: bool = False) -> tuple[bool, Any, bool]:
        """C{(found, value, fresh)}: expired entries count only when C{stale}."""
        entry = self.entries.get(key)
        if entry is None:
            return False, None, False
        value, expires = entry
        fresh = self.clock.seconds() < expires
        if not fresh and not stale:
            return False, None, False
        self.entries.move_to_end(key)
        return True, value, fresh

    def put(self, key: Hashable, value: Any, ttl: float) -> None:
        if self.size <= 0 or ttl <= 0:
            return
        self.entries[key] = (value, self.clock.seconds() + ttl)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self.entries)


class _RateLimitedLog:
    """At most one log line per kind of failure per L{LOG_INTERVAL}, with a count."""

    def __init__(self, clock: IReactorTime, interval: float = LOG_INTERVAL) -> None:
        self.clock = clock
        self.interval = interval
        self.last: dict[str, float] = {}
        self.suppressed: dict[str, int] = {}

    def failure(self, kind: str, url: str, reason: str) -> bool:
        """Log one failure of kind C{kind}; False when it was counted, not logged."""
        now = self.clock.seconds()
        last = self.last.get(kind)
        if last is not None and now - last < self.interval:
            self.suppressed[kind] = self.suppressed.get(kind, 0) + 1
            return False
        self.last[kind] = now
        suppressed = self.suppressed.pop(kind, 0)
        _log.warn(
            "HTTP hook {url} failed ({reason}); denying (fail closed){more}",
            url=url,
            reason=reason,
            more=f"; {suppressed} similar failures not logged" if suppressed else "",
        )
        return True


def _identity_key(identity: Identity) -> Hashable:
    return (
        identity.client_id,
        identity.username,
        identity.peer_host,
        tuple(sorted(identity.attributes.items())),
    )


def _text_attributes(value: Any) -> dict[str, str]:
    """The answer's attributes as the text map L{Identity.attributes} holds."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise HookError("'attributes' is not a JSON object")
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


@implementer(IAuthenticator, IAuthorizer)
class HTTPHook:
    """
    One remote decision service, usable as an authenticator, an authorizer, or both.

    @ivar requests: how many requests went to the service (for tests and stats).
    """

    def __init__(
        self,
        url: str,
        timeout: float = 2.0,
        cache_ttl: float = 60.0,
        deny_ttl: float = 5.0,
        cache_size: int = 10000,
        receive_miss: str = "subscription",
        clock: IReactorTime | None = None,
        post: Post | None = None,
    ) -> None:
        """
        @param clock: the time source of timeouts, expiry and log limits (the
            reactor unless a test brings a L{task.Clock}).
        @param post: what sends a request (a Twisted L{Agent} with a persistent
            connection pool unless a test brings its own).
        """
        if clock is None:
            from twisted.internet import reactor  # noqa: PLC0415 (chosen at run time)

            clock = reactor
        assert clock is not None
        self.url = url
        self.timeout = timeout
        self.cache_ttl = cache_ttl
        self.deny_ttl = deny_ttl
        self.receive_miss = receive_miss
        self.clock = clock
        self.cache = _Cache(cache_size, clock)
        self.requests = 0
        self._pool: HTTPConnectionPool | None = None
        self._post = post if post is not None else self._agent_post()
        self._inflight: dict[Hashable, list[Deferred[dict[str, Any]]]] = {}
        self._granted: OrderedDict[tuple[Hashable, str], None] = OrderedDict()
        self._granted_by: dict[Hashable, set[str]] = {}
        self._logger = _RateLimitedLog(clock)
        self._refresh_after = 0.0
        # Cache keys hold a keyed digest of the password, never the password itself.
        self._secret = os.urandom(32)

    # -- transport ----------------------------------------------------------------------

    def _agent_post(self) -> Post:
        from twisted.internet import reactor  # noqa: PLC0415 (chosen at run time)

        self._pool = HTTPConnectionPool(reactor, persistent=True)
        agent = Agent(reactor, connectTimeout=self.timeout, pool=self._pool)
        url = self.url.encode("ascii")
        headers = {
            b"content-type": [b"application/json"],
            b"accept": [b"application/json"],
            b"user-agent": [b"mqttbroker-http-hook"],
        }

        def post(body: bytes) -> Deferred[tuple[int, bytes]]:
            requested = agent.request(b"POST", url, Headers(headers), _Body(body))

            def received(response: IResponse) -> Deferred[tuple[int, bytes]]:
                # The body is read even after an error status, so the connection
                # can go back to the pool.
                return _read_body(response).addCallback(lambda data: (response.code, data))

            return requested.addCallback(received)

        return post

    def close(self) -> Deferred[None]:
        """Close the kept-alive connections (when the broker stops)."""
        if self._pool is None:
            return succeed(None)
        return self._pool.closeCachedConnections()  # type: ignore[no-any-return]

    def _ask(self, key: Hashable, payload: dict[str, Any]) -> Deferred[dict[str, Any]]:
        """
        The service's answer to C{payload}, as a JSON object with a valid
        C{result}; one request for all the callers asking the same thing at once.
        Fails with L{HookError} (already logged) when there is no usable answer.
        """
        waiter: Deferred[dict[str, Any]] = Deferred()
        waiters = self._inflight.get(key)
        if waiters is not None:
            waiters.append(waiter)
            return waiter
        waiters = self._inflight[key] = [waiter]
        self.requests += 1
        body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        try:
            request = self._post(body)
        except Exception as error:  # a malformed URL, say: still a denial
            request = Deferred()
            request.errback(error)
        request.addTimeout(self.timeout, self.clock, onTimeoutCancel=self._timed_out)

        def answered(result: tuple[int, bytes]) -> dict[str, Any]:
            code, data = result
            if code != 200:
                raise HookError(f"HTTP status {code}")
            try:
                answer = json.loads(data)
            except (ValueError, RecursionError):
                raise HookError("the answer is not JSON") from None
            if not isinstance(answer, dict):
                raise HookError("the answer is not a JSON object")
            if answer.get("result") not in ("allow", "deny", "ignore"):
                raise HookError("'result' is not 'allow', 'deny' or 'ignore'")
            return answer

        def settle(outcome: dict[str, Any] | Failure) -> None:
            del self._inflight[key]
            if isinstance(outcome, Failure):
                outcome = Failure(HookError(self._failed(outcome)))
            for each in waiters:
                if isinstance(outcome, Failure):
                    each.errback(outcome)
                else:
                    each.callback(outcome)

        request.addCallback(answered).addBoth(settle)
        return waiter

    def _timed_out(self, result: object, timeout: float) -> object:
        """What a request cancelled by its timeout fails with (whatever Twisted said)."""
        raise HookError(f"no answer within {timeout:g} s")

    def _failed(self, failure: Failure) -> str:
        """Why a request failed, in words (logged at a limited rate)."""
        value = failure.value
        if isinstance(value, HookError):
            kind, reason = "answer", str(value)
        elif failure.check(error.ConnectError):
            kind, reason = "connect", f"cannot connect: {value}"
        else:
            kind, reason = type(value).__name__, f"{type(value).__name__}: {value}"
        self._logger.failure(kind, self.url, reason)
        return reason

    # -- IAuthenticator -----------------------------------------------------------------

    def authenticate(self, credentials: Credentials) -> Any:
        """An L{AuthDecision}, from the cache or (in a Deferred) from the service."""
        password = credentials.password
        digest = (
            None if password is None else hmac.new(self._secret, password, hashlib.sha256).digest()
        )
        key = (
            "connect",
            credentials.client_id,
            credentials.username,
            digest,
            credentials.peer_host,
            credentials.certificate_identity,
            credentials.listener,
            credentials.protocol_level,
        )
        found, decision, _ = self.cache.get(key)
        if found:
            return decision
        text: str | None = None
        encoding: str | None = None
        if password is not None:
            try:
                text, encoding = password.decode("utf-8"), "utf-8"
            except UnicodeDecodeError:
                text, encoding = base64.b64encode(password).decode("ascii"), "base64"
        payload = {
            "action": "connect",
            "clientid": credentials.client_id,
            "username": credentials.username,
            "password": text,
            "password_encoding": encoding,
            "peerhost": credentials.peer_host,
            "certificate_cn": credentials.certificate_identity,
            "protocol": credentials.protocol_level,
            "listener": credentials.listener,
        }

        def decide(answer: dict[str, Any]) -> AuthDecision:
            try:
                decision = self._auth_decision(answer)
            except HookError as error:
                self._logger.failure("answer", self.url, str(error))
                return AuthDecision.deny(UNAVAILABLE)
            ttl = self.cache_ttl if decision.outcome == "allow" else self.deny_ttl
            self.cache.put(key, decision, ttl)
            return decision

        return self._ask(key, payload).addCallbacks(
            decide, lambda _: AuthDecision.deny(UNAVAILABLE)
        )

    @staticmethod
    def _auth_decision(answer: dict[str, Any]) -> AuthDecision:
        result = answer["result"]
        if result == "allow":
            username = answer.get("username")
            if username is not None and not isinstance(username, str):
                raise HookError("'username' is not a string")
            return AuthDecision.allow(username, _text_attributes(answer.get("attributes")))
        if result == "deny":
            reason = answer.get("reason")
            return AuthDecision.deny(
                reason if isinstance(reason, str) and reason else "refused by the HTTP hook",
                bad_credentials=answer.get("bad_credentials") is True,
            )
        return AuthDecision.ignore()

    # -- IAuthorizer --------------------------------------------------------------------

    def _acl(
        self,
        action: str,
        identity: Identity,
        topic: str,
        qos: int | None,
        retain: bool | None,
    ) -> tuple[Hashable, dict[str, Any]]:
        key = (action, _identity_key(identity), topic, qos, retain)
        payload = {
            "action": action,
            "clientid": identity.client_id,
            "username": identity.username,
            "peerhost": identity.peer_host,
            "attributes": dict(identity.attributes),
            "topic": topic,
            "qos": qos,
            "retain": retain,
        }
        return key, payload

    def _remember(self, key: Hashable, allowed: bool) -> None:
        """Cache an ACL answer: allows for C{cache_ttl}, denials for C{deny_ttl}."""
        self.cache.put(key, allowed, self.cache_ttl if allowed else self.deny_ttl)

    def may_publish(self, identity: Identity, topic: str, qos: int, retain: bool) -> Any:
        """True or False from the cache, or a Deferred firing with one of them."""
        key, payload = self._acl("publish", identity, topic, qos, retain)
        found, allowed, _ = self.cache.get(key)
        if found:
            return allowed

        def decide(answer: dict[str, Any]) -> bool:
            allowed: bool = answer["result"] == "allow"
            self._remember(key, allowed)
            return allowed

        return self._ask(key, payload).addCallbacks(decide, lambda _: False)

    def may_subscribe(self, identity: Identity, topic_filter: str, qos: int) -> Any:
        """
        The QoS granted (the lower of C{qos} and the answer's C{qos} cap) or None,
        from the cache or in a Deferred; an allowed filter is remembered for
        L{may_receive}.
        """
        key, payload = self._acl("subscribe", identity, topic_filter, qos, None)
        owner = _identity_key(identity)
        found, granted, _ = self.cache.get(key)
        if found:
            self._grant(owner, topic_filter, granted is not None)
            return granted

        def decide(answer: dict[str, Any]) -> int | None:
            if answer["result"] != "allow":
                granted = None
            else:
                cap = answer.get("qos", 2)
                if type(cap) is not int or not 0 <= cap <= 2:
                    self._logger.failure("answer", self.url, "'qos' is not 0, 1 or 2")
                    self._grant(owner, topic_filter, False)
                    return None
                granted = min(qos, cap)
            self.cache.put(key, granted, self.cache_ttl if granted is not None else self.deny_ttl)
            self._grant(owner, topic_filter, granted is not None)
            return granted

        def failed(_: Failure) -> None:
            self._grant(owner, topic_filter, False)

        return self._ask(key, payload).addCallbacks(decide, failed)

    def _grant(self, owner: Hashable, topic_filter: str, allowed: bool) -> None:
        """Record (or forget) that the service let C{owner} subscribe to a filter."""
        shared = shared_subscription(topic_filter)
        if shared is not None:  # deliveries match the filter inside $share/<group>/
            topic_filter = shared[1]
        entry = (owner, topic_filter)
        filters = self._granted_by.get(owner)
        if not allowed:
            if filters is not None and topic_filter in filters:
                filters.discard(topic_filter)
                if not filters:
                    del self._granted_by[owner]
                del self._granted[entry]
            return
        if self.cache.size <= 0:
            return
        self._granted[entry] = None
        self._granted.move_to_end(entry)
        self._granted_by.setdefault(owner, set()).add(topic_filter)
        while len(self._granted) > self.cache.size:
            (old_owner, old_filter), _ = self._granted.popitem(last=False)
            old = self._granted_by[old_owner]
            old.discard(old_filter)
            if not old:
                del self._granted_by[old_owner]

    def may_receive(self, identity: Identity, topic: str) -> bool:
        """
        Synchronous, as every delivery asks. The service's cached answer for this
        topic decides, even an expired one (which is then refreshed in the
        background). Without any, a lookup starts and, until it answers, the
        subscription decides (C{receive_miss=subscription}: delivered when a filter
        the service allowed this client matches the topic) or the message is not
        delivered (C{receive_miss=deny}).
        """
        key, payload = self._acl("receive", identity, topic, None, None)
        found, allowed, fresh = self.cache.get(key, stale=True)
        if not fresh:
            self._refresh(key, payload)
        if found:
            return bool(allowed)
        if self.receive_miss != "subscription":
            return False
        filters = self._granted_by.get(_identity_key(identity), ())
        return any(topic_matches(topic_filter, topic) for topic_filter in filters)

    def _refresh(self, key: Hashable, payload: dict[str, Any]) -> None:
        if key in self._inflight or self.clock.seconds() < self._refresh_after:
            return

        def decide(answer: dict[str, Any]) -> None:
            self._remember(key, answer["result"] == "allow")

        def failed(_: Failure) -> None:
            # Whatever was cached stays; the failure is logged by _ask.
            self._refresh_after = self.clock.seconds() + RETRY_AFTER_FAILURE

        self._ask(key, payload).addCallbacks(decide, failed)


def _number(parameters: Mapping[str, str], name: str, default: float, positive: bool) -> float:
    text = parameters.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"http: {name}={text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        bound = "greater than 0" if positive else "0 or more"
        raise ValueError(f"http: {name}={text!r} must be {bound}")
    return value


def build(parameters: Mapping[str, str]) -> HTTPHook:
    """
    The hook a description's parameters ask for: C{url} (required), C{timeout},
    C{cache_ttl}, C{deny_ttl}, C{cache_size}, C{receive_miss}.

    @raise ValueError: a missing or malformed parameter, named in the message.
    """
    unknown = sorted(set(parameters) - set(PARAMETERS))
    if unknown:
        raise ValueError(f"http: unknown parameter {unknown[0]!r} (known: {', '.join(PARAMETERS)})")
    url = parameters.get("url", "").strip()
    if not url:
        raise ValueError("http: the url parameter is required, e.g. url=http://127.0.0.1:8080/mqtt")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"http: url={url!r} is not an http:// or https:// URL with a host")
    try:
        url.encode("ascii")
        _ = parts.port
    except (UnicodeEncodeError, ValueError):
        raise ValueError(f"http: url={url!r} is not a valid URL (ASCII, numeric port)") from None
    if parts.username is not None or parts.password is not None:
        # Twisted's Agent would not send them, and the URL is logged.
        raise ValueError("http: url must not hold a user name or password")
    size_text = parameters.get("cache_size", "10000")
    try:
        cache_size = int(size_text)
    except ValueError:
        raise ValueError(f"http: cache_size={size_text!r} is not a whole number") from None
    if cache_size < 0:
        raise ValueError(f"http: cache_size={size_text!r} must be 0 or more")
    receive_miss = parameters.get("receive_miss", "subscription")
    if receive_miss not in ("subscription", "deny"):
        raise ValueError(f"http: receive_miss={receive_miss!r} must be 'subscription' or 'deny'")
    return HTTPHook(
        url,
        timeout=_number(parameters, "timeout", 2.0, positive=True),
        cache_ttl=_number(parameters, "cache_ttl", 60.0, positive=False),
        deny_ttl=_number(parameters, "deny_ttl", 5.0, positive=False),
        cache_size=cache_size,
        receive_miss=receive_miss,
    )
