"""Role changes applied per second against the sandbox's role bucket: the bucket is the ceiling, the ratio to it
is the figure (1.0: every slot Discord allows is used, none wasted on a 429)."""

from __future__ import annotations

import asyncio
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import BenchArgs, Table, run_standalone, sandbox_process
from bench.link_flows import environment, free_ports
from config import parse_settings
from lifecycle import run_guildlink
from store import Link, RoleAction, RoleChangeRequest, RoleChangeStatus, Store, open_store

# The sandbox's role bucket for the run: Discord's is 10 per 10 s per guild; a 1 s window measures the same
# pacing ten times faster.
BUCKET_LIMIT = 10
BUCKET_WINDOW = 1.0


@dataclass(frozen=True)
class Run:
    changes: int
    seconds: float
    route_limited: int
    invalid_requests: int

    @property
    def per_second(self) -> float:
        return self.changes / self.seconds


async def main(args: BenchArgs) -> list[Table]:
    changes = 30 if args.smoke else (600 if args.full else 200)
    run = await measure(changes)
    ceiling = BUCKET_LIMIT / BUCKET_WINDOW
    table = Table(
        "Role changes applied per second against the role bucket",
        [
            "changes",
            "bucket",
            "applied / s",
            "ceiling / s",
            "ratio to the ceiling",
            "429s",
            "invalid requests",
        ],
        [
            [
                run.changes,
                f"{BUCKET_LIMIT} per {BUCKET_WINDOW:g} s",
                run.per_second,
                ceiling,
                run.per_second / ceiling,
                run.route_limited,
                run.invalid_requests,
            ]
        ],
    )
    table.notes += [
        "one guild, one change per member (give a role), queued at once; timed from the queuing to the last one"
        " read back and recorded applied; each change is a PUT and a GET of the member",
        "the bucket starts full, so a short run can pass 1.0 by up to one bucket's worth; 429s and invalid"
        " requests are the sandbox's counts (0: discord.py paced itself by X-RateLimit-* alone)",
    ]
    return [table]


async def measure(changes: int) -> Run:
    (port,) = free_ports(1)
    redirect_uri = f"http://localhost:{port}/authorize-discord"
    # About half of the sandbox's members hold the role already: three times as many leave room to pick from.
    async with sandbox_process(members=changes * 3 + 50, redirect_uris=[redirect_uri]) as sandbox:
        guild_id, admin_id, role_id, users = await prepare(sandbox, changes)
        with tempfile.TemporaryDirectory(prefix="guildlink-bench-roles-") as folder:
            data_dir = Path(folder)
            settings = parse_settings(
                {**environment(sandbox, redirect_uri, data_dir), "API_TOKEN": "bench-api-token-" + "x" * 32}
            )
            async with open_store(settings.database_url) as store:
                await store.save_link(_link(guild_id, admin_id))
            async with run_guildlink(settings) as running:
                started = time.perf_counter()
                ids = [await _queue(running.store, guild_id, user, role_id) for user in users]
                await _all_applied(running.store, ids)
                seconds = time.perf_counter() - started
        counters = await _rate_limits(sandbox)
    return Run(changes, seconds, counters["route_limited"], counters["invalid_requests"])


async def prepare(sandbox: dict[str, Any], changes: int) -> tuple[int, int, int, list[int]]:
    """The bot in the guild with Manage Roles, the bucket set; the admin, the role Members and who lacks it."""
    guild_id = int(sandbox["guilds"][0]["id"])
    bot = {"Authorization": f"Bot {sandbox['bot_token']}"}
    async with aiohttp.ClientSession(base_url=sandbox["base_url"]) as http:
        settings = {
            "role_write_limit": BUCKET_LIMIT,
            "role_write_window": BUCKET_WINDOW,
            "member_list_cooldown": 0,
        }
        async with http.patch("/_sandbox/settings", json=settings) as response:
            response.raise_for_status()
            admin_id = int((await response.json())["user_id"])
        async with http.put(f"/_sandbox/guilds/{guild_id}/bot") as response:
            response.raise_for_status()
        async with http.patch(
            f"/_sandbox/guilds/{guild_id}/bot-role", json={"manage_roles": True}
        ) as response:
            response.raise_for_status()
        async with http.get(f"/api/v10/guilds/{guild_id}", headers=bot) as response:
            role_id = next(int(r["id"]) for r in (await response.json())["roles"] if r["name"] == "Members")
        async with http.get(f"/_sandbox/guilds/{guild_id}/members") as response:
            members = await response.json()
    users = [
        int(m["user"]["id"]) for m in members if not m["user"].get("bot") and str(role_id) not in m["roles"]
    ][:changes]
    if len(users) < changes:
        raise RuntimeError(f"only {len(users)} members lack the role")
    return guild_id, admin_id, role_id, users


def _link(guild_id: int, admin_id: int) -> Link:
    return Link(
        guild_id=guild_id,
        guild_name="bench",
        linked_by_id=admin_id,
        linked_by_username="sandbox-admin",
        scopes=("identify", "guilds", "bot"),
        permissions=0,
        linked_at=datetime.now(UTC),
    )


async def _queue(store: Store, guild_id: int, user_id: int, role_id: int) -> int:
    change = await store.queue_role_change(RoleChangeRequest(guild_id, user_id, role_id, RoleAction.ADD))
    assert change is not None
    return change.id


async def _all_applied(store: Store, ids: list[int], limit_seconds: float = 600) -> None:
    deadline = time.perf_counter() + limit_seconds
    waiting = list(ids)
    while waiting:
        change = await store.get_role_change(waiting[-1])
        assert change is not None
        if change.status is RoleChangeStatus.FAILED:
            raise RuntimeError(f"role change {change.id} failed: {change.error_code} {change.error_reason}")
        if change.status is RoleChangeStatus.APPLIED:
            waiting.pop()
            continue
        if time.perf_counter() > deadline:
            raise RuntimeError(f"{len(waiting)} role changes still pending")
        await asyncio.sleep(0.02)


async def _rate_limits(sandbox: dict[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession(base_url=sandbox["base_url"]) as http,
        http.get("/_sandbox/rate-limits") as response,
    ):
        counters: dict[str, Any] = await response.json()
    return counters


if __name__ == "__main__":
    run_standalone(main, "bench.role_changes")
