"""
Helpers for the integration tests: the broker as a subprocess, third-party clients
(paho-mqtt, Debian's mosquitto clients), and raw sockets for misbehaving clients.

Every helper that waits takes a timeout and fails (never hangs) when it runs out.
Every process or socket a test opens through L{IntegrationTestCase} is closed or
killed by a cleanup, whatever the test's outcome, and a failing test prints the
broker's log.

The raw MQTT packets below are built by hand, byte by byte, independently of the
broker's own codec, so that a bug there cannot hide itself.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from twisted.trial import itrial
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface import directlyProvides

__all__ = [
    "HOST",
    "REPO_ROOT",
    "TIMEOUT",
    "BrokerProcess",
    "IntegrationTestCase",
    "PahoClient",
    "RawClient",
    "connect_packet",
    "publish_packet",
    "require_executables",
    "subscribe_packet",
    "varint",
]

#: The repository root: where C{python -m twisted} finds the C{mqtt} plugin dropin.
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

HOST = "127.0.0.1"

#: Default bound on every wait, in seconds. Generous: it only matters on failure.
TIMEOUT = 10.0

_STARTING_ON = re.compile(r"MQTTServerFactory starting on (\d+)")


class BrokerError(Exception):
    """The broker subprocess did not start, or misbehaved as a process."""


def require_executables(*names: str) -> None:
    """Skip the calling test unless every named program is on C{PATH}."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        raise SkipTest(
            f"{', '.join(missing)} not found on PATH: install Debian's mosquitto-clients "
            "package (apt-get install mosquitto-clients) to run the interoperability tests"
        )


# -- the broker --------------------------------------------------------------------------


class BrokerProcess:
    """
    C{python -m twisted mqtt} in a subprocess, on an ephemeral 127.0.0.1 port.

    The broker is told to listen on port 0, so the kernel picks a free port and no
    other process can take it between choosing and binding; the port is read from
    the "starting on" line Twisted logs once the socket listens. Its whole log
    (stdout and stderr) goes to a temporary file, L{log_text}.

    @ivar port: the TCP port it listens on, once L{start} returned.
    """

    def __init__(self, *extra_args: str) -> None:
        self.extra_args = extra_args
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        handle, self.log_path = tempfile.mkstemp(prefix="mqttbroker-", suffix=".log")
        os.close(handle)
        #: The broker's own store (the default SQLite file), kept across restarts of
        #: this process object and removed with the log.
        self.data_dir = tempfile.mkdtemp(prefix="mqttbroker-data-")

    @property
    def argv(self) -> list[str]:
        """The broker's command line."""
        return [
            sys.executable,
            "-m",
            "twisted",
            "--log-format",
            "text",
            "mqtt",
            "--listen",
            f"tcp:0:interface={HOST}",
            "--data-dir",
            self.data_dir,
            *self.extra_args,
        ]

    def start(self, timeout: float = 30.0) -> None:
        """Start the broker and wait until it listens."""
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.argv,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = _STARTING_ON.search(self.log_text())
            if match:
                self.port = int(match.group(1))
                return
            if self.process.poll() is not None:
                raise BrokerError(
                    f"the broker exited with status {self.process.returncode} before "
                    f"listening; its log:\n{self.log_text()}"
                )
            time.sleep(0.02)
        raise BrokerError(
            f"the broker did not listen within {timeout} s; its log:\n{self.log_text()}"
        )

    def log_text(self) -> str:
        """Everything the broker logged so far."""
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return log.read()
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = TIMEOUT, count: int = 1) -> str:
        """
        Wait until the log holds C{count} matches of the regular expression
        C{pattern}; the last match. Raises L{AssertionError} on timeout.
        """
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            matches = list(regex.finditer(self.log_text()))
            if len(matches) >= count:
                return matches[count - 1].group(0)
            if time.monotonic() >= deadline:
                raise AssertionError(
                    f"the broker log has {len(matches)} of {count} lines matching "
                    f"{pattern!r} after {timeout} s"
                )
            time.sleep(0.02)

    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process is not None and self.process.poll() is None

    def problems(self) -> list[str]:
        """What is wrong with the process: exited on its own, or logged a traceback."""
        found = []
        if self.process is not None and self.process.poll() is not None:
            found.append(f"the broker exited by itself with status {self.process.returncode}")
        text = self.log_text()
        for marker in ("Traceback (most recent call last)", "Unhandled Error"):
            if marker in text:
                found.append(f"the broker log contains {marker!r}")
        return found

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate the broker (SIGTERM), and kill it if it does not exit in time."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def remove_log(self) -> None:
        """Delete the log file and the store."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.log_path)
        shutil.rmtree(self.data_dir, ignore_errors=True)


# -- paho-mqtt ---------------------------------------------------------------------------


class PahoClient:
    """
    A paho-mqtt client on its own network thread (C{loop_start}), with blocking,
    time-bounded helpers. Received messages go to L{messages}, a queue. The client
    never reconnects by itself: a test decides when a client comes back.
    """

    def __init__(
        self,
        port: int,
        client_id: str = "",
        *,
        protocol: int = mqtt.MQTTv311,
        clean_session: bool = True,
        session_expiry: int = 0,
        keepalive: int = 60,
        will: tuple[str, bytes, int, bool] | None = None,
        manual_ack: bool = False,
    ) -> None:
        self.port = port
        self.protocol = protocol
        self.clean_session = clean_session
        self.session_expiry = session_expiry
        self.keepalive = keepalive
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=None if protocol == mqtt.MQTTv5 else clean_session,
            protocol=protocol,
            reconnect_on_failure=False,
            manual_ack=manual_ack,
        )
        if will is not None:
            topic, payload, qos, retain = will
            self.client.will_set(topic, payload, qos, retain)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connected = threading.Event()
        self.disconnected = threading.Event()
        self.session_present: bool | None = None
        self.connect_reason: Any = None
        self.connack_properties: dict[str, Any] = {}
        self.disconnect_reason: Any = None
        self._condition = threading.Condition()
        self._subacks: dict[int, list[Any]] = {}
        self._loop_running = False
        client = self.client
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message

    # callbacks, on paho's network thread

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        self.session_present = flags.session_present
        self.connect_reason = reason
        self.connack_properties = props.json() if props is not None else {}
        self.connected.set()

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        self.disconnect_reason = reason
        self.disconnected.set()

    def _on_subscribe(self, client: Any, userdata: Any, mid: int, codes: Any, props: Any) -> None:
        with self._condition:
            self._subacks[mid] = list(codes)
            self._condition.notify_all()

    def _on_message(self, client: Any, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self.messages.put(message)

    # blocking helpers, on the test's thread

    def connect(self, timeout: float = TIMEOUT) -> PahoClient:
        """Connect, start the network thread, wait for a successful CONNACK."""
        kwargs: dict[str, Any] = {}
        if self.protocol == mqtt.MQTTv5:
            kwargs["clean_start"] = self.clean_session
            if self.session_expiry:
                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = self.session_expiry
                kwargs["properties"] = properties
        self.client.connect(HOST, self.port, keepalive=self.keepalive, **kwargs)
        self.client.loop_start()
        self._loop_running = True
        if not self.connected.wait(timeout):
            raise AssertionError(f"no CONNACK within {timeout} s")
        if self.connect_reason.is_failure:
            raise AssertionError(f"connection refused: {self.connect_reason}")
        return self

    def subscribe(self, topic: str, qos: int = 0, timeout: float = TIMEOUT) -> list[Any]:
        """Subscribe and wait for the SUBACK; the granted QoS / reason codes."""
        result, mid = self.client.subscribe(topic, qos)
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise AssertionError(f"subscribe failed locally: {mqtt.error_string(result)}")
        with self._condition:
            if not self._condition.wait_for(lambda: mid in self._subacks, timeout):
                raise AssertionError(f"no SUBACK for {topic!r} within {timeout} s")
            return self._subacks.pop(mid)

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 0,
        retain: bool = False,
        timeout: float = TIMEOUT,
    ) -> None:
        """
        Publish and wait until paho considers it done: written (QoS 0), PUBACK
        received (QoS 1), PUBCOMP received (QoS 2).
        """
        info = self.client.publish(topic, payload, qos, retain)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise AssertionError(f"publish to {topic!r} (QoS {qos}) not completed in {timeout} s")

    def next_message(self, timeout: float = TIMEOUT) -> mqtt.MQTTMessage:
        """The next message received; fails after C{timeout} seconds."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no message received within {timeout} s") from None

    def messages_until(
        self, topic: str, payload: bytes, timeout: float = TIMEOUT
    ) -> list[mqtt.MQTTMessage]:
        """
        Messages received up to and including the first with this topic and
        payload (a marker the test published last).
        """
        deadline = time.monotonic() + timeout
        received = []
        while True:
            message = self.next_message(max(0.0, deadline - time.monotonic()))
            received.append(message)
            if message.topic == topic and message.payload == payload:
                return received

    def wait_disconnected(self, timeout: float = TIMEOUT) -> None:
        """Wait until the connection ended (whichever side ended it)."""
        if not self.disconnected.wait(timeout):
            raise AssertionError(f"the client was not disconnected within {timeout} s")

    def disconnect(self, timeout: float = TIMEOUT) -> None:
        """Send DISCONNECT, wait until the connection closed, stop the thread."""
        self.client.disconnect()
        self.wait_disconnected(timeout)
        self.stop_loop()

    def stop_loop(self) -> None:
        """Stop the network thread (returns within about a second)."""
        if self._loop_running:
            self._loop_running = False
            self.client.loop_stop()

    def abort(self) -> None:
        """
        Vanish without DISCONNECT: stop the network thread, then close the socket
        with a TCP reset (SO_LINGER 0), as a crashed client or a dead link would.
        """
        self.stop_loop()
        sock = self.client.socket()
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

    def close(self) -> None:
        """Cleanup: end the connection and the thread, whatever state they are in."""
        if self._loop_running and self.connected.is_set() and not self.disconnected.is_set():
            self.client.disconnect()
            self.disconnected.wait(TIMEOUT)
        self.stop_loop()
        sock = self.client.socket()
        if sock is not None:
            sock.close()


# -- raw sockets and hand-made packets ------------------------------------------------------


def varint(value: int) -> bytes:
    """MQTT variable byte integer (remaining length)."""
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(data)) + data


def connect_packet(
    client_id: str,
    *,
    keepalive: int = 60,
    level: int = 4,
    clean: bool = True,
    will: tuple[str, bytes, int, bool] | None = None,
) -> bytes:
    """A CONNECT packet for protocol level 4 (3.1.1) or 5."""
    flags = 0x02 if clean else 0
    payload = _string(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        if level == 5:
            payload += b"\x00"  # no will properties
        payload += _string(topic) + _string(message)
    variable = _string("MQTT") + bytes([level, flags]) + struct.pack("!H", keepalive)
    if level == 5:
        variable += b"\x00"  # no properties
    body = variable + payload
    return b"\x10" + varint(len(body)) + body


def publish_packet(
    topic: str, payload: bytes, *, qos: int = 0, packet_id: int = 1, level: int = 4
) -> bytes:
    """A PUBLISH packet."""
    body = _string(topic)
    if qos:
        body += struct.pack("!H", packet_id)
    if level == 5:
        body += b"\x00"
    body += payload
    return bytes([0x30 | (qos << 1)]) + varint(len(body)) + body


def subscribe_packet(topic_filter: str, qos: int = 0, packet_id: int = 1, level: int = 4) -> bytes:
    """A SUBSCRIBE packet with one filter."""
    body = struct.pack("!H", packet_id) + (b"\x00" if level == 5 else b"")
    body += _string(topic_filter) + bytes([qos])
    return b"\x82" + varint(len(body)) + body


class RawClient:
    """A TCP connection that sends whatever bytes a test wants."""

    def __init__(self, port: int, timeout: float = TIMEOUT) -> None:
        self.sock = socket.create_connection((HOST, port), timeout=timeout)

    def send(self, data: bytes) -> None:
        """Send all of C{data}."""
        self.sock.sendall(data)

    def recv_exactly(self, size: int, timeout: float = TIMEOUT) -> bytes:
        """Exactly C{size} bytes; fails on timeout or if the connection ends first."""
        deadline = time.monotonic() + timeout
        data = b""
        while len(data) < size:
            self.sock.settimeout(max(0.001, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(size - len(data))
            except TimeoutError:
                raise AssertionError(f"got {data!r}, not {size} bytes, in {timeout} s") from None
            if not chunk:
                raise AssertionError(f"connection closed after {data!r}, expected {size} bytes")
            data += chunk
        return data

    def connect(self, client_id: str, **kwargs: Any) -> bytes:
        """Send CONNECT and read the CONNACK (3.1.1: 4 bytes); the CONNACK."""
        self.send(connect_packet(client_id, **kwargs))
        header = self.recv_exactly(2)
        return header + self.recv_exactly(header[1])

    def wait_closed(self, timeout: float = TIMEOUT) -> bytes:
        """
        Read until the server closes the connection (EOF or reset); everything
        received meanwhile. Fails if it is still open after C{timeout} seconds.
        """
        deadline = time.monotonic() + timeout
        data = b""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"the server did not close the connection within {timeout} s "
                    f"(received {data!r})"
                )
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                continue
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()


# -- other processes ---------------------------------------------------------------------------


def kill_process(process: subprocess.Popen[bytes]) -> None:
    """Kill a process if it still runs, and reap it."""
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=TIMEOUT)
    for stream in (process.stdout, process.stderr):
        if stream is not None:
            stream.close()


# -- the test case base -----------------------------------------------------------------------


class _FailureRecorder:
    """A test result proxy that notes whether the test failed."""

    def __init__(self, result: Any) -> None:
        self._result = result
        self.failed = False
        if itrial.IReporter.providedBy(result):
            directlyProvides(self, itrial.IReporter)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._result, name)

    def addError(self, test: Any, error: Any) -> None:
        self.failed = True
        self._result.addError(test, error)

    def addFailure(self, test: Any, failure: Any) -> None:
        self.failed = True
        self._result.addFailure(test, failure)


class IntegrationTestCase(SynchronousTestCase):
    """
    Base class: starts brokers and clients, and cleans every one of them up.

    After each test the broker must still run and its log must hold no traceback.
    A failing test prints the log of every broker it started to stderr (pytest
    shows it under "Captured stderr call").
    """

    def run(self, result: Any) -> None:
        self._brokers: list[BrokerProcess] = []
        recorder = _FailureRecorder(result)
        try:
            super().run(recorder)
        finally:
            for broker in self._brokers:
                if recorder.failed:
                    sys.stderr.write(
                        f"\n----- broker log ({' '.join(broker.argv[2:])}) -----\n"
                        f"{broker.log_text()}----- end of broker log -----\n"
                    )
                broker.remove_log()

    def start_broker(self, *extra_args: str) -> BrokerProcess:
        """Start a broker with these extra options; it is stopped after the test."""
        broker = BrokerProcess(*extra_args)
        self._brokers.append(broker)
        self.addCleanup(self._stop_broker, broker)
        broker.start()
        return broker

    def _stop_broker(self, broker: BrokerProcess) -> None:
        problems = broker.problems()
        broker.stop()
        if problems:
            self.fail("; ".join(problems))

    def paho(self, broker: BrokerProcess, client_id: str = "", **kwargs: Any) -> PahoClient:
        """A connected paho client; closed after the test."""
        client = PahoClient(broker.port, client_id, **kwargs)
        self.addCleanup(client.close)
        return client.connect()

    def raw(self, broker: BrokerProcess) -> RawClient:
        """A raw TCP connection to the broker; closed after the test."""
        client = RawClient(broker.port)
        self.addCleanup(client.close)
        return client

    def spawn(self, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start a program with piped output; killed after the test if still running."""
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self.addCleanup(kill_process, process)
        return process

    def run_program(self, argv: Sequence[str], timeout: float = TIMEOUT) -> tuple[int, str, str]:
        """Run a program to its end (killed after C{timeout}); (status, stdout, stderr)."""
        process = self.spawn(argv)
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
            raise AssertionError(
                f"{' '.join(argv)} did not finish within {timeout} s; "
                f"stdout {out!r}, stderr {err!r}"
            ) from None
        return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")
