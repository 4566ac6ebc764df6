"""What every benchmark shares: its arguments, result tables, the sandbox as a separate process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import statistics
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
ENGINES = ("sqlite", "postgres")
# A PostgreSQL server the benchmarks may create databases on; unset, they start a throwaway one.
POSTGRES_URL_VARIABLE = "GUILDLINK_BENCH_POSTGRES_URL"


@dataclass(frozen=True)
class BenchArgs:
    """`smoke`: the smallest sizes, to prove the scripts run; `full`: the 1,000,000-member guild too."""

    smoke: bool = False
    full: bool = False
    results: Path = RESULTS
    rounds: int = 2
    # The database engines of the sync and storage benchmarks; both: PostgreSQL against SQLite in one run.
    engines: tuple[str, ...] = ENGINES


@dataclass
class Table:
    """One benchmark's figures, printed and appended to RESULTS.md as Markdown."""

    title: str
    columns: Sequence[str]
    rows: list[Sequence[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |"]
        lines.append("|" + "---|" * len(self.columns))
        lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in self.rows]
        lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def parse_bench_args(prog: str, argv: Sequence[str] | None = None) -> BenchArgs:
    """The options every benchmark takes, alone or through `python -m bench`."""
    parser = argparse.ArgumentParser(prog=prog)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="the smallest sizes: proves the scripts run")
    size.add_argument("--full", action="store_true", help="the largest sizes (the 1,000,000-member guild)")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="Markdown file the tables are appended to"
    )
    parser.add_argument(
        "--rounds", type=int, default=BenchArgs.rounds, help="runs of each side of a comparison"
    )
    parser.add_argument(
        "--engine",
        choices=(*ENGINES, "both"),
        default="both",
        help="database engine of the sync and storage benchmarks (default both: PostgreSQL against SQLite;"
        f" PostgreSQL is a throwaway cluster unless {POSTGRES_URL_VARIABLE} names a server)",
    )
    ns = parser.parse_args(argv)
    engines = ENGINES if ns.engine == "both" else (ns.engine,)
    return BenchArgs(smoke=ns.smoke, full=ns.full, results=ns.results, rounds=ns.rounds, engines=engines)


def run_standalone(main: Callable[[BenchArgs], Coroutine[Any, Any, list[Table]]], module: str) -> None:
    """`python -m bench.<module> [options]`: run one benchmark, print and append its tables."""
    args = parse_bench_args(f"python -m {module}")
    report(asyncio.run(main(args)), args, command=" ".join(["python -m", module, *sys.argv[1:]]))


def machine() -> str:
    return (
        f"{platform.node() or 'host'}: {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}, {platform.platform(terse=True)}"
    )


def report(tables: Sequence[Table], args: BenchArgs, *, command: str) -> None:
    """Print the tables and append them, with the date, machine and command, to the results file."""
    text = "\n".join(table.markdown() for table in tables)
    print(text, flush=True)
    header = f"\n## {datetime.now(UTC):%Y-%m-%d %H:%M} UTC · `{command}`\n\n{machine()}\n\n"
    with args.results.open("a", encoding="utf-8") as results:
        results.write(header + text)


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


@contextlib.asynccontextmanager
async def sandbox_process(
    *, members: int, guilds: int = 1, redirect_uris: Sequence[str] = (), extra: Sequence[str] = ()
) -> AsyncIterator[dict[str, Any]]:
    """`python -m sandbox` in its own process (its CPU is not ours); yields its first-line JSON."""
    command = [sys.executable, "-m", "sandbox", "--members", str(members), "--guilds", str(guilds), *extra]
    for uri in redirect_uris:
        command += ["--redirect-uri", uri]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        if not line:
            raise RuntimeError("python -m sandbox printed nothing")
        yield json.loads(line)
    finally:
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()


async def run_json_worker(*argv: str, limit_seconds: float = 900) -> dict[str, Any]:
    """Run `python -m bench.<worker> ...` in a fresh process and return the JSON its last line prints."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", *argv, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=limit_seconds)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({process.returncode}):\n{stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    return result


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """A PostgreSQL superuser URL: $GUILDLINK_BENCH_POSTGRES_URL, or a throwaway cluster with fsync on."""
    given = os.environ.get(POSTGRES_URL_VARIABLE)
    if given:
        yield given
        return
    # The tests' throwaway cluster, durable: SQLite's side of the comparison fsyncs too.
    from tests.postgres_cluster import ThrowawayCluster

    cluster = ThrowawayCluster.start(durable=True)
    try:
        yield cluster.url
    finally:
        cluster.stop()


def fresh_database(server_url: str) -> contextlib.AbstractAsyncContextManager[str]:
    """A new, empty database on the server, dropped on exit; yields its URL (as the tests' fixture makes)."""
    from tests.postgres_cluster import fresh_database as made

    return made(server_url, "guildlink_bench")


async def run_side_against_guild(
    worker: str,
    side: str,
    members: int,
    postgres_url: str | None,
    extra: Callable[[dict[str, Any]], list[str]],
) -> dict[str, Any]:
    """A fresh sandbox process whose one guild the bot is in, and one side ("bare", "sqlite" or "postgres")
    of `worker` run against it in a fresh process; `extra` adds the worker's own arguments."""
    async with sandbox_process(members=members) as sandbox:
        guild_id = sandbox["guilds"][0]["id"]
        async with (
            aiohttp.ClientSession() as session,
            session.put(f"{sandbox['base_url']}/_sandbox/guilds/{guild_id}/bot") as response,
        ):
            response.raise_for_status()
        argv = [worker, "bare" if side == "bare" else "ours", "--sandbox", json.dumps(sandbox)]
        argv += ["--guild", str(guild_id), *extra(sandbox)]
        if side != "postgres":
            return await run_json_worker(*argv)
        assert postgres_url is not None
        async with fresh_database(postgres_url) as database_url:
            return await run_json_worker(*argv, "--database-url", database_url)
