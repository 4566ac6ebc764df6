"""Memory stays bounded under a slow database: the bot in a fresh process (tests/bot/memory_worker.py) against
the sandbox in another, its peak RSS measured and reported beside the same run with the valve left open."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from bench.common import run_json_worker, sandbox_process

SYNC_MEMBERS = 200_000
STORM_MEMBERS = 100_000
# The bounded runs' valve, and one no guild here reaches: the queues then hold what the database is behind by.
CAP = 10_000
OPEN = {"MEMBER_BUFFER_MAX": "10000000"}
BOUNDED = {"MEMBER_BUFFER_MAX": str(CAP)}
# A chunk's members may still be dispatched when a pause starts, from frames aiohttp has read already.
CAP_SLACK = 5_000


async def run_worker(case: str, members: int, *, env: dict[str, str], **options: Any) -> dict[str, Any]:
    """A fresh sandbox process with a guild of `members` the bot is in, and one worker run against it."""
    async with sandbox_process(
        members=members, extra=["--member-list-cooldown", "0.5", "--identify-interval", "0"]
    ) as sandbox:
        guild_id = sandbox["guilds"][0]["id"]
        async with (
            aiohttp.ClientSession() as session,
            session.put(f"{sandbox['base_url']}/_sandbox/guilds/{guild_id}/bot") as response,
        ):
            response.raise_for_status()
        argv = ["tests.bot.memory_worker", case, "--sandbox", json.dumps(sandbox), "--guild", str(guild_id)]
        for name, value in options.items():
            argv += [f"--{name.replace('_', '-')}", str(value)]
        for name, value in env.items():
            argv += ["--env", f"{name}={value}"]
        return await run_json_worker(*argv, limit_seconds=280)


def report(capsys: pytest.CaptureFixture[str], title: str, runs: dict[str, dict[str, Any]]) -> None:
    """Print the runs' peak RSS past pytest's capture (`-s` not needed), one line each."""
    with capsys.disabled():
        print(f"\n{title}")
        for name, run in runs.items():
            print(
                f"  {name}: RSS {run['start_rss_mb']:.1f} MB -> peak {run['peak_rss_mb']:.1f} MB"
                f" (+{run['growth_mb']:.1f} MB), at most {run['peak_buffered']:,} members held,"
                f" pauses {run['read_pauses']}, {run['seconds']:.1f} s"
            )


@pytest.fixture(scope="module")
def open_sync() -> Iterator[dict[str, Any]]:
    """The slow-database sync with the valve left open: what the chunk queue held before it was bounded."""
    yield asyncio.run(run_worker("sync", SYNC_MEMBERS, env=OPEN, write_delay=0.1))


@pytest.mark.timeout(300)
async def test_a_sync_into_a_slow_database_holds_a_bounded_share_of_the_guild(
    open_sync: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    bounded = await run_worker("sync", SYNC_MEMBERS, env=BOUNDED, write_delay=0.1)
    report(
        capsys,
        f"sync of {SYNC_MEMBERS:,} members, 0.1 s per 1,000-member write",
        {f"MEMBER_BUFFER_MAX={CAP}": bounded, "valve open": open_sync},
    )
    assert bounded["members"] == open_sync["members"] == SYNC_MEMBERS + 1  # the bot is a member too
    assert bounded["peak_buffered"] <= CAP + CAP_SLACK < 5 * CAP < open_sync["peak_buffered"]
    assert bounded["read_pauses"]["capped"] == 0  # a slow database is waited for, nothing is dropped
    assert bounded["growth_mb"] * 3 < open_sync["growth_mb"]


@pytest.mark.timeout(300)
async def test_a_sync_into_a_stalled_database_drops_its_chunks_and_is_retried(
    open_sync: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    stalled = await run_worker("stall", SYNC_MEMBERS, env=BOUNDED | {"READ_PAUSE_MAX": "1"}, write_delay=0)
    report(
        capsys,
        f"sync of {SYNC_MEMBERS:,} members, writes stalled until a 1 s pause is capped, then fast",
        {f"MEMBER_BUFFER_MAX={CAP}": stalled, "slow writes, valve open": open_sync},
    )
    assert stalled["members"] == SYNC_MEMBERS + 1 and stalled["gave_up"] == 1
    assert stalled["read_pauses"]["capped"] >= 1
    assert stalled["peak_buffered"] <= CAP + CAP_SLACK
    assert stalled["growth_mb"] * 3 < open_sync["growth_mb"]


@pytest.mark.timeout(300)
async def test_a_storm_into_a_slow_database_holds_a_bounded_share_of_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    options = {"write_delay": 0.5, "updates": STORM_MEMBERS}
    bounded = await run_worker("events", STORM_MEMBERS, env=BOUNDED, **options)
    unbounded = await run_worker("events", STORM_MEMBERS, env=OPEN, **options)
    report(
        capsys,
        f"storm of {STORM_MEMBERS:,} member updates, 0.5 s per write of up to 5,000",
        {f"MEMBER_BUFFER_MAX={CAP}": bounded, "valve open": unbounded},
    )
    assert bounded["stormed"] == unbounded["stormed"] == STORM_MEMBERS
    assert bounded["peak_buffered"] <= CAP + CAP_SLACK < 3 * CAP < unbounded["peak_buffered"]
    assert bounded["growth_mb"] * 2 < unbounded["growth_mb"]
