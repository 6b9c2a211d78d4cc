# -*- test-case-name: tests.test_scram -*-
"""
SCRAM-SHA-256 (RFC 5802, RFC 7677) as an MQTT 5 enhanced authentication method.

The client proves it knows the password without sending it, and the server proves
it knows the client's credentials; the server keeps only salted, derived keys
(StoredKey, ServerKey), never the password. Over MQTT 5 (5.0 section 4.12) the
client-first message rides in CONNECT's Authentication Data, the server-first in an
AUTH (0x18), the client-final in the client's AUTH (0x18), and the server-final in
the CONNACK (or, when re-authenticating, in an AUTH 0x00).

Credentials lines, one user per line, as C{python -m mqttbroker.scram NAME} prints
them (the password is read from standard input)::

    NAME:SALT_BASE64:ITERATIONS:STORED_KEY_BASE64:SERVER_KEY_BASE64
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from zope.interface import implementer

from mqttbroker.interfaces import (
    AuthResult,
    IAuthenticationExchange,
    IAuthenticationMethod,
)

__all__ = [
    "SCRAM_SHA_256",
    "ScramCredentials",
    "ScramSha256",
    "load_credentials",
]

SCRAM_SHA_256 = "SCRAM-SHA-256"
_HASH = "sha256"
#: RFC 7677 asks for at least 4096 iterations.
DEFAULT_ITERATIONS = 4096


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, _HASH).digest()


def _h(data: bytes) -> bytes:
    return hashlib.new(_HASH, data).digest()


@dataclass(frozen=True)
class ScramCredentials:
    """What the server keeps of one user's password (RFC 5802 section 3)."""

    salt: bytes
    iterations: int
    stored_key: bytes
    server_key: bytes

    @classmethod
    def from_password(
        cls, password: str, salt: bytes | None = None, iterations: int = DEFAULT_ITERATIONS
    ) -> ScramCredentials:
        """Derive the stored keys from a password (which is then not kept)."""
        salt = os.urandom(16) if salt is None else salt
        salted = hashlib.pbkdf2_hmac(_HASH, password.encode("utf-8"), salt, iterations)
        client_key = _hmac(salted, b"Client Key")
        return cls(salt, iterations, _h(client_key), _hmac(salted, b"Server Key"))

    def to_line(self, name: str) -> str:
        """This user's credentials line."""
        b64 = base64.b64encode
        return ":".join(
            [
                name,
                b64(self.salt).decode(),
                str(self.iterations),
                b64(self.stored_key).decode(),
                b64(self.server_key).decode(),
            ]
        )


def load_credentials(lines: Iterable[str]) -> dict[str, ScramCredentials]:
    """
    Parse credentials lines (blank lines and C{#} comments skipped).

    @raise ValueError: a line is malformed, naming its number.
    """
    users: dict[str, ScramCredentials] = {}
    for number, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(":", 4)
        try:
            name, salt, iterations, stored, server = parts
            credentials = ScramCredentials(
                base64.b64decode(salt, validate=True),
                int(iterations),
                base64.b64decode(stored, validate=True),
                base64.b64decode(server, validate=True),
            )
        except ValueError:
            raise ValueError(
                f"line {number}: expected NAME:SALT:ITERATIONS:STORED_KEY:SERVER_KEY"
            ) from None
        if not name or credentials.iterations < 1 or len(credentials.stored_key) != 32:
            raise ValueError(f"line {number}: malformed SCRAM-SHA-256 credentials")
        users[name] = credentials
    return users


def _attributes(message: str) -> dict[str, str]:
    """The comma-separated C{k=v} attributes of a SCRAM message."""
    result: dict[str, str] = {}
    for part in message.split(","):
        key, sep, value = part.partition("=")
        if not sep or len(key) != 1:
            raise ValueError(f"malformed SCRAM attribute {part!r}")
        result.setdefault(key, value)
    return result


def _username(escaped: str) -> str:
    """RFC 5802 5.1: '=2C' and '=3D' stand for ',' and '='; any other '=' is an error."""
    if "=" in escaped.replace("=2C", "").replace("=3D", ""):
        raise ValueError("malformed escaping in the SCRAM user name")
    return escaped.replace("=2C", ",").replace("=3D", "=")


@implementer(IAuthenticationExchange)
class _ScramExchange:
    """One SCRAM-SHA-256 conversation with one client."""

    def __init__(
        self,
        users: Mapping[str, ScramCredentials],
        decoy_salt: bytes,
        nonce: Callable[[], str],
    ) -> None:
        self._users = users
        self._decoy_salt = decoy_salt
        self._make_nonce = nonce
        self._step = 0
        self._user: str | None = None
        self._credentials: ScramCredentials | None = None
        self._nonce = ""
        self._gs2_header = ""
        self._client_first_bare = ""
        self._server_first = ""

    def step(self, data: bytes) -> AuthResult:
        try:
            text = data.decode("utf-8")
            if self._step == 0:
                return self._client_first(text)
            if self._step == 1:
                return self._client_final(text)
        except (UnicodeDecodeError, ValueError) as error:
            return AuthResult.failed(f"SCRAM-SHA-256: {error}")
        return AuthResult.failed("SCRAM-SHA-256: the exchange is already over")

    def _client_first(self, text: str) -> AuthResult:
        if not text:
            raise ValueError("no client-first message in the Authentication Data")
        # gs2-header: "n,," (no channel binding) or "y,,"; "p=..." needs binding.
        flag, _, rest = text.partition(",")
        authzid, _, bare = rest.partition(",")
        if flag not in ("n", "y"):
            raise ValueError("channel binding is not supported")
        if authzid:
            raise ValueError("an authorization identity is not supported")
        attributes = _attributes(bare)
        if "m" in attributes:
            raise ValueError("mandatory extensions are not supported")
        user = _username(attributes.get("n", ""))
        client_nonce = attributes.get("r", "")
        if not user or not client_nonce:
            raise ValueError("the client-first message needs n= and r=")
        self._gs2_header = f"{flag},{authzid},"
        self._client_first_bare = bare
        self._user = user
        credentials = self._users.get(user)
        if credentials is None:
            # An unknown user gets a plausible challenge and fails at the end, so
            # that the exchange does not tell which user names exist.
            # The decoy salt is stable per user name, as a real one would be, and no
            # key derivation runs for it (that would cost reactor time per attempt).
            decoy = hashlib.sha256(self._decoy_salt + user.encode()).digest()[:16]
            credentials = ScramCredentials(decoy, DEFAULT_ITERATIONS, bytes(32), bytes(32))
            self._credentials = None
        else:
            self._credentials = credentials
        self._nonce = client_nonce + self._make_nonce()
        salt = base64.b64encode(credentials.salt).decode()
        self._server_first = f"r={self._nonce},s={salt},i={credentials.iterations}"
        self._step = 1
        return AuthResult.more(self._server_first.encode())

    def _client_final(self, text: str) -> AuthResult:
        self._step = 2
        without_proof, sep, proof_part = text.rpartition(",p=")
        if not sep:
            raise ValueError("the client-final message has no proof")
        attributes = _attributes(without_proof)
        binding = base64.b64encode(self._gs2_header.encode()).decode()
        if attributes.get("c") != binding:
            raise ValueError("channel binding data does not match")
        if attributes.get("r") != self._nonce:
            raise ValueError("the nonce does not match")
        proof = base64.b64decode(proof_part, validate=True)
        credentials = self._credentials
        auth_message = ",".join(
            [self._client_first_bare, self._server_first, without_proof]
        ).encode()
        if credentials is None or len(proof) != 32:
            return AuthResult.failed("SCRAM-SHA-256: authentication failed")
        signature = _hmac(credentials.stored_key, auth_message)
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(_h(client_key), credentials.stored_key):
            return AuthResult.failed("SCRAM-SHA-256: authentication failed")
        server_signature = _hmac(credentials.server_key, auth_message)
        final = b"v=" + base64.b64encode(server_signature)
        return AuthResult.succeeded(final, self._user)


@implementer(IAuthenticationMethod)
class ScramSha256:
    """
    The SCRAM-SHA-256 method over a table of users.

    @ivar users: user name -> credentials; may be replaced to reload.
    """

    name = SCRAM_SHA_256

    def __init__(
        self,
        users: Mapping[str, ScramCredentials],
        nonce: Callable[[], str] = lambda: secrets.token_urlsafe(18),
    ) -> None:
        self.users = users
        self._nonce = nonce
        self._decoy_salt = os.urandom(16)

    @classmethod
    def from_file(cls, path: str) -> ScramSha256:
        """Load the users from a credentials file."""
        with open(path, encoding="utf-8") as lines:
            return cls(load_credentials(lines))

    def begin(self, client_id: str) -> IAuthenticationExchange:
        return _ScramExchange(self.users, self._decoy_salt, self._nonce)


def main(argv: list[str] | None = None) -> int:
    """C{python -m mqttbroker.scram NAME}: print a credentials line for NAME."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or ":" in args[0]:
        print(
            "usage: python -m mqttbroker.scram NAME  (password on standard input)", file=sys.stderr
        )
        return 2
    password = sys.stdin.readline().rstrip("\n")
    if not password:
        print("no password on standard input", file=sys.stderr)
        return 2
    print(ScramCredentials.from_password(password).to_line(args[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
