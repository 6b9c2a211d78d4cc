"""
The authenticators that need no file: anonymous clients, and TLS client
certificates.

With no C{--auth} at all, every client may connect. Once any authenticator is
configured, a client that no authenticator allows is refused, anonymous ones
included; C{--auth anonymous} in the chain lets clients without a user name in.
"""

from __future__ import annotations

from collections.abc import Mapping

from zope.interface import implementer

from mqttbroker.interfaces import AuthDecision, Credentials, IAuthenticator

__all__ = ["AnonymousAuthenticator", "CertificateAuthenticator", "anonymous", "certificate"]


@implementer(IAuthenticator)
class AnonymousAuthenticator:
    """Allows clients that present no user name; has no opinion on the others."""

    def authenticate(self, credentials: Credentials) -> AuthDecision:
        if credentials.username is None:
            return AuthDecision.allow()
        return AuthDecision.ignore()


@implementer(IAuthenticator)
class CertificateAuthenticator:
    """
    Allows clients whose TLS certificate was verified (against the listener's
    C{ca=}), known by the certificate's common name; no opinion on the others.
    """

    def authenticate(self, credentials: Credentials) -> AuthDecision:
        if credentials.certificate_identity:
            return AuthDecision.allow(credentials.certificate_identity)
        return AuthDecision.ignore()


def _no_parameters(name: str, parameters: Mapping[str, str]) -> None:
    if parameters:
        raise ValueError(f"{name} takes no parameters, got {', '.join(sorted(parameters))}")


def anonymous(parameters: Mapping[str, str]) -> AnonymousAuthenticator:
    _no_parameters("anonymous", parameters)
    return AnonymousAuthenticator()


def certificate(parameters: Mapping[str, str]) -> CertificateAuthenticator:
    _no_parameters("certificate", parameters)
    return CertificateAuthenticator()
