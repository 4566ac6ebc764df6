"""Link flows behind one address: two guildlink processes (a fleet of two shards on one PostgreSQL) against one.

Both sides sit behind the same round-robin proxy (bench.round_robin_proxy, per request), on PostgreSQL, each
side on its own fresh database: one process with every shard (the direct hand-off), or two processes with one
shard each (SHARD_COUNT=2), where a flow's /link and callback may land on different processes and a link for
the other process's shard is a NOTIFY that the other one hears and reads back. The browsers are the same load
process as bench.link_flows'. `python -m bench.fleet_flows [--smoke | --full]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from bench.common import (
    ROOT,
    BenchArgs,
    Table,
    fresh_database,
    median,
    percentile,
    postgres_server,
    run_standalone,
    sandbox_process,
)
from bench.link_flows import (
    GUILDS,
    MEMBERS,
    Measured,
    ServerProcess,
    environment,
    free_ports,
    measure,
    server_process,
    sizes,
)
from bench.link_load_worker import Plan

SIDES = {"one": 1, "two": 2}


@dataclass
class Side:
    """The servers of one side and the proxy in front of them."""

    servers: list[ServerProcess]
    url: str

    async def cpu_seconds(self) -> float:
        return sum([await server.cpu_seconds() for server in self.servers])


@contextlib.asynccontextmanager
async def proxy_process(port: int, backends: Sequence[str], log: TextIO) -> AsyncIterator[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.round_robin_proxy",
        str(port),
        *backends,
        cwd=ROOT,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        if not line:
            raise RuntimeError(f"the proxy did not start; see {log.name}")
        yield str(json.loads(line)["url"])
    finally:
        if process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def side(
    name: str,
    sandbox: dict[str, Any],
    proxy_port: int,
    database_url: str,
    data: Path,
    log: TextIO,
) -> AsyncIterator[Side]:
    """`name`'s processes on `database_url`, all with the proxy's public redirect URI, and the proxy."""
    count = SIDES[name]
    public = f"http://localhost:{proxy_port}/authorize-discord"
    ports = free_ports(count)
    async with contextlib.AsyncExitStack() as stack:
        servers = []
        for index, port in enumerate(ports):
            env = environment(sandbox, public, data / f"{name}-{index}")
            env |= {"DATABASE_URL": database_url, "WEB_PORT": str(port), "TRUSTED_PROXIES": "127.0.0.1"}
            if count > 1:
                env |= {"SHARD_COUNT": str(count), "SHARD_IDS": str(index)}
            server = await stack.enter_async_context(
                server_process("ours", port, env, data / f"{name}-{index}", log)
            )
            servers.append(server)
        url = await stack.enter_async_context(proxy_process(proxy_port, [s.url for s in servers], log))
        yield Side(servers, url)


async def main(args: BenchArgs) -> list[Table]:
    chosen = sizes(args)
    proxy_ports = dict(zip(SIDES, free_ports(len(SIDES)), strict=True))
    uris = [f"http://localhost:{port}/authorize-discord" for port in proxy_ports.values()]
    results = {(name, c): Measured() for name in SIDES for c in chosen.flows}
    with (
        postgres_server() as server,
        tempfile.TemporaryDirectory(prefix="guildlink-bench-fleet-") as tmp,
    ):
        data = Path(tmp)
        async with (
            sandbox_process(members=MEMBERS, guilds=GUILDS, redirect_uris=uris) as sandbox,
            fresh_database(server) as one_db,
            fresh_database(server) as two_db,
        ):
            guilds = [g["id"] for g in sandbox["guilds"]]
            with (data / "servers.log").open("w") as log:
                async with (
                    side("one", sandbox, proxy_ports["one"], one_db, data, log) as one,
                    side("two", sandbox, proxy_ports["two"], two_db, data, log) as two,
                ):
                    sides = {"one": one, "two": two}
                    for round_ in range(chosen.rounds):
                        order = list(SIDES) if round_ % 2 == 0 else list(SIDES)[::-1]
                        for concurrency, flows in chosen.flows.items():
                            for name in order:
                                plan = Plan(
                                    mode="ours",
                                    web_url=sides[name].url,
                                    sandbox_url=sandbox["base_url"],
                                    guilds=guilds,
                                    concurrency=concurrency,
                                    flows=flows,
                                    warmup=chosen.warmup,
                                )
                                await measure(sides[name], plan, results[name, concurrency])
    return [table(results, chosen.flows, chosen.rounds)]


def table(results: dict[tuple[str, int], Measured], flows: dict[int, int], rounds: int) -> Table:
    rows: list[Sequence[Any]] = []
    for concurrency in flows:
        one, two = results["one", concurrency], results["two", concurrency]
        one_p50, two_p50 = median(one.callback_ms), median(two.callback_ms)
        rows.append(
            [
                concurrency,
                one.flows,
                one.flows_per_s,
                two.flows_per_s,
                two.flows_per_s / one.flows_per_s,
                one_p50,
                two_p50,
                two_p50 / one_p50,
                percentile(one.callback_ms, 0.99),
                percentile(two.callback_ms, 0.99),
                one.cpu_ms_per_flow,
                two.cpu_ms_per_flow,
            ]
        )
    return Table(
        title="Link flows behind one address: two processes (SHARD_COUNT=2) against one, on PostgreSQL",
        columns=[
            "browsers",
            "timed flows per side",
            "flows/s one",
            "flows/s two",
            "flows/s two/one",
            "callback p50 one (ms)",
            "p50 two (ms)",
            "p50 two/one",
            "p99 one (ms)",
            "p99 two (ms)",
            "servers' CPU/flow one (ms)",
            "two (ms)",
        ],
        rows=rows,
        notes=[
            "Both sides behind the same round-robin HTTP proxy (per request: a flow's /link and callback may land"
            " on different processes) in its own process, each on a fresh database of one local PostgreSQL"
            " cluster (fsync on). One: a process with every shard (direct hand-off). Two: two processes,"
            " SHARD_COUNT=2, one shard each: a link for the other's shard is a NOTIFY that the other hears on its"
            " LISTEN connection and reads the link back from the database.",
            "Each server is create_app() with the PostgreSQL store, TRUSTED_PROXIES=127.0.0.1, an unlimited"
            " per-client rate limit and an always-ready bot status: no Discord bot and no member sync run."
            " Callback latency and flows as in the link-flows table (the same load process).",
            "Processes on this 2-core machine: sandbox, PostgreSQL, proxy, the servers of both sides (the idle"
            " side waits) and the load process. One server process uses at most one core; the second process"
            " gets what the others leave of the second core. The figure shows what a second process gains here"
            " and what the fleet's shared state (states, links and notices through one database) costs, not how"
            " far a fleet scales on more machines.",
            f"{rounds} round(s), sides alternating first; latencies pooled over rounds; servers' CPU/flow is"
            " the sum over a side's server processes (not PostgreSQL's, not the proxy's).",
        ],
    )


if __name__ == "__main__":
    run_standalone(main, "bench.fleet_flows")
