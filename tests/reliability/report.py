"""Figures the reliability suite collects while it runs, written to REPORT.md at the end of the session."""

from __future__ import annotations

import platform
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPORT_FILE = Path(__file__).parent / "REPORT.md"

# Figures whose goal is 0: the report states the goal beside them.
ZERO_GOALS = ("lost", "leaked", "duplicated", "server_errors", "token_requests_without_state", "gateway_4008")


@dataclass
class Section:
    """One test's figures: counters that add up, and plain facts."""

    title: str
    counts: Counter[str] = field(default_factory=Counter)
    facts: dict[str, str] = field(default_factory=dict)


@dataclass
class ReliabilityReport:
    """Collects figures by section; `write` renders them as Markdown tables."""

    sections: dict[str, Section] = field(default_factory=dict)

    def section(self, title: str) -> Section:
        return self.sections.setdefault(title, Section(title))

    def count(self, title: str, name: str, amount: int = 1) -> None:
        self.section(title).counts[name] += amount

    def fact(self, title: str, name: str, value: object) -> None:
        self.section(title).facts[name] = str(value)

    def render(self) -> str:
        lines = [
            "# Reliability report",
            "",
            f"Written by `tests/reliability` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
            f" ({platform.python_implementation()} {platform.python_version()}, {platform.machine()}).",
            "Rerun with `.venv/bin/python -m pytest tests/reliability`. Figures named "
            + ", ".join(f"`{name}`" for name in ZERO_GOALS)
            + " have a goal of 0.",
            "",
        ]
        for section in self.sections.values():
            lines += [f"## {section.title}", "", "| figure | value |", "|---|---|"]
            for name, value in sorted(section.counts.items()):
                goal = " (goal 0)" if name in ZERO_GOALS else ""
                lines.append(f"| {name}{goal} | {value:,} |")
            for name, text in section.facts.items():
                lines.append(f"| {name} | {text} |")
            lines.append("")
        return "\n".join(lines)

    def write(self, path: Path = REPORT_FILE) -> None:
        path.write_text(self.render(), encoding="utf-8")
