"""Start-up: from launching `python main.py` to `/readyz` answering 200 with 10 linked guilds, against bare discord.py.

`python -m bench.startup [--smoke | --full]`. The sandbox runs in its own process; each launch gets a fresh copy
of a database holding the 10 links, and is stopped with SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from bench.common import ROOT, BenchArgs, Table, median, run_standalone, sandbox_process
from bench.link_flows import environment, free_ports
from store import Link, open_store

LINKED_GUILDS = 10
MEMBERS = 200
POLL_SECONDS = 0.01
READY_LIMIT_SECONDS = 60.0
STOP_LIMIT_SECONDS = 20.0
# discord.py's default, which neither side changes: READY waits this long after the last GUILD_CREATE.
GUILD_READY_TIMEOUT = 2.0


@dataclass
class Launches:
    """One side's timings, seconds each."""

    ready: list[float] = field(default_factory=list)
    first_answer: list[float] = field(default_factory=list)
    stop: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Target:
    """What the launches run against: the sandbox, our port and a database to copy per launch."""

    sandbox: dict[str, Any]
    port: int
    redirect_uri: str
    template_db: Path
    work: Path


def launches(args: BenchArgs) -> tuple[int, int]:
    """(untimed warm-up launches, timed launches) per side."""
    if args.smoke:
        return 0, 1
    # A median wants a few launches, whatever the runner's --rounds says.
    return (1, max(9, args.rounds)) if args.full else (1, max(5, args.rounds))


async def main(args: BenchArgs) -> list[Table]:
    """Alternate guildlink and the bare client, launch by launch; return one table."""
    warmups, runs = launches(args)
    (port,) = free_ports(1)
    redirect_uri = f"http://localhost:{port}/authorize-discord"
    ours, bare = Launches(), Launches()
    with tempfile.TemporaryDirectory(prefix="guildlink-bench-startup-") as tmp:
        work = Path(tmp)
        async with sandbox_process(
            members=MEMBERS, guilds=LINKED_GUILDS, redirect_uris=[redirect_uri]
        ) as sandbox:
            target = Target(sandbox, port, redirect_uri, work / "template.db", work)
            await prepare(target)
            for launch in range(warmups + runs):
                timed = launch >= warmups
                # Alternate which goes first, so drift on a shared machine hits both alike.
                steps = [launch_ours, launch_bare] if launch % 2 == 0 else [launch_bare, launch_ours]
                for step in steps:
                    await step(target, launch, ours if step is launch_ours else bare, timed=timed)
    return [table(ours, bare, warmups)]


async def prepare(target: Target) -> None:
    """10 active links in the template database, the bot a member of those guilds, no member-list cooldown."""
    sandbox = target.sandbox
    guilds = sandbox["guilds"][:LINKED_GUILDS]
    async with aiohttp.ClientSession(base_url=sandbox["base_url"]) as http:
        # Every launch syncs the 10 guilds afresh; a 30 s cooldown would answer later ones RATE_LIMITED.
        async with http.patch("/_sandbox/settings", json={"member_list_cooldown": 0}) as response:
            state = await response.json()
            response.raise_for_status()
        for guild in guilds:
            async with http.put(f"/_sandbox/guilds/{guild['id']}/bot") as response:
                response.raise_for_status()
    admin_id = int(state["user_id"])
    async with open_store(f"sqlite:///{target.template_db}") as store:
        for guild in guilds:
            await store.save_link(
                Link(
                    guild_id=int(guild["id"]),
                    guild_name=guild["name"],
                    linked_by_id=admin_id,
                    linked_by_username="sandbox-admin",
                    scopes=("identify", "guilds", "bot"),
                    permissions=0,
                    linked_at=datetime.now(UTC),
                )
            )


def _environment(target: Target, data_dir: Path) -> dict[str, str]:
    return {**os.environ, **environment(target.sandbox, target.redirect_uri, data_dir)}


async def launch_ours(target: Target, launch: int, into: Launches, *, timed: bool) -> None:
    """`python main.py` on a fresh copy of the database, polled on /readyz until 200, then SIGTERM."""
    data_dir = target.work / f"ours-{launch}"
    data_dir.mkdir()
    shutil.copyfile(target.template_db, data_dir / "guildlink.db")
    log_path = data_dir / "main.log"
    readyz = f"http://127.0.0.1:{target.port}/readyz"
    with log_path.open("w") as log:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            sys.executable, "main.py", cwd=ROOT, env=_environment(target, data_dir), stdout=log, stderr=log
        )
        try:
            first_answer, ready, body = await _poll_ready(process, readyz, started, log_path)
            stop = await _terminate(process, "python main.py", log_path)
        finally:
            await _kill(process)
    if body["bot"]["guilds"] != LINKED_GUILDS:
        raise RuntimeError(f"guildlink was ready with {body['bot']['guilds']} guilds, not {LINKED_GUILDS}")
    if timed:
        into.first_answer.append(first_answer)
        into.ready.append(ready)
        into.stop.append(stop)


async def _poll_ready(
    process: asyncio.subprocess.Process, url: str, started: float, log_path: Path
) -> tuple[float, float, dict[str, Any]]:
    """Seconds from `started` to the first answer of any status and to the first 200, and that 200's body."""
    first_answer: float | None = None
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while time.perf_counter() - started < READY_LIMIT_SECONDS:
            if process.returncode is not None:
                raise RuntimeError(f"python main.py exited {process.returncode}:\n{_tail(log_path)}")
            try:
                async with http.get(url) as response:
                    now = time.perf_counter() - started
                    first_answer = now if first_answer is None else first_answer
                    if response.status == 200:
                        return first_answer, now, await response.json()
            except aiohttp.ClientConnectionError:
                pass  # not listening yet
            await asyncio.sleep(POLL_SECONDS)
    raise RuntimeError(f"/readyz did not answer 200 within {READY_LIMIT_SECONDS:g} s:\n{_tail(log_path)}")


async def launch_bare(target: Target, launch: int, into: Launches, *, timed: bool) -> None:
    """The bare discord.py client, from launch to its on_ready line, then SIGTERM."""
    log_path = target.work / f"bare-{launch}.log"
    with log_path.open("w") as log:
        started = time.perf_counter()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.startup_bare_worker",
            cwd=ROOT,
            env=_environment(target, target.work),
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
        )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), timeout=READY_LIMIT_SECONDS)
            ready = time.perf_counter() - started
            if not line:
                raise RuntimeError(f"the bare client exited before on_ready:\n{_tail(log_path)}")
            stop = await _terminate(process, "the bare client", log_path)
        finally:
            await _kill(process)
    if json.loads(line)["guilds"] != LINKED_GUILDS:
        raise RuntimeError(
            f"the bare client was ready with {line.decode().strip()}, not {LINKED_GUILDS} guilds"
        )
    if timed:
        into.ready.append(ready)
        into.stop.append(stop)


async def _terminate(process: asyncio.subprocess.Process, name: str, log_path: Path) -> float:
    """SIGTERM; seconds until it exits, which must be with status 0."""
    started = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(process.wait(), timeout=STOP_LIMIT_SECONDS)
    if code != 0:
        raise RuntimeError(f"{name} exited {code} on SIGTERM:\n{_tail(log_path)}")
    return time.perf_counter() - started


async def _kill(process: asyncio.subprocess.Process) -> None:
    """Only if SIGTERM did not end it: never leave a process behind."""
    if process.returncode is None:
        process.kill()
        await process.wait()


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:]


def table(ours: Launches, bare: Launches, warmups: int) -> Table:
    """Median, min and max launch → ready for both, the ratio, and the time to a clean exit."""
    ours_ready, bare_ready = median(ours.ready), median(bare.ready)
    return Table(
        title=f"Start-up with {LINKED_GUILDS} linked guilds: python main.py against a bare discord.py client",
        columns=[
            "process",
            "launches",
            "launch → ready median (s)",
            "min (s)",
            "max (s)",
            "ratio to bare",
            "launch → first HTTP answer median (s)",
            "SIGTERM → exit 0 median (s)",
        ],
        rows=[
            [
                "python main.py, until GET /readyz answers 200",
                len(ours.ready),
                ours_ready,
                min(ours.ready),
                max(ours.ready),
                ours_ready / bare_ready,
                median(ours.first_answer),
                median(ours.stop),
            ],
            [
                "bare discord.py Client, until on_ready",
                len(bare.ready),
                bare_ready,
                min(bare.ready),
                max(bare.ready),
                1.0,
                "-",
                median(bare.stop),
            ],
        ],
        notes=[
            f"Overhead of guildlink's start-up over bare discord.py at the median: {ours_ready - bare_ready:+.3f} s."
            f" Less the {GUILD_READY_TIMEOUT:g} s wait below (roughly: it starts at the last GUILD_CREATE):"
            f" {ours_ready - GUILD_READY_TIMEOUT:.3f} s against {bare_ready - GUILD_READY_TIMEOUT:.3f} s, ratio"
            f" {(ours_ready - GUILD_READY_TIMEOUT) / (bare_ready - GUILD_READY_TIMEOUT):.2f}.",
            f"Sandbox in its own process: {LINKED_GUILDS} guilds of {MEMBERS} members, the bot a member of each,"
            " member-list cooldown 0 (every launch syncs the 10 guilds afresh). guildlink starts on a fresh copy of"
            f" a SQLite database holding {LINKED_GUILDS} active links, with LOG_LEVEL=WARNING.",
            "The bare client has guildlink's intents (guilds, members), member cache off, chunk_guilds_at_startup"
            " off and the same REST and gateway redirection; it loads no store, web server or member sync. Both"
            f" wait out discord.py's guild_ready_timeout ({GUILD_READY_TIMEOUT:g} s after the last GUILD_CREATE)"
            " before they are ready, so most of each figure is that wait.",
            f"/readyz is polled every {POLL_SECONDS * 1000:g} ms (it answers 200 when the gateway session is ready"
            " and the database answers); the bare client prints a line from on_ready. Every process is stopped"
            " with SIGTERM and must exit 0.",
            f"Launches alternate which side goes first; {warmups} untimed warm-up launch(es) of each first.",
        ],
    )


if __name__ == "__main__":
    run_standalone(main, "bench.startup")
