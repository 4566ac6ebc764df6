"""The backend's API over real sockets: members read from the sandbox, kept in sync, served by page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import pytest
from jsonschema import Draft202012Validator

from lifecycle import Running
from sandbox import Sandbox, SandboxOptions
from tests.harness import Browser, browser, eventually, free_port, settings_for, started, world

OPENAPI = json.loads((Path(__file__).resolve().parents[2] / "web" / "openapi.json").read_text())
API_TOKEN = "test-api-token-" + "x" * 32
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


def check_against_openapi(path: str, method: str, status: int, body: Any) -> None:
    """Validate a real response body against web/openapi.json."""
    schema = OPENAPI["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    resolver_schema = {**schema, "components": OPENAPI["components"]}
    Draft202012Validator(resolver_schema, format_checker=jsonschema.FormatChecker()).validate(body)


async def api(b: Browser, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    headers = kwargs.pop("headers", AUTH)
    async with b.session.request(method, b.web_url + path, headers=headers, **kwargs) as response:
        return response.status, await response.json()


async def all_members(b: Browser, guild_id: int, limit: int = 1000) -> list[dict[str, Any]]:
    members: list[dict[str, Any]] = []
    after = None
    while True:
        query = f"?limit={limit}" + (f"&after={after}" if after else "")
        status, body = await api(b, "GET", f"/api/guilds/{guild_id}/members{query}")
        assert status == 200, body
        check_against_openapi("/api/guilds/{guild_id}/members", "get", 200, body)
        members += body["members"]
        after = body["next_after"]
        if after is None:
            return members


def expected_members(sandbox: Sandbox, guild_id: int) -> list[dict[str, Any]]:
    """What the API should say, derived from the sandbox's own member payloads."""
    return [
        {
            "id": m["user"]["id"],
            "username": m["user"]["username"],
            "global_name": m["user"].get("global_name"),
            "nick": m.get("nick"),
            "avatar": m["user"].get("avatar"),
            "bot": m["user"].get("bot", False),
            "roles": m["roles"],
            "joined_at": m["joined_at"],
        }
        for m in sandbox.members(guild_id)
    ]


async def test_a_10000_member_guild_pages_through_exactly_the_sandbox_members(
    make_sandbox, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=10_000))
    async with world(sandbox, tmp_path) as w:
        b = w.browser
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id, within=60)

        assert await all_members(b, guild.id) == expected_members(sandbox, guild.id)
        assert len(await all_members(b, guild.id, limit=999)) == len(sandbox.members(guild.id))

        status, body = await api(b, "GET", f"/api/guilds/{guild.id}")
        assert status == 200
        check_against_openapi("/api/guilds/{guild_id}", "get", 200, body)
        assert body["sync"]["state"] == "synced" and body["member_count"] == len(sandbox.members(guild.id))
        assert body["linked_by"]["id"] == str(sandbox.user_id) and body["active"] is True


async def test_member_add_update_remove_reach_the_api(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=300))
    async with world(sandbox, tmp_path) as w:
        b = w.browser
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id, within=20)
        existing = [m["user"]["id"] for m in sandbox.members(guild.id) if not m["user"].get("bot")]

        new_id = sandbox.add_member(guild.id, username="newcomer")
        # discord.py with its member cache off drops these for members it doesn't hold: we must not.
        sandbox.update_member(guild.id, int(existing[0]), nick="Renamed <i>nick</i>")
        sandbox.update_member(guild.id, int(existing[1]), roles=[guild.id])
        sandbox.update_member(guild.id, int(existing[2]), username="changed_username")
        sandbox.remove_member(guild.id, int(existing[3]))

        async def api_matches_sandbox() -> bool:
            return await all_members(b, guild.id) == expected_members(sandbox, guild.id)

        await eventually(api_matches_sandbox, within=3)
        by_id = {m["id"]: m for m in await all_members(b, guild.id)}
        assert by_id[str(new_id)]["username"] == "newcomer"
        assert by_id[existing[0]]["nick"] == "Renamed <i>nick</i>"
        assert by_id[existing[1]]["roles"] == [str(guild.id)]
        assert by_id[existing[2]]["username"] == "changed_username"
        assert existing[3] not in by_id


async def test_members_removed_while_down_are_gone_after_restart(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=200, member_list_cooldown=0.5))
    guild = sandbox.managed_guilds()[0]
    async with world(sandbox, tmp_path, cooldown=0.5) as w:
        await w.link_and_sync(guild.id, within=20)
    gone = [int(m["user"]["id"]) for m in sandbox.members(guild.id)[5:8]]
    for user_id in gone:
        sandbox.remove_member(guild.id, user_id)
    added = sandbox.add_member(guild.id, username="joined_while_down")

    # The same database, a new process.
    async with world(sandbox, tmp_path, cooldown=0.5) as w:
        running, b = w.running, w.browser

        async def reconciled() -> bool:
            ids = {m.user_id for m in await running.store.list_members(guild.id, limit=1000)}
            return added in ids and not ids & set(gone)

        await eventually(reconciled, within=20)
        assert await all_members(b, guild.id) == expected_members(sandbox, guild.id)


async def test_relinking_within_30_s_neither_hangs_nor_duplicates(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=2_500, member_list_cooldown=2.0))
    async with world(sandbox, tmp_path, cooldown=2.0) as w:
        running, b = w.running, w.browser
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id, within=20)
        first_sync = await running.store.get_sync_state(guild.id)
        assert first_sync is not None
        assert (await b.link_guild(guild.id))[0] == 200

        async def synced_again() -> bool:
            sync = await running.store.get_sync_state(guild.id)
            return sync is not None and sync.synced_at is not None and sync.synced_at > first_sync.synced_at  # type: ignore[operator]

        await eventually(synced_again, within=20)
        assert await running.store.count_members(guild.id) == len(sandbox.members(guild.id))
        assert await all_members(b, guild.id) == expected_members(sandbox, guild.id)
        rate_limited = [
            c for c in sandbox.gateway_commands if c.op == 8 and int(c.data["guild_id"]) == guild.id
        ]
        assert len(rate_limited) == 2


async def test_kicked_bot_leaves_the_link_inactive_and_no_members(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=100))
    async with world(sandbox, tmp_path) as w:
        running, b = w.running, w.browser
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id, within=20)
        sandbox.kick_bot(guild.id)

        async def inactive() -> bool:
            link = await running.store.get_link(guild.id)
            return link is not None and not link.active

        await eventually(inactive, within=5)
        assert await running.store.count_members(guild.id) == 0
        status, body = await api(b, "GET", f"/api/guilds/{guild.id}")
        assert status == 200 and body["active"] is False and body["member_count"] == 0


async def test_an_outage_keeps_the_members(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=100))
    async with world(sandbox, tmp_path) as w:
        running = w.running
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id, within=20)
        sandbox.set_guild_unavailable(guild.id, True)
        await eventually(lambda: _unavailable(running, guild.id), within=5)
        link = await running.store.get_link(guild.id)
        assert link is not None and link.active
        assert await running.store.count_members(guild.id) == len(sandbox.members(guild.id))


async def _unavailable(running: Running, guild_id: int) -> bool:
    guild = running.bot.get_guild(guild_id)
    return guild is not None and guild.unavailable


async def test_unlink_makes_the_bot_leave(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=50))
    async with world(sandbox, tmp_path) as w:
        running, b = w.running, w.browser
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id, within=20)
        status, body = await api(b, "DELETE", f"/api/guilds/{guild.id}")
        assert status == 200 and body["active"] is False
        check_against_openapi("/api/guilds/{guild_id}", "delete", 200, body)
        assert guild.id not in sandbox.bot_guild_ids()
        assert await running.store.count_members(guild.id) == 0


async def test_one_time_link_carries_the_backend_ref(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=20))
    async with world(sandbox, tmp_path) as w:
        running, b = w.running, w.browser
        guild = sandbox.managed_guilds()[0]
        status, body = await api(b, "POST", "/api/links", json={"ref": "customer-77"})
        assert status == 201
        check_against_openapi("/api/links", "post", 201, body)
        path = body["url"].removeprefix(running.settings.public_base_url)
        consent = await b.start_link(path)
        assert (await b.callback(sandbox.authorize(consent, guild.id)))[0] == 200
        async with b.session.get(running.web_url + path, allow_redirects=False) as reused:
            assert reused.status == 400
        status, body = await api(b, "GET", "/api/guilds?ref=customer-77")
        check_against_openapi("/api/guilds", "get", 200, body)
        assert [g["id"] for g in body["guilds"]] == [str(guild.id)]
        assert body["guilds"][0]["ref"] == "customer-77"
        assert (await api(b, "GET", "/api/guilds?ref=someone-else"))[1] == {"guilds": []}


@pytest.mark.parametrize(
    ("headers", "query"),
    [
        ({}, ""),
        ({"Authorization": "Bearer wrong-token"}, ""),
        ({}, f"?access_token={API_TOKEN}&token={API_TOKEN}"),
        ({"Authorization": f"Basic {API_TOKEN}"}, ""),
    ],
    ids=["no-token", "wrong-token", "token-in-query", "wrong-scheme"],
)
async def test_api_refuses_without_the_bearer_token(
    make_sandbox, tmp_path: Path, headers: dict[str, str], query: str
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    settings = settings_for(sandbox, tmp_path, port=free_port())
    async with started(settings, ready=False) as running, aiohttp.ClientSession() as session:
        response = await session.get(f"{running.web_url}/api/guilds{query}", headers=headers)
        assert response.status == 401
        assert (await response.json())["error"] == "unauthorized"


async def test_bad_parameters_are_named(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    settings = settings_for(sandbox, tmp_path, port=free_port())
    async with started(settings, ready=False) as running, browser(sandbox, running) as b:
        for path, parameter in [
            ("/api/guilds/1/members?limit=0", "limit"),
            ("/api/guilds/1/members?limit=1001", "limit"),
            ("/api/guilds/1/members?after=abc", "after"),
            ("/api/guilds/notanid", "guild_id"),
        ]:
            status, body = await api(b, "GET", path)
            assert (status, body["parameter"]) == (400, parameter), path
        status, body = await api(b, "POST", "/api/links", data="not json")
        assert status == 400 and body["parameter"] == "body"
        status, body = await api(b, "POST", "/api/links", json={"ref": ""})
        assert status == 400 and body["parameter"] == "ref"
        status, body = await api(b, "GET", "/api/guilds/123")
        assert status == 404


async def test_api_without_a_token_configured_says_how_to_enable_it(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    settings = settings_for(sandbox, tmp_path, port=free_port(), env={"API_TOKEN": ""})
    async with started(settings, ready=False) as running, browser(sandbox, running) as b:
        status, body = await api(b, "GET", "/api/guilds")
        assert status == 503 and "API_TOKEN" in body["message"]
