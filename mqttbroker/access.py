"""
Who may connect and what they may do: the authenticator chain (C{--auth}), the
authorizers (C{--acl}) and client identifiers bound to identities.

Backends may answer at once or with a Deferred (a remote user store); this module
keeps the fast path free of Deferreds when every answer is a plain value, so that a
broker whose policy lives in memory pays no reactor turn per decision.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from mqttbroker.interfaces import AuthDecision, Credentials, IAuthenticator, IAuthorizer, Identity

__all__ = ["Policy", "authenticate", "client_id_allowed", "gather"]

_log = Logger()


def authenticate(
    authenticators: Sequence[IAuthenticator], credentials: Credentials
) -> AuthDecision | Deferred[AuthDecision]:
    """
    Ask each authenticator in turn until one allows or denies; when all ignore,
    deny. A backend that raises or whose Deferred fails denies (and is logged):
    authentication fails closed.
    """
    return _ask(list(authenticators), 0, credentials)


def _ask(
    authenticators: list[IAuthenticator], index: int, credentials: Credentials
) -> AuthDecision | Deferred[AuthDecision]:
    while index < len(authenticators):
        authenticator = authenticators[index]
        try:
            decision: Any = authenticator.authenticate(credentials)
        except Exception:
            _log.failure("Authenticator {name} failed", name=type(authenticator).__name__)
            return AuthDecision.deny("the authentication backend failed")
        if isinstance(decision, Deferred):
            return _later(decision, authenticators, index, credentials)
        if decision.outcome != "ignore":
            return decision  # type: ignore[no-any-return]
        index += 1
    return AuthDecision.deny("no authentication backend accepted these credentials")


def _later(
    decision: Deferred[AuthDecision],
    authenticators: list[IAuthenticator],
    index: int,
    credentials: Credentials,
) -> Deferred[AuthDecision]:
    """Go on with the chain once authenticator C{index} has answered."""
    name = type(authenticators[index]).__name__

    def decided(answer: AuthDecision) -> AuthDecision | Deferred[AuthDecision]:
        if answer.outcome == "ignore":
            return _ask(authenticators, index + 1, credentials)
        return answer

    def failed(failure: Failure) -> AuthDecision:
        _log.failure("Authenticator {name} failed", failure, name=name)
        return AuthDecision.deny("the authentication backend failed")

    return decision.addCallbacks(decided, failed)


def gather(answers: list[Any]) -> Deferred[list[Any]]:
    """All answers, once the Deferred ones among them have fired."""
    return gatherResults([a if isinstance(a, Deferred) else succeed(a) for a in answers])


class Policy:
    """
    The authorizers of a broker, all of which must allow an action (so that an ACL
    file and an HTTP hook can both have a say).
    """

    def __init__(self, authorizers: Sequence[IAuthorizer]) -> None:
        self.authorizers = list(authorizers)

    def may_publish(self, identity: Identity, topic: str, qos: int, retain: bool) -> Any:
        """True, False, or a Deferred firing with one of them."""
        return self._all(lambda a: a.may_publish(identity, topic, qos, retain))

    def may_subscribe(self, identity: Identity, topic_filter: str, qos: int) -> Any:
        """The QoS granted (the lowest cap of all), None to refuse, or a Deferred."""

        def ask(authorizer: IAuthorizer) -> Any:
            return authorizer.may_subscribe(identity, topic_filter, qos)

        answers = [_guarded(authorizer, ask, None) for authorizer in self.authorizers]

        def lowest(values: list[int | None]) -> int | None:
            if any(v is None for v in values):
                return None
            return min([qos, *(v for v in values if v is not None)])

        if any(isinstance(a, Deferred) for a in answers):
            return gather(answers).addCallback(lowest)
        return lowest(answers)

    def may_receive(self, identity: Identity | None, topic: str) -> bool:
        """Synchronous: every authorizer lets C{identity} read C{topic}."""
        if identity is None:
            return False
        for authorizer in self.authorizers:
            try:
                if not authorizer.may_receive(identity, topic):
                    return False
            except Exception:
                _log.failure("Authorizer {name} failed", name=type(authorizer).__name__)
                return False
        return True

    def _all(self, ask: Callable[[IAuthorizer], Any]) -> Any:
        answers = [_guarded(authorizer, ask, False) for authorizer in self.authorizers]
        if any(isinstance(a, Deferred) for a in answers):
            return gather(answers).addCallback(all)
        return all(answers)


def _guarded(authorizer: IAuthorizer, ask: Callable[[IAuthorizer], Any], refusal: Any) -> Any:
    """An authorizer's answer; a raise or a failed Deferred is a refusal (logged)."""
    try:
        answer = ask(authorizer)
    except Exception:
        _log.failure("An authorizer failed; refusing")
        return refusal
    if isinstance(answer, Deferred):

        def failed(failure: Failure) -> Any:
            _log.failure("An authorizer failed; refusing", failure)
            return refusal

        answer.addErrback(failed)
    return answer


def client_id_allowed(pattern: str, client_id: str, username: str | None) -> bool:
    """
    Whether C{client_id} fits C{pattern} for this user: C{%u} stands for the user
    name, C{*} for any run of characters, C{?} for one. A client without a user
    name fits no pattern that names it; a user name containing wildcard characters
    is matched literally, so it cannot widen the pattern.
    """
    if "%u" in pattern:
        if not username:
            return False
        escaped = "".join(f"[{c}]" if c in "*?[]" else c for c in username)
        pattern = pattern.replace("%u", escaped)
    return fnmatch.fnmatchcase(client_id, pattern)
