"""The reliability suite's shared report: each test adds its figures; the session writes REPORT.md."""

from __future__ import annotations

import pytest

from tests.reliability.report import ReliabilityReport

_REPORT = pytest.StashKey[ReliabilityReport]()


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_REPORT] = ReliabilityReport()


def pytest_sessionfinish(session: pytest.Session) -> None:
    report = session.config.stash.get(_REPORT, None)
    if report is not None and report.sections:
        report.write()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> ReliabilityReport:
    """The session's report: `report.count(section, figure)`, `report.fact(section, figure, value)`."""
    return request.config.stash[_REPORT]
