"""Erasure, export and the scrubs of personal data from the feed, on each engine.

A scrubbed event keeps its id, type, guild and time, so that a reader's cursor still works.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import asyncpg

from store import (
    EventType,
    MemberChange,
    MemberChangeKind,
    RoleAction,
    RoleChangeRequest,
    Store,
    is_postgres_url,
    open_store,
    sqlite_path,
)
from tests.store.records import a_leave, a_link, a_member, an_update

ADMIN = 42
USER = 1001
OTHER = 1002


def a_join(guild_id: int, user_id: int, **fields: object) -> MemberChange:
    member = a_member(user_id, **fields)
    return MemberChange(guild_id, user_id, MemberChangeKind.JOINED, member, datetime.now(UTC))


async def feed(store: Store) -> list[tuple[int, str, int, dict[str, object]]]:
    return [(e.id, e.type.value, e.guild_id, e.data) for e in await store.list_events(limit=1000)]


async def test_erasing_a_user_deletes_their_rows_and_scrubs_their_events_in_every_guild(store: Store) -> None:
    for guild_id in (7, 8):
        await store.save_link(a_link(guild_id))
        await store.apply_member_changes(
            [a_join(guild_id, USER, nick="secret nick"), a_join(guild_id, OTHER)]
        )
    await store.apply_member_changes([an_update(7, a_member(USER, global_name="Real Name"))])
    before = await feed(store)

    erased = await store.erase_user(USER)

    assert (erased.guild_ids, erased.members_deleted, erased.events_scrubbed) == ((7, 8), 2, 3)
    for guild_id in (7, 8):
        assert [m.user_id for m in await store.list_members(guild_id)] == [OTHER]
        link = await store.get_link(guild_id)
        assert link is not None and link.member_count == 1
    after = await feed(store)
    tombstone = {"user_id": str(USER), "scrubbed": "erased"}
    # The same ids, types and guilds: only the erased user's data changed, and user.erased followed.
    assert [event[:3] for event in after[: len(before)]] == [event[:3] for event in before]
    for (_, kind, _, data), (_, _, _, old) in zip(after, before, strict=False):
        if kind in ("member.joined", "member.updated") and old["member"]["id"] == str(USER):  # type: ignore[index]
            assert data == tombstone
        else:
            assert data == old
    assert "secret nick" not in str(after) and "Real Name" not in str(after)
    assert [event[1:] for event in after[len(before) :]] == [
        ("user.erased", 7, {"user_id": str(USER)}),
        ("user.erased", 8, {"user_id": str(USER)}),
    ]


async def test_erasing_the_admin_who_linked_a_guild_keeps_the_link_but_not_their_username(
    store: Store,
) -> None:
    await store.save_link(a_link(7, linked_by_id=ADMIN, linked_by_username="admin-name", ref="customer"))

    erased = await store.erase_user(ADMIN)

    assert (erased.guild_ids, erased.members_deleted, erased.events_scrubbed) == ((7,), 0, 1)
    link = await store.get_link(7)
    assert link is not None and link.active and link.linked_by_username == ""
    [linked, announced] = await store.list_events()
    assert linked.type is EventType.GUILD_LINKED
    assert linked.data["linked_by"] == {"id": str(ADMIN), "username": None}
    assert linked.data["ref"] == "customer"
    assert announced.type is EventType.USER_ERASED


async def test_erasing_a_user_nothing_is_stored_of_announces_nothing(store: Store) -> None:
    await store.save_link(a_link(7))
    await store.apply_member_changes([a_join(7, OTHER)])
    before = await feed(store)

    erased = await store.erase_user(USER)

    assert (erased.guild_ids, erased.members_deleted, erased.events_scrubbed) == ((), 0, 0)
    assert await feed(store) == before


async def test_an_export_holds_the_rows_links_and_events_naming_the_user(store: Store) -> None:
    await store.save_link(a_link(7, linked_by_id=USER))
    await store.save_link(a_link(8))
    await store.apply_member_changes(
        [a_join(7, USER, nick="n7"), a_join(8, USER, nick="n8"), a_join(8, OTHER)]
    )
    await store.apply_member_changes([a_leave(8, USER)])

    data = await store.export_user(USER, event_limit=100)

    assert [(guild_id, m.nick) for guild_id, m in data.members] == [(7, "n7")]
    assert [link.guild_id for link in data.links] == [7]
    assert [(e.type.value, e.guild_id) for e in data.events] == [
        ("guild.linked", 7),
        ("member.joined", 7),
        ("member.joined", 8),
        ("member.left", 8),
    ]
    assert not data.events_truncated
    short = await store.export_user(USER, event_limit=2)
    assert [e.id for e in short.events] == [e.id for e in data.events[:2]] and short.events_truncated
    nobody = await store.export_user(999, event_limit=100)
    assert (nobody.members, nobody.links, nobody.events) == ((), (), ())


async def test_unlinking_a_guild_scrubs_its_member_events_and_no_other_guilds(store: Store) -> None:
    for guild_id in (7, 8):
        await store.save_link(a_link(guild_id))
        await store.apply_member_changes([a_join(guild_id, USER, nick=f"nick {guild_id}")])

    await store.deactivate_link(7)

    joined = {e.guild_id: e.data for e in await store.list_events() if e.type is EventType.MEMBER_JOINED}
    assert joined[7] == {"user_id": str(USER), "scrubbed": "unlinked"}
    assert joined[8]["member"]["nick"] == "nick 8"


async def test_a_member_who_left_keeps_no_data_in_the_feed_past_the_window(store: Store) -> None:
    await store.save_link(a_link(7))
    await store.apply_member_changes([a_join(7, USER, nick="gone"), a_join(7, OTHER, nick="stays")])
    await store.apply_member_changes([an_update(7, a_member(USER, nick="gone 2"))])
    await store.apply_member_changes([a_leave(7, USER)])
    # Within the window: nothing is scrubbed yet.
    assert await store.scrub_departed(datetime.now(UTC) - timedelta(hours=24)) == 0
    # The user comes back: what they do after returning is not theirs to lose by the old leave.
    await store.apply_member_changes([a_join(7, USER, nick="back")])

    assert await store.scrub_departed(datetime.now(UTC) + timedelta(seconds=1)) == 2

    events = await store.list_events()
    data = [(e.type.value, e.data) for e in events if e.type.value.startswith("member.")]
    assert data == [
        ("member.joined", {"user_id": str(USER), "scrubbed": "left"}),
        ("member.joined", {"member": a_member(OTHER, nick="stays").as_json()}),
        ("member.updated", {"user_id": str(USER), "scrubbed": "left"}),
        ("member.left", {"user_id": str(USER)}),
        ("member.joined", {"member": a_member(USER, nick="back").as_json()}),
    ]
    # The walk remembers where it got to: a second run has nothing to do.
    assert await store.scrub_departed(datetime.now(UTC) + timedelta(seconds=1)) == 0


async def test_the_departed_scrub_walks_a_long_feed_in_batches(store: Store) -> None:
    await store.save_link(a_link(7))
    users = range(1, 2501)
    await store.apply_member_changes([a_join(7, user_id) for user_id in users])
    await store.apply_member_changes([a_leave(7, user_id) for user_id in users])

    assert await store.scrub_departed(datetime.now(UTC) + timedelta(seconds=1)) == len(users)

    left = [e for e in await store.list_events(limit=10_000) if e.type is EventType.MEMBER_JOINED]
    assert all(e.data.get("scrubbed") == "left" for e in left) and len(left) == len(users)


# As a database from before the step that names each event's user: its columns, indexes and mark gone.
_UNDO_STEP_10 = {
    "sqlite": [
        "DROP INDEX events_user",
        "DROP INDEX events_personal_guild",
        "DROP INDEX events_left",
        "ALTER TABLE events DROP COLUMN user_id",
        "ALTER TABLE events DROP COLUMN personal",
        "DROP TABLE feed_scrub",
        "DELETE FROM schema_version WHERE version = 10",
    ],
    "postgres": [
        "DROP INDEX events_left",
        "ALTER TABLE events DROP COLUMN user_id, DROP COLUMN personal",
        "DROP TABLE feed_scrub",
        "DELETE FROM schema_version WHERE version = 10",
    ],
}


async def _undo_step_10(database_url: str) -> None:
    if is_postgres_url(database_url):
        conn = await asyncpg.connect(database_url)
        try:
            for statement in _UNDO_STEP_10["postgres"]:
                await conn.execute(statement)
        finally:
            await conn.close()
        return
    with sqlite3.connect(sqlite_path(database_url)) as db:
        for statement in _UNDO_STEP_10["sqlite"]:
            db.execute(statement)
    db.close()


async def test_the_step_that_names_each_events_user_fills_it_in_for_the_feed_already_stored(
    database_url: str,
) -> None:
    async with open_store(database_url) as store:
        for guild_id in (7, 8):
            await store.save_link(a_link(guild_id, linked_by_id=USER))
            await store.apply_member_changes([a_join(guild_id, USER, nick="old nick")])
        await store.apply_member_changes([a_leave(7, USER)])
    await _undo_step_10(database_url)
    # Unlinked while the step was not there yet: the step scrubs what the unlink would have.
    if is_postgres_url(database_url):
        conn = await asyncpg.connect(database_url)
        await conn.execute("UPDATE links SET active = FALSE WHERE guild_id = 8")
        await conn.close()
    else:
        with sqlite3.connect(sqlite_path(database_url)) as db:
            db.execute("UPDATE links SET active = 0 WHERE guild_id = 8")
        db.close()

    async with open_store(database_url) as store:
        data = await store.export_user(USER, event_limit=100)
        assert [(e.type.value, e.guild_id) for e in data.events] == [
            ("guild.linked", 7),
            ("member.joined", 7),
            ("guild.linked", 8),
            ("member.joined", 8),
            ("member.left", 7),
        ]
        assert data.events[3].data == {"user_id": str(USER), "scrubbed": "unlinked"}
        assert await store.scrub_departed(datetime.now(UTC) + timedelta(seconds=1)) == 1
        erased = await store.erase_user(USER)
        assert erased.events_scrubbed == 2  # the two guild.linked; both joins were scrubbed already


async def test_an_export_lists_the_role_changes_asked_for_the_user(store: Store) -> None:
    await store.save_link(a_link(7))
    await store.apply_member_changes([a_join(7, USER)])
    change = await store.queue_role_change(RoleChangeRequest(7, USER, 555, RoleAction.ADD, "promoted"))
    assert change is not None

    data = await store.export_user(USER, event_limit=100)

    assert [(e.type.value, e.data.get("id")) for e in data.events] == [
        ("member.joined", None),
        ("role_change.queued", str(change.id)),
    ]
