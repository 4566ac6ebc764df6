"""GET /api/events over a real socket, on each engine: the feed paged without gaps or repeats, as documented."""

from __future__ import annotations

import asyncio
import random
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from store import MemberChange, MemberChangeKind, Store, SyncPhase, SyncState, open_store
from tests.harness import eventually
from tests.store.records import a_link, a_member
from tests.web.serving import AUTH, Served, app_settings, serving
from tests.web.test_api import check_against_openapi


@pytest.fixture
async def served(database_url: str, store: Store) -> AsyncIterator[Served]:
    async with serving(app_settings(database_url), store) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


async def get_events(http: aiohttp.ClientSession, served: Served, query: str = "") -> tuple[int, Any]:
    async with http.get(f"{served.url}/api/events{query}") as response:
        return response.status, await response.json()


def joined(guild_id: int, user_id: int) -> MemberChange:
    return MemberChange(guild_id, user_id, MemberChangeKind.JOINED, a_member(user_id), datetime.now(UTC))


async def test_the_feed_pages_through_10000_events_without_gaps_or_repeats_while_events_keep_arriving(
    store: Store, served: Served, http: aiohttp.ClientSession
) -> None:
    await store.save_link(a_link(7))
    await store.apply_member_changes([joined(7, user_id) for user_id in range(5_000)])

    async def keep_writing() -> None:
        # Batches of every size, as the gateway's member events arrive, interleaved with the reader's pages.
        chances = random.Random(10)
        user_id = 5_000
        while user_id < 10_000:
            size = min(chances.randint(1, 60), 10_000 - user_id)
            await store.apply_member_changes([joined(7, u) for u in range(user_id, user_id + size)])
            user_id += size
            await asyncio.sleep(0)

    writing = asyncio.create_task(keep_writing())
    seen: list[dict[str, Any]] = []
    after = "0"
    pages = pages_while_writing = 0
    while True:
        # Read before the page is asked for: a batch committed during the request must still be paged.
        written_all = writing.done()
        status, body = await get_events(http, served, f"?after={after}&limit=97")
        assert status == 200, body
        if pages % 10 == 0:
            check_against_openapi("/api/events", "get", 200, body)
        pages += 1
        pages_while_writing += not written_all
        seen += body["events"]
        after = body["next_after"]
        assert after == (body["events"][-1]["id"] if body["events"] else after)
        if written_all and not body["has_more"]:
            break
    await writing
    assert pages_while_writing >= 10

    ids = [int(event["id"]) for event in seen]
    assert len(ids) == len(set(ids)) == 10_001  # guild.linked, then 10,000 members joining
    assert ids == sorted(ids)
    assert [event["data"]["member"]["id"] for event in seen[1:]] == [str(u) for u in range(10_000)]
    assert {event["guild_id"] for event in seen} == {"7"}
    # Caught up: the same cursor answers an empty last page, and keeps its place.
    assert await get_events(http, served, f"?after={after}") == (
        200,
        {"events": [], "next_after": after, "has_more": False},
    )


async def test_every_event_type_is_served_as_openapi_describes_it(
    store: Store, served: Served, http: aiohttp.ClientSession
) -> None:
    await store.save_link(a_link(7, ref="customer-7"))
    await store.save_sync_state(SyncState(7, SyncPhase.SYNCING, member_count=3))
    await store.save_sync_state(SyncState(7, SyncPhase.FAILED, error="Discord did not answer"))
    await store.save_sync_state(SyncState(7, SyncPhase.SYNCING, member_count=None))
    await store.save_sync_state(SyncState(7, SyncPhase.SYNCED, members_stored=1))
    changed_at = datetime.now(UTC)
    await store.apply_member_changes(
        [
            joined(7, 1),
            MemberChange(7, 1, MemberChangeKind.UPDATED, a_member(1, nick="new"), changed_at),
            MemberChange(7, 1, MemberChangeKind.LEFT, None, changed_at),
        ]
    )
    await store.deactivate_link(7)
    await store.save_link(a_link(8))
    await store.deactivate_link(8, bot_removed=True)

    status, body = await get_events(http, served)
    assert status == 200
    check_against_openapi("/api/events", "get", 200, body)
    assert [event["type"] for event in body["events"]] == [
        "guild.linked",
        "sync.started",
        "sync.failed",
        "sync.started",
        "guild.synced",
        "member.joined",
        "member.updated",
        "member.left",
        "guild.unlinked",
        "guild.linked",
        "guild.removed",
    ]
    first, left = body["events"][0], body["events"][7]
    assert first["guild_id"] == "7" and first["data"]["ref"] == "customer-7"
    assert left["data"] == {"user_id": "1"}
    assert datetime.fromisoformat(first["created_at"]) <= datetime.now(UTC)
    assert body["has_more"] is False and body["next_after"] == body["events"][-1]["id"]


async def test_a_type_filter_pages_through_its_own_events_only(
    store: Store, served: Served, http: aiohttp.ClientSession
) -> None:
    for guild_id in range(1, 6):
        await store.save_link(a_link(guild_id))
        await store.apply_member_changes([joined(guild_id, u) for u in range(700)])
    await store.apply_member_changes([MemberChange(3, 5, MemberChangeKind.LEFT, None, datetime.now(UTC))])

    pages: list[dict[str, Any]] = []
    after = "0"
    while True:
        status, body = await get_events(http, served, f"?after={after}&limit=2&types=guild.*,member.left")
        assert status == 200, body
        check_against_openapi("/api/events", "get", 200, body)
        pages.append(body)
        after = body["next_after"]
        if not body["has_more"]:
            break
    events = [event for page in pages for event in page["events"]]
    assert [(e["type"], e["guild_id"]) for e in events] == [
        *(("guild.linked", str(g)) for g in range(1, 6)),
        ("member.left", "3"),
    ]
    # The third page read on to the end of the feed: it says so rather than leave an empty page to ask for.
    assert [len(page["events"]) for page in pages] == [2, 2, 2]
    # The last page's cursor is past everything read, matched or not: the next poll starts at the end.
    assert int(after) == (await store.list_events(after=0, limit=5000))[-1].id


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("?after=abc", "after"),
        ("?after=-1", "after"),
        ("?after=99999999999999999999999", "after"),
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?types=", "types"),
        ("?types=gild.*", "types"),
        ("?types=guild.linked,Member Left", "types"),
    ],
)
async def test_bad_feed_parameters_are_named(
    served: Served, http: aiohttp.ClientSession, query: str, parameter: str
) -> None:
    status, body = await get_events(http, served, query)
    assert (status, body["parameter"]) == (400, parameter)
    check_against_openapi("/api/events", "get", 400, body)


async def test_the_feed_wants_the_bearer_token(served: Served) -> None:
    async with aiohttp.ClientSession() as anonymous, anonymous.get(f"{served.url}/api/events") as response:
        assert response.status == 401
        check_against_openapi("/api/events", "get", 401, await response.json())


async def test_events_older_than_the_retention_are_pruned_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "guildlink.db"
    database_url = f"sqlite:///{path}"
    async with open_store(database_url) as store:
        await store.save_link(a_link(7))
        await store.apply_member_changes([joined(7, u) for u in range(4)])
    # The link and the first member's event, as if written 8 days ago.
    old = (datetime.now(UTC) - timedelta(days=8)).isoformat()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE events SET created_at = ? WHERE id <= 2", (old,))
    db.close()

    async with open_store(database_url) as store:
        settings = app_settings(database_url, {"EVENT_RETENTION_DAYS": "7"})
        async with serving(settings, store):

            async def pruned() -> bool:
                return [event.id for event in await store.list_events()] == [3, 4, 5]

            await eventually(pruned, within=5)


async def test_a_cursor_below_pruned_events_is_answered_410_with_the_cursor_to_read_on_from(
    store: Store, served: Served, http: aiohttp.ClientSession
) -> None:
    await store.save_link(a_link(7))
    await store.apply_member_changes([joined(7, user_id) for user_id in range(30)])
    status, body = await get_events(http, served, "?limit=5")
    reader = body["next_after"]  # a reader that read five events, then went away for a while
    boundary = datetime.now(UTC)
    await asyncio.sleep(0.01)
    await store.apply_member_changes([joined(7, user_id) for user_id in range(30, 35)])
    pruned = await store.prune_events(boundary)
    assert pruned.count == 31

    for query in (f"?after={reader}", f"?after={reader}&types=member.*", f"?after={pruned.up_to - 1}"):
        status, body = await get_events(http, served, query)
        assert status == 410, (query, body)
        check_against_openapi("/api/events", "get", 410, body)
        assert body["error"] == "events_pruned"
        assert body["pruned_up_to"] == body["next_after"] == str(pruned.up_to)
        assert body["retention_days"] == 7
    # Reading on from where the 410 says: the events kept, and no gap left to hide.
    status, body = await get_events(http, served, f"?after={pruned.up_to}")
    assert status == 200
    assert [event["data"]["member"]["id"] for event in body["events"]] == [str(u) for u in range(30, 35)]
    # A reader with no cursor yet (absent or 0) reads from the oldest event kept.
    assert (await get_events(http, served))[1]["events"] == body["events"]
    assert (await get_events(http, served, "?after=0"))[1]["events"] == body["events"]
