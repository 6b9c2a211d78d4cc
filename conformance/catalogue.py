"""
The catalogue of normative statements (C{conformance/statements-3.1.1.csv} and
C{conformance/statements-5.0.csv}) and the report that joins it with test results.

Each row: C{version} (3.1.1 or 5.0), C{id} (like MQTT-3.1.0-1), C{section}, C{binds}
(server, client or both), C{status} (testable, not-testable or client-only),
C{paraphrase} (our own words, never the spec's) and C{note} (why a statement is not
testable from the wire, or anything a reader needs).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Statement", "load", "render_report"]

HERE = Path(__file__).parent
VERSIONS = ("3.1.1", "5.0")
_BINDS = {"server", "client", "both"}
_STATUSES = {"testable", "not-testable", "client-only"}


@dataclass(frozen=True)
class Statement:
    """One normative statement."""

    version: str
    id: str
    section: str
    binds: str
    status: str
    paraphrase: str
    note: str = ""

    @property
    def server_side(self) -> bool:
        """It binds the server (so a broker can be tested against it)."""
        return self.binds in ("server", "both") and self.status != "client-only"


def load(directory: Path = HERE) -> list[Statement]:
    """
    Read and check the catalogue (every C{statements-*.csv} in C{directory}).

    @raise ValueError: a row is malformed or duplicated, naming its file and line.
    """
    statements: list[Statement] = []
    seen: set[tuple[str, str]] = set()
    for path in sorted(directory.glob("statements-*.csv")):
        statements.extend(_load_file(path, seen))
    return statements


def _load_file(path: Path, seen: set[tuple[str, str]]) -> list[Statement]:
    statements: list[Statement] = []
    with path.open(encoding="utf-8", newline="") as f:
        for line, row in enumerate(csv.DictReader(f), 2):
            statement = Statement(
                row["version"].strip(),
                row["id"].strip(),
                row["section"].strip(),
                row["binds"].strip(),
                row["status"].strip(),
                row["paraphrase"].strip(),
                (row.get("note") or "").strip(),
            )
            key = (statement.version, statement.id)
            if (
                statement.version not in VERSIONS
                or not statement.id.startswith("MQTT-")
                or statement.binds not in _BINDS
                or statement.status not in _STATUSES
                or not statement.paraphrase
                or key in seen
            ):
                raise ValueError(f"{path.name} line {line}: malformed or duplicate row {row}")
            if statement.status == "not-testable" and not statement.note:
                raise ValueError(f"{path.name} line {line}: not-testable needs a note (why)")
            seen.add(key)
            statements.append(statement)
    return statements


def render_report(
    statements: Iterable[Statement],
    results: Mapping[tuple[str, str], list[tuple[str, str]]],
    broker: str,
) -> str:
    """
    The Markdown report.

    @param results: (version, id) -> [(test node id, outcome)] for every test that
        ran for that statement; outcome is "passed", "failed" or "skipped".
    @param broker: a description of the broker under test.
    """
    statements = list(statements)
    head: list[str] = []
    body: list[str] = []
    for version in VERSIONS:
        rows = [s for s in statements if s.version == version]
        server = [s for s in rows if s.server_side]
        tested = passed = 0
        body.append(f"\n## MQTT {version}\n")
        body.append("| id | section | binds | result | tests / note | statement |")
        body.append("|---|---|---|---|---|---|")
        for s in rows:
            runs = [r for r in results.get((version, s.id), []) if r[1] != "skipped"]
            if runs:
                # A client-only statement can still be checked from the server's side
                # (how it reacts when a client breaks it): show the result, but it
                # does not count among the server statements.
                ok = all(outcome == "passed" for _, outcome in runs)
                verdict = "pass" if ok else "FAIL"
                if s.status == "client-only":
                    verdict += " (client-only)"
                detail = ", ".join(f"`{node.split('::', 1)[-1]}`" for node, _ in runs)
                if s.server_side:
                    tested += 1
                    passed += ok
            elif s.status == "client-only":
                verdict, detail = "client-only", s.note
            elif s.status == "not-testable":
                verdict, detail = "not-testable", s.note
            else:
                verdict, detail = "untested", s.note
            body.append(
                f"| {s.id} | {s.section} | {s.binds} | {verdict} | {detail} | {s.paraphrase} |"
            )
        head.append(
            f"MQTT {version} server statements: tested {tested} of {len(server)}, passed {passed}"
        )
    intro = [
        "",
        f"Broker under test: {broker}. Generated by `tox -e conformance` "
        "(see `conformance/`); statements are paraphrased, with their ids from "
        "Appendix B of each OASIS standard.",
        "",
        "Result: **pass** / **FAIL** (the tests that check it), **not-testable** from the "
        "wire (why), **client-only** (binds clients, not a broker), **untested** (not "
        "yet covered).",
    ]
    return "\n".join(head + intro + body) + "\n"
