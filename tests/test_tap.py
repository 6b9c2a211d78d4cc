# -*- test-case-name: tests.test_tap -*-
"""
Tests for C{twist mqtt}: the options, the service they build, and the plugin as a
user meets it after C{pip install .}.
"""

from __future__ import annotations

import gc
import os
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from twisted.application.service import IServiceMaker
from twisted.internet import defer
from twisted.plugin import getPlugins
from twisted.python import usage
from twisted.trial.unittest import SkipTest, SynchronousTestCase, TestCase

from mqttbroker import tap
from mqttbroker.backends.sqlite import SQLiteStore
from mqttbroker.codec import MAX_PACKET_SIZE, Disconnect, ReasonCode, Subscribe, Subscription, Will
from mqttbroker.service import (
    BrokerService,
    CollectorService,
    PersistenceService,
    ReloadService,
)
from mqttbroker.testing import BrokerHarness


def _parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    """Command-line parsing."""

    def test_defaults(self) -> None:
        """With no options the broker listens on TCP 1883 with protocol-maximum packets."""
        options = _parse()
        self.assertEqual([x.endpoint for x in options.listeners()], ["tcp:1883:backlog=1024"])
        self.assertEqual(options["max-packet-size"], MAX_PACKET_SIZE)
        self.assertEqual(options["connect-timeout"], 10.0)

    def test_port(self) -> None:
        """--port N listens on TCP N."""
        self.assertEqual(
            [x.endpoint for x in _parse("--port", "2883").listeners()], ["tcp:2883:backlog=1024"]
        )

    def test_listen_repeatable(self) -> None:
        """--listen repeats, and replaces the default port unless --port is given too."""
        options = _parse("--listen", "tcp:1:interface=127.0.0.1", "--listen", "unix:/tmp/m")
        self.assertEqual(
            [x.endpoint for x in options.listeners()], ["tcp:1:interface=127.0.0.1", "unix:/tmp/m"]
        )
        options = _parse("--port", "5", "--listen", "unix:/tmp/m")
        self.assertEqual(
            [x.endpoint for x in options.listeners()], ["tcp:5:backlog=1024", "unix:/tmp/m"]
        )

    def test_mqtt5_options(self) -> None:
        """The MQTT 5 options reach the broker configuration."""
        config = _parse(
            "--receive-maximum", "50", "--topic-alias-maximum", "0", "--max-keepalive", "120",
            "--max-qos", "1", "--response-information", "reply/%c/",
            "--server-reference", "other:1883", "--server-moved", "--no-retain",
        ).broker_config()  # fmt: skip
        self.assertEqual(
            (
                config.receive_maximum,
                config.topic_alias_maximum,
                config.max_keep_alive,
                config.max_qos,
                config.response_information,
                config.server_reference,
                config.server_moved,
                config.retain_available,
            ),
            (50, 0, 120, 1, "reply/%c/", "other:1883", True, False),
        )

    def test_bad_values(self) -> None:
        """Nonsense values are usage errors, not tracebacks."""
        for argv in (
            ["--port", "70000"],
            ["--port", "x"],
            ["--max-packet-size", "0"],
            ["--connect-timeout", "-1"],
            ["--connect-timeout", "inf"],
            ["--max-qos", "3"],
            ["--receive-maximum", "0"],
            ["--receive-maximum", "65536"],
            ["--max-inflight", "65536"],
        ):
            with self.subTest(argv=argv):
                self.assertRaises(usage.UsageError, _parse, *argv)

    def test_make_service(self) -> None:
        """
        makeService builds the broker service, one listening service per listener,
        each with its own factory (its own limits) around the one broker, and the
        reload service.
        """
        service = tap.makeService(
            _parse(
                "--persistence", "memory",
                "--listen", "tcp:0:interface=127.0.0.1", "--listen", "tcp:0 max-connections=5",
            )
        )  # fmt: skip
        collector, *children = list(service)  # type: ignore[call-overload]
        self.assertIsInstance(collector, CollectorService)
        self.assertEqual(len(children), 5)
        self.assertIsInstance(children[0], BrokerService)
        self.assertIsInstance(children[3], ReloadService)
        first, second = children[1].factory, children[2].factory
        self.assertIsNot(first, second)
        self.assertIs(first.broker, children[0].broker)
        self.assertIs(second.broker, children[0].broker)
        self.assertEqual(second.listener.max_connections, 5)
        self.assertEqual(first.broker.config.max_packet_size, MAX_PACKET_SIZE)


class CollectorServiceTests(SynchronousTestCase):
    def setUp(self) -> None:
        saved = gc.get_threshold()
        self.addCleanup(gc.set_threshold, *saved)

    def test_threshold_while_running(self) -> None:
        """The youngest generation's threshold is raised while running, then restored."""
        gc.set_threshold(700, 10, 10)
        service = CollectorService(50000)
        service.startService()
        self.assertEqual(gc.get_threshold(), (50000, 10, 10))
        service.stopService()
        self.assertEqual(gc.get_threshold(), (700, 10, 10))

    def test_zero_leaves_python_alone(self) -> None:
        gc.set_threshold(123, 4, 5)
        service = CollectorService(0)
        service.startService()
        self.assertEqual(gc.get_threshold(), (123, 4, 5))
        service.stopService()
        self.assertEqual(gc.get_threshold(), (123, 4, 5))

    def test_option(self) -> None:
        self.assertEqual(_parse()["gc-threshold"], 50000)
        self.assertEqual(_parse("--gc-threshold", "0")["gc-threshold"], 0)
        with self.assertRaises(usage.UsageError):
            _parse("--gc-threshold", "-1")


class ListeningTests(TestCase):
    """The built service on the real reactor."""

    def test_make_service_listens(self) -> defer.Deferred[object]:
        """The built service really listens when started, and stops cleanly."""
        service = tap.makeService(
            _parse("--persistence", "memory", "--listen", "tcp:0:interface=127.0.0.1")
        )
        service.startService()
        [_, _, child, *_] = list(service)  # type: ignore[call-overload]
        # Read the port without consuming the Deferred's result: stopService needs it.
        ports: list[object] = []
        child._waitingForPort.addCallback(lambda port: ports.append(port) or port)
        [port] = ports
        self.assertTrue(port.getHost().port > 0)  # type: ignore[attr-defined]
        stopped: defer.Deferred[object] = defer.maybeDeferred(service.stopService)
        return stopped


class StoreServiceTests(TestCase):
    """With a store (the default SQLite), listeners open only once it is loaded."""

    @defer.inlineCallbacks
    def test_sqlite_default(self) -> Any:
        directory = tempfile.mkdtemp(prefix="mqttbroker-tap-")
        self.addCleanup(shutil.rmtree, directory, True)
        options = _parse("--data-dir", directory, "--listen", "tcp:0:interface=127.0.0.1")
        service = tap.makeService(options)
        [_, persistence] = list(service)  # type: ignore[call-overload]
        self.assertIsInstance(persistence, PersistenceService)
        self.assertIsInstance(persistence.store, SQLiteStore)
        self.assertTrue(os.path.exists(os.path.join(directory, "mqttbroker.sqlite3")))
        service.startService()
        yield persistence.ready
        [_, listening, *_] = list(persistence)
        self.assertTrue(listening.running)
        yield defer.maybeDeferred(service.stopService)

    def test_unknown_store(self) -> None:
        with self.assertRaises(tap.usage.UsageError) as raised:
            _parse("--persistence", "floppy:")
        self.assertIn("no store named 'floppy'", str(raised.exception))


class ShutdownTests(SynchronousTestCase):
    """Stopping the service."""

    def test_stop_disconnects_clients(self) -> None:
        """
        Stopping the broker service tells MQTT 5 clients 0x8B, closes every client,
        and publishes the wills of those that had one (here into the queue of a
        persistent session that was closed first).
        """
        harness = BrokerHarness()
        watcher, _ = harness.connect("watcher", level=4, clean_start=False)
        watcher.send(Subscribe(1, (Subscription("wills/#", 1),)))
        v5, _ = harness.connect("v5", level=5, will=Will("wills/v5", b"gone", 1))
        watcher.received()
        service = BrokerService(harness.broker)
        service.startService()
        service.stopService()
        self.assertEqual(v5.received(), [Disconnect(ReasonCode.SERVER_SHUTTING_DOWN)])
        self.assertTrue(v5.closed_by_server)
        self.assertTrue(watcher.closed_by_server)
        self.assertEqual(harness.broker.sessions["watcher"].queued_count, 1)


class PluginTests(SynchronousTestCase):
    """The plugin dropin."""

    def test_plugin_found(self) -> None:
        """Twisted's plugin system finds a service maker named mqtt."""
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("mqtt", makers)
        self.assertIs(makers["mqtt"].options, tap.Options)

    def _installed(self, *argv: str) -> str:
        """Run `python -m twisted ARGV` outside the source tree, as an installed user."""
        with tempfile.TemporaryDirectory() as directory:
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            probe = subprocess.run(
                [sys.executable, "-c", "import mqttbroker"],
                check=False,
                cwd=directory,
                env=env,
                capture_output=True,
            )
            if probe.returncode:
                raise SkipTest("mqttbroker is not installed in this interpreter (run via tox)")
            result = subprocess.run(
                [sys.executable, "-m", "twisted", *argv],
                check=False,
                cwd=directory,
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        return result.stdout + result.stderr

    def test_installed_twist_lists_mqtt(self) -> None:
        """After installation, `twist --help` lists the mqtt command."""
        self.assertRegex(self._installed("--help"), r"\n\s+mqtt\s+An MQTT")

    def test_installed_help_documents_options(self) -> None:
        """`twist mqtt --help` documents every option."""
        output = self._installed("mqtt", "--help")
        for option in (
            "--port",
            "--listen",
            "--max-inflight",
            "--max-queued-messages",
            "--max-queued-bytes",
            "--queue-qos0",
            "--max-packet-size",
            "--max-connections",
            "--connect-timeout",
            "--no-tcp-nodelay",
            "--gc-threshold",
            "--receive-maximum",
            "--topic-alias-maximum",
            "--max-keepalive",
            "--max-qos",
            "--response-information",
            "--server-reference",
            "--server-moved",
        ):
            self.assertIn(option, output)
