"""The hand-off across processes: two FleetLinkers on one PostgreSQL, as two processes' would be."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
import pytest

from fleet_handoff import FleetLinker, LinkNotice, Shards
from metrics import Metrics
from store import Link, PostgresStore, SyncPhase, SyncState, open_store
from store.postgres_locks import LISTEN_APPLICATION_NAME
from supervision import Supervisor
from tests.harness import eventually
from tests.store.records import a_link

SHARD_0_GUILD = (2 << 22) | 1  # (id >> 22) % 2 == 0
SHARD_1_GUILD = (3 << 22) | 1
ANOTHER_SHARD_1_GUILD = (5 << 22) | 7


@dataclass
class RecordingLinks:
    """A process's receiving end (the bot's LinkedGuilds), recording what it is told."""

    linked: list[int] = field(default_factory=list)
    unlinked: list[int] = field(default_factory=list)
    abandoned: list[int] = field(default_factory=list)
    syncing: set[int] = field(default_factory=set)

    def __contains__(self, guild_id: object) -> bool:
        return guild_id in self.linked

    def is_syncing(self, guild_id: int) -> bool:
        return guild_id in self.syncing

    async def guild_linked(self, link: Link) -> None:
        self.linked.append(link.guild_id)

    async def guild_unlinked(self, guild_id: int) -> None:
        self.unlinked.append(guild_id)

    async def guild_abandoned(self, guild_id: int) -> bool:
        self.abandoned.append(guild_id)
        return True


@dataclass
class Process:
    """One process's side of it: its store, its receiving end, its hand-off."""

    store: PostgresStore
    local: RecordingLinks
    linker: FleetLinker
    metrics: Metrics


@contextlib.asynccontextmanager
async def process(postgres_url: str, shard_id: int) -> AsyncIterator[Process]:
    async with open_store(postgres_url) as store:
        assert isinstance(store, PostgresStore)
        local, metrics = RecordingLinks(), Metrics()
        linker = FleetLinker(store, store, local, Shards(2, (shard_id,)), metrics)
        async with linker.running(postgres_url):
            await eventually(_listening(linker), within=10)
            yield Process(store, local, linker, metrics)


def _listening(linker: FleetLinker) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return linker.handoff_status().listening

    return check


async def test_a_link_to_another_processs_shard_reaches_that_process_by_notify(postgres_url: str) -> None:
    async with process(postgres_url, 0) as a, process(postgres_url, 1) as b:
        link = await a.store.save_link(a_link(SHARD_1_GUILD))
        await a.linker.guild_linked(link)

        async def heard() -> list[int]:
            return b.local.linked

        # Once by the notice; the catch-up that follows the connect may hand the known link over again (it
        # restarts a sync another process left mid-way), which guild_linked takes as a no-op.
        assert set(await eventually(heard, within=5)) == {SHARD_1_GUILD}
        assert a.local.linked == []
        status = b.linker.handoff_status()
        assert status.mode == "notify" and status.notices_heard == 1 and status.caught_up == 0
        assert status.last_notify_lag_ms is not None and 0 <= status.last_notify_lag_ms < 1000
        assert b.metrics.notify_lag._sum.get() > 0  # observed in the histogram /metrics serves


async def test_a_link_to_this_processs_shard_is_a_direct_call(postgres_url: str) -> None:
    async with process(postgres_url, 0) as a, process(postgres_url, 1) as b:
        link = await a.store.save_link(a_link(SHARD_0_GUILD))
        await a.linker.guild_linked(link)
        assert a.local.linked == [SHARD_0_GUILD]
        await b.store.notify("guildlink_links", "not a notice")  # ignored, not fatal
        await b.linker.catch_up()
        assert b.local.linked == [] and a.linker.handoff_status().notices_heard == 0


async def test_a_link_missed_while_the_owner_was_not_listening_is_caught_up_when_it_listens_again(
    postgres_url: str,
) -> None:
    async with process(postgres_url, 0) as a, process(postgres_url, 1) as b:
        admin = await asyncpg.connect(postgres_url)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1"
                " AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())",
                LISTEN_APPLICATION_NAME,
            )
        finally:
            await admin.close()

        async def deaf() -> bool:
            return not b.linker.handoff_status().listening

        await eventually(deaf, within=5)
        link = await a.store.save_link(a_link(SHARD_1_GUILD))
        await a.linker.guild_linked(link)  # nobody of shard 1 listens: the notice is lost

        await eventually(_listening(b.linker), within=10)

        async def caught_up() -> list[int]:
            return b.local.linked

        assert await eventually(caught_up, within=5) == [SHARD_1_GUILD]
        assert b.linker.handoff_status().caught_up == 1
        assert b.metrics.caught_up._value.get() == 1


async def test_the_catch_up_skips_finished_links_and_syncs_under_way(postgres_url: str) -> None:
    synced_guild = (7 << 22) | 3
    async with open_store(postgres_url) as store:
        assert isinstance(store, PostgresStore)
        local = RecordingLinks()
        # Not running: no listener, so no catch-up of its own at connect time.
        linker = FleetLinker(store, store, local, Shards(2, (1,)), Metrics())
        for guild_id in (SHARD_1_GUILD, ANOTHER_SHARD_1_GUILD, synced_guild, SHARD_0_GUILD):
            await store.save_link(a_link(guild_id))
        await store.save_sync_state(SyncState(synced_guild, SyncPhase.SYNCED, synced_at=datetime.now(UTC)))
        local.linked.append(ANOTHER_SHARD_1_GUILD)  # heard of, and its sync runs here
        local.syncing.add(ANOTHER_SHARD_1_GUILD)
        await linker.catch_up()
    assert local.linked == [ANOTHER_SHARD_1_GUILD, SHARD_1_GUILD]
    assert linker.handoff_status().caught_up == 1 and not linker.handoff_status().listening


async def test_an_unlink_through_another_process_deactivates_tells_the_owner_and_leaves(
    postgres_url: str,
) -> None:
    async with process(postgres_url, 0) as a, process(postgres_url, 1) as b:
        await a.store.save_link(a_link(SHARD_1_GUILD))
        await a.linker.guild_unlinked(SHARD_1_GUILD)
        link = await a.store.get_link(SHARD_1_GUILD)
        assert link is not None and not link.active
        assert a.local.abandoned == [SHARD_1_GUILD]  # left through REST from here, owner up or not

        async def told() -> list[int]:
            return b.local.unlinked

        assert await eventually(told, within=5) == [SHARD_1_GUILD]


async def test_a_guild_of_another_shard_is_left_only_without_an_active_link(postgres_url: str) -> None:
    async with process(postgres_url, 0) as a:
        await a.store.save_link(a_link(SHARD_1_GUILD))
        assert await a.linker.guild_abandoned(SHARD_1_GUILD)
        assert a.local.abandoned == []  # the stored link keeps the bot there
        assert await a.linker.guild_abandoned(ANOTHER_SHARD_1_GUILD)
        assert a.local.abandoned == [ANOTHER_SHARD_1_GUILD]


@dataclass
class BrokenOnce(RecordingLinks):
    """A receiving end with a bug that the first notice it takes sets off (a catch-up's calls are not notices)."""

    crashed: bool = False
    by_notice: list[int] = field(default_factory=list)

    async def guild_linked(self, link: Link) -> None:
        task = asyncio.current_task()
        if task is not None and task.get_name() == "handoff-notices":
            if not self.crashed:
                self.crashed = True
                raise RuntimeError("a bug in the receiving end")
            self.by_notice.append(link.guild_id)
        await super().guild_linked(link)


async def test_a_notice_that_crashes_the_owner_is_logged_counted_and_the_next_one_taken(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with process(postgres_url, 0) as a, open_store(postgres_url) as store:
        assert isinstance(store, PostgresStore)
        local, metrics = BrokenOnce(), Metrics()
        linker = FleetLinker(
            store, store, local, Shards(2, (1,)), metrics, Supervisor(metrics, first_wait=0.01)
        )
        async with linker.running(postgres_url):
            await eventually(_listening(linker), within=10)
            for guild_id in (SHARD_1_GUILD, ANOTHER_SHARD_1_GUILD):
                await a.linker.guild_linked(await a.store.save_link(a_link(guild_id)))

            async def taken() -> list[int]:
                return local.by_notice

            # The first notice crashed the task; the restarted one took the next.
            assert await eventually(taken, within=10) == [ANOTHER_SHARD_1_GUILD]
            # The first one is not lost either: the catch-up (every few minutes) hands it over.
            await linker.catch_up()
            assert SHARD_1_GUILD in local.linked
    assert metrics.registry.get_sample_value("guildlink_task_crashes_total", {"task": "handoff-notices"}) == 1
    [crash] = [r for r in caplog.records if r.getMessage().startswith("task.crashed task=handoff-notices")]
    assert crash.exc_info is not None and crash.exc_info[0] is RuntimeError


def test_a_notice_reads_back_and_anything_else_is_not_one() -> None:
    notice = LinkNotice("linked", 2**63 - 1, 1_700_000_000.25)
    assert LinkNotice.decode(notice.encode()) == notice
    for payload in ("", "{}", '{"event": "dropped", "guild_id": "1", "at": 1}', "[1]", '{"event": "linked"}'):
        assert LinkNotice.decode(payload) is None
