"""guildlink whole on PostgreSQL: a link through the consent flow, a member sync, the API; and a server it cannot reach."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from main import EXIT_DATABASE, serve
from sandbox import Sandbox, SandboxOptions
from tests.harness import free_port, settings_for, world


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
