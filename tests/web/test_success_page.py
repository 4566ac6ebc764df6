"""The success page's counts: the total from the first count on, a countdown while Discord's window is shut."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sandbox import Sandbox, SandboxOptions
from store import SyncPhase, SyncState
from tests.harness import World, eventually, world
from web.link_flow import progress_json


async def _progress(w: World, url: str) -> dict[str, Any]:
    async with w.browser.session.get(w.running.web_url + url) as response:
        assert response.status == 200
        return dict(await response.json())


def _progress_url(page: str) -> str:
    match = re.search(r'data-status-url="(/progress/[^"]+)"', page)
    assert match is not None, page
    return match.group(1)


def _record_sync_states(w: World) -> list[SyncState]:
    """Every sync state the bot writes from now on, chunk by chunk."""
    store, seen = w.running.store, []
    save_sync_state, upsert_members = store.save_sync_state, store.upsert_members

    async def saving(sync: SyncState) -> bool:
        seen.append(sync)
        return await save_sync_state(sync)

    async def upserting(
        guild_id: int, members: Any, seen_at: datetime, *, progress: Any = None, snapshot_at: Any = None
    ) -> Any:
        if progress is not None:
            seen.append(progress)
        return await upsert_members(guild_id, members, seen_at, progress=progress, snapshot_at=snapshot_at)

    store.save_sync_state = saving  # type: ignore[method-assign]
    store.upsert_members = upserting  # type: ignore[method-assign]
    return seen


async def test_the_guilds_total_is_in_the_sync_state_from_its_first_count(
    make_sandbox, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=4_000))
    guild = sandbox.managed_guilds()[0]
    async with world(sandbox, tmp_path) as w:
        seen = _record_sync_states(w)
        await w.link_and_sync(guild.id)
    counting = [s for s in seen if s.phase in (SyncPhase.WAITING, SyncPhase.SYNCING)]
    assert len(counting) >= 2  # the start, and at least one chunk
    assert {s.member_count for s in counting} == {sandbox.guild(guild.id).member_count}


async def test_relinking_within_discords_window_counts_down_then_reads(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=2_500, member_list_cooldown=3.0))
    guild = sandbox.managed_guilds()[0]
    total = sandbox.guild(guild.id).member_count + 1  # and the bot, once it joins
    async with world(sandbox, tmp_path, cooldown=3.0) as w:
        await w.link_and_sync(guild.id)
        status, page = await w.browser.link_guild(guild.id)
        assert status == 200, page
        url = _progress_url(page)

        async def waiting() -> dict[str, Any] | None:
            answer = await _progress(w, url)
            return answer if answer["state"] == "waiting" else None

        answer = await eventually(waiting, within=5)
        assert answer is not None and 0 < answer["waiting_seconds"] <= 3.0 and answer["member_count"] == total

        async def synced() -> dict[str, Any] | None:
            answer = await _progress(w, url)
            return answer if answer["state"] == "synced" else None

        done = await eventually(synced, within=20)
        assert done == {
            "state": "synced",
            "members_stored": total,
            "member_count": total,
            "waiting_seconds": None,
        }


@pytest.mark.parametrize(
    ("sync", "expected"),
    [
        (None, {"state": "pending", "members_stored": 0, "member_count": None, "waiting_seconds": None}),
        (
            SyncState(1, SyncPhase.SYNCING, members_stored=6_000, member_count=100_001),
            {"state": "syncing", "members_stored": 6_000, "member_count": 100_001, "waiting_seconds": None},
        ),
    ],
)
def test_progress_says_the_counts(sync: SyncState | None, expected: dict[str, Any]) -> None:
    assert progress_json(sync, datetime.now(UTC)) == expected


def test_progress_says_how_long_a_wait_has_left_and_never_less_than_nothing() -> None:
    now = datetime(2026, 5, 1, 12, 0, 0, tzinfo=UTC)
    waiting = SyncState(1, SyncPhase.WAITING, member_count=10, waiting_until=now + timedelta(seconds=23.44))
    assert progress_json(waiting, now)["waiting_seconds"] == 23.4
    assert progress_json(waiting, now + timedelta(seconds=30))["waiting_seconds"] == 0.0
