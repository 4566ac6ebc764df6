"""The read valve: a database that falls behind pauses gateway reading, never for longer than READ_PAUSE_MAX,
and a reconnect's new socket is paused too; what a capped pause drops is read again."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from bot.discord_internals import socket_open, socket_reading, websocket_of_shard
from sandbox import Sandbox, SandboxOptions
from store import Member, Store, SyncPhase
from tests.harness import eventually, world


class Stall:
    """Holds every call of one store method until `release()`: a database that has stopped answering."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, store: Store, method: str) -> None:
        self._released = asyncio.Event()
        self.waiting = 0
        real: Callable[..., Awaitable[Any]] = getattr(store, method)

        async def stalled(*args: Any, **kwargs: Any) -> Any:
            self.waiting += 1
            await self._released.wait()
            return await real(*args, **kwargs)

        monkeypatch.setattr(store, method, stalled)

    def release(self) -> None:
        self._released.set()


def gateway_ops(sandbox: Sandbox) -> list[int]:
    return [command.op for command in sandbox.gateway_commands]


async def _true(value: object) -> bool:
    return bool(value)


async def all_members(store: Store, guild_id: int) -> dict[int, Member]:
    found: dict[int, Member] = {}
    while page := await store.list_members(guild_id, after=max(found, default=0), limit=1000):
        found.update((m.user_id, m) for m in page)
    return found


async def test_a_pause_that_reaches_its_cap_gives_up_the_sync_and_reading_goes_on(
    make_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=20_000, member_list_cooldown=0.2))
    guild = sandbox.managed_guilds()[0]
    env = {"MEMBER_BUFFER_MAX": "2000", "READ_PAUSE_MAX": "1"}
    async with world(sandbox, tmp_path, cooldown=0.2, env=env) as w:
        store, bot = w.running.store, w.running.bot
        stall = Stall(monkeypatch, store, "upsert_members")
        status, _ = await w.browser.link_guild(guild.id)
        assert status == 200

        capped = bot.metrics.read_pauses.labels("capped")
        await eventually(lambda: _true(capped._value.get()), within=30)
        # The database still answers nothing, yet the sync's chunks are dropped (all but the one it is
        # writing) and the gateway is read again: a member who joins now is stored.
        assert stall.waiting >= 1 and not bot.read_valve.paused and bot.read_valve.buffered <= 1_000
        assert socket_reading(websocket_of_shard(bot, 0))
        joined = sandbox.add_member(guild.id, username="joined-after-the-pause")
        await eventually(lambda: _true(bot.member_events.stored), within=10)
        assert joined in await all_members(store, guild.id)
        # One session throughout: discord.py never took the pause for a dead connection.
        assert gateway_ops(sandbox).count(2) == 1 and 6 not in gateway_ops(sandbox)
        assert bot.read_valve.peak < 10_000  # most of the guild waited at Discord, not here

        stall.release()  # the database is back: the given-up sync says so, and its retry reads the guild whole

        async def failed() -> str:
            state = await store.get_sync_state(guild.id)
            return (state.error or "") if state and state.phase is SyncPhase.FAILED else ""

        assert "fell behind" in await eventually(failed, within=10, interval=0.01)
        await bot.member_sync.wait_idle()
        stored = await all_members(store, guild.id)
    assert set(stored) == {int(m["user"]["id"]) for m in sandbox.members(guild.id)}
    assert bot.metrics.sync_failures.labels("SyncAbandonedError")._value.get() == 1


async def test_a_pause_is_applied_again_to_the_socket_of_a_resumed_session(
    make_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=20_000, member_list_cooldown=0.2))
    guild = sandbox.managed_guilds()[0]
    env = {"MEMBER_BUFFER_MAX": "2000", "READ_PAUSE_MAX": "30"}
    async with world(sandbox, tmp_path, cooldown=0.2, env=env) as w:
        store, bot = w.running.store, w.running.bot
        stall = Stall(monkeypatch, store, "upsert_members")
        status, _ = await w.browser.link_guild(guild.id)
        assert status == 200
        first = websocket_of_shard(bot, 0)
        await eventually(lambda: _true(bot.read_valve.paused and not socket_reading(first)), within=20)
        assert first is not None

        # What discord.py does itself when nothing was read for its heartbeat timeout: close with 4000, RESUME.
        await first.close(4000)

        async def resumed_and_paused() -> bool:
            ws = websocket_of_shard(bot, 0)
            return ws is not first and socket_open(ws) and not socket_reading(ws)

        await eventually(resumed_and_paused, within=30)
        assert 6 in gateway_ops(sandbox)
        assert bot.read_valve.paused and bot.read_valve.peak < 10_000  # the rest waits at Discord

        stall.release()
        await bot.member_sync.wait_idle()
        stored = await all_members(store, guild.id)
        assert socket_reading(websocket_of_shard(bot, 0))
    assert set(stored) == {int(m["user"]["id"]) for m in sandbox.members(guild.id)}
    assert bot.metrics.read_pauses.labels("capped")._value.get() == 0


async def test_member_events_dropped_at_the_pause_cap_are_read_again_by_a_resync(
    make_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=3_000, member_list_cooldown=0.2))
    guild = sandbox.managed_guilds()[0]
    env = {"MEMBER_BUFFER_MAX": "1000", "READ_PAUSE_MAX": "1"}
    async with world(sandbox, tmp_path, cooldown=0.2, env=env) as w:
        store, bot = w.running.store, w.running.bot
        await w.link_and_sync(guild.id)
        stall = Stall(monkeypatch, store, "apply_member_changes")
        user_ids = [int(m["user"]["id"]) for m in sandbox.members(guild.id)]
        renamed = user_ids[:2_500]
        for index, user_id in enumerate(renamed):
            sandbox.update_member(guild.id, user_id, nick=f"renamed {index}")
        left = user_ids[-1]
        sandbox.remove_member(guild.id, left)

        capped = bot.metrics.read_pauses.labels("capped")
        await eventually(lambda: _true(capped._value.get()), within=30)
        # The dropped events' guild is read again while the events' writes are still held.
        await eventually(lambda: _true(bot.metrics.syncs.labels("synced")._value.get() >= 2), within=30)
        assert stall.waiting >= 1
        stall.release()
        await bot.member_events.wait_written()
        await bot.member_sync.wait_idle()
        stored = await all_members(store, guild.id)
    assert set(stored) == {int(m["user"]["id"]) for m in sandbox.members(guild.id)} and left not in stored
    assert [stored[u].nick for u in renamed] == [f"renamed {i}" for i in range(len(renamed))]
