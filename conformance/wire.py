"""
A blocking MQTT client for the conformance tests: raw bytes or codec packets out,
decoded packets in, every wait bounded by a timeout.

It uses this project's codec to build and read packets, but a test that needs bytes
the codec would refuse to produce (malformed or protocol-violating packets) sends them
raw with L{WireClient.send_bytes}.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Collection
from typing import TypeVar

from mqttbroker.codec import (
    Connack,
    Connect,
    Decoder,
    Disconnect,
    Packet,
    Properties,
    RemoteProtocolError,
    Will,
    encode,
)

__all__ = ["DEFAULT_TIMEOUT", "ClosedError", "WireClient"]

#: How long a test waits for something that should come.
DEFAULT_TIMEOUT = 5.0
#: How long a test waits to be fairly sure something does not come.
QUIET_TIME = 0.5

P = TypeVar("P")


class ClosedError(Exception):
    """The broker closed the connection while packets were expected."""


class WireClient:
    """
    One TCP connection to the broker under test.

    @ivar level: the protocol level spoken (3, 4 or 5).
    @ivar closed: whether the broker closed the connection.
    """

    def __init__(self, host: str, port: int, level: int, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.level = level
        self.timeout = timeout
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._decoder = Decoder(protocol_level=level)
        self._pending: list[Packet] = []
        self.closed = False

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close our side."""
        with contextlib.suppress(OSError):
            self.sock.close()

    # -- sending -------------------------------------------------------------------

    def send(self, *packets: Packet) -> None:
        """Encode and send packets at this client's protocol level."""
        self.send_bytes(b"".join(encode(p, self.level) for p in packets))

    def send_bytes(self, data: bytes) -> None:
        """Send raw bytes (a closed connection is noted, not raised)."""
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def connect(
        self,
        client_id: str,
        clean_start: bool = True,
        keep_alive: int = 0,
        will: Will | None = None,
        properties: Properties | None = None,
        username: str | None = None,
        password: bytes | None = None,
    ) -> Connack:
        """Send CONNECT and return the CONNACK (which must be the first answer)."""
        self.send(
            Connect(
                client_id,
                self.level,
                clean_start,
                keep_alive,
                username,
                password,
                will,
                properties or {},
            )
        )
        return self.expect(Connack)

    # -- receiving -----------------------------------------------------------------

    def _read(self, deadline: float) -> bool:
        """Read once; False when the deadline passed with nothing."""
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return False
        except OSError:
            data = b""
        if not data:
            self.closed = True
            raise ClosedError("the broker closed the connection")
        try:
            self._pending.extend(self._decoder.feed(data))
        except RemoteProtocolError as error:
            raise AssertionError(f"the broker sent a malformed packet: {error}") from None
        return True

    def receive(self, timeout: float | None = None) -> Packet:
        """The next packet; fails after C{timeout} seconds or on close."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._pending:
            if not self._read(deadline):
                raise AssertionError(
                    f"no packet from the broker within {timeout or self.timeout} s"
                )
        return self._pending.pop(0)

    def expect(self, kind: type[P], timeout: float | None = None) -> P:
        """The next packet, which must be of type C{kind}."""
        packet = self.receive(timeout)
        if not isinstance(packet, kind):
            raise AssertionError(f"expected {kind.__name__}, got {packet!r}")
        return packet

    def receive_until(self, kind: type[P], timeout: float | None = None) -> tuple[list[Packet], P]:
        """Packets up to the first of type C{kind}, and that one."""
        before: list[Packet] = []
        while True:
            packet = self.receive(timeout)
            if isinstance(packet, kind):
                return before, packet
            before.append(packet)

    def expect_nothing(self, within: float = QUIET_TIME) -> None:
        """Nothing arrives for C{within} seconds (and the connection stays open)."""
        deadline = time.monotonic() + within
        while self._read(deadline):
            pass
        if self._pending:
            raise AssertionError(f"unexpected packets: {self._pending!r}")

    def expect_closed(self, timeout: float | None = None) -> list[Packet]:
        """
        The broker closes the connection within C{timeout}; the packets it sent
        before closing (a CONNACK or DISCONNECT with a reason code, say).
        """
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        try:
            while True:
                if not self._read(deadline):
                    raise AssertionError("the broker did not close the connection")
        except ClosedError:
            pass
        packets, self._pending = self._pending, []
        return packets

    def expect_closed_for_error(
        self, codes: Collection[int] | None = None, first: Packet | None = None
    ) -> None:
        """
        After a malformed packet or a protocol violation the broker closes the
        connection. An MQTT 5 broker may send one DISCONNECT first, with an error
        reason code (one of C{codes} when given); an MQTT 3.1.1 broker sends nothing
        (it has no DISCONNECT to send). C{first} is a packet already received.
        """
        packets = ([first] if first is not None else []) + self.expect_closed()
        if self.level < 5:
            assert packets == [], f"an MQTT 3.1.1 server sends nothing here, got {packets!r}"
            return
        assert len(packets) <= 1, f"expected at most a DISCONNECT, got {packets!r}"
        for packet in packets:
            assert isinstance(packet, Disconnect), f"expected only a DISCONNECT, got {packet!r}"
            code = packet.reason_code
            assert code >= 0x80, f"DISCONNECT reason code 0x{code:02X} is not an error"
            if codes is not None:
                assert code in codes, f"DISCONNECT reason code 0x{code:02X}, expected one of " + (
                    ", ".join(f"0x{c:02X}" for c in codes)
                )
