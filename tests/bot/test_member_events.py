"""Member events: a storm lands whole and in order, a refused write is retried, a sync never overwrites them."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import Sandbox, SandboxOptions
from store import EventType, MemberChange, StoreUnavailableError
from tests.harness import eventually, world


async def test_a_storm_lands_in_order_in_the_store_and_the_feed(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=2_000))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id)
        store, writer = w.running.store, w.running.bot.member_events
        after = (await store.list_events(after=0, limit=10_000))[-1].id
        user_ids = [int(m["user"]["id"]) for m in sandbox.members(guild.id)]
        for index, user_id in enumerate(user_ids):
            sandbox.update_member(guild.id, user_id, nick=f"first {index}")
        for index, user_id in enumerate(user_ids[:500]):
            sandbox.update_member(guild.id, user_id, nick=f"second {index}")
        for user_id in user_ids[-200:]:
            sandbox.remove_member(guild.id, user_id)
        expected = len(user_ids) + 500 + 200
        await eventually(lambda: _at_least(writer.stored, expected), within=30)

        members = {m.user_id: m.nick for m in await store.list_members(guild.id, limit=10_000)}
        assert set(members) == set(user_ids[:-200])
        assert all(members[u] == f"second {i}" for i, u in enumerate(user_ids[:500]))
        assert all(members[u] == f"first {i}" for i, u in list(enumerate(user_ids))[500:-200])
        feed = await store.list_events(after=after, limit=10_000)
        assert [e.type for e in feed] == (
            [EventType.MEMBER_UPDATED] * (len(user_ids) + 500) + [EventType.MEMBER_LEFT] * 200
        )
        assert [e.data["member"]["nick"] for e in feed[: len(user_ids)]] == [
            f"first {i}" for i in range(len(user_ids))
        ]
        link = await store.get_link(guild.id)
        assert link is not None and link.member_count == len(user_ids) - 200


async def _at_least(value: int, expected: int) -> bool:
    return value >= expected


async def test_a_refused_write_is_retried_and_nothing_is_lost(
    make_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bot.member_events.RETRY_WAITS", (0.05,))
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=20))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id)
        store = w.running.store
        real = store.apply_member_changes
        refusals: list[int] = []

        async def flaky(changes: list[MemberChange]) -> int:
            if len(refusals) < 3:
                refusals.append(len(changes))
                raise StoreUnavailableError("the database is locked by another program")
            return await real(changes)

        monkeypatch.setattr(store, "apply_member_changes", flaky)
        joined = [sandbox.add_member(guild.id, username=f"raider{i}") for i in range(30)]
        await eventually(lambda: _at_least(w.running.bot.member_events.stored, 30), within=10)
        stored = {m.user_id for m in await store.list_members(guild.id)}
        assert len(refusals) == 3 and set(joined) <= stored


async def test_events_during_a_full_sync_are_kept(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=60_000))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        store = w.running.store
        user_ids = [int(m["user"]["id"]) for m in sandbox.members(guild.id)]
        changed, leaver = user_ids[-1], user_ids[-2]  # the last chunks: still to come when the events land
        status, _ = await w.browser.link_guild(guild.id)
        assert status == 200

        async def syncing() -> bool:
            sync = await store.get_sync_state(guild.id)
            return sync is not None and sync.phase.value == "syncing" and sync.members_stored > 0

        await eventually(syncing, within=20, interval=0.01)
        sandbox.update_member(guild.id, changed, nick="changed during the sync")
        sandbox.remove_member(guild.id, leaver)
        await w.running.bot.member_sync.wait_idle()
        await w.running.bot.member_events.wait_written()
        members = {m.user_id: m for m in await store.list_members(guild.id, limit=100_000)}
        assert leaver not in members and members[changed].nick == "changed during the sync"
        # The sandbox's members now: the bot joined when it was added, the leaver is gone.
        assert set(members) == {int(m["user"]["id"]) for m in sandbox.members(guild.id)}
