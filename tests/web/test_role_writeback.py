"""Role write-back end to end: the API queues, the bot writes to the sandbox's Discord and reads the member back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bot.role_errors import NOT_TAKEN
from sandbox import Sandbox, SandboxOptions
from store import RoleChangeStatus, open_store
from tests.harness import Browser, World, eventually, world
from tests.web.test_api import AUTH, api, check_against_openapi

CHANGE_PATH = "/api/role-changes/{change_id}"


async def linked(w: World) -> tuple[int, int]:
    """Link and sync a guild whose bot has Manage Roles, its role on top; a member (not the admin, not a bot)
    without the role Members."""
    sandbox = w.sandbox
    guild_id = sandbox.managed_guilds()[0].id
    await w.link_and_sync(guild_id)
    sandbox.set_bot_permissions(guild_id, manage_roles=True)
    members = str(role_id(sandbox, guild_id, "Members"))
    member = next(
        m
        for m in sandbox.members(guild_id)
        if not m["user"].get("bot") and m["user"]["id"] != str(sandbox.user_id) and members not in m["roles"]
    )
    return guild_id, int(member["user"]["id"])


def role_id(sandbox: Sandbox, guild_id: int, name: str) -> int:
    return next(role.id for role in sandbox.world.guilds[guild_id].roles if role.name == name)


def roles_of(sandbox: Sandbox, guild_id: int, user_id: int) -> list[int]:
    member = next(m for m in sandbox.members(guild_id) if m["user"]["id"] == str(user_id))
    return [int(role) for role in member["roles"]]


async def queued(b: Browser, method: str, guild_id: int, user_id: int, role: int, **kwargs: Any) -> str:
    status, body = await api(b, method, f"/api/guilds/{guild_id}/members/{user_id}/roles/{role}", **kwargs)
    assert status == 202, body
    return str(body["id"])


async def settled(b: Browser, change_id: str, within: float = 10) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        status, body = await api(b, "GET", f"/api/role-changes/{change_id}")
        assert status == 200, body
        return body if body["status"] != "pending" else None

    body = await eventually(check, within=within)
    assert body is not None
    check_against_openapi(CHANGE_PATH, "get", 200, body)
    return body


async def test_a_role_given_and_taken_through_the_api_reaches_discord_the_store_and_the_feed(
    make_sandbox: Any, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=50))
    async with world(sandbox, tmp_path) as w:
        guild_id, user_id = await linked(w)
        members = role_id(sandbox, guild_id, "Members")
        given = await queued(
            w.browser,
            "PUT",
            guild_id,
            user_id,
            members,
            headers={**AUTH, "X-Audit-Log-Reason": "Zo%C3%AB%20paid"},
        )
        body = await settled(w.browser, given)
        assert (body["status"], body["error"], body["attempts"]) == ("applied", None, 1)
        assert members in roles_of(sandbox, guild_id, user_id)
        assert sandbox.recent_role_writes(guild_id)[-1].reason == "Zoë paid"

        # GUILD_MEMBER_UPDATE, sent by Discord after the change, reaches the stored member.
        async def stored_roles() -> bool:
            stored = {m.user_id: m for m in await w.running.store.list_members(guild_id, limit=1000)}
            return members in stored[user_id].roles

        await eventually(stored_roles)
        taken = await settled(w.browser, await queued(w.browser, "DELETE", guild_id, user_id, members))
        assert taken["status"] == "applied" and members not in roles_of(sandbox, guild_id, user_id)
        status, page = await api(w.browser, "GET", "/api/events?types=role_change.*")
        assert status == 200
        assert [(e["type"], e["data"]["id"]) for e in page["events"]] == [
            ("role_change.queued", given),
            ("role_change.applied", given),
            ("role_change.queued", taken["id"]),
            ("role_change.applied", taken["id"]),
        ]


async def test_a_role_above_the_bots_highest_fails_with_50013_and_a_plain_reason(
    make_sandbox: Any, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=50))
    async with world(sandbox, tmp_path) as w:
        guild_id, user_id = await linked(w)
        artists = role_id(sandbox, guild_id, "🎨 Artists")
        sandbox.move_bot_role(guild_id, below=artists)
        before = roles_of(sandbox, guild_id, user_id)
        body = await settled(w.browser, await queued(w.browser, "PUT", guild_id, user_id, artists))
        assert body["status"] == "failed" and body["error"]["code"] == 50013
        assert body["error"]["reason"].startswith(f"the bot's highest role must be above role {artists}")
        assert roles_of(sandbox, guild_id, user_id) == before
        # Unknown role: 10011, said plainly.
        unknown = artists + 999
        body = await settled(w.browser, await queued(w.browser, "PUT", guild_id, user_id, unknown))
        assert body["error"] == {"code": 10011, "reason": f"Discord knows no role {unknown} in this guild"}


async def test_a_success_that_did_nothing_is_caught_by_reading_the_member_back(
    make_sandbox: Any, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=50))
    async with world(sandbox, tmp_path) as w:
        guild_id, user_id = await linked(w)
        members = role_id(sandbox, guild_id, "Members")
        sandbox.silence_role_writes(guild_id)
        body = await settled(w.browser, await queued(w.browser, "PUT", guild_id, user_id, members))
        assert body["status"] == "failed" and body["error"] == {"code": None, "reason": NOT_TAKEN}
        assert [(w.status, w.silent) for w in sandbox.recent_role_writes(guild_id)] == [(204, True)]


async def test_a_429_then_a_503_are_retried_and_the_change_applied(make_sandbox: Any, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=50))
    async with world(sandbox, tmp_path) as w:
        guild_id, user_id = await linked(w)
        members = role_id(sandbox, guild_id, "Members")
        path = f"/api/v10/guilds/{guild_id}/members/{user_id}/roles/{members}"
        sandbox.fail_next("PUT", path, status=429, retry_after=0.1)
        sandbox.fail_next("PUT", path, status=503)
        body = await settled(w.browser, await queued(w.browser, "PUT", guild_id, user_id, members), within=20)
        assert body["status"] == "applied" and body["attempts"] >= 2
        assert members in roles_of(sandbox, guild_id, user_id) and not sandbox.pending_faults()


async def test_a_change_pending_when_the_process_stops_is_applied_after_the_restart(
    make_sandbox: Any, tmp_path: Path, database_url: str
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=50))
    env = {"DATABASE_URL": database_url}
    async with world(sandbox, tmp_path, env=env) as w:
        guild_id, user_id = await linked(w)
        members = role_id(sandbox, guild_id, "Members")
        # Discord fails the first tries: the change is still pending when the process stops.
        path = f"/api/v10/guilds/{guild_id}/members/{user_id}/roles/{members}"
        sandbox.fail_next("PUT", path, status=503, times=2)
        change_id = await queued(w.browser, "PUT", guild_id, user_id, members)

        async def tried_once() -> bool:
            change = await w.running.store.get_role_change(int(change_id))
            return change is not None and change.attempts >= 1

        await eventually(tried_once)
        database_url = w.running.settings.database_url
    # Stopped: the change waits in the database, pending.
    async with open_store(database_url) as store:
        change = await store.get_role_change(int(change_id))
        assert change is not None and change.status is RoleChangeStatus.PENDING
    async with world(sandbox, tmp_path, env=env) as w:
        body = await settled(w.browser, change_id, within=20)
        assert body["status"] == "applied" and members in roles_of(sandbox, guild_id, user_id)


async def test_a_burst_past_the_role_bucket_is_applied_at_its_pace_without_invalid_requests(
    make_sandbox: Any, tmp_path: Path
) -> None:
    # Discord's bucket of 10 per 10 s, here 4 per second: 20 changes need 5 windows.
    sandbox: Sandbox = await make_sandbox(
        SandboxOptions(guilds=1, members=100, role_write_limit=4, role_write_window=1.0)
    )
    async with world(sandbox, tmp_path) as w:
        guild_id, _ = await linked(w)
        members = role_id(sandbox, guild_id, "Members")
        users = [
            int(m["user"]["id"])
            for m in sandbox.members(guild_id)
            if not m["user"].get("bot") and str(members) not in m["roles"]
        ][:20]
        assert len(users) == 20
        ids = [await queued(w.browser, "PUT", guild_id, user_id, members) for user_id in users]
        for change_id in ids:
            assert (await settled(w.browser, change_id, within=30))["status"] == "applied"
        assert all(members in roles_of(sandbox, guild_id, user_id) for user_id in users)
        # discord.py paced itself by the bucket's headers: Discord never had to say no.
        counters = sandbox.rate_limits.counters()
        assert counters["invalid_requests"] == 0 and counters["route_limited"] == 0
