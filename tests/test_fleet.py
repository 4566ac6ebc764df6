"""Two guildlink processes' worth in one test (each its own store, web server and bot) on one PostgreSQL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from sandbox import Sandbox, SandboxOptions
from store.postgres_locks import LISTEN_APPLICATION_NAME
from tests.harness import browser, eventually, free_port, is_synced, settings_for, started
from tests.web.test_metrics import samples


async def test_a_guild_linked_through_one_process_is_synced_by_the_process_of_its_shard(
    make_sandbox, tmp_path: Path, postgres_url: str
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=6, members=300))
    fleet = {"DATABASE_URL": postgres_url, "SHARD_COUNT": "2"}
    settings_a = settings_for(sandbox, tmp_path / "a", port=free_port(), env={**fleet, "SHARD_IDS": "0"})
    settings_b = settings_for(sandbox, tmp_path / "b", port=free_port(), env={**fleet, "SHARD_IDS": "1"})
    guild = next(g for g in sandbox.managed_guilds() if (g.id >> 22) % 2 == 1)
    async with started(settings_a) as a, started(settings_b) as b, browser(sandbox, a) as through_a:
        assert (await through_a.link_guild(guild.id))[0] == 200
        await eventually(lambda: is_synced(b, guild.id), within=20)
        stored = await b.store.list_members(guild.id, limit=1000)
        assert [m.user_id for m in stored] == [int(m["user"]["id"]) for m in sandbox.members(guild.id)]
        assert not a.bot.member_sync.is_syncing(guild.id) and guild.id not in a.bot.links
        assert guild.id in b.bot.links

        async with aiohttp.ClientSession() as session, session.get(b.web_url + "/readyz") as response:
            body = await response.json()
        assert response.status == 200
        assert body["handoff"]["mode"] == "notify" and body["handoff"]["listening"]
        assert body["handoff"]["notices_heard"] == 1 and body["handoff"]["last_notify_lag_ms"] is not None

        token = settings_b.api_token
        assert token is not None
        headers = {"Authorization": f"Bearer {token.reveal()}"}
        async with (
            aiohttp.ClientSession(headers=headers) as session,
            session.get(b.web_url + "/metrics") as response,
        ):
            found = samples(await response.text())
        assert found[("guildlink_notify_lag_seconds_count", ())] == 1
        assert found[("guildlink_handoff_listening", ())] == 1


async def test_a_process_whose_listen_connection_is_cut_is_not_ready_until_it_is_back(
    make_sandbox, tmp_path: Path, postgres_url: str
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=2, members=5))
    env = {"DATABASE_URL": postgres_url, "SHARD_COUNT": "2", "SHARD_IDS": "1"}
    async with (
        started(settings_for(sandbox, tmp_path, port=free_port(), env=env)) as running,
        aiohttp.ClientSession() as session,
    ):

        async def readyz() -> tuple[int, dict[str, Any]]:
            async with session.get(running.web_url + "/readyz") as response:
                return response.status, await response.json()

        await eventually(lambda: _status_is(readyz, 200), within=10)
        admin = await asyncpg.connect(postgres_url)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = $1 AND datname = current_database()",
                LISTEN_APPLICATION_NAME,
            )
        finally:
            await admin.close()
        answer = await eventually(lambda: _status_is(readyz, 503), within=5)
        assert answer is not None
        body = answer[1]
        assert not body["handoff"]["listening"] and any("LISTEN" in reason for reason in body["reasons"])
        await eventually(lambda: _status_is(readyz, 200), within=10)


async def test_a_process_running_every_shard_keeps_the_direct_call(
    make_sandbox, tmp_path: Path, postgres_url: str
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=2, members=5))
    env = {"DATABASE_URL": postgres_url, "SHARD_COUNT": "2", "SHARD_IDS": "0,1"}
    async with started(settings_for(sandbox, tmp_path, port=free_port(), env=env)) as running:
        assert running.handoff.handoff_status().mode == "direct"


async def _status_is(
    readyz: Callable[[], Awaitable[tuple[int, dict[str, Any]]]], status: int
) -> tuple[int, dict[str, Any]] | None:
    answer = await readyz()
    return answer if answer[0] == status else None
