"""kill -9 at three points of guildlink's life; after each restart nothing is lost or doubled and every
sync finishes, with the members stored equal to the sandbox's.

Each test runs `python -m sandbox` and `python main.py` as processes and reads guildlink's SQLite file from
outside. The sandbox outlives guildlink's restarts, as Discord does: its 30 s cooldown on whole-member-list
requests still holds for the restarted process.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.processes import (
    Database,
    GuildlinkProcess,
    MemberComparison,
    MemberRows,
    Processes,
    SandboxProcess,
    StoredMember,
    compare_members,
    free_port,
    redirect_uri,
    until,
)
from tests.reliability.report import ReliabilityReport

SYNC_DEADLINE = 120.0


def record(report: ReliabilityReport, section: str, comparison: MemberComparison) -> None:
    report.count(section, "members compared", comparison.expected)
    report.count(section, "lost", comparison.lost)
    report.count(section, "stale (stored, no longer a member)", comparison.stale)
    report.count(section, "duplicated", comparison.duplicated)
    report.count(section, "fields differing", comparison.mismatched)


async def synced_after(
    db: Database, guild_id: int, since: datetime, *, within: float = SYNC_DEADLINE
) -> None:
    """Wait until the guild's sync state is `synced` by a sync that finished after `since`."""

    def done() -> bool:
        state = db.sync_state(guild_id)
        return bool(
            state is not None
            and state.phase == "synced"
            and state.synced_at is not None
            and state.synced_at >= since
        )

    await until(done, within=within, interval=0.2, what=f"guild {guild_id} synced after {since:%H:%M:%S}")


async def start(
    processes: Processes, *, guilds: int, members: int
) -> tuple[SandboxProcess, GuildlinkProcess, Database, int]:
    port = free_port()
    sandbox = await processes.start_sandbox(
        guilds=guilds, members=members, redirect_uris=[redirect_uri(port)]
    )
    database = Database(Path(processes.directory) / "data" / "guildlink.db")
    database.path.parent.mkdir()
    guildlink = await processes.start_guildlink(sandbox, port=port, database=database.path)
    return sandbox, guildlink, database, port


async def test_a_link_killed_right_after_its_success_page_is_kept_and_synced(
    processes: Processes, report: ReliabilityReport
) -> None:
    section = "Crash: kill -9 right after the success page"
    sandbox, guildlink, db, port = await start(processes, guilds=2, members=500)
    guild = sandbox.guilds[0]
    async with processes.browser(guildlink, sandbox) as browser:
        result = await browser.link(guild.id)
    guildlink.kill()
    report.count(section, "flows", 1)
    report.count(section, "restarts", 1)
    assert result.status == 200, result.page[:500]

    restarted_at = datetime.now(UTC)
    guildlink = await processes.start_guildlink(sandbox, port=port, database=db.path)
    links = db.links()
    report.fact(section, "link there after the restart", "yes" if links.get(guild.id) else "no")
    report.count(section, "lost", 0 if links.get(guild.id) else 1)  # a lost link is lost data too
    assert links == {guild.id: True}, "the link committed before its success page is gone"
    await synced_after(db, guild.id, restarted_at)

    comparison = compare_members(await sandbox.members(guild.id), db.members(guild.id))
    record(report, section, comparison)
    assert comparison.exact, comparison
    assert db.link_rows() == (1, 1)


@pytest.mark.timeout(300)
async def test_b_a_sync_killed_midway_finishes_after_restart_without_duplicates(
    processes: Processes, report: ReliabilityReport
) -> None:
    section = "Crash: kill -9 mid-sync of a 200,000-member guild"
    sandbox, guildlink, db, port = await start(processes, guilds=1, members=200_000)
    guild = sandbox.guilds[0]
    async with processes.browser(guildlink, sandbox) as browser:
        result = await browser.link(guild.id)
    report.count(section, "flows", 1)
    assert result.status == 200, result.page[:500]

    # Killed once a quarter is stored: far enough in that the restart must deal with a partial list.
    def partly_stored() -> int:
        state = db.sync_state(guild.id)
        if state is None:
            return 0
        if state.phase == "synced" or state.members_stored >= guild.member_count:
            raise AssertionError(f"the sync finished before it could be interrupted: {state}")
        return state.members_stored if state.members_stored >= guild.member_count // 4 else 0

    stored_at_kill = await until(
        partly_stored, within=90, interval=0.02, what="a quarter of the members stored"
    )
    guildlink.kill()
    report.count(section, "restarts", 1)
    report.fact(section, "members stored when killed", f"{stored_at_kill:,}")

    restarted_at = datetime.now(UTC)
    guildlink = await processes.start_guildlink(sandbox, port=port, database=db.path)
    await synced_after(db, guild.id, restarted_at, within=180)
    report.fact(
        section, "sync after restart took", f"{(datetime.now(UTC) - restarted_at).total_seconds():.1f} s"
    )

    expected = await sandbox.members(guild.id)
    stored = db.members(guild.id)
    comparison = compare_members(expected, stored)
    record(report, section, comparison)
    assert (stored.rows, stored.distinct) == (len(expected), len(expected))
    assert comparison.exact, comparison


@pytest.mark.timeout(300)
async def test_c_events_missed_while_killed_are_reconciled_by_the_restarts_resync(
    processes: Processes, report: ReliabilityReport
) -> None:
    section = "Crash: kill -9 during a burst of member events"
    sandbox, guildlink, db, port = await start(processes, guilds=1, members=2_000)
    guild = sandbox.guilds[0]
    async with processes.browser(guildlink, sandbox) as browser:
        result = await browser.link(guild.id)
    report.count(section, "flows", 1)
    assert result.status == 200, result.page[:500]
    linked_at = datetime.now(UTC)
    await synced_after(db, guild.id, datetime.min.replace(tzinfo=UTC), within=SYNC_DEADLINE)

    # 500 events on distinct members, so that their order does not matter: 200 nick changes,
    # 150 departures, 150 arrivals, shuffled; guildlink is killed after the 250th is applied.
    before = await sandbox.members(guild.id)
    candidates = sorted(uid for uid, m in before.items() if not m["user"].get("bot"))
    rng = random.Random(8)
    chosen = rng.sample(candidates[1:], 350)  # the first is the sandbox's admin
    operations = [("update", uid, i) for i, uid in enumerate(chosen[:200])]
    operations += [("remove", uid, i) for i, uid in enumerate(chosen[200:])]
    operations += [("add", 0, i) for i in range(150)]
    rng.shuffle(operations)
    applied = 0
    killed_after = 0
    limit = asyncio.Semaphore(10)

    async def apply(kind: str, user_id: int, i: int) -> None:
        nonlocal applied, killed_after
        async with limit:
            if kind == "update":
                await sandbox.update_member(guild.id, user_id, nick=f"burst {i} ✨")
            elif kind == "remove":
                await sandbox.remove_member(guild.id, user_id)
            else:
                await sandbox.add_member(guild.id, username=f"burst_newcomer_{i}")
            applied += 1
            if applied == len(operations) // 2:
                guildlink.kill()
                killed_after = applied

    await asyncio.gather(*(apply(*op) for op in operations))
    report.count(section, "events", len(operations))
    report.count(section, "restarts", 1)
    report.fact(section, "events applied before the kill", killed_after)
    assert not guildlink.running()

    restarted_at = datetime.now(UTC)
    assert restarted_at > linked_at
    guildlink = await processes.start_guildlink(sandbox, port=port, database=db.path)
    await synced_after(db, guild.id, restarted_at)

    comparison = compare_members(await sandbox.members(guild.id), db.members(guild.id), fields=("nick",))
    record(report, section, comparison)
    assert comparison.exact, comparison


def mirrored(before: MemberRows, events: list[tuple[str, dict[str, Any]]]) -> dict[int, StoredMember]:
    """What a backend that mirrors from the feed holds: `before` with the feed's member events applied in order."""
    mirror = dict(before.by_id)
    for kind, data in events:
        if kind in ("member.joined", "member.updated"):
            member = data["member"]
            mirror[int(member["id"])] = StoredMember(member["username"], member["nick"])
        elif kind == "member.left":
            mirror.pop(int(data["user_id"]), None)
    return mirror


@pytest.mark.timeout(300)
async def test_d_the_feed_announces_what_changed_while_stopped_even_across_a_kill_mid_resync(
    processes: Processes, report: ReliabilityReport
) -> None:
    section = "Crash: kill -9 mid-resync of changes made while stopped"
    sandbox, guildlink, db, port = await start(processes, guilds=1, members=100_000)
    guild = sandbox.guilds[0]
    async with processes.browser(guildlink, sandbox) as browser:
        result = await browser.link(guild.id)
    assert result.status == 200, result.page[:500]
    await synced_after(db, guild.id, datetime.min.replace(tzinfo=UTC), within=SYNC_DEADLINE)
    # The backend's mirror, up to date with the feed.
    before, cursor = db.members(guild.id), db.last_event_id()
    guildlink.kill()

    # While guildlink is stopped: 300 nick changes, 200 departures (fewer than the hold's share), 300 arrivals.
    candidates = sorted(
        uid for uid, m in (await sandbox.members(guild.id)).items() if not m["user"].get("bot")
    )
    chosen = random.Random(17).sample(candidates[1:], 500)  # the first is the sandbox's admin
    limit = asyncio.Semaphore(10)

    async def change(i: int) -> None:
        async with limit:
            if i < 300:
                await sandbox.update_member(guild.id, chosen[i], nick=f"while stopped {i}")
            elif i < 500:
                await sandbox.remove_member(guild.id, chosen[i])
            else:
                await sandbox.add_member(guild.id, username=f"joined_while_stopped_{i}")

    await asyncio.gather(*(change(i) for i in range(800)))
    report.count(section, "changes while stopped", 800)

    restarted_at = datetime.now(UTC)
    guildlink = await processes.start_guildlink(sandbox, port=port, database=db.path)

    def resync_partly_done() -> int:
        state = db.sync_state(guild.id)
        if state is None or state.phase != "syncing":
            if state is not None and state.synced_at is not None and state.synced_at >= restarted_at:
                raise AssertionError(f"the resync finished before it could be interrupted: {state}")
            return 0
        return state.members_stored if state.members_stored >= guild.member_count // 4 else 0

    stored_at_kill = await until(resync_partly_done, within=120, interval=0.02, what="a quarter resynced")
    guildlink.kill()
    report.count(section, "restarts", 2)
    report.fact(section, "members resynced when killed", f"{stored_at_kill:,}")

    restarted_at = datetime.now(UTC)
    guildlink = await processes.start_guildlink(sandbox, port=port, database=db.path)
    await synced_after(db, guild.id, restarted_at, within=180)

    events = db.events(guild.id, after=cursor)
    stored = db.members(guild.id)
    counts = {
        kind: sum(1 for k, _ in events if k == kind)
        for kind in ("member.joined", "member.updated", "member.left")
    }
    for kind, count in counts.items():
        report.count(section, f"{kind} announced", count)
    assert counts == {"member.joined": 300, "member.updated": 300, "member.left": 200}
    assert mirrored(before, events) == stored.by_id
    assert compare_members(await sandbox.members(guild.id), stored, fields=("nick",)).exact
