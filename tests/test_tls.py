"""
TLS on listeners: certificates with their chain, client certificates (mutual TLS),
the certificate's name as the MQTT user name, and certificate reload.

Certificates are made in each test with C{trustme} (a CA, a server certificate for
C{localhost} and 127.0.0.1, client certificates, one from another CA, one expired)
and written to a temporary directory.

The unit tests drive TLS handshakes in memory: the server side is the OpenSSL
context the broker would use, the client side Python's C{ssl} module over memory
BIOs; no socket, no clock. The integration tests run C{twist mqtt} as a process on
127.0.0.1 and talk to it with Debian's mosquitto clients, paho-mqtt and Python's
C{ssl}; the identity test runs the listener in this process on the real reactor, so
that it can look at the connection's user name.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import trustme
from OpenSSL import SSL, crypto
from twisted.internet import defer, reactor
from twisted.internet.endpoints import SSL4ClientEndpoint, connectProtocol, serverFromString
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mqttbroker.broker import Broker
from mqttbroker.endpoints import listener_factory
from mqttbroker.listeners import Listener, TLSSettings
from mqttbroker.tls import (
    ReloadableTLS,
    TLSConfigurationError,
    build_options,
    certificate_identity,
    tls_failure,
)
from tests.support import (
    HOST,
    TIMEOUT,
    BrokerProcess,
    IntegrationTestCase,
    PahoClient,
    RawClient,
    connect_packet,
    require_executables,
)

# -- certificates ---------------------------------------------------------------------------


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class PKI:
    """
    A CA and a server certificate (for C{localhost} and 127.0.0.1) written as PEM
    files to C{directory}, and client certificates on demand.

    @ivar ca_path: the CA certificate (what C{--ca} and C{--cafile} take).
    @ivar cert_path: the server certificate (C{--cert}).
    @ivar key_path: its private key (C{--key}).
    """

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.ca = trustme.CA()
        self.ca_path = self.path("ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_path)
        self.server = self.ca.issue_cert("localhost", "127.0.0.1", common_name="localhost")
        self.cert_path, self.key_path = self.write_leaf("server", self.server)

    def path(self, name: str) -> str:
        """A file name in the directory."""
        return os.path.join(self.directory, name)

    def write_leaf(self, name: str, leaf: trustme.LeafCert) -> tuple[str, str]:
        """Write C{name}.crt (the certificate and its chain) and C{name}.key."""
        cert_path, key_path = self.path(f"{name}.crt"), self.path(f"{name}.key")
        with open(cert_path, "wb") as f:
            f.write(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
        leaf.private_key_pem.write_to_path(key_path)
        return cert_path, key_path

    def client(
        self, name: str, common_name: str, *, ca: trustme.CA | None = None, expired: bool = False
    ) -> tuple[str, str]:
        """A client certificate (by this CA, or C{ca}); its certificate and key files."""
        issuer = ca if ca is not None else self.ca
        dates: dict[str, Any] = {}
        if expired:
            dates = {
                "not_before": _now() - datetime.timedelta(days=30),
                "not_after": _now() - datetime.timedelta(days=1),
            }
        # The subject alternative name must be a valid host or mail name; the CN is
        # free text (a client id may hold underscores).
        leaf = issuer.issue_cert(f"{name}@clients.test", common_name=common_name, **dates)
        return self.write_leaf(name, leaf)

    def replace_server_certificate(self, common_name: str) -> bytes:
        """
        Replace the server's certificate and key files, as a deploy would (each file
        written aside, then renamed over the old one); the new certificate as DER.
        """
        leaf = self.ca.issue_cert("localhost", "127.0.0.1", common_name=common_name)
        replace_file(self.key_path, leaf.private_key_pem.bytes())
        replace_file(self.cert_path, leaf.cert_chain_pems[0].bytes())
        return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


def replace_file(path: str, data: bytes) -> None:
    """
    Replace C{path} with C{data} as a deploy would: written aside, renamed over it.
    Its modification time ends up later than the old file's even on a file system
    with coarse timestamps, so that a change check cannot miss it.
    """
    old = os.stat(path).st_mtime_ns
    with open(path + ".new", "wb") as f:
        f.write(data)
    os.replace(path + ".new", path)
    if os.stat(path).st_mtime_ns <= old:
        os.utime(path, ns=(old + 1_000_000_000, old + 1_000_000_000))


def make_pki(test: SynchronousTestCase) -> PKI:
    """A L{PKI} in a new temporary directory, removed after C{test}."""
    directory = tempfile.mkdtemp(prefix="mqttbroker-tls-")
    test.addCleanup(shutil.rmtree, directory, True)
    return PKI(directory)


def _der(path: str) -> bytes:
    """The first certificate of a PEM file, as DER."""
    with open(path) as f:
        text = f.read()
    end = "-----END CERTIFICATE-----"
    return ssl.PEM_cert_to_DER_cert(text[: text.index(end) + len(end)])


def client_context(cafile: str, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """A Python client context: verifies the server against C{cafile}, may present a cert."""
    context = ssl.create_default_context(cafile=cafile)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


# -- in-memory handshakes ----------------------------------------------------------------------


class HandshakeError(Exception):
    """A handshake failed; C{side} says which side gave up first."""

    def __init__(self, side: str, error: Exception) -> None:
        super().__init__(f"{side}: {error}")
        self.side = side
        self.error = error


def handshake(
    server_context: SSL.Context, client: ssl.SSLContext, hostname: str = "localhost"
) -> tuple[bytes, SSL.Connection]:
    """
    A full TLS handshake between the broker's context and a Python client, in memory.
    The server certificate as the client got it (DER) and the server's connection.

    @raise HandshakeError: either side refused; for the server side, this includes
        a client certificate the server rejects (which in TLS 1.3 the client only
        learns after it considers its own handshake done).
    """
    server = SSL.Connection(server_context, None)
    server.set_accept_state()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_client = client.wrap_bio(incoming, outgoing, server_hostname=hostname)
    client_done = server_done = False
    for _ in range(50):
        if not client_done:
            try:
                tls_client.do_handshake()
                client_done = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError as error:
                raise HandshakeError("client", error) from None
        to_server = outgoing.read()
        if to_server:
            server.bio_write(to_server)
        if not server_done:
            try:
                server.do_handshake()
                server_done = True
            except SSL.WantReadError:
                pass
            except SSL.Error as error:
                raise HandshakeError("server", error) from None
        try:
            to_client = server.bio_read(65536)
        except SSL.WantReadError:
            to_client = b""
        if to_client:
            incoming.write(to_client)
        if client_done and server_done and not to_server and not to_client:
            der = tls_client.getpeercert(binary_form=True)
            assert der is not None
            return der, server
    raise AssertionError("the handshake did not finish in 50 rounds")


# -- unit tests: build_options -------------------------------------------------------------------


class BuildOptionsTests(SynchronousTestCase):
    """L{build_options}: what the listener's TLS context is made of, and refusals."""

    def setUp(self) -> None:
        self.pki = make_pki(self)

    def context(self, **overrides: Any) -> SSL.Context:
        """The server context for the PKI's server certificate, with C{overrides}."""
        fields: dict[str, Any] = {"cert": self.pki.cert_path, "key": self.pki.key_path}
        fields.update(overrides)
        context: SSL.Context = build_options(TLSSettings(**fields)).getContext()
        return context

    def assertConfigurationError(self, settings: TLSSettings, *fragments: str) -> None:
        """C{build_options(settings)} fails with a message holding each fragment."""
        error = self.assertRaises(TLSConfigurationError, build_options, settings)
        for fragment in fragments:
            self.assertIn(fragment, str(error))

    def test_server_certificate(self) -> None:
        """A client trusting the CA verifies the server as localhost and 127.0.0.1."""
        for hostname in ("localhost", "127.0.0.1"):
            der, _ = handshake(self.context(), client_context(self.pki.ca_path), hostname)
            self.assertEqual(der, _der(self.pki.cert_path))

    def test_chain_with_intermediate(self) -> None:
        """
        A certificate file holding the leaf then an intermediate CA: the server sends
        the intermediate, so a client that trusts only the root verifies the leaf.
        With the leaf alone in the file (the control), the same client cannot.
        """
        root = trustme.CA()
        intermediate = root.create_child_ca()
        leaf = intermediate.issue_cert("localhost")
        self.assertEqual(len(leaf.cert_chain_pems), 2)
        cert, key = self.pki.write_leaf("chained", leaf)
        root_path = self.pki.path("root.pem")
        root.cert_pem.write_to_path(root_path)

        der, _ = handshake(self.context(cert=cert, key=key), client_context(root_path))
        self.assertEqual(der, _der(cert))

        leaf_only = self.pki.path("leaf-only.crt")
        leaf.cert_chain_pems[0].write_to_path(leaf_only)
        failure = self.assertRaises(
            HandshakeError,
            handshake,
            self.context(cert=leaf_only, key=key),
            client_context(root_path),
        )
        self.assertEqual(failure.side, "client")
        self.assertIn("CERTIFICATE_VERIFY_FAILED", str(failure.error))

    def test_key_in_certificate_file(self) -> None:
        """Without C{key}, the private key is read from the certificate file."""
        combined = self.pki.path("combined.pem")
        with open(combined, "wb") as f:
            f.write(self.pki.server.private_key_pem.bytes())
            f.write(self.pki.server.cert_chain_pems[0].bytes())
        der, _ = handshake(self.context(cert=combined, key=None), client_context(self.pki.ca_path))
        self.assertEqual(der, _der(self.pki.cert_path))

    def test_no_key_anywhere(self) -> None:
        """A certificate file without a key, and no key file: the key is reported missing."""
        self.assertConfigurationError(
            TLSSettings(self.pki.cert_path), "private key", self.pki.cert_path
        )

    def test_missing_files(self) -> None:
        """A file that does not exist is named, with what it was for and why."""
        missing = self.pki.path("nope.pem")
        self.assertConfigurationError(
            TLSSettings(missing, self.pki.key_path), "certificate", missing, "No such file"
        )
        self.assertConfigurationError(
            TLSSettings(self.pki.cert_path, missing), "private key", missing, "No such file"
        )
        self.assertConfigurationError(
            TLSSettings(self.pki.cert_path, self.pki.key_path, missing), "CA file", missing
        )

    def test_no_pem(self) -> None:
        """Files without PEM blocks (or with DER in them) are refused, and named."""
        garbage = self.pki.path("garbage.pem")
        with open(garbage, "wb") as f:
            f.write(b"this is not a certificate\n")
        self.assertConfigurationError(
            TLSSettings(garbage, self.pki.key_path), garbage, "no PEM certificate"
        )
        self.assertConfigurationError(
            TLSSettings(self.pki.cert_path, garbage), "private key", garbage
        )
        self.assertConfigurationError(
            TLSSettings(self.pki.cert_path, self.pki.key_path, garbage), "CA file", garbage
        )
        der = self.pki.path("server.der")
        with open(der, "wb") as f:
            f.write(_der(self.pki.cert_path))
        self.assertConfigurationError(TLSSettings(der, self.pki.key_path), "no PEM certificate")

    def test_key_not_matching_certificate(self) -> None:
        """The key of another certificate is refused when the options are built."""
        _, other_key = self.pki.client("other", "other")
        self.assertConfigurationError(
            TLSSettings(self.pki.cert_path, other_key), self.pki.cert_path, other_key
        )

    def test_tls_1_2_minimum(self) -> None:
        """
        SSL 3, TLS 1.0 and 1.1 are off in the context; a client that offers only
        TLS 1.1 is refused by the server, one that offers only TLS 1.2 is served.
        """
        context = self.context()
        options = context.set_options(0)  # ORs nothing in; returns the options set
        for off in ("OP_NO_SSLv3", "OP_NO_TLSv1", "OP_NO_TLSv1_1"):
            self.assertTrue(options & getattr(SSL, off), off)
        self.assertFalse(options & SSL.OP_NO_TLSv1_2)

        old = client_context(self.pki.ca_path)
        # Let this client offer TLS 1.1 at all (OpenSSL 3 refuses it at level 1).
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
        old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
        failure = self.assertRaises(HandshakeError, handshake, context, old)
        self.assertEqual(failure.side, "server")
        self.assertIn("unsupported protocol", str(failure.error))

        tls12 = client_context(self.pki.ca_path)
        tls12.maximum_version = ssl.TLSVersion.TLSv1_2
        _, server = handshake(self.context(), tls12)
        self.assertEqual(server.get_protocol_version_name(), "TLSv1.2")

    def test_client_certificate_required(self) -> None:
        """
        With a CA and require_client_cert, the server refuses in the handshake a
        client with no certificate, one from another CA, and an expired one; it
        serves one with a valid certificate and sees its name.
        """
        settings = {"ca": self.pki.ca_path, "require_client_cert": True}
        good = self.pki.client("good", "device-1")
        wrong = self.pki.client("wrong", "intruder", ca=trustme.CA())
        expired = self.pki.client("expired", "device-2", expired=True)
        ca = self.pki.ca_path

        _, server = handshake(self.context(**settings), client_context(ca, *good))
        peer = server.get_peer_certificate()
        assert peer is not None
        self.assertEqual(certificate_identity(_Transport(peer)), "device-1")

        for client, reason in (
            (client_context(ca), "certificate"),
            (client_context(ca, *wrong), "certificate verify failed"),
            (client_context(ca, *expired), "certificate verify failed"),
        ):
            failure = self.assertRaises(HandshakeError, handshake, self.context(**settings), client)
            self.assertEqual(failure.side, "server")
            self.assertIn(reason, str(failure.error))

    def test_client_certificate_optional(self) -> None:
        """
        With a CA but no require_client_cert, a client without a certificate is
        served; one whose certificate does not verify is still refused.
        """
        settings = {"ca": self.pki.ca_path}
        ca = self.pki.ca_path
        _, server = handshake(self.context(**settings), client_context(ca))
        self.assertIsNone(server.get_peer_certificate())
        for client_cert in (
            self.pki.client("wrong", "intruder", ca=trustme.CA()),
            self.pki.client("expired", "device-2", expired=True),
        ):
            failure = self.assertRaises(
                HandshakeError,
                handshake,
                self.context(**settings),
                client_context(ca, *client_cert),
            )
            self.assertEqual(failure.side, "server")


# -- unit tests: ReloadableTLS ------------------------------------------------------------------


class ReloadableTLSTests(SynchronousTestCase):
    """L{ReloadableTLS}: new handshakes get the files' current certificate."""

    def setUp(self) -> None:
        self.pki = make_pki(self)
        self.tls = ReloadableTLS(TLSSettings(self.pki.cert_path, self.pki.key_path))

    def served(self) -> bytes:
        """The certificate a new client gets now."""
        der, _ = handshake(self.tls.getContext(), client_context(self.pki.ca_path))
        return der

    def break_key_file(self) -> None:
        """Overwrite the key file with the key of another certificate."""
        other = self.pki.ca.issue_cert("localhost")
        replace_file(self.pki.key_path, other.private_key_pem.bytes())

    def test_same_context_until_reload(self) -> None:
        """Connections share one context (and its session cache) between reloads."""
        self.assertIs(self.tls.getContext(), self.tls.getContext())

    def test_reload_new_files(self) -> None:
        """After reload, new handshakes present the certificate now in the files."""
        first = self.served()
        new = self.pki.replace_server_certificate("renewed")
        self.assertEqual(self.served(), first)
        self.assertTrue(self.tls.reload())
        self.assertEqual(self.served(), new)
        self.assertNotEqual(new, first)

    def test_reload_broken_files_keeps_context(self) -> None:
        """
        A reload that finds unusable files (a key that does not match, a missing
        file) returns False and keeps serving the previous certificate.
        """
        first = self.served()
        context = self.tls.getContext()
        self.pki.replace_server_certificate("renewed")
        self.break_key_file()
        self.assertFalse(self.tls.reload())
        self.assertIs(self.tls.getContext(), context)
        self.assertEqual(self.served(), first)
        os.unlink(self.pki.cert_path)
        self.assertFalse(self.tls.reload())
        self.assertEqual(self.served(), first)

    def test_reload_if_changed(self) -> None:
        """
        Nothing changed on disk: no reload, same context. New files (a later
        modification time): reloaded. Then unchanged again: no reload.
        """
        context = self.tls.getContext()
        self.assertFalse(self.tls.reload_if_changed())
        self.assertIs(self.tls.getContext(), context)

        key = os.stat(self.pki.key_path)
        new = self.pki.replace_server_certificate("renewed")
        for path in (self.pki.cert_path, self.pki.key_path):
            os.utime(path, ns=(key.st_atime_ns, key.st_mtime_ns + 1_000_000_000))
        self.assertTrue(self.tls.reload_if_changed())
        self.assertIsNot(self.tls.getContext(), context)
        self.assertEqual(self.served(), new)
        self.assertFalse(self.tls.reload_if_changed())

    def test_reload_if_changed_size(self) -> None:
        """A file whose size changed is reloaded even with the same modification time."""
        info = os.stat(self.pki.cert_path)
        with open(self.pki.cert_path, "ab") as f:
            f.write(b"\n# a comment after the certificate\n")
        os.utime(self.pki.cert_path, ns=(info.st_atime_ns, info.st_mtime_ns))
        self.assertTrue(self.tls.reload_if_changed())

    def test_failed_reload_if_changed_waits_for_next_change(self) -> None:
        """
        A change that leaves the files broken (a deploy half done) is tried once,
        not at every check; the next change (the deploy finished) is picked up.
        """
        first = self.served()
        self.break_key_file()
        self.assertFalse(self.tls.reload_if_changed())
        self.assertFalse(self.tls.reload_if_changed())
        self.assertEqual(self.served(), first)
        new = self.pki.replace_server_certificate("renewed")
        self.assertTrue(self.tls.reload_if_changed())
        self.assertEqual(self.served(), new)


# -- unit tests: certificate_identity -----------------------------------------------------------


class _Transport:
    """A transport whose getPeerCertificate returns (or raises) what it is given."""

    def __init__(self, result: object) -> None:
        self.result = result

    def getPeerCertificate(self) -> object:
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


class CertificateIdentityTests(SynchronousTestCase):
    """L{certificate_identity}: the CN of the verified client certificate, or None."""

    def test_not_tls(self) -> None:
        """A transport without getPeerCertificate (plain TCP) has no identity."""
        self.assertIsNone(certificate_identity(object()))

    def test_no_certificate(self) -> None:
        """A TLS client that presented no certificate has no identity."""
        self.assertIsNone(certificate_identity(_Transport(None)))

    def test_not_ready(self) -> None:
        """getPeerCertificate failing (no handshake yet) means no identity."""
        self.assertIsNone(certificate_identity(_Transport(SSL.Error("no handshake"))))

    def test_common_name(self) -> None:
        """A real certificate's common name."""
        leaf = trustme.CA().issue_cert("device-7.example", common_name="device-7")
        x509 = crypto.load_certificate(crypto.FILETYPE_PEM, leaf.cert_chain_pems[0].bytes())
        self.assertEqual(certificate_identity(_Transport(x509)), "device-7")

    def test_no_common_name(self) -> None:
        """A certificate whose subject has no CN has no identity (not an empty name)."""
        self.assertIsNone(certificate_identity(_Transport(crypto.X509())))


# -- integration: twist mqtt with TLS -------------------------------------------------------------

_TLS_STARTING_ON = r"MQTTServerFactory \(TLS\) starting on (\d+)"


def _connect_with_username(client_id: str, username: str, level: int = 4) -> bytes:
    """A CONNECT with a user name (3.1.1 or 5), built by hand."""

    def string(text: str) -> bytes:
        data = text.encode()
        return struct.pack("!H", len(data)) + data

    variable = string("MQTT") + bytes([level, 0x80 | 0x02]) + struct.pack("!H", 60)
    if level == 5:
        variable += b"\x00"
    body = variable + string(client_id) + string(username)
    return b"\x10" + bytes([len(body)]) + body


def tls_mqtt_attempt(
    port: int, ca: str, cert: str | None = None, key: str | None = None, client_id: str = "py"
) -> tuple[str, str]:
    """
    Python's ssl client: handshake, CONNECT, read the answer. ("connack", hex bytes)
    when served, ("refused", the error) when the TLS layer refused it (in TLS 1.3
    a refused client certificate shows at the first read, after the client's side
    of the handshake completed).
    """
    context = client_context(ca, cert, key)
    raw = socket.create_connection((HOST, port), timeout=TIMEOUT)
    try:
        tls = context.wrap_socket(raw, server_hostname="localhost")
        tls.sendall(connect_packet(client_id))
        answer = tls.recv(4)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as error:
        return "refused", str(error)
    finally:
        raw.close()
    if not answer:
        return "refused", "closed without an alert"
    return "connack", answer.hex()


def served_certificate(
    port: int, ca: str, cert: str | None = None, key: str | None = None
) -> bytes:
    """The certificate (DER) a new TLS connection to C{port} is given."""
    context = client_context(ca, cert, key)
    with (
        socket.create_connection((HOST, port), timeout=TIMEOUT) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
        assert der is not None
        return der


class TLSFailureTests(SynchronousTestCase):
    """What the broker logs when a handshake ends a connection."""

    def test_openssl_errors_named(self) -> None:
        """OpenSSL's error list is reduced to its reasons; anything else is no TLS failure."""
        error = SSL.Error([("SSL routines", "", "certificate verify failed")])
        self.assertEqual(tls_failure(Failure(error)), "certificate verify failed")
        self.assertEqual(tls_failure(Failure(SSL.Error("odd"))), "odd")
        self.assertIsNone(tls_failure(connectionDone))


class TLSBrokerProcess(BrokerProcess):
    """L{BrokerProcess} that also knows the port of its (first) TLS listener."""

    tls_port = 0

    def start(self, timeout: float = 30.0) -> None:
        super().start(timeout)
        line = self.wait_for_log(_TLS_STARTING_ON)
        match = re.search(_TLS_STARTING_ON, line)
        assert match is not None
        self.tls_port = int(match.group(1))


class TLSIntegrationTestCase(IntegrationTestCase):
    """Starts brokers with a plain TCP listener and a TLS one, and TLS clients."""

    def setUp(self) -> None:
        self.pki = make_pki(self)

    def start_tls_broker(self, *extra_args: str) -> TLSBrokerProcess:
        """A broker with --tls-port 0 and the PKI's server certificate, and C{extra_args}."""
        broker = TLSBrokerProcess(
            "--tls-port", "0", "--cert", self.pki.cert_path, "--key", self.pki.key_path,
            *extra_args,
        )  # fmt: skip
        self._brokers.append(broker)
        self.addCleanup(self._stop_broker, broker)
        broker.start()
        return broker

    def tls_paho(
        self,
        broker: TLSBrokerProcess,
        client_id: str,
        cert: tuple[str, str] | None = None,
        **kwargs: Any,
    ) -> PahoClient:
        """A paho client connected to the TLS listener (verifying the server)."""
        client = PahoClient(broker.tls_port, client_id, **kwargs)
        self.addCleanup(client.close)
        certfile, keyfile = cert if cert is not None else (None, None)
        client.client.tls_set(ca_certs=self.pki.ca_path, certfile=certfile, keyfile=keyfile)
        return client.connect()

    def mosquitto(self, program: str, broker: TLSBrokerProcess, *args: str) -> list[str]:
        """A mosquitto_pub/sub command line for the TLS listener, as host localhost."""
        return [
            program, "-h", "localhost", "-p", str(broker.tls_port),
            "--cafile", self.pki.ca_path, *args,
        ]  # fmt: skip

    def assertRefused(self, argv: Sequence[str]) -> None:
        """The mosquitto client fails (its TLS connection was refused)."""
        status, out, err = self.run_program(argv)
        self.assertNotEqual(status, 0, f"{argv} succeeded: {out!r} {err!r}")


class MutualTLSTests(TLSIntegrationTestCase):
    """--ca with --require-client-cert: only clients with a valid certificate get in."""

    def setUp(self) -> None:
        super().setUp()
        require_executables("mosquitto_sub", "mosquitto_pub")
        self.client_cert = self.pki.client("client", "client_id_test_10008")
        self.broker = self.start_tls_broker("--ca", self.pki.ca_path, "--require-client-cert")

    def with_cert(self, cert: tuple[str, str]) -> list[str]:
        """mosquitto's options presenting a client certificate."""
        return ["--cert", cert[0], "--key", cert[1]]

    def test_origin_flow_over_tls(self) -> None:
        """
        The project's origin flow, over mutual TLS with host name checking:
        mosquitto_sub -h localhost -c -i client_id_test_10008 -t user/10007 -q 1
        --cert --key --cafile makes a persistent session and leaves; mosquitto_pub
        -q 1 publishes; the subscriber coming back gets the message at QoS 1.
        """
        client_id, topic, payload = "client_id_test_10008", "user/10007", "hello over TLS"
        sub = self.mosquitto(
            "mosquitto_sub", self.broker, *self.with_cert(self.client_cert),
            "-c", "-i", client_id, "-t", topic, "-q", "1",
        )  # fmt: skip
        status, out, err = self.run_program([*sub, "-E"])
        self.assertEqual(status, 0, f"first mosquitto_sub failed: {out!r} {err!r}")
        self.broker.wait_for_log(rf"Client '{client_id}' disconnected")

        status, out, err = self.run_program(
            self.mosquitto(
                "mosquitto_pub", self.broker, *self.with_cert(self.client_cert),
                "-t", topic, "-q", "1", "-m", payload,
            )
        )  # fmt: skip
        self.assertEqual(status, 0, f"mosquitto_pub failed: {out!r} {err!r}")

        status, out, err = self.run_program(
            [*sub, "-C", "1", "-W", "10", "-F", "%t|%q|%p"], timeout=15
        )
        self.assertEqual(status, 0, f"second mosquitto_sub got nothing: {out!r} {err!r}")
        self.assertEqual(out, f"{topic}|1|{payload}\n")

    def test_mosquitto_refused_without_valid_certificate(self) -> None:
        """
        mosquitto_pub without a certificate, with one from another CA and with an
        expired one fails; then one with a valid certificate is served.
        """
        publish = ["-t", "t", "-q", "1", "-m", "x"]
        self.assertRefused(self.mosquitto("mosquitto_pub", self.broker, *publish))
        wrong = self.pki.client("wrong", "intruder", ca=trustme.CA())
        self.assertRefused(
            self.mosquitto("mosquitto_pub", self.broker, *self.with_cert(wrong), *publish)
        )
        expired = self.pki.client("expired", "old-device", expired=True)
        self.assertRefused(
            self.mosquitto("mosquitto_pub", self.broker, *self.with_cert(expired), *publish)
        )
        status, out, err = self.run_program(
            self.mosquitto(
                "mosquitto_pub", self.broker, *self.with_cert(self.client_cert), *publish
            )
        )
        self.assertEqual(status, 0, f"{out!r} {err!r}")
        self.assertNotIn("intruder", self.broker.log_text())

    def test_python_ssl_refused_in_handshake(self) -> None:
        """
        The TLS layer says why (alerts): certificate required, unknown CA,
        certificate expired; no CONNACK comes back. A valid client gets CONNACK 0.
        """
        ca = self.pki.ca_path
        port = self.broker.tls_port
        wrong = self.pki.client("wrong", "intruder", ca=trustme.CA())
        expired = self.pki.client("expired", "old-device", expired=True)
        for cert, alert in (
            ((None, None), "CERTIFICATE_REQUIRED"),
            (wrong, "UNKNOWN_CA"),
            (expired, "CERTIFICATE_EXPIRED"),
        ):
            outcome, detail = tls_mqtt_attempt(port, ca, *cert)
            self.assertEqual(outcome, "refused", f"{cert}: {detail}")
            self.assertIn(alert, detail)
        self.assertEqual(tls_mqtt_attempt(port, ca, *self.client_cert), ("connack", "20020000"))

    def test_plain_tcp_on_tls_port(self) -> None:
        """
        No fallback to plain MQTT: a client speaking MQTT without TLS to the TLS port
        gets no CONNACK (at most a TLS alert) and is disconnected; the broker goes on
        serving TLS clients.
        """
        raw = RawClient(self.broker.tls_port)
        self.addCleanup(raw.close)
        raw.send(connect_packet("plaintext"))
        answer = raw.wait_closed()
        self.assertTrue(answer == b"" or answer[0] == 0x15, f"not a TLS alert: {answer!r}")
        self.assertNotIn("plaintext", self.broker.log_text())
        self.assertEqual(
            tls_mqtt_attempt(self.broker.tls_port, self.pki.ca_path, *self.client_cert)[0],
            "connack",
        )

    def test_paho_tls_to_plain_tcp_subscriber(self) -> None:
        """
        One broker serves both listeners: paho over mutual TLS publishes at QoS 1,
        a subscriber on the plain TCP listener receives it at QoS 1.
        """
        subscriber = PahoClient(self.broker.port, "plain-sub")
        self.addCleanup(subscriber.close)
        subscriber.connect()
        subscriber.subscribe("bridge/tls", 1)
        publisher = self.tls_paho(self.broker, "tls-pub", self.client_cert)
        publisher.publish("bridge/tls", b"from a TLS client", qos=1)
        message = subscriber.next_message()
        self.assertEqual(
            (message.topic, message.payload, message.qos), ("bridge/tls", b"from a TLS client", 1)
        )


class OptionalClientCertificateTests(TLSIntegrationTestCase):
    """--ca without --require-client-cert: certificates are optional, but checked."""

    def setUp(self) -> None:
        super().setUp()
        require_executables("mosquitto_pub")
        self.broker = self.start_tls_broker("--ca", self.pki.ca_path)

    def test_client_without_certificate_served(self) -> None:
        """mosquitto_pub and paho with only the CA (no client certificate) are served."""
        status, out, err = self.run_program(
            self.mosquitto("mosquitto_pub", self.broker, "-t", "t", "-q", "1", "-m", "x")
        )
        self.assertEqual(status, 0, f"{out!r} {err!r}")
        client = self.tls_paho(self.broker, "no-cert")
        client.subscribe("echo", 1)
        client.publish("echo", b"hi", qos=1)
        self.assertEqual(client.next_message().payload, b"hi")

    def test_bad_certificate_refused(self) -> None:
        """A certificate from another CA, or an expired one, is still refused."""
        wrong = self.pki.client("wrong", "intruder", ca=trustme.CA())
        expired = self.pki.client("expired", "old-device", expired=True)
        for cert, alert in ((wrong, "UNKNOWN_CA"), (expired, "CERTIFICATE_EXPIRED")):
            self.assertRefused(
                self.mosquitto(
                    "mosquitto_pub", self.broker, "--cert", cert[0], "--key", cert[1],
                    "-t", "t", "-m", "x",
                )
            )  # fmt: skip
            outcome, detail = tls_mqtt_attempt(self.broker.tls_port, self.pki.ca_path, *cert)
            self.assertEqual(outcome, "refused", detail)
            self.assertIn(alert, detail)


class ReloadTests(TLSIntegrationTestCase):
    """
    The certificate replaced on disk: new connections get the new one, after SIGHUP
    or after the periodic file check, while established connections go on.
    """

    def _reload_keeps_connection(self, *args: str, signal_reload: bool) -> None:
        broker = self.start_tls_broker(*args)
        old = served_certificate(broker.tls_port, self.pki.ca_path)
        self.assertEqual(old, _der(self.pki.cert_path))
        established = self.tls_paho(broker, "established")
        established.subscribe("reload/#", 1)

        new = self.pki.replace_server_certificate("renewed")
        if signal_reload:
            assert broker.process is not None
            broker.process.send_signal(signal.SIGHUP)
        broker.wait_for_log(r"TLS certificate reloaded")
        deadline = time.monotonic() + TIMEOUT
        while (served := served_certificate(broker.tls_port, self.pki.ca_path)) != new:
            # A check may have read the certificate before the key was replaced.
            self.assertLess(time.monotonic(), deadline, "the new certificate is not served")
            time.sleep(0.1)
        self.assertEqual(served, new)

        # The connection made before the reload still works both ways...
        established.publish("reload/old", b"still here", qos=1)
        self.assertEqual(established.next_message().payload, b"still here")
        # ...and with a client that connected with the new certificate.
        newcomer = self.tls_paho(broker, "newcomer")
        newcomer.publish("reload/new", b"hello after reload", qos=1)
        self.assertEqual(established.next_message().payload, b"hello after reload")
        self.assertFalse(established.disconnected.is_set())

    def test_sighup(self) -> None:
        """SIGHUP rereads the files (the periodic check is off)."""
        self._reload_keeps_connection("--tls-check-interval", "0", signal_reload=True)

    def test_file_change(self) -> None:
        """Without a signal, the periodic check (every second here) sees the change."""
        self._reload_keeps_connection("--tls-check-interval", "1", signal_reload=False)


# -- in-process: the certificate's name as the user name -----------------------------------------


class _Collect(Protocol):
    """A client protocol that keeps what it receives, with bounded waits."""

    def __init__(self) -> None:
        self.data = b""
        self.is_closed = False
        self._waiting: list[tuple[int, defer.Deferred[bytes]]] = []
        self._close_waiters: list[defer.Deferred[None]] = []

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        for waiting in list(self._waiting):
            size, d = waiting
            if len(self.data) >= size:
                self._waiting.remove(waiting)
                d.callback(self.data)

    def received(self, size: int, timeout: float = TIMEOUT) -> defer.Deferred[bytes]:
        """Everything received, once there are C{size} bytes; fails after C{timeout}."""
        d: defer.Deferred[bytes] = defer.Deferred()
        if len(self.data) >= size:
            d.callback(self.data)
        elif self.is_closed:
            d.errback(AssertionError(f"closed after {self.data!r}, not {size} bytes"))
        else:
            self._waiting.append((size, d))
            d.addTimeout(timeout, reactor)
        return d

    def closed(self, timeout: float = TIMEOUT) -> defer.Deferred[None]:
        """Fires when the connection is closed; fails after C{timeout} seconds."""
        d: defer.Deferred[None] = defer.Deferred()
        if self.is_closed:
            d.callback(None)
        else:
            self._close_waiters.append(d)
            d.addTimeout(timeout, reactor)
        return d

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.is_closed = True
        waiting, self._waiting = self._waiting, []
        for _, d in waiting:
            d.errback(AssertionError(f"closed after {self.data!r}"))
        closers, self._close_waiters = self._close_waiters, []
        for closer in closers:
            closer.callback(None)


class IdentityAsUsernameTests(TestCase):
    """
    A TLS listener with identity-as-username (and a CA, client certificates
    optional), in this process on the real reactor: the connection's user name is
    the certificate's common name, and a client without one is refused in CONNACK.
    """

    timeout = 20

    @defer.inlineCallbacks
    def setUp(self) -> defer.Generator[defer.Deferred[Any], Any, None]:
        self.pki = make_pki(self)
        self.broker = Broker(clock=reactor)
        listener = Listener(
            f"tcp:0:interface={HOST}",
            tls=TLSSettings(self.pki.cert_path, self.pki.key_path, self.pki.ca_path),
            identity_as_username=True,
        )
        factory, _ = listener_factory(listener, self.broker, reactor)
        port = yield serverFromString(reactor, listener.endpoint).listen(factory)
        self.addCleanup(port.stopListening)
        self.port: int = port.getHost().port

    @defer.inlineCallbacks
    def exchange(
        self, packet: bytes, answer_size: int, cert: tuple[str, str] | None
    ) -> defer.Generator[defer.Deferred[Any], Any, tuple[_Collect, bytes]]:
        """Connect over TLS (with C{cert}, if any), send C{packet}, wait for the answer."""
        client_certificate = None
        if cert is not None:
            with open(cert[0], "rb") as c, open(cert[1], "rb") as k:
                client_certificate = PrivateCertificate.loadPEM(c.read() + k.read())
        options = optionsForClientTLS(
            "localhost",
            trustRoot=Certificate.loadPEM(self.pki.ca.cert_pem.bytes()),
            clientCertificate=client_certificate,
        )
        client = _Collect()
        yield connectProtocol(SSL4ClientEndpoint(reactor, HOST, self.port, options), client)
        self.addCleanup(client.closed)
        self.addCleanup(client.transport.abortConnection)
        client.transport.write(packet)
        answer = yield client.received(answer_size)
        return client, answer

    @defer.inlineCallbacks
    def test_common_name_is_username(self) -> defer.Generator[defer.Deferred[Any], Any, None]:
        """Whatever user name the CONNECT carries, the connection's is the CN."""
        cert = self.pki.client("device", "device-42")
        _, answer = yield self.exchange(_connect_with_username("dev", "spoofed"), 4, cert)
        self.assertEqual(answer, b"\x20\x02\x00\x00")
        link = self.broker.sessions["dev"].link
        assert link is not None
        self.assertEqual(link.username, "device-42")  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_no_certificate_refused_mqtt311(
        self,
    ) -> defer.Generator[defer.Deferred[Any], Any, None]:
        """A TLS client without a certificate: CONNACK return code 5, not authorized."""
        _, answer = yield self.exchange(_connect_with_username("anon", "anyone"), 4, None)
        self.assertEqual(answer, b"\x20\x02\x00\x05")
        self.assertNotIn("anon", self.broker.sessions)

    @defer.inlineCallbacks
    def test_no_certificate_refused_mqtt5(self) -> defer.Generator[defer.Deferred[Any], Any, None]:
        """The same for MQTT 5: CONNACK reason code 0x87 (not authorized)."""
        _, answer = yield self.exchange(_connect_with_username("anon5", "anyone", level=5), 4, None)
        self.assertEqual((answer[0], answer[3]), (0x20, 0x87))
        self.assertNotIn("anon5", self.broker.sessions)

    @defer.inlineCallbacks
    def test_refused_connection_closed(self) -> defer.Generator[defer.Deferred[Any], Any, None]:
        """
        After the refusing CONNACK the server closes the TLS connection (a TLS
        transport only shuts down once the protocol is no longer its producer).
        """
        client, _ = yield self.exchange(_connect_with_username("anon", "anyone"), 4, None)
        yield client.closed(5.0)
        self.assertEqual(client.data, b"\x20\x02\x00\x05")
