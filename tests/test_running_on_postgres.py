"""guildlink whole on PostgreSQL: a link through the consent flow, a member sync, the API; and a server it cannot reach."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest

from main import EXIT_DATABASE, serve
from sandbox import Sandbox, SandboxOptions
from store import SyncPhase
from store.postgres_locks import LOCKS_APPLICATION_NAME
from tests.harness import eventually, free_port, is_synced, settings_for, world


async def test_a_guild_is_linked_synced_and_served_from_postgresql(
    make_sandbox, tmp_path: Path, postgres_url: str
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=2500))
    async with world(sandbox, tmp_path, env={"DATABASE_URL": postgres_url}) as w:
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id, within=60)
        expected = sorted(int(m["user"]["id"]) for m in sandbox.members(guild.id))
        stored = await w.running.store.list_members(guild.id, limit=100_000)
        assert [m.user_id for m in stored] == expected
        link = await w.running.store.get_link(guild.id)
        assert link is not None and link.member_count == len(expected)

        token = w.running.settings.api_token
        assert token is not None
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {token.reveal()}"}) as session,
            session.get(f"{w.running.web_url}/api/guilds/{guild.id}/members?limit=1000") as response,
        ):
            assert response.status == 200
            body = await response.json()
        assert [int(m["id"]) for m in body["members"]] == expected[:1000]


async def test_an_unreachable_postgresql_stops_start_up_with_one_line_without_its_password(
    make_sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    url = f"postgresql://guildlink:pa55word@127.0.0.1:{free_port()}/guildlink"
    settings = settings_for(sandbox, tmp_path, port=free_port(), env={"DATABASE_URL": url})
    assert await serve(settings) == EXIT_DATABASE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "refused the connection" in err and "Traceback" not in err
    assert "pa55word" not in err and "guildlink:***@127.0.0.1" in err


async def test_a_store_whose_guild_locks_cannot_be_taken_is_not_ready_until_they_can(
    make_sandbox, tmp_path: Path, postgres_server: str, postgres_url: str
) -> None:
    """The pool goes on answering while the lock connection cannot open: every sync would fail, so /readyz says so."""
    role = f"gl_limited_{uuid.uuid4().hex[:8]}"
    database = urlsplit(postgres_url).path.lstrip("/")
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f'CREATE ROLE "{role}" LOGIN')
        await admin.execute(f'ALTER DATABASE "{database}" OWNER TO "{role}"')
        server = urlsplit(postgres_url)
        url = urlunsplit(server._replace(netloc=f"{role}@{server.hostname}:{server.port}"))
        sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=50))
        guild = sandbox.managed_guilds()[0]
        async with (
            world(sandbox, tmp_path, env={"DATABASE_URL": url}) as w,
            aiohttp.ClientSession() as session,
        ):

            async def readyz() -> tuple[int, dict[str, Any]]:
                async with session.get(w.running.web_url + "/readyz") as response:
                    return response.status, await response.json()

            assert (await readyz())[0] == 200
            # The role may open no new session; the lock connection is ended, the pool's stay.
            await admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT 0')
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                LOCKS_APPLICATION_NAME,
            )

            async def not_ready() -> dict[str, Any] | None:
                status, body = await readyz()
                return body if status == 503 else None

            body = await eventually(not_ready, within=10)
            assert body is not None
            assert (
                body["database"]
                == "cannot take guild sync locks: the database server has too many connections"
            )
            assert body["database"] in body["reasons"]
            status, page = await w.browser.link_guild(guild.id)
            assert status == 200, page

            async def failed() -> bool:
                sync = await w.running.store.get_sync_state(guild.id)
                return sync is not None and sync.phase is SyncPhase.FAILED

            await eventually(failed, within=10)
            await admin.execute(f'ALTER ROLE "{role}" CONNECTION LIMIT -1')

            async def ready() -> bool:
                return (await readyz())[0] == 200

            await eventually(ready, within=10)
            await eventually(lambda: is_synced(w.running, guild.id), within=30)
    finally:
        # The role owns the schema's objects: give them back, so that the database can be dropped and the role.
        try:
            in_database = await asyncpg.connect(postgres_url)
            try:
                await in_database.execute(f'REASSIGN OWNED BY "{role}" TO CURRENT_USER')
            finally:
                await in_database.close()
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
        finally:
            await admin.close()
