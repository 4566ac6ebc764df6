"""The linked set in memory changes only once the database has committed the change."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import Sandbox, SandboxOptions
from store import StoreUnavailableError
from tests.harness import eventually, world


def refusing_deactivation(store: object, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the store's deactivate_link fail as a read-only database does; return the guilds it was asked for."""
    asked: list[int] = []

    async def deactivate_link(guild_id: int, *, bot_removed: bool = False) -> bool:
        asked.append(guild_id)
        raise StoreUnavailableError("the database is read-only")

    monkeypatch.setattr(store, "deactivate_link", deactivate_link)
    return asked


async def test_an_unlink_whose_commit_fails_leaves_the_guild_linked_and_its_events_stored(
    make_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id)
        store, token = w.running.store, w.running.settings.api_token
        assert token is not None
        asked = refusing_deactivation(store, monkeypatch)
        async with w.browser.session.delete(
            f"{w.running.web_url}/api/guilds/{guild.id}",
            headers={"Authorization": f"Bearer {token.reveal()}"},
        ) as response:
            assert response.status == 503
        assert asked == [guild.id] and guild.id in w.running.bot.links
        link = await store.get_link(guild.id)
        assert link is not None and link.active and guild.id in sandbox.bot_guild_ids()

        user_id = int(sandbox.members(guild.id)[0]["user"]["id"])
        sandbox.update_member(guild.id, user_id, nick="after the failed unlink")

        async def stored() -> bool:
            members = {m.user_id: m.nick for m in await store.list_members(guild.id)}
            return members.get(user_id) == "after the failed unlink"

        await eventually(stored)


async def test_a_removal_whose_commit_fails_leaves_the_guild_linked_in_memory(
    make_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id)
        asked = refusing_deactivation(w.running.store, monkeypatch)
        sandbox.kick_bot(guild.id)

        async def tried() -> list[int]:
            return asked

        assert await eventually(tried) == [guild.id]
        # As the database still says: the next READY of its shard tries the removal again.
        assert guild.id in w.running.bot.links
        link = await w.running.store.get_link(guild.id)
        assert link is not None and link.active
