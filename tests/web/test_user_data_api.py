"""GET and DELETE /api/users/{user_id}, and the scrub of departed members' data, against the sandbox on each engine."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sandbox import Sandbox, SandboxOptions
from tests.harness import eventually, world
from tests.web.test_api import API_TOKEN, AUTH, api, check_against_openapi


async def feed(b: Any) -> list[dict[str, Any]]:
    status, body = await api(b, "GET", "/api/events?limit=1000")
    assert status == 200, body
    return list(body["events"])


async def test_a_users_data_is_exported_then_erased_everywhere(
    make_sandbox, tmp_path: Path, database_url: str
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=2, members=20))
    [one, two] = sandbox.managed_guilds()[:2]
    async with world(sandbox, tmp_path, env={"DATABASE_URL": database_url}) as w:
        b = w.browser
        await w.link_and_sync(one.id)
        await w.link_and_sync(two.id)
        # The sandbox's admin is a member of every guild: one user in two guilds.
        user_id = sandbox.user_id
        sandbox.update_member(one.id, user_id, nick="Private <b>nick</b>")

        async def nick_announced() -> bool:
            return any(e["type"] == "member.updated" for e in await feed(b))

        await eventually(nick_announced)

        status, exported = await api(b, "GET", f"/api/users/{user_id}")
        assert status == 200, exported
        check_against_openapi("/api/users/{user_id}", "get", 200, exported)
        assert sorted(m["guild_id"] for m in exported["members"]) == sorted([str(one.id), str(two.id)])
        assert {m["member"]["id"] for m in exported["members"]} == {str(user_id)}
        assert sorted(link["guild_id"] for link in exported["links"]) == sorted([str(one.id), str(two.id)])
        assert [e["type"] for e in exported["events"]] == ["guild.linked", "guild.linked", "member.updated"]
        assert exported["events_truncated"] is False

        status, erased = await api(b, "DELETE", f"/api/users/{user_id}")
        assert status == 200, erased
        check_against_openapi("/api/users/{user_id}", "delete", 200, erased)
        assert sorted(erased["guild_ids"]) == sorted([str(one.id), str(two.id)])
        assert (erased["members_deleted"], erased["events_scrubbed"]) == (2, 3)

        events = await feed(b)
        assert "Private" not in str(events)
        updated = next(e for e in events if e["type"] == "member.updated")
        assert updated["data"] == {"user_id": str(user_id), "scrubbed": "erased"}
        assert sorted(e["guild_id"] for e in events if e["type"] == "user.erased") == sorted(
            [str(one.id), str(two.id)]
        )
        status, after = await api(b, "GET", f"/api/users/{user_id}")
        assert status == 200 and after["members"] == []
        assert all(link["linked_by"]["username"] == "" for link in after["links"])
        for guild in (one, two):
            status, members = await api(b, "GET", f"/api/guilds/{guild.id}/members?limit=1000")
            assert str(user_id) not in {m["id"] for m in members["members"]}
            status, linked = await api(b, "GET", f"/api/guilds/{guild.id}")
            assert linked["member_count"] == len(members["members"])
        status, metrics = 0, ""
        async with b.session.get(b.web_url + "/metrics", headers=AUTH) as response:
            status, metrics = response.status, await response.text()
        assert 'guildlink_feed_scrubbed_events_total{reason="erased"} 3.0' in metrics, status


async def test_a_bad_user_id_is_a_400_naming_it_and_no_token_a_401(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        for method in ("GET", "DELETE"):
            for bad in ("abc", "-1", "1" * 30, "9223372036854775808"):
                status, body = await api(w.browser, method, f"/api/users/{bad}")
                assert (status, body["error"], body["parameter"]) == (400, "invalid_parameter", "user_id")
            status, body = await api(w.browser, method, "/api/users/1", headers={})
            assert status == 401
            status, body = await api(
                w.browser, method, "/api/users/1", headers={"Authorization": f"Bearer {API_TOKEN}x"}
            )
            assert status == 401


async def test_a_member_who_left_loses_their_data_in_the_feed_after_the_window(
    make_sandbox, tmp_path: Path, database_url: str
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=10))
    guild = sandbox.managed_guilds()[0]
    env = {"DATABASE_URL": database_url}
    async with world(sandbox, tmp_path, env=env) as w:
        await w.link_and_sync(guild.id)
        user_id = int([m for m in sandbox.members(guild.id) if not m["user"].get("bot")][3]["user"]["id"])
        sandbox.update_member(guild.id, user_id, nick="soon gone")
        sandbox.remove_member(guild.id, user_id)

        async def left() -> bool:
            return any(e["type"] == "member.left" for e in await feed(w.browser))

        await eventually(left)
        # Within the default 24 h the data stays.
        assert any("soon gone" in str(e["data"]) for e in await feed(w.browser))

    # A window of 0 hours: the scrub that runs at start-up takes it.
    async with world(sandbox, tmp_path, env={**env, "MEMBER_DATA_AFTER_LEAVE_HOURS": "0"}) as w:

        async def scrubbed() -> list[dict[str, Any]]:
            return [e for e in await feed(w.browser) if e["data"].get("scrubbed") == "left"]

        [tombstone] = await eventually(scrubbed)
        assert tombstone["type"] == "member.updated"
        assert tombstone["data"] == {"user_id": str(user_id), "scrubbed": "left"}
        assert "soon gone" not in str(await feed(w.browser))
