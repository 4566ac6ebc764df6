"""The SQLite store: migrations, links keyed by guild, single-use states, bounded invites, members."""

from __future__ import annotations

import os
import sqlite3
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from store import (
    Invite,
    InviteUnusableError,
    Link,
    Member,
    RefConflictError,
    SqliteStore,
    SyncPhase,
    SyncState,
)
from store.migrations import MIGRATIONS


def a_link(guild_id: int = 1, **changes: object) -> Link:
    fields: dict = dict(
        guild_id=guild_id,
        guild_name="Guild <b>one</b>",
        linked_by_id=42,
        linked_by_username="admin",
        scopes=("identify", "bot"),
        permissions=0,
        linked_at=datetime.now(UTC),
    )
    fields.update(changes)
    return Link(**fields)


def a_member(user_id: int, **changes: object) -> Member:
    fields: dict = dict(
        user_id=user_id,
        username=f"user{user_id}",
        global_name=None,
        nick=None,
        avatar=None,
        bot=False,
        roles=(5, 6),
        joined_at="2024-01-01T00:00:00+00:00",
    )
    fields.update(changes)
    return Member(**fields)


def an_invite(
    token_hash: bytes, *, age: timedelta = timedelta(0), ttl: timedelta = timedelta(hours=1)
) -> Invite:
    created = datetime.now(UTC) - age
    return Invite(token_hash=token_hash, ref="customer", created_at=created, expires_at=created + ttl)


async def test_reopening_keeps_data_and_does_not_migrate_twice(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with SqliteStore.open(path) as store:
        await store.save_link(a_link())
        assert await store.add_invite(an_invite(b"i1"), limit=10)
    async with SqliteStore.open(path) as store:
        assert [link.guild_id for link in await store.list_links()] == [1]
        assert await store.get_invite(b"i1") is not None


async def test_relinking_updates_the_link_instead_of_duplicating_it(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
        await store.save_link(a_link(ref="customer-1"))
        await store.deactivate_link(1)
        saved = await store.save_link(a_link(guild_name="Renamed", linked_by_username="other"))
        links = await store.list_links()
    assert len(links) == 1
    assert saved.guild_name == "Renamed" and saved.active and saved.ref == "customer-1"


async def test_a_state_nonce_can_be_used_only_once(tmp_path: Path) -> None:
    expires = datetime.now(UTC) + timedelta(minutes=10)
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
        assert await store.use_state_once(b"n1", expires)
        assert not await store.use_state_once(b"n1", expires)
        assert await store.use_state_once(b"n2", expires)


async def test_open_invites_are_bounded_and_expired_ones_pruned(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
        assert await store.add_invite(an_invite(b"old", age=timedelta(hours=2)), limit=2)
        assert await store.add_invite(an_invite(b"a"), limit=2)
        assert await store.add_invite(an_invite(b"b"), limit=2)  # "old" expired: pruned, not counted
        assert not await store.add_invite(an_invite(b"c"), limit=2)
        assert await store.get_invite(b"old") is None
        await store.save_link(a_link(1, ref="customer"), invite_hash=b"a")  # a used invite is not open
        assert await store.add_invite(an_invite(b"c"), limit=2)


async def test_members_page_by_user_id_and_resync_drops_the_unseen(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
        await store.save_link(a_link(7))
        first_seen = datetime.now(UTC) - timedelta(minutes=5)
        await store.upsert_members(7, [a_member(i) for i in (30, 10, 20)], first_seen)
        page = await store.list_members(7, after=10, limit=1)
        assert [m.user_id for m in page] == [20]
        resync = datetime.now(UTC)
        await store.upsert_members(7, [a_member(10, nick="new"), a_member(30)], resync)
        assert await store.remove_members_not_seen_since(7, resync) == 1
        members = await store.list_members(7)
    assert [(m.user_id, m.nick) for m in members] == [(10, "new"), (30, None)]
    assert members[0].roles == (5, 6)


async def test_deactivating_a_link_deletes_its_members_and_records_the_removal(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
        await store.save_link(a_link(7))
        await store.upsert_members(7, [a_member(1)], datetime.now(UTC))
        await store.save_sync_state(SyncState(7, SyncPhase.SYNCED, members_stored=1))
        assert await store.deactivate_link(7)
        link = await store.get_link(7)
        assert link is not None and not link.active
        assert await store.count_members(7) == 0 and link.member_count == 0
        sync = await store.get_sync_state(7)
        assert sync is not None and sync.phase is SyncPhase.REMOVED


async def test_an_inactive_link_takes_no_members_and_no_sync_state(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
        await store.save_link(a_link(7))
        await store.deactivate_link(7)
        progress = SyncState(7, SyncPhase.SYNCING, members_stored=1)
        assert await store.upsert_members(7, [a_member(1)], datetime.now(UTC), progress=progress) is None
        assert not await store.save_sync_state(SyncState(7, SyncPhase.SYNCED, members_stored=1))
        assert await store.upsert_members(8, [a_member(1)], datetime.now(UTC)) is None  # never linked
        assert await store.count_members(7) == 0 and await store.count_members(8) == 0
        sync = await store.get_sync_state(7)
        assert sync is not None and sync.phase is SyncPhase.REMOVED


async def test_relinking_a_removed_guild_makes_its_sync_pending_again(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
        await store.save_link(a_link(7))
        await store.deactivate_link(7)
        await store.save_link(a_link(7))
        sync = await store.get_sync_state(7)
    assert sync is not None and sync.phase is SyncPhase.PENDING


async def test_every_write_keeps_the_links_member_count(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
        await store.save_link(a_link(7))
        old = datetime.now(UTC) - timedelta(minutes=1)
        await store.upsert_members(7, [a_member(i) for i in (1, 2, 3, 3)], old)
        await store.upsert_members(7, [a_member(2, nick="n"), a_member(4)], datetime.now(UTC))
        await store.remove_member(7, 1)
        await store.remove_member(7, 99)
        await store.remove_members_not_seen_since(7, datetime.now(UTC) - timedelta(seconds=30))
        link = await store.get_link(7)
        assert link is not None and link.member_count == await store.count_members(7) == 2
        [guild] = await store.list_linked_guilds()
    assert guild.link.member_count == 2 and guild.sync is not None and guild.sync.phase is SyncPhase.PENDING


async def test_an_invite_links_one_guild_only(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
        await store.add_invite(an_invite(b"i"), limit=10)
        await store.save_link(a_link(1, ref="customer"), invite_hash=b"i")
        with pytest.raises(InviteUnusableError):
            await store.save_link(a_link(2, ref="customer"), invite_hash=b"i")
        with pytest.raises(InviteUnusableError):
            await store.save_link(a_link(3, ref="customer"), invite_hash=b"unknown")
        invite = await store.get_invite(b"i")
        assert invite is not None and invite.guild_id == 1 and invite.used_at is not None
        assert [link.guild_id for link in await store.list_links()] == [1]


async def test_moving_an_active_link_to_another_ref_is_refused(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
        await store.save_link(a_link(1, ref="customer-a"))
        with pytest.raises(RefConflictError):
            await store.save_link(a_link(1, ref="customer-b", linked_by_username="intruder"))
        await store.save_link(a_link(1, ref="customer-a", guild_name="Renamed"))  # same ref: fine
        link = await store.get_link(1)
    assert link is not None and link.ref == "customer-a" and link.linked_by_username == "admin"


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


async def test_a_waiting_sync_keeps_until_when_and_the_next_state_clears_it(tmp_path: Path) -> None:
    until = datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
        await store.save_link(a_link(1))
        await store.save_sync_state(SyncState(1, SyncPhase.WAITING, member_count=9, waiting_until=until))
        waiting = await store.get_sync_state(1)
        assert waiting is not None and waiting.phase is SyncPhase.WAITING
        assert waiting.waiting_until == until and waiting.member_count == 9
        (listed,) = await store.list_linked_guilds()
        assert listed.sync == waiting
        await store.save_sync_state(SyncState(1, SyncPhase.SYNCING, member_count=9))
        syncing = await store.get_sync_state(1)
        assert syncing is not None and syncing.waiting_until is None
