"""One member-sync run in a fresh process: ours (GuildlinkBot into SQLite or PostgreSQL) or bare discord.py's chunk."""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import discord

from bench.common import peak_rss_mb
from bench.sandbox_sides import run_bare, running_bot
from bot.client import bot_intents
from store import Link


def cpu_seconds() -> float:
    """CPU time of this whole process, every thread (the SQLite writer's too)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def bare(sandbox: dict[str, Any], guild_id: int) -> dict[str, Any]:
    """discord.py alone: members intent, member cache off, `guild.chunk(cache=False)` and nothing else."""
    result: dict[str, Any] = {}
    client = discord.Client(
        intents=bot_intents(),
        member_cache_flags=discord.MemberCacheFlags.none(),
        chunk_guilds_at_startup=False,
    )

    @client.event
    async def on_ready() -> None:
        guild = client.get_guild(guild_id)
        assert guild is not None
        started, cpu = time.perf_counter(), cpu_seconds()
        members = await guild.chunk(cache=False)
        result.update(
            seconds=time.perf_counter() - started, cpu_seconds=cpu_seconds() - cpu, members=len(members)
        )
        await client.close()

    await run_bare(client, sandbox)
    return result


async def ours(sandbox: dict[str, Any], guild_id: int, database_url: str) -> dict[str, Any]:
    """GuildlinkBot: from the hand-off "guild G is linked" to the last member committed in the database."""
    async with running_bot(sandbox, database_url) as bot:
        # As the callback does: commit the link, then hand it over.
        started, cpu = time.perf_counter(), cpu_seconds()
        link = await bot.store.save_link(Link(guild_id, "bench", 1, "bench", ("bot",), 0, datetime.now(UTC)))
        await bot.links.guild_linked(link)
        await bot.member_sync.wait_idle()
        seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
        sync = await bot.store.get_sync_state(guild_id)
        members = await bot.store.count_members(guild_id)
    assert sync is not None and sync.phase.value == "synced", sync
    return {"seconds": seconds, "cpu_seconds": cpu, "members": members}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("ours", "bare"))
    parser.add_argument("--sandbox", required=True, help="the sandbox's first-line JSON")
    parser.add_argument("--guild", type=int, required=True)
    parser.add_argument(
        "--database-url", help="ours: the (empty) database; default a SQLite file in a temp dir"
    )
    args = parser.parse_args()
    sandbox = json.loads(args.sandbox)
    with tempfile.TemporaryDirectory() as folder:
        if args.mode == "bare":
            result = asyncio.run(bare(sandbox, args.guild))
        else:
            database_url = args.database_url or f"sqlite:///{Path(folder) / 'bench.db'}"
            result = asyncio.run(ours(sandbox, args.guild, database_url))
    result |= {"mode": args.mode, "peak_rss_mb": peak_rss_mb()}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
