"""Member events: a storm lands whole and in order, a refused write is retried, an event the database refuses
is set aside, a sync never overwrites them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from bot.member_events import MemberEventWriter
from metrics import Metrics
from sandbox import Sandbox, SandboxOptions
from store import EventType, MemberChange, StoreUnavailableError, open_store
from supervision import Supervisor
from tests.harness import eventually, world
from tests.store.records import a_link


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


def joined(guild_id: int, user_id: int, nick: str) -> dict[str, Any]:
    """A GUILD_MEMBER_ADD payload."""
    user = {"id": str(user_id), "username": f"user{user_id}", "global_name": None, "avatar": None}
    return {"guild_id": str(guild_id), "user": user, "nick": nick, "roles": [], "joined_at": None}


async def test_an_event_the_database_refuses_is_set_aside_and_the_rest_of_its_batch_stored(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    guild_id = 1
    metrics = Metrics()
    resynced: list[int] = []
    async with open_store(database_url) as store:
        await store.save_link(a_link(guild_id))
        writer = MemberEventWriter(
            store,
            is_linked=lambda guild_id: True,
            supervisor=Supervisor(metrics),
            metrics=metrics,
            resync=resynced.append,
        )
        # Queued before the writer runs: one batch of ten, the seventh of which no engine can encode (a lone
        # surrogate; PostgreSQL refuses a NUL character too, see the test through the bot below).
        for user_id in range(1, 11):
            writer.member_joined(
                joined(guild_id, user_id, "lone \ud800" if user_id == 7 else f"nick {user_id}")
            )
        writer.start()
        try:
            await writer.wait_written()
        finally:
            await writer.close()
        members = {m.user_id: m.nick for m in await store.list_members(guild_id)}
        feed = await store.list_events(after=0, limit=100)
    expected = [user_id for user_id in range(1, 11) if user_id != 7]
    assert members == {user_id: f"nick {user_id}" for user_id in expected}
    assert [int(e.data["member"]["id"]) for e in feed if e.type is EventType.MEMBER_JOINED] == expected
    assert writer.stored == 9 and writer.refused == 1 and resynced == [guild_id]
    refused = metrics.registry.get_sample_value(
        "guildlink_member_events_refused_total", {"error": "UnicodeEncodeError"}
    )
    assert refused == 1
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("members.event_refused")]
    assert "guild=1 user=7 kind=joined error=UnicodeEncodeError" in line and "lone" not in line


async def test_an_event_postgresql_refuses_is_set_aside_the_next_change_stored_and_the_guild_resynced(
    make_sandbox, tmp_path: Path, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=20, member_list_cooldown=0.2))
    async with world(sandbox, tmp_path, cooldown=0.2, env={"DATABASE_URL": postgres_url}) as w:
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id)
        store, writer = w.running.store, w.running.bot.member_events
        first_sync = await store.get_sync_state(guild.id)
        assert first_sync is not None and first_sync.synced_at is not None
        after = (await store.list_events(after=0, limit=1000))[-1].id
        humans = [int(m["user"]["id"]) for m in sandbox.members(guild.id) if not m["user"].get("bot")]
        nul, bad, other = humans[:3]
        # PostgreSQL's text cannot hold NUL: it is stored as U+FFFD, as on SQLite, and the resync below reads
        # this member again (a NUL nick in a chunk once failed the guild's whole sync).
        sandbox.update_member(guild.id, nul, nick="nul\x00nick")
        # A role id past bigint's range: a DataError for what the event holds, not a database that is down.
        sandbox.update_member(guild.id, bad, roles=[2**64])
        sandbox.update_member(guild.id, other, nick="the next change")

        async def written() -> bool:
            return writer.stored + writer.refused >= 3

        await eventually(written, within=10)
        assert (writer.refused, writer.stored) == (1, 2)
        # Discord's member is fine again; the resync may read it before this (then PostgreSQL refuses that
        # sync's chunk, and its retry reads it fixed) or after.
        sandbox.update_member(guild.id, bad, roles=[], nick="fixed")

        async def resynced() -> bool:
            sync = await store.get_sync_state(guild.id)
            assert first_sync.synced_at is not None
            return sync is not None and sync.synced_at is not None and sync.synced_at > first_sync.synced_at

        await eventually(resynced, within=20)
        members = {m.user_id: m.nick for m in await store.list_members(guild.id, limit=100)}
        assert members[nul] == "nul\ufffdnick"
        assert members[other] == "the next change" and members[bad] == "fixed"
        feed = await store.list_events(after=after, limit=1000)
        updates = [e.data["member"]["nick"] for e in feed if e.type is EventType.MEMBER_UPDATED]
        assert updates[:3] == ["nul\ufffdnick", "the next change", "fixed"]
        refused = {
            sample.labels["error"]: sample.value
            for family in w.running.bot.metrics.registry.collect()
            if family.name == "guildlink_member_events_refused"
            for sample in family.samples
            if sample.name.endswith("_total")
        }
        assert len(refused) == 1 and list(refused.values()) == [1]
        assert any(r.getMessage().startswith(f"links.resync guild={guild.id}") for r in caplog.records)
        assert not any("nul" in r.getMessage() for r in caplog.records)


async def test_the_bots_own_member_update_still_reaches_discord_py(make_sandbox, tmp_path: Path) -> None:
    # discord.py is handed only the bot's own GUILD_MEMBER_UPDATE (guild.me's roles decide its permissions).
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=10))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id)
        bot, store = w.running.bot, w.running.store
        assert bot.user is not None
        other = next(int(m["user"]["id"]) for m in sandbox.members(guild.id) if not m["user"].get("bot"))
        sandbox.update_member(guild.id, other, nick="someone else")
        sandbox.update_member(guild.id, bot.user.id, nick="renamed bot")

        async def seen_by_discord_py() -> bool:
            cached = bot.get_guild(guild.id)
            return cached is not None and cached.me is not None and cached.me.nick == "renamed bot"

        await eventually(seen_by_discord_py, within=10)
        await eventually(lambda: _at_least(bot.member_events.stored, 2), within=10)
        members = {m.user_id: m.nick for m in await store.list_members(guild.id, limit=100)}
        assert members[other] == "someone else" and members[bot.user.id] == "renamed bot"
