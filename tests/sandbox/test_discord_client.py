"""The real discord.py 2.7 client against the sandbox's REST API and gateway."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import discord
import pytest

from bot.discord_internals import gateway_session_id, request_whole_member_list, websocket_of_guild
from sandbox import Sandbox, SandboxOptions
from tests.conftest import MakeSandbox
from tests.sandbox.helpers import EventLog, intents, make_client, raw_dispatches, running

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


async def test_member_add_update_remove_reach_discord_py(sandbox: Sandbox, point_discord_py: Point) -> None:
    point_discord_py(sandbox)
    guild_id = sandbox.managed_guilds()[0].id
    sandbox.add_bot(guild_id)
    client = make_client()
    log = EventLog(client, "member_join", "member_update", "raw_member_remove")
    async with running(client, sandbox):
        uid = sandbox.add_member(guild_id, username="<b>newbie</b>")
        (joined,) = await log.wait("member_join")
        assert joined.id == uid
        assert joined.name == "<b>newbie</b>"
        assert joined.guild.id == guild_id

        sandbox.update_member(guild_id, uid, nick="Renée 🎉")
        before, after = await log.wait("member_update")
        assert before.nick is None
        assert after.nick == "Renée 🎉"

        sandbox.remove_member(guild_id, uid)
        (payload,) = await log.wait("raw_member_remove")
        assert payload.user.id == uid
        guild = client.get_guild(guild_id)
        assert guild is not None
        assert guild.get_member(uid) is None
        assert guild.member_count == sandbox.guild(guild_id).member_count


async def test_member_events_skip_sessions_without_members_intent(
    sandbox: Sandbox, point_discord_py: Point
) -> None:
    point_discord_py(sandbox)
    guild_id = sandbox.managed_guilds()[0].id
    sandbox.add_bot(guild_id)
    client = make_client(members=False, enable_debug_events=True)
    log = EventLog(client, "socket_raw_receive", "guild_join")
    async with running(client, sandbox):
        sandbox.add_member(guild_id)
        # A join in another guild is a marker: once it arrives, the member event would have too.
        sandbox.add_bot(sandbox.managed_guilds()[1].id)
        await log.wait("guild_join")
        assert raw_dispatches(log, "GUILD_MEMBER_ADD") == []


async def test_dropped_socket_is_resumed_without_losing_events(
    sandbox: Sandbox, point_discord_py: Point
) -> None:
    point_discord_py(sandbox)
    guild_id = sandbox.managed_guilds()[0].id
    sandbox.add_bot(guild_id)
    client = make_client()
    log = EventLog(client, "member_join", "resumed")
    async with running(client, sandbox):
        mark = len(sandbox.gateway_commands)
        sandbox.drop_gateway()
        # Emitted while the client has no socket: must be replayed on RESUME.
        missed = [sandbox.add_member(guild_id, username=f"missed{i}") for i in range(3)]
        await log.wait("resumed", within=15)
        resume = await sandbox.wait_for_gateway_command(6, since=mark)
        session_id = gateway_session_id(client)
        assert session_id is not None and resume.data["session_id"] == session_id
        for uid in missed:
            await log.wait("member_join", lambda m, uid=uid: m.id == uid)
        after = sandbox.add_member(guild_id, username="after")
        await log.wait("member_join", lambda m: m.id == after)
        assert [c.op for c in sandbox.gateway_commands[mark:]].count(2) == 0  # no fresh IDENTIFY
    gateway_paths = [r.path for r in sandbox.requests if r.path.startswith("/gateway")]
    assert gateway_paths == ["/gateway", "/gateway/resume"]  # discord.py resumed on resume_gateway_url


async def test_reconnect_request_is_resumed(sandbox: Sandbox, point_discord_py: Point) -> None:
    point_discord_py(sandbox)
    client = make_client()
    log = EventLog(client, "resumed")
    async with running(client, sandbox):
        mark = len(sandbox.gateway_commands)
        await sandbox.send_reconnect()
        await log.wait("resumed", within=15)
        await sandbox.wait_for_gateway_command(6, since=mark)


async def test_invalid_session_is_followed_by_a_fresh_identify(
    sandbox: Sandbox, point_discord_py: Point
) -> None:
    point_discord_py(sandbox)
    guild_id = sandbox.managed_guilds()[0].id
    sandbox.add_bot(guild_id)
    client = make_client()
    async with running(client, sandbox):
        first_session = gateway_session_id(client)
        assert first_session is not None
        mark = len(sandbox.gateway_commands)
        await sandbox.send_invalid_session(resumable=False)
        identify = await sandbox.wait_for_gateway_command(2, since=mark, timeout=15)
        assert identify.data["token"] == sandbox.bot_token
        for _ in range(200):
            if gateway_session_id(client) not in (None, first_session):
                break
            await asyncio.sleep(0.02)
        assert gateway_session_id(client) not in (None, first_session)
        assert not [c for c in sandbox.gateway_commands[mark:] if c.op == 6]
        assert client.get_guild(guild_id) is not None


async def test_members_intent_switched_off_raises_privileged_intents_required(
    make_sandbox: MakeSandbox, point_discord_py: Point
) -> None:
    sandbox = await make_sandbox(SandboxOptions(members_intent_enabled=False))
    point_discord_py(sandbox)
    client = make_client()
    try:
        with pytest.raises(discord.PrivilegedIntentsRequired):
            await asyncio.wait_for(client.start(sandbox.bot_token), 15)
    finally:
        await client.close()
    # Without the privileged intent the same application connects fine.
    client = make_client(members=False)
    async with running(client, sandbox):
        assert client.user is not None


async def test_second_whole_member_list_within_cooldown_is_rate_limited(
    make_sandbox: MakeSandbox, point_discord_py: Point
) -> None:
    sandbox = await make_sandbox(SandboxOptions(members=1_500))
    point_discord_py(sandbox)
    guild_id = sandbox.managed_guilds()[0].id
    sandbox.add_bot(guild_id)
    client = make_client(enable_debug_events=True)
    log = EventLog(client, "socket_raw_receive")
    async with running(client, sandbox):
        guild = client.get_guild(guild_id)
        assert guild is not None
        assert guild.chunked  # discord.py chunked it at start-up: that was the first whole-list request
        ws = websocket_of_guild(client, guild_id)
        assert ws is not None
        await request_whole_member_list(ws, guild_id, "second")
        limited: list[dict] = []
        for _ in range(200):
            limited = raw_dispatches(log, "RATE_LIMITED")
            if limited:
                break
            await asyncio.sleep(0.02)
        assert len(limited) == 1
        data = limited[0]["d"]
        assert data["opcode"] == 8
        assert data["meta"] == {"guild_id": str(guild_id), "nonce": "second"}
        assert 0 < data["retry_after"] <= 30
        chunks = [m for m in raw_dispatches(log, "GUILD_MEMBERS_CHUNK") if m["d"].get("nonce") == "second"]
        assert chunks == []

        # Once the window has passed, the list is served again.
        sandbox.options.member_list_cooldown = 0.0
        await request_whole_member_list(ws, guild_id, "third")
        served: list[dict] = []
        for _ in range(200):
            served = [
                m["d"] for m in raw_dispatches(log, "GUILD_MEMBERS_CHUNK") if m["d"].get("nonce") == "third"
            ]
            if len(served) == 2:
                break
            await asyncio.sleep(0.02)
        shape = [(c["chunk_index"], c["chunk_count"], len(c["members"])) for c in served]
        assert shape == [(0, 2, 1000), (1, 2, 501)]
