"""Searching a guild's members by name, on SQLite and on PostgreSQL: literal text, any name, paged by user id."""

from __future__ import annotations

from datetime import UTC, datetime

from store import Member, Store
from tests.store.records import a_link, a_member


async def _guild_with(store: Store, *members: Member, guild_id: int = 1) -> None:
    await store.save_link(a_link(guild_id))
    await store.upsert_members(guild_id, members, datetime.now(UTC))


async def _found(
    store: Store, text: str, *, guild_id: int = 1, after: int = 0, limit: int = 100
) -> list[int]:
    return [m.user_id for m in await store.search_members(guild_id, text, after=after, limit=limit)]


async def test_search_matches_username_global_name_or_nick_ignoring_case(store: Store) -> None:
    await _guild_with(
        store,
        a_member(10, username="amelia_1"),
        a_member(20, username="bjorn", global_name="The AMELIA fan"),
        a_member(30, username="chloe", nick="Amelia's alt"),
        a_member(40, username="dmitri", global_name="Dmitri", nick="dm"),
    )
    assert await _found(store, "amelia") == [10, 20, 30]
    assert await _found(store, "AMEL") == [10, 20, 30]
    assert await _found(store, "mit") == [40]
    assert await _found(store, "nobody") == []


async def test_search_returns_whole_members(store: Store) -> None:
    member = a_member(
        7, username="zoe", global_name="Zoë 🌸", nick="the <i>boss</i>", avatar="abc", bot=True, roles=(3, 9)
    )
    await _guild_with(store, member)
    assert list(await store.search_members(1, "🌸")) == [member]


async def test_search_takes_percent_underscore_and_backslash_literally(store: Store) -> None:
    await _guild_with(
        store,
        a_member(1, username="100%real"),
        a_member(2, username="100 real"),
        a_member(3, username="a_b"),
        a_member(4, username="axb"),
        a_member(5, username="back\\slash"),
        a_member(6, username="backslash"),
    )
    assert await _found(store, "%") == [1]
    assert await _found(store, "0%r") == [1]
    assert await _found(store, "_") == [3]
    assert await _found(store, "a_b") == [3]
    assert await _found(store, "\\") == [5]
    assert await _found(store, "k\\s") == [5]
    # SQL in the text is just text.
    assert await _found(store, "' OR 1=1 --") == []


async def test_search_pages_by_user_id_after_the_last_one_seen(store: Store) -> None:
    await _guild_with(
        store, *(a_member(i, username=f"{'match' if i % 2 else 'other'}{i}") for i in range(1, 21))
    )
    first = await _found(store, "MATCH", limit=4)
    assert first == [1, 3, 5, 7]
    assert await _found(store, "match", after=first[-1], limit=4) == [9, 11, 13, 15]
    assert await _found(store, "match", after=15, limit=4) == [17, 19]
    assert await _found(store, "match", after=19, limit=4) == []


async def test_search_stays_inside_one_guild(store: Store) -> None:
    await _guild_with(store, a_member(1, username="shared"))
    await _guild_with(store, a_member(2, username="shared"), guild_id=2)
    assert await _found(store, "shared", guild_id=1) == [1]
    assert await _found(store, "shared", guild_id=2) == [2]
    await store.deactivate_link(2)
    assert await _found(store, "shared", guild_id=2) == []
