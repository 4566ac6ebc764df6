"""The benchmarks run end to end at their smallest sizes, so that they never rot (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# Every benchmark at its smallest, PostgreSQL's throwaway cluster included: more than the default 120 s.
@pytest.mark.timeout(600)
def test_every_benchmark_runs_and_reports_a_table(tmp_path: Path) -> None:
    results = tmp_path / "RESULTS.md"
    finished = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--results", str(results)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    text = results.read_text()
    assert "`python -m bench --smoke" in text
    for title in (
        "Member sync",
        "Storage",
        "Link flows",
        "Start-up",
        "GET /api/guilds",
        "Member-event storm",
        "Webhooks",
        "Role changes applied per second",
    ):
        assert f"### {title}" in text, f"no {title} table in:\n{text}"
    # Every table has its header and at least one row of figures.
    for table in text.split("### ")[1:]:
        lines = [line for line in table.splitlines() if line.startswith("|") and not line.startswith("|---")]
        assert len(lines) >= 2 and any(ch.isdigit() for ch in lines[1]), table
