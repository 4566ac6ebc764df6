"""Several processes on one database: two `python main.py` (SHARD_COUNT=2, one shard each, each its own web
port) on one PostgreSQL and one `python -m sandbox`.

A link reaches the process of its guild's shard through whichever web server took the callback; a link
made while that process was down is caught up when it comes back; a process killed mid-sync leaves the
guild to its restart, which waits out the whole-list cooldown its predecessor started (it is in the
database) and ends with exactly the sandbox's members; processes starting together IDENTIFY in turn.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from tests.reliability.processes import (
    GuildlinkProcess,
    MemberComparison,
    PostgresDatabase,
    Processes,
    SandboxGuild,
    SandboxProcess,
    compare_members,
    eventually,
    free_port,
    redirect_uri,
)
from tests.reliability.report import ReliabilityReport

SHARDS = 2
# The sandbox's IDENTIFY window, shortened from Discord's 5 s, and the processes' pacer to match it.
IDENTIFY_WINDOW = 1.0
PACER = {"IDENTIFY_INTERVAL": "1.25"}


def shard_of(guild_id: int) -> int:
    return (guild_id >> 22) % SHARDS


def fleet_settings(shard_id: int) -> dict[str, str]:
    return {"SHARD_COUNT": str(SHARDS), "SHARD_IDS": str(shard_id), **PACER}


@dataclass
class Fleet:
    """The sandbox, the database and process `a` (shard 0) and `b` (shard 1), each on its own port."""

    processes: Processes
    sandbox: SandboxProcess
    db: PostgresDatabase
    ports: tuple[int, int]
    a: GuildlinkProcess
    b: GuildlinkProcess

    async def restart(self, shard_id: int) -> GuildlinkProcess:
        process = await self.processes.start_guildlink(
            self.sandbox,
            port=self.ports[shard_id],
            database_url=self.db.url,
            more_env=fleet_settings(shard_id),
        )
        if shard_id == 0:
            self.a = process
        else:
            self.b = process
        return process

    def guilds_of_shard(self, shard_id: int) -> list[SandboxGuild]:
        return [guild for guild in self.sandbox.guilds if shard_of(guild.id) == shard_id]

    async def synced_after(self, guild_id: int, since: datetime, *, within: float) -> None:
        async def done() -> bool:
            state = await self.db.sync_state(guild_id)
            return bool(state and state.phase == "synced" and state.synced_at and state.synced_at >= since)

        await eventually(done, within=within, what=f"guild {guild_id} synced after {since:%H:%M:%S}")

    async def compare(self, guild_id: int) -> MemberComparison:
        return compare_members(await self.sandbox.members(guild_id), await self.db.members(guild_id))


async def start_fleet(
    processes: Processes, postgres_url: str, *, guilds: int, members: int, together: bool = False
) -> Fleet:
    ports = (free_port(), free_port())
    sandbox = await processes.start_sandbox(
        guilds=guilds,
        members=members,
        redirect_uris=[redirect_uri(port) for port in ports],
        options=["--identify-interval", str(IDENTIFY_WINDOW), "--max-concurrency", "1"],
    )

    async def start(shard_id: int) -> GuildlinkProcess:
        return await processes.start_guildlink(
            sandbox, port=ports[shard_id], database_url=postgres_url, more_env=fleet_settings(shard_id)
        )

    if together:
        a, b = await asyncio.gather(start(0), start(1))
    else:
        a = await start(0)
        b = await start(1)
    return Fleet(processes, sandbox, PostgresDatabase(postgres_url), ports, a, b)


def record(report: ReliabilityReport, section: str, comparison: MemberComparison) -> None:
    report.count(section, "members compared", comparison.expected)
    report.count(section, "lost", comparison.lost)
    report.count(section, "stale (stored, no longer a member)", comparison.stale)
    report.count(section, "duplicated", comparison.duplicated)


def synced_by(process: GuildlinkProcess, guild_id: int) -> bool:
    return f"sync.done guild={guild_id} " in process.log_text()


@pytest.mark.timeout(300)
async def test_a_link_reaches_its_shards_process_and_one_made_while_it_was_down_is_caught_up(
    processes: Processes, report: ReliabilityReport, postgres_url: str
) -> None:
    section = "Fleet: a link through process A for a guild of B's shard; B killed, linked again, restarted"
    fleet = await start_fleet(processes, postgres_url, guilds=8, members=3_000)
    first, second = fleet.guilds_of_shard(1)[:2]

    async with processes.browser(fleet.a, fleet.sandbox) as browser:
        result = await browser.link(first.id)
    assert result.status == 200, result.page[:500]
    await fleet.synced_after(first.id, datetime.min.replace(tzinfo=UTC), within=60)
    assert synced_by(fleet.b, first.id) and not synced_by(fleet.a, first.id)
    handoff = (await fleet.b.readyz())["handoff"]
    assert handoff["mode"] == "notify" and handoff["notices_heard"] == 1
    report.fact(section, "NOTIFY lag, A's commit to B hearing of it", f"{handoff['last_notify_lag_ms']} ms")
    comparison = await fleet.compare(first.id)
    record(report, section, comparison)
    assert comparison.exact, comparison

    fleet.b.kill()
    report.count(section, "kills", 1)
    async with processes.browser(fleet.a, fleet.sandbox) as browser:
        result = await browser.link(second.id)
    assert result.status == 200, result.page[:500]  # A's web server does not need B
    await asyncio.sleep(2)
    state = await fleet.db.sync_state(second.id)
    assert state is not None and state.phase == "pending" and not synced_by(fleet.a, second.id)

    restarted_at = datetime.now(UTC)
    b = await fleet.restart(1)
    await fleet.synced_after(second.id, restarted_at, within=60)
    report.fact(
        section,
        "restarted B: start to the missed link synced",
        f"{(datetime.now(UTC) - restarted_at).total_seconds():.1f} s",
    )
    assert synced_by(b, second.id)
    comparison = await fleet.compare(second.id)
    record(report, section, comparison)
    assert comparison.exact, comparison


@pytest.mark.timeout(300)
async def test_a_process_killed_mid_sync_leaves_the_guild_to_its_restart_which_ends_exact(
    processes: Processes, report: ReliabilityReport, postgres_url: str
) -> None:
    section = "Fleet: process A killed mid-sync of a 100,000-member guild of its shard"
    fleet = await start_fleet(processes, postgres_url, guilds=3, members=100_000)
    [guild, *_] = fleet.guilds_of_shard(0)
    async with processes.browser(fleet.b, fleet.sandbox) as browser:  # B's web server, A's shard
        result = await browser.link(guild.id)
    assert result.status == 200, result.page[:500]

    async def partly_stored() -> int:
        state = await fleet.db.sync_state(guild.id)
        if state is None:
            return 0
        if state.phase == "synced":
            raise AssertionError(f"the sync finished before it could be interrupted: {state}")
        return state.members_stored if state.members_stored >= guild.member_count // 4 else 0

    stored_at_kill = await eventually(partly_stored, within=60, interval=0.02, what="a quarter stored")
    fleet.a.kill()
    killed_at = datetime.now(UTC)
    report.count(section, "kills", 1)
    report.fact(section, "members stored when killed", f"{stored_at_kill:,}")
    await asyncio.sleep(1)
    a = await fleet.restart(0)
    await fleet.synced_after(guild.id, killed_at, within=120)
    report.fact(
        section,
        "kill to synced again (restart, then the cooldown A started, in the database)",
        f"{(datetime.now(UTC) - killed_at).total_seconds():.1f} s",
    )
    assert synced_by(a, guild.id) and not synced_by(fleet.b, guild.id)
    rate_limited = fleet.sandbox.log_text().count("gateway.member_list_rate_limited")
    report.count(
        section, "RATE_LIMITED answers (goal 0: the restart waits out the stored cooldown)", rate_limited
    )
    assert rate_limited == 0
    comparison = await fleet.compare(guild.id)
    record(report, section, comparison)
    stored = await fleet.db.members(guild.id)
    assert (stored.rows, stored.distinct) == (comparison.expected, comparison.expected)
    assert comparison.exact, comparison


@pytest.mark.timeout(180)
async def test_processes_starting_together_identify_in_turn(
    processes: Processes, report: ReliabilityReport, postgres_url: str
) -> None:
    section = "Fleet: two processes starting together, max_concurrency 1, IDENTIFY window 1 s"
    fleet = await start_fleet(processes, postgres_url, guilds=4, members=10, together=True)
    log = fleet.sandbox.log_text()
    identifies = len(re.findall(r"gateway\.identify session=", log))
    refused = log.count("gateway.identify_too_soon")
    report.count(section, "IDENTIFYs accepted", identifies)
    report.count(section, "op 9 answers (goal 0)", refused)
    assert refused == 0 and identifies == SHARDS
    for process in (fleet.a, fleet.b):
        body = await process.readyz()
        assert body["status"] == "ready" and [s["state"] for s in body["shards"]] == ["ready"]
    waited = sum(process.log_text().count("bot.identify_wait") for process in (fleet.a, fleet.b))
    report.count(section, "IDENTIFYs that waited for the other process's slot", waited)
    assert waited == 1
