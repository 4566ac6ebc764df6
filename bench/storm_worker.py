"""One side of the member-event storm, in a fresh process: `python -m bench.storm_worker {ours,bare} ...`."""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import discord

from bench.sandbox_sides import run_bare, running_bot
from bot.client import bot_intents
from store import Link
from tests.rss import PeakRss

STORM_EVENTS = ("GUILD_MEMBER_UPDATE", "GUILD_MEMBER_REMOVE")


async def start_storm(sandbox: dict[str, Any], guild_id: int, updates: int, removals: int) -> float:
    """Ask the sandbox for the storm; return how long it took to dispatch it."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sandbox['base_url']}/_sandbox/guilds/{guild_id}/storm",
            # Unpaced: the sandbox makes the whole storm, then sends it as fast as the socket takes it, so
            # that each side's CPU is its own cost of a burst, not of waiting for the next few events.
            json={"updates": updates, "removals": removals, "paced": False},
        ) as response,
    ):
        response.raise_for_status()
        return float((await response.json())["seconds"])


async def wait_until(check: Any, limit: float = 300.0) -> None:
    deadline = time.perf_counter() + limit
    while not check():
        if time.perf_counter() > deadline:
            raise TimeoutError("the storm did not arrive in time")
        await asyncio.sleep(0.005)


async def bare(sandbox: dict[str, Any], guild_id: int, updates: int, removals: int) -> dict[str, Any]:
    """discord.py alone, member cache off: receives and parses the storm, counted with on_socket_event_type."""
    client = discord.Client(intents=bot_intents(), member_cache_flags=discord.MemberCacheFlags.none())
    seen = {"events": 0}
    result: dict[str, Any] = {}

    @client.event
    async def on_socket_event_type(event_type: str) -> None:
        if event_type in STORM_EVENTS:
            seen["events"] += 1

    @client.event
    async def on_ready() -> None:
        watch = PeakRss(interval=0.05)
        started, cpu_started = time.perf_counter(), time.process_time()
        result["sandbox_seconds"] = await start_storm(sandbox, guild_id, updates, removals)
        await wait_until(lambda: seen["events"] >= updates + removals)
        result["seconds"] = time.perf_counter() - started
        result["cpu_seconds"] = time.process_time() - cpu_started
        result["rss_growth_mb"] = watch.stop()
        await client.close()

    await run_bare(client, sandbox)
    result["events"] = seen["events"]
    return result


async def ours(
    sandbox: dict[str, Any], guild_id: int, updates: int, removals: int, database_url: str
) -> dict[str, Any]:
    """GuildlinkBot with the guild linked and synced: from the storm's start to its last event stored."""
    async with running_bot(sandbox, database_url) as bot:
        store = bot.store
        link = await store.save_link(Link(guild_id, "bench", 1, "bench", ("bot",), 0, datetime.now(UTC)))
        await bot.links.guild_linked(link)
        await bot.member_sync.wait_idle()
        before = await store.count_members(guild_id)
        watch = PeakRss(interval=0.05)
        started, cpu_started = time.perf_counter(), time.process_time()
        sandbox_seconds = await start_storm(sandbox, guild_id, updates, removals)
        await wait_until(lambda: bot.member_events.stored >= updates + removals)
        seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu_started
        growth = watch.stop()
        after = await store.count_members(guild_id)
        stormed = sum(
            1
            for m in await store.list_members(guild_id, limit=1_000_000)
            if m.nick and m.nick.startswith("storm ")
        )
    # Every update and removal landed: the removed are gone, every survivor carries its storm nick.
    assert after == before - removals and stormed == after, (before, after, stormed)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "sandbox_seconds": sandbox_seconds,
        "rss_growth_mb": growth,
        "events": updates + removals,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("ours", "bare"))
    parser.add_argument("--sandbox", required=True, help="the sandbox's first-line JSON")
    parser.add_argument("--guild", type=int, required=True)
    parser.add_argument("--updates", type=int, required=True)
    parser.add_argument("--removals", type=int, required=True)
    parser.add_argument(
        "--database-url", help="ours: the store (default: a SQLite file in a temporary folder)"
    )
    args = parser.parse_args()
    sandbox = json.loads(args.sandbox)
    with tempfile.TemporaryDirectory() as folder:
        if args.mode == "bare":
            result = asyncio.run(bare(sandbox, args.guild, args.updates, args.removals))
        else:
            url = args.database_url or f"sqlite:///{Path(folder) / 'storm.db'}"
            result = asyncio.run(ours(sandbox, args.guild, args.updates, args.removals, url))
    print(json.dumps(result | {"mode": args.mode}), flush=True)


if __name__ == "__main__":
    main()
