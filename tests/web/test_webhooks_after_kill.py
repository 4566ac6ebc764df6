"""kill -9 of `python main.py` in the middle of webhook deliveries: after the restart nothing is missing.

guildlink and the sandbox run as processes (tests/reliability/processes.py); the events come from real gateway
member events, and the receiver, deduplicating by event id as the README asks, ends with the whole feed in order.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.processes import (
    API_TOKEN,
    Database,
    GuildlinkProcess,
    eventually,
    free_port,
    process_owner,
    redirect_uri,
    until,
)
from tests.web.receiver import WEBHOOK_SECRET, Receiver, readme_verifier, receiving

verify = readme_verifier()
MEMBERS_JOINING = 150


async def whole_feed(guildlink: GuildlinkProcess) -> list[dict[str, Any]]:
    """GET /api/events, every page, from the running process."""
    events: list[dict[str, Any]] = []
    after = "0"
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    while True:
        async with guildlink.http.get(
            f"{guildlink.web_url}/api/events?after={after}&limit=1000", headers=headers
        ) as response:
            assert response.status == 200
            body = await response.json()
        events += body["events"]
        after = body["next_after"]
        if not body["has_more"]:
            return events


@pytest.mark.timeout(240)
async def test_deliveries_killed_midway_resume_after_restart_with_nothing_missing(tmp_path: Path) -> None:
    # A slow backend: the kill lands while a POST is under way.
    receiver = Receiver(delay=0.03)
    async with receiving(receiver), process_owner(tmp_path) as processes:
        port = free_port()
        sandbox = await processes.start_sandbox(guilds=1, members=20, redirect_uris=[redirect_uri(port)])
        guild = sandbox.guilds[0]
        database = Database(tmp_path / "data" / "guildlink.db")
        database.path.parent.mkdir()
        env = {"WEBHOOK_URL": receiver.url, "WEBHOOK_SECRET": WEBHOOK_SECRET}
        guildlink = await processes.start_guildlink(sandbox, port=port, database=database.path, more_env=env)
        async with processes.browser(guildlink, sandbox) as browser:
            assert (await browser.link(guild.id)).status == 200
        await until(lambda: database.sync_phases().get(guild.id) == "synced", within=60, what="synced")

        # Members join faster than the backend takes their events.
        for number in range(MEMBERS_JOINING):
            await sandbox.add_member(guild.id, f"joiner{number}")

        async def some_delivered() -> bool:
            return len(receiver.accepted_once()) >= 40

        await eventually(some_delivered, within=60, interval=0.01, what="40 events delivered")
        guildlink.kill()
        attempts_at_kill = len(receiver.attempts)
        assert len(receiver.accepted_once()) < MEMBERS_JOINING, "all delivered before the kill"

        guildlink = await processes.start_guildlink(sandbox, port=port, database=database.path, more_env=env)
        feed: list[dict[str, Any]] = []

        async def everything_delivered() -> bool:
            feed[:] = await whole_feed(guildlink)
            joined = sum(event["type"] == "member.joined" for event in feed)
            return joined == MEMBERS_JOINING and receiver.accepted_once() == feed

        await eventually(everything_delivered, within=90, interval=0.5, what="the whole feed delivered")
        await asyncio.sleep(1)  # nothing more arrives: no event is delivered again and again
        assert receiver.accepted_once() == feed == await whole_feed(guildlink)

    assert len(receiver.attempts) > attempts_at_kill  # the restarted process delivered the rest
    ids = [int(event["id"]) for event in feed]
    assert ids == sorted(ids) and len(ids) == len(set(ids))
    # At least once: the kill may repeat what was in flight or not yet saved, and nothing else.
    repeated = len(receiver.accepted()) - len(feed)
    assert 0 <= repeated <= 40
    for attempt in receiver.attempts:
        assert verify(WEBHOOK_SECRET, attempt.headers["Guildlink-Signature"], attempt.body)
        assert attempt.headers["Guildlink-Event-Id"] == attempt.event["id"]
