"""The SQLite store: migrations, links keyed by guild, single-use bounded states, members."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from store import Link, Member, PendingState, SqliteStore, SyncPhase, SyncState


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


def a_state(
    state: str, *, age: timedelta = timedelta(0), ttl: timedelta = timedelta(minutes=10)
) -> PendingState:
    created = datetime.now(UTC) - age
    return PendingState(state=state, browser_hash=b"h" * 32, created_at=created, expires_at=created + ttl)


async def test_reopening_keeps_data_and_does_not_migrate_twice(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with SqliteStore.open(path) as store:
        await store.save_link(a_link())
        await store.add_pending_state(a_state("s1"), limit=10)
    async with SqliteStore.open(path) as store:
        assert [link.guild_id for link in await store.list_links()] == [1]
        assert await store.take_pending_state("s1") is not None


async def test_relinking_updates_the_link_instead_of_duplicating_it(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
        await store.save_link(a_link(ref="customer-1"))
        await store.deactivate_link(1)
        saved = await store.save_link(a_link(guild_name="Renamed", linked_by_username="other"))
        links = await store.list_links()
    assert len(links) == 1
    assert saved.guild_name == "Renamed" and saved.active and saved.ref == "customer-1"


async def test_a_state_can_be_taken_only_once(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
        await store.add_pending_state(a_state("s1"), limit=10)
        first = await store.take_pending_state("s1")
        second = await store.take_pending_state("s1")
    assert first is not None and first.browser_hash == b"h" * 32
    assert second is None


async def test_pending_states_are_bounded_and_expired_ones_pruned(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
        await store.add_pending_state(a_state("old", age=timedelta(minutes=20)), limit=3)
        for index in range(5):
            await store.add_pending_state(a_state(f"s{index}", age=timedelta(seconds=10 - index)), limit=3)
        assert await store.count_pending_states() == 3
        assert await store.take_pending_state("old") is None
        assert await store.take_pending_state("s0") is None
        assert await store.take_pending_state("s4") is not None


async def test_members_page_by_user_id_and_resync_drops_the_unseen(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
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


async def test_deactivating_a_link_deletes_its_members_and_sync_state(tmp_path: Path) -> None:
    async with SqliteStore.open(tmp_path / "db.sqlite") as store:
        await store.save_link(a_link(7))
        await store.upsert_members(7, [a_member(1)], datetime.now(UTC))
        await store.save_sync_state(SyncState(7, SyncPhase.SYNCED, members_stored=1))
        assert await store.deactivate_link(7)
        link = await store.get_link(7)
        assert link is not None and not link.active
        assert await store.count_members(7) == 0
        assert await store.get_sync_state(7) is None
