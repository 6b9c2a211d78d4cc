"""
`twist mqtt --auth passwd:... --acl aclfile:...` with real clients: Debian's
mosquitto_pub/mosquitto_sub with -u/-P, paho-mqtt (MQTT 5 reason codes), client ids
bound to users, and an ACL reloaded on SIGHUP revoking a subscription at once; and a
third-party backend plugin dropped into a directory on the path, used by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import paho.mqtt.client as mqtt
from twisted.trial.unittest import SynchronousTestCase

import twisted.plugins
from mqttbroker import tap
from mqttbroker.backends import BackendError, build_backend, parse_description
from tests.support import HOST, IntegrationTestCase, require_executables

ACL = """\
# anonymous clients: nothing
user alice
topic readwrite u/alice/#
topic write u/bob/#
topic read public/#
topic deny public/secret/#
user bob
topic read u/bob/#
topic read public/#
topic write public/#
"""


def write(directory: str, name: str, text: str) -> str:
    path = os.path.join(directory, name)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


class AccessIntegrationTests(IntegrationTestCase):
    """The password file and the ACL file, judged by real clients."""

    def setUp(self) -> None:
        require_executables("mosquitto_sub", "mosquitto_pub")
        self.directory = tempfile.mkdtemp(prefix="mqttbroker-access-")
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.passwd = os.path.join(self.directory, "passwd")
        for user, password in (("alice", "alice-pw"), ("bob", "bob-pw")):
            subprocess.run(
                [sys.executable, "-m", "mqttbroker.cli", "passwd", "-b",
                 *(["-c"] if user == "alice" else []), self.passwd, user, password],
                check=True, capture_output=True, timeout=60,
            )  # fmt: skip
        self.acl = write(self.directory, "acl", ACL)
        self.broker = self.start_broker(
            "--auth", f"passwd:file={self.passwd}",
            "--acl", f"aclfile:file={self.acl}",
            "--client-id-pattern", "%u-*",
            "--tls-check-interval", "0",
        )  # fmt: skip

    def pub(self, user: str, password: str, topic: str, message: str) -> tuple[int, str]:
        status, out, err = self.run_program(
            ["mosquitto_pub", "-h", HOST, "-p", str(self.broker.port), "-u", user, "-P",
             password, "-i", f"{user}-pub", "-q", "1", "-t", topic, "-m", message]
        )  # fmt: skip
        return status, out + err

    def test_passwords(self) -> None:
        """Right password: published; wrong or none: refused (not authorised)."""
        self.assertEqual(self.pub("alice", "alice-pw", "u/alice/x", "hi")[0], 0)
        status, text = self.pub("alice", "wrong", "u/alice/x", "hi")
        self.assertNotEqual(status, 0)
        self.assertIn("bad user name or password", text.lower())
        status, _, _ = self.run_program(
            ["mosquitto_pub", "-h", HOST, "-p", str(self.broker.port), "-t", "public/x",
             "-m", "anonymous"]
        )  # fmt: skip
        self.assertNotEqual(status, 0)

    def test_client_id_bound(self) -> None:
        """bob cannot take a client id of alice's ('%u-*')."""
        status, out, err = self.run_program(
            ["mosquitto_pub", "-h", HOST, "-p", str(self.broker.port), "-u", "bob", "-P",
             "bob-pw", "-i", "alice-phone", "-t", "public/x", "-m", "x"]
        )  # fmt: skip
        self.assertNotEqual(status, 0, out + err)
        self.assertIn("identifier rejected", (out + err).lower())

    def test_wildcard_subscriber_reads_only_what_it_may(self) -> None:
        """
        alice's 'public/#' is granted, but a message under public/secret/, which her
        ACL denies, never reaches her through it; her subscription to u/bob/# (not
        readable for her) is refused; bob's write to u/bob/ is refused, not routed.
        """
        subscriber = self.spawn(
            ["mosquitto_sub", "-h", HOST, "-p", str(self.broker.port), "-u", "alice", "-P",
             "alice-pw", "-i", "alice-sub", "-q", "1", "-t", "u/alice/#", "-t", "public/#",
             "-t", "u/bob/#", "-C", "2", "-W", "15", "-F", "%t %p"]
        )  # fmt: skip
        self.broker.wait_for_log(r"Client 'alice-sub' subscribed to 'public/#'")
        self.assertEqual(self.pub("bob", "bob-pw", "public/secret/plan", "no")[0], 0)
        self.assertEqual(self.pub("bob", "bob-pw", "u/bob/mine", "no")[0], 0)
        self.assertEqual(self.pub("bob", "bob-pw", "public/news", "one")[0], 0)
        self.assertEqual(self.pub("alice", "alice-pw", "u/alice/note", "two")[0], 0)
        out, _ = subscriber.communicate(timeout=20)
        self.assertEqual(out.decode().splitlines(), ["public/news one", "u/alice/note two"])
        self.assertNotIn("subscribed to 'u/bob/#'", self.broker.log_text())

    def test_mqtt5_refused_publish_reason_code(self) -> None:
        """paho (MQTT 5): a publish outside the ACL gets PUBACK 0x87, one inside 0x00."""
        codes: dict[int, int] = {}
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id="alice-paho", protocol=mqtt.MQTTv5
        )
        client.username_pw_set("alice", "alice-pw")
        client.on_publish = lambda c, u, mid, rc, props: codes.__setitem__(mid, rc.value)
        client.connect(HOST, self.broker.port)
        client.loop_start()
        self.addCleanup(client.loop_stop)
        refused = client.publish("u/carol/x", b"x", qos=1)
        allowed = client.publish("u/alice/x", b"x", qos=1)
        deadline = time.monotonic() + 10
        while len(codes) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        client.disconnect()
        self.assertEqual((codes.get(refused.mid), codes.get(allowed.mid)), (0x87, 0x10))

    def test_acl_reload_revokes_subscription(self) -> None:
        """
        SIGHUP with an ACL that no longer lets bob read u/bob/: his subscription is
        dropped, and a message published there afterwards does not reach him.
        """
        subscriber = self.spawn(
            ["mosquitto_sub", "-h", HOST, "-p", str(self.broker.port), "-u", "bob", "-P",
             "bob-pw", "-i", "bob-sub", "-q", "1", "-t", "u/bob/#", "-t", "public/#",
             "-C", "2", "-W", "15", "-F", "%t %p"]
        )  # fmt: skip
        self.broker.wait_for_log(r"Client 'bob-sub' subscribed to 'public/#'")
        self.assertEqual(self.pub("bob", "bob-pw", "public/a", "before")[0], 0)
        write(self.directory, "acl", ACL.replace("topic read u/bob/#\n", ""))
        assert self.broker.process is not None
        self.broker.process.send_signal(signal.SIGHUP)
        self.broker.wait_for_log(r"Client 'bob-sub' unsubscribed from 'u/bob/#'")
        self.assertEqual(self.pub("alice", "alice-pw", "u/bob/x", "revoked")[0], 0)
        self.assertEqual(self.pub("bob", "bob-pw", "public/b", "after")[0], 0)
        out, _ = subscriber.communicate(timeout=20)
        self.assertEqual(out.decode().splitlines(), ["public/a before", "public/b after"])


class PluginDiscoveryTests(SynchronousTestCase):
    """A backend plugin from a directory on the path, selected by name."""

    def test_third_party_plugin(self) -> None:
        directory = tempfile.mkdtemp(prefix="mqttbroker-plugin-")
        self.addCleanup(shutil.rmtree, directory, True)
        plugins = os.path.join(directory, "twisted", "plugins")
        os.makedirs(plugins)
        write(directory, "thirdparty_guard.py", textwrap.dedent('''
            from zope.interface import implementer
            from mqttbroker.interfaces import AuthDecision, IAuthenticator

            @implementer(IAuthenticator)
            class Guard:
                def __init__(self, word):
                    self.word = word

                def authenticate(self, credentials):
                    if credentials.password == self.word.encode():
                        return AuthDecision.allow()
                    return AuthDecision.deny("wrong word")

            def make(parameters):
                if "word" not in parameters:
                    raise ValueError("guard needs word=")
                return Guard(parameters["word"])
        '''))  # fmt: skip
        write(plugins, "thirdparty_mqtt.py", textwrap.dedent('''
            from mqttbroker.backends import BackendPlugin

            guard = BackendPlugin("guard", "auth", "A test guard.", "thirdparty_guard:make")
        '''))  # fmt: skip
        sys.path.insert(0, directory)
        # What Twisted does at import for every twisted/plugins directory on the path.
        twisted.plugins.__path__.append(plugins)
        self.addCleanup(sys.path.remove, directory)
        self.addCleanup(twisted.plugins.__path__.remove, plugins)
        self.addCleanup(sys.modules.pop, "thirdparty_guard", None)
        self.addCleanup(sys.modules.pop, "twisted.plugins.thirdparty_mqtt", None)
        guard = build_backend("guard:word=open", "auth")
        self.assertEqual(type(guard).__name__, "Guard")
        with self.assertRaises(BackendError) as raised:
            build_backend("guard:", "auth")
        self.assertIn("guard needs word=", str(raised.exception))
        options = tap.Options()
        options.parseOptions(["--auth", "guard:word=open", "--auth", "anonymous:"])
        self.assertEqual(
            [type(a).__name__ for a in options.authenticators], ["Guard", "AnonymousAuthenticator"]
        )


class DescriptionTests(SynchronousTestCase):
    def test_parse(self) -> None:
        self.assertEqual(parse_description("passwd:file=/etc/p"), ("passwd", {"file": "/etc/p"}))
        self.assertEqual(
            parse_description("http:url=http://h:8080/a?x=1,timeout=2"),
            ("http", {"url": "http://h:8080/a?x=1", "timeout": "2"}),
        )
        self.assertEqual(parse_description("anonymous"), ("anonymous", {}))
        self.assertEqual(parse_description(r"x:a=1\,2"), ("x", {"a": "1,2"}))
        for bad in (":x=1", "x:novalue", "x:a=1,a=2"):
            with self.assertRaises(BackendError):
                parse_description(bad)

    def test_usage_errors(self) -> None:
        """Unknown backends and bad parameters stop twist before the broker starts."""
        for argv, expected in (
            (["--auth", "nosuch:"], "no auth backend named 'nosuch'"),
            (["--acl", "passwd:file=x"], "no acl backend named 'passwd'"),
            (["--auth", "passwd:file=/nonexistent/passwd"], "/nonexistent/passwd"),
            (["--acl", "aclfile:"], "file"),
        ):
            with self.subTest(argv=argv), self.assertRaises(tap.usage.UsageError) as raised:
                tap.Options().parseOptions(argv)
            self.assertIn(expected, str(raised.exception))
