"""Webhook delivery rate against a local receiver: guildlink's deliverer against a bare aiohttp client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.common import ROOT, BenchArgs, Table, median, run_standalone
from bench.link_server_worker import NoLinker, ReadyBot
from config import parse_settings
from store import Link, Member, MemberChange, MemberChangeKind, SqliteStore
from web.app import create_app
from web.feed import event_json

GUILDS = (81384788765712384, 81384788765712385)
SECRET = "bench-webhook-secret-" + "x" * 32


def member_joins(count: int) -> list[MemberChange]:
    """Members joining two guilds in turn, with the fields a real member has (a body of about 400 bytes)."""
    base = 200_000_000_000_000_000
    now = datetime.now(UTC)
    return [
        MemberChange(
            GUILDS[index % 2],
            base + index,
            MemberChangeKind.JOINED,
            Member(
                user_id=base + index,
                username=f"user_{index}",
                global_name=f"User {index}" if index % 3 else None,
                nick=f"nick {index}" if index % 4 == 0 else None,
                avatar=f"{index:032x}" if index % 2 else None,
                bot=index % 50 == 0,
                roles=tuple(base + role for role in range(index % 4)),
                joined_at="2024-05-01T12:00:00.000000+00:00",
            ),
            now,
        )
        for index in range(count)
    ]


async def fill(path: Path, count: int) -> list[bytes]:
    """A database holding two links and `count` member events; return each event's body as POSTed."""
    async with SqliteStore.open(path) as store:
        for guild_id in GUILDS:
            await store.save_link(
                Link(guild_id, f"guild {guild_id}", 42, "admin", ("bot",), 0, datetime.now(UTC))
            )
        changes = member_joins(count)
        for start in range(0, count, 1000):
            await store.apply_member_changes(changes[start : start + 1000])
        events = await store.list_events(limit=count + len(GUILDS))
    return [json.dumps(event_json(event), separators=(",", ":")).encode() for event in events]


@contextlib.asynccontextmanager
async def receiver_process() -> AsyncIterator[str]:
    """`python -m bench.webhook_receiver_worker`; yields its base URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.webhook_receiver_worker", cwd=ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        yield str(json.loads(line)["url"])
    finally:
        process.terminate()
        await process.wait()


@dataclass(frozen=True)
class Run:
    """One side's run: events per second between the receiver's first and last POST, and CPU per event."""

    rate: float
    wall: float
    cpu_per_event: float


async def _received(control: aiohttp.ClientSession, url: str, count: int) -> dict[str, Any]:
    async with control.get(f"{url}/wait", params={"count": str(count)}) as response:
        stats: dict[str, Any] = await response.json()
    return stats


async def _reset(control: aiohttp.ClientSession, url: str) -> None:
    async with control.post(f"{url}/reset") as response:
        await response.read()


async def ours(template: Path, folder: Path, url: str, count: int, control: aiohttp.ClientSession) -> Run:
    """guildlink's web app with WEBHOOK_URL set, on a fresh copy of the filled database, until all arrived."""
    path = folder / f"ours-{time.monotonic_ns()}.db"
    shutil.copy(template, path)
    settings = parse_settings(
        {
            "DISCORD_CLIENT_ID": "1",
            "DISCORD_CLIENT_SECRET": "s",
            "DISCORD_BOT_TOKEN": "MQ.a.b",
            "DISCORD_REDIRECT_URI": "http://localhost:1/authorize-discord",
            "DATABASE_URL": f"sqlite:///{path}",
            "WEBHOOK_URL": f"{url}/hook",
            "WEBHOOK_SECRET": SECRET,
        }
    )
    await _reset(control, url)
    async with SqliteStore.open(path) as store:
        runner = web.AppRunner(create_app(settings, store, linker=NoLinker(), bot_status=ReadyBot()))
        cpu, started = time.process_time(), time.perf_counter()
        await runner.setup()  # the delivery starts with the app
        stats = await _received(control, url, count)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        await runner.cleanup()
        assert (await store.webhook_cursor()).delivered_up_to == count
    return Run(count / (stats["last"] - stats["first"]), wall, cpu / count)


async def bare(bodies: list[bytes], url: str, control: aiohttp.ClientSession) -> Run:
    """The same bodies POSTed one after another by a plain aiohttp client: no store, no signature."""
    await _reset(control, url)
    cpu, started = time.process_time(), time.perf_counter()
    async with aiohttp.ClientSession() as client:
        for body in bodies:
            async with client.post(
                f"{url}/hook", data=body, headers={"Content-Type": "application/json"}
            ) as response:
                await response.read()
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    stats = await _received(control, url, len(bodies))
    return Run(len(bodies) / (stats["last"] - stats["first"]), wall, cpu / len(bodies))


async def main(args: BenchArgs) -> list[Table]:
    sizes = [300] if args.smoke else ([10_000, 50_000] if args.full else [10_000])
    table = Table(
        "Webhooks: events delivered per second to a local receiver, ours against a bare aiohttp client",
        [
            "events",
            "ours events/s",
            "bare events/s",
            "ours / bare",
            "ours CPU µs/event",
            "bare CPU µs/event",
            "ours wall s (from app start)",
            "bare wall s",
        ],
    )
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as directory:
        folder = Path(directory)
        async with receiver_process() as url, aiohttp.ClientSession() as control:
            for members in sizes:
                template = folder / f"template-{members}.db"
                bodies = await fill(template, members)
                count = len(bodies)
                runs: dict[str, list[Run]] = {"ours": [], "bare": []}
                for round_number in range(args.rounds):
                    order = ("ours", "bare") if round_number % 2 == 0 else ("bare", "ours")
                    for side in order:
                        if side == "ours":
                            runs[side].append(await ours(template, folder, url, count, control))
                        else:
                            runs[side].append(await bare(bodies, url, control))
                ours_rate = median([run.rate for run in runs["ours"]])
                bare_rate = median([run.rate for run in runs["bare"]])
                table.rows.append(
                    [
                        count,
                        ours_rate,
                        bare_rate,
                        ours_rate / bare_rate,
                        median([run.cpu_per_event for run in runs["ours"]]) * 1e6,
                        median([run.cpu_per_event for run in runs["bare"]]) * 1e6,
                        median([run.wall for run in runs["ours"]]),
                        median([run.wall for run in runs["bare"]]),
                    ]
                )
    table.notes += [
        f"median of {args.rounds} run(s) each, sides alternating first; events/s = events / the receiver's"
        " time from the first POST to the last (its own clock, in its own process)",
        "ours: create_app() with WEBHOOK_URL on a fresh copy of a SQLite database holding the events (2 links,"
        " then members joining 2 guilds in turn), the deliverer as it runs in production: reads the feed 500"
        " at a time, signs each body (HMAC-SHA256), POSTs one at a time in id order, saves the cursor every"
        " 0.5 s; bare: one aiohttp ClientSession POSTing the same bodies one at a time, nothing else",
        "both keep one connection alive; the receiver (aiohttp, its own process) reads each body and answers"
        " 200; CPU is the client process's user+system time (ours includes the SQLite thread)",
        f"1-minute load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, on"
        f" {os.cpu_count()} cores (other programs' load shifts both sides alike: compare the ratio)",
    ]
    return [table]


if __name__ == "__main__":
    run_standalone(main, "bench.webhooks")
