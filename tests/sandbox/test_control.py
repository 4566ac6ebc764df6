"""The `/_sandbox/...` HTTP controls mirror the Python ones."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from itertools import islice

import aiohttp
import pytest

from sandbox import Sandbox, SandboxOptions


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_state_and_settings(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    async with http.get(f"{sandbox.base_url}/_sandbox/state") as resp:
        state = await resp.json()
    assert state["client_id"] == str(sandbox.client_id)
    assert [g["id"] for g in state["guilds"]] == [str(g.id) for g in sandbox.managed_guilds()]
    assert state["settings"]["requires_code_grant"] is True
    body = {"requires_code_grant": False, "members_intent_enabled": False, "member_list_cooldown": 1.5}
    async with http.patch(f"{sandbox.base_url}/_sandbox/settings", json=body) as resp:
        settings = (await resp.json())["settings"]
        assert {key: settings[key] for key in body} == body
    assert sandbox.options.requires_code_grant is False
    assert sandbox.options.members_intent_enabled is False
    assert sandbox.options.member_list_cooldown == 1.5


async def test_member_and_bot_controls(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    gid = sandbox.managed_guilds()[0].id
    base = f"{sandbox.base_url}/_sandbox/guilds/{gid}"
    async with http.put(f"{base}/bot") as resp:
        assert resp.status == 200
    assert sandbox.bot_guild_ids() == {gid}
    async with http.post(f"{base}/members", json={"username": "ctl", "bot": True}) as resp:
        uid = int((await resp.json())["user_id"])
    member = next(m for m in sandbox.members(gid) if m["user"]["id"] == str(uid))
    assert (member["user"]["username"], member["user"]["bot"]) == ("ctl", True)
    async with http.patch(f"{base}/members/{uid}", json={"nick": "Ctl ✨", "roles": []}) as resp:
        assert resp.status == 200
    member = next(m for m in sandbox.members(gid) if m["user"]["id"] == str(uid))
    assert member["nick"] == "Ctl ✨"
    async with http.patch(f"{base}/members/{uid}", json={"nick": None}) as resp:
        assert resp.status == 200
    member = next(m for m in sandbox.members(gid) if m["user"]["id"] == str(uid))
    assert member["nick"] is None
    async with http.get(f"{base}/members") as resp:
        assert await resp.json() == sandbox.members(gid)
    async with http.delete(f"{base}/members/{uid}") as resp:
        assert resp.status == 200
    assert str(uid) not in {m["user"]["id"] for m in sandbox.members(gid)}
    async with http.delete(f"{base}/members/{uid}") as resp:
        assert resp.status == 404
    async with http.delete(f"{base}/bot") as resp:
        assert resp.status == 200
    assert sandbox.bot_guild_ids() == set()


async def test_fault_injection_control(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    fault = {
        "method": "POST",
        "path": "/api/v10/oauth2/token",
        "status": 500,
        "body": {"error": "server_error"},
    }
    async with http.post(f"{sandbox.base_url}/_sandbox/fail", json=fault) as resp:
        assert resp.status == 200
    async with http.post(f"{sandbox.base_url}/api/v10/oauth2/token", data={"grant_type": "x"}) as resp:
        assert resp.status == 500
        assert await resp.json() == {"error": "server_error"}
    async with http.post(f"{sandbox.base_url}/api/v10/oauth2/token", data={"grant_type": "x"}) as resp:
        assert resp.status == 400  # used up: the real endpoint answers again


async def test_world_is_deterministic_per_seed() -> None:
    a, b = Sandbox(), Sandbox()
    assert a.client_id == b.client_id
    assert a.bot_token == b.bot_token
    assert [g.id for g in a.managed_guilds()] == [g.id for g in b.managed_guilds()]
    assert a.members(a.managed_guilds()[0].id) == b.members(b.managed_guilds()[0].id)
    token_id, timestamp, mac = a.bot_token.split(".")
    assert base64.urlsafe_b64decode(token_id + "=" * (-len(token_id) % 4)).decode() == str(a.client_id)
    assert timestamp and mac


async def test_huge_guild_is_cheap_to_create() -> None:
    started = time.perf_counter()
    sandbox = Sandbox(SandboxOptions(members=1_000_000, guilds=500))
    assert time.perf_counter() - started < 2.0
    guild = sandbox.managed_guilds()[0]
    assert guild.member_count == 1_000_000
    second = sandbox.world.guild(sandbox.managed_guilds()[1].id)
    last = list(islice(second.iter_members(after=second._generated_id(999_990)), 100))
    # 999,999 generated members (the signed-in user is the millionth): indices 999,991 to 999,998 follow.
    assert len(last) == 8
    names = {m.user.username for m in islice(second.iter_members(), 2000)}
    assert len(names) == 2000


async def test_a_storm_changes_the_members_it_names_and_refuses_bad_numbers(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    gid = sandbox.managed_guilds()[0].id
    url = f"{sandbox.base_url}/_sandbox/guilds/{gid}/storm"
    bad = ({"updates": "many"}, {"removals": [1]}, ["updates"], {"updates": 10**9}, {"updates": -1})
    for body in (*bad, {"updates": 1, "paced": "no"}):
        async with http.post(url, json=body) as resp:
            assert resp.status == 400, body
            assert "error" in await resp.json()
    ids = [m["user"]["id"] for m in sandbox.members(gid)]
    updates = min(250, len(ids))
    async with http.post(url, json={"updates": updates, "removals": 3}) as resp:
        assert resp.status == 200 and (await resp.json())["events"] == updates + 3
    stormed = {m["user"]["id"] for m in sandbox.members(gid) if (m["nick"] or "").startswith("storm ")}
    assert len(sandbox.members(gid)) == len(ids) - 3
    assert stormed == set(ids[:updates]) - set(ids[-3:])


async def test_role_write_and_rate_limit_controls(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    gid = sandbox.managed_guilds()[0].id
    base = f"{sandbox.base_url}/_sandbox/guilds/{gid}"
    async with http.patch(f"{base}/bot-role", json={"manage_roles": True}) as resp:
        assert resp.status == 404  # the bot is not in the guild yet
    sandbox.add_bot(gid)
    roles = {r.name: r for r in sandbox.world.guild(gid).roles}
    members = roles["Members"]
    async with http.patch(f"{base}/bot-role", json={"below": str(members.id), "manage_roles": True}) as resp:
        role = (await resp.json())["role"]
    assert (role["id"], role["position"]) == (str(sandbox.bot_role(gid).id), 1)
    assert int(role["permissions"]) & (1 << 28)
    async with http.patch(f"{base}/bot-role", json={"position": 99, "manage_roles": False}) as resp:
        role = (await resp.json())["role"]
    assert role["position"] == len(roles) - 1 and not int(role["permissions"]) & (1 << 28)
    for bad in ({"position": "top"}, {"manage_roles": "yes"}, {"position": 2, "below": str(members.id)}):
        async with http.patch(f"{base}/bot-role", json=bad) as resp:
            assert resp.status == 400 and "position" in (await resp.json())["error"]
    sandbox.set_bot_permissions(gid, manage_roles=True)

    async with http.patch(f"{sandbox.base_url}/_sandbox/settings", json={"role_write_limit": 7}) as resp:
        assert (await resp.json())["settings"]["role_write_limit"] == 7
    async with http.patch(
        f"{sandbox.base_url}/_sandbox/settings", json={"global_rate_limit": "many"}
    ) as resp:
        assert resp.status == 400
    async with http.post(f"{base}/silent-role-writes", json={"times": 2}) as resp:
        assert (await resp.json()) == {"silent_pending": 2}
    async with http.post(f"{base}/silent-role-writes", json={"times": 0}) as resp:
        assert resp.status == 400
    user = next(m for m in sandbox.members(gid) if not m["user"].get("bot"))["user"]["id"]
    url = f"{sandbox.base_url}/api/v10/guilds/{gid}/members/{user}/roles/{members.id}"
    headers = {"Authorization": f"Bot {sandbox.bot_token}", "X-Audit-Log-Reason": "sync%20%E2%9C%A8"}
    async with http.put(url, headers=headers) as resp:
        assert resp.status == 204
    async with http.get(f"{base}/role-writes") as resp:
        listed = await resp.json()
    assert listed["silent_pending"] == 1
    (write,) = listed["writes"]
    assert write["method"] == "PUT" and write["user_id"] == user and write["role_id"] == str(members.id)
    assert (write["status"], write["reason"], write["silent"], write["changed"]) == (
        204,
        "sync ✨",
        True,
        False,
    )

    async with http.put(url, headers={"Authorization": "Bot wrong"}) as resp:
        assert resp.status == 401
    async with http.get(f"{sandbox.base_url}/_sandbox/rate-limits") as resp:
        counters = await resp.json()
    assert (counters["invalid_requests"], counters["banned"]) == (1, False)
    (bucket,) = counters["buckets"]
    assert (bucket["major"], bucket["limit"], bucket["remaining"]) == (str(gid), 7, 6)
    async with http.post(f"{sandbox.base_url}/_sandbox/rate-limits/reset") as resp:
        counters = await resp.json()
    assert (counters["invalid_requests"], counters["buckets"]) == (0, [])
