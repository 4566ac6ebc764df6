"""Member sync: link to last member committed, against bare discord.py's `guild.chunk(cache=False)`."""

from __future__ import annotations

import json

import aiohttp

from bench.common import BenchArgs, Table, median, run_json_worker, run_standalone, sandbox_process


def sizes(args: BenchArgs) -> list[int]:
    if args.smoke:
        return [1_000]
    return [10_000, 100_000, 1_000_000] if args.full else [10_000, 100_000]


async def one_run(mode: str, members: int) -> dict[str, float]:
    """A fresh sandbox process (so no 30 s whole-list window carries over) and a fresh worker process."""
    async with sandbox_process(members=members) as sandbox:
        guild_id = sandbox["guilds"][0]["id"]
        async with (
            aiohttp.ClientSession() as session,
            session.put(f"{sandbox['base_url']}/_sandbox/guilds/{guild_id}/bot") as response,
        ):
            response.raise_for_status()
        return await run_json_worker(
            "bench.sync_worker", mode, "--sandbox", json.dumps(sandbox), "--guild", str(guild_id)
        )


async def main(args: BenchArgs) -> list[Table]:
    table = Table(
        "Member sync: link to last member committed (ours) vs bare discord.py guild.chunk(cache=False)",
        [
            "members",
            "ours s",
            "bare s",
            "time ratio",
            "ours CPU s",
            "bare CPU s",
            "CPU ratio",
            "ours members/s",
            "bare members/s",
            "ours peak RSS MB",
            "bare peak RSS MB",
            "RSS ratio",
        ],
    )
    rounds = 1 if args.smoke else args.rounds
    for members in sizes(args):
        runs: dict[str, list[dict[str, float]]] = {"ours": [], "bare": []}
        for round_index in range(rounds):
            # Alternate the order so neither side always runs on a warmer machine.
            order = ("bare", "ours") if round_index % 2 == 0 else ("ours", "bare")
            for mode in order:
                runs[mode].append(await one_run(mode, members))
        ours_s = median([r["seconds"] for r in runs["ours"]])
        bare_s = median([r["seconds"] for r in runs["bare"]])
        ours_cpu = median([r["cpu_seconds"] for r in runs["ours"]])
        bare_cpu = median([r["cpu_seconds"] for r in runs["bare"]])
        ours_rss = max(r["peak_rss_mb"] for r in runs["ours"])
        bare_rss = max(r["peak_rss_mb"] for r in runs["bare"])
        counted = int(runs["ours"][0]["members"])
        table.rows.append(
            [
                counted,
                ours_s,
                bare_s,
                ours_s / bare_s,
                ours_cpu,
                bare_cpu,
                ours_cpu / bare_cpu,
                round(counted / ours_s),
                round(int(runs["bare"][0]["members"]) / bare_s),
                ours_rss,
                bare_rss,
                ours_rss / bare_rss,
            ]
        )
    table.notes += [
        f"median of {rounds} run(s) each, every run in a fresh process against a fresh `python -m sandbox` process",
        "ours: GuildlinkBot from the hand-off to the sync state 'synced' (all members committed, reconciled);"
        " bare: discord.py 2.7 Client, members intent, MemberCacheFlags.none(), guild.chunk(cache=False)",
        "CPU: user+system time of the client process over the timed span, every thread (ours includes the"
        " SQLite writer); the sandbox's own process is the producer both sides wait on",
        "goals: time ratio <= 1.0 at 100,000 and 1,000,000 members; RSS ratio <= 0.5 at 1,000,000",
    ]
    return [table]


if __name__ == "__main__":
    run_standalone(main, "bench.sync")
