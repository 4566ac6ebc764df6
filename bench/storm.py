"""The member-event storm: an update for every member of a 50,000-member guild, then 5,000 removals.

Ours (received, parsed, batched and committed) against bare discord.py receiving and parsing the same storm.
"""

from __future__ import annotations

import json

import aiohttp

from bench.common import BenchArgs, Table, median, run_json_worker, run_standalone, sandbox_process


async def one_run(mode: str, members: int, removals: int, database_url: str | None) -> dict[str, float]:
    async with sandbox_process(members=members) as sandbox:
        guild_id = sandbox["guilds"][0]["id"]
        async with (
            aiohttp.ClientSession() as session,
            session.put(f"{sandbox['base_url']}/_sandbox/guilds/{guild_id}/bot") as response,
        ):
            response.raise_for_status()
        updates = int(sandbox["guilds"][0]["member_count"])
        argv = ["--sandbox", json.dumps(sandbox), "--guild", str(guild_id)]
        argv += ["--updates", str(updates), "--removals", str(removals)]
        if database_url and mode == "ours":
            argv += ["--database-url", database_url]
        return await run_json_worker("bench.storm_worker", mode, *argv)


async def main(args: BenchArgs) -> list[Table]:
    members, removals = (2_000, 200) if args.smoke else (50_000, 5_000)
    rounds = 1 if args.smoke else args.rounds
    table = Table(
        "Member-event storm: stored (ours) vs received and parsed by bare discord.py (member cache off)",
        [
            "events",
            "ours s",
            "bare s",
            "ours / bare",
            "sandbox dispatch s",
            "ours events/s",
            "ours RSS growth MB",
        ],
    )
    runs: dict[str, list[dict[str, float]]] = {"ours": [], "bare": []}
    for round_index in range(rounds):
        for mode in ("bare", "ours") if round_index % 2 == 0 else ("ours", "bare"):
            runs[mode].append(await one_run(mode, members, removals, None))
    ours_s = median([r["seconds"] for r in runs["ours"]])
    bare_s = median([r["seconds"] for r in runs["bare"]])
    events = int(runs["ours"][0]["events"])
    table.rows.append(
        [
            events,
            ours_s,
            bare_s,
            ours_s / bare_s,
            median([r["sandbox_seconds"] for r in runs["ours"]]),
            round(events / ours_s),
            max(r["rss_growth_mb"] for r in runs["ours"]),
        ]
    )
    table.notes += [
        f"median of {rounds} run(s) each, every run in a fresh process against a fresh `python -m sandbox` process",
        "ours: GuildlinkBot on SQLite, guild linked and synced first; from asking the sandbox for the storm to the"
        " last event committed (members and the event feed); bare: discord.py 2.7 Client counting the storm's"
        " dispatches with on_socket_event_type",
        "goal: ours / bare <= 1.5, RSS growth < 50 MB",
    ]
    return [table]


if __name__ == "__main__":
    run_standalone(main, "bench.storm")
