"""The event feed and batched member events, on each engine: every change announced with it, in order, once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from store import (
    EventType,
    MemberChange,
    MemberChangeKind,
    PrunedEvents,
    Store,
    SyncPhase,
    SyncState,
    WebhookBacklog,
)
from tests.store.records import a_link, a_member

JOINED, UPDATED, LEFT = MemberChangeKind.JOINED, MemberChangeKind.UPDATED, MemberChangeKind.LEFT


def change(kind: MemberChangeKind, user_id: int, guild_id: int = 7, **fields: object) -> MemberChange:
    member = None if kind is LEFT else a_member(user_id, **fields)
    return MemberChange(guild_id, user_id, kind, member, datetime.now(UTC))


async def types(store: Store, after: int = 0) -> list[str]:
    return [event.type.value for event in await store.list_events(after=after, limit=1000)]


async def test_a_links_life_is_announced_in_order(store: Store) -> None:
    await store.save_link(a_link(7, ref="customer"))
    await store.save_sync_state(SyncState(7, SyncPhase.SYNCING, member_count=2))
    await store.upsert_members(7, [a_member(1)], datetime.now(UTC), progress=SyncState(7, SyncPhase.SYNCING))
    await store.save_sync_state(SyncState(7, SyncPhase.SYNCED, members_stored=1, member_count=1))
    await store.deactivate_link(7)
    await store.deactivate_link(7)  # already inactive: announced once
    await store.save_link(a_link(8))
    await store.deactivate_link(8, bot_removed=True)
    events = await store.list_events()
    assert [e.type for e in events] == [
        EventType.GUILD_LINKED,
        EventType.SYNC_STARTED,
        EventType.GUILD_SYNCED,
        EventType.GUILD_UNLINKED,
        EventType.GUILD_LINKED,
        EventType.GUILD_REMOVED,
    ]
    assert events[0].data["ref"] == "customer" and events[2].data == {"members": 1}
    assert [e.id for e in events] == sorted(e.id for e in events)


async def test_member_changes_apply_in_order_keep_counts_and_are_announced(store: Store) -> None:
    await store.save_link(a_link(7))
    await store.upsert_members(7, [a_member(1), a_member(2), a_member(6)], datetime.now(UTC))
    after = (await store.list_events())[-1].id
    applied = await store.apply_member_changes(
        [
            change(UPDATED, 1, nick="first"),
            change(UPDATED, 1, nick="second"),
            change(LEFT, 2),
            change(JOINED, 3),
            change(LEFT, 3),  # joined and left within one batch: gone
            change(LEFT, 4),  # never stored
            change(LEFT, 6),
            change(JOINED, 6),  # left and came back within one batch: stored, counted once
            change(JOINED, 5, guild_id=99),  # not linked: ignored
        ]
    )
    assert applied == 8
    members = {m.user_id: m for m in await store.list_members(7)}
    assert set(members) == {1, 6} and members[1].nick == "second"
    link = await store.get_link(7)
    assert link is not None and link.member_count == 2 == await store.count_members(7)
    assert await types(store, after) == [
        "member.updated",
        "member.updated",
        "member.left",
        "member.joined",
        "member.left",
        "member.left",
        "member.left",
        "member.joined",
    ]
    assert await store.list_members(99) == []


async def test_a_batch_longer_than_a_statement_keeps_its_order_counts_and_feed(store: Store) -> None:
    # More rows than one multi-row statement holds, and a rest: every event in its order, each member's last
    # change stored, the count moved by what was added and removed.
    await store.save_link(a_link(7))
    await store.save_link(a_link(8))
    await store.upsert_members(7, [a_member(u) for u in range(0, 600, 2)], datetime.now(UTC))
    after = (await store.list_events())[-1].id
    batch = [
        change(LEFT, u, guild_id=7 + u % 2)
        if u % 3 == 0
        else change(UPDATED, u, guild_id=7 + u % 2, nick=f"n{u}")
        for u in range(600)
    ]
    batch += [change(JOINED, u, nick="back") for u in range(6, 66, 6)]  # left above, back again
    assert await store.apply_member_changes(batch) == len(batch)
    events = await store.list_events(after=after, limit=1000)
    sent = [
        (f"member.{c.kind.value}", c.guild_id, str(c.user_id), c.member.nick if c.member else None)
        for c in batch
    ]
    got = [
        (
            e.type.value,
            e.guild_id,
            e.data["member"]["id"] if "member" in e.data else e.data["user_id"],
            e.data["member"]["nick"] if "member" in e.data else None,
        )
        for e in events
    ]
    assert got == sent
    expected = {
        7: {u: f"n{u}" for u in range(0, 600, 2) if u % 3} | {u: "back" for u in range(6, 66, 6)},
        8: {u: f"n{u}" for u in range(1, 600, 2) if u % 3},
    }
    for guild_id, nicks in expected.items():
        stored = await store.list_members(guild_id, limit=1000)
        assert {m.user_id: m.nick for m in stored} == nicks
        link = await store.get_link(guild_id)
        assert link is not None and link.member_count == len(nicks) == await store.count_members(guild_id)


async def test_an_events_change_survives_an_older_sync_chunk(store: Store) -> None:
    await store.save_link(a_link(7))
    snapshot = datetime.now(UTC) - timedelta(seconds=1)  # when the sync asked for the member list
    await store.apply_member_changes([change(UPDATED, 1, nick="from the event")])
    await store.upsert_members(
        7, [a_member(1, nick="from the older chunk")], datetime.now(UTC), snapshot_at=snapshot
    )
    [member] = await store.list_members(7)
    assert member.nick == "from the event"
    # A sync asked after the event: its chunk is newer and wins.
    await store.upsert_members(
        7, [a_member(1, nick="newer")], datetime.now(UTC), snapshot_at=datetime.now(UTC)
    )
    [member] = await store.list_members(7)
    assert member.nick == "newer"


async def test_the_feed_pages_without_gaps_while_events_keep_arriving(store: Store) -> None:
    await store.save_link(a_link(7))
    writing = asyncio.create_task(_write_many(store, 200))
    seen: list[int] = []
    cursor = 0
    while not writing.done() or (page := await store.list_events(after=cursor, limit=17)):
        page = await store.list_events(after=cursor, limit=17)
        seen += [event.id for event in page]
        cursor = seen[-1] if seen else cursor
        await asyncio.sleep(0)
    await writing
    assert len(seen) == len(set(seen)) == 201  # guild.linked and 200 member events
    assert seen == sorted(seen)


async def _write_many(store: Store, count: int) -> None:
    for user_id in range(count):
        await store.apply_member_changes([change(JOINED, user_id)])


async def test_old_events_are_pruned_and_the_highest_pruned_id_is_kept(store: Store) -> None:
    await store.save_link(a_link(7))
    assert await store.prune_events(datetime.now(UTC) - timedelta(days=7)) == PrunedEvents()
    assert await store.feed_pruned_up_to() == 0
    [linked] = await store.list_events()
    pruned = await store.prune_events(datetime.now(UTC) + timedelta(seconds=1))
    assert (pruned.count, pruned.up_to) == (1, linked.id)
    assert await store.list_events() == []
    assert await store.feed_pruned_up_to() == linked.id
    # Nothing more to prune: the mark stays where it was.
    assert await store.prune_events(datetime.now(UTC) + timedelta(seconds=1)) == PrunedEvents()
    assert await store.feed_pruned_up_to() == linked.id


async def test_pruning_takes_a_prefix_of_the_feed_up_to_the_first_event_still_kept(store: Store) -> None:
    await store.save_link(a_link(7))
    await store.apply_member_changes([change(JOINED, user_id) for user_id in range(3)])
    boundary = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await store.apply_member_changes([change(JOINED, user_id) for user_id in range(3, 5)])
    events = await store.list_events()
    pruned = await store.prune_events(boundary)
    assert (pruned.count, pruned.up_to) == (4, events[3].id)
    assert [e.id for e in await store.list_events()] == [e.id for e in events[4:]]
    assert await store.feed_pruned_up_to() == events[3].id


async def test_pruning_counts_by_type_the_events_the_webhook_cursor_had_not_passed(store: Store) -> None:
    await store.save_link(a_link(7))
    await store.apply_member_changes([change(JOINED, 1), change(JOINED, 2), change(LEFT, 1)])
    events = await store.list_events()
    await store.advance_webhook_cursor(events[1].id)  # the link and the first join were delivered
    pruned = await store.prune_events(datetime.now(UTC) + timedelta(seconds=1))
    assert pruned.count == 4
    assert pruned.undelivered == {EventType.MEMBER_JOINED: 1, EventType.MEMBER_LEFT: 1}
    assert pruned.first_undelivered == events[2].id


async def test_the_webhook_backlog_counts_from_the_cursor_and_past_pruned_events(store: Store) -> None:
    assert await store.webhook_backlog() == WebhookBacklog(0, None)
    await store.save_link(a_link(7))
    await store.apply_member_changes([change(JOINED, user_id) for user_id in range(4)])
    events = await store.list_events()
    assert await store.webhook_backlog() == WebhookBacklog(5, events[0].created_at)
    await store.advance_webhook_cursor(events[1].id)
    assert await store.webhook_backlog() == WebhookBacklog(3, events[2].created_at)
    boundary = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await store.apply_member_changes([change(JOINED, 9)])
    # Pruning took events the cursor had not reached: the backlog is what is left after them.
    await store.prune_events(boundary)
    [kept] = await store.list_events()
    assert await store.webhook_backlog() == WebhookBacklog(1, kept.created_at)
    await store.advance_webhook_cursor(kept.id)
    assert await store.webhook_backlog() == WebhookBacklog(0, None)


async def test_a_member_event_reads_back_as_it_was_sent(store: Store) -> None:
    await store.save_link(a_link(7))
    largest = 2**63 - 1
    sent = [
        a_member(1, nick='nick, "quoted"', roles=(largest, 1), global_name="Glöbal 🎮"),
        a_member(2, roles=()),
    ]
    fields = sent[0]._asdict()
    del fields["user_id"]
    await store.apply_member_changes([change(JOINED, 1, **fields), change(JOINED, 2, roles=())])
    assert list(await store.list_members(7)) == sent
    [first, second] = (await store.list_events())[-2:]
    assert first.data["member"]["roles"] == [str(largest), "1"] and second.data["member"]["roles"] == []


async def test_a_write_cancelled_at_any_point_ends_cancelled_and_the_next_is_taken(store: Store) -> None:
    # Shutdown cancels the feed's pruning and the member writers wherever they are: a cancellation that
    # lands while COMMIT is running in SQLite's thread once came back as "cannot rollback" and was swallowed.
    await store.save_link(a_link(7))
    for ticks in range(80):
        write = asyncio.create_task(store.apply_member_changes([change(JOINED, ticks)]))
        for _ in range(ticks):
            await asyncio.sleep(0)
        write.cancel()
        await asyncio.wait({write})
        # Cancelled, or done before the cancellation reached it: never failed.
        assert write.cancelled() or write.exception() is None, (ticks, write.exception())
        assert store.recent_write_failure() is None, ticks
    await store.apply_member_changes([change(JOINED, 1000)])
    assert store.recent_write_failure() is None
