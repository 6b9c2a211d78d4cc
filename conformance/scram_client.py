"""
A SCRAM-SHA-256 client (RFC 5802 section 3, RFC 7677), written from the RFCs rather
than from this project's server, so that the conformance suite can drive any broker's
enhanced authentication and the unit tests can check the server against it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

__all__ = ["ScramClient"]


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, "sha256").digest()


class ScramClient:
    """One SCRAM-SHA-256 conversation, client side, without channel binding."""

    def __init__(self, user: str, password: str, nonce: str | None = None) -> None:
        self.password = password
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        name = user.replace("=", "=3D").replace(",", "=2C")
        self.bare = f"n={name},r={self.nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        """The client-first message: no channel binding, no authorization identity."""
        return b"n,," + self.bare.encode()

    def final(self, server_first: bytes) -> bytes:
        """The client-final message answering the server-first one."""
        text = server_first.decode()
        attributes = dict(part.split("=", 1) for part in text.split(","))
        nonce = attributes["r"]
        assert nonce.startswith(self.nonce) and nonce != self.nonce, text
        salt = base64.b64decode(attributes["s"])
        salted = hashlib.pbkdf2_hmac("sha256", self.password.encode(), salt, int(attributes["i"]))
        client_key = _hmac(salted, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        without_proof = f"c={base64.b64encode(b'n,,').decode()},r={nonce}"
        auth_message = f"{self.bare},{text},{without_proof}".encode()
        signature = _hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        self.server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def verify(self, server_final: bytes) -> bool:
        """Whether the server-final message proves the server knows the credentials."""
        return server_final == b"v=" + base64.b64encode(self.server_signature)
