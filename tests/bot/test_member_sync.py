"""Member sync within Discord's rules: RATE_LIMITED noticed and retried, REST when the gateway fails."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from bot.member_sync import MemberSync
from main import EXIT_DISCORD_REFUSED, serve
from metrics import Metrics
from sandbox import Sandbox, SandboxOptions
from store import Member, SqliteStore, SyncPhase, open_store
from tests.harness import browser, eventually, free_port, settings_for, started
from tests.store.records import a_leave
from tests.store.test_sqlite import a_link


def whole_list_requests(sandbox: Sandbox, guild_id: int) -> int:
    return sum(1 for c in sandbox.gateway_commands if c.op == 8 and int(c.data["guild_id"]) == guild_id)


async def test_rate_limited_request_is_retried_after_retry_after(make_sandbox, tmp_path: Path) -> None:
    # Our process forgot its last request (a restart, say) while Discord did not: RATE_LIMITED comes back.
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=1_500, member_list_cooldown=1.5))
    guild = sandbox.managed_guilds()[0]
    settings = settings_for(sandbox, tmp_path, port=free_port())
    async with started(settings, cooldown=0.0) as running, browser(sandbox, running) as b:
        assert (await b.link_guild(guild.id))[0] == 200

        async def synced_count() -> int:
            sync = await running.store.get_sync_state(guild.id)
            return sync.members_stored if sync and sync.phase is SyncPhase.SYNCED else 0

        await eventually(synced_count, within=20)
        await running.store.apply_member_changes(
            [a_leave(guild.id, int(sandbox.members(guild.id)[0]["user"]["id"]))]
        )
        running.bot.member_sync.schedule(guild.id)
        await running.bot.member_sync.wait_idle()

        assert whole_list_requests(sandbox, guild.id) == 3  # first, refused, retried
        assert await synced_count() == len(sandbox.members(guild.id))


class SilentGateway:
    """A gateway route whose requests are never answered; REST pages come from the sandbox for real."""

    def __init__(self, session: aiohttp.ClientSession, sandbox: Sandbox) -> None:
        self._session = session
        self._sandbox = sandbox
        self.requested = 0
        self.requested_at: list[float] = []

    def gateway_wait(self, guild_id: int) -> float:
        return 0.0

    async def request_whole_list(self, guild_id: int, nonce: str) -> None:
        self.requested += 1
        self.requested_at.append(time.monotonic())

    async def fetch_member_page(self, guild_id: int, after: int) -> Sequence[Mapping[str, Any]]:
        url = f"{self._sandbox.base_url}/api/v10/guilds/{guild_id}/members"
        headers = {"Authorization": f"Bot {self._sandbox.bot_token}"}
        async with self._session.get(
            url, params={"limit": "1000", "after": str(after)}, headers=headers
        ) as r:
            assert r.status == 200
            return await r.json()


async def test_unanswered_gateway_request_falls_back_to_rest_pages(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=2_345))
    guild = sandbox.managed_guilds()[0]
    sandbox.add_bot(guild.id)
    async with SqliteStore.open(tmp_path / "db.sqlite") as store, aiohttp.ClientSession() as session:
        await store.save_link(a_link(guild.id))
        stale = Member(1, "left-long-ago", None, None, None, False, (), None)
        await store.upsert_members(guild.id, [stale], datetime(2020, 1, 1, tzinfo=UTC))
        gateway = SilentGateway(session, sandbox)
        sync = MemberSync(store, gateway, chunk_timeout=0.3)

        count = await sync.sync(guild.id)

        assert gateway.requested == 1
        assert count == len(sandbox.members(guild.id))
        stored = [m.user_id for m in await store.list_members(guild.id, limit=1000)]
        assert stored == [int(m["user"]["id"]) for m in sandbox.members(guild.id)][:1000]
        state = await store.get_sync_state(guild.id)
        assert state is not None and state.phase is SyncPhase.SYNCED and state.members_stored == count


async def test_a_failed_sync_is_recorded_then_retried_until_it_succeeds(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=10))
    guild = sandbox.managed_guilds()[0]  # the bot is not in it yet: REST answers 403

    async with SqliteStore.open(tmp_path / "db.sqlite") as store, aiohttp.ClientSession() as session:
        await store.save_link(a_link(guild.id))
        sync = MemberSync(store, SilentGateway(session, sandbox), chunk_timeout=0.1, retry_first_wait=0.2)
        sync.schedule(guild.id)

        async def failed() -> str:
            state = await store.get_sync_state(guild.id)
            return (state.error or "") if state and state.phase is SyncPhase.FAILED else ""

        assert "403" in await eventually(failed, within=5)
        sandbox.add_bot(guild.id)
        await sync.wait_idle()
        state = await store.get_sync_state(guild.id)
    assert state is not None and state.phase is SyncPhase.SYNCED and state.members_stored == 11


async def test_a_guild_another_process_is_syncing_is_left_to_it_until_its_lock_goes(
    make_sandbox, tmp_path: Path, database_url: str
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=1_200))
    guild = sandbox.managed_guilds()[0]
    sandbox.add_bot(guild.id)
    async with (
        open_store(database_url) as store,
        open_store(database_url) as other_process,
        aiohttp.ClientSession() as session,
    ):
        await store.save_link(a_link(guild.id))
        held = await other_process.try_lock_guild(guild.id)
        assert held is not None
        gateway = SilentGateway(session, sandbox)
        sync = MemberSync(store, gateway, chunk_timeout=0.2, locked_retry_wait=0.1)
        sync.schedule(guild.id)
        await asyncio.sleep(0.5)
        assert gateway.requested == 0 and sync.is_syncing(guild.id)
        state = await store.get_sync_state(guild.id)
        assert state is not None and state.phase is SyncPhase.PENDING  # nothing written over the holder's

        await held.release()  # the holder died mid-sync: whoever looks next takes over
        await sync.wait_idle()
        state = await store.get_sync_state(guild.id)
    assert gateway.requested == 1
    assert state is not None and state.phase is SyncPhase.SYNCED
    assert state.members_stored == len(sandbox.members(guild.id))


async def test_a_sync_finished_by_the_lock_holder_is_not_repeated(
    make_sandbox, tmp_path: Path, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=30))
    guild = sandbox.managed_guilds()[0]
    sandbox.add_bot(guild.id)
    async with (
        open_store(database_url) as store,
        open_store(database_url) as other_process,
        aiohttp.ClientSession() as session,
    ):
        await store.save_link(a_link(guild.id))
        held = await other_process.try_lock_guild(guild.id)
        assert held is not None
        caplog.set_level(logging.INFO, logger="bot.sync_scheduler")
        waiting = MemberSync(store, SilentGateway(session, sandbox), locked_retry_wait=0.3)
        waiting.schedule(guild.id)

        async def refused() -> bool:
            return any(r.getMessage().startswith("sync.locked_elsewhere") for r in caplog.records)

        # The holder goes on only once the other has found the lock held (else that one may take it first).
        await eventually(refused, within=5)
        await held.release()
        holder_gateway = SilentGateway(session, sandbox)
        await MemberSync(other_process, holder_gateway, chunk_timeout=0.1).sync(guild.id)
        await waiting.wait_idle()
    assert holder_gateway.requested == 1  # and the waiting one sent none: it found the guild synced


async def test_a_second_process_waits_out_the_first_ones_whole_list_cooldown(
    make_sandbox, tmp_path: Path, database_url: str
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=40))
    guild = sandbox.managed_guilds()[0]
    sandbox.add_bot(guild.id)
    async with (
        open_store(database_url) as first_store,
        open_store(database_url) as second_store,
        aiohttp.ClientSession() as session,
    ):
        await first_store.save_link(a_link(guild.id))
        first = SilentGateway(session, sandbox)
        await MemberSync(first_store, first, cooldown=1.0, chunk_timeout=0.1).sync(guild.id)
        second = SilentGateway(session, sandbox)
        await MemberSync(second_store, second, cooldown=1.0, chunk_timeout=0.1).sync(guild.id)
    assert first.requested == second.requested == 1
    assert second.requested_at[0] - first.requested_at[0] >= 0.95


async def test_refused_members_intent_exits_naming_the_portal_switch(
    make_sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5, members_intent_enabled=False))
    code = await serve(settings_for(sandbox, tmp_path, port=free_port()))
    assert code == EXIT_DISCORD_REFUSED
    assert "Server Members Intent" in capsys.readouterr().err


async def test_refused_bot_token_exits_saying_so(
    make_sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    first = base64.urlsafe_b64encode(str(sandbox.client_id).encode()).decode().rstrip("=")
    forged = f"{first}.AAAAAA.{'B' * 27}"
    code = await serve(settings_for(sandbox, tmp_path, port=free_port(), env={"DISCORD_BOT_TOKEN": forged}))
    captured = capsys.readouterr()
    assert code == EXIT_DISCORD_REFUSED
    assert "DISCORD_BOT_TOKEN" in captured.err and forged not in captured.err + captured.out


async def test_a_fresh_session_after_invalid_session_resyncs_and_reconciles(
    make_sandbox, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=400, member_list_cooldown=0.2))
    guild = sandbox.managed_guilds()[0]
    async with started(settings_for(sandbox, tmp_path, port=free_port()), cooldown=0.2) as running:
        async with browser(sandbox, running) as b:
            assert (await b.link_guild(guild.id))[0] == 200
        await eventually(lambda: _phase_is(running, guild.id, SyncPhase.SYNCED), within=20)
        # A removal we never heard of (it happened in a gap RESUME could not cover).
        ghost = Member(5, "ghost", None, None, None, False, (), None)
        await running.store.upsert_members(guild.id, [ghost], datetime(2020, 1, 1, tzinfo=UTC))

        await sandbox.send_invalid_session(resumable=False)

        async def ghost_gone() -> bool:
            ids = {m.user_id for m in await running.store.list_members(guild.id, limit=1000)}
            return 5 not in ids and len(ids) == len(sandbox.members(guild.id))

        await eventually(ghost_gone, within=20)
        assert whole_list_requests(sandbox, guild.id) == 2


async def _phase_is(running: Any, guild_id: int, phase: SyncPhase) -> bool:
    sync = await running.store.get_sync_state(guild_id)
    return sync is not None and sync.phase is phase


class SessionsEndingGateway(SilentGateway):
    """REST pages as SilentGateway's, but every database session is ended (a restart) before the second."""

    def __init__(self, session: aiohttp.ClientSession, sandbox: Sandbox, postgres_url: str) -> None:
        super().__init__(session, sandbox)
        self._postgres_url = postgres_url
        self.pages = 0

    async def fetch_member_page(self, guild_id: int, after: int) -> Sequence[Mapping[str, Any]]:
        self.pages += 1
        if self.pages == 2:
            name = self._postgres_url.rsplit("/", 1)[1]
            admin = await asyncpg.connect(self._postgres_url)
            try:
                await admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = $1 AND pid <> pg_backend_pid()",
                    name,
                )
            finally:
                await admin.close()
            await asyncio.sleep(0.2)  # the terminated sessions' sockets close
        return await super().fetch_member_page(guild_id, after)


async def test_a_sync_whose_lock_is_lost_stops_writing_and_starts_again(
    make_sandbox, postgres_url: str
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=3_500))
    guild = sandbox.managed_guilds()[0]
    sandbox.add_bot(guild.id)
    metrics = Metrics()
    async with open_store(postgres_url) as store, aiohttp.ClientSession() as session:
        await store.save_link(a_link(guild.id))
        gateway = SessionsEndingGateway(session, sandbox, postgres_url)
        sync = MemberSync(
            store, gateway, cooldown=0.2, chunk_timeout=0.1, retry_first_wait=0.1, metrics=metrics
        )
        sync.schedule(guild.id)
        await sync.wait_idle()
        state = await store.get_sync_state(guild.id)
        assert await store.count_members(guild.id) == len(sandbox.members(guild.id))
    assert metrics.sync_failures.labels("GuildLockLostError")._value.get() == 1
    assert state is not None and state.phase is SyncPhase.SYNCED
