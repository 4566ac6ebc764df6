"""The store's behaviour, whatever its engine: every test here runs on SQLite and on PostgreSQL.

Links keyed by guild, single-use states, bounded invites, members written only while linked, counts kept.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from store import (
    HoldRule,
    InviteUnusableError,
    LinkCounts,
    Member,
    RefConflictError,
    Store,
    SyncPhase,
    SyncState,
    open_store,
)
from tests.store.records import a_leave, a_link, a_member, an_invite

# Discord's snowflakes fill a signed 64-bit integer; the largest must survive every column.
LARGEST_SNOWFLAKE = 2**63 - 1


async def test_reopening_keeps_data_and_does_not_migrate_twice(database_url: str) -> None:
    async with open_store(database_url) as store:
        await store.save_link(a_link())
        assert await store.add_invite(an_invite(b"i1"), limit=10)
    async with open_store(database_url) as store:
        assert [link.guild_id for link in await store.list_links()] == [1]
        assert await store.get_invite(b"i1") is not None


async def test_a_new_store_answers_and_takes_writes(store: Store) -> None:
    await store.ping()
    await store.check_writable()
    assert store.recent_write_failure() is None


async def test_a_link_reads_back_as_it_was_saved(store: Store) -> None:
    linked_at = datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
    link = a_link(
        LARGEST_SNOWFLAKE,
        guild_name="Ünïcode 🎮 'quoted'",
        linked_by_id=LARGEST_SNOWFLAKE - 1,
        scopes=("identify", "guilds", "bot"),
        permissions=2**53 + 1,
        linked_at=linked_at,
        ref="customer-1",
    )
    saved = await store.save_link(link)
    assert saved == link
    assert await store.get_link(LARGEST_SNOWFLAKE) == link
    assert await store.get_link(2) is None


async def test_relinking_updates_the_link_instead_of_duplicating_it(store: Store) -> None:
    await store.save_link(a_link(ref="customer-1"))
    await store.deactivate_link(1)
    saved = await store.save_link(a_link(guild_name="Renamed", linked_by_username="other"))
    links = await store.list_links()
    assert len(links) == 1
    assert saved.guild_name == "Renamed" and saved.active and saved.ref == "customer-1"


async def test_links_are_listed_by_ref_and_activity_in_link_order(store: Store) -> None:
    start = datetime.now(UTC)
    await store.save_link(a_link(3, ref="a", linked_at=start))
    await store.save_link(a_link(1, ref="b", linked_at=start + timedelta(seconds=1)))
    await store.save_link(a_link(2, ref="a", linked_at=start + timedelta(seconds=2)))
    await store.deactivate_link(2)
    assert [link.guild_id for link in await store.list_links()] == [3, 1, 2]
    assert [link.guild_id for link in await store.list_links(ref="a")] == [3, 2]
    assert [link.guild_id for link in await store.list_links(ref="a", active_only=True)] == [3]
    assert [guild.link.guild_id for guild in await store.list_linked_guilds(ref="a")] == [3, 2]
    [removed] = [guild for guild in await store.list_linked_guilds() if guild.link.guild_id == 2]
    assert removed.sync is not None and removed.sync.phase is SyncPhase.REMOVED


async def test_a_state_nonce_can_be_used_only_once(store: Store) -> None:
    expires = datetime.now(UTC) + timedelta(minutes=10)
    assert await store.use_state_once(b"n1", expires)
    assert not await store.use_state_once(b"n1", expires)
    assert await store.use_state_once(b"n2", expires)


async def test_a_state_nonce_used_by_many_requests_at_once_counts_once(store: Store) -> None:
    expires = datetime.now(UTC) + timedelta(minutes=10)
    results = await asyncio.gather(*(store.use_state_once(b"n", expires) for _ in range(8)))
    assert sorted(results) == [False] * 7 + [True]


async def test_open_invites_are_bounded_and_expired_ones_pruned(store: Store) -> None:
    assert await store.add_invite(an_invite(b"old", age=timedelta(hours=2)), limit=2)
    assert await store.add_invite(an_invite(b"a"), limit=2)
    assert await store.add_invite(an_invite(b"b"), limit=2)  # "old" expired: pruned, not counted
    assert not await store.add_invite(an_invite(b"c"), limit=2)
    assert await store.get_invite(b"old") is None
    await store.save_link(a_link(1, ref="customer"), invite_hash=b"a")  # a used invite is not open
    assert await store.add_invite(an_invite(b"c"), limit=2)


async def test_invites_added_at_once_never_exceed_the_bound(store: Store) -> None:
    added = await asyncio.gather(*(store.add_invite(an_invite(bytes([i])), limit=3) for i in range(10)))
    assert added.count(True) == 3


async def test_an_invite_reads_back_as_it_was_added(store: Store) -> None:
    invite = an_invite(b"\x00\xff" * 16)
    await store.add_invite(invite, limit=10)
    assert await store.get_invite(invite.token_hash) == invite
    assert await store.get_invite(b"unknown") is None


async def test_members_page_by_user_id_and_resync_drops_the_unseen(store: Store) -> None:
    await store.save_link(a_link(7))
    first_seen = datetime.now(UTC) - timedelta(minutes=5)
    await store.upsert_members(7, [a_member(i) for i in (30, 10, 20)], first_seen)
    page = await store.list_members(7, after=10, limit=1)
    assert [m.user_id for m in page] == [20]
    resync = datetime.now(UTC)
    await store.upsert_members(7, [a_member(10, nick="new"), a_member(30)], resync)
    outcome = await store.finish_sync(7, resync, HoldRule())
    assert outcome is not None and (outcome.members, outcome.removed, outcome.held) == (2, 1, 0)
    members = await store.list_members(7)
    assert [(m.user_id, m.nick) for m in members] == [(10, "new"), (30, None)]
    assert members[0].roles == (5, 6)


async def test_a_member_reads_back_as_it_was_written(store: Store) -> None:
    await store.save_link(a_link(7))
    written = [
        Member(LARGEST_SNOWFLAKE, "ü\\tab\t", "Glöbal 🎮", "nick, \"quoted\"", "a_" + "f" * 32, True,
               (LARGEST_SNOWFLAKE, 1), "2015-04-26T06:26:56.936000+00:00"),
        Member(1, "plain", None, None, None, False, (), None),
    ]  # fmt: skip
    assert await store.upsert_members(7, written, datetime.now(UTC)) == 2
    members = await store.list_members(7)
    assert list(members) == sorted(written)
    assert all(type(m) is Member and type(m.roles) is tuple for m in members)


async def test_a_chunk_of_members_and_its_progress_are_written_together(store: Store) -> None:
    await store.save_link(a_link(7))
    progress = SyncState(7, SyncPhase.SYNCING, members_stored=1000, member_count=5000)
    stored = await store.upsert_members(
        7, [a_member(i) for i in range(1, 1001)], datetime.now(UTC), progress=progress
    )
    assert stored == 1000
    assert await store.count_members(7) == 1000
    sync = await store.get_sync_state(7)
    assert sync is not None and (sync.phase, sync.members_stored, sync.member_count) == (
        SyncPhase.SYNCING,
        1000,
        5000,
    )


async def test_an_empty_chunk_stores_no_member_but_its_progress(store: Store) -> None:
    await store.save_link(a_link(7))
    progress = SyncState(7, SyncPhase.SYNCED, members_stored=0, member_count=0)
    assert await store.upsert_members(7, [], datetime.now(UTC), progress=progress) == 0
    sync = await store.get_sync_state(7)
    assert sync is not None and sync.phase is SyncPhase.SYNCED and await store.count_members(7) == 0


async def test_a_sync_state_keeps_the_last_sync_time_until_a_new_one(store: Store) -> None:
    await store.save_link(a_link(7))
    synced_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert await store.save_sync_state(SyncState(7, SyncPhase.SYNCED, 3, 3, synced_at=synced_at))
    assert await store.save_sync_state(SyncState(7, SyncPhase.FAILED, error="gateway closed"))
    sync = await store.get_sync_state(7)
    assert sync is not None and sync.phase is SyncPhase.FAILED
    assert sync.synced_at == synced_at and sync.error == "gateway closed" and sync.updated_at is not None
    assert await store.get_sync_state(8) is None


async def test_deactivating_a_link_deletes_its_members_and_records_the_removal(store: Store) -> None:
    await store.save_link(a_link(7))
    await store.upsert_members(7, [a_member(1)], datetime.now(UTC))
    await store.save_sync_state(SyncState(7, SyncPhase.SYNCED, members_stored=1))
    assert await store.deactivate_link(7)
    link = await store.get_link(7)
    assert link is not None and not link.active
    assert await store.count_members(7) == 0 and link.member_count == 0
    sync = await store.get_sync_state(7)
    assert sync is not None and sync.phase is SyncPhase.REMOVED
    assert not await store.deactivate_link(8)  # never linked


async def test_an_inactive_link_takes_no_members_and_no_sync_state(store: Store) -> None:
    await store.save_link(a_link(7))
    await store.deactivate_link(7)
    progress = SyncState(7, SyncPhase.SYNCING, members_stored=1)
    assert await store.upsert_members(7, [a_member(1)], datetime.now(UTC), progress=progress) is None
    assert not await store.save_sync_state(SyncState(7, SyncPhase.SYNCED, members_stored=1))
    assert await store.upsert_members(8, [a_member(1)], datetime.now(UTC)) is None  # never linked
    assert await store.count_members(7) == 0 and await store.count_members(8) == 0
    sync = await store.get_sync_state(7)
    assert sync is not None and sync.phase is SyncPhase.REMOVED


async def test_member_writes_racing_an_unlink_leave_no_members(store: Store) -> None:
    await store.save_link(a_link(7))
    seen = datetime.now(UTC)
    chunks = [store.upsert_members(7, [a_member(c * 100 + i) for i in range(100)], seen) for c in range(6)]
    states = [store.save_sync_state(SyncState(7, SyncPhase.SYNCING, members_stored=c)) for c in range(3)]
    await asyncio.gather(*chunks[:3], *states, store.deactivate_link(7), *chunks[3:])
    link = await store.get_link(7)
    assert link is not None and not link.active
    assert await store.count_members(7) == 0 and link.member_count == 0
    sync = await store.get_sync_state(7)
    assert sync is not None and sync.phase is SyncPhase.REMOVED


async def test_relinking_a_removed_guild_makes_its_sync_pending_again(store: Store) -> None:
    await store.save_link(a_link(7))
    await store.deactivate_link(7)
    await store.save_link(a_link(7))
    sync = await store.get_sync_state(7)
    assert sync is not None and sync.phase is SyncPhase.PENDING


async def test_relinking_a_guild_being_synced_keeps_its_progress(store: Store) -> None:
    await store.save_link(a_link(7))
    await store.save_sync_state(SyncState(7, SyncPhase.SYNCING, members_stored=500))
    await store.save_link(a_link(7, guild_name="Renamed"))
    sync = await store.get_sync_state(7)
    assert sync is not None and (sync.phase, sync.members_stored) == (SyncPhase.SYNCING, 500)


async def test_every_write_keeps_the_links_member_count(store: Store) -> None:
    await store.save_link(a_link(7))
    old = datetime.now(UTC) - timedelta(minutes=1)
    assert await store.upsert_members(7, [a_member(i) for i in (1, 2, 3, 3)], old) == 4
    await store.upsert_members(7, [a_member(2, nick="n"), a_member(4)], datetime.now(UTC))
    await store.apply_member_changes([a_leave(7, 1), a_leave(7, 99)])
    await store.finish_sync(7, datetime.now(UTC) - timedelta(seconds=30), HoldRule())
    link = await store.get_link(7)
    assert link is not None and link.member_count == await store.count_members(7) == 2
    [guild] = await store.list_linked_guilds()
    assert guild.link.member_count == 2 and guild.sync is not None and guild.sync.phase is SyncPhase.SYNCED


async def test_member_writes_at_once_keep_the_count_exact(store: Store) -> None:
    await store.save_link(a_link(7))
    seen = datetime.now(UTC)
    # Overlapping chunks, single events and removals, all at once.
    writes = [
        store.upsert_members(7, [a_member(i) for i in range(c * 50, c * 50 + 100)], seen) for c in range(8)
    ]
    writes += [store.upsert_members(7, [a_member(1000 + i)], seen) for i in range(10)]
    writes += [store.apply_member_changes([a_leave(7, i)]) for i in range(0, 450, 7)]
    await asyncio.gather(*writes)
    link = await store.get_link(7)
    assert link is not None and link.member_count == await store.count_members(7)


async def test_a_duplicated_member_in_one_chunk_is_written_as_its_last_copy(store: Store) -> None:
    await store.save_link(a_link(7))
    await store.upsert_members(7, [a_member(1, nick="first"), a_member(1, nick="last")], datetime.now(UTC))
    [member] = await store.list_members(7)
    assert member.nick == "last"


async def test_an_invite_links_one_guild_only(store: Store) -> None:
    await store.add_invite(an_invite(b"i"), limit=10)
    await store.save_link(a_link(1, ref="customer"), invite_hash=b"i")
    with pytest.raises(InviteUnusableError):
        await store.save_link(a_link(2, ref="customer"), invite_hash=b"i")
    with pytest.raises(InviteUnusableError):
        await store.save_link(a_link(3, ref="customer"), invite_hash=b"unknown")
    invite = await store.get_invite(b"i")
    assert invite is not None and invite.guild_id == 1 and invite.used_at is not None
    assert [link.guild_id for link in await store.list_links()] == [1]


async def test_an_invite_used_by_several_links_at_once_links_one_guild(store: Store) -> None:
    await store.add_invite(an_invite(b"i"), limit=10)
    results = await asyncio.gather(
        *(store.save_link(a_link(g, ref="customer"), invite_hash=b"i") for g in range(1, 6)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, InviteUnusableError) for r in results if isinstance(r, BaseException))
    assert len(await store.list_links()) == 1


async def test_an_expired_invite_links_nothing(store: Store) -> None:
    await store.add_invite(an_invite(b"i", ttl=timedelta(milliseconds=1)), limit=10)
    await asyncio.sleep(0.01)
    with pytest.raises(InviteUnusableError):
        await store.save_link(a_link(1, ref="customer"), invite_hash=b"i")
    assert await store.get_link(1) is None and await store.get_sync_state(1) is None


async def test_moving_an_active_link_to_another_ref_is_refused(store: Store) -> None:
    await store.save_link(a_link(1, ref="customer-a"))
    with pytest.raises(RefConflictError):
        await store.save_link(a_link(1, ref="customer-b", linked_by_username="intruder"))
    await store.save_link(a_link(1, ref="customer-a", guild_name="Renamed"))  # same ref: fine
    link = await store.get_link(1)
    assert link is not None and link.ref == "customer-a" and link.linked_by_username == "admin"


async def test_a_refused_move_leaves_the_invite_open(store: Store) -> None:
    await store.save_link(a_link(1, ref="customer-a"))
    await store.add_invite(an_invite(b"i"), limit=10)  # an invite of "customer"
    with pytest.raises(RefConflictError):
        await store.save_link(a_link(1, ref="customer"), invite_hash=b"i")
    invite = await store.get_invite(b"i")
    assert invite is not None and invite.used_at is None and invite.guild_id is None


async def test_an_inactive_link_may_move_to_another_ref(store: Store) -> None:
    await store.save_link(a_link(1, ref="customer-a"))
    await store.deactivate_link(1)
    saved = await store.save_link(a_link(1, ref="customer-b"))
    assert saved.ref == "customer-b" and saved.active


async def test_first_links_of_one_guild_for_two_refs_at_once_keep_one_ref(store: Store) -> None:
    results = await asyncio.gather(
        *(store.save_link(a_link(1, ref=ref)) for ref in ("customer-a", "customer-b") * 3),
        return_exceptions=True,
    )
    saved = {r.ref for r in results if not isinstance(r, BaseException)}
    assert len(saved) == 1
    assert all(isinstance(r, RefConflictError) for r in results if isinstance(r, BaseException))
    link = await store.get_link(1)
    assert link is not None and {link.ref} == saved


async def test_a_waiting_sync_keeps_until_when_and_the_next_state_clears_it(store: Store) -> None:
    until = datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)
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


# What the processes of a fleet share: every test opens a second store on the same database, as a second
# process would.


async def test_a_guild_lock_is_exclusive_across_two_stores_on_one_database(
    store: Store, database_url: str
) -> None:
    async with open_store(database_url) as other:
        first = await store.try_lock_guild(LARGEST_SNOWFLAKE)
        assert first is not None and first.held
        assert await other.try_lock_guild(LARGEST_SNOWFLAKE) is None
        assert await store.try_lock_guild(LARGEST_SNOWFLAKE) is None  # one holder, even within a store
        second_guild = await other.try_lock_guild(2)
        assert second_guild is not None  # guilds lock apart
        await first.release()
        assert not first.held
        taken = await other.try_lock_guild(LARGEST_SNOWFLAKE)
        assert taken is not None and taken.held
        await first.release()  # releasing twice changes nothing
        assert taken.held and await store.try_lock_guild(LARGEST_SNOWFLAKE) is None
        await taken.release()
        await second_guild.release()


async def test_a_guild_lock_dies_with_the_store_that_held_it(database_url: str) -> None:
    async with open_store(database_url) as survivor:
        async with open_store(database_url) as holder:
            lock = await holder.try_lock_guild(7)
            assert lock is not None
            assert await survivor.try_lock_guild(7) is None
        assert not lock.held
        assert await survivor.try_lock_guild(7) is not None


async def test_locks_taken_at_once_go_to_one_taker(store: Store, database_url: str) -> None:
    async with open_store(database_url) as other:
        locks = await asyncio.gather(*(s.try_lock_guild(7) for s in (store, other) * 4))
    assert sum(lock is not None for lock in locks) == 1


async def test_the_member_list_cooldown_is_shared_by_every_store_on_the_database(
    store: Store, database_url: str
) -> None:
    assert await store.member_list_wait(7) == 0.0
    async with open_store(database_url) as other:
        await store.hold_off_member_list(7, 30.0)
        assert 29.0 < await other.member_list_wait(7) <= 30.0
        assert await other.member_list_wait(8) == 0.0
        # Discord's RATE_LIMITED says how long; that answer replaces our own estimate, shorter or longer.
        await other.hold_off_member_list(7, 2.0)
        assert 1.0 < await store.member_list_wait(7) <= 2.0
        await other.hold_off_member_list(7, 0.0)
        assert await store.member_list_wait(7) == 0.0


async def test_identify_slots_are_paced_per_bucket_across_stores(store: Store, database_url: str) -> None:
    async with open_store(database_url) as other:
        assert await store.reserve_identify(0, 1.0) == 0.0
        assert 0.9 < await other.reserve_identify(0, 1.0) <= 1.0
        assert 1.9 < await store.reserve_identify(0, 1.0) <= 2.0
        assert await other.reserve_identify(1, 1.0) == 0.0  # another bucket: its own pace
        waits = await asyncio.gather(*(s.reserve_identify(2, 0.5) for s in (store, other) * 3))
    # Six bookings at once from two stores: six distinct slots, half a second apart.
    assert [round(wait * 2) for wait in sorted(waits)] == [0, 1, 2, 3, 4, 5]


async def test_an_identify_slot_past_is_not_waited_for(store: Store) -> None:
    assert await store.reserve_identify(0, 0.05) == 0.0
    await asyncio.sleep(0.1)
    assert await store.reserve_identify(0, 0.05) == 0.0


async def test_unfinished_links_are_listed_for_the_shards_asked(store: Store) -> None:
    # Guild ids whose shard (of 4) is the last digit of the name: (id >> 22) % 4.
    def guild(shard: int, n: int) -> int:
        return ((n * 4 + shard) << 22) | n

    pending, syncing, failed, synced, removed, other_shard, fresh = (
        guild(1, 1), guild(1, 2), guild(3, 3), guild(1, 4), guild(3, 5), guild(2, 6), guild(3, 7),
    )  # fmt: skip
    start = datetime.now(UTC)
    for i, guild_id in enumerate((pending, syncing, failed, synced, removed, other_shard, fresh)):
        await store.save_link(a_link(guild_id, linked_at=start + timedelta(seconds=i)))
    await store.save_sync_state(SyncState(syncing, SyncPhase.SYNCING, members_stored=10))
    await store.save_sync_state(SyncState(failed, SyncPhase.FAILED, error="gateway closed"))
    await store.save_sync_state(SyncState(synced, SyncPhase.SYNCED, synced_at=start))
    await store.deactivate_link(removed)
    listed = await store.list_unfinished_links(4, [1, 3])
    assert [link.guild_id for link in listed] == [pending, syncing, failed, fresh]
    assert await store.list_unfinished_links(4, [0]) == []


async def test_links_are_counted_by_state_with_the_members_of_the_active_ones(store: Store) -> None:
    assert await store.count_links() == LinkCounts({}, 0)
    for guild_id in (1, 2, 3, 4):
        await store.save_link(a_link(guild_id))
    await store.upsert_members(1, [a_member(1), a_member(2)], datetime.now(UTC))
    await store.upsert_members(2, [a_member(1)], datetime.now(UTC))
    await store.save_sync_state(SyncState(1, SyncPhase.SYNCED, members_stored=2))
    await store.save_sync_state(SyncState(2, SyncPhase.SYNCING))
    await store.deactivate_link(3)
    counts = await store.count_links()
    assert counts == LinkCounts({"synced": 1, "syncing": 1, "removed": 1, "pending": 1}, 3)
    assert (counts.total, counts.active) == (4, 3)


async def test_linked_guilds_page_by_guild_id(store: Store) -> None:
    for guild_id in (30, 10, 20, 40, 50):
        await store.save_link(a_link(guild_id))
    await store.save_sync_state(SyncState(20, SyncPhase.SYNCED))
    first = await store.page_linked_guilds(limit=2)
    assert [(g.link.guild_id, g.sync and g.sync.phase) for g in first] == [
        (10, SyncPhase.PENDING),
        (20, SyncPhase.SYNCED),
    ]
    rest = await store.page_linked_guilds(after=20, limit=10)
    assert [g.link.guild_id for g in rest] == [30, 40, 50]
    assert await store.page_linked_guilds(after=50) == []
