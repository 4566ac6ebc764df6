"""Storage alone: members per second from chunk payloads, into SQLite against a plain executemany floor and
into PostgreSQL against a plain COPY floor."""

from __future__ import annotations

import gc
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg

from bench.common import BenchArgs, Table, fresh_database, median, postgres_server, run_standalone
from bot.payloads import member_from_payload
from store import Link, PostgresStore, SqliteStore, Store, SyncPhase, SyncState
from store.migrations.sqlite import MIGRATIONS

GUILD_ID = 81384788765712384
CHUNK = 1000
BENCH_LINK = Link(GUILD_ID, "bench", 1, "bench", ("bot",), 0, datetime(2026, 1, 1, tzinfo=UTC))


def chunk_payloads(members: int) -> list[list[dict[str, Any]]]:
    """GUILD_MEMBERS_CHUNK `members` lists, shaped as Discord sends them, prepared before timing.

    Frozen out of the garbage collector's reach: a sync holds one chunk at a time, not the whole guild's
    payloads, and every full collection walking millions of fixture objects would be charged to whichever
    side allocates (ours builds Members, the floor's tuples are made before timing).
    """
    base = 200_000_000_000_000_000
    payloads = [
        {
            "user": {
                "id": str(base + index),
                "username": f"user_{index}",
                "global_name": f"User {index}" if index % 3 else None,
                "avatar": f"{index:032x}" if index % 2 else None,
                "discriminator": "0",
                "public_flags": 0,
                **({"bot": True} if index % 50 == 0 else {}),
            },
            "nick": f"nick {index}" if index % 4 == 0 else None,
            "avatar": None,
            "roles": [str(base + role) for role in range(index % 4)],
            "joined_at": "2024-05-01T12:00:00.000000+00:00",
            "deaf": False,
            "mute": False,
            "flags": 0,
        }
        for index in range(members)
    ]
    chunks = [payloads[start : start + CHUNK] for start in range(0, members, CHUNK)]
    gc.freeze()
    return chunks


async def write_as_a_sync(store: Store, chunks: list[list[dict[str, Any]]]) -> float:
    """What a sync does per chunk: payloads to Members, one upsert transaction with the progress; seconds."""
    # Members are written only while their guild is linked: without the link nothing would be stored.
    await store.save_link(BENCH_LINK)
    started = time.perf_counter()
    stored = 0
    for chunk in chunks:
        members = [member_from_payload(payload) for payload in chunk]
        stored += len(members)
        progress = SyncState(GUILD_ID, SyncPhase.SYNCING, members_stored=stored)
        await store.upsert_members(GUILD_ID, members, datetime.now(UTC), progress=progress)
    seconds = time.perf_counter() - started
    assert await store.count_members(GUILD_ID) == stored, "ours stored fewer members than it was given"
    return seconds


async def ours(folder: Path, chunks: list[list[dict[str, Any]]]) -> float:
    """Ours on SQLite: upsert (INSERT ... ON CONFLICT DO UPDATE) per chunk."""
    async with SqliteStore.open(folder / "ours.db") as store:
        return await write_as_a_sync(store, chunks)


def floor_rows(
    chunks: list[list[dict[str, Any]]], seen: object, roles: Callable[[list[str]], object]
) -> list[list[tuple[Any, ...]]]:
    """The floors' rows, made before timing: the members columns, roles in the engine's own form."""
    return [
        [
            (
                GUILD_ID,
                int(p["user"]["id"]),
                p["user"]["username"],
                p["user"].get("global_name"),
                p.get("nick"),
                p["user"].get("avatar"),
                bool(p["user"].get("bot")),
                roles(p["roles"]),
                p["joined_at"],
                seen,
            )
            for p in chunk
        ]
        for chunk in chunks
    ]


async def floor(folder: Path, chunks: list[list[dict[str, Any]]]) -> float:
    """The same rows, already tuples, inserted by a plain executemany per chunk: nothing to convert."""
    seen = datetime.now(UTC).isoformat()
    rows = floor_rows(chunks, seen, lambda roles: " ".join(roles))
    async with aiosqlite.connect(folder / "floor.db", isolation_level=None) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        for script in filter(None, MIGRATIONS):
            for statement in filter(None, (part.strip() for part in script.split(";"))):
                await db.execute(statement)
        started = time.perf_counter()
        for chunk_rows in rows:
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany(
                "INSERT INTO members (guild_id, user_id, username, global_name, nick, avatar, bot, roles,"
                " joined_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                chunk_rows,
            )
            await db.execute("COMMIT")
        return time.perf_counter() - started


async def ours_postgres(database_url: str, chunks: list[list[dict[str, Any]]]) -> float:
    """Ours on PostgreSQL: COPY to staging and one merge per chunk."""
    async with PostgresStore.open(database_url) as store:
        return await write_as_a_sync(store, chunks)


async def copy_floor(database_url: str, chunks: list[list[dict[str, Any]]]) -> float:
    """The same rows, already tuples, copied straight into the members table, one transaction per chunk."""
    seen = datetime.now(UTC)
    rows = floor_rows(chunks, seen, lambda roles: [int(role) for role in roles])
    # The store's schema (its migrations), then a bare connection with the durability ours uses for members.
    async with PostgresStore.open(database_url):
        pass
    db = await asyncpg.connect(database_url)
    try:
        await db.execute("SET synchronous_commit TO OFF")
        started = time.perf_counter()
        for chunk_rows in rows:
            async with db.transaction():
                await db.copy_records_to_table("members", records=chunk_rows, columns=FLOOR_COLUMNS)
        return time.perf_counter() - started
    finally:
        await db.close()


FLOOR_COLUMNS = (
    "guild_id",
    "user_id",
    "username",
    "global_name",
    "nick",
    "avatar",
    "bot",
    "roles",
    "joined_at",
    "last_seen",
)


async def main(args: BenchArgs) -> list[Table]:
    sizes = [5_000] if args.smoke else ([100_000, 1_000_000] if args.full else [100_000])
    rounds = 1 if args.smoke else max(3, args.rounds)
    tables = []
    if "sqlite" in args.engines:
        tables.append(await _sqlite(sizes, rounds))
    if "postgres" in args.engines:
        with postgres_server() as server:
            tables.append(await _postgres(sizes, rounds, server))
    return tables


async def _postgres(sizes: list[int], rounds: int, server: str) -> Table:
    table = Table(
        "Storage: members written per second into PostgreSQL, ours vs plain COPY (floor)",
        ["members", "ours s", "floor s", "ours members/s", "floor members/s", "ours / floor throughput"],
    )
    for members in sizes:
        chunks = chunk_payloads(members)
        timings: dict[str, list[float]] = {"ours": [], "floor": []}
        for round_index in range(rounds):
            sides = (("floor", copy_floor), ("ours", ours_postgres))
            for name, side in sides if round_index % 2 == 0 else sides[::-1]:
                async with fresh_database(server) as database_url:
                    timings[name].append(await side(database_url, chunks))
        ours_s, floor_s = median(timings["ours"]), median(timings["floor"])
        table.rows.append(
            [members, ours_s, floor_s, round(members / ours_s), round(members / floor_s), floor_s / ours_s]
        )
    table.notes += [
        f"median of {rounds} run(s), each on a fresh database of a local throwaway cluster with fsync on;"
        f" chunks of {CHUNK}; synchronous_commit off on both sides (ours sets it per member transaction)",
        "ours: payload -> Member -> PostgresStore.upsert_members: the link row locked, COPY into a temporary"
        " staging table, one INSERT ... SELECT ... ON CONFLICT DO UPDATE merge counting the new members, the"
        " link's member count and the sync progress row, one transaction per chunk; floor: prepared tuples,"
        " COPY straight into members, one transaction per chunk",
        "goal: ours / floor throughput >= 0.5",
    ]
    return table


async def _sqlite(sizes: list[int], rounds: int) -> Table:
    table = Table(
        "Storage: members written per second into SQLite, ours vs plain executemany (floor)",
        ["members", "ours s", "floor s", "ours members/s", "floor members/s", "ours / floor throughput"],
    )
    for members in sizes:
        chunks = chunk_payloads(members)
        timings: dict[str, list[float]] = {"ours": [], "floor": []}
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as folder:
                timings["floor"].append(await floor(Path(folder), chunks))
                timings["ours"].append(await ours(Path(folder), chunks))
        ours_s, floor_s = median(timings["ours"]), median(timings["floor"])
        table.rows.append(
            [members, ours_s, floor_s, round(members / ours_s), round(members / floor_s), floor_s / ours_s]
        )
    table.notes += [
        f"median of {rounds} run(s); chunks of {CHUNK}; WAL, synchronous=NORMAL on both sides",
        "ours: payload -> Member -> upsert (INSERT ... ON CONFLICT DO UPDATE) plus the sync progress row, one"
        " transaction per chunk; floor: prepared tuples, plain INSERT, one transaction per chunk",
        "goal: ours / floor throughput >= 0.5",
    ]
    return table


if __name__ == "__main__":
    run_standalone(main, "bench.storage")
