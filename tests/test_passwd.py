"""
The mosquitto-compatible password file: hashes, parsing, the C{passwd}
authenticator (with its slowing of failed logins and reload), the C{mqttbroker
passwd} command, and interoperability both ways with Debian's mosquitto_passwd and
mosquitto.

Unit tests are deterministic: time is a L{task.Clock}, and "run in a thread" is
injected. The interoperability tests run mosquitto_passwd, mosquitto and
mosquitto_pub as processes, each bounded in time and killed in cleanup; they are
skipped when the programs are missing.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from zope.interface.verify import verifyObject

from mqttbroker import cli
from mqttbroker.backends import BackendPlugin
from mqttbroker.backends.passwd import (
    DEFAULT_ITERATIONS,
    LoginThrottle,
    PasswordFileAuthenticator,
    PasswordFileError,
    PasswordHash,
    address_key,
    build,
    hash_password,
    parse_password_file,
)
from mqttbroker.interfaces import AuthDecision, Credentials, IAuthenticator, IReloadable
from tests.support import HOST, REPO_ROOT, TIMEOUT, IntegrationTestCase, require_executables

# Made with Debian's mosquitto_passwd 2.0.11: `-b -c f alice secret` and
# `-H sha512 -b -c f bob pw6`.
MOSQUITTO_7 = (
    "alice:$7$101$ukZ27Kvu4yjw6yfi$3zS+V+gy9JIiVwNKBDiis0yH7LZrmyd858R1U6DBwOO3rQZOXY7O1IW"
    "/TAwpJtYGrWUmGu06MIlrqqUaD+hXCA=="
)
MOSQUITTO_6 = (
    "bob:$6$r46HiDKPz1g0KP50$dKxsjemzzEU0Vbl/xGIz3xXFOEhGOFzh4TFEzJPbWzMoll9ynD+YiON3HKC"
    "eDlZg+bHZLrYkIXIfi9JGeHWSTw=="
)
GOOD_HASH = MOSQUITTO_7.split(":", 1)[1]


def creds(
    username: str | None, password: bytes | None, host: str | None = "192.0.2.1"
) -> Credentials:
    return Credentials(client_id="c", username=username, password=password, peer_host=host)


class TempDir:
    """A temporary directory removed after the test."""

    def __init__(self, case: SynchronousTestCase) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="passwd-test-")
        case.addCleanup(self._dir.cleanup)
        self.path = self._dir.name

    def write(self, name: str, text: str | bytes) -> str:
        path = os.path.join(self.path, name)
        with open(path, "wb") as stream:
            stream.write(text.encode() if isinstance(text, str) else text)
        return path


class InlineThread:
    """A "run in a thread" that records calls; runs now, or when told to."""

    def __init__(self, defer: bool = False) -> None:
        self.calls: list[Any] = []
        self.defer = defer
        self.waiting: list[tuple[Deferred[Any], Callable[[], Any]]] = []

    def __call__(self, function: Callable[..., Any], *args: Any) -> Deferred[Any]:
        self.calls.append((function, args))
        if not self.defer:
            return succeed(function(*args))
        waiting: Deferred[Any] = Deferred()
        self.waiting.append((waiting, lambda: function(*args)))
        return waiting

    def finish(self) -> None:
        for waiting, work in self.waiting:
            waiting.callback(work())
        self.waiting = []


def result_of(value: Any) -> Any:
    """The value of an already fired Deferred, or C{value} itself."""
    if isinstance(value, Deferred):
        results: list[Any] = []
        value.addBoth(results.append)
        assert results, "the Deferred has not fired"
        return results[0]
    return value


# -- hashes --------------------------------------------------------------------------------


class HashTests(SynchronousTestCase):
    def test_mosquitto_pbkdf2_vector(self) -> None:
        """A $7$ hash written by mosquitto_passwd checks with its password only."""
        entry = PasswordHash.parse(GOOD_HASH)
        self.assertEqual((entry.scheme, entry.iterations, len(entry.salt)), ("7", 101, 12))
        self.assertTrue(entry.matches(b"secret"))
        self.assertFalse(entry.matches(b"Secret"))
        self.assertFalse(entry.matches(b""))

    def test_mosquitto_sha512_vector(self) -> None:
        """A $6$ hash (SHA512(password + salt)) written by mosquitto_passwd -H sha512."""
        entry = PasswordHash.parse(MOSQUITTO_6.split(":", 1)[1])
        self.assertEqual(entry.scheme, "6")
        self.assertTrue(entry.matches(b"pw6"))
        self.assertFalse(entry.matches(b"pw7"))

    def test_round_trip(self) -> None:
        """What we write parses back to the same hash; the default is $7$ 210000."""
        entry = hash_password(b"p")
        self.assertEqual((entry.scheme, entry.iterations), ("7", DEFAULT_ITERATIONS))
        self.assertEqual((len(entry.salt), len(entry.digest)), (12, 64))
        self.assertEqual(PasswordHash.parse(entry.encode()), entry)
        six = hash_password(b"p", scheme="6")
        self.assertEqual(PasswordHash.parse(six.encode()), six)
        self.assertTrue(six.matches(b"p"))
        self.assertEqual(
            entry.digest, hashlib.pbkdf2_hmac("sha512", b"p", entry.salt, DEFAULT_ITERATIONS)
        )

    def test_fresh_salt(self) -> None:
        """The same password hashed twice gives different salts and digests."""
        self.assertNotEqual(hash_password(b"p", 1).salt, hash_password(b"p", 1).salt)

    def test_malformed_hashes(self) -> None:
        """Every malformed hash is refused, and the message never echoes it."""
        digest = base64.b64encode(b"x" * 64).decode()
        for text in [
            "plain-text-password",
            "",
            "$5$abc$def",
            "$7$0$ukZ27Kvu4yjw6yfi$" + digest,
            "$7$99999999999$ukZ27Kvu4yjw6yfi$" + digest,
            "$7$x$ukZ27Kvu4yjw6yfi$" + digest,
            "$7$101$ukZ27Kvu4yjw6yf$" + digest,  # bad padding
            "$7$101$uk*Z27Kvu4yjw6yfi$" + digest,
            "$7$101$ukZ27Kvu4yjw6yfi$" + base64.b64encode(b"x" * 32).decode(),
            "$7$101$$" + digest,
            "$6$ukZ27Kvu4yjw6yfi$" + digest + "$",
            GOOD_HASH + ":extra",
        ]:
            with self.assertRaises(ValueError, msg=text) as caught:
                PasswordHash.parse(text)
            if text:
                self.assertNotIn(text, str(caught.exception))


# -- the file --------------------------------------------------------------------------------


class ParseTests(SynchronousTestCase):
    def test_comments_blank_lines_and_blanks(self) -> None:
        """Comments, blank lines, CRLF and blanks around the name are accepted."""
        data = f"# users\n\n{MOSQUITTO_7}\r\n  {MOSQUITTO_6}  \n   # indented\n".encode()
        users = parse_password_file(data, "f")
        self.assertEqual(sorted(users), ["alice", "bob"])

    def test_empty_file(self) -> None:
        self.assertEqual(parse_password_file(b"", "f"), {})

    def assertLineError(self, data: str, line: int, *words: str) -> None:
        with self.assertRaises(PasswordFileError) as caught:
            parse_password_file(data.encode(), "/etc/p")
        message = str(caught.exception)
        self.assertIn(f"/etc/p line {line}:", message)
        for word in words:
            self.assertIn(word, message)

    def test_missing_colon(self) -> None:
        """A line without ':' is an error (mosquitto skips it silently)."""
        self.assertLineError(f"{MOSQUITTO_7}\njustaname\n", 2, "':'")

    def test_empty_user(self) -> None:
        """An empty user name is an error (CVE-2018-12551)."""
        self.assertLineError(f"# c\n:{GOOD_HASH}\n", 2, "empty user name")

    def test_unknown_scheme(self) -> None:
        self.assertLineError("carol:$5$abc$def\n", 1, "'carol'", "$5$")

    def test_bad_hash_never_echoed(self) -> None:
        """A plain-text password in the file is reported without repeating it."""
        with self.assertRaises(PasswordFileError) as caught:
            parse_password_file(b"carol:hunter2\n", "f")
        self.assertIn("line 1", str(caught.exception))
        self.assertNotIn("hunter2", str(caught.exception))

    def test_empty_hash(self) -> None:
        self.assertLineError("carol:\n", 1, "'carol'")

    def test_duplicate_user(self) -> None:
        self.assertLineError(f"{MOSQUITTO_7}\n\n{MOSQUITTO_7}\n", 3, "'alice'", "line 1")

    def test_not_utf8(self) -> None:
        with self.assertRaises(PasswordFileError) as caught:
            parse_password_file(MOSQUITTO_7.encode() + b"\n\xff:x\n", "f")
        self.assertIn("line 2: not valid UTF-8", str(caught.exception))


# -- the authenticator ------------------------------------------------------------------------


class AuthenticatorTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.tmp = TempDir(self)
        self.clock = task.Clock()
        self.thread = InlineThread()

    def authenticator(
        self, text: str, thread_iterations: int = 1000, **throttle: Any
    ) -> PasswordFileAuthenticator:
        self.path = self.tmp.write("passwd", text)
        return PasswordFileAuthenticator(
            self.path,
            clock=self.clock,
            run_in_thread=self.thread,
            thread_iterations=thread_iterations,
            throttle=LoginThrottle(self.clock, **throttle),
        )

    def entry(self, username: str, password: bytes, iterations: int = 101) -> str:
        return f"{username}:{hash_password(password, iterations).encode()}\n"


class AuthenticateTests(AuthenticatorTestCase):
    def test_interfaces(self) -> None:
        auth = self.authenticator(MOSQUITTO_7 + "\n")
        self.assertTrue(verifyObject(IAuthenticator, auth))
        self.assertTrue(verifyObject(IReloadable, auth))

    def test_decisions(self) -> None:
        """Right password: allow. Wrong one, or unknown user: the same denial."""
        auth = self.authenticator(f"{MOSQUITTO_7}\n{MOSQUITTO_6}\n")
        self.assertEqual(auth.authenticate(creds("alice", b"secret")), AuthDecision.allow())
        self.assertEqual(auth.authenticate(creds("bob", b"pw6")), AuthDecision.allow())
        wrong = auth.authenticate(creds("alice", b"nope"))
        unknown = auth.authenticate(creds("mallory", b"secret"))
        self.assertEqual(wrong.outcome, "deny")
        self.assertTrue(wrong.bad_credentials)
        self.assertEqual(wrong, unknown)

    def test_no_username_is_ignored(self) -> None:
        """No user name: no opinion, so that an anonymous backend can decide."""
        auth = self.authenticator(MOSQUITTO_7 + "\n")
        self.assertEqual(auth.authenticate(creds(None, None)), AuthDecision.ignore())
        self.assertEqual(auth.authenticate(creds(None, b"secret")), AuthDecision.ignore())

    def test_username_without_password(self) -> None:
        auth = self.authenticator(MOSQUITTO_7 + "\n")
        decision = auth.authenticate(creds("alice", None))
        self.assertEqual((decision.outcome, decision.bad_credentials), ("deny", True))

    def test_empty_file_denies(self) -> None:
        with capturedLogs() as events:
            auth = self.authenticator("# nobody yet\n")
        self.assertIn("no users", formatEvent(events[0]))
        decision = result_of(auth.authenticate(creds("alice", b"secret")))
        self.assertEqual(decision.outcome, "deny")

    def test_cheap_hash_answers_synchronously(self) -> None:
        """At or below the threshold: a plain value, no thread."""
        auth = self.authenticator(self.entry("u", b"p", 1000), thread_iterations=1000)
        self.assertIsInstance(auth.authenticate(creds("u", b"p")), AuthDecision)
        self.assertIsInstance(auth.authenticate(creds("x", b"p")), AuthDecision)
        self.assertEqual(self.thread.calls, [])

    def test_dear_hash_runs_in_thread(self) -> None:
        """Above the threshold the hash runs in the thread; the answer is a Deferred."""
        self.thread.defer = True
        auth = self.authenticator(self.entry("u", b"p", 1001), thread_iterations=1000)
        answer = auth.authenticate(creds("u", b"p"))
        self.assertIsInstance(answer, Deferred)
        self.assertEqual(len(self.thread.calls), 1)
        self.assertNoResult(answer)
        self.thread.finish()
        self.assertEqual(self.successResultOf(answer), AuthDecision.allow())

    def test_unknown_user_costs_the_same(self) -> None:
        """
        An unknown user is checked against a dummy hash of the file's kind (same
        scheme and count, through the same thread path), so the time of the answer
        does not tell whether the user exists.
        """
        auth = self.authenticator(self.entry("u", b"p", 1500) + self.entry("v", b"q", 1500))
        result_of(auth.authenticate(creds("u", b"wrong")))
        result_of(auth.authenticate(creds("nobody", b"wrong")))
        (known_function, known_args), (unknown_function, unknown_args) = self.thread.calls
        known, dummy = known_function.__self__, unknown_function.__self__
        self.assertEqual((dummy.scheme, dummy.iterations), (known.scheme, known.iterations))
        self.assertEqual((len(dummy.salt), len(dummy.digest)), (12, 64))
        self.assertEqual(known_args, unknown_args)

    def test_dummy_never_matches(self) -> None:
        """Even the password that would match the dummy's digest is denied."""
        auth = self.authenticator(self.entry("u", b"p"))
        dummy = auth.file.dummy
        dummy_digest = dummy.digest
        # Make the dummy match b"x": the user is still unknown, so it is denied.
        object.__setattr__(dummy, "digest", dummy.compute(b"x"))
        self.assertEqual(auth.authenticate(creds("nobody", b"x")).outcome, "deny")
        object.__setattr__(dummy, "digest", dummy_digest)

    def test_thread_failure_fails_closed(self) -> None:
        """A hash that raises in the thread gives a denial, not a failed Deferred."""

        def broken(function: Callable[..., Any], *args: Any) -> Deferred[Any]:
            return fail(RuntimeError("thread pool gone"))

        auth = self.authenticator(self.entry("u", b"p", 5000))
        auth.run_in_thread = broken
        with capturedLogs():
            decision = self.successResultOf(auth.authenticate(creds("u", b"p")))
        self.assertEqual(decision.outcome, "deny")
        self.flushLoggedErrors(RuntimeError)


class RealThreadTests(TestCase):
    """The default "run in a thread" is the reactor's thread pool."""

    def test_default_thread(self) -> None:
        tmp = TempDir(self)
        path = tmp.write("passwd", f"u:{hash_password(b'p', 2000).encode()}\n")
        auth = build({"file": path, "thread_iterations": "1000"})
        answer = auth.authenticate(creds("u", b"p"))
        self.assertIsInstance(answer, Deferred)
        return answer.addCallback(self.assertEqual, AuthDecision.allow())


class ThrottleTests(AuthenticatorTestCase):
    """Failed logins slow down their source address, and only it."""

    def setUp(self) -> None:
        super().setUp()
        text = self.entry("u", b"p") + self.entry("v", b"q")
        self.auth = self.authenticator(
            text, limit=3, window=60.0, initial_delay=1.0, max_delay=4.0, max_hosts=3
        )

    def fail_from(self, host: str, times: int, user: str = "u") -> None:
        for _ in range(times):
            self.assertEqual(self.auth.authenticate(creds(user, b"bad", host)).outcome, "deny")

    def test_slows_only_the_failing_host(self) -> None:
        self.fail_from("192.0.2.1", 3)
        slowed = self.auth.authenticate(creds("u", b"bad", "192.0.2.1"))
        self.assertIsInstance(slowed, Deferred)
        other = self.auth.authenticate(creds("u", b"p", "198.51.100.7"))
        self.assertEqual(other, AuthDecision.allow())  # at once, a plain value
        self.clock.advance(0.999)
        self.assertNoResult(slowed)
        self.clock.advance(0.001)
        decision = self.successResultOf(slowed)
        self.assertEqual((decision.outcome, decision.bad_credentials), ("deny", True))

    def test_delay_doubles_up_to_a_cap(self) -> None:
        self.fail_from("192.0.2.1", 3)
        delays = []
        for _ in range(5):
            self.assertEqual(
                self.auth.throttle.delay("192.0.2.1"), [1.0, 2.0, 4.0, 4.0, 4.0][len(delays)]
            )
            delays.append(self.auth.throttle.delay("192.0.2.1"))
            answer = self.auth.authenticate(creds("u", b"bad", "192.0.2.1"))
            self.clock.advance(delays[-1])
            self.assertEqual(self.successResultOf(answer).outcome, "deny")
        self.assertEqual(delays, [1.0, 2.0, 4.0, 4.0, 4.0])

    def test_right_password_also_waits(self) -> None:
        """A quick yes would give the guess away: a slowed host waits for it too."""
        self.fail_from("192.0.2.1", 3)
        answer = self.auth.authenticate(creds("u", b"p", "192.0.2.1"))
        self.assertNoResult(answer)
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(answer), AuthDecision.allow())

    def test_success_resets(self) -> None:
        self.fail_from("192.0.2.1", 3)
        answer = self.auth.authenticate(creds("u", b"p", "192.0.2.1"))
        self.clock.advance(1)
        self.successResultOf(answer)
        self.assertEqual(self.auth.throttle.delay("192.0.2.1"), 0)
        self.assertIsInstance(self.auth.authenticate(creds("u", b"bad", "192.0.2.1")), AuthDecision)

    def test_success_clears_only_its_own_user(self) -> None:
        """Logging in with one's own account does not wipe the guesses at another."""
        self.fail_from("192.0.2.1", 3, user="v")
        answer = self.auth.authenticate(creds("u", b"p", "192.0.2.1"))
        self.clock.advance(1)
        self.assertEqual(self.successResultOf(answer), AuthDecision.allow())
        self.assertEqual(self.auth.throttle.delay("192.0.2.1"), 1.0)

    def test_window_forgets(self) -> None:
        self.fail_from("192.0.2.1", 3)
        self.clock.advance(60.5)
        self.assertEqual(self.auth.throttle.delay("192.0.2.1"), 0)
        self.assertEqual(len(self.auth.throttle), 0)

    def test_memory_is_bounded(self) -> None:
        """At most max_hosts addresses are remembered; the oldest go first."""
        for index in range(10):
            self.fail_from(f"192.0.2.{index}", 1)
            self.clock.advance(1)
        self.assertEqual(len(self.auth.throttle), 3)
        self.assertIsNone(self.auth.throttle.record("192.0.2.0"))
        self.assertIsNotNone(self.auth.throttle.record("192.0.2.9"))

    def test_names_per_host_bounded(self) -> None:
        """Many user names from one address share one bucket, never cleared by success."""
        self.auth.throttle.names_per_host = 2
        for index in range(5):
            self.auth.throttle.failed("192.0.2.1", f"name{index}")
        record = self.auth.throttle.record("192.0.2.1")
        assert record is not None
        self.assertEqual(len(record.failures), 3)
        self.assertEqual(record.total, 5)

    def test_one_delayed_check_at_a_time(self) -> None:
        """
        Parallel connections from a slowed address do not multiply the guesses:
        while one check waits, the others are refused without a look at the password.
        """
        self.fail_from("192.0.2.1", 3)
        first = self.auth.authenticate(creds("u", b"bad", "192.0.2.1"))
        second = self.auth.authenticate(creds("u", b"p", "192.0.2.1"))
        self.clock.advance(4)
        self.assertEqual(self.successResultOf(first).outcome, "deny")
        refused = self.successResultOf(second)
        self.assertEqual(refused.outcome, "deny")
        self.assertIn("too many failed logins", refused.reason)
        # Once nothing waits, a check happens again (after the delay).
        third = self.auth.authenticate(creds("u", b"p", "192.0.2.1"))
        self.clock.advance(4)
        self.assertEqual(self.successResultOf(third), AuthDecision.allow())

    def test_slowing_logged_once(self) -> None:
        with capturedLogs() as events:
            self.fail_from("192.0.2.1", 3)
            answer = self.auth.authenticate(creds("u", b"bad", "192.0.2.1"))
            self.clock.advance(1)
            self.successResultOf(answer)
        warnings = [e for e in events if e["log_level"] == LogLevel.warn]
        self.assertEqual(len(warnings), 1)
        self.assertIn("192.0.2.1", formatEvent(warnings[0]))
        self.assertNotIn("bad", formatEvent(warnings[0]))

    def test_address_keys(self) -> None:
        """IPv6 addresses count per /64; IPv4-mapped ones as IPv4."""
        self.assertEqual(address_key("2001:db8:1:2::5"), address_key("2001:db8:1:2:ffff::1"))
        self.assertNotEqual(address_key("2001:db8:1:2::5"), address_key("2001:db8:1:3::5"))
        self.assertEqual(address_key("::ffff:192.0.2.1"), "192.0.2.1")
        self.assertEqual(address_key(None), address_key(None))
        self.assertEqual(address_key("not an address"), "not an address")


class ReloadTests(AuthenticatorTestCase):
    def test_reload_rereads(self) -> None:
        auth = self.authenticator(self.entry("u", b"p"))
        self.tmp.write("passwd", self.entry("u", b"new") + self.entry("w", b"w"))
        self.assertTrue(auth.reload())
        self.assertEqual(auth.authenticate(creds("u", b"new")).outcome, "allow")
        self.assertEqual(auth.authenticate(creds("u", b"p")).outcome, "deny")
        self.assertEqual(auth.authenticate(creds("w", b"w")).outcome, "allow")

    def test_broken_file_keeps_old_users(self) -> None:
        auth = self.authenticator(self.entry("u", b"p"))
        self.tmp.write("passwd", self.entry("u", b"new") + "w:plaintext\n")
        with capturedLogs() as events:
            self.assertFalse(auth.reload())
        errors = [formatEvent(e) for e in events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("line 2", errors[0])
        self.assertNotIn("plaintext", errors[0])
        self.assertEqual(auth.authenticate(creds("u", b"p")).outcome, "allow")

    def test_missing_file_keeps_old_users(self) -> None:
        auth = self.authenticator(self.entry("u", b"p"))
        os.unlink(self.path)
        with capturedLogs():
            self.assertFalse(auth.reload())
        self.assertEqual(auth.authenticate(creds("u", b"p")).outcome, "allow")

    def test_reload_if_changed(self) -> None:
        auth = self.authenticator(self.entry("u", b"p"))
        with capturedLogs() as events:
            self.assertFalse(auth.reload_if_changed())
        self.assertEqual(events, [])
        self.tmp.write("passwd", self.entry("u", b"p") + self.entry("w", b"w"))
        with capturedLogs():
            self.assertTrue(auth.reload_if_changed())
            self.assertFalse(auth.reload_if_changed())
        self.assertEqual(sorted(auth.file.users), ["u", "w"])


class BuildTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.tmp = TempDir(self)
        self.path = self.tmp.write("passwd", MOSQUITTO_7 + "\n")

    def assertRefused(self, parameters: dict[str, str], *words: str) -> None:
        with self.assertRaises(ValueError) as caught:
            build(parameters, clock=task.Clock())
        for word in words:
            self.assertIn(word, str(caught.exception))

    def test_parameters(self) -> None:
        auth = build(
            {
                "file": self.path,
                "thread_iterations": "50",
                "fail_limit": "7",
                "fail_window": "10",
                "fail_delay": "0.5",
                "fail_delay_max": "8",
                "fail_hosts": "100",
            },
            clock=task.Clock(),
        )
        throttle = auth.throttle
        self.assertEqual(auth.thread_iterations, 50)
        self.assertEqual(
            (throttle.limit, throttle.window, throttle.initial_delay, throttle.max_delay),
            (7, 10.0, 0.5, 8.0),
        )
        self.assertEqual(throttle.max_hosts, 100)

    def test_plugin_factory(self) -> None:
        """The factory string the plugin registration uses builds the backend."""
        plugin = BackendPlugin("passwd", "auth", "", "mqttbroker.backends.passwd:build")
        auth = plugin.build({"file": self.path})
        self.assertTrue(IAuthenticator.providedBy(auth))

    def test_refusals(self) -> None:
        self.assertRefused({}, "file")
        self.assertRefused({"file": ""}, "file")
        self.assertRefused({"file": self.path, "colour": "red"}, "'colour'")
        self.assertRefused({"file": self.path, "fail_limit": "x"}, "fail_limit")
        self.assertRefused({"file": self.path, "fail_limit": "0"}, "fail_limit")
        self.assertRefused({"file": self.path, "fail_window": "-1"}, "fail_window")
        self.assertRefused({"file": self.path, "fail_delay": "nan"}, "fail_delay")
        self.assertRefused(
            {"file": self.path, "fail_delay": "5", "fail_delay_max": "1"}, "fail_delay_max"
        )
        self.assertRefused({"file": self.path, "thread_iterations": "1.5"}, "thread_iterations")
        missing = os.path.join(self.tmp.path, "missing")
        self.assertRefused({"file": missing}, "file=", missing)
        broken = self.tmp.write("broken", f"{MOSQUITTO_7}\nbob\n")
        self.assertRefused({"file": broken}, "file", "line 2")


# -- mqttbroker passwd ----------------------------------------------------------------------------


class FakePrompt:
    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.prompts: list[str] = []

    def __call__(self, prompt: str) -> str:
        self.prompts.append(prompt)
        if not self.answers:
            raise EOFError
        return self.answers.pop(0)


class CommandTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.tmp = TempDir(self)
        self.path = os.path.join(self.tmp.path, "passwd")

    def run_cli(self, *argv: str, prompt: FakePrompt | None = None) -> tuple[int, str]:
        err = io.StringIO()
        console = cli.Console(prompt=prompt or FakePrompt(), out=io.StringIO(), err=err)
        return cli.main(["passwd", *argv], console), err.getvalue()

    def users(self) -> dict[str, PasswordHash]:
        with open(self.path, "rb") as stream:
            return parse_password_file(stream.read(), self.path)

    def text(self) -> str:
        with open(self.path) as stream:
            return stream.read()

    def test_create_batch(self) -> None:
        """-c -b writes a $7$ hash (default count) to a new file with mode 0600."""
        self.assertEqual(self.run_cli("-c", "-b", self.path, "alice", "s3cret"), (0, ""))
        entry = self.users()["alice"]
        self.assertEqual((entry.scheme, entry.iterations), ("7", DEFAULT_ITERATIONS))
        self.assertTrue(entry.matches(b"s3cret"))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertEqual(os.listdir(self.tmp.path), ["passwd"])  # no temporary left

    def test_add_update_keeps_comments_and_order(self) -> None:
        self.tmp.write("passwd", f"# staff\n{MOSQUITTO_7}\n\n{MOSQUITTO_6}\n")
        self.assertEqual(self.run_cli("-I", "101", "-b", self.path, "carol", "c")[0], 0)
        self.assertEqual(self.run_cli("-I", "101", "-b", self.path, "alice", "new")[0], 0)
        lines = self.text().splitlines()
        self.assertEqual(lines[0], "# staff")
        self.assertTrue(lines[1].startswith("alice:$7$101$"))
        self.assertEqual((lines[2], lines[3]), ("", MOSQUITTO_6))
        self.assertTrue(lines[4].startswith("carol:"))
        users = self.users()
        self.assertTrue(users["alice"].matches(b"new"))
        self.assertTrue(users["carol"].matches(b"c"))

    def test_sha512(self) -> None:
        status, err = self.run_cli("-H", "sha512", "-c", "-b", self.path, "u", "p")
        self.assertEqual(status, 0)
        self.assertIn("Warning", err)
        self.assertEqual(self.users()["u"].scheme, "6")
        self.assertTrue(self.users()["u"].matches(b"p"))

    def test_interactive(self) -> None:
        prompt = FakePrompt("pw", "pw")
        self.assertEqual(self.run_cli("-I", "101", "-c", self.path, "u", prompt=prompt)[0], 0)
        self.assertEqual(prompt.prompts, ["Password: ", "Reenter password: "])
        self.assertTrue(self.users()["u"].matches(b"pw"))

    def test_interactive_mismatch_empty_eof(self) -> None:
        for answers, words in [
            (("a", "b"), "do not match"),
            (("", ""), "Empty password"),
            ((), "No password"),
        ]:
            status, err = self.run_cli("-c", self.path, "u", prompt=FakePrompt(*answers))
            self.assertEqual(status, 1)
            self.assertIn(words, err)
        self.assertFalse(os.path.exists(self.path))

    def test_delete(self) -> None:
        self.tmp.write("passwd", f"{MOSQUITTO_7}\n{MOSQUITTO_6}\n")
        self.assertEqual(self.run_cli("-D", self.path, "alice")[0], 0)
        self.assertEqual(self.text(), MOSQUITTO_6 + "\n")
        status, err = self.run_cli("-D", self.path, "alice")
        self.assertEqual(status, 1)
        self.assertIn("not found", err)

    def test_upgrade(self) -> None:
        """-U hashes plain-text passwords and keeps existing hashes (unlike mosquitto)."""
        self.tmp.write("passwd", f"# old\ncarol:pass word\n{MOSQUITTO_7}\n")
        self.assertEqual(self.run_cli("-I", "101", "-U", self.path)[0], 0)
        users = self.users()
        self.assertTrue(users["carol"].matches(b"pass word"))
        self.assertTrue(users["alice"].matches(b"secret"))
        self.assertEqual(self.text().splitlines()[0], "# old")
        before = self.text()
        self.assertEqual(self.run_cli("-U", self.path)[0], 0)
        self.assertEqual(self.text(), before)  # idempotent

    def test_corrupt_file_left_alone(self) -> None:
        self.tmp.write("passwd", f"{MOSQUITTO_7}\ncarol:plain\n")
        status, err = self.run_cli("-b", self.path, "dave", "d")
        self.assertEqual(status, 1)
        self.assertIn("line 2", err)
        self.assertIn("-U", err)
        self.assertNotIn("plain\n", err)
        self.assertEqual(self.text(), f"{MOSQUITTO_7}\ncarol:plain\n")

    def test_missing_file(self) -> None:
        status, err = self.run_cli("-b", self.path, "u", "p")
        self.assertEqual(status, 1)
        self.assertIn("-c", err)

    def test_bad_usernames(self) -> None:
        for name in ["a:b", "#a", " a", "a\nb", ""]:
            status, err = self.run_cli("-c", "-b", self.path, name, "p")
            self.assertEqual(status, 1, name)
            self.assertIn("Error", err)

    def test_usage_errors(self) -> None:
        for argv in [
            ("-c", "-D", self.path, "u"),
            ("-b", self.path, "u"),
            (self.path,),
            ("-U", self.path, "u"),
            ("-c", "-U", self.path),
            ("-I", "0", "-b", self.path, "u", "p"),
        ]:
            with self.assertRaises(SystemExit) as caught:
                self.run_cli(*argv)
            self.assertEqual(caught.exception.code, 2, argv)

    def test_existing_file_keeps_group_drops_world(self) -> None:
        self.tmp.write("passwd", MOSQUITTO_7 + "\n")
        os.chmod(self.path, 0o644)
        self.assertEqual(self.run_cli("-I", "101", "-b", self.path, "u", "p")[0], 0)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o640)

    def test_symlink_target_replaced(self) -> None:
        target = self.tmp.write("real", MOSQUITTO_7 + "\n")
        os.symlink(target, self.path)
        self.assertEqual(self.run_cli("-I", "101", "-b", self.path, "u", "p")[0], 0)
        self.assertTrue(os.path.islink(self.path))
        with open(target, "rb") as stream:
            self.assertIn("u", parse_password_file(stream.read(), target))

    def test_python_m(self) -> None:
        """`python -m mqttbroker.cli passwd ...` works as a program."""
        process = subprocess.run(
            [
                sys.executable,
                "-m",
                "mqttbroker.cli",
                "passwd",
                "-I",
                "101",
                "-c",
                "-b",
                self.path,
                "u",
                "p",
            ],
            cwd=REPO_ROOT,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
        self.assertEqual(process.returncode, 0, process.stderr)
        self.assertTrue(self.users()["u"].matches(b"p"))


# -- interoperability with mosquitto ----------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


class MosquittoInteropTests(IntegrationTestCase):
    """Files go both ways between mqttbroker and Debian's mosquitto tools."""

    def setUp(self) -> None:
        self.tmp = TempDir(self)
        self.path = os.path.join(self.tmp.path, "passwd")

    def mosquitto_passwd(self, *argv: str) -> None:
        status, out, err = self.run_program(["mosquitto_passwd", *argv])
        self.assertEqual(status, 0, f"mosquitto_passwd {argv}: {out} {err}")

    def test_mosquitto_passwd_file_verifies(self) -> None:
        """Hashes mosquitto_passwd writes ($7$ and -H sha512 $6$) check with ours."""
        require_executables("mosquitto_passwd")
        self.mosquitto_passwd("-b", "-c", self.path, "alice", "wonder land")
        self.mosquitto_passwd("-H", "sha512", "-b", self.path, "bob", "b0b")
        auth = build({"file": self.path}, clock=task.Clock(), run_in_thread=InlineThread())
        self.assertEqual(auth.file.users["alice"].scheme, "7")
        self.assertEqual(auth.file.users["bob"].scheme, "6")
        for username, password, outcome in [
            ("alice", b"wonder land", "allow"),
            ("alice", b"wonderland", "deny"),
            ("bob", b"b0b", "allow"),
            ("bob", b"bob", "deny"),
            ("carol", b"b0b", "deny"),
        ]:
            decision = result_of(auth.authenticate(creds(username, password)))
            self.assertEqual(decision.outcome, outcome, (username, password))

    def test_mosquitto_passwd_edits_our_file(self) -> None:
        """mosquitto_passwd reads what we write: it adds a user to our file intact."""
        require_executables("mosquitto_passwd")
        self.assertEqual(cli.main(["passwd", "-c", "-b", self.path, "alice", "a"]), 0)
        self.mosquitto_passwd("-b", self.path, "bob", "b")
        with open(self.path, "rb") as stream:
            users = parse_password_file(stream.read(), self.path)
        self.assertTrue(users["alice"].matches(b"a"))
        self.assertTrue(users["bob"].matches(b"b"))

    def test_mosquitto_broker_accepts_our_file(self) -> None:
        """
        mosquitto (allow_anonymous false, password_file = a file our command wrote,
        with a comment and the default count) lets in the right password only.
        """
        require_executables("mosquitto", "mosquitto_pub")
        self.assertEqual(cli.main(["passwd", "-c", "-b", self.path, "alice", "s3cret"]), 0)
        self.assertEqual(cli.main(["passwd", "-I", "101", "-b", self.path, "bob", "b"]), 0)
        with open(self.path) as stream:
            text = stream.read()
        self.tmp.write("passwd", "# written by mqttbroker passwd\n" + text)
        port = free_port()
        config = self.tmp.write(
            "mosquitto.conf",
            # As root, mosquitto would drop to user "mosquitto", which may not read a
            # 0600 file; stay who we are.
            ("user root\n" if os.geteuid() == 0 else "")
            + f"listener {port} {HOST}\nallow_anonymous false\npassword_file {self.path}\n",
        )
        broker = self.spawn(["mosquitto", "-c", config])
        self.wait_for_port(port, broker)

        def publish(*credentials: str) -> tuple[int, str]:
            status, out, err = self.run_program(
                ["mosquitto_pub", "-h", HOST, "-p", str(port), "-t", "t", "-m", "m", *credentials]
            )
            return status, out + err

        self.assertEqual(publish("-u", "alice", "-P", "s3cret"), (0, ""))
        self.assertEqual(publish("-u", "bob", "-P", "b"), (0, ""))
        for credentials in [("-u", "alice", "-P", "wrong"), ("-u", "nobody", "-P", "s3cret"), ()]:
            status, output = publish(*credentials)
            self.assertNotEqual(status, 0, credentials)
            self.assertIn("not authorised", output)
        self.assertIsNone(broker.poll(), "mosquitto exited")

    def wait_for_port(self, port: int, process: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self.fail(f"mosquitto exited: {process.stderr.read() if process.stderr else ''!r}")
            try:
                socket.create_connection((HOST, port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.05)
        self.fail(f"mosquitto did not listen on {port} within {TIMEOUT} s")
