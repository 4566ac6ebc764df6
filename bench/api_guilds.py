"""`GET /api/guilds` at many guilds of many members: one query, against the per-guild counting it replaced."""

from __future__ import annotations

import sqlite3
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
from aiohttp import web

from bench.common import BenchArgs, Table, median, run_standalone
from config import parse_settings
from handoff import BotStatus
from store import Link, SqliteStore, Store
from web.app import create_app

API_TOKEN = "bench-api-token-" + "x" * 32


class _NoBot:
    async def guild_linked(self, link: Link) -> None:
        return None

    async def guild_unlinked(self, guild_id: int) -> None:
        return None

    async def guild_abandoned(self, guild_id: int) -> bool:
        return True

    def bot_status(self) -> BotStatus:
        return BotStatus(ready=True, state="ready", latency_ms=1.0, guild_count=0)


def fill(path: Path, guilds: int, members: int) -> None:
    """Links, synced states and members, written with plain sqlite3 (the setup is not what is measured)."""
    now = datetime.now(UTC).isoformat()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        for guild in range(1, guilds + 1):
            db.execute(
                "INSERT INTO links (guild_id, guild_name, linked_by_id, linked_by_username, scopes, permissions,"
                " linked_at, ref, active, member_count) VALUES (?, ?, 42, 'admin', 'bot', 0, ?, NULL, 1, ?)",
                (guild, f"guild {guild}", now, members),
            )
            db.execute(
                "INSERT INTO sync_states (guild_id, phase, members_stored, member_count, synced_at, error,"
                " updated_at) VALUES (?, 'synced', ?, ?, ?, NULL, ?)",
                (guild, members, members, now, now),
            )
            db.executemany(
                "INSERT INTO members (guild_id, user_id, username, global_name, nick, avatar, bot, roles,"
                " joined_at, last_seen) VALUES (?, ?, 'u', NULL, NULL, NULL, 0, '', NULL, ?)",
                ((guild, user, now) for user in range(members)),
            )


async def per_guild_queries(store: Store) -> float:
    """What /api/guilds did before: the links, then a sync state and a COUNT(*) for each guild."""
    started = time.perf_counter()
    for link in await store.list_links():
        await store.get_sync_state(link.guild_id)
        await store.count_members(link.guild_id)
    return time.perf_counter() - started


async def main(args: BenchArgs) -> list[Table]:
    sizes = [(100, 100)] if args.smoke else ([(1_000, 10_000)] if args.full else [(1_000, 1_000)])
    rounds = 3 if args.smoke else 15
    table = Table(
        "GET /api/guilds: one query (ours) against a sync state and a COUNT(*) per guild (before)",
        [
            "guilds",
            "members each",
            "ours ms (HTTP, median)",
            "before ms (store only, median)",
            "before / ours",
        ],
    )
    for guilds, members in sizes:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "guildlink.db"
            async with SqliteStore.open(path):
                pass  # migrated
            fill(path, guilds, members)
            settings = parse_settings(
                {
                    "DISCORD_CLIENT_ID": "1",
                    "DISCORD_CLIENT_SECRET": "s",
                    "DISCORD_BOT_TOKEN": "MQ.a.b",
                    "DISCORD_REDIRECT_URI": "http://localhost:1/authorize-discord",
                    "DATABASE_URL": f"sqlite:///{path}",
                    "API_TOKEN": API_TOKEN,
                }
            )
            async with SqliteStore.open(path) as store:
                bot = _NoBot()
                runner = web.AppRunner(create_app(settings, store, linker=bot, bot_status=bot))
                await runner.setup()
                site = web.TCPSite(runner, "127.0.0.1", 0)
                await site.start()
                port = runner.addresses[0][1]
                ours: list[float] = []
                before: list[float] = []
                headers = {"Authorization": f"Bearer {API_TOKEN}"}
                async with aiohttp.ClientSession() as session:
                    for _ in range(rounds):
                        started = time.perf_counter()
                        async with session.get(
                            f"http://127.0.0.1:{port}/api/guilds", headers=headers
                        ) as response:
                            body = await response.json()
                        ours.append(time.perf_counter() - started)
                        assert len(body["guilds"]) == guilds and body["guilds"][0]["member_count"] == members
                        before.append(await per_guild_queries(store))
                await runner.cleanup()
            table.rows.append(
                [guilds, members, median(ours) * 1000, median(before) * 1000, median(before) / median(ours)]
            )
    table.notes += [
        f"median of {rounds} requests; ours is the whole HTTP request through create_app (auth, one query, JSON);"
        " before is only the store calls the old handler made",
        "goal: ours under 50 ms at 1,000 guilds of 10,000 members (--full)",
    ]
    return [table]


if __name__ == "__main__":
    run_standalone(main, "bench.api_guilds")
