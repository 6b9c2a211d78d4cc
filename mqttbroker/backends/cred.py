"""
Twisted's own authentication (C{twisted.cred}) as an authenticator: any
C{ICredentialsChecker} for user names and passwords, such as Twisted's
C{FilePasswordDB} or a checker an application already has, can guard the broker.

Why the broker's seam is not C{twisted.cred} itself: a portal answers "who is
this" with an avatar, while a broker needs three answers (allow, deny, no opinion,
so that backends can be chained), the client id, address and certificate next to
the password, and a synchronous path for in-memory stores. Checkers fit the
password part exactly, so they are reused through this adapter rather than
rewritten.
"""

from __future__ import annotations

from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin, UnhandledCredentials
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure
from zope.interface import implementer

from mqttbroker.interfaces import AuthDecision, Credentials, IAuthenticator

__all__ = ["CheckerAuthenticator"]


@implementer(IAuthenticator)
class CheckerAuthenticator:
    """
    Asks a C{twisted.cred} checker about the CONNECT's user name and password. The
    checker's avatar id becomes the user name; a client without a user name is left
    to the next authenticator.
    """

    def __init__(self, checker: ICredentialsChecker) -> None:
        self.checker = checker

    def authenticate(self, credentials: Credentials) -> AuthDecision | Deferred[AuthDecision]:
        if credentials.username is None:
            return AuthDecision.ignore()
        attempt = UsernamePassword(
            credentials.username.encode("utf-8"), credentials.password or b""
        )
        checked: Deferred[object] = maybeDeferred(self.checker.requestAvatarId, attempt)
        return checked.addCallbacks(self._allowed, self._refused)

    @staticmethod
    def _allowed(avatar_id: object) -> AuthDecision:
        if isinstance(avatar_id, bytes):
            avatar_id = avatar_id.decode("utf-8", "replace")
        return AuthDecision.allow(str(avatar_id))

    @staticmethod
    def _refused(failure: Failure) -> AuthDecision:
        if failure.check(UnhandledCredentials):
            return AuthDecision.ignore()
        if failure.check(UnauthorizedLogin):
            return AuthDecision.deny("wrong user name or password", bad_credentials=True)
        return AuthDecision.deny(f"the credentials checker failed: {failure.getErrorMessage()}")
