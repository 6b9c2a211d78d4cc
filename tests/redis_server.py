"""
A real C{redis-server} for the tests: on a free 127.0.0.1 port, in a temporary
directory, with no RDB snapshots (C{--save ""}) and an append-only file synced on
every write (C{--appendonly yes --appendfsync always}), so that a test can kill it
and restart it from its AOF, on the same port, and see what it had acknowledged.

Every wait is bounded; L{RedisServer.stop} (registered as a cleanup by
L{RedisServer.for_test}) always leaves no process and no directory behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from twisted.trial.unittest import SkipTest, SynchronousTestCase

__all__ = ["RedisServer", "require_redis"]

HOST = "127.0.0.1"

#: Bound on starting or stopping the server, in seconds.
TIMEOUT = 10.0


def require_redis() -> str:
    """The path of redis-server; skips the calling test when it or txredisapi is missing."""
    path = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    if path is None:
        raise SkipTest(
            "redis-server not found: install Debian's redis-server package"
            " (apt-get install redis-server) to run the Redis store tests"
        )
    try:
        import txredisapi  # type: ignore[import-untyped,import-not-found,unused-ignore]  # noqa: F401
    except ImportError:
        raise SkipTest("txredisapi is not installed: pip install 'mqttbroker[redis]'") from None
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


class RedisServer:
    """
    One redis-server process at a time, always on the same port and data directory.

    @ivar appendfsync: the C{appendfsync} policy it runs with.
    """

    def __init__(self, appendfsync: str = "always") -> None:
        self.executable = require_redis()
        self.appendfsync = appendfsync
        self.directory = tempfile.mkdtemp(prefix="mqttbroker-redis-")
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @classmethod
    def for_test(cls, case: SynchronousTestCase, appendfsync: str = "always") -> RedisServer:
        """A started server that C{case} stops and removes when it ends."""
        server = cls(appendfsync)
        case.addCleanup(server.remove)
        server.start()
        return server

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    @property
    def log_path(self) -> str:
        return os.path.join(self.directory, "redis.log")

    def log_text(self) -> str:
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as log:
                return log.read()
        except OSError:
            return ""

    def start(self) -> None:
        """Start it (again, from its AOF) and wait until it answers PING."""
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [
                self.executable,
                "--port", str(self.port),
                "--bind", HOST,
                "--dir", self.directory,
                "--save", "",
                "--appendonly", "yes",
                "--appendfsync", self.appendfsync,
                "--daemonize", "no",
                "--logfile", self.log_path,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"redis-server exited at start:\n{self.log_text()}")
            if self.ping():
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer within {TIMEOUT} s:\n{self.log_text()}")

    def ping(self) -> bool:
        """Whether it answers PING (loading its AOF, it answers -LOADING)."""
        try:
            return self.command(b"PING") == b"+PONG\r\n"
        except OSError:
            return False

    def command(self, *args: bytes, db: int = 0) -> bytes:
        """
        One command over a raw socket, in database C{db}; its raw answer (enough
        for simple replies).
        """
        request = b"*%d\r\n" % len(args) + b"".join(
            b"$%d\r\n%s\r\n" % (len(arg), arg) for arg in args
        )
        select = b"*2\r\n$6\r\nSELECT\r\n$%d\r\n%d\r\n" % (len(str(db)), db)
        with socket.create_connection((HOST, self.port), timeout=2) as connection:
            connection.sendall(select + request)
            answer = b""
            while True:
                selected, _, rest = answer.partition(b"\r\n")
                if _ and selected != b"+OK":
                    return answer  # SELECT refused (e.g. -LOADING)
                if _ and rest.endswith(b"\r\n"):
                    return rest
                chunk = connection.recv(65536)
                if not chunk:
                    return rest
                answer += chunk

    def stop(self) -> None:
        """Shut it down cleanly (SIGTERM); SIGKILL if it takes too long."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(TIMEOUT)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: no shutdown, what is not in the AOF is gone."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait(TIMEOUT)
        self.process = None

    def pause(self) -> None:
        """SIGSTOP: connected but silent, like a hung server."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def remove(self) -> None:
        """Stop it (a paused server is resumed first) and delete its directory."""
        if self.process is not None:
            with contextlib.suppress(OSError):
                os.kill(self.process.pid, signal.SIGCONT)
            self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)
