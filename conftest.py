"""
Shared pytest configuration for tests/ and conformance/.

In CI (C{CI} set to a true value, or C{MQTTBROKER_NO_SKIP=1}) a skipped test is a
failed test: a skip there means a component the suite needs is missing, and that must
not pass silently.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from typing import Any

import pytest

_TRUE = {"1", "true", "yes", "on"}


def skips_are_failures() -> bool:
    """Whether this run turns skips into failures."""
    return (
        os.environ.get("CI", "").lower() in _TRUE
        or os.environ.get("MQTTBROKER_NO_SKIP", "").lower() in _TRUE
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[Any]
) -> Generator[None, Any, Any]:
    report = yield
    if report.skipped and skips_are_failures() and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped in CI, which counts as a failure: {reason}"
    return report
