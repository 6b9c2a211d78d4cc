"""
The C{mqttbroker} command: tools that go with the broker (which itself runs as
C{twist mqtt}). One subcommand per tool; C{passwd} manages password files, with the
usage of mosquitto_passwd::

    mqttbroker passwd [-H HASH] [-I N] [-c | -D] FILE USERNAME
    mqttbroker passwd [-H HASH] [-I N] [-c] -b FILE USERNAME PASSWORD
    mqttbroker passwd -U FILE

A new subcommand is a function taking the parsed arguments and the L{Console},
registered in L{_parser} with C{set_defaults(run=...)}.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from mqttbroker.backends.passwd import (
    DEFAULT_ITERATIONS,
    MAX_ITERATIONS,
    PasswordFileError,
    PasswordHash,
    PasswordLine,
    hash_password,
    parse_password_file,
    read_lines,
    write_file_atomically,
)

__all__ = ["Console", "main"]

_HASHES = {"sha512-pbkdf2": "7", "sha512": "6"}


@dataclass
class Console:
    """Where a subcommand talks to its user; replaced in tests."""

    prompt: Callable[[str], str] = getpass.getpass
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)


class CommandError(Exception):
    """A failure to report as C{Error: ...} with exit status 1."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mqttbroker", description="Tools for the mqttbroker MQTT broker."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    passwd = commands.add_parser(
        "passwd",
        help="manage a password file (mosquitto_passwd compatible)",
        usage=(
            "mqttbroker passwd [-H HASH] [-I N] [-c | -D] FILE USERNAME\n"
            "       mqttbroker passwd [-H HASH] [-I N] [-c] -b FILE USERNAME PASSWORD\n"
            "       mqttbroker passwd -U FILE"
        ),
        description=(
            "Add, update or delete a user of a password file in mosquitto's format "
            "(read by --auth passwd:file=FILE and by mosquitto's password_file). "
            "Without -b the password is asked for twice."
        ),
        epilog=(
            "The file is replaced atomically; a new file has mode 0600. A password "
            "given with -b is visible to other users of this machine (ps, shell history)."
        ),
    )
    passwd.add_argument(
        "-c",
        dest="create",
        action="store_true",
        help="create a new file, overwriting an existing one",
    )
    passwd.add_argument("-D", dest="delete", action="store_true", help="delete the user")
    passwd.add_argument(
        "-b", dest="batch", action="store_true", help="take the password from the command line"
    )
    passwd.add_argument(
        "-U",
        dest="upgrade",
        action="store_true",
        help="hash the plain-text passwords of a user:password file",
    )
    passwd.add_argument(
        "-H",
        dest="hash",
        choices=sorted(_HASHES),
        default="sha512-pbkdf2",
        help=(
            "hash to write: sha512-pbkdf2 ($7$, the default) or sha512 "
            "($6$, mosquitto 1.6 and older; weak)"
        ),
    )
    passwd.add_argument(
        "-I",
        dest="iterations",
        type=int,
        default=DEFAULT_ITERATIONS,
        metavar="N",
        help=(
            f"PBKDF2 iterations for $7$ (default {DEFAULT_ITERATIONS}; mosquitto_passwd writes 101)"
        ),
    )
    passwd.add_argument("arguments", nargs="*", metavar="FILE USERNAME [PASSWORD]")
    passwd.set_defaults(run=_passwd, parser=passwd)
    return parser


def main(argv: Sequence[str] | None = None, console: Console | None = None) -> int:
    """Run the command line C{argv} (default: C{sys.argv[1:]}); the exit status."""
    console = console or Console()
    parser = _parser()
    arguments = parser.parse_args(argv)
    run: Callable[[argparse.Namespace, Console], None] = arguments.run
    try:
        run(arguments, console)
    except CommandError as error:
        console.err.write(f"Error: {error}\n")
        return 1
    return 0


# -- passwd ------------------------------------------------------------------------------


def _passwd(arguments: argparse.Namespace, console: Console) -> None:
    positional: list[str] = arguments.arguments
    usage: argparse.ArgumentParser = arguments.parser  # its error() exits with status 2
    if not 1 <= arguments.iterations <= MAX_ITERATIONS:
        usage.error(f"-I must be 1 to {MAX_ITERATIONS}")
    if arguments.upgrade:
        if arguments.create or arguments.delete or arguments.batch or len(positional) != 1:
            usage.error("-U takes only the file: mqttbroker passwd -U FILE")
        _upgrade(positional[0], arguments)
        return
    if arguments.create and arguments.delete:
        usage.error("-c and -D cannot be used together")
    if arguments.delete and arguments.batch:
        usage.error("-b and -D cannot be used together")
    expected = 3 if arguments.batch else 2
    if len(positional) != expected:
        usage.error("-b needs FILE USERNAME PASSWORD" if arguments.batch else "give FILE USERNAME")
    path, username = positional[0], positional[1]
    _check_username(username)
    if arguments.delete:
        _delete(path, username)
        return
    password = positional[2] if arguments.batch else _ask_password(console)
    if not password:
        raise CommandError("Empty password.")
    if arguments.hash == "sha512":
        console.err.write(
            "Warning: sha512 ($6$) hashes are cheap to crack; prefer sha512-pbkdf2.\n"
        )
    entry = hash_password(
        password.encode("utf-8", "surrogateescape"),
        arguments.iterations,
        _HASHES[arguments.hash],
    )
    lines = [] if arguments.create else _read_checked(path)
    for line in lines:
        if line.username == username:
            line.text = f"{username}:{entry.encode()}"
            break
    else:
        lines.append(PasswordLine(0, f"{username}:{entry.encode()}", username))
    _write(path, lines)


def _check_username(username: str) -> None:
    """Refuse names that would not read back as the same user."""
    if not username:
        raise CommandError("Empty user name.")
    if ":" in username:
        raise CommandError("Username must not contain the ':' character.")
    if username.startswith("#"):
        raise CommandError("Username must not start with '#' (it would read as a comment).")
    if username != username.strip():
        raise CommandError("Username must not begin or end with white space.")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in username):
        raise CommandError("Username must not contain control characters.")
    if len(username.encode("utf-8")) > 65535:
        raise CommandError("Username too long (MQTT allows 65535 bytes).")


def _ask_password(console: Console) -> str:
    try:
        first = console.prompt("Password: ")
        second = console.prompt("Reenter password: ")
    except (EOFError, KeyboardInterrupt):
        raise CommandError("No password entered.") from None
    if first != second:
        raise CommandError("Passwords do not match.")
    return first


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read()
    except FileNotFoundError:
        raise CommandError(
            f"Unable to open file {path} for reading (use -c to create it)."
        ) from None
    except OSError as error:
        raise CommandError(f"Unable to read {path}: {error.strerror or error}") from None


def _read_checked(path: str) -> list[PasswordLine]:
    """The lines of a file whose every entry is a valid hash (else an error)."""
    data = _read(path)
    try:
        parse_password_file(data, path)
        return read_lines(data, path)
    except PasswordFileError as error:
        raise CommandError(
            f"Corrupt password file: {error} (plain-text passwords: use -U)"
        ) from None


def _write(path: str, lines: list[PasswordLine]) -> None:
    text = "".join(f"{line.text}\n" for line in lines)
    try:
        write_file_atomically(path, text)
    except OSError as error:
        raise CommandError(f"Unable to write {path}: {error.strerror or error}") from None


def _delete(path: str, username: str) -> None:
    lines = _read_checked(path)
    kept = [line for line in lines if line.username != username]
    if len(kept) == len(lines):
        raise CommandError(f"User {username} not found in password file.")
    _write(path, kept)


def _upgrade(path: str, arguments: argparse.Namespace) -> None:
    """
    Hash every plain-text C{user:password} line. Unlike mosquitto_passwd -U, lines
    that already hold a valid hash are kept (mosquitto hashes the hash, locking the
    user out), so running it twice is harmless.
    """
    data = _read(path)
    try:
        lines = read_lines(data, path)
    except PasswordFileError as error:
        raise CommandError(f"Corrupt password file: {error}") from None
    seen: dict[str, int] = {}
    for line in lines:
        if line.username is None:
            continue
        if line.username in seen:
            raise CommandError(
                f"Corrupt password file: {path} line {line.number}: user "
                f"{line.username!r} already defined on line {seen[line.username]}"
            )
        seen[line.username] = line.number
        try:
            PasswordHash.parse(line.secret.strip())
        except ValueError:
            # The whole rest of the line is the password, as written.
            entry = hash_password(
                line.secret.encode("utf-8"), arguments.iterations, _HASHES[arguments.hash]
            )
            line.text = f"{line.username}:{entry.encode()}"
    _write(path, lines)


if __name__ == "__main__":
    sys.exit(main())
