"""
Configuration of the conformance suite: which broker it talks to.

With no option the suite starts this project's broker (C{python -m twisted mqtt})
on a free loopback port and stops it afterwards. C{--broker HOST:PORT} points it at
any running broker instead, and C{--protocol 4|5} chooses the MQTT version spoken.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class BrokerUnderTest:
    """Where the broker under test listens, and which protocol level to speak."""

    host: str
    port: int
    protocol: int


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "MQTT conformance suite")
    group.addoption(
        "--broker",
        default=None,
        metavar="HOST:PORT",
        help="test a running broker instead of starting this project's broker",
    )
    group.addoption(
        "--protocol",
        default="4",
        choices=["4", "5"],
        help="MQTT protocol level to speak: 4 (3.1.1) or 5 (5.0); default 4",
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _wait_until_listening(host: str, port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the broker exited early with status {process.returncode}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the broker did not listen on {host}:{port} within 30 s")


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerUnderTest]:
    """The broker under test, started by the suite unless --broker names one."""
    protocol = int(request.config.getoption("--protocol"))
    given = request.config.getoption("--broker")
    if given:
        host, _, port = given.rpartition(":")
        yield BrokerUnderTest(host or "127.0.0.1", int(port), protocol)
        return
    port = _free_port()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "twisted",
            "--log-format",
            "text",
            "mqtt",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
        ],
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_until_listening("127.0.0.1", port, process)
        yield BrokerUnderTest("127.0.0.1", port, protocol)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
