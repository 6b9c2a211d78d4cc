"""
The authenticator chain, client ids bound to identities, and the authorizers at work
in the broker: CONNECT, PUBLISH, SUBSCRIBE, every delivery, retained messages,
shared subscriptions and ACL reloads; with backends that answer at once and with
ones that answer later (Deferreds), whose decisions must keep packets in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from mqttbroker.access import Policy, authenticate, client_id_allowed
from mqttbroker.backends.builtin import AnonymousAuthenticator, CertificateAuthenticator
from mqttbroker.broker import BrokerConfig
from mqttbroker.codec import (
    Connect,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    ReasonCode,
    Suback,
    Subscribe,
    Subscription,
    Will,
)
from mqttbroker.interfaces import (
    AuthDecision,
    Credentials,
    IAuthenticator,
    IAuthorizer,
    Identity,
)
from mqttbroker.testing import BrokerHarness, FakeClient
from mqttbroker.testing import publish_shape as shape

R = ReasonCode


@implementer(IAuthenticator)
class Scripted:
    """Answers from a function of the credentials; later when C{deferred} is set."""

    def __init__(self, decide: Callable[[Credentials], AuthDecision], deferred: bool = False):
        self.decide = decide
        self.deferred = deferred
        self.pending: list[tuple[Deferred[AuthDecision], AuthDecision]] = []
        self.seen: list[Credentials] = []

    def authenticate(self, credentials: Credentials) -> Any:
        self.seen.append(credentials)
        decision = self.decide(credentials)
        if not self.deferred:
            return decision
        d: Deferred[AuthDecision] = Deferred()
        self.pending.append((d, decision))
        return d

    def answer_all(self) -> None:
        pending, self.pending = self.pending, []
        for d, decision in pending:
            d.callback(decision)


def passwords(users: dict[str, bytes]) -> Callable[[Credentials], AuthDecision]:
    def decide(c: Credentials) -> AuthDecision:
        if c.username is None:
            return AuthDecision.ignore()
        if users.get(c.username) == c.password:
            return AuthDecision.allow()
        return AuthDecision.deny("wrong user name or password", bad_credentials=True)

    return decide


@implementer(IAuthorizer)
class Rules:
    """Publish/read allowed under C{prefix}/%u/ (and what C{extra} adds); optional delay."""

    def __init__(self, deferred: bool = False) -> None:
        self.deferred = deferred
        self.pending: list[tuple[Deferred[Any], Any]] = []
        self.revoked: set[str] = set()

    def _mine(self, identity: Identity, topic: str) -> bool:
        return (
            identity.username is not None
            and identity.username not in self.revoked
            and (topic.startswith(f"u/{identity.username}/") or topic.startswith("public/"))
        )

    def _answer(self, value: Any) -> Any:
        if not self.deferred:
            return value
        d: Deferred[Any] = Deferred()
        self.pending.append((d, value))
        return d

    def answer_all(self) -> None:
        pending, self.pending = self.pending, []
        for d, value in pending:
            d.callback(value)

    def may_publish(self, identity: Identity, topic: str, qos: int, retain: bool) -> Any:
        return self._answer(self._mine(identity, topic))

    def may_subscribe(self, identity: Identity, topic_filter: str, qos: int) -> Any:
        if topic_filter in ("#", "u/#"):
            # Broad filters are allowed; every delivery is checked.
            return self._answer(min(qos, 1))
        return self._answer(qos if self._mine(identity, topic_filter) else None)

    def may_receive(self, identity: Identity, topic: str) -> bool:
        return self._mine(identity, topic)


def kinds(packets: list[Any]) -> list[tuple[str, int | None]]:
    return [(type(p).__name__, getattr(p, "reason_code", None)) for p in packets]


class ChainTests(SynchronousTestCase):
    """authenticate(): the first that allows or denies decides."""

    def test_order_and_default(self) -> None:
        creds = Credentials("c", "alice", b"pw")
        ignore = Scripted(lambda c: AuthDecision.ignore())
        allow = Scripted(lambda c: AuthDecision.allow("ALICE"))
        deny = Scripted(lambda c: AuthDecision.deny("no"))
        self.assertEqual(authenticate([ignore, allow, deny], creds).username, "ALICE")  # type: ignore[union-attr]
        self.assertEqual(authenticate([deny, allow], creds).outcome, "deny")  # type: ignore[union-attr]
        self.assertEqual(authenticate([ignore], creds).outcome, "deny")  # type: ignore[union-attr]
        self.assertEqual(deny.seen, [creds])

    def test_deferred_then_plain(self) -> None:
        """A later answer of 'ignore' goes on down the chain."""
        later = Scripted(lambda c: AuthDecision.ignore(), deferred=True)
        allow = Scripted(lambda c: AuthDecision.allow())
        result = authenticate([later, allow], Credentials("c"))
        assert isinstance(result, Deferred)
        got: list[AuthDecision] = []
        result.addCallback(got.append)
        later.answer_all()
        self.assertEqual([d.outcome for d in got], ["allow"])

    def test_failures_deny(self) -> None:
        """A backend that raises, or whose Deferred fails, denies (fail closed)."""

        @implementer(IAuthenticator)
        class Broken:
            def authenticate(self, credentials: Credentials) -> AuthDecision:
                raise RuntimeError("down")

        self.assertEqual(authenticate([Broken()], Credentials("c")).outcome, "deny")  # type: ignore[union-attr]
        failing = Scripted(lambda c: AuthDecision.allow(), deferred=True)
        result = authenticate([failing], Credentials("c"))
        got: list[AuthDecision] = []
        result.addCallback(got.append)  # type: ignore[union-attr]
        failing.pending[0][0].errback(RuntimeError("down"))
        self.assertEqual([d.outcome for d in got], ["deny"])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)

    def test_builtins(self) -> None:
        anonymous, cert = AnonymousAuthenticator(), CertificateAuthenticator()
        verifyObject(IAuthenticator, anonymous)
        verifyObject(IAuthenticator, cert)
        self.assertEqual(anonymous.authenticate(Credentials("c")).outcome, "allow")
        self.assertEqual(anonymous.authenticate(Credentials("c", "bob")).outcome, "ignore")
        self.assertEqual(cert.authenticate(Credentials("c")).outcome, "ignore")
        decision = cert.authenticate(Credentials("c", "x", certificate_identity="dev-1"))
        self.assertEqual((decision.outcome, decision.username), ("allow", "dev-1"))


class ClientIdPatternTests(SynchronousTestCase):
    def test_patterns(self) -> None:
        self.assertTrue(client_id_allowed("%u", "alice", "alice"))
        self.assertTrue(client_id_allowed("%u-*", "alice-phone", "alice"))
        self.assertFalse(client_id_allowed("%u-*", "bob-phone", "alice"))
        self.assertFalse(client_id_allowed("%u-*", "alice-phone", None))
        # A user name with wildcard characters is matched literally: it cannot widen.
        self.assertFalse(client_id_allowed("%u", "anything", "*"))
        self.assertTrue(client_id_allowed("%u", "*", "*"))
        self.assertFalse(client_id_allowed("%u-?", "a[b]-1", "a?b?"))
        self.assertTrue(client_id_allowed("%u-?", "a[b]-1", "a[b]"))


class ConnectTests(SynchronousTestCase):
    """The chain at CONNECT, at every protocol level."""

    def harness(self, *authenticators: Any, **config: Any) -> BrokerHarness:
        return BrokerHarness(BrokerConfig(**config), authenticators=authenticators)

    def connack(self, harness: BrokerHarness, level: int, **fields: Any) -> list[Any]:
        client = harness.client(level)
        client.send(Connect(fields.pop("client_id", "c"), level, **fields))
        return client.received()

    def test_no_authenticators_everyone(self) -> None:
        harness = BrokerHarness()
        self.assertEqual(kinds(self.connack(harness, 4)), [("Connack", 0)])

    def test_password_chain(self) -> None:
        """Right password: in; wrong: 0x86 / 4; anonymous with nobody allowing: 0x87 / 5."""
        harness = self.harness(Scripted(passwords({"alice": b"pw"})))
        for level, bad, denied in ((4, 4, 5), (5, R.BAD_USER_NAME_OR_PASSWORD, R.NOT_AUTHORIZED)):
            self.assertEqual(
                kinds(self.connack(harness, level, username="alice", password=b"pw")),
                [("Connack", 0)],
            )
            self.assertEqual(
                kinds(self.connack(harness, level, username="alice", password=b"no")),
                [("Connack", bad)],
            )
            self.assertEqual(kinds(self.connack(harness, level)), [("Connack", denied)])
        harness = self.harness(Scripted(passwords({})), AnonymousAuthenticator())
        self.assertEqual(kinds(self.connack(harness, 4)), [("Connack", 0)])

    def test_later_answer_holds_pipelined_packets(self) -> None:
        """
        Packets sent right after CONNECT wait for the answer, then are served in
        order after the CONNACK; reading is paused meanwhile.
        """
        slow = Scripted(passwords({"alice": b"pw"}), deferred=True)
        harness = self.harness(slow)
        client = harness.client(4)
        client.send(
            Connect("c", 4, username="alice", password=b"pw"),
            Subscribe(1, (Subscription("t", 1),)),
            Publish("t", b"m", 1, packet_id=7),
        )
        self.assertEqual(client.received(), [])
        self.assertEqual(client.transport.producerState, "paused")
        slow.answer_all()
        packets = client.received()
        self.assertEqual(
            [type(p).__name__ for p in packets], ["Connack", "Suback", "Publish", "Puback"]
        )
        self.assertEqual(client.transport.producerState, "producing")

    def test_backend_too_slow(self) -> None:
        """
        No answer within the connect timeout: the client is told the server is
        unavailable (0x88 / 3) and closed; the late answer changes nothing.
        """
        for level, code in ((5, R.SERVER_UNAVAILABLE), (4, 3)):
            slow = Scripted(passwords({"alice": b"pw"}), deferred=True)
            harness = self.harness(slow)
            client = harness.client(level)
            client.send(Connect("c", level, username="alice", password=b"pw"))
            harness.clock.advance(harness.broker.config.connect_timeout)
            self.assertEqual(kinds(client.received()), [("Connack", code)])
            self.assertTrue(client.transport.disconnecting)
            slow.answer_all()
            self.assertEqual(client.received(), [])
            self.assertNotIn("c", harness.broker.sessions)

    def test_closed_while_waiting(self) -> None:
        """A client gone before the answer comes is simply forgotten."""
        slow = Scripted(passwords({"alice": b"pw"}), deferred=True)
        harness = self.harness(slow)
        client = harness.client(4)
        client.send(Connect("c", 4, username="alice", password=b"pw"))
        client.drop()
        slow.answer_all()
        self.assertNotIn("c", harness.broker.sessions)

    def test_username_rewritten(self) -> None:
        harness = self.harness(Scripted(lambda c: AuthDecision.allow("canonical")))
        harness.connect("c", 4, username="alias")
        link = harness.broker.sessions["c"].link
        self.assertEqual(link.username, "canonical")  # type: ignore[union-attr]
        self.assertEqual(harness.broker.sessions["c"].identity.username, "canonical")  # type: ignore[union-attr]

    def test_client_id_bound_to_user(self) -> None:
        """With a pattern, a client id of someone else's is refused: 0x85 / 2."""
        harness = self.harness(
            Scripted(passwords({"alice": b"pw", "bob": b"pw"})), client_id_pattern="%u-*"
        )
        ok = self.connack(harness, 4, client_id="alice-1", username="alice", password=b"pw")
        self.assertEqual(kinds(ok), [("Connack", 0)])
        taken = self.connack(harness, 4, client_id="alice-1", username="bob", password=b"pw")
        self.assertEqual(kinds(taken), [("Connack", 2)])
        taken = self.connack(harness, 5, client_id="alice-1", username="bob", password=b"pw")
        self.assertEqual(kinds(taken), [("Connack", R.CLIENT_IDENTIFIER_NOT_VALID)])
        # alice's session was not taken over.
        self.assertIsNotNone(harness.broker.sessions["alice-1"].link)

    def test_will_topic_authorized_at_connect(self) -> None:
        harness = BrokerHarness(
            authenticators=[Scripted(lambda c: AuthDecision.allow())], authorizers=[Rules()]
        )
        fine = self.connack(harness, 5, username="a", will=Will("u/a/will", b"x"))
        self.assertEqual(kinds(fine), [("Connack", 0)])
        refused = self.connack(harness, 5, username="a", will=Will("u/b/will", b"x"))
        self.assertEqual(kinds(refused), [("Connack", R.NOT_AUTHORIZED)])
        refused = self.connack(harness, 4, username="a", will=Will("u/b/will", b"x"))
        self.assertEqual(kinds(refused), [("Connack", 5)])


class SysTopicTests(SynchronousTestCase):
    """$SYS belongs to the broker: no client writes there, ACL or not."""

    def test_publish_and_will_refused(self) -> None:
        harness = BrokerHarness()
        watcher, _ = harness.connect("w", 4)
        watcher.send(Subscribe(1, (Subscription("$SYS/#", 1),)))
        watcher.received()
        v5, _ = harness.connect("v5", 5)
        v5.send(Publish("$SYS/broker/uptime", b"1", 1, packet_id=1))
        self.assertEqual(kinds(v5.received()), [("Puback", R.NOT_AUTHORIZED)])
        v4, _ = harness.connect("v4", 4)
        v4.send(Publish("$SYS", b"2", 1, packet_id=2), Publish("$SYSTEM/x", b"3", 0))
        self.assertEqual(v4.received(), [Puback(2)])
        self.assertEqual(watcher.received(), [])
        client = harness.client(5)
        client.send(Connect("c", 5, will=Will("$SYS/fake", b"x")))
        self.assertEqual(kinds(client.received()), [("Connack", R.NOT_AUTHORIZED)])


class AuthorizationTests(SynchronousTestCase):
    """PUBLISH, SUBSCRIBE and deliveries under an authorizer."""

    def setUp(self) -> None:
        self.rules = Rules()
        self.harness = BrokerHarness(authorizers=[self.rules])

    def client(self, name: str, level: int = 4) -> FakeClient:
        client, connack = self.harness.connect(name, level, username=name)
        assert connack.reason_code == 0
        return client

    def subscribe(self, client: FakeClient, topic_filter: str, qos: int = 1) -> tuple[int, ...]:
        client.send(Subscribe(1, (Subscription(topic_filter, qos),)))
        [suback] = [p for p in client.received() if isinstance(p, Suback)]
        return suback.reason_codes

    def test_verify_policy(self) -> None:
        verifyObject(IAuthorizer, self.rules)
        self.assertIsInstance(self.harness.broker.policy, Policy)

    def test_refused_publish_answers(self) -> None:
        """MQTT 5: 0x87 in PUBACK/PUBREC; 3.1.1: acknowledged as usual; never routed."""
        watcher = self.client("w")
        self.assertEqual(self.subscribe(watcher, "#"), (1,))
        v5 = self.client("a5", 5)
        v5.send(Publish("u/b/x", b"1", 1, packet_id=1), Publish("u/b/x", b"2", 2, packet_id=2))
        self.assertEqual(
            kinds(v5.received()), [("Puback", R.NOT_AUTHORIZED), ("Pubrec", R.NOT_AUTHORIZED)]
        )
        v4 = self.client("a4")
        v4.send(
            Publish("u/b/x", b"3", 0),
            Publish("u/b/x", b"4", 1, packet_id=1),
            Publish("u/b/x", b"5", 2, packet_id=2),
        )
        self.assertEqual(v4.received(), [Puback(1), Pubrec(2)])
        v4.send(Pubrel(2))
        self.assertEqual(v4.received(), [Pubcomp(2)])
        self.assertEqual(watcher.received(), [])
        v4.send(Publish("u/a4/x", b"mine", 1, packet_id=3))
        self.assertEqual(v4.received(), [Puback(3)])

    def test_wildcard_subscription_filtered_per_message(self) -> None:
        """'#' is granted, but only topics the subscriber may read reach it."""
        alice = self.client("alice")
        self.assertEqual(self.subscribe(alice, "#", 1), (1,))
        bob = self.client("bob")
        bob.send(
            Publish("u/bob/secret", b"no", 0),
            Publish("public/news", b"yes", 0),
        )
        self.assertEqual(shape(alice.received()), [("public/news", b"yes", 0, False, False)])

    def test_subscribe_refused_and_capped(self) -> None:
        alice = self.client("alice")
        self.assertEqual(self.subscribe(alice, "u/bob/#"), (0x80,))
        alice5 = self.client("alice5", 5)
        self.assertEqual(self.subscribe(alice5, "u/bob/#"), (R.NOT_AUTHORIZED,))
        self.assertEqual(self.subscribe(alice5, "u/#", 2), (1,))
        self.assertEqual(self.subscribe(alice5, "u/alice5/#", 2), (2,))

    def test_retained_filtered(self) -> None:
        """Retained messages on subscribe go through the same read check."""
        bob = self.client("bob")
        bob.send(
            Publish("u/bob/state", b"private", 1, retain=True, packet_id=1),
            Publish("public/state", b"open", 1, retain=True, packet_id=2),
        )
        alice = self.client("alice")
        alice.send(Subscribe(1, (Subscription("#", 1),)))
        topics = [p.topic for p in alice.received() if isinstance(p, Publish)]
        self.assertEqual(topics, ["public/state"])

    def test_revoked_on_recheck(self) -> None:
        """After an ACL reload, subscriptions it no longer allows are dropped."""
        alice = self.client("alice")
        self.assertEqual(self.subscribe(alice, "u/alice/#"), (1,))
        self.rules.revoked.add("alice")
        self.assertEqual(self.harness.broker.recheck_subscriptions(), 1)
        self.assertEqual(self.harness.broker.sessions["alice"].subscriptions, {})

    def test_shared_group_skips_members_who_may_not_read(self) -> None:
        alice = self.client("alice")
        bob = self.client("bob")
        for member in (alice, bob):
            self.assertEqual(self.subscribe(member, "$share/g/#"), (1,))
        # Only alice may write and read u/alice/: round robin never picks bob for it.
        for n in range(4):
            alice.send(Publish("u/alice/x", bytes([n]), 0))
        self.assertEqual(len(alice.received()), 4)
        self.assertEqual(bob.received(), [])


class DeferredAuthorizationTests(SynchronousTestCase):
    """A remote policy: decisions come later, and packets keep their order."""

    def test_publishes_in_order(self) -> None:
        rules = Rules(deferred=True)
        harness = BrokerHarness(authorizers=[rules])
        watcher, _ = harness.connect("watcher", 4, username="watcher")
        watcher.send(Subscribe(1, (Subscription("public/#", 0),)))
        rules.answer_all()
        watcher.received()
        client, _ = harness.connect("alice", 4, username="alice")
        client.send(
            Publish("public/1", b"1", 1, packet_id=1),
            Publish("public/2", b"2", 1, packet_id=2),
            Publish("u/bob/3", b"3", 1, packet_id=3),
        )
        self.assertEqual(client.received(), [])
        # One decision at a time: the second waits for the first.
        for _ in range(3):
            rules.answer_all()
        self.assertEqual(client.received(), [Puback(1), Puback(2), Puback(3)])
        self.assertEqual(
            [p.payload for p in watcher.received() if isinstance(p, Publish)], [b"1", b"2"]
        )

    def test_subscribe_later(self) -> None:
        rules = Rules(deferred=True)
        harness = BrokerHarness(authorizers=[rules])
        client, _ = harness.connect("alice", 5, username="alice")
        client.send(Subscribe(1, (Subscription("u/alice/#", 1), Subscription("u/bob/#", 1))))
        self.assertEqual(client.received(), [])
        rules.answer_all()
        [suback] = client.received()
        self.assertEqual(suback, Suback(1, (1, R.NOT_AUTHORIZED)))


class CredAdapterTests(SynchronousTestCase):
    """A twisted.cred checker as an authenticator."""

    def test_in_memory_checker(self) -> None:
        from twisted.cred.checkers import InMemoryUsernamePasswordDatabaseDontUse

        from mqttbroker.backends.cred import CheckerAuthenticator

        checker = InMemoryUsernamePasswordDatabaseDontUse(alice=b"pw")
        authenticator = CheckerAuthenticator(checker)
        verifyObject(IAuthenticator, authenticator)
        outcomes = []
        for username, password in (
            ("alice", b"pw"),
            ("alice", b"no"),
            ("eve", b"pw"),
            (None, None),
        ):
            result = authenticator.authenticate(Credentials("c", username, password))
            if isinstance(result, Deferred):
                result.addCallback(outcomes.append)
            else:
                outcomes.append(result)
        self.assertEqual(
            [(d.outcome, d.username, d.bad_credentials) for d in outcomes],
            [("allow", "alice", False), ("deny", None, True), ("deny", None, True),
             ("ignore", None, False)],
        )  # fmt: skip
