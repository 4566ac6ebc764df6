"""A held resync through the API, on each engine: shown in the guild's sync, confirmed by POST, refused twice."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from sandbox import Sandbox, SandboxOptions
from store import HoldRule, Store, SyncPhase, SyncState
from tests.harness import eventually, world
from tests.store.records import a_link, a_member
from tests.web.serving import AUTH, Served, app_settings, serving
from tests.web.test_admin_console import csrf_of, get, post, sign_in
from tests.web.test_api import check_against_openapi

GUILD = 7
CONFIRM = "/api/guilds/{guild_id}/sync/confirm"


@pytest.fixture
async def served(database_url: str, store: Store) -> AsyncIterator[Served]:
    async with serving(app_settings(database_url), store) as running:
        yield running


async def call(served: Served, method: str, path: str, headers: dict[str, str] = AUTH) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(headers=headers) as http,
        http.request(method, served.url + path) as response,
    ):
        return response.status, await response.json()


async def held_guild(store: Store) -> None:
    """A guild synced with 100 members whose resync saw only 70 of them."""
    await store.save_link(a_link(GUILD))
    first = datetime.now(UTC)
    await store.upsert_members(GUILD, [a_member(i) for i in range(1, 101)], datetime.now(UTC))
    await store.finish_sync(GUILD, first, HoldRule())
    started = datetime.now(UTC)
    await store.save_sync_state(SyncState(GUILD, SyncPhase.SYNCING))
    await store.upsert_members(
        GUILD, [a_member(i) for i in range(1, 71)], datetime.now(UTC), snapshot_at=started
    )
    await store.finish_sync(GUILD, started, HoldRule(share=0.1, minimum=10))


async def test_a_held_guild_shows_its_removals_and_a_confirmation_applies_them(
    store: Store, served: Served
) -> None:
    await held_guild(store)
    status, guild = await call(served, "GET", f"/api/guilds/{GUILD}")
    assert status == 200
    check_against_openapi("/api/guilds/{guild_id}", "get", 200, guild)
    assert guild["sync"]["state"] == "held" and guild["sync"]["held_removals"] == 30
    assert guild["member_count"] == 100
    [event] = [e for e in (await store.list_events(limit=100)) if e.type.value == "sync.held"]
    assert event.data == {"would_remove": 30, "members": 100}

    status, body = await call(served, "POST", CONFIRM.format(guild_id=GUILD))
    assert status == 200, body
    check_against_openapi(CONFIRM, "post", 200, body)
    assert body["removed"] == 30 and body["guild"]["sync"]["state"] == "synced"
    assert body["guild"]["sync"]["held_removals"] is None and body["guild"]["member_count"] == 70
    left = [e for e in await store.list_events(after=event.id, limit=100) if e.type.value == "member.left"]
    assert sorted(int(e.data["user_id"]) for e in left) == list(range(71, 101))

    status, body = await call(served, "POST", CONFIRM.format(guild_id=GUILD))
    assert status == 409 and body["error"] == "not_held"
    check_against_openapi(CONFIRM, "post", 409, body)


async def test_confirming_names_what_is_wrong(store: Store, served: Served) -> None:
    status, body = await call(served, "POST", CONFIRM.format(guild_id=GUILD))
    assert status == 404
    check_against_openapi(CONFIRM, "post", 404, body)
    status, body = await call(served, "POST", CONFIRM.format(guild_id="12ab"))
    assert status == 400 and body["parameter"] == "guild_id"
    check_against_openapi(CONFIRM, "post", 400, body)
    status, body = await call(served, "POST", CONFIRM.format(guild_id=GUILD), headers={})
    assert status == 401
    check_against_openapi(CONFIRM, "post", 401, body)


async def test_a_short_list_after_a_restart_is_held_until_the_console_confirms_it(
    make_sandbox, tmp_path: Path, database_url: str
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=200, member_list_cooldown=0.5))
    guild = sandbox.managed_guilds()[0]
    env = {"DATABASE_URL": database_url, "RECONCILE_HOLD_MIN": "10"}
    async with world(sandbox, tmp_path, cooldown=0.5, env=env) as w:
        await w.link_and_sync(guild.id, within=20)
        cursor = (await w.running.store.list_events(limit=1000))[-1].id
    # While guildlink is stopped, half the members go (as a short answer from Discord would look).
    everyone = len(sandbox.members(guild.id))
    gone = sorted(int(m["user"]["id"]) for m in sandbox.members(guild.id) if not m["user"].get("bot"))[-100:]
    for user_id in gone:
        sandbox.remove_member(guild.id, user_id)

    async with world(sandbox, tmp_path, cooldown=0.5, env=env) as w:
        store, b = w.running.store, w.browser

        async def held() -> bool:
            sync = await store.get_sync_state(guild.id)
            return sync is not None and sync.phase is SyncPhase.HELD

        await eventually(held, within=20)
        assert await store.count_members(guild.id) == everyone
        await sign_in(b)
        status, page, _ = await get(b, f"/admin/guilds/{guild.id}")
        assert status == 200 and 'id="confirm-removals"' in page and "<strong>100</strong>" in page
        status, listing, _ = await get(b, "/admin/sync.json")
        [view] = json.loads(listing)["guilds"]
        assert (view["state"], view["held_removals"]) == ("held", 100)

        # Without the form's CSRF token nothing is removed.
        status, _, _ = await post(b, f"/admin/guilds/{guild.id}/sync/confirm", {"csrf": "forged"})
        assert status == 403 and await store.count_members(guild.id) == everyone
        status, _, response = await post(b, f"/admin/guilds/{guild.id}/sync/confirm", {"csrf": csrf_of(page)})
        assert (status, response.headers["Location"]) == (303, f"/admin/guilds/{guild.id}")

        stored = {m.user_id for m in await store.list_members(guild.id, limit=1000)}
        assert stored == {int(m["user"]["id"]) for m in sandbox.members(guild.id)}
        events = await store.list_events(after=cursor, limit=1000)
        left = sorted(int(e.data["user_id"]) for e in events if e.type.value == "member.left")
        assert left == gone
        assert [e.type.value for e in events if e.type.value.startswith(("sync.", "guild."))] == [
            "sync.started",
            "sync.held",
            "guild.synced",
        ]
