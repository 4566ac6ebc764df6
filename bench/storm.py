"""The member-event storm: an update for every member of a 50,000-member guild, then 5,000 removals.

Ours (received, parsed, batched and committed, on each engine) against bare discord.py receiving and parsing
the same storm. `python -m bench.storm [--smoke] [--engine sqlite|postgres|both] [--rounds N]`.
"""

from __future__ import annotations

import contextlib
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


async def one_run(side: str, members: int, removals: int, postgres_url: str | None) -> dict[str, float]:
    def storm(sandbox: dict[str, Any]) -> list[str]:
        # An update for every member of the guild, then the removals.
        updates = int(sandbox["guilds"][0]["member_count"])
        return ["--updates", str(updates), "--removals", str(removals)]

    return await run_side_against_guild("bench.storm_worker", side, members, postgres_url, storm)


async def main(args: BenchArgs) -> list[Table]:
    sides = ["bare", *args.engines]
    with postgres_server() if "postgres" in sides else contextlib.nullcontext("") as postgres_url:
        return [await _measure(args, sides, postgres_url or None)]


async def _measure(args: BenchArgs, sides: list[str], postgres_url: str | None) -> Table:
    members, removals = (2_000, 200) if args.smoke else (50_000, 5_000)
    rounds = 1 if args.smoke else args.rounds
    table = Table(
        "Member-event storm: stored (ours) vs received and parsed by bare discord.py (member cache off)",
        [
            "side",
            "events",
            "seconds",
            "ratio to bare",
            "sandbox dispatch s",
            "events/s",
            "CPU s",
            "CPU ratio to bare",
            "RSS growth MB",
        ],
    )
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
    for round_index in range(rounds):
        # Rotate the order so that no side always runs on a warmer machine.
        shift = round_index % len(sides)
        for side in sides[shift:] + sides[:shift]:
            runs[side].append(await one_run(side, members, removals, postgres_url))
    bare_s = median([r["seconds"] for r in runs["bare"]])
    bare_cpu = median([r["cpu_seconds"] for r in runs["bare"]])
    for side in sides:
        seconds = median([r["seconds"] for r in runs[side]])
        cpu = median([r["cpu_seconds"] for r in runs[side]])
        events = int(runs[side][0]["events"])
        table.rows.append(
            [
                SIDE_NAMES[side],
                events,
                seconds,
                seconds / bare_s,
                median([r["sandbox_seconds"] for r in runs[side]]),
                round(events / seconds),
                cpu,
                cpu / bare_cpu,
                max(r["rss_growth_mb"] for r in runs[side]),
            ]
        )
    table.notes += [
        f"median of {rounds} run(s) each, every run in a fresh process against a fresh `python -m sandbox` process",
        "ours: GuildlinkBot, guild linked and synced first; from asking the sandbox for the storm to the last"
        " event committed (members and the event feed, in batches of up to 5,000); bare: discord.py 2.7 Client"
        " counting the storm's dispatches with on_socket_event_type",
        "the sandbox makes the whole storm first, then sends it as fast as the socket takes it (the storm"
        " control's \"paced\": false), so that each side's CPU is its cost of a burst, not of waiting for the"
        " next few events; sandbox dispatch s is the making",
        "CPU s: the side's own process (its threads included; not the PostgreSQL server's), from the request to"
        " the end: what storing the storm costs beyond receiving and parsing it",
        "CPU ratio to bare, round by round (each round runs every side once, in turn): "
        + "; ".join(
            f"{SIDE_NAMES[side]} "
            + ", ".join(
                f"{ours['cpu_seconds'] / bare['cpu_seconds']:.2f}"
                for ours, bare in zip(runs[side], runs["bare"], strict=True)
            )
            for side in sides
            if side != "bare"
        ),
        "PostgreSQL: a throwaway local cluster (fsync on) unless GUILDLINK_BENCH_POSTGRES_URL names a server",
        "goals: ratio to bare <= 1.5 on each engine, CPU ratio to bare <= 1.3, RSS growth < 50 MB",
    ]
    return table


if __name__ == "__main__":
    run_standalone(main, "bench.storm")
