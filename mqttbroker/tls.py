"""
TLS for listeners: server certificates with their chain, client certificates checked
against a CA, certificate reload without dropping connections, and the identity a
client certificate carries.

L{ReloadableTLS} is a context factory for Twisted's TLS wrapper: every new handshake
asks it for the current OpenSSL context, so replacing the context (on SIGHUP, or when
the files change on disk) changes what new connections get while established ones
keep the session they negotiated.
"""

from __future__ import annotations

import os
import re

from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet.interfaces import IOpenSSLContextFactory
from twisted.internet.ssl import Certificate, CertificateOptions, KeyPair, TLSVersion
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mqttbroker.listeners import TLSSettings

__all__ = ["ReloadableTLS", "TLSConfigurationError", "certificate_identity", "tls_failure"]

_log = Logger()

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?\r?\n-----END CERTIFICATE-----", re.DOTALL
)


class TLSConfigurationError(ValueError):
    """Certificate, key or CA files that cannot be used, and why."""


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise TLSConfigurationError(f"{what} {path}: {error.strerror or error}") from None


def _certificates(path: str, what: str) -> list[Certificate]:
    data = _read(path, what)
    blocks = _PEM_CERTIFICATE.findall(data)
    if not blocks:
        raise TLSConfigurationError(f"{what} {path}: no PEM certificate in it")
    try:
        return [Certificate.loadPEM(block) for block in blocks]
    except Exception as error:  # pyOpenSSL raises its own Error for bad PEM
        raise TLSConfigurationError(f"{what} {path}: {error}") from None


def build_options(settings: TLSSettings) -> CertificateOptions:
    """
    The Twisted TLS options for C{settings}: TLS 1.2 or later, Twisted's cipher
    defaults (forward-secret AEAD suites), the whole certificate chain, and client
    certificates verified against C{settings.ca} when it is given.

    @raise TLSConfigurationError: a file is missing or unusable, or the key does not
        belong to the certificate.
    """
    chain = _certificates(settings.cert, "certificate")
    key_pem = _read(settings.key or settings.cert, "private key")
    try:
        key = KeyPair.load(key_pem, crypto.FILETYPE_PEM)
    except Exception as error:
        raise TLSConfigurationError(
            f"private key {settings.key or settings.cert}: {error or 'no PEM private key'}"
        ) from None
    verify: dict[str, object] = {}
    if settings.ca:
        verify = {
            "verify": True,
            "caCerts": [c.original for c in _certificates(settings.ca, "CA file")],
            "requireCertificate": settings.require_client_cert,
        }
    try:
        options = CertificateOptions(
            privateKey=key.original,
            certificate=chain[0].original,
            extraCertChain=[c.original for c in chain[1:]],
            raiseMinimumTo=TLSVersion.TLSv1_2,
            **verify,  # type: ignore[arg-type]
        )
        # Fails now, at start or reload, rather than at the first handshake.
        options.getContext()
    except SSL.Error as error:
        raise TLSConfigurationError(
            f"certificate {settings.cert} with key {settings.key or settings.cert}: {error}"
        ) from None
    return options


@implementer(IOpenSSLContextFactory)
class ReloadableTLS:
    """
    The TLS context of one listener, rebuilt from its files on L{reload}.

    An old-style Twisted context factory (C{getContext}, declared as
    L{IOpenSSLContextFactory} so that Twisted does not warn about it): Twisted's TLS
    wrapper asks for the context at every new connection.
    """

    def __init__(self, settings: TLSSettings) -> None:
        self.settings = settings
        self._options = build_options(settings)
        self._stamp = self._files_stamp()

    def getContext(self) -> SSL.Context:  # noqa: N802 (Twisted's name)
        context: SSL.Context = self._options.getContext()
        return context

    def _files(self) -> list[str]:
        s = self.settings
        return [path for path in (s.cert, s.key, s.ca) if path]

    def _files_stamp(self) -> list[tuple[float, int] | None]:
        stamp: list[tuple[float, int] | None] = []
        for path in self._files():
            try:
                info = os.stat(path)
            except OSError:
                stamp.append(None)
            else:
                stamp.append((info.st_mtime, info.st_size))
        return stamp

    def reload(self) -> bool:
        """
        Read the files again. New handshakes use the new certificate; established
        connections are untouched. When the files are unusable the old context stays
        (and the reason is logged): a bad deploy must not take the listener down.
        """
        self._stamp = self._files_stamp()
        try:
            options = build_options(self.settings)
        except TLSConfigurationError as error:
            _log.error("TLS reload failed, keeping the previous certificate: {error}", error=error)
            return False
        self._options = options
        _log.info("TLS certificate reloaded from {cert}", cert=self.settings.cert)
        return True

    def reload_if_changed(self) -> bool:
        """L{reload} if any of the files changed (time or size) since it was read."""
        if self._files_stamp() == self._stamp:
            return False
        return self.reload()


def certificate_identity(transport: object) -> str | None:
    """
    The common name of the client certificate verified on C{transport}, or None (no
    TLS, no certificate, or a name that is not valid text).
    """
    get_certificate = getattr(transport, "getPeerCertificate", None)
    if get_certificate is None:
        return None
    try:
        certificate = get_certificate()
    except Exception:  # not a TLS transport after all, or the handshake is not done
        return None
    if certificate is None:
        return None
    try:
        # cryptography's view: pyOpenSSL's X509.get_subject is deprecated.
        subject = certificate.to_cryptography().subject
        names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    except Exception:  # not a certificate, or a name that is not valid text
        return None
    if not names or not isinstance(names[0].value, str):
        return None
    return names[0].value or None


def tls_failure(reason: Failure) -> str | None:
    """What went wrong in a TLS handshake that ended a connection, or None."""
    if not reason.check(SSL.Error):
        return None
    value = reason.value
    errors = value.args[0] if value is not None and value.args else None
    if (
        isinstance(errors, list)
        and errors
        and all(isinstance(e, tuple) and len(e) == 3 for e in errors)
    ):
        return "; ".join(str(e[2]) for e in errors)
    return str(value) or "unknown TLS error"
