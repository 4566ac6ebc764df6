"""A resync announces its diff, and holds a suspicious share of removals: on SQLite and on PostgreSQL.

What a (re)sync writes is announced in the same transaction as live gateway events are, so that a backend that
mirrors from the feed keeps exactly the stored members.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from store import Event, EventType, HoldRule, Member, Store, SyncPhase, SyncState
from tests.store.records import a_leave, a_link, a_member, an_update

GUILD = 7


async def first_sync(store: Store, members: list[Member]) -> int:
    """Link the guild and sync `members` into it; return the feed's cursor after it."""
    await store.save_link(a_link(GUILD))
    await sync(store, members)
    events = await store.list_events(limit=1000)
    return events[-1].id


async def sync(store: Store, members: list[Member], hold: HoldRule | None = None) -> None:
    started = datetime.now(UTC)
    await store.save_sync_state(SyncState(GUILD, SyncPhase.SYNCING, member_count=len(members)))
    # Two chunks, as Discord sends them.
    half = len(members) // 2
    for chunk in (members[:half], members[half:]):
        await store.upsert_members(GUILD, chunk, datetime.now(UTC), snapshot_at=started)
    await store.finish_sync(GUILD, started, hold or HoldRule())


async def events_after(store: Store, cursor: int) -> list[Event]:
    return await store.list_events(after=cursor, limit=1000)


def kinds(events: list[Event]) -> list[tuple[str, Any]]:
    """Each event as (type, the member's or user's id, or the data of a sync event)."""
    shown: list[tuple[str, Any]] = []
    for event in events:
        if "member" in event.data:
            shown.append((event.type.value, event.data["member"]["id"]))
        elif "user_id" in event.data:
            shown.append((event.type.value, event.data["user_id"]))
        else:
            shown.append((event.type.value, event.data))
    return shown


def applied(state: dict[str, dict[str, Any]], events: list[Event]) -> dict[str, dict[str, Any]]:
    """The backend's mirror: `state` (members by id) with the feed's member events applied in order."""
    mirror = dict(state)
    for event in events:
        if event.type in (EventType.MEMBER_JOINED, EventType.MEMBER_UPDATED):
            mirror[event.data["member"]["id"]] = event.data["member"]
        elif event.type is EventType.MEMBER_LEFT:
            mirror.pop(event.data["user_id"], None)
    return mirror


async def stored(store: Store) -> dict[str, dict[str, Any]]:
    return {str(m.user_id): m.as_json() for m in await store.list_members(GUILD)}


async def test_a_first_sync_announces_only_that_the_guild_is_synced(store: Store) -> None:
    await store.save_link(a_link(GUILD))
    await sync(store, [a_member(i) for i in range(1, 11)])
    types = [event.type for event in await store.list_events()]
    assert types == [EventType.GUILD_LINKED, EventType.SYNC_STARTED, EventType.GUILD_SYNCED]


async def test_a_resync_announces_each_join_change_and_leave(store: Store) -> None:
    cursor = await first_sync(store, [a_member(i) for i in range(1, 21)])
    before = await stored(store)
    # While guildlink was stopped: 21 joined, 3 changed their nick, 5 its roles, 20 left.
    now = [a_member(i) for i in range(1, 20) if i not in (3, 5)]
    now += [a_member(3, nick="new nick"), a_member(5, roles=(9,)), a_member(21)]
    await sync(store, sorted(now))
    events = await events_after(store, cursor)
    assert kinds(events) == [
        ("sync.started", {"member_count": 20}),
        ("member.updated", "3"),
        ("member.updated", "5"),
        ("member.joined", "21"),
        ("member.left", "20"),
        ("guild.synced", {"members": 20}),
    ]
    assert events[1].data == {"member": a_member(3, nick="new nick").as_json()}
    assert applied(before, events) == await stored(store)


async def test_a_resync_that_changes_nothing_announces_no_member(store: Store) -> None:
    members = [a_member(i, roles=(1, 2, 3)) for i in range(1, 11)]
    cursor = await first_sync(store, members)
    # The same roles in another order are the same roles.
    await sync(store, [m._replace(roles=(3, 1, 2)) for m in members])
    assert [e.type for e in await events_after(store, cursor)] == [
        EventType.SYNC_STARTED,
        EventType.GUILD_SYNCED,
    ]


async def test_a_chunk_older_than_a_gateway_event_announces_nothing_for_that_member(store: Store) -> None:
    cursor = await first_sync(store, [a_member(1), a_member(2)])
    started = datetime.now(UTC) - timedelta(seconds=1)
    await store.save_sync_state(SyncState(GUILD, SyncPhase.SYNCING, member_count=2))
    # The gateway's update arrived after the resync asked; the chunk (Discord's older view) follows it.
    await store.apply_member_changes([an_update(GUILD, a_member(1, nick="live"))])
    await store.upsert_members(
        GUILD, [a_member(1, nick="stale"), a_member(2)], datetime.now(UTC), snapshot_at=started
    )
    await store.finish_sync(GUILD, started, HoldRule())
    assert kinds(await events_after(store, cursor)) == [
        ("sync.started", {"member_count": 2}),
        ("member.updated", "1"),
        ("guild.synced", {"members": 2}),
    ]
    [member, _] = await store.list_members(GUILD)
    assert member.nick == "live"


async def test_a_relinked_guild_syncs_as_a_first_sync(store: Store) -> None:
    await first_sync(store, [a_member(i) for i in range(1, 6)])
    await store.deactivate_link(GUILD)
    cursor = (await store.list_events(limit=1000))[-1].id
    await store.save_link(a_link(GUILD))
    await sync(store, [a_member(i) for i in range(1, 8)])
    types = [e.type for e in await events_after(store, cursor)]
    assert types == [EventType.GUILD_LINKED, EventType.SYNC_STARTED, EventType.GUILD_SYNCED]


async def test_a_short_member_list_holds_its_removals_until_confirmed(store: Store) -> None:
    cursor = await first_sync(store, [a_member(i) for i in range(1, 101)])
    before = await stored(store)
    rule = HoldRule(share=0.1, minimum=5)
    # Discord answers with 80 of the 100, one of them changed, and one newcomer.
    await sync(store, [a_member(i) for i in range(1, 80)] + [a_member(80, nick="n"), a_member(101)], rule)
    sync_state = await store.get_sync_state(GUILD)
    assert sync_state is not None and sync_state.phase is SyncPhase.HELD and sync_state.held_removals == 20
    assert await store.count_members(GUILD) == 101
    held = await events_after(store, cursor)
    assert kinds(held)[1:] == [
        ("member.updated", "80"),
        ("member.joined", "101"),
        ("sync.held", {"would_remove": 20, "members": 101}),
    ]
    # One of the 20 shows up on the gateway meanwhile: it stays.
    await store.apply_member_changes([an_update(GUILD, a_member(85, nick="here"))])

    outcome = await store.confirm_held_removals(GUILD)
    assert outcome is not None and (outcome.removed, outcome.members) == (19, 82)
    confirmed = await events_after(store, held[-1].id)
    assert [k for k, _ in kinds(confirmed)] == ["member.updated"] + ["member.left"] * 19 + ["guild.synced"]
    assert applied(before, held + confirmed) == await stored(store)
    assert (await store.get_link(GUILD)).member_count == await store.count_members(GUILD) == 82  # type: ignore[union-attr]
    assert await store.confirm_held_removals(GUILD) is None  # nothing held any more


async def test_a_resync_that_agrees_with_a_hold_applies_nothing_twice(store: Store) -> None:
    cursor = await first_sync(store, [a_member(i) for i in range(1, 101)])
    rule = HoldRule(share=0.1, minimum=5)
    short = [a_member(i, nick="n" if i == 1 else None) for i in range(1, 61)]
    await sync(store, short, rule)
    after_first_hold = (await store.list_events(after=cursor, limit=1000))[-1].id
    await sync(store, short, rule)
    again = kinds(await events_after(store, after_first_hold))
    assert again == [
        ("sync.started", {"member_count": 60}),
        ("sync.held", {"would_remove": 40, "members": 100}),
    ]
    assert await store.count_members(GUILD) == 100


async def test_a_resync_that_sees_the_held_members_again_clears_the_hold(store: Store) -> None:
    members = [a_member(i) for i in range(1, 101)]
    cursor = await first_sync(store, members)
    rule = HoldRule(share=0.1, minimum=5)
    await sync(store, members[:50], rule)
    await sync(store, members[:99], rule)
    sync_state = await store.get_sync_state(GUILD)
    assert (
        sync_state is not None and sync_state.phase is SyncPhase.SYNCED and sync_state.held_removals is None
    )
    assert [k for k, _ in kinds(await events_after(store, cursor))] == [
        "sync.started",
        "sync.held",
        "sync.started",
        "member.left",
        "guild.synced",
    ]
    assert await store.count_members(GUILD) == 99
    assert await store.confirm_held_removals(GUILD) is None


async def test_few_removals_are_applied_even_from_a_small_guild(store: Store) -> None:
    cursor = await first_sync(store, [a_member(i) for i in range(1, 11)])
    # Half of a ten-member guild, but fewer than the minimum of 50: applied.
    await sync(store, [a_member(i) for i in range(1, 6)])
    assert [k for k, _ in kinds(await events_after(store, cursor))].count("member.left") == 5
    assert await store.count_members(GUILD) == 5


async def test_a_first_sync_never_holds(store: Store) -> None:
    await store.save_link(a_link(GUILD))
    # Members left over from a first sync that was cut short; the next first sync does not see them.
    await store.upsert_members(
        GUILD, [a_member(i) for i in range(1, 101)], datetime.now(UTC) - timedelta(minutes=1)
    )
    await sync(store, [a_member(i) for i in range(1, 11)], HoldRule(share=0.1, minimum=5))
    sync_state = await store.get_sync_state(GUILD)
    assert sync_state is not None and sync_state.phase is SyncPhase.SYNCED
    assert await store.count_members(GUILD) == 10


async def test_leaves_stored_by_events_keep_the_mirror_exact_across_a_resync(store: Store) -> None:
    cursor = await first_sync(store, [a_member(i) for i in range(1, 31)])
    before = await stored(store)
    await store.apply_member_changes([a_leave(GUILD, 2), an_update(GUILD, a_member(40))])
    await sync(store, [a_member(i) for i in range(1, 31) if i not in (2, 3)] + [a_member(40), a_member(41)])
    assert applied(before, await events_after(store, cursor)) == await stored(store)


async def test_an_event_written_late_does_not_make_a_resync_remove_its_member(store: Store) -> None:
    await first_sync(store, [a_member(i) for i in range(1, 11)])
    # The event arrived before the resync began, but a slow database writes it after the resync's chunk.
    late = an_update(GUILD, a_member(3, nick="late"))
    started = datetime.now(UTC)
    await store.save_sync_state(SyncState(GUILD, SyncPhase.SYNCING, member_count=10))
    await store.upsert_members(
        GUILD, [a_member(i) for i in range(1, 11)], datetime.now(UTC), snapshot_at=started
    )
    await store.apply_member_changes([late])
    outcome = await store.finish_sync(GUILD, started, HoldRule())
    assert outcome is not None and outcome.removed == 0
    assert await store.count_members(GUILD) == 10
