"""Storage alone: members per second into SQLite from chunk payloads, against a plain executemany floor."""

from __future__ import annotations

import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from bench.common import BenchArgs, Table, median, run_standalone
from bot.payloads import member_from_payload
from store import SqliteStore, SyncPhase, SyncState
from store.migrations.sqlite import MIGRATIONS

GUILD_ID = 81384788765712384
CHUNK = 1000


def chunk_payloads(members: int) -> list[list[dict[str, Any]]]:
    """GUILD_MEMBERS_CHUNK `members` lists, shaped as Discord sends them, prepared before timing."""
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
    return [payloads[start : start + CHUNK] for start in range(0, members, CHUNK)]


async def ours(folder: Path, chunks: list[list[dict[str, Any]]]) -> float:
    """What a sync does per chunk: payloads to Members, one upsert transaction with the progress."""
    async with SqliteStore.open(folder / "ours.db") as store:
        started = time.perf_counter()
        stored = 0
        for chunk in chunks:
            members = [member_from_payload(payload) for payload in chunk]
            stored += len(members)
            progress = SyncState(GUILD_ID, SyncPhase.SYNCING, members_stored=stored)
            await store.upsert_members(GUILD_ID, members, datetime.now(UTC), progress=progress)
        return time.perf_counter() - started


async def floor(folder: Path, chunks: list[list[dict[str, Any]]]) -> float:
    """The same rows, already tuples, inserted by a plain executemany per chunk: nothing to convert."""
    seen = datetime.now(UTC).isoformat()
    rows = [
        [
            (
                GUILD_ID,
                int(p["user"]["id"]),
                p["user"]["username"],
                p["user"].get("global_name"),
                p.get("nick"),
                p["user"].get("avatar"),
                bool(p["user"].get("bot")),
                " ".join(p["roles"]),
                p["joined_at"],
                seen,
            )
            for p in chunk
        ]
        for chunk in chunks
    ]
    async with aiosqlite.connect(folder / "floor.db", isolation_level=None) as db:
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        for script in filter(None, MIGRATIONS):
            for statement in filter(None, (part.strip() for part in script.split(";"))):
                await db.execute(statement)
        started = time.perf_counter()
        for chunk_rows in rows:
            await db.execute("BEGIN IMMEDIATE")
            await db.executemany("INSERT INTO members VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", chunk_rows)
            await db.execute("COMMIT")
        return time.perf_counter() - started


async def main(args: BenchArgs) -> list[Table]:
    sizes = [5_000] if args.smoke else ([100_000, 1_000_000] if args.full else [100_000])
    rounds = 1 if args.smoke else 3
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
    return [table]


if __name__ == "__main__":
    run_standalone(main, "bench.storage")
