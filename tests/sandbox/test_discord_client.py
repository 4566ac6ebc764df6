"""The real discord.py 2.7 client against the sandbox's REST API and gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from sandbox import Sandbox, SandboxOptions
from tests.conftest import MakeSandbox
from tests.sandbox.helpers import EventLog, intents, make_client, running

Point = Callable[[Sandbox], None]


async def test_login_and_ready_list_the_bots_guilds(sandbox: Sandbox, point_discord_py: Point) -> None:
    point_discord_py(sandbox)
    guild = sandbox.managed_guilds()[0]
    sandbox.add_bot(guild.id)
    client = make_client()
    async with running(client, sandbox):
        assert client.user is not None
        assert client.user.id == sandbox.client_id
        assert client.user.bot
        assert [g.id for g in client.guilds] == [guild.id]
        g = client.guilds[0]
        assert g.name == guild.name
        assert g.member_count == sandbox.guild(guild.id).member_count
        assert {m.id for m in g.members} == {int(m["user"]["id"]) for m in sandbox.members(guild.id)}
    identify = [c for c in sandbox.gateway_commands if c.op == 2]
    assert len(identify) == 1
    assert identify[0].data["intents"] == intents().value
    assert any(r.path == "/api/v10/users/@me" for r in sandbox.requests)


async def test_join_while_connected_fires_on_guild_join(sandbox: Sandbox, point_discord_py: Point) -> None:
    point_discord_py(sandbox)
    client = make_client()
    log = EventLog(client, "guild_join", "guild_available")
    async with running(client, sandbox):
        assert list(client.guilds) == []
        guild = sandbox.managed_guilds()[1]
        sandbox.add_bot(guild.id)
        (joined,) = await log.wait("guild_join")
        assert joined.id == guild.id
        assert joined.name == guild.name
        assert log.events["guild_available"] == []


async def test_ten_thousand_members_arrive_through_chunking(
    make_sandbox: MakeSandbox, point_discord_py: Point
) -> None:
    sandbox = await make_sandbox(SandboxOptions(members=10_000))
    point_discord_py(sandbox)
    guild_id = sandbox.managed_guilds()[0].id
    client = make_client(chunk_guilds_at_startup=False)
    async with running(client, sandbox):
        sandbox.add_bot(guild_id)
        for _ in range(100):
            guild = client.get_guild(guild_id)
            if guild is not None:
                break
            await asyncio.sleep(0.05)
        assert guild is not None
        assert guild.large
        assert not guild.chunked
        members = await asyncio.wait_for(guild.chunk(), 30)
        expected = [int(m["user"]["id"]) for m in sandbox.members(guild_id)]
        assert len(expected) == 10_001  # 10,000 plus the bot
        assert sorted(m.id for m in members) == expected
        assert guild.chunked
    requests = [c for c in sandbox.gateway_commands if c.op == 8]
    assert len(requests) == 1
    assert requests[0].data["guild_id"] == guild_id  # discord.py sends an int; the sandbox accepts it
