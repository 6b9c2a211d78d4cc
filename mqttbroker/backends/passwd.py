"""
Password files in mosquitto's format (C{--auth passwd:file=/etc/mqttbroker/passwd}),
so that an operator moving from mosquitto drops the file in unchanged.

One C{username:hash} per line; C{#} comments and blank lines are allowed. Two hashes:

  - C{$7$ITERATIONS$SALT$HASH}: PBKDF2-HMAC-SHA512 (what mosquitto_passwd 2.x
    writes: 101 iterations, a 12-byte salt, a 64-byte hash);
  - C{$6$SALT$HASH}: SHA512(password + salt) (mosquitto 1.6 and earlier).

SALT and HASH are standard base64. Any line that is not one of these is a
configuration error naming its line number: a broken line silently skipped is how a
user ends up with no password at all (CVE-2018-12551).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from zope.interface import implementer

from mqttbroker.interfaces import AuthDecision, Credentials, IAuthenticator, IReloadable

__all__ = [
    "DEFAULT_ITERATIONS",
    "LoginThrottle",
    "PasswordFile",
    "PasswordFileAuthenticator",
    "PasswordFileError",
    "PasswordHash",
    "PasswordLine",
    "build",
    "hash_password",
    "parse_password_file",
    "read_lines",
    "write_file_atomically",
]

_log = Logger()

#: PBKDF2 iterations for hashes we write. mosquitto_passwd writes 101, which costs
#: an attacker holding a stolen file almost nothing per guess; 210,000 is OWASP's
#: figure for PBKDF2-HMAC-SHA512 (2023). mosquitto reads any count, so the files
#: stay interoperable; the price is CPU per login (~0.1 s of one core), which is
#: why checks above L{DEFAULT_THREAD_ITERATIONS} run in a worker thread.
DEFAULT_ITERATIONS = 210_000

#: Checks cheaper than this many PBKDF2 iterations run inline (a thread hop would
#: cost more than the hash); dearer ones run in the reactor's thread pool.
DEFAULT_THREAD_ITERATIONS = 1000

#: Refuse absurd counts in a file: one login must not take minutes of CPU.
MAX_ITERATIONS = 10_000_000

SALT_BYTES = 12  # what mosquitto_passwd uses
DIGEST_BYTES = 64  # SHA-512

_B64 = r"[A-Za-z0-9+/]+={0,2}"
_PBKDF2 = re.compile(rf"\$7\$([0-9]+)\$({_B64})\$({_B64})")
_SHA512 = re.compile(rf"\$6\$({_B64})\$({_B64})")
_SCHEME = re.compile(r"\$([^$]*)\$")


class PasswordFileError(ValueError):
    """A password file that cannot be used; the message names the file and line."""


# -- hashes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PasswordHash:
    """
    One stored password hash.

    @ivar scheme: C{"7"} (PBKDF2-HMAC-SHA512) or C{"6"} (salted SHA-512).
    @ivar iterations: the PBKDF2 count; 0 for C{"6"}.
    """

    scheme: str
    iterations: int
    salt: bytes
    digest: bytes

    @classmethod
    def parse(cls, text: str) -> PasswordHash:
        """
        Decode C{$7$...} or C{$6$...}.

        @raise ValueError: anything else; the message never repeats C{text} (it may be
            a plain-text password).
        """
        match = _PBKDF2.fullmatch(text)
        if match:
            iterations = int(match.group(1))
            if not 1 <= iterations <= MAX_ITERATIONS:
                raise ValueError(f"$7$ iteration count must be 1 to {MAX_ITERATIONS}")
            return cls("7", iterations, *_decode_pair(match.group(2), match.group(3)))
        match = _SHA512.fullmatch(text)
        if match:
            return cls("6", 0, *_decode_pair(match.group(1), match.group(2)))
        scheme = _SCHEME.match(text)
        if scheme and scheme.group(1) not in ("6", "7"):
            raise ValueError(f"unknown hash type ${scheme.group(1)[:8]}$ (only $6$ and $7$)")
        raise ValueError("not a $6$SALT$HASH or $7$ITERATIONS$SALT$HASH password hash")

    def encode(self) -> str:
        """The text form, as mosquitto writes it."""
        salt = base64.b64encode(self.salt).decode("ascii")
        digest = base64.b64encode(self.digest).decode("ascii")
        if self.scheme == "7":
            return f"$7${self.iterations}${salt}${digest}"
        return f"$6${salt}${digest}"

    def compute(self, password: bytes) -> bytes:
        """The digest C{password} has under this hash's scheme, salt and count."""
        if self.scheme == "7":
            return hashlib.pbkdf2_hmac("sha512", password, self.salt, self.iterations)
        return hashlib.sha512(password + self.salt).digest()

    def matches(self, password: bytes) -> bool:
        """Whether C{password} is the one hashed, compared in constant time."""
        return hmac.compare_digest(self.compute(password), self.digest)


def _decode_pair(salt_text: str, digest_text: str) -> tuple[bytes, bytes]:
    try:
        salt = base64.b64decode(salt_text, validate=True)
        digest = base64.b64decode(digest_text, validate=True)
    except binascii.Error:
        raise ValueError("salt or hash is not valid base64") from None
    if not salt:
        raise ValueError("empty salt")
    if len(digest) != DIGEST_BYTES:
        raise ValueError(f"hash is {len(digest)} bytes, SHA-512 gives {DIGEST_BYTES}")
    return salt, digest


def hash_password(
    password: bytes, iterations: int = DEFAULT_ITERATIONS, scheme: str = "7"
) -> PasswordHash:
    """A new hash of C{password} with a fresh random salt (C{scheme} "7" or "6")."""
    salt = secrets.token_bytes(SALT_BYTES)
    if scheme == "6":
        return PasswordHash("6", 0, salt, hashlib.sha512(password + salt).digest())
    if scheme != "7":
        raise ValueError(f"unknown hash scheme {scheme!r}")
    if not 1 <= iterations <= MAX_ITERATIONS:
        raise ValueError(f"iterations must be 1 to {MAX_ITERATIONS}")
    return PasswordHash(
        "7", iterations, salt, hashlib.pbkdf2_hmac("sha512", password, salt, iterations)
    )


# -- the file -----------------------------------------------------------------------------


@dataclass
class PasswordLine:
    """
    One line of a password file, kept whole so that rewriting the file keeps its
    comments and order.

    @ivar number: 1-based line number.
    @ivar text: the line without its line ending.
    @ivar username: None for a blank or comment line.
    @ivar secret: the text after the first colon (a hash, or a plain-text password
        in a file for C{mqttbroker passwd -U}).
    """

    number: int
    text: str
    username: str | None = None
    secret: str = ""


def read_lines(data: bytes, path: str) -> list[PasswordLine]:
    """
    Split a password file into lines, checking only their shape (UTF-8, a colon, a
    user name); the hashes are L{parse_password_file}'s business.

    @raise PasswordFileError: naming the first bad line.
    """
    lines: list[PasswordLine] = []
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise PasswordFileError(f"{path} line {number}: not valid UTF-8") from None
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            lines.append(PasswordLine(number, text))
            continue
        username, colon, secret = text.partition(":")
        username = username.strip(" \t")  # mosquitto trims blanks around the name
        if not colon:
            raise PasswordFileError(
                f"{path} line {number}: no ':' between user name and password hash"
            )
        if not username:
            raise PasswordFileError(f"{path} line {number}: empty user name")
        lines.append(PasswordLine(number, text, username, secret))
    return lines


def parse_password_file(data: bytes, path: str) -> dict[str, PasswordHash]:
    """
    The users of a password file and their hashes.

    @raise PasswordFileError: a malformed line, a hash that is not C{$6$}/C{$7$},
        or a user defined twice; the message names the line (never the hash).
    """
    users: dict[str, PasswordHash] = {}
    first_line: dict[str, int] = {}
    for line in read_lines(data, path):
        if line.username is None:
            continue
        if line.username in users:
            raise PasswordFileError(
                f"{path} line {line.number}: user {line.username!r} already defined "
                f"on line {first_line[line.username]}"
            )
        try:
            users[line.username] = PasswordHash.parse(line.secret.strip())
        except ValueError as error:
            raise PasswordFileError(
                f"{path} line {line.number}: user {line.username!r}: {error}"
            ) from None
        first_line[line.username] = line.number
    return users


def write_file_atomically(path: str, text: str) -> None:
    """
    Replace C{path} with C{text} through a temporary file in the same directory and
    a rename, so that a broker reading it (or a crash) never sees half a file.

    A new file gets mode 0600. A file that exists keeps its owner, group and mode
    minus any permission for others: a broker reading it through its group keeps
    working, nobody else may read the hashes.
    """
    path = os.path.realpath(path)
    directory = os.path.dirname(path) or "."
    try:
        existing: os.stat_result | None = os.stat(path)
    except FileNotFoundError:
        existing = None
    name = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as stream:
            os.fchmod(stream.fileno(), 0o600)
            if existing is not None:
                # Not root: the file becomes ours, as an edited copy would.
                with contextlib.suppress(PermissionError):
                    os.fchown(stream.fileno(), existing.st_uid, existing.st_gid)
                os.fchmod(stream.fileno(), (existing.st_mode & 0o660) | 0o600)
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name)
        raise
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


class PasswordFile:
    """The users of a file, read now; L{PasswordFileAuthenticator} holds one."""

    def __init__(self, path: str, users: Mapping[str, PasswordHash]) -> None:
        self.path = path
        self.users: Mapping[str, PasswordHash] = dict(users)
        self.dummy = _dummy_for(self.users)

    @classmethod
    def read(cls, path: str) -> PasswordFile:
        """
        @raise OSError: unreadable.
        @raise PasswordFileError: malformed.
        """
        with open(path, "rb") as stream:
            data = stream.read()
        return cls(path, parse_password_file(data, path))


def _dummy_for(users: Mapping[str, PasswordHash]) -> PasswordHash:
    """
    A hash no password matches, of the kind most users of the file have, checked
    for unknown users so that they cost the same work as known ones (the time of an
    answer must not tell which user names exist).
    """
    kinds = Counter((entry.scheme, entry.iterations) for entry in users.values())
    scheme, iterations = kinds.most_common(1)[0][0] if kinds else ("7", DEFAULT_ITERATIONS)
    return PasswordHash(
        scheme, iterations, secrets.token_bytes(SALT_BYTES), secrets.token_bytes(DIGEST_BYTES)
    )


# -- slowing failed logins ----------------------------------------------------------------


def address_key(host: str | None) -> str:
    """
    What failures are counted under: the address; for IPv6 its /64, since one site
    gets a whole /64 and could otherwise start afresh from each of its addresses.
    """
    if host is None:
        return "(local socket)"
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


#: A bucket for the failures of names beyond the ones tracked per address: a
#: success clears only the failures of the name that succeeded, never these.
_OTHER_NAMES = "\x00other"


@dataclass
class _HostRecord:
    failures: dict[str, int] = field(default_factory=dict)
    last: float = 0.0
    pending: int = 0  # delayed attempts being checked

    @property
    def total(self) -> int:
        return sum(self.failures.values())


class LoginThrottle:
    """
    Failed logins counted per source address: after C{limit} failures from one
    address, its next answers (whatever they are: a quick "yes" would give a guess
    away) come only after a delay, C{initial_delay} doubling with each further
    failure up to C{max_delay}. Other addresses are not slowed.

    A success clears the failures made under that user name only, so an attacker
    with an account of their own cannot wipe the slate between guesses at someone
    else's. An address is forgotten after C{window} seconds without a failure, and
    at most C{max_hosts} addresses are remembered (the least recently failing go
    first), so a flood from many addresses cannot exhaust memory.
    """

    names_per_host = 16

    def __init__(
        self,
        clock: IReactorTime,
        limit: int = 5,
        window: float = 300.0,
        initial_delay: float = 1.0,
        max_delay: float = 30.0,
        max_hosts: int = 10_000,
    ) -> None:
        self.clock = clock
        self.limit = limit
        self.window = window
        self.initial_delay = initial_delay
        self.max_delay = max_delay
        self.max_hosts = max_hosts
        self._hosts: OrderedDict[str, _HostRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._hosts)

    def _expire(self) -> None:
        horizon = self.clock.seconds() - self.window
        while self._hosts:
            key, record = next(iter(self._hosts.items()))
            if record.last >= horizon:
                break
            del self._hosts[key]

    def record(self, host: str | None) -> _HostRecord | None:
        """The failures remembered for C{host}'s address, if any."""
        self._expire()
        return self._hosts.get(address_key(host))

    def delay(self, host: str | None) -> float:
        """How long an answer to C{host} must wait now (0: answer at once)."""
        record = self.record(host)
        if record is None:
            return 0.0
        over = record.total - self.limit
        if over < 0:
            return 0.0
        return float(min(self.max_delay, self.initial_delay * 2 ** min(over, 64)))

    def failed(self, host: str | None, username: str) -> None:
        """Count a failed login."""
        self._expire()
        key = address_key(host)
        record = self._hosts.pop(key, None) or _HostRecord()
        self._hosts[key] = record  # most recently failing last
        record.last = self.clock.seconds()
        if username not in record.failures and len(record.failures) >= self.names_per_host:
            username = _OTHER_NAMES
        record.failures[username] = record.failures.get(username, 0) + 1
        if record.total == self.limit:
            _log.warn(
                "{count} failed logins from {address}: its answers are slowed down",
                count=record.total,
                address=key,
            )
        while len(self._hosts) > self.max_hosts:
            self._hosts.popitem(last=False)

    def succeeded(self, host: str | None, username: str) -> None:
        """A login succeeded: forget the failures made under its user name."""
        key = address_key(host)
        record = self._hosts.get(key)
        if record is None:
            return
        record.failures.pop(username, None)
        if not record.failures:
            del self._hosts[key]


# -- the authenticator --------------------------------------------------------------------

_BAD = "bad user name or password"  # the same words whether the user exists or not
_SLOWED = "too many failed logins from this address"

RunInThread: TypeAlias = Callable[..., "Deferred[Any]"]


@implementer(IAuthenticator, IReloadable)
class PasswordFileAuthenticator:
    """
    Checks CONNECT user names and passwords against a mosquitto password file.

    A client that sends no user name is left to the next authenticator of the
    chain (an anonymous backend, say). Wrong passwords and unknown users get the
    same answer after the same work. Hashes dearer than C{thread_iterations}
    PBKDF2 rounds are computed with C{run_in_thread} (the reactor's thread pool),
    so that logins do not stall the broker; cheaper ones inline.

    @ivar throttle: the L{LoginThrottle} slowing failed logins per address.
    """

    def __init__(
        self,
        path: str,
        *,
        clock: IReactorTime | None = None,
        run_in_thread: RunInThread | None = None,
        thread_iterations: int = DEFAULT_THREAD_ITERATIONS,
        throttle: LoginThrottle | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor  # noqa: PLC0415 (not at import time)

            clock = reactor
        if run_in_thread is None:
            from twisted.internet.threads import deferToThread  # noqa: PLC0415

            run_in_thread = deferToThread
        assert clock is not None
        self.path = path
        self.clock: IReactorTime = clock
        self.run_in_thread: RunInThread = run_in_thread
        self.thread_iterations = thread_iterations
        self.throttle = throttle if throttle is not None else LoginThrottle(clock)
        self._stamp = self._file_stamp()
        self.file = PasswordFile.read(path)
        if not self.file.users:
            _log.warn("password file {path} has no users: all are refused", path=path)

    # IReloadable

    def _file_stamp(self) -> tuple[float, int] | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None
        return (info.st_mtime, info.st_size)

    def reload(self) -> bool:
        """
        Reread the file. When it is unusable the users read before stay (and the
        reason is logged): a bad edit must not lock everyone out, or let anyone in.
        """
        self._stamp = self._file_stamp()
        try:
            new = PasswordFile.read(self.path)
        except (OSError, PasswordFileError) as error:
            _log.error(
                "password file reload failed, keeping the previous users: {error}", error=error
            )
            return False
        self.file = new
        _log.info(
            "password file {path} reloaded: {count} users", path=self.path, count=len(new.users)
        )
        return True

    def reload_if_changed(self) -> bool:
        """L{reload} if the file changed (time or size) since it was read."""
        if self._file_stamp() == self._stamp:
            return False
        return self.reload()

    # IAuthenticator

    def authenticate(self, credentials: Credentials) -> Any:
        """
        Allow, deny (bad credentials), or ignore a client without a user name. A
        plain L{AuthDecision} when the hash is cheap and the address is not being
        slowed; a C{Deferred[AuthDecision]} (which never fails) otherwise.
        """
        username = credentials.username
        if username is None:
            return AuthDecision.ignore()
        host = credentials.peer_host
        delay = self.throttle.delay(host)
        if delay <= 0:
            return self._check(credentials, username)
        record = self.throttle.record(host)
        assert record is not None
        if record.pending:
            # One delayed check per address at a time: many parallel connections
            # must not multiply the guesses. The others are refused unchecked.
            self.throttle.failed(host, username)
            return deferLater(self.clock, delay, AuthDecision.deny, _SLOWED)
        record.pending += 1

        def finished(result: object) -> object:
            record.pending -= 1
            return result

        waited: Deferred[None] = deferLater(self.clock, delay)
        answer = waited.addCallback(lambda _: self._check(credentials, username))
        answer.addBoth(finished)
        answer.addErrback(self._check_failed)
        return answer

    def _check(
        self, credentials: Credentials, username: str
    ) -> AuthDecision | Deferred[AuthDecision]:
        known = self.file.users.get(username)
        entry = known if known is not None else self.file.dummy
        password = credentials.password
        if password is None:
            return self._decide(credentials, username, False)
        if entry.scheme == "7" and entry.iterations > self.thread_iterations:
            checked: Deferred[bool] = maybeDeferred(self.run_in_thread, entry.matches, password)
            answer = checked.addCallback(
                lambda ok: self._decide(credentials, username, ok and known is not None)
            )
            return answer.addErrback(self._check_failed)
        return self._decide(credentials, username, entry.matches(password) and known is not None)

    def _decide(self, credentials: Credentials, username: str, ok: bool) -> AuthDecision:
        if ok:
            self.throttle.succeeded(credentials.peer_host, username)
            return AuthDecision.allow()
        self.throttle.failed(credentials.peer_host, username)
        return AuthDecision.deny(_BAD, bad_credentials=True)

    def _check_failed(self, failure: Any) -> AuthDecision:
        _log.failure("password check failed", failure)
        return AuthDecision.deny("password check failed")


# -- the plugin's build -------------------------------------------------------------------

_PARAMETERS = (
    "file",
    "thread_iterations",
    "fail_limit",
    "fail_window",
    "fail_delay",
    "fail_delay_max",
    "fail_hosts",
)


def _number(parameters: Mapping[str, str], name: str, default: float, integer: bool) -> float:
    text = parameters.get(name)
    if text is None:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ValueError(f"passwd: {name}={text!r} is not {kind}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"passwd: {name}={text!r} must be a finite number >= 0")
    return value


def build(
    parameters: Mapping[str, str],
    clock: IReactorTime | None = None,
    run_in_thread: RunInThread | None = None,
) -> PasswordFileAuthenticator:
    """
    The authenticator for C{passwd:file=PATH[,...]}.

    @raise ValueError: naming the parameter: unknown or missing ones, bad numbers,
        an unreadable or malformed file.
    """
    unknown = sorted(set(parameters) - set(_PARAMETERS))
    if unknown:
        raise ValueError(
            f"passwd: unknown parameter {unknown[0]!r} (known: {', '.join(_PARAMETERS)})"
        )
    path = parameters.get("file", "")
    if not path:
        raise ValueError("passwd: the file= parameter (the password file) is required")
    thread_iterations = int(
        _number(parameters, "thread_iterations", DEFAULT_THREAD_ITERATIONS, True)
    )
    limit = int(_number(parameters, "fail_limit", 5, True))
    window = _number(parameters, "fail_window", 300.0, False)
    delay = _number(parameters, "fail_delay", 1.0, False)
    delay_max = _number(parameters, "fail_delay_max", 30.0, False)
    hosts = int(_number(parameters, "fail_hosts", 10_000, True))
    if limit < 1:
        raise ValueError("passwd: fail_limit must be at least 1")
    if hosts < 1:
        raise ValueError("passwd: fail_hosts must be at least 1")
    if delay_max < delay:
        raise ValueError("passwd: fail_delay_max must not be below fail_delay")
    if clock is None:
        from twisted.internet import reactor  # noqa: PLC0415 (not at import time)

        clock = reactor
    assert clock is not None
    throttle = LoginThrottle(clock, limit, window, delay, delay_max, hosts)
    try:
        return PasswordFileAuthenticator(
            path,
            clock=clock,
            run_in_thread=run_in_thread,
            thread_iterations=thread_iterations,
            throttle=throttle,
        )
    except PasswordFileError as error:
        raise ValueError(f"passwd: file= parameter: {error}") from None
    except OSError as error:
        raise ValueError(
            f"passwd: file={path}: cannot read it: {error.strerror or error}"
        ) from None
