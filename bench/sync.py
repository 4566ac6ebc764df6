"""Member sync: link to last member committed, ours on SQLite and on PostgreSQL, against bare discord.py's
`guild.chunk(cache=False)`.

`python -m bench.sync [--smoke | --full] [--engine sqlite|postgres|both]`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from bench.common import (
    BenchArgs,
    Table,
    median,
    postgres_server,
    run_side_against_guild,
    run_standalone,
)

SIDE_NAMES = {"bare": "bare discord.py", "sqlite": "ours, SQLite", "postgres": "ours, PostgreSQL"}


def sizes(args: BenchArgs) -> list[int]:
    if args.smoke:
        return [1_000]
    return [10_000, 100_000, 1_000_000] if args.full else [10_000, 100_000]


async def one_run(side: str, members: int, postgres_url: str | None) -> dict[str, float]:
    """A fresh sandbox process (so no 30 s whole-list window carries over) and a fresh worker process."""
    return await run_side_against_guild("bench.sync_worker", side, members, postgres_url, lambda sandbox: [])


async def main(args: BenchArgs) -> list[Table]:
    sides = ["bare", *args.engines]
    with postgres_server() if "postgres" in sides else contextlib.nullcontext("") as postgres_url:
        return [await _measure(args, sides, postgres_url or None)]


async def _measure(args: BenchArgs, sides: list[str], postgres_url: str | None) -> Table:
    table = Table(
        "Member sync: link to last member committed, ours on SQLite and on PostgreSQL,"
        " vs bare discord.py guild.chunk(cache=False)",
        [
            "members",
            "side",
            "s",
            "time × bare",
            "time × SQLite",
            "CPU s",
            "CPU × bare",
            "members/s",
            "peak RSS MB",
            "RSS × bare",
        ],
    )
    rounds = 1 if args.smoke else args.rounds
    for members in sizes(args):
        runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        for round_index in range(rounds):
            # Rotate the order so that no side always runs on a warmer (or more tired) machine.
            shift = round_index % len(sides)
            for side in sides[shift:] + sides[:shift]:
                runs[side].append(await one_run(side, members, postgres_url))
        table.rows += _rows(members, runs)
    table.notes += [
        f"median of {rounds} run(s) of each side, every run in a fresh process against a fresh"
        " `python -m sandbox` process (and, on PostgreSQL, a fresh database)",
        "ours: GuildlinkBot from the hand-off to the sync state 'synced' (all members committed, reconciled);"
        " bare: discord.py 2.7 Client, members intent, MemberCacheFlags.none(), guild.chunk(cache=False)",
        "CPU: user+system time of the client process over the timed span, every thread (SQLite's writer"
        " thread included); PostgreSQL's server process works apart and is not counted, nor is the sandbox's",
        "PostgreSQL: a throwaway local cluster with its default durability (fsync on; member chunks commit"
        " with synchronous_commit off, as SQLite's with synchronous=NORMAL); peak RSS is the client's",
        "goals: SQLite time <= 1.0 × bare at 100,000 and 1,000,000 members, RSS <= 0.5 × bare at 1,000,000;"
        " PostgreSQL time <= 1.2 × SQLite",
    ]
    return table


def _rows(members: int, runs: dict[str, list[dict[str, float]]]) -> list[Sequence[Any]]:
    def med(side: str, key: str) -> float:
        return median([run[key] for run in runs[side]])

    rows: list[Sequence[Any]] = []
    for side, side_runs in runs.items():
        seconds, cpu = med(side, "seconds"), med(side, "cpu_seconds")
        rss = max(run["peak_rss_mb"] for run in side_runs)
        rows.append(
            [
                int(side_runs[0]["members"]),
                SIDE_NAMES[side],
                seconds,
                seconds / med("bare", "seconds"),
                seconds / med("sqlite", "seconds") if "sqlite" in runs else "-",
                cpu,
                cpu / med("bare", "cpu_seconds"),
                round(int(side_runs[0]["members"]) / seconds),
                rss,
                rss / max(run["peak_rss_mb"] for run in runs["bare"]),
            ]
        )
    return rows


if __name__ == "__main__":
    run_standalone(main, "bench.sync")
