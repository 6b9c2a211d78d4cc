# -*- test-case-name: tests.test_http_backend -*-
"""
Tests for the HTTP authentication/ACL hook (C{--auth http:url=...},
C{--acl http:url=...}).

Two kinds: against a real Twisted web server in this process (127.0.0.1, an
ephemeral port) for what goes over the wire and how the real HTTP client fails
(status 500, bad JSON, refused connection, no answer); and against a scripted
in-memory service with a L{task.Clock} for the timing rules (cache expiry, cache
bound, shared requests, rate-limited logging, stale answers for deliveries), so
that those stay deterministic.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from typing import Any

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mqttbroker.backends.http import RETRY_AFTER_FAILURE, HTTPHook, build
from mqttbroker.interfaces import AuthDecision, Credentials, IAuthenticator, IAuthorizer, Identity

PASSWORD = b"correct horse battery staple"

CREDENTIALS = Credentials(
    client_id="sensor-1",
    username="alice",
    password=PASSWORD,
    peer_host="192.0.2.7",
    certificate_identity="sensor-1.example",
    listener="mqtt tcp:1883",
    protocol_level=5,
)

ALICE = Identity("alice", "sensor-1", "192.0.2.7", {"tenant": "t1"})

#: What the scripted server answers: (status, body), or None to never answer.
Answer = tuple[int, bytes] | None


def reply(result: str, **fields: Any) -> tuple[int, bytes]:
    """A 200 answer with a JSON object."""
    return 200, json.dumps({"result": result, **fields}).encode()


class LogCapture:
    """The text of every log event emitted while installed."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self.lines: list[str] = []

        @implementer(ILogObserver)
        def observe(event: LogEvent) -> None:
            self.lines.append(formatEvent(event) or "")

        globalLogPublisher.addObserver(observe)
        case.addCleanup(globalLogPublisher.removeObserver, observe)

    def hook_lines(self) -> list[str]:
        return [line for line in self.lines if "HTTP hook" in line]


# -- a real web server ------------------------------------------------------------------


class HookResource(Resource):
    """Records each JSON request and answers with what C{script} says."""

    isLeaf = True  # noqa: N815 (Twisted's name)

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[dict[str, Any]] = []
        self.script: Callable[[dict[str, Any]], Answer] = lambda body: reply("allow")
        self.arrived: list[Deferred[None]] = []
        self.headers: list[bytes | None] = []

    def render_POST(self, request: Request) -> bytes | int:
        assert request.content is not None
        body = json.loads(request.content.read())
        self.requests.append(body)
        self.headers.append(request.getHeader(b"content-type"))
        answer = self.script(body)
        for waiter in self.arrived:
            waiter.callback(None)
        self.arrived = []
        if answer is None:
            return NOT_DONE_YET
        code, data = answer
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        return data

    def next_request(self) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        self.arrived.append(waiter)
        return waiter


class ServerTests(TestCase):
    """The hook against a Twisted web server on 127.0.0.1, through the real Agent."""

    timeout = 20  # trial's bound on each test; the hook's own timeouts are far shorter

    def setUp(self) -> None:
        self.resource = HookResource()
        port = reactor.listenTCP(0, Site(self.resource), interface="127.0.0.1")  # type: ignore[attr-defined]
        self.addCleanup(port.stopListening)
        self.url = f"http://127.0.0.1:{port.getHost().port}/mqtt"
        self.logs = LogCapture(self)

    def hook(self, **options: Any) -> HTTPHook:
        options.setdefault("timeout", 5.0)
        hook = HTTPHook(self.url, **options)
        self.addCleanup(hook.close)
        return hook

    @inlineCallbacks
    def test_allow_renames_and_passes_attributes(self) -> Generator[Any, Any, None]:
        """
        An allow can give the client a new user name and attributes for the
        authorizers (non-text values as JSON text); the request carries every
        credential, the password as text.
        """
        self.resource.script = lambda body: reply(
            "allow", username="alice@corp", attributes={"tenant": "t1", "level": 3}
        )
        decision = yield self.hook().authenticate(CREDENTIALS)
        self.assertEqual(decision, AuthDecision.allow("alice@corp", {"tenant": "t1", "level": "3"}))
        self.assertEqual(
            self.resource.requests,
            [
                {
                    "action": "connect",
                    "clientid": "sensor-1",
                    "username": "alice",
                    "password": PASSWORD.decode(),
                    "password_encoding": "utf-8",
                    "peerhost": "192.0.2.7",
                    "certificate_cn": "sensor-1.example",
                    "protocol": 5,
                    "listener": "mqtt tcp:1883",
                }
            ],
        )
        self.assertEqual(self.resource.headers, [b"application/json"])

    @inlineCallbacks
    def test_binary_password_goes_as_base64(self) -> Generator[Any, Any, None]:
        """A password that is not UTF-8 is sent in base64, and says so."""
        credentials = Credentials("c", "bob", b"\xff\x00pw")
        yield self.hook().authenticate(credentials)
        (request,) = self.resource.requests
        self.assertEqual(
            (request["password"], request["password_encoding"]), ("/wBwdw==", "base64")
        )

    @inlineCallbacks
    def test_no_password(self) -> Generator[Any, Any, None]:
        """Absent credentials are JSON nulls."""
        yield self.hook().authenticate(Credentials("c"))
        (request,) = self.resource.requests
        self.assertEqual(
            [request[k] for k in ("username", "password", "password_encoding", "peerhost")],
            [None, None, None, None],
        )

    @inlineCallbacks
    def test_deny_and_ignore(self) -> Generator[Any, Any, None]:
        """A deny keeps the service's reason and bad_credentials; ignore passes on."""
        answers = [
            reply("deny", reason="expired account"),
            reply("deny", reason="wrong password", bad_credentials=True),
            reply("ignore"),
        ]
        self.resource.script = lambda body: answers.pop(0)
        hook = self.hook()
        first = yield hook.authenticate(CREDENTIALS)
        second = yield hook.authenticate(Credentials("c2", "bob", b"x"))
        third = yield hook.authenticate(Credentials("c3", "carol", b"y"))
        self.assertEqual(first, AuthDecision.deny("expired account"))
        self.assertEqual(second, AuthDecision.deny("wrong password", bad_credentials=True))
        self.assertEqual(third, AuthDecision.ignore())

    @inlineCallbacks
    def assertFailsClosed(self, reason: str, **options: Any) -> Generator[Any, Any, None]:
        """Authentication and every ACL check deny, the reason is logged, not the password."""
        hook = self.hook(**options)
        decision = yield hook.authenticate(CREDENTIALS)
        self.assertEqual(decision.outcome, "deny")
        self.assertNotIn("127.0.0.1", decision.reason)  # details are for the log only
        published = yield hook.may_publish(ALICE, "a/b", 1, False)
        granted = yield hook.may_subscribe(ALICE, "a/#", 1)
        self.assertEqual((published, granted), (False, None))
        lines = self.logs.hook_lines()
        self.assertTrue(lines)
        self.assertIn(reason, lines[0])
        self.assertIn("fail closed", lines[0])
        for line in self.logs.lines:
            self.assertNotIn(PASSWORD.decode(), line)

    def test_http_500_denies(self) -> Deferred[None]:
        self.resource.script = lambda body: (500, b'{"result": "allow"}')
        return self.assertFailsClosed("HTTP status 500")

    def test_bad_json_denies(self) -> Deferred[None]:
        self.resource.script = lambda body: (200, b"allow")
        return self.assertFailsClosed("not JSON")

    def test_answer_without_result_denies(self) -> Deferred[None]:
        self.resource.script = lambda body: (200, b'{"result": "yes"}')
        return self.assertFailsClosed("'result' is not")

    def test_oversized_answer_denies(self) -> Deferred[None]:
        """An answer is read up to 64 KiB, no further."""
        self.resource.script = lambda body: reply("allow", padding="x" * 70_000)
        return self.assertFailsClosed("longer than 65536 bytes")

    @inlineCallbacks
    def test_connection_refused_denies(self) -> Generator[Any, Any, None]:
        """A port nobody listens on (just closed by this test)."""
        port = reactor.listenTCP(0, Site(Resource()), interface="127.0.0.1")  # type: ignore[attr-defined]
        number = port.getHost().port
        yield port.stopListening()
        self.url = f"http://127.0.0.1:{number}/mqtt"
        yield self.assertFailsClosed("cannot connect")

    @inlineCallbacks
    def test_timeout_denies(self) -> Generator[Any, Any, None]:
        """
        A server that never answers: the request is abandoned after C{timeout}
        seconds of the hook's clock (a task.Clock here, advanced once the server
        holds the request), and the client denied.
        """
        self.resource.script = lambda body: None
        clock = task.Clock()
        hook = self.hook(timeout=0.5, clock=clock)
        arrived = self.resource.next_request()
        decision = hook.authenticate(CREDENTIALS)
        yield arrived
        clock.advance(0.49)
        self.assertNoResult(decision)
        clock.advance(0.01)
        self.assertEqual(self.successResultOf(decision).outcome, "deny")
        (line,) = self.logs.hook_lines()
        self.assertIn("no answer within 0.5 s", line)

    @inlineCallbacks
    def test_acl(self) -> Generator[Any, Any, None]:
        """
        Publish by topic, subscribe with a QoS cap, ignore meaning no (an authorizer
        has no "no opinion"); each request carries the identity and its attributes.
        """

        def script(body: dict[str, Any]) -> Answer:
            if body["topic"] == "public/x":
                return reply("allow")
            if body["topic"] == "capped/#":
                return reply("allow", qos=1)
            if body["topic"] == "shrug":
                return reply("ignore")
            return reply("deny")

        self.resource.script = script
        hook = self.hook()
        self.assertTrue((yield hook.may_publish(ALICE, "public/x", 1, True)))
        self.assertFalse((yield hook.may_publish(ALICE, "private/x", 0, False)))
        self.assertFalse((yield hook.may_publish(ALICE, "shrug", 0, False)))
        self.assertEqual((yield hook.may_subscribe(ALICE, "capped/#", 2)), 1)
        self.assertEqual((yield hook.may_subscribe(ALICE, "capped/#", 0)), 0)
        self.assertIsNone((yield hook.may_subscribe(ALICE, "private/#", 1)))
        self.assertEqual(
            self.resource.requests[0],
            {
                "action": "publish",
                "clientid": "sensor-1",
                "username": "alice",
                "peerhost": "192.0.2.7",
                "attributes": {"tenant": "t1"},
                "topic": "public/x",
                "qos": 1,
                "retain": True,
            },
        )
        self.assertEqual(
            (self.resource.requests[3]["action"], self.resource.requests[3]["qos"]),
            ("subscribe", 2),
        )

    @inlineCallbacks
    def test_cached_answers_are_plain_values(self) -> Generator[Any, Any, None]:
        """The same question again is answered from memory: no request, no Deferred."""
        hook = self.hook()
        first = yield hook.authenticate(CREDENTIALS)
        yield hook.may_publish(ALICE, "a", 0, False)
        yield hook.may_subscribe(ALICE, "a/#", 1)
        self.assertEqual(len(self.resource.requests), 3)
        self.assertEqual(hook.authenticate(CREDENTIALS), first)
        self.assertIs(hook.may_publish(ALICE, "a", 0, False), True)
        self.assertEqual(hook.may_subscribe(ALICE, "a/#", 1), 1)
        self.assertEqual(len(self.resource.requests), 3)

    @inlineCallbacks
    def test_receive_through_the_wire(self) -> Generator[Any, Any, None]:
        """
        may_receive answers at once; its lookup reaches the server as a "receive"
        request and its answer decides the next delivery.
        """
        self.resource.script = lambda body: reply(
            "deny" if body["topic"] == "s/secret" else "allow"
        )
        hook = self.hook()
        yield hook.may_subscribe(ALICE, "s/#", 1)
        arrived = self.resource.next_request()
        self.assertTrue(hook.may_receive(ALICE, "s/secret"))  # the subscription decides
        yield arrived
        yield _settle(hook)
        self.assertFalse(hook.may_receive(ALICE, "s/secret"))
        self.assertEqual(self.resource.requests[-1]["action"], "receive")


def _settle(hook: HTTPHook) -> Deferred[None]:
    """Fires once the hook has no request in flight (polling the real reactor)."""

    def check() -> None:
        if not hook._inflight:
            loop.stop()

    loop = task.LoopingCall(check)
    return loop.start(0.01).addCallback(lambda _: None)


# -- a scripted service and a fake clock ------------------------------------------------


class FakeService:
    """Requests held until the test answers them."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[str, Any], Deferred[tuple[int, bytes]]]] = []

    def post(self, body: bytes) -> Deferred[tuple[int, bytes]]:
        waiting: Deferred[tuple[int, bytes]] = Deferred()
        self.requests.append((json.loads(body), waiting))
        return waiting

    def answer(self, result: str = "allow", index: int = -1, **fields: Any) -> None:
        self.requests[index][1].callback(reply(result, **fields))

    def fail(self, code: int = 500, index: int = -1) -> None:
        self.requests[index][1].callback((code, b""))

    def last(self) -> dict[str, Any]:
        return self.requests[-1][0]


class CachedTests(SynchronousTestCase):
    """Caching, sharing, expiry and logging, with a task.Clock."""

    def setUp(self) -> None:
        self.clock = task.Clock()
        self.service = FakeService()
        self.logs = LogCapture(self)

    def hook(self, **options: Any) -> HTTPHook:
        return HTTPHook(
            "http://hook.invalid/mqtt", clock=self.clock, post=self.service.post, **options
        )

    def allowed(self, hook: HTTPHook, credentials: Credentials = CREDENTIALS) -> None:
        """Authenticate through the service, which allows."""
        pending = hook.authenticate(credentials)
        self.service.answer("allow")
        self.assertEqual(self.successResultOf(pending).outcome, "allow")

    def test_interfaces(self) -> None:
        """One object serves as authenticator and authorizer, whichever it is built for."""
        hook = build({"url": "http://127.0.0.1:8080/mqtt"})
        self.assertTrue(verifyObject(IAuthenticator, hook))
        self.assertTrue(verifyObject(IAuthorizer, hook))

    def test_allow_expires_after_cache_ttl(self) -> None:
        hook = self.hook(cache_ttl=60)
        self.allowed(hook)
        self.clock.advance(59.9)
        self.assertEqual(hook.authenticate(CREDENTIALS).outcome, "allow")
        self.clock.advance(0.1)
        self.assertIsInstance(hook.authenticate(CREDENTIALS), Deferred)
        self.assertEqual(len(self.service.requests), 2)

    def test_deny_expires_after_deny_ttl(self) -> None:
        """Denials are kept a shorter time, so a fixed account works again soon."""
        hook = self.hook(cache_ttl=60, deny_ttl=5)
        self.assertIsInstance(hook.may_publish(ALICE, "t", 0, False), Deferred)
        self.service.answer("deny")
        self.clock.advance(4.9)
        self.assertIs(hook.may_publish(ALICE, "t", 0, False), False)
        self.clock.advance(0.1)
        self.assertIsInstance(hook.may_publish(ALICE, "t", 0, False), Deferred)

    def test_cache_size_is_bounded(self) -> None:
        """The least recently used decision goes first."""
        hook = self.hook(cache_size=2)
        for topic in ("a", "b"):
            hook.may_publish(ALICE, topic, 0, False)
            self.service.answer("allow")
        self.assertIs(hook.may_publish(ALICE, "a", 0, False), True)  # a used: b is oldest
        hook.may_publish(ALICE, "c", 0, False)
        self.service.answer("allow")
        self.assertEqual(len(hook.cache), 2)
        self.assertIs(hook.may_publish(ALICE, "a", 0, False), True)
        self.assertIsInstance(hook.may_publish(ALICE, "b", 0, False), Deferred)

    def test_cache_off(self) -> None:
        """cache_ttl=0 (or cache_size=0): every question is asked."""
        for options in ({"cache_ttl": 0}, {"cache_size": 0}):
            hook = self.hook(**options)
            self.allowed(hook)
            self.assertIsInstance(hook.authenticate(CREDENTIALS), Deferred)

    def test_credentials_are_part_of_the_key(self) -> None:
        """
        Another password, user name or address is a new question; the cache holds a
        keyed digest of the password, never the password.
        """
        hook = self.hook()
        self.allowed(hook)
        for other in (
            Credentials("sensor-1", "alice", b"guess", "192.0.2.7"),
            Credentials("sensor-1", "mallory", PASSWORD, "192.0.2.7"),
            Credentials("sensor-1", "alice", PASSWORD, "198.51.100.1"),
        ):
            self.assertIsInstance(hook.authenticate(other), Deferred)
        self.assertNotIn(PASSWORD, repr(hook.cache.entries).encode())
        self.assertNotIn(PASSWORD.decode(), repr(hook.cache.entries))

    def test_identical_questions_share_one_request(self) -> None:
        hook = self.hook()
        first = hook.authenticate(CREDENTIALS)
        second = hook.authenticate(CREDENTIALS)
        self.assertEqual(len(self.service.requests), 1)
        self.service.answer("allow", username="a2")
        self.assertEqual(self.successResultOf(first), AuthDecision.allow("a2"))
        self.assertEqual(self.successResultOf(second), AuthDecision.allow("a2"))

    def test_failures_are_not_cached(self) -> None:
        """An outage ends for everyone as soon as the service answers again."""
        hook = self.hook()
        pending = hook.authenticate(CREDENTIALS)
        self.service.fail(503)
        self.assertEqual(self.successResultOf(pending).outcome, "deny")
        self.allowed(hook)

    def test_timeout(self) -> None:
        hook = self.hook(timeout=2)
        pending = hook.may_subscribe(ALICE, "x/#", 1)
        self.clock.advance(1.99)
        self.assertNoResult(pending)
        self.clock.advance(0.01)
        self.assertIsNone(self.successResultOf(pending))
        self.assertIn("no answer within 2 s", self.logs.hook_lines()[0])

    def test_invalid_answers_deny(self) -> None:
        """A well-formed JSON answer with a wrong field is a failure: deny."""
        hook = self.hook(cache_ttl=0, deny_ttl=0)
        for fields, message in (
            ({"username": 7}, "'username' is not a string"),
            ({"attributes": ["x"]}, "'attributes' is not a JSON object"),
        ):
            pending = hook.authenticate(CREDENTIALS)
            self.service.answer("allow", **fields)
            self.assertEqual(self.successResultOf(pending).outcome, "deny")
            self.assertIn(message, self.logs.hook_lines()[-1])
            self.clock.advance(60)  # past the log rate limit
        for cap in (3, "1", True):
            pending = hook.may_subscribe(ALICE, "x", 2)
            self.service.answer("allow", qos=cap)
            self.assertIsNone(self.successResultOf(pending))
            self.clock.advance(60)
        self.assertIn("'qos' is not 0, 1 or 2", self.logs.hook_lines()[-1])
        pending = hook.authenticate(CREDENTIALS)
        self.service.requests[-1][1].callback((200, b"[1, 2]"))
        self.assertEqual(self.successResultOf(pending).outcome, "deny")
        self.assertIn("not a JSON object", self.logs.hook_lines()[-1])

    def test_failure_log_is_rate_limited(self) -> None:
        """One line per kind of failure per 10 s, then a count of the ones not logged."""
        hook = self.hook()
        for topic in "abcde":
            hook.may_publish(ALICE, topic, 0, False)
            self.service.fail(500)
            self.clock.advance(1)
        self.assertEqual(len(self.logs.hook_lines()), 1)
        self.clock.advance(10)
        hook.may_publish(ALICE, "f", 0, False)
        self.service.fail(502)
        lines = self.logs.hook_lines()
        self.assertEqual(len(lines), 2)
        self.assertIn("HTTP status 502", lines[1])
        self.assertIn("4 similar failures not logged", lines[1])

    def test_receive_miss_follows_the_subscription(self) -> None:
        """
        receive_miss=subscription: before the service has answered for a topic, a
        delivery is allowed when a filter it allowed this client matches (and only
        then); its answer decides the next ones.
        """
        hook = self.hook()
        hook.may_subscribe(ALICE, "s/#", 1)
        self.service.answer("allow")
        self.assertIs(hook.may_receive(ALICE, "s/secret"), True)
        self.assertEqual(
            (self.service.last()["action"], self.service.last()["topic"]), ("receive", "s/secret")
        )
        self.assertIs(hook.may_receive(ALICE, "s/secret"), True)  # lookup still in flight
        self.assertEqual(len(self.service.requests), 2)
        self.service.answer("deny")
        self.assertIs(hook.may_receive(ALICE, "s/secret"), False)
        # Nothing the subscription does not cover, nor for another client.
        self.assertIs(hook.may_receive(ALICE, "other/t"), False)
        bob = Identity("bob", "sensor-2")
        self.assertIs(hook.may_receive(bob, "s/open"), False)

    def test_receive_miss_deny(self) -> None:
        """receive_miss=deny: nothing is delivered until the service said yes."""
        hook = self.hook(receive_miss="deny")
        hook.may_subscribe(ALICE, "s/#", 1)
        self.service.answer("allow")
        self.assertIs(hook.may_receive(ALICE, "s/a"), False)
        self.service.answer("allow")
        self.assertIs(hook.may_receive(ALICE, "s/a"), True)

    def test_refused_subscription_is_forgotten(self) -> None:
        """A filter refused on a later subscribe no longer vouches for deliveries."""
        hook = self.hook(cache_ttl=1)
        hook.may_subscribe(ALICE, "s/#", 1)
        self.service.answer("allow")
        self.clock.advance(2)
        hook.may_subscribe(ALICE, "s/#", 1)
        self.service.answer("deny")
        self.assertIs(hook.may_receive(ALICE, "s/a"), False)

    def test_stale_receive_answer_while_refreshing(self) -> None:
        """
        After its TTL, a delivery answer is still used while one request refreshes
        it; a failed refresh keeps it and pauses refreshes briefly.
        """
        hook = self.hook(cache_ttl=60)
        hook.may_receive(ALICE, "t")
        self.service.answer("allow")
        self.clock.advance(61)
        self.assertIs(hook.may_receive(ALICE, "t"), True)
        self.assertIs(hook.may_receive(ALICE, "t"), True)
        self.assertEqual(len(self.service.requests), 2)
        self.service.fail(500)
        self.assertIs(hook.may_receive(ALICE, "t"), True)
        self.assertEqual(len(self.service.requests), 2)  # paused after the failure
        self.clock.advance(RETRY_AFTER_FAILURE)
        self.assertIs(hook.may_receive(ALICE, "t"), True)
        self.assertEqual(len(self.service.requests), 3)
        self.service.answer("deny")
        self.assertIs(hook.may_receive(ALICE, "t"), False)

    def test_shared_subscription_vouches_for_its_filter(self) -> None:
        """$share/<group>/<filter> is matched by the filter inside it."""
        hook = self.hook()
        hook.may_subscribe(ALICE, "$share/g/s/+", 1)
        self.service.answer("allow")
        self.assertIs(hook.may_receive(ALICE, "s/a"), True)
        self.assertIs(hook.may_receive(ALICE, "s/a/b"), False)

    def test_subscription_record_is_bounded(self) -> None:
        """The filters remembered for deliveries obey cache_size too."""
        hook = self.hook(cache_size=2)
        for topic_filter in ("a/#", "b/#", "c/#"):
            hook.may_subscribe(ALICE, topic_filter, 0)
            self.service.answer("allow")
        self.assertEqual(len(hook._granted), 2)
        self.assertIs(hook.may_receive(ALICE, "a/x"), False)
        self.assertIs(hook.may_receive(ALICE, "c/x"), True)

    def test_post_raising_denies(self) -> None:
        """Even a request that cannot be sent at all is a logged denial."""

        def broken(body: bytes) -> Deferred[tuple[int, bytes]]:
            raise ValueError("no route")

        hook = HTTPHook("http://hook.invalid/", clock=self.clock, post=broken)
        self.assertIs(self.successResultOf(hook.may_publish(ALICE, "t", 0, False)), False)
        self.assertIn("ValueError: no route", self.logs.hook_lines()[0])

    def test_close_without_a_pool(self) -> None:
        self.assertIsNone(self.successResultOf(self.hook().close()))


class BuildTests(SynchronousTestCase):
    """The description parameters."""

    def test_defaults(self) -> None:
        hook = build({"url": "https://auth.example:8443/mqtt"})
        self.addCleanup(hook.close)
        self.assertEqual(
            (hook.url, hook.timeout, hook.cache_ttl, hook.deny_ttl, hook.cache.size),
            ("https://auth.example:8443/mqtt", 2.0, 60.0, 5.0, 10000),
        )
        self.assertEqual(hook.receive_miss, "subscription")

    def test_all_parameters(self) -> None:
        hook = build(
            {
                "url": "http://127.0.0.1:8080/acl",
                "timeout": "0.5",
                "cache_ttl": "0",
                "deny_ttl": "1.5",
                "cache_size": "10",
                "receive_miss": "deny",
            }
        )
        self.assertEqual(
            (hook.timeout, hook.cache_ttl, hook.deny_ttl, hook.cache.size, hook.receive_miss),
            (0.5, 0.0, 1.5, 10, "deny"),
        )

    def test_errors_name_the_parameter(self) -> None:
        url = "http://127.0.0.1/"
        for parameters, word in (
            ({}, "url"),
            ({"url": "ftp://x/"}, "url"),
            ({"url": "http:///path"}, "url"),
            ({"url": "http://h:port/"}, "url"),
            ({"url": "http://user:secret@h/"}, "url"),
            ({"url": url, "timeout": "0"}, "timeout"),
            ({"url": url, "timeout": "soon"}, "timeout"),
            ({"url": url, "timeout": "nan"}, "timeout"),
            ({"url": url, "cache_ttl": "-1"}, "cache_ttl"),
            ({"url": url, "deny_ttl": "inf"}, "deny_ttl"),
            ({"url": url, "cache_size": "1.5"}, "cache_size"),
            ({"url": url, "cache_size": "-1"}, "cache_size"),
            ({"url": url, "receive_miss": "allow"}, "receive_miss"),
            ({"url": url, "timout": "1"}, "timout"),
        ):
            with self.assertRaises(ValueError) as raised:
                build(parameters)
            self.assertIn(word, str(raised.exception), parameters)
