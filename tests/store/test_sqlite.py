"""What only the SQLite engine promises: a private file, and files of older schemas upgraded in place."""

from __future__ import annotations

import os
import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from store import EventType, MemberChange, MemberChangeKind, SqliteStore
from store.migrations.sqlite import MIGRATIONS
from tests.store.records import a_link, a_member

# The step that adds the pruned mark, whatever number it ends up with among the steps of other branches.
FEED_PRUNED_STEP = next(
    n for n, step in enumerate(MIGRATIONS, start=1) if step and "CREATE TABLE feed_pruned" in step
)
# The steps a new database records: a number kept with None for another branch's step is not recorded.
STEPS_PRESENT = [n for n, step in enumerate(MIGRATIONS, start=1) if step is not None]


async def test_the_database_file_is_private_to_its_owner(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
        await store.save_link(a_link())
        modes = {name: stat.S_IMODE(os.stat(tmp_path / name).st_mode) for name in os.listdir(tmp_path)}
    assert modes == {"db.sqlite": 0o600, "db.sqlite-wal": 0o600, "db.sqlite-shm": 0o600}


async def test_a_database_written_by_schema_2_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)")
        for version, script in enumerate(MIGRATIONS[:2], start=1):
            assert script is not None
            db.executescript(script)
            db.execute("INSERT INTO schema_version VALUES (?, '2026-01-01')", (version,))
        db.execute(
            "INSERT INTO links VALUES (7, 'Old', 42, 'admin', 'bot', 0, '2026-01-01T00:00:00+00:00', 'r', 1)"
        )
        db.executemany(
            "INSERT INTO members VALUES (7, ?, 'u', NULL, NULL, NULL, 0, '', NULL, '2026-01-01T00:00:00+00:00')",
            [(1,), (2,)],
        )
    async with SqliteStore.open(path) as store:
        link = await store.get_link(7)
        assert link is not None and link.ref == "r" and link.member_count == 2
        assert [m.user_id for m in await store.list_members(7)] == [1, 2]


async def test_a_new_file_gets_every_step(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "db.sqlite"):
        pass
    with sqlite3.connect(tmp_path / "db.sqlite") as db:
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version")]
        columns = [row[1] for row in db.execute("PRAGMA table_info(sync_states)")]
    assert versions == STEPS_PRESENT and "waiting_until" in columns


async def test_a_step_that_arrives_after_a_later_one_is_still_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file made while step 4 was still on another branch (its number kept with None) has 5 and 6 already.
    path = tmp_path / "db.sqlite"
    monkeypatch.setattr("store.sqlite.MIGRATIONS", (*MIGRATIONS[:3], None, *MIGRATIONS[4:]))
    async with SqliteStore.open(path):
        pass
    monkeypatch.undo()
    async with SqliteStore.open(path) as store:
        await store.save_link(a_link(7))
    with sqlite3.connect(path) as db:
        versions = [row[0] for row in db.execute("SELECT version FROM schema_version ORDER BY version")]
        columns = [row[1] for row in db.execute("PRAGMA table_info(sync_states)")]
    assert versions == STEPS_PRESENT and "waiting_until" in columns


async def test_a_nul_character_in_a_nick_is_stored_as_it_came(tmp_path: Path) -> None:
    # Unlike PostgreSQL's text, SQLite's holds NUL: the event is stored, not set aside.
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
        await store.save_link(a_link(1))
        change = MemberChange(
            1, 7, MemberChangeKind.JOINED, a_member(7, nick="nul\x00nick"), datetime.now(UTC)
        )
        assert await store.apply_member_changes([change]) == 1
        assert [m.nick for m in await store.list_members(1)] == ["nul\x00nick"]
        [event] = [e for e in await store.list_events(after=0) if e.type is EventType.MEMBER_JOINED]
        assert event.data["member"]["nick"] == "nul\x00nick"


async def test_the_pruned_mark_step_marks_the_events_a_file_pruned_before_it_as_pruned(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db.sqlite"
    async with SqliteStore.open(path) as store:
        for guild_id in (1, 2, 3):
            await store.save_link(a_link(guild_id))
    # As a file from before the step that pruned its first two events by time, and one that pruned all it had.
    for pruned, expected in (("id <= 2", 2), ("TRUE", 3)):
        with sqlite3.connect(path) as db:
            db.execute(f"DELETE FROM events WHERE {pruned}")
            db.execute("DROP TABLE feed_pruned")
            db.execute("DELETE FROM schema_version WHERE version = ?", (FEED_PRUNED_STEP,))
        db.close()
        async with SqliteStore.open(path) as store:
            assert await store.feed_pruned_up_to() == expected
