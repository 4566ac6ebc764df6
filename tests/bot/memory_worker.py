"""One run of the bot against a slow database, in a fresh process whose RSS is its own: `python -m
tests.bot.memory_worker {sync,events,stall} --sandbox JSON --guild ID [--env NAME=VALUE ...]`.

`sync`: a whole-list sync while every chunk's write takes `--write-delay` s. `events`: a storm of member
updates while every batch's write takes that long. `stall`: a sync while chunk writes do not finish at all,
until a pause has reached its cap and the chunks were dropped (then writes go through, and the retried
sync must complete). The last
line printed is JSON: the RSS before the load, its peak during it, and what the store holds after.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bot.client import GuildlinkBot
from bot.discord_internals import discord_endpoint
from config import parse_settings
from store import Link, Store, open_store
from tests.rss import PeakRss


def slowed(write: Callable[..., Awaitable[Any]], delay: float, gate: asyncio.Event) -> Callable[..., Any]:
    """`write`, each call first waiting for `gate` and then `delay` seconds: a database that keeps up slowly."""

    async def slow_write(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        await asyncio.sleep(delay)
        return await write(*args, **kwargs)

    return slow_write


async def wait_for(check: Callable[[], bool], what: str, limit: float = 600.0) -> None:
    deadline = time.monotonic() + limit
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


async def run(args: argparse.Namespace, database_url: str) -> dict[str, Any]:
    sandbox = json.loads(args.sandbox)
    env = dict(item.split("=", 1) for item in args.env)
    settings = parse_settings(
        {
            "DISCORD_CLIENT_ID": str(sandbox["client_id"]),
            "DISCORD_CLIENT_SECRET": sandbox["client_secret"],
            "DISCORD_BOT_TOKEN": sandbox["bot_token"],
            "DISCORD_BASE_URL": sandbox["base_url"],
            "DISCORD_REDIRECT_URI": sandbox["redirect_uris"][0],
            "DATABASE_URL": database_url,
            **env,
        }
    )
    guild_id = args.guild
    async with open_store(settings.database_url) as store, aiohttp.ClientSession() as http:
        gate = asyncio.Event()
        gate.set()
        # The sync's chunks in `sync` and `stall`; the events' batches in `events`.
        name = "apply_member_changes" if args.case == "events" else "upsert_members"
        setattr(store, name, slowed(getattr(store, name), args.write_delay, gate))
        with discord_endpoint(sandbox["base_url"]):
            bot = GuildlinkBot(settings, store, member_list_cooldown=0.5)
            async with bot:
                task = asyncio.create_task(bot.start(settings.bot_token.reveal()))
                await wait_for(lambda: bot.is_ready() or task.done(), "the bot did not become ready", 60)
                if task.done():
                    task.result()
                try:
                    result = await CASES[args.case](bot, store, http, sandbox, guild_id, gate, args)
                finally:
                    await bot.close()
                    await asyncio.gather(task, return_exceptions=True)
    return result | {
        "case": args.case,
        "peak_buffered": bot.read_valve.peak,
        "read_pauses": {
            ended: bot.metrics.read_pauses.labels(ended)._value.get() for ended in ("drained", "capped")
        },
        "gave_up": bot.metrics.sync_failures.labels("SyncAbandonedError")._value.get(),
        # The whole run's, start-up and the checks after the load included.
        "kernel_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


async def link(bot: GuildlinkBot, store: Store, guild_id: int) -> None:
    saved = await store.save_link(Link(guild_id, "memory", 1, "memory", ("bot",), 0, datetime.now(UTC)))
    await bot.links.guild_linked(saved)


async def sync_case(
    bot: GuildlinkBot, store: Store, http: Any, sandbox: Any, guild_id: int, gate: Any, args: Any
) -> dict[str, Any]:
    watch = PeakRss()
    started = time.monotonic()
    await link(bot, store, guild_id)
    await bot.member_sync.wait_idle()
    watch.stop()
    return _figures(watch, started) | {"members": await store.count_members(guild_id)}


async def events_case(
    bot: GuildlinkBot, store: Store, http: Any, sandbox: Any, guild_id: int, gate: Any, args: Any
) -> dict[str, Any]:
    await link(bot, store, guild_id)
    await bot.member_sync.wait_idle()
    watch = PeakRss()
    started = time.monotonic()
    url = f"{sandbox['base_url']}/_sandbox/guilds/{guild_id}/storm"
    async with http.post(url, json={"updates": args.updates}) as response:
        response.raise_for_status()
    # Until every change is in the store, stored as an event or read again by a resync.
    await bot.member_events.wait_written()
    await bot.member_sync.wait_idle()
    watch.stop()
    stormed, after = 0, 0
    while page := await store.list_members(guild_id, after=after, limit=10_000):
        stormed += sum(1 for m in page if (m.nick or "").startswith("storm "))
        after = page[-1].user_id
    return _figures(watch, started) | {"members": await store.count_members(guild_id), "stormed": stormed}


async def stall_case(
    bot: GuildlinkBot, store: Store, http: Any, sandbox: Any, guild_id: int, gate: asyncio.Event, args: Any
) -> dict[str, Any]:
    gate.clear()
    watch = PeakRss()
    started = time.monotonic()
    await link(bot, store, guild_id)
    capped = bot.metrics.read_pauses.labels("capped")
    await wait_for(lambda: capped._value.get() >= 1, "the pause of the stalled sync did not reach its cap")
    gate.set()
    await bot.member_sync.wait_idle()
    watch.stop()
    return _figures(watch, started) | {"members": await store.count_members(guild_id)}


def _figures(watch: PeakRss, started: float) -> dict[str, Any]:
    return {
        "seconds": round(time.monotonic() - started, 1),
        "start_rss_mb": round(watch.start, 1),
        "peak_rss_mb": round(watch.peak, 1),
        "growth_mb": round(watch.peak - watch.start, 1),
    }


CASES = {"sync": sync_case, "events": events_case, "stall": stall_case}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=sorted(CASES))
    parser.add_argument("--sandbox", required=True, help="the sandbox's first-line JSON")
    parser.add_argument("--guild", type=int, required=True)
    parser.add_argument("--write-delay", type=float, default=0.1, help="seconds each slowed write takes")
    parser.add_argument("--updates", type=int, default=0, help="events: members the storm changes")
    parser.add_argument("--env", action="append", default=[], help="a setting, NAME=VALUE (repeatable)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        result = asyncio.run(run(args, f"sqlite:///{Path(folder) / 'memory.db'}"))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
