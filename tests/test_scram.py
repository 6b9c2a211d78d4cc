# -*- test-case-name: tests.test_scram -*-
"""
Tests for SCRAM-SHA-256 enhanced authentication (RFC 5802, RFC 7677) over MQTT 5's
AUTH exchange (5.0 section 4.12).

The client side here is written from the RFC, independently of the server code, and
RFC 7677's own example conversation (section 3) is replayed byte for byte.
"""

from __future__ import annotations

import base64
import io
import os
import socket
import subprocess
import sys
import tempfile
from contextlib import redirect_stdout

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from conformance.scram_client import ScramClient
from mqttbroker.codec import (
    Auth,
    Connack,
    Connect,
    Decoder,
    Disconnect,
    PropertyId,
    Publish,
    ReasonCode,
    Subscribe,
    Subscription,
    encode,
)
from mqttbroker.interfaces import AuthResult, IAuthenticationExchange, IAuthenticationMethod
from mqttbroker.scram import ScramCredentials, ScramSha256, load_credentials, main
from mqttbroker.testing import BrokerHarness, FakeClient
from tests.support import IntegrationTestCase

P = PropertyId
METHOD = "SCRAM-SHA-256"


class Rfc7677ExampleTests(SynchronousTestCase):
    """RFC 7677 section 3's example, replayed against the server side."""

    def test_example_conversation(self) -> None:
        """The server answers RFC 7677's client messages with RFC 7677's server ones."""
        credentials = ScramCredentials.from_password(
            "pencil", base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ=="), 4096
        )
        method = ScramSha256({"user": credentials}, nonce=lambda: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0")
        exchange = method.begin("c")
        first = exchange.step(b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO")
        self.assertEqual(
            first,
            AuthResult.more(
                b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
            ),
        )
        final = exchange.step(
            b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
            b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
        )
        self.assertEqual(
            final,
            AuthResult.succeeded(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", "user"),
        )

    def test_interfaces(self) -> None:
        """The method and its exchanges provide their interfaces."""
        method = ScramSha256({})
        verifyObject(IAuthenticationMethod, method)
        verifyObject(IAuthenticationExchange, method.begin("c"))


class ExchangeTests(SynchronousTestCase):
    """The server side refuses what it must."""

    def setUp(self) -> None:
        self.method = ScramSha256({"alice": ScramCredentials.from_password("s3cret")})

    def _converse(self, user: str, password: str) -> AuthResult:
        client = ScramClient(user, password)
        exchange = self.method.begin("c")
        first = exchange.step(client.first())
        self.assertFalse(first.done)
        return exchange.step(client.final(first.data))

    def test_right_password(self) -> None:
        """The right password authenticates, and the server proves itself to the client."""
        client = ScramClient("alice", "s3cret")
        exchange = self.method.begin("c")
        result = exchange.step(client.final(exchange.step(client.first()).data))
        self.assertTrue(result.success)
        self.assertEqual(result.identity, "alice")
        self.assertTrue(client.verify(result.data))

    def test_wrong_password(self) -> None:
        """A wrong password fails."""
        self.assertEqual(self._converse("alice", "guess").success, False)

    def test_unknown_user_looks_like_a_known_one(self) -> None:
        """An unknown user gets a challenge of the same shape, and fails at the end."""
        exchange = self.method.begin("c")
        challenge = exchange.step(ScramClient("mallory", "x", nonce="clientnonce123").first())
        self.assertFalse(challenge.done)
        self.assertRegex(challenge.data, rb"^r=clientnonce123[^,]+,s=[^,]+,i=4096$")
        self.assertFalse(self._converse("mallory", "x").success)

    def test_malformed_messages(self) -> None:
        """Channel binding, missing attributes, a wrong nonce: each fails cleanly."""
        for first in (b"p=tls-unique,,n=a,r=x", b"n,,r=x", b"n,,n=a", b"\xff", b"n,a=z,n=a,r=x"):
            with self.subTest(first=first):
                result = self.method.begin("c").step(first)
                self.assertEqual((result.done, result.success), (True, False))
        exchange = self.method.begin("c")
        exchange.step(ScramClient("alice", "s3cret").first())
        result = exchange.step(b"c=biws,r=othernonce,p=AAAA")
        self.assertEqual((result.done, result.success), (True, False))


class CredentialsFileTests(SynchronousTestCase):
    """The credentials format and its generator."""

    def test_round_trip(self) -> None:
        """A line written by to_line loads back to the same credentials."""
        credentials = ScramCredentials.from_password("pw")
        self.assertEqual(
            load_credentials([credentials.to_line("bob"), "# c", ""]), {"bob": credentials}
        )

    def test_malformed_line(self) -> None:
        """A malformed line is refused with its line number."""
        with self.assertRaises(ValueError) as caught:
            load_credentials(["", "bob:notbase64:x:y:z"])
        self.assertIn("line 2", str(caught.exception))

    def test_generator(self) -> None:
        """`python -m mqttbroker.scram NAME` prints a line for the password on stdin."""
        out = io.StringIO()
        stdin = sys.stdin
        sys.stdin = io.StringIO("pw\n")
        try:
            with redirect_stdout(out):
                self.assertEqual(main(["carol"]), 0)
        finally:
            sys.stdin = stdin
        [(name, credentials)] = load_credentials([out.getvalue()]).items()
        self.assertEqual(name, "carol")
        self.assertEqual(ScramCredentials.from_password("pw", credentials.salt), credentials)


class MqttAuthExchangeTests(SynchronousTestCase):
    """The AUTH packet exchange through the broker [5.0 section 4.12]."""

    def setUp(self) -> None:
        self.harness = BrokerHarness()
        self.harness.broker.auth_methods[METHOD] = ScramSha256(
            {"alice": ScramCredentials.from_password("s3cret")}
        )

    def _connect(self, user: str, password: str) -> tuple[FakeClient, ScramClient, list[object]]:
        scram = ScramClient(user, password)
        client = self.harness.client(5)
        client.send(
            Connect(
                "dev1",
                5,
                properties={P.AUTHENTICATION_METHOD: METHOD, P.AUTHENTICATION_DATA: scram.first()},
            )
        )
        [challenge] = client.received()
        assert isinstance(challenge, Auth)
        self.assertEqual(challenge.reason_code, ReasonCode.CONTINUE_AUTHENTICATION)
        self.assertEqual(challenge.properties[P.AUTHENTICATION_METHOD], METHOD)
        data = challenge.properties[P.AUTHENTICATION_DATA]
        assert isinstance(data, bytes)
        client.send(
            Auth(
                ReasonCode.CONTINUE_AUTHENTICATION,
                {P.AUTHENTICATION_METHOD: METHOD, P.AUTHENTICATION_DATA: scram.final(data)},
            )
        )
        return client, scram, list(client.received())

    def test_success(self) -> None:
        """The right password: CONNACK 0 with the server's final proof, which verifies."""
        client, scram, [connack] = self._connect("alice", "s3cret")
        assert isinstance(connack, Connack)
        self.assertEqual(connack.reason_code, 0)
        self.assertEqual(connack.properties[P.AUTHENTICATION_METHOD], METHOD)
        final = connack.properties[P.AUTHENTICATION_DATA]
        assert isinstance(final, bytes)
        self.assertTrue(scram.verify(final))
        self.assertFalse(client.closed_by_server)

    def test_failure(self) -> None:
        """A wrong password: CONNACK 0x87 and the close."""
        client, _, packets = self._connect("alice", "wrong")
        self.assertEqual(packets, [Connack(False, ReasonCode.NOT_AUTHORIZED)])
        self.assertTrue(client.closed_by_server)

    def test_unknown_method(self) -> None:
        """An authentication method the broker lacks: CONNACK 0x8C [MQTT-4.12.0-1]."""
        client = self.harness.client(5)
        client.send(Connect("c", 5, properties={P.AUTHENTICATION_METHOD: "KERBEROS"}))
        self.assertEqual(client.received(), [Connack(False, ReasonCode.BAD_AUTHENTICATION_METHOD)])
        self.assertTrue(client.closed_by_server)

    def test_other_packets_while_authenticating(self) -> None:
        """Before the exchange completes, only AUTH (or DISCONNECT) may come from the client."""
        client = self.harness.client(5)
        client.send(
            Connect(
                "c",
                5,
                properties={
                    P.AUTHENTICATION_METHOD: METHOD,
                    P.AUTHENTICATION_DATA: ScramClient("alice", "x").first(),
                },
            )
        )
        client.received()
        client.send(Publish("t", b"too early"))
        self.assertEqual(client.received(), [Connack(False, ReasonCode.PROTOCOL_ERROR)])
        self.assertTrue(client.closed_by_server)

    def test_disconnect_while_authenticating(self) -> None:
        """A client may give up with DISCONNECT mid-exchange: closed, no error answer."""
        client = self.harness.client(5)
        client.send(
            Connect(
                "c",
                5,
                properties={
                    P.AUTHENTICATION_METHOD: METHOD,
                    P.AUTHENTICATION_DATA: ScramClient("alice", "x").first(),
                },
            )
        )
        client.received()
        client.send(Disconnect())
        self.assertEqual(client.received(), [])
        self.assertTrue(client.closed_by_server)

    def test_auth_with_other_method(self) -> None:
        """An AUTH naming another method is a protocol error."""
        client, _, _ = self._connect("alice", "s3cret")
        client.send(Auth(ReasonCode.RE_AUTHENTICATE, {P.AUTHENTICATION_METHOD: "OTHER"}))
        self.assertEqual(client.received(), [Disconnect(ReasonCode.PROTOCOL_ERROR)])

    def test_auth_without_enhanced_authentication(self) -> None:
        """AUTH from a client that connected without a method is a protocol error."""
        client, _ = self.harness.connect("plain", level=5)
        client.send(Auth(ReasonCode.RE_AUTHENTICATE, {P.AUTHENTICATION_METHOD: METHOD}))
        self.assertEqual(client.received(), [Disconnect(ReasonCode.PROTOCOL_ERROR)])

    def _reauthenticate(self, client: FakeClient, password: str) -> list[object]:
        scram = ScramClient("alice", password, nonce="again456")
        client.send(
            Auth(
                ReasonCode.RE_AUTHENTICATE,
                {P.AUTHENTICATION_METHOD: METHOD, P.AUTHENTICATION_DATA: scram.first()},
            )
        )
        [challenge] = client.received()
        assert isinstance(challenge, Auth)
        data = challenge.properties[P.AUTHENTICATION_DATA]
        assert isinstance(data, bytes)
        client.send(
            Auth(
                ReasonCode.CONTINUE_AUTHENTICATION,
                {P.AUTHENTICATION_METHOD: METHOD, P.AUTHENTICATION_DATA: scram.final(data)},
            )
        )
        return list(client.received())

    def test_reauthentication(self) -> None:
        """Re-authentication on a live connection ends with AUTH 0x00 [MQTT-4.12.1-1]."""
        client, _, _ = self._connect("alice", "s3cret")
        [done] = self._reauthenticate(client, "s3cret")
        assert isinstance(done, Auth)
        self.assertEqual(done.reason_code, ReasonCode.SUCCESS)
        self.assertFalse(client.closed_by_server)

    def test_failed_reauthentication_disconnects(self) -> None:
        """A failed re-authentication: DISCONNECT 0x87 and the close [MQTT-4.12.1-2]."""
        client, _, _ = self._connect("alice", "s3cret")
        self.assertEqual(
            self._reauthenticate(client, "wrong"), [Disconnect(ReasonCode.NOT_AUTHORIZED)]
        )
        self.assertTrue(client.closed_by_server)


class CommandLineTests(SynchronousTestCase):
    """`twist mqtt --scram-users FILE`."""

    def test_option_loads_method(self) -> None:
        """The option installs SCRAM-SHA-256 with the file's users; a bad file is refused."""
        from mqttbroker import tap
        from mqttbroker.service import BrokerService

        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "users")
            with open(path, "w", encoding="utf-8") as f:
                f.write(ScramCredentials.from_password("pw").to_line("bob") + "\n")
            options = tap.Options()
            options.parseOptions(
                ["--scram-users", path, "--persistence", "memory",
                 "--listen", "tcp:0:interface=127.0.0.1"]
            )  # fmt: skip
            service = tap.makeService(options)
            [broker_service] = [
                child
                for child in list(service)  # type: ignore[call-overload]
                if isinstance(child, BrokerService)
            ]
            broker = broker_service.broker
            self.assertEqual(list(broker.auth_methods), [METHOD])
            with open(path, "w", encoding="utf-8") as f:
                f.write("garbage\n")
            from twisted.python.usage import UsageError

            self.assertRaises(UsageError, tap.Options().parseOptions, ["--scram-users", path])

    def test_module_runs(self) -> None:
        """`python -m mqttbroker.scram NAME` works as a command."""
        result = subprocess.run(
            [sys.executable, "-m", "mqttbroker.scram", "dave"],
            input="pw\n",
            capture_output=True,
            text=True,
            check=True,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        )
        self.assertEqual(list(load_credentials([result.stdout])), ["dave"])


class EndToEndTests(IntegrationTestCase):
    """SCRAM-SHA-256 against a real `twist mqtt` process, over a TCP socket."""

    def test_scram_over_tcp(self) -> None:
        """
        A client authenticates with SCRAM-SHA-256 against `twist mqtt --scram-users`,
        verifies the server's proof, and then publishes and receives; a wrong
        password is refused with CONNACK 0x87.
        """
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        path = os.path.join(directory.name, "users")
        with open(path, "w", encoding="utf-8") as f:
            f.write(ScramCredentials.from_password("s3cret").to_line("alice") + "\n")
        broker = self.start_broker("--scram-users", path)

        def converse(password: str) -> tuple[socket.socket, list[object], ScramClient]:
            scram = ScramClient("alice", password)
            sock = socket.create_connection(("127.0.0.1", broker.port), timeout=10)
            self.addCleanup(sock.close)
            decoder = Decoder(protocol_level=5)
            props = {P.AUTHENTICATION_METHOD: METHOD, P.AUTHENTICATION_DATA: scram.first()}
            sock.sendall(encode(Connect("tcp-dev", 5, properties=props), 5))
            [challenge] = _read(sock, decoder, 1)
            data = challenge.properties[P.AUTHENTICATION_DATA]  # type: ignore[union-attr]
            props = {P.AUTHENTICATION_METHOD: METHOD, P.AUTHENTICATION_DATA: scram.final(data)}
            sock.sendall(encode(Auth(ReasonCode.CONTINUE_AUTHENTICATION, props), 5))
            return sock, _read(sock, decoder, 1), scram

        _, [refused], _ = converse("wrong")
        self.assertEqual(refused.reason_code, ReasonCode.NOT_AUTHORIZED)  # type: ignore[attr-defined]
        sock, [connack], scram = converse("s3cret")
        assert isinstance(connack, Connack)
        self.assertEqual(connack.reason_code, 0)
        final = connack.properties[P.AUTHENTICATION_DATA]
        assert isinstance(final, bytes)
        self.assertTrue(scram.verify(final))
        decoder = Decoder(protocol_level=5)
        subscribe = encode(Subscribe(1, (Subscription("t", 1),)), 5)
        sock.sendall(subscribe + encode(Publish("t", b"hi", 1, packet_id=2), 5))
        packets = _read(sock, decoder, 3)
        self.assertIn(b"hi", [getattr(p, "payload", None) for p in packets])


def _read(sock: socket.socket, decoder: Decoder, count: int) -> list[object]:
    """Read until C{count} packets arrived (bounded by the socket's timeout)."""
    packets: list[object] = []
    while len(packets) < count:
        data = sock.recv(65536)
        if not data:
            break
        packets.extend(decoder.feed(data))
    return packets
