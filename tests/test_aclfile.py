"""
Tests for L{mqttbroker.backends.aclfile}: the mosquitto-compatible ACL file.

Unit tests: one per rule form and per malformed line, then the semantics case by case
(tables of identity, action, topic, expected answer, and why), the CVE rows of
RELIABILITY.md for ACLs, the cache, reload, and C{build}. The cross-check at the end
runs Debian's mosquitto with the same ACL file and compares what mosquitto_pub and
mosquitto_sub can publish and receive with what the authorizer answers.
"""

from __future__ import annotations

import os
import queue
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from typing import IO

from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SkipTest, SynchronousTestCase
from zope.interface.verify import verifyObject

from mqttbroker.backends import BackendPlugin
from mqttbroker.backends.aclfile import (
    DENY,
    READ,
    WRITE,
    AclFileAuthorizer,
    Rule,
    build,
    parse_acl,
)
from mqttbroker.interfaces import IAuthorizer, Identity, IReloadable

RW = READ | WRITE


def who(username: str | None, client_id: str = "c1") -> Identity:
    return Identity(username, client_id)


ALICE = who("alice", "alice-1")
BOB = who("bob", "bob-1")
CAROL = who("carol", "carol-1")  # in no user block
ROOT = who("root", "root-1")
ANON = who(None, "anon-1")
DAVE = who("dave", "dave-1")


def temporary_directory(case: SynchronousTestCase) -> str:
    """A fresh directory, removed after the test (not left in the working directory)."""
    directory = tempfile.mkdtemp(prefix="mqttbroker-aclfile-")
    case.addCleanup(shutil.rmtree, directory, True)
    return directory


class _FileTestCase(SynchronousTestCase):
    def acl(self, text: str, **kwargs: int) -> AclFileAuthorizer:
        """An authorizer reading C{text} from a fresh file."""
        self.path = os.path.join(temporary_directory(self), "acl")
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(text)
        return AclFileAuthorizer(self.path, **kwargs)

    def rewrite(self, text: str) -> None:
        with open(self.path, "w", encoding="utf-8") as f:
            f.write(text)


# -- parsing: one test per rule form -----------------------------------------------------------


class ParseTests(SynchronousTestCase):
    def test_topic_forms(self) -> None:
        """
        C{topic [read|write|readwrite|deny] FILTER}: each access word, none (readwrite),
        a filter with spaces (everything after the access word, trimmed), repeated
        spaces, leading spaces, CRLF line ends, and mosquitto's reading of a single
        word as the filter (so C{topic read} is readwrite on a topic named "read").
        """
        table = [
            ("topic a/b", RW, "a/b"),
            ("topic read a/b", READ, "a/b"),
            ("topic write a/b", WRITE, "a/b"),
            ("topic readwrite a/+/#", RW, "a/+/#"),
            ("topic deny a/#", DENY, "a/#"),
            ("topic read my room/temp sensor", READ, "my room/temp sensor"),
            ("topic   write    a/b   ", WRITE, "a/b"),
            ("   topic read a", READ, "a"),
            ("topic read a/b\r", READ, "a/b"),
            ("topic read\t", RW, "read"),
            ("topic read", RW, "read"),
            ("topic read $SYS/#", READ, "$SYS/#"),
        ]
        for line, access, text in table:
            rules = parse_acl(line.encode())
            self.assertEqual(rules.anonymous, [Rule(access, text, 1)], line)
            self.assertEqual((rules.users, rules.patterns), ({}, []), line)

    def test_pattern_forms(self) -> None:
        """
        C{pattern} takes the same forms, keeps C{%u}/C{%c} for later, and applies to
        every client wherever it is written (before or inside a user block).
        """
        table = [
            ("pattern users/%u/#", RW, "users/%u/#"),
            ("pattern read clients/%c/#", READ, "clients/%c/#"),
            ("pattern write %u/%c/out", WRITE, "%u/%c/out"),
            ("pattern readwrite dev/%u-%c", RW, "dev/%u-%c"),
            ("pattern deny users/%u/locked", DENY, "users/%u/locked"),
        ]
        for line, access, text in table:
            rules = parse_acl(f"user alice\n{line}\n".encode())
            self.assertEqual(rules.patterns, [Rule(access, text, 2)], line)
            self.assertEqual(rules.users, {"alice": []}, line)
        rule = Rule(RW, "%u/%c", 1)
        self.assertEqual(
            (rule.levels, rule.uses_username, rule.uses_client_id), (("%u", "%c"), True, True)
        )

    def test_user_blocks(self) -> None:
        """
        Rules before any C{user} line are the anonymous block; each C{user} line
        starts a block (a name may hold spaces); two blocks for one name add up; a
        user line with no rule yields an empty block.
        """
        text = (
            b"topic read public/#\n"
            b"user alice\n"
            b"topic a\n"
            b"user bob smith  \n"
            b"topic write b\n"
            b"user alice\n"
            b"topic deny c\n"
            b"user dave\n"
        )
        rules = parse_acl(text)
        self.assertEqual(rules.anonymous, [Rule(READ, "public/#", 1)])
        self.assertEqual(
            rules.users,
            {
                "alice": [Rule(RW, "a", 3), Rule(DENY, "c", 7)],
                "bob smith": [Rule(WRITE, "b", 5)],
                "dave": [],
            },
        )

    def test_comments_and_blank_lines(self) -> None:
        """A line starting with C{#}, an empty line or one of blanks is nothing."""
        text = b"# a comment\n\n    \n\t\n#topic read x\ntopic read y\n# end"
        self.assertEqual(parse_acl(text).anonymous, [Rule(READ, "y", 6)])
        self.assertEqual(parse_acl(b"").anonymous, [])

    def test_malformed_lines(self) -> None:
        """
        A malformed line is a configuration error naming the file and the line, as
        mosquitto refuses them (an unknown keyword, a tab where a space belongs, an
        indented comment, no filter, no user name, a bad access word, an invalid
        filter, text that is not UTF-8).
        """
        table = [
            b"bogus line",
            b"topics read x",
            b"\ttopic read x",
            b"topic\tread x",
            b"  # indented comment",
            b"topic",
            b"pattern   ",
            b"user",
            b"user   ",
            b"topic reed a b",
            b"topic read a/#/b",
            b"topic read a+/b",
            b"pattern read %u/#x",
            b"topic read \xff",
        ]
        for line in table:
            with self.assertRaises(ValueError, msg=repr(line)) as caught:
                parse_acl(b"# ok\ntopic read ok\n" + line + b"\n", "/etc/acl")
            self.assertIn("/etc/acl, line 3", str(caught.exception), line)


# -- semantics, case by case -------------------------------------------------------------------

ACL = """\
# anonymous clients
topic read public/#
topic deny public/secret
topic write anon/in

user alice
topic readwrite sensors/#
topic deny sensors/private/#
topic write cmd/alice
topic read $SYS/broker/#
topic read my room/temp

user bob
topic read sensors/+/temp

user root
topic readwrite #

user dave
topic read #
topic deny +/secret

pattern readwrite users/%u/#
pattern read clients/%c/#
pattern deny users/%u/locked
"""


class SemanticsTests(_FileTestCase):
    def setUp(self) -> None:
        self.authorizer = self.acl(ACL)

    def check(self, table: list[tuple[Identity, str, str, bool, str]]) -> None:
        """Each row: identity, pub/recv/sub, topic or filter, expected, why."""
        a = self.authorizer
        for identity, action, topic, expected, why in table:
            if action == "pub":
                answer = a.may_publish(identity, topic, 1, False)
            elif action == "recv":
                answer = a.may_receive(identity, topic)
            else:
                answer = a.may_subscribe(identity, topic, 1) == 1
            self.assertEqual(answer, expected, f"{identity.username} {action} {topic}: {why}")

    def test_topic_rules(self) -> None:
        """Access words: read lets receive only, write publish only, readwrite both."""
        self.check(
            [
                (ALICE, "pub", "sensors/a", True, "readwrite sensors/#"),
                (ALICE, "recv", "sensors/a/b", True, "readwrite sensors/#"),
                (ALICE, "recv", "sensors", True, "sensors/# matches its parent level"),
                (ALICE, "pub", "cmd/alice", True, "write cmd/alice"),
                (ALICE, "recv", "cmd/alice", False, "write only"),
                (BOB, "recv", "sensors/x/temp", True, "read sensors/+/temp"),
                (BOB, "pub", "sensors/x/temp", False, "read only"),
                (BOB, "recv", "sensors/x/hum", False, "no rule matches"),
                (ALICE, "recv", "my room/temp", True, "a filter with a space"),
                (ALICE, "pub", "other", False, "nothing granted"),
            ]
        )

    def test_deny_wins(self) -> None:
        """
        A deny rule wins over any grant, before or after it, in the block or in a
        pattern: even a pattern deny beats a user block's grant (mosquitto 2.0 lets
        the block's grant win there; we do not).
        """
        self.check(
            [
                (ALICE, "pub", "sensors/private/x", False, "deny sensors/private/#"),
                (ALICE, "recv", "sensors/private/x", False, "deny sensors/private/#"),
                (ALICE, "recv", "sensors/private", False, "deny covers the parent level"),
                (ANON, "recv", "public/secret", False, "anonymous deny"),
                (ANON, "recv", "public/secrets", True, "deny public/secret is exact"),
                (ALICE, "pub", "users/alice/locked", False, "pattern deny over pattern grant"),
                (DAVE, "recv", "a/secret", False, "deny +/secret over read #"),
                (DAVE, "recv", "a/public", True, "read #"),
            ]
        )
        self.authorizer = self.acl(
            "user alice\ntopic readwrite users/alice/locked\npattern deny users/%u/locked\n"
        )
        self.check([(ALICE, "pub", "users/alice/locked", False, "pattern deny over block")])

    def test_anonymous_block(self) -> None:
        """
        Rules before any user line apply to clients without a user name, and only to
        them; a named client without a block gets only the patterns.
        """
        self.check(
            [
                (ANON, "recv", "public/a", True, "anonymous read public/#"),
                (ANON, "pub", "public/a", False, "read only"),
                (ANON, "pub", "anon/in", True, "anonymous write anon/in"),
                (ANON, "recv", "anon/in", False, "write only"),
                (ALICE, "recv", "public/a", False, "the anonymous block is not alice's"),
                (CAROL, "recv", "public/a", False, "nor carol's (no block)"),
                (CAROL, "pub", "users/carol/x", True, "carol: patterns only"),
                (CAROL, "recv", "sensors/a", False, "carol: nothing else"),
            ]
        )

    def test_patterns(self) -> None:
        """
        C{%u} is the user name, C{%c} the client id; anonymous clients never match a
        C{%u} pattern; each client sees only its own substitution.
        """
        self.check(
            [
                (ALICE, "pub", "users/alice/x", True, "users/%u/#"),
                (ALICE, "recv", "users/alice", True, "users/%u/# on its parent level"),
                (ALICE, "pub", "users/bob/x", False, "another user's space"),
                (ALICE, "recv", "clients/alice-1/x", True, "clients/%c/#"),
                (ALICE, "pub", "clients/alice-1/x", False, "read-only pattern"),
                (ALICE, "recv", "clients/alice-2/x", False, "another client id"),
                (who("alice", "alice-2"), "recv", "clients/alice-2/x", True, "same user, other id"),
                (ANON, "recv", "clients/anon-1/x", True, "%c applies to anonymous clients"),
                (ANON, "pub", "users/anon-1/x", False, "anonymous never matches %u"),
                (ANON, "pub", "users//x", False, "... not even as an empty name"),
                (ANON, "pub", "users/None/x", False, "... nor as 'None'"),
            ]
        )

    def test_sys_topics(self) -> None:
        """
        C{$SYS/...} (any C{$} topic) matches only rules starting with C{$}: C{#} and
        C{+} in the first level never reach it, for publish, receive and subscribe.
        """
        self.check(
            [
                (ALICE, "recv", "$SYS/broker/version", True, "read $SYS/broker/#"),
                (ALICE, "sub", "$SYS/broker/#", True, "read $SYS/broker/#"),
                (ALICE, "sub", "$SYS/#", False, "wider than the rule"),
                (ALICE, "recv", "$SYS/other", False, "outside the rule"),
                (ROOT, "recv", "$SYS/broker/version", False, "readwrite # does not reach $SYS"),
                (ROOT, "pub", "$SYS/broker/version", False, "... nor for publishing"),
                (ROOT, "sub", "$SYS/#", False, "... nor for subscribing"),
                (ROOT, "recv", "$other/x", False, "any $ topic"),
                (DAVE, "recv", "$SYS/x", False, "read # neither"),
                (ANON, "recv", "$SYS/broker/version", False, "anonymous: no $ rule"),
                (ROOT, "recv", "a/$SYS", True, "$ only counts in the first level"),
            ]
        )
        authorizer = self.acl("pattern read %u/#\n")
        self.assertFalse(authorizer.may_receive(who("$SYS"), "$SYS/broker/version"))
        self.assertTrue(authorizer.may_receive(who("eve"), "eve/x"))

    def test_subscribe_coverage(self) -> None:
        """
        A filter may be subscribed when one read rule covers all of it and no deny
        rule covers all of it; the QoS asked for is granted.
        """
        self.check(
            [
                (BOB, "sub", "sensors/+/temp", True, "the rule itself"),
                (BOB, "sub", "sensors/x/temp", True, "a literal inside the rule"),
                (BOB, "sub", "sensors/#", False, "wider than sensors/+/temp"),
                (BOB, "sub", "sensors/+/+", False, "wider"),
                (BOB, "sub", "#", False, "wider"),
                (ALICE, "sub", "sensors/#", True, "the rule itself"),
                (ALICE, "sub", "sensors/+/temp", True, "narrower than sensors/#"),
                (ALICE, "sub", "sensors", True, "sensors/# covers the parent"),
                (ALICE, "sub", "#", False, "sensors/# does not allow #"),
                (ALICE, "sub", "+/a", False, "neither +/a"),
                (ALICE, "sub", "sensors/private/#", False, "covered by a deny"),
                (ALICE, "sub", "sensors/private", False, "covered by a deny"),
                (ALICE, "sub", "cmd/alice", False, "write-only rule"),
                (ROOT, "sub", "#", True, "readwrite #"),
                (DAVE, "sub", "+/secret", False, "covered by deny +/secret"),
                (DAVE, "sub", "#", True, "read #; a/secret filtered per message"),
                (ANON, "sub", "public/#", True, "anonymous read public/#"),
                (ALICE, "sub", "users/alice/#", True, "a pattern"),
                (ALICE, "sub", "users/+/#", False, "wider than the pattern"),
                (ALICE, "sub", "$share/g/sensors/#", True, "shared: judged by its filter"),
                (ALICE, "sub", "$share/g/#", False, "shared: judged by its filter"),
            ]
        )
        self.assertEqual(self.authorizer.may_subscribe(ALICE, "sensors/#", 2), 2)
        self.assertEqual(self.authorizer.may_subscribe(ALICE, "sensors/#", 0), 0)
        self.assertIsNone(self.authorizer.may_subscribe(ALICE, "$share/g", 1))

    def test_wildcard_subscription_never_delivers_unreadable(self) -> None:
        """
        A wildcard subscription the ACL allows still receives nothing the subscriber
        may not read: the deny rules inside it are applied per message.
        """
        for identity, topic_filter, unreadable, readable in [
            (ALICE, "sensors/#", "sensors/private/x", "sensors/public/x"),
            (ALICE, "sensors/+/x", "sensors/private/x", "sensors/public/x"),
            (DAVE, "#", "a/secret", "a/public"),
            (DAVE, "+/+", "b/secret", "b/public"),
            (ALICE, "users/alice/#", "users/alice/locked", "users/alice/free"),
        ]:
            self.assertEqual(self.authorizer.may_subscribe(identity, topic_filter, 1), 1)
            self.assertFalse(self.authorizer.may_receive(identity, unreadable), unreadable)
            self.assertTrue(self.authorizer.may_receive(identity, readable), readable)


# -- the CVE rows of RELIABILITY.md ------------------------------------------------------------


class SecurityTests(_FileTestCase):
    def test_cve_2017_7650_username(self) -> None:
        """
        CVE-2017-7650: C{+}, C{#} or C{/} in a user name never widens a C{%u} pattern
        (a granting pattern never applies to such a name).
        """
        authorizer = self.acl("pattern readwrite users/%u/#\n")
        for name, topic in [
            ("+", "users/alice/x"),
            ("#", "users/alice/x"),
            ("#", "users/#/x"),
            ("a+", "users/a+/x"),
            ("alice/x", "users/alice/x/y"),
            ("alice/x", "users/alice/x"),
        ]:
            identity = who(name)
            self.assertFalse(authorizer.may_publish(identity, topic, 0, False), (name, topic))
            self.assertFalse(authorizer.may_receive(identity, topic), (name, topic))
            self.assertIsNone(authorizer.may_subscribe(identity, "users/+/#", 0), name)
            self.assertIsNone(authorizer.may_subscribe(identity, "users/#", 0), name)
        self.assertTrue(authorizer.may_receive(who("alice"), "users/alice/x"))

    def test_cve_2017_7650_client_id(self) -> None:
        """The same for C{+}, C{#} or C{/} in a client id and C{%c} patterns."""
        authorizer = self.acl("topic read public/#\npattern read clients/%c/#\n")
        for client_id, topic in [
            ("+", "clients/other/x"),
            ("#", "clients/other/x"),
            ("x/y", "clients/x/y/z"),
            ("x/y", "clients/x/y"),
        ]:
            for username in (None, "alice"):
                identity = who(username, client_id)
                self.assertFalse(authorizer.may_receive(identity, topic), (client_id, topic))
                self.assertIsNone(authorizer.may_subscribe(identity, "clients/#", 0))
        # The client's other rules still apply (as in mosquitto).
        self.assertTrue(authorizer.may_receive(who(None, "+"), "public/a"))
        self.assertFalse(authorizer.may_receive(who(None, ""), "clients//x"))

    def test_dangerous_names_only_lose_access_to_deny_patterns(self) -> None:
        """
        A denying pattern is applied to a user name it cannot be substituted with in
        its widest form (the C{%u} level and everything after become C{#}), so a
        strange name can only lose access.
        """
        authorizer = self.acl(
            "user x+y\ntopic readwrite users/shared\ntopic readwrite other\n"
            "pattern deny users/%u/locked\n"
        )
        self.assertFalse(authorizer.may_publish(who("x+y"), "users/shared", 0, False))
        self.assertTrue(authorizer.may_publish(who("x+y"), "other", 0, False))

    def test_cve_2018_12550_empty_file_denies(self) -> None:
        """
        CVE-2018-12550: an empty ACL file (or one of comments only) denies
        everything, to everyone.
        """
        for text in ("", "\n\n", "# nothing here\n"):
            authorizer = self.acl(text)
            for identity in (ANON, ALICE, ROOT):
                for topic in ("a", "a/b", "#", "$SYS/broker/version"):
                    if topic != "#":
                        self.assertFalse(authorizer.may_publish(identity, topic, 0, False))
                        self.assertFalse(authorizer.may_receive(identity, topic))
                    self.assertIsNone(authorizer.may_subscribe(identity, topic, 0))

    def test_no_rule_for_user_denies(self) -> None:
        """
        A user without a block (and no pattern), an empty user block, and anonymous
        clients when there are no rules before the first user line: all denied.
        """
        authorizer = self.acl("user alice\ntopic readwrite #\nuser bob\n")
        for identity in (BOB, CAROL, ANON):
            self.assertFalse(authorizer.may_publish(identity, "a", 0, False))
            self.assertFalse(authorizer.may_receive(identity, "a"))
            self.assertIsNone(authorizer.may_subscribe(identity, "#", 0))
        self.assertTrue(authorizer.may_receive(ALICE, "a"))


# -- cache, reload, build ----------------------------------------------------------------------


class CacheAndReloadTests(_FileTestCase):
    def test_cache_is_bounded(self) -> None:
        """At most C{cache} decisions are kept; answers stay right past the bound."""
        authorizer = self.acl("topic read a/#\n", cache_size=4)
        for n in range(20):
            self.assertTrue(authorizer.may_receive(ANON, f"a/{n}"))
            self.assertFalse(authorizer.may_receive(ANON, f"b/{n}"))
        self.assertLessEqual(len(authorizer._decisions), 4)
        self.assertLessEqual(len(authorizer._views), 1)
        uncached = self.acl("topic read a/#\n", cache_size=0)
        self.assertTrue(uncached.may_receive(ANON, "a/1"))
        self.assertEqual(len(uncached._decisions), 0)

    def test_cache_is_per_client(self) -> None:
        """A cached answer for one client id is never reused for another."""
        authorizer = self.acl("pattern read clients/%c\n")
        self.assertTrue(authorizer.may_receive(who("u", "one"), "clients/one"))
        self.assertFalse(authorizer.may_receive(who("u", "two"), "clients/one"))
        self.assertFalse(authorizer.may_receive(who("v", "one"), "clients/two"))

    def test_reload_replaces_rules_and_cache(self) -> None:
        """A reload that revokes access takes effect at once (nothing stale cached)."""
        authorizer = self.acl("user alice\ntopic readwrite a/#\n")
        self.assertTrue(authorizer.may_receive(ALICE, "a/b"))
        self.assertEqual(authorizer.may_subscribe(ALICE, "a/#", 1), 1)
        self.rewrite("user alice\ntopic readwrite b/#\n")
        with capturedLogs() as events:
            self.assertTrue(authorizer.reload())
        self.assertFalse(authorizer.may_receive(ALICE, "a/b"))
        self.assertIsNone(authorizer.may_subscribe(ALICE, "a/#", 1))
        self.assertTrue(authorizer.may_receive(ALICE, "b/c"))
        self.assertIn("reloaded", " ".join(formatEvent(e) for e in events))

    def test_broken_reload_keeps_rules(self) -> None:
        """
        A reload finding a malformed or missing file returns False, keeps the old
        rules and logs why at error level, naming the line.
        """
        authorizer = self.acl("user alice\ntopic readwrite a/#\n")
        self.rewrite("user alice\ntopic readwrite a/#\ntopic bogus x y\n")
        with capturedLogs() as events:
            self.assertFalse(authorizer.reload())
        self.assertTrue(authorizer.may_receive(ALICE, "a/b"))
        errors = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertIn("line 3", errors[0])
        os.unlink(self.path)
        with capturedLogs() as events:
            self.assertFalse(authorizer.reload())
        self.assertTrue(authorizer.may_receive(ALICE, "a/b"))
        self.assertTrue(any(e.get("log_level") == LogLevel.error for e in events))

    def test_reload_if_changed(self) -> None:
        """
        Unchanged: no reload. A new size, or a new modification time with the same
        size: reloaded. A broken change is tried once, and the next change is picked
        up.
        """
        authorizer = self.acl("topic read a\n")
        self.assertFalse(authorizer.reload_if_changed())
        self.rewrite("topic read bb\n")
        self.assertTrue(authorizer.reload_if_changed())
        self.assertTrue(authorizer.may_receive(ANON, "bb"))
        self.assertFalse(authorizer.reload_if_changed())

        info = os.stat(self.path)
        self.rewrite("topic read cc\n")  # same size
        os.utime(self.path, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
        self.assertTrue(authorizer.reload_if_changed())
        self.assertTrue(authorizer.may_receive(ANON, "cc"))

        self.rewrite("topic bad access word\n")
        with capturedLogs():
            self.assertFalse(authorizer.reload_if_changed())
            self.assertFalse(authorizer.reload_if_changed())
        self.assertTrue(authorizer.may_receive(ANON, "cc"))
        self.rewrite("topic read dd\n")
        self.assertTrue(authorizer.reload_if_changed())
        self.assertTrue(authorizer.may_receive(ANON, "dd"))


class BuildTests(_FileTestCase):
    def test_build(self) -> None:
        """C{build} (directly and through a lazy plugin) gives a working authorizer."""
        self.acl("topic read a\n")
        authorizer = build({"file": self.path})
        self.assertTrue(verifyObject(IAuthorizer, authorizer))
        self.assertTrue(verifyObject(IReloadable, authorizer))
        self.assertTrue(authorizer.may_receive(ANON, "a"))
        plugin = BackendPlugin("aclfile", "acl", "ACL file", "mqttbroker.backends.aclfile:build")
        built = plugin.build({"file": self.path, "cache": "10"})
        assert isinstance(built, AclFileAuthorizer)
        self.assertEqual(built.cache_size, 10)

    def test_build_errors(self) -> None:
        """Bad parameters and unusable files are ValueErrors naming the parameter."""
        self.acl("topic read a\n")
        self.rewrite("topic read a\ntopic\n")
        missing = os.path.join(temporary_directory(self), "missing", "acl")
        for parameters, expected in [
            ({}, "'file'"),
            ({"file": ""}, "'file'"),
            ({"file": self.path, "fiel": "x"}, "'fiel'"),
            ({"file": self.path, "cache": "many"}, "cache="),
            ({"file": self.path, "cache": "-1"}, "cache="),
            ({"file": missing}, f"file={missing}"),
            ({"file": self.path}, "line 2"),
        ]:
            with self.assertRaises(ValueError, msg=str(parameters)) as caught:
                build(parameters)
            self.assertIn(expected, str(caught.exception))


# -- cross-check against mosquitto -------------------------------------------------------------

MOSQUITTO = "/usr/sbin/mosquitto"
TIMEOUT = 10.0

CROSS_ACL = """\
topic read public/#
topic deny public/secret
topic write anon/#

user alice
topic readwrite sensors/#
topic deny sensors/private/#
topic write cmd/alice/#
topic read $SYS/broker/version

user watcher
topic readwrite #

pattern read clients/%c/#
pattern readwrite users/%u/#
"""

#: Published by the watcher; who receives what is compared.
DELIVERED = [
    "public/a",
    "public/secret",
    "anon/in",
    "sensors/a",
    "sensors/private/x",
    "cmd/alice/d",
    "clients/alice-1/x",
    "clients/anon-1/x",
    "clients/other/x",
    "users/alice/x",
    "users/bob/x",
    "other/x",
]

#: Published by alice and by an anonymous client; the watcher sees what got through.
PUBLISHED = {
    "alice": [
        "sensors/p",
        "sensors/private/p",
        "cmd/alice/p",
        "users/alice/p",
        "users/watcher/p",
        "public/p",
        "clients/alice-1/p",
        "other/p",
    ],
    None: ["anon/q", "public/q", "other/q", "users/anon-2/q", "clients/anon-2/q"],
}

PASSWORDS = {"alice": "alice-secret", "watcher": "watcher-secret"}


class _Subscriber:
    """mosquitto_sub in a subprocess, its lines read by a thread into a queue."""

    def __init__(self, argv: list[str]) -> None:
        self.process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.topics: list[str] = []
        assert self.process.stdout is not None
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self.lines.put(raw.decode(errors="replace").rstrip("\n"))

    def wait_for(self, predicate: str, end_topic: str | None = None) -> None:
        """Read lines until one contains C{predicate} (or the message C{end_topic})."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"mosquitto_sub: no {predicate!r} in time") from None
            if line.startswith("MSG "):
                topic = line[4:]
                if topic == end_topic:
                    return
                self.topics.append(topic)
            elif end_topic is None and predicate in line:
                return

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=TIMEOUT)
        assert self.process.stdout is not None
        self.process.stdout.close()


class MosquittoCrossCheckTests(SynchronousTestCase):
    """
    The same ACL file in Debian's mosquitto (2.0) and in the authorizer: what
    mosquitto_sub receives and what mosquitto_pub gets through must be what
    L{AclFileAuthorizer.may_receive} and L{AclFileAuthorizer.may_publish} say.
    (Subscriptions are not compared: mosquitto 2.0 grants every SUBSCRIBE and only
    filters deliveries.)
    """

    def setUp(self) -> None:
        for program in (MOSQUITTO, "mosquitto_passwd", "mosquitto_pub", "mosquitto_sub", "stdbuf"):
            if not (os.path.exists(program) or shutil.which(program)):
                raise SkipTest(f"{program} not found (apt-get install mosquitto mosquitto-clients)")
        self.directory = temporary_directory(self)
        self.acl_path = os.path.join(self.directory, "acl")
        with open(self.acl_path, "w", encoding="utf-8") as f:
            f.write(CROSS_ACL)
        passwd = os.path.join(self.directory, "passwd")
        for index, (user, password) in enumerate(PASSWORDS.items()):
            create = ["-c"] if index == 0 else []
            subprocess.run(
                ["mosquitto_passwd", "-b", *create, passwd, user, password],
                check=True,
                timeout=TIMEOUT,
                capture_output=True,
            )
        self.port = self.start_mosquitto(passwd)

    def start_mosquitto(self, passwd: str) -> int:
        """Start mosquitto on a free loopback port (retrying if the port was taken)."""
        for _attempt in range(5):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                port = probe.getsockname()[1]
            conf = os.path.join(self.directory, "mosquitto.conf")
            with open(conf, "w", encoding="utf-8") as f:
                f.write(
                    f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                    f"password_file {passwd}\nacl_file {self.acl_path}\n"
                    "persistence false\nlog_dest stderr\n"
                    + ("user root\n" if os.geteuid() == 0 else "")
                )
            log = open(os.path.join(self.directory, "mosquitto.log"), "wb")  # noqa: SIM115
            self.addCleanup(log.close)
            process = subprocess.Popen(
                [MOSQUITTO, "-c", conf], stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
            self.addCleanup(self.stop, process)
            deadline = time.monotonic() + TIMEOUT
            while time.monotonic() < deadline and process.poll() is None:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                except OSError:
                    time.sleep(0.02)
                else:
                    return port
        raise AssertionError(f"mosquitto did not start; see {self.directory}/mosquitto.log")

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=TIMEOUT)

    def credentials(self, user: str | None) -> list[str]:
        return [] if user is None else ["-u", user, "-P", PASSWORDS[user]]

    def subscribe(self, user: str | None, client_id: str, *filters: str) -> _Subscriber:
        argv = [
            "stdbuf",
            "-oL",
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-i",
            client_id,
            *self.credentials(user),
            "-d",
            "-F",
            "MSG %t",
            "-W",
            str(int(TIMEOUT * 3)),
        ]
        for topic_filter in filters:
            argv += ["-t", topic_filter]
        subscriber = _Subscriber(argv)
        self.addCleanup(subscriber.kill)
        subscriber.wait_for("received SUBACK")
        return subscriber

    def publish(self, user: str | None, client_id: str, topic: str) -> None:
        subprocess.run(
            [
                "mosquitto_pub",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-i",
                client_id,
                *self.credentials(user),
                "-q",
                "1",
                "-t",
                topic,
                "-m",
                topic,
            ],
            check=True,
            timeout=TIMEOUT,
            capture_output=True,
        )

    def test_same_decisions_as_mosquitto(self) -> None:
        """
        For alice, an anonymous client, and an anonymous client whose id is C{+}
        (CVE-2017-7650 against C{clients/%c/#}): the messages each receives through
        C{#} and C{$SYS/broker/version}, and the messages alice and an anonymous
        client manage to publish, are exactly those the authorizer allows.
        """
        authorizer = AclFileAuthorizer(self.acl_path)
        receivers = [
            ("alice", "alice-1", "sensors/end"),
            (None, "anon-1", "public/end"),
            (None, "+", "public/end"),
        ]
        subscribers = [
            self.subscribe(user, cid, "#", "$SYS/broker/version") for user, cid, _ in receivers
        ]
        watcher = self.subscribe("watcher", "watcher-1", "#")

        for topic in DELIVERED:
            self.publish("watcher", "watcher-2", topic)
        for user, topics in PUBLISHED.items():
            for topic in topics:
                self.publish(user, "alice-2" if user else "anon-2", topic)
        for end in ("sensors/end", "public/end"):
            self.publish("watcher", "watcher-2", end)

        # What each subscriber may see: the watcher's messages, the broker's retained
        # version, and the publishes the authorizer lets through.
        candidates = [*DELIVERED, "$SYS/broker/version"]
        for user, topics in PUBLISHED.items():
            identity = Identity(user, "alice-2" if user else "anon-2")
            candidates += [t for t in topics if authorizer.may_publish(identity, t, 1, False)]
        for (user, cid, end), subscriber in zip(receivers, subscribers, strict=True):
            subscriber.wait_for(end, end_topic=end)
            identity = Identity(user, cid)
            expected = [t for t in candidates if authorizer.may_receive(identity, t)]
            self.assertEqual(sorted(subscriber.topics), sorted(expected), (user, cid))

        watcher.wait_for("public/end", end_topic="public/end")
        got_through = set(watcher.topics) - {"sensors/end"}
        for user, topics in PUBLISHED.items():
            identity = Identity(user, "alice-2" if user else "anon-2")
            expected = {t for t in topics if authorizer.may_publish(identity, t, 1, False)}
            self.assertEqual(got_through & set(topics), expected, user)
        # The cases are not trivial: each side allows something and refuses something.
        self.assertTrue(0 < len(got_through - set(DELIVERED)) < sum(map(len, PUBLISHED.values())))
