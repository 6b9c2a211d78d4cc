# -*- test-case-name: tests.test_aclfile -*-
"""
An authorizer reading mosquitto's C{acl_file} format (C{--acl aclfile:file=...}), so
that operators migrating from mosquitto keep their ACL files unchanged.

The file is parsed as mosquitto 2.0 parses it (same keywords, same whitespace rules,
same errors), but judged more strictly where mosquitto is unsafe or surprising: a
C{deny} rule wins over every grant wherever it is written, a C{%u}/C{%c} pattern
never grants anything to a user name or client id holding C{+}, C{#} or C{/}
(CVE-2017-7650), an empty file denies everything (CVE-2018-12550), and a
subscription is refused unless one read rule covers its whole filter (mosquitto 2.0
accepts every subscription and filters on delivery; we do both).

Speed: rules are split into levels once, when the file is read; the rules that
apply to one client (its block plus the patterns, substituted) are resolved once per
(user name, client id); decisions are kept in a bounded LRU keyed by (what, user
name, client id, topic). A reload replaces everything at once.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field

from twisted.logger import Logger
from zope.interface import implementer

from mqttbroker.interfaces import IAuthorizer, Identity, IReloadable
from mqttbroker.topics import shared_subscription, topic_filter_error

__all__ = ["AclFileAuthorizer", "AclRules", "Rule", "build", "parse_acl"]

_log = Logger()

READ = 1
WRITE = 2
DENY = 0

_ACCESS = {"read": READ, "write": WRITE, "readwrite": READ | WRITE, "deny": DENY}

#: C's isspace() in the C locale: what mosquitto trims.
_BLANKS = " \t\n\v\f\r"

#: Characters that, substituted for %u or %c, would change what a pattern matches.
_DANGEROUS = re.compile(r"[+#/]")

_SUBSTITUTION = re.compile(r"%[cu]")

#: Default number of cached decisions (and a tenth of it for resolved clients).
DEFAULT_CACHE = 65536


@dataclass(frozen=True)
class Rule:
    """
    One C{topic} or C{pattern} line.

    @ivar access: L{READ}, L{WRITE}, both, or L{DENY} (0).
    @ivar text: the filter as written (with C{%u}/C{%c} for a pattern).
    @ivar line: where it was written, for messages.
    @ivar levels: C{text} split at C{/}, computed once.
    """

    access: int
    text: str
    line: int
    levels: tuple[str, ...] = field(init=False, compare=False)
    uses_username: bool = field(init=False, compare=False)
    uses_client_id: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "levels", tuple(self.text.split("/")))
        object.__setattr__(self, "uses_username", "%u" in self.text)
        object.__setattr__(self, "uses_client_id", "%c" in self.text)


@dataclass
class AclRules:
    """
    A parsed ACL file.

    @ivar anonymous: the rules before any C{user} line (for clients without a name).
    @ivar users: each user's rules (several blocks for one name add up, as in
        mosquitto).
    @ivar patterns: the C{pattern} lines, for every client.
    """

    anonymous: list[Rule] = field(default_factory=list)
    users: dict[str, list[Rule]] = field(default_factory=dict)
    patterns: list[Rule] = field(default_factory=list)


def parse_acl(data: bytes, source: str = "<acl>") -> AclRules:
    """
    Parse an ACL file the way mosquitto 2.0 does.

    A line whose first character is C{#} is a comment; trailing white space is
    dropped; words are separated by spaces (not tabs). C{topic}/C{pattern} take an
    optional access word and a filter that runs to the end of the line (so it may
    hold spaces, given an access word); a single word is the filter, with
    C{readwrite} access.

    @raise ValueError: naming C{source} and the line, for anything else (unknown
        keyword, missing filter or user name, bad access word, invalid filter, text
        that is not UTF-8).
    """
    rules = AclRules()
    user: str | None = None
    for number, raw in enumerate(data.split(b"\n"), start=1):
        try:
            line = raw.decode("utf-8").rstrip(_BLANKS)
        except UnicodeDecodeError:
            raise ValueError(f"{source}, line {number}: not valid UTF-8") from None
        if line.startswith("#"):
            continue
        keyword, rest = _word(line)
        if not keyword:
            continue  # blank
        if keyword in ("topic", "pattern"):
            access_word, remainder = _word(rest)
            if not access_word:
                raise ValueError(f"{source}, line {number}: {keyword} without a topic")
            if remainder:
                topic = remainder.strip(_BLANKS)
                access = _ACCESS.get(access_word)
                if access is None:
                    raise ValueError(
                        f"{source}, line {number}: access {access_word!r} is not one of "
                        "read, write, readwrite, deny"
                    )
            else:
                topic, access = access_word, READ | WRITE
            error = topic_filter_error(topic)
            if error is not None:
                raise ValueError(f"{source}, line {number}: topic {topic!r}: {error}")
            rule = Rule(access, topic, number)
            if keyword == "pattern":
                rules.patterns.append(rule)
            elif user is None:
                rules.anonymous.append(rule)
            else:
                rules.users[user].append(rule)
        elif keyword == "user":
            name = rest.strip(_BLANKS)
            if not name:
                raise ValueError(f"{source}, line {number}: user without a name")
            user = name
            rules.users.setdefault(user, [])
        else:
            raise ValueError(f"{source}, line {number}: {keyword!r} is not topic, pattern or user")
    return rules


def _word(text: str) -> tuple[str, str]:
    """
    The next space-separated word and what follows the one space after it, as
    C{strtok_r} gives them to mosquitto.
    """
    text = text.lstrip(" ")
    word, _, rest = text.partition(" ")
    return word, rest


# -- matching ----------------------------------------------------------------------------------


def _matches(rule: tuple[str, ...], topic: list[str]) -> bool:
    """Whether a topic name (split) matches a rule filter (split), with the C{$} rule."""
    if topic[0][:1] == "$" and rule[0] in ("+", "#"):
        return False
    count = len(topic)
    for index, part in enumerate(rule):
        if part == "#":
            return True
        if index >= count or (part != "+" and part != topic[index]):
            return False
    return len(rule) == count


def _covers(rule: tuple[str, ...], topic_filter: list[str]) -> bool:
    """
    Whether every topic matching C{topic_filter} matches C{rule}: C{a/#} covers
    C{a/+/b} and C{a}; C{a/+} does not cover C{a/#}; C{#} does not cover C{$SYS/#}.
    """
    if topic_filter[0][:1] == "$" and rule[0] in ("+", "#"):
        return False
    count = len(topic_filter)
    for index, part in enumerate(rule):
        if part == "#":
            return True
        if index >= count:
            return False
        wanted = topic_filter[index]
        if wanted == "#":
            return False
        if part not in ("+", wanted):
            return False  # a literal level covers only itself, never '+'
    return len(rule) == count


def _unusable(value: str | None) -> bool:
    """A user name or client id that must not be substituted into a granting pattern."""
    return not value or _DANGEROUS.search(value) is not None


@dataclass
class _View:
    """The rules that apply to one (user name, client id), substituted and split."""

    reads: list[tuple[str, ...]] = field(default_factory=list)
    writes: list[tuple[str, ...]] = field(default_factory=list)
    denies: list[tuple[str, ...]] = field(default_factory=list)

    def add(self, access: int, levels: tuple[str, ...]) -> None:
        if access == DENY:
            self.denies.append(levels)
            return
        if access & READ:
            self.reads.append(levels)
        if access & WRITE:
            self.writes.append(levels)


def _resolve(rules: AclRules, username: str | None, client_id: str) -> _View:
    """
    The rules for one client: its user block (or the anonymous block), then every
    pattern with C{%u} and C{%c} replaced.

    A granting pattern never applies when a value it needs is missing (no user name:
    anonymous), empty, or holds C{+}, C{#} or C{/} (CVE-2017-7650), nor when the
    substitution would turn its first level into a C{$} topic. A denying pattern
    applies to such a client in its widest form: from its first substituted level on
    it becomes C{#}, so a strange name can only lose access, never gain it. (Denying
    patterns with C{%u} do not apply to anonymous clients, as in mosquitto.)
    """
    view = _View()
    block = rules.anonymous if username is None else rules.users.get(username, [])
    for rule in block:
        view.add(rule.access, rule.levels)
    for rule in rules.patterns:
        if rule.uses_username and username is None:
            continue
        unsafe = (rule.uses_username and _unusable(username)) or (
            rule.uses_client_id and _unusable(client_id)
        )
        if unsafe:
            if rule.access == DENY:
                view.add(DENY, _widened(rule.levels))
            continue
        levels = tuple(
            _substitute(level, username or "", client_id) if "%" in level else level
            for level in rule.levels
        )
        if rule.access != DENY and levels[0][:1] == "$" and rule.levels[0][:1] != "$":
            continue
        view.add(rule.access, levels)
    return view


def _substitute(level: str, username: str, client_id: str) -> str:
    """C{%u} and C{%c} replaced, left to right as mosquitto does."""
    return _SUBSTITUTION.sub(lambda m: username if m.group(0) == "%u" else client_id, level)


def _widened(levels: tuple[str, ...]) -> tuple[str, ...]:
    for index, level in enumerate(levels):
        if "%c" in level or "%u" in level:
            return (*levels[:index], "#")
    return levels


# -- the authorizer ----------------------------------------------------------------------------


@implementer(IAuthorizer, IReloadable)
class AclFileAuthorizer:
    """
    Decides publish, subscribe and delivery from a mosquitto ACL file.

    @ivar path: the file.
    @ivar rules: what it said when it was last read successfully.
    """

    def __init__(self, path: str, cache_size: int = DEFAULT_CACHE) -> None:
        """
        Read C{path}.

        @raise ValueError: the file cannot be read or is malformed (naming the line).
        """
        self.path = path
        self.cache_size = cache_size
        self._decisions: OrderedDict[tuple[str, str | None, str, str], bool] = OrderedDict()
        self._views: OrderedDict[tuple[str | None, str], _View] = OrderedDict()
        self._stamp = _stamp(path)
        self.rules = _read(path)

    # IAuthorizer

    def may_publish(self, identity: Identity, topic: str, qos: int, retain: bool) -> bool:
        """A write rule matches C{topic} and no deny rule does (QoS and retain: any)."""
        return self._decide("w", identity, topic)

    def may_subscribe(self, identity: Identity, topic_filter: str, qos: int) -> int | None:
        """
        C{qos} when one read rule covers the whole filter and no deny rule covers it,
        else None. Deny rules that cover only part of it are applied per message by
        L{may_receive}. A shared subscription is judged by its filter.
        """
        shared = shared_subscription(topic_filter)
        if shared is not None:
            topic_filter = shared[1]
        if not topic_filter:
            return None
        return qos if self._decide("s", identity, topic_filter) else None

    def may_receive(self, identity: Identity, topic: str) -> bool:
        """A read rule matches C{topic} and no deny rule does."""
        return self._decide("r", identity, topic)

    # IReloadable

    def reload(self) -> bool:
        """
        Reread the file. A file that cannot be read or is malformed leaves the rules
        as they were (logged): a bad edit must not open or close the broker.
        """
        self._stamp = _stamp(self.path)
        try:
            rules = _read(self.path)
        except ValueError as error:
            _log.error("ACL file not reloaded, keeping the previous rules: {error}", error=error)
            return False
        self.rules = rules
        self._decisions.clear()
        self._views.clear()
        _log.info(
            "ACL file {path} reloaded: {users} users, {patterns} patterns",
            path=self.path,
            users=len(rules.users),
            patterns=len(rules.patterns),
        )
        return True

    def reload_if_changed(self) -> bool:
        """L{reload} when the file's modification time or size changed since it was read."""
        if _stamp(self.path) == self._stamp:
            return False
        return self.reload()

    # decisions

    def _decide(self, what: str, identity: Identity, topic: str) -> bool:
        key = (what, identity.username, identity.client_id, topic)
        decisions = self._decisions
        answer = decisions.get(key)
        if answer is not None:
            decisions.move_to_end(key)
            return answer
        view = self._view(identity.username, identity.client_id)
        levels = topic.split("/")
        if what == "s":
            answer = not any(_covers(rule, levels) for rule in view.denies) and any(
                _covers(rule, levels) for rule in view.reads
            )
        else:
            granted = view.writes if what == "w" else view.reads
            answer = not any(_matches(rule, levels) for rule in view.denies) and any(
                _matches(rule, levels) for rule in granted
            )
        if self.cache_size > 0:
            decisions[key] = answer
            if len(decisions) > self.cache_size:
                decisions.popitem(last=False)
        return answer

    def _view(self, username: str | None, client_id: str) -> _View:
        key = (username, client_id)
        view = self._views.get(key)
        if view is not None:
            self._views.move_to_end(key)
            return view
        view = _resolve(self.rules, username, client_id)
        if self.cache_size > 0:
            self._views[key] = view
            if len(self._views) > max(1, self.cache_size // 10):
                self._views.popitem(last=False)
        return view


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime_ns, info.st_size


def _read(path: str) -> AclRules:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as error:
        raise ValueError(f"file={path}: cannot read the ACL file: {error.strerror}") from None
    return parse_acl(data, path)


def build(parameters: Mapping[str, str]) -> AclFileAuthorizer:
    """
    The authorizer for C{aclfile:file=PATH[,cache=N]}.

    @raise ValueError: naming the parameter (missing or unknown, a cache size that is
        not a number, an unreadable or malformed file).
    """
    unknown = sorted(set(parameters) - {"file", "cache"})
    if unknown:
        raise ValueError(f"aclfile: unknown parameter {unknown[0]!r} (known: file, cache)")
    path = parameters.get("file", "").strip()
    if not path:
        raise ValueError("aclfile: the parameter 'file' (the ACL file's path) is required")
    cache = DEFAULT_CACHE
    if "cache" in parameters:
        try:
            cache = int(parameters["cache"])
        except ValueError:
            cache = -1
        if cache < 0:
            raise ValueError(
                f"aclfile: cache={parameters['cache']!r} is not a number of entries (0 or more)"
            )
    return AclFileAuthorizer(path, cache)
