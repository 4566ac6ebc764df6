"""The reliability suite's shared report: each test adds its figures; the session writes REPORT.md."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.reliability.processes import Processes, process_owner
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


@pytest.fixture
async def processes(tmp_path: Path) -> AsyncIterator[Processes]:
    """Starts guildlink and sandbox processes (logs in `tmp_path`); ends each one at teardown, pass or fail."""
    async with process_owner(tmp_path) as owner:
        yield owner
