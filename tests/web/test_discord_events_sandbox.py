"""Discord's webhook events end to end: the sandbox signs and POSTs them, guildlink (bot included) acts on them.

Real sockets, the real sandbox and discord.py, on each engine.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from sandbox import Sandbox, SandboxOptions
from sandbox.app_events import Delivery
from store import EventType, LinkSource
from tests.harness import World, eventually, is_synced, world
from tests.web.test_admin_console import get, sign_in

GRACE = "0.3"


@contextlib.asynccontextmanager
async def events_world(
    sandbox: Sandbox, data_dir: Path, database_url: str, **env: str
) -> AsyncIterator[World]:
    """guildlink with DISCORD_PUBLIC_KEY, its URL set in the sandbox (which checks it, as the portal does)."""
    settings = {
        "DISCORD_PUBLIC_KEY": sandbox.verify_key,
        "LINK_CALLBACK_GRACE_SECONDS": GRACE,
        "DATABASE_URL": database_url,
        **env,
    }
    async with world(sandbox, data_dir, env=settings) as w:
        assert await sandbox.set_webhook_events_url(f"{w.running.web_url}/discord/webhook-events") is None
        yield w


def delivered(sandbox: Sandbox, kind: str) -> list[Delivery]:
    return [d for d in sandbox.app_events.deliveries if d.type == kind]


async def test_setting_the_url_passes_discords_check(make_sandbox, tmp_path: Path, database_url: str) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=3))
    async with events_world(sandbox, tmp_path, database_url):
        assert [(d.type, d.status) for d in sandbox.app_events.deliveries] == [
            ("PING", 204),
            ("PING (bad signature)", 401),
        ]


async def test_a_url_that_takes_bad_signatures_fails_the_check(
    make_sandbox, tmp_path: Path, database_url: str
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=3))
    async with world(sandbox, tmp_path, env={"DATABASE_URL": database_url}) as w:
        # Without DISCORD_PUBLIC_KEY the route is not served: the PING gets 404.
        problem = await sandbox.set_webhook_events_url(f"{w.running.web_url}/discord/webhook-events")
        assert problem is not None and "404" in problem and sandbox.app_events.url is None


async def test_an_install_through_the_consent_flow_is_recorded_once(
    make_sandbox, tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="web.uncalled_installs")
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    guild = sandbox.managed_guilds()[0]
    # A long grace: the callback must win it even on a loaded machine.
    async with events_world(sandbox, tmp_path, database_url, LINK_CALLBACK_GRACE_SECONDS="2") as w:
        await w.link_and_sync(guild.id)
        assert [d.status for d in delivered(sandbox, "APPLICATION_AUTHORIZED")] == [204]
        await eventually(lambda: _has_record(caplog, "discord_events.install_linked"))
        await sign_in(w.browser)
        assert "installed without our callback" not in (await get(w.browser, "/admin/"))[1]
        events = await w.running.store.list_events(limit=1000)
        linked = [e for e in events if e.type is EventType.GUILD_LINKED]
        assert [e.data["source"] for e in linked] == ["callback"]
        link = await w.running.store.get_link(guild.id)
        assert link is not None and link.source is LinkSource.CALLBACK


async def test_an_add_app_install_is_recorded_after_the_grace_and_synced(
    make_sandbox, tmp_path: Path, database_url: str
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=7))
    guild = sandbox.managed_guilds()[0]
    async with events_world(sandbox, tmp_path, database_url) as w:
        sandbox.add_app(guild.id)
        await eventually(lambda: is_synced(w.running, guild.id), within=20)
        link = await w.running.store.get_link(guild.id)
        assert link is not None and link.source is LinkSource.DISCORD_WEBHOOK and link.ref is None
        assert link.linked_by_id == sandbox.user_id
        members = await w.running.store.list_members(guild.id)
        assert {m.user_id for m in members} == {int(m["user"]["id"]) for m in sandbox.members(guild.id)}
        # The console says it came without our callback, on the list and on the server's page.
        await sign_in(w.browser)
        for path in ("/admin/", f"/admin/guilds/{guild.id}"):
            status, page, _ = await get(w.browser, path)
            assert status == 200 and "installed without our callback" in page, path


async def test_with_refuse_an_add_app_install_makes_the_bot_leave(
    make_sandbox, tmp_path: Path, database_url: str
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=3))
    guild = sandbox.managed_guilds()[0]
    async with events_world(sandbox, tmp_path, database_url, LINK_WITHOUT_CALLBACK="refuse") as w:
        sandbox.add_app(guild.id)
        assert guild.id in sandbox.bot_guild_ids()
        events = await eventually(lambda: _events_of(w, EventType.GUILD_INSTALL_REFUSED), within=10)
        assert events[0].guild_id == guild.id and events[0].data["bot_left"] is True
        assert guild.id not in sandbox.bot_guild_ids()
        assert await w.running.store.get_link(guild.id) is None


async def test_a_deauthorization_is_announced(make_sandbox, tmp_path: Path, database_url: str) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=3))
    async with events_world(sandbox, tmp_path, database_url) as w:
        sandbox.deauthorize()
        [event] = await eventually(lambda: _events_of(w, EventType.APP_DEAUTHORIZED))
        assert event.data == {"user_id": str(sandbox.user_id)} and event.guild_id == 0


async def _events_of(w: World, kind: EventType) -> list:
    return [e for e in await w.running.store.list_events(limit=1000) if e.type is kind]


async def _has_record(caplog: pytest.LogCaptureFixture, message: str) -> bool:
    return any(record.getMessage().startswith(message) for record in caplog.records)


async def test_an_install_the_callback_refused_and_left_is_not_recorded_from_the_event(
    make_sandbox, tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="web.uncalled_installs")
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=2, members=3))
    chosen, shown = (g.id for g in sandbox.managed_guilds()[:2])
    async with events_world(sandbox, tmp_path, database_url) as w:
        # The redirect names another guild than the one authorized: the callback refuses, and the bot leaves.
        sandbox.tamper_redirect_guild_id(shown)
        status, _ = await w.browser.link_guild(chosen)
        assert status == 400
        await eventually(lambda: _has_record(caplog, "discord_events.install_abandoned_by_callback"))
        assert await w.running.store.get_link(chosen) is None
        assert chosen not in sandbox.bot_guild_ids()
        assert await _events_of(w, EventType.GUILD_LINKED) == []
