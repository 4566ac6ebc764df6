"""Past 2,500 guilds: the bot shards by itself, identifies within Discord's rate, and reports every shard."""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

from bot.discord_internals import running_heartbeats
from sandbox import Sandbox, SandboxOptions
from tests.harness import browser, eventually, free_port, settings_for, started

GUILDS = 3_000


async def test_3000_guilds_are_sharded_by_themselves_and_every_shard_is_ready(
    make_sandbox, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(
        SandboxOptions(guilds=GUILDS, members=2, max_guilds_per_session=2_500, identify_interval=0.3)
    )
    for guild in sandbox.managed_guilds():
        sandbox.add_bot(guild.id)
    settings = settings_for(sandbox, tmp_path, port=free_port())
    async with started(settings, identify_interval=0.35) as running, browser(sandbox, running) as b:
        bot = running.bot
        assert bot.shard_count == 3  # the sandbox's recommendation, as Discord's: about 1,000 guilds a shard
        assert len(bot.guilds) == GUILDS
        assert all(guild.shard_id == (guild.id >> 22) % 3 for guild in bot.guilds)
        async with b.session.get(running.web_url + "/readyz") as response:
            body = await response.json()
        assert response.status == 200
        assert [s["id"] for s in body["shards"]] == [0, 1, 2]
        assert all(s["state"] == "ready" and s["guilds"] > 0 for s in body["shards"])
        assert sum(s["guilds"] for s in body["shards"]) == GUILDS
        identifies = [c.time for c in sandbox.gateway_commands if c.op == 2]
        assert len(identifies) == 3  # none refused with op 9
        assert all(later - earlier >= 0.3 for earlier, later in itertools.pairwise(identifies))

        # A link on any shard is synced through that shard's connection.
        guild = max(sandbox.managed_guilds(), key=lambda g: (g.id >> 22) % 3)
        assert (await b.link_guild(guild.id))[0] == 200

        async def synced() -> bool:
            sync = await running.store.get_sync_state(guild.id)
            return sync is not None and sync.phase.value == "synced"

        await eventually(synced, within=20)


async def test_a_process_runs_only_its_shards(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=12, members=2))
    for guild in sandbox.managed_guilds():
        sandbox.add_bot(guild.id)
    settings = settings_for(sandbox, tmp_path, port=free_port(), env={"SHARD_COUNT": "2", "SHARD_IDS": "1"})
    async with started(settings) as running:
        held = {guild.id for guild in running.bot.guilds}
        assert held == {g.id for g in sandbox.managed_guilds() if (g.id >> 22) % 2 == 1}
        status = running.bot.bot_status()
        assert [(s.shard_id, s.guild_count) for s in status.shards] == [(1, len(held))]
        assert status.guild_count == len(held) > 0


async def test_closing_while_a_shard_waits_to_identify_leaves_no_heartbeat_thread(
    make_sandbox, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=4, members=2))
    for guild in sandbox.managed_guilds():
        sandbox.add_bot(guild.id)
    settings = settings_for(sandbox, tmp_path, port=free_port(), env={"SHARD_COUNT": "2"})
    async with started(settings, ready=False, identify_interval=60.0) as running:
        bot = running.bot

        async def second_shard_waiting() -> bool:
            return len([c for c in sandbox.gateway_commands if c.op == 2]) == 1 and _heartbeats(bot) == 2

        await eventually(second_shard_waiting, within=10)
    await asyncio.sleep(0.1)
    assert _heartbeats(bot) == 0


def _heartbeats(bot: Any) -> int:
    """Live heartbeat threads of `bot`'s connections."""
    return len(running_heartbeats(bot))
