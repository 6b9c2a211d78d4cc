"""
Configuration of the conformance suite: which broker it talks to.

With no option the suite starts this project's broker (C{python -m twisted mqtt})
on a free loopback port and stops it afterwards. C{--broker HOST:PORT} points it at
any running broker instead, and C{--protocol 4|5} chooses the MQTT version spoken.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from conformance.wire import WireClient


@dataclass(frozen=True)
class BrokerUnderTest:
    """Where the broker under test listens, and which protocol level to speak."""

    host: str
    port: int
    protocol: int


@dataclass(frozen=True)
class WebSocketBrokerUnderTest:
    """Where the WebSocket listener of the broker under test is: host, port, HTTP path."""

    host: str
    port: int
    path: str


def _ws_address(given: str) -> WebSocketBrokerUnderTest:
    """C{HOST:PORT[/PATH]} (the path defaults to /mqtt)."""
    address, slash, path = given.partition("/")
    host, _, port = address.rpartition(":")
    return WebSocketBrokerUnderTest(host or "127.0.0.1", int(port), slash + path or "/mqtt")


#: The WebSocket listener (HOST:PORT/PATH) to give the broker the suite starts itself.
_OWN_WEBSOCKET = pytest.StashKey[str]()


#: The SCRAM-SHA-256 account the suite creates on the broker it starts itself.
SCRAM_ACCOUNT = "conformance:secret"
#: A filter the broker the suite starts refuses: a shared subscription whose share
#: name holds a wildcard ([MQTT-4.8.2-2]).
OWN_REFUSED_FILTER = "$share/g+/refused"
#: The ACL of the restricted broker (mosquitto's acl_file syntax, which both read):
#: anonymous clients may use the suite's topics, and read but not write refused/.
RESTRICTED_ACL = "topic readwrite conf/#\ntopic read refused/#\n"
#: The Response Information the broker the suite starts gives (%c: the client id).
RESPONSE_INFORMATION = "reply/%c/"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("conformance", "MQTT conformance suite")
    group.addoption(
        "--report",
        default=None,
        metavar="PATH",
        help="write the Markdown conformance report (catalogue joined with results) here",
    )
    group.addoption(
        "--broker",
        default=None,
        metavar="HOST:PORT",
        help="test a running broker instead of starting this project's broker",
    )
    group.addoption(
        "--deviations",
        default=None,
        metavar="FILE",
        help="a file of test node ids (one a line, # comments) that the broker under "
        "test is known to fail (documented in conformance/deviations.md); they are "
        "expected to fail, strictly",
    )
    group.addoption(
        "--restricted-broker",
        default=None,
        metavar="HOST:PORT",
        help="a second broker, configured with Maximum QoS 1, retained messages off and "
        "an ACL letting anonymous clients read but not publish under refused/ "
        "(conformance/conftest.py "
        "RESTRICTED_ACL), "
        "for the statements that bind only such a broker (they are not run against a "
        "--broker without it; by default the suite starts one of its own)",
    )
    group.addoption(
        "--scram-user",
        default=None,
        metavar="NAME:PASSWORD",
        help="a SCRAM-SHA-256 account on the broker under test, for the enhanced "
        "authentication tests (they are not run against a --broker without it; when the "
        f"suite starts its own broker it creates the account {SCRAM_ACCOUNT})",
    )
    group.addoption(
        "--refused-filter",
        default=None,
        metavar="FILTER",
        help="a topic filter the broker under test refuses to subscribe to, with a "
        "SUBACK failure code, not by closing (e.g. one its ACL denies); the tests "
        "that need one are not run against a --broker without it",
    )
    group.addoption(
        "--protocol",
        default=None,
        choices=["4", "5"],
        help="test only MQTT 3.1.1 (4) or only MQTT 5.0 (5); default both",
    )
    group.addoption(
        "--ws-broker",
        default=None,
        metavar="HOST:PORT[/PATH]",
        help="the WebSocket listener of the broker under test (path /mqtt unless given), "
        "for the tests of MQTT over WebSocket (they are not run against a --broker "
        "without it; when the suite starts its own broker it gives it one)",
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


def _address(given: str, protocol: int) -> BrokerUnderTest:
    host, _, port = given.rpartition(":")
    return BrokerUnderTest(host or "127.0.0.1", int(port), protocol)


@contextlib.contextmanager
def _own_broker(protocol: int, *options: str) -> Iterator[BrokerUnderTest]:
    """This project's broker, started with C{options} on a free loopback port."""
    port = _free_port()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    data = tempfile.mkdtemp(prefix="conformance-data-")
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
            "--data-dir",
            data,
            *options,
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
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def _scram_users_file(account: str) -> Iterator[str]:
    """A temporary credentials file for C{--scram-users} holding C{account}."""
    name, _, password = account.partition(":")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory(prefix="conformance-scram-") as directory:
        path = os.path.join(directory, "scram-users")
        line = subprocess.run(
            [sys.executable, "-m", "mqttbroker.scram", name],
            input=password + "\n",
            capture_output=True,
            text=True,
            check=True,
            cwd=root,
        ).stdout
        with open(path, "w", encoding="utf-8") as f:
            f.write(line)
        yield path


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> Iterator[BrokerUnderTest]:
    """The broker under test, started by the suite unless --broker names one."""
    protocol = int(request.config.getoption("--protocol") or 4)
    given = request.config.getoption("--broker")
    if given:
        yield _address(given, protocol)
        return
    # Configured so that the optional behaviours some statements bind can be seen:
    # a SCRAM account for enhanced authentication, and Response Information to give.
    options = ["--response-information", RESPONSE_INFORMATION]
    account = request.config.getoption("--scram-user")
    with contextlib.ExitStack() as stack:
        if account:
            options += ["--scram-users", stack.enter_context(_scram_users_file(account))]
        own_websocket = request.config.stash.get(_OWN_WEBSOCKET, None)
        if own_websocket:
            ws = _ws_address(own_websocket)
            options += [
                "--listen",
                f"tcp:{ws.port}:interface={ws.host} protocol=websocket path={ws.path}",
            ]
        yield stack.enter_context(_own_broker(protocol, *options))


@pytest.fixture(scope="session")
def restricted_broker(request: pytest.FixtureRequest) -> Iterator[BrokerUnderTest]:
    """
    A broker with Maximum QoS 1, no retained messages, and an ACL that lets anonymous
    clients read but not publish under C{refused/}: the one --restricted-broker
    names, or (when the suite starts its own broker) a second one of ours.
    """
    given = request.config.getoption("--restricted-broker")
    if given:
        yield _address(given, 5)
        return
    with tempfile.TemporaryDirectory(prefix="conformance-acl-") as directory:
        acl = os.path.join(directory, "acl")
        with open(acl, "w", encoding="utf-8") as f:
            f.write(RESTRICTED_ACL)
        options = ("--max-qos", "1", "--no-retain", "--acl", f"aclfile:file={acl}")
        with _own_broker(5, *options) as started:
            yield started


@pytest.fixture(scope="session")
def ws_broker(request: pytest.FixtureRequest, broker: BrokerUnderTest) -> WebSocketBrokerUnderTest:
    """
    The WebSocket listener of the broker under test: the one --ws-broker names, or the
    one the suite gave the broker it started (which the C{broker} fixture starts).
    """
    given = request.config.getoption("--ws-broker")
    assert given, "a needs_websocket test ran without --ws-broker"
    return _ws_address(given)


@pytest.fixture(scope="session")
def refused_filter(request: pytest.FixtureRequest) -> str:
    """A topic filter the broker under test refuses in its SUBACK."""
    given: str | None = request.config.getoption("--refused-filter")
    assert given, "a needs_refused_filter test ran without --refused-filter"
    return given


@pytest.fixture(scope="session")
def scram_user(request: pytest.FixtureRequest) -> tuple[str, str]:
    """The SCRAM-SHA-256 account (name, password) on the broker under test."""
    account = request.config.getoption("--scram-user")
    assert account, "a needs_scram test ran without --scram-user"
    name, _, password = account.partition(":")
    return name, password


# -- clause markers, levels and the report ------------------------------------------

_LEVELS = {"mqtt311": (4, "3.1.1"), "mqtt5": (5, "5.0")}
_CLAUSES: dict[str, list[tuple[str, str]]] = {}
_OUTCOMES: dict[str, str] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "mqtt311(*ids): the MQTT 3.1.1 statement ids this test checks (level 4)"
    )
    config.addinivalue_line(
        "markers", "mqtt5(*ids): the MQTT 5.0 statement ids this test checks (level 5)"
    )
    config.addinivalue_line(
        "markers",
        "needs_restricted: needs the --restricted-broker (Maximum QoS 1, no retained "
        "messages); deselected when --broker is given without it",
    )
    config.addinivalue_line(
        "markers",
        "needs_scram: needs a SCRAM-SHA-256 account on the broker (--scram-user); "
        "deselected when --broker is given without it",
    )
    config.addinivalue_line(
        "markers",
        "needs_refused_filter: needs a topic filter the broker refuses in its SUBACK "
        "(--refused-filter); deselected when --broker is given without it",
    )
    config.addinivalue_line(
        "markers",
        "needs_websocket: needs the broker's WebSocket listener (--ws-broker); "
        "deselected when --broker is given without it",
    )
    if not config.getoption("--broker") and not config.getoption("--ws-broker"):
        # The suite starts its own broker, with a WebSocket listener here.
        own_websocket = f"127.0.0.1:{_free_port()}/mqtt"
        config.stash[_OWN_WEBSOCKET] = own_websocket
        config.option.ws_broker = own_websocket
    if not config.getoption("--broker") and not config.getoption("--refused-filter"):
        # This project's broker refuses a malformed shared subscription with 0x8F.
        config.option.refused_filter = OWN_REFUSED_FILTER
    if not config.getoption("--broker") and not config.getoption("--scram-user"):
        # The suite starts its own broker, and creates this account on it.
        config.option.scram_user = SCRAM_ACCOUNT


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test with a C{level} argument runs once per version it is marked for."""
    if "level" not in metafunc.fixturenames:
        return
    only = metafunc.config.getoption("--protocol")
    levels = [
        level
        for name, (level, _) in _LEVELS.items()
        if metafunc.definition.get_closest_marker(name) is not None
        and (only is None or int(only) == level)
    ]
    metafunc.parametrize("level", levels, ids=[f"v{level}" for level in levels])


def _known_deviations(config: pytest.Config) -> set[str]:
    path = config.getoption("--deviations")
    if not path:
        return set()
    with open(path, encoding="utf-8") as f:
        lines = (line.split("#", 1)[0].strip() for line in f)
        return {line for line in lines if line}


#: Markers of tests that need something of the broker, and the option that says the
#: broker under test has it.
_NEEDS = {
    "needs_restricted": "--restricted-broker",
    "needs_scram": "--scram-user",
    "needs_refused_filter": "--refused-filter",
    "needs_websocket": "--ws-broker",
}


def _without_capability(config: pytest.Config, item: pytest.Item) -> bool:
    """
    The test needs something the broker under test was not described to have.

    Such tests are deselected rather than skipped: the broker is not failing them, the
    run just cannot ask (and CI turns skips into failures).
    """
    if not config.getoption("--broker"):
        return False
    return any(
        item.get_closest_marker(marker) is not None and not config.getoption(option)
        for marker, option in _NEEDS.items()
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unable = [item for item in items if _without_capability(config, item)]
    if unable:
        config.hook.pytest_deselected(items=unable)
        items[:] = [item for item in items if item not in unable]
    deviations = _known_deviations(config)
    for item in items:
        name = item.nodeid.split("conformance/", 1)[-1]
        if name in deviations:
            item.add_marker(
                pytest.mark.xfail(
                    reason="a documented deviation of the broker under test", strict=True
                )
            )
        level = getattr(item, "callspec", None) and item.callspec.params.get("level")  # type: ignore[attr-defined]
        clauses = []
        for name, (marker_level, version) in _LEVELS.items():
            if level and level != marker_level:
                continue
            for marker in item.iter_markers(name):
                clauses.extend((version, clause) for clause in marker.args)
        _CLAUSES[item.nodeid] = clauses


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        _OUTCOMES[report.nodeid] = report.outcome


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = session.config.getoption("--report")
    if not path:
        return
    from conformance.catalogue import load, render_report

    results: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for nodeid, clauses in _CLAUSES.items():
        outcome = _OUTCOMES.get(nodeid)
        if outcome is None:
            continue
        for key in clauses:
            results.setdefault(key, []).append((nodeid, outcome))
    broker = session.config.getoption("--broker") or "this project's broker (twist mqtt)"
    report = render_report(load(), results, broker)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(report)


@pytest.fixture
def connect_client(
    broker: BrokerUnderTest, request: pytest.FixtureRequest
) -> Callable[..., WireClient]:
    """A factory of L{WireClient}s to the broker under test, closed after the test."""
    clients: list[WireClient] = []

    def make(level: int) -> WireClient:
        client = WireClient(broker.host, broker.port, level)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
