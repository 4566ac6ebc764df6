"""After a good exchange either the link is stored or the bot leaves the guild, and the page says which."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sandbox import Sandbox, SandboxOptions
from tests.harness import eventually, world


async def test_a_tampered_guild_id_stores_nothing_and_the_bot_leaves(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=2, members=5))
    async with world(sandbox, tmp_path) as w:
        chosen, other = sandbox.managed_guilds()[:2]
        sandbox.tamper_redirect_guild_id(other.id)
        status, page = await w.browser.callback(sandbox.authorize(await w.browser.start_link(), chosen.id))
        assert status == 400 and "the bot has left" in page
        assert await w.running.store.get_link(chosen.id) is None
        assert chosen.id not in sandbox.bot_guild_ids()


async def test_users_me_failing_twice_stores_nothing_and_the_bot_leaves(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        sandbox.fail_next("GET", "/api/v10/users/@me", status=503, times=2)
        status, page = await w.browser.callback(sandbox.authorize(await w.browser.start_link(), guild.id))
        assert status == 502 and "the bot has left" in page and 'href="/link"' in page
        assert await w.running.store.get_link(guild.id) is None
        assert guild.id not in sandbox.bot_guild_ids()


async def test_a_failed_relink_keeps_the_existing_link_and_the_bot(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id)
        sandbox.fail_next("GET", "/api/v10/users/@me", status=503, times=2)
        status, page = await w.browser.callback(sandbox.authorize(await w.browser.start_link(), guild.id))
        assert status == 502 and "bot stays" in page
        link = await w.running.store.get_link(guild.id)
        assert link is not None and link.active and guild.id in sandbox.bot_guild_ids()


async def test_unlinking_during_a_sync_keeps_no_members(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=60_000))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        status, _ = await w.browser.link_guild(guild.id)
        assert status == 200

        async def reading() -> bool:
            sync = await w.running.store.get_sync_state(guild.id)
            return sync is not None and sync.phase.value == "syncing" and sync.members_stored > 0

        await eventually(reading, within=20, interval=0.01)
        await w.running.bot.links.guild_unlinked(guild.id)
        await w.running.bot.member_sync.wait_idle()
        for _ in range(3):  # chunks still in flight must land nowhere
            assert await w.running.store.count_members(guild.id) == 0
            sync = await w.running.store.get_sync_state(guild.id)
            assert sync is not None and sync.phase.value == "removed"
            link = await w.running.store.get_link(guild.id)
            assert link is not None and not link.active and link.member_count == 0
            await asyncio.sleep(0.5)
        assert guild.id not in sandbox.bot_guild_ids()
