"""Link flows: whole consent flows per second and callback latency, guildlink against a bare token handler.

Four processes: the sandbox, guildlink's web app ("ours"), the bare handler, and the simulated browsers
(a fresh load process per measurement), so that no one's CPU shows up in another's latency.
`python -m bench.link_flows [--smoke | --full]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO
from urllib.parse import parse_qsl, urlsplit

from bench.common import (
    ROOT,
    BenchArgs,
    Table,
    median,
    percentile,
    run_json_worker,
    run_standalone,
    sandbox_process,
)
from bench.link_load_worker import Plan
from config import parse_settings
from web.link_flow import consent_url

GUILDS = 200
MEMBERS = 5
GOAL_OVERHEAD_MS = 2.0
MODES = ("ours", "bare")


@dataclass(frozen=True)
class Sizes:
    """How many flows at which concurrency; `warmup` flows per browser are not timed."""

    flows: dict[int, int]
    warmup: int
    rounds: int


def sizes(args: BenchArgs) -> Sizes:
    if args.smoke:
        return Sizes(flows={1: 5, 4: 12}, warmup=1, rounds=1)
    if args.full:
        return Sizes(flows={1: 1000, 10: 3000, 100: 6000}, warmup=2, rounds=max(args.rounds, 3))
    return Sizes(flows={1: 300, 10: 1000, 100: 2000}, warmup=2, rounds=args.rounds)


@dataclass
class Measured:
    """One mode at one concurrency, pooled over the rounds."""

    callback_ms: list[float] = field(default_factory=list)
    flows: int = 0
    elapsed_s: float = 0.0
    server_cpu_s: float = 0.0
    # Flows the server handled while its CPU was measured: the warm-up ones too.
    served: int = 0
    load_cpu_s: float = 0.0

    @property
    def flows_per_s(self) -> float:
        return self.flows / self.elapsed_s

    @property
    def cpu_ms_per_flow(self) -> float:
        return self.server_cpu_s * 1000 / self.served

    def busy(self) -> str:
        """Server and load process CPU during the timed flows, as shares of one core."""
        server = self.cpu_ms_per_flow * self.flows_per_s / 1000
        return f"{server:.0%}/{self.load_cpu_s / self.elapsed_s:.0%}"


class ServerProcess:
    """`bench.link_server_worker` running; asks it for its CPU time."""

    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url

    async def cpu_seconds(self) -> float:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(b"cpu\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), timeout=10)
        return float(json.loads(line)["cpu_s"])


@contextlib.asynccontextmanager
async def server_process(
    mode: str, port: int, env: dict[str, str], data_dir: Path, log: TextIO
) -> AsyncIterator[ServerProcess]:
    """One server worker, stopped by closing its stdin; its stderr goes to `log`."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.link_server_worker",
        mode,
        str(port),
        str(data_dir),
        cwd=ROOT,
        env={**os.environ, **env},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        if not line:
            raise RuntimeError(f"the {mode} server did not start; see {log.name}")
        yield ServerProcess(process, json.loads(line)["url"])
    finally:
        if process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), timeout=10)
            except TimeoutError:
                process.kill()
                await process.wait()


def free_ports(count: int) -> list[int]:
    """Ports free right now; the sandbox must know our redirect URIs before our servers can start."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def environment(sandbox: dict[str, Any], redirect_uri: str, data_dir: Path) -> dict[str, str]:
    """The variables `python main.py` would be started with, pointing at the sandbox."""
    return {
        "DISCORD_CLIENT_ID": sandbox["client_id"],
        "DISCORD_CLIENT_SECRET": sandbox["client_secret"],
        "DISCORD_BOT_TOKEN": sandbox["bot_token"],
        "DISCORD_BASE_URL": sandbox["base_url"],
        "DISCORD_REDIRECT_URI": redirect_uri,
        "DATABASE_URL": f"sqlite:///{data_dir / 'guildlink.db'}",
        "DATA_DIR": str(data_dir),
        "LOG_LEVEL": "WARNING",
    }


class Served(Protocol):
    """What serves the flows (one server process, or several behind a proxy) and can say its CPU time."""

    async def cpu_seconds(self) -> float: ...


async def measure(server: Served, plan: Plan, into: Measured) -> None:
    """One load process against one server (or side); adds its timed flows and the server's CPU to `into`."""
    cpu_before = await server.cpu_seconds()
    outcome = await run_json_worker("bench.link_load_worker", json.dumps(asdict(plan)))
    cpu_after = await server.cpu_seconds()
    if outcome["failures"]:
        failures = outcome["failures"]
        raise RuntimeError(f"{plan.mode}: {len(failures)} flows failed, first: {failures[:3]}")
    into.callback_ms += outcome["callback_ms"]
    into.flows += len(outcome["callback_ms"])
    into.elapsed_s += outcome["elapsed_s"]
    into.load_cpu_s += outcome["cpu_s"]
    into.server_cpu_s += cpu_after - cpu_before
    into.served += plan.flows + plan.warmup * plan.concurrency


async def main(args: BenchArgs) -> list[Table]:
    """Measure at each concurrency, alternating ours and bare round by round; return one table."""
    chosen = sizes(args)
    ports = dict(zip(MODES, free_ports(len(MODES)), strict=True))
    uris = {mode: f"http://localhost:{port}/authorize-discord" for mode, port in ports.items()}
    results = {(mode, c): Measured() for mode in MODES for c in chosen.flows}
    with tempfile.TemporaryDirectory(prefix="guildlink-bench-flows-") as tmp:
        data = Path(tmp)
        async with sandbox_process(
            members=MEMBERS, guilds=GUILDS, redirect_uris=list(uris.values())
        ) as sandbox:
            envs = {mode: environment(sandbox, uris[mode], data / mode) for mode in MODES}
            guilds = [g["id"] for g in sandbox["guilds"]]
            bare_consent = dict(
                parse_qsl(urlsplit(consent_url(parse_settings(envs["bare"]), "bench-state")).query)
            )
            with (data / "servers.log").open("w") as log:
                async with (
                    server_process("ours", ports["ours"], envs["ours"], data / "ours", log) as ours,
                    server_process("bare", ports["bare"], envs["bare"], data / "bare", log) as bare,
                ):
                    servers = {"ours": ours, "bare": bare}
                    for round_ in range(chosen.rounds):
                        # Alternate which goes first, so drift on a shared machine hits both alike.
                        order = MODES if round_ % 2 == 0 else MODES[::-1]
                        for concurrency, flows in chosen.flows.items():
                            for mode in order:
                                plan = Plan(
                                    mode=mode,
                                    web_url=servers[mode].url,
                                    sandbox_url=sandbox["base_url"],
                                    guilds=guilds,
                                    concurrency=concurrency,
                                    flows=flows,
                                    warmup=chosen.warmup,
                                    consent=bare_consent if mode == "bare" else {},
                                )
                                await measure(servers[mode], plan, results[mode, concurrency])
    return [table(results, chosen)]


def table(results: dict[tuple[str, int], Measured], chosen: Sizes) -> Table:
    """Flows/s, callback p50/p99 and server CPU per flow, ours against bare, one row per concurrency."""
    rows: list[Sequence[Any]] = []
    verdicts: list[str] = []
    busy: list[str] = []
    for concurrency in chosen.flows:
        ours, bare = results["ours", concurrency], results["bare", concurrency]
        ours_p50, bare_p50 = median(ours.callback_ms), median(bare.callback_ms)
        overhead = ours_p50 - bare_p50
        rows.append(
            [
                concurrency,
                ours.flows,
                ours.flows_per_s,
                bare.flows_per_s,
                ours.flows_per_s / bare.flows_per_s,
                ours_p50,
                bare_p50,
                percentile(ours.callback_ms, 0.99),
                percentile(bare.callback_ms, 0.99),
                overhead,
                ours_p50 / bare_p50,
                ours.cpu_ms_per_flow,
                bare.cpu_ms_per_flow,
            ]
        )
        busy.append(f"{concurrency}: ours {ours.busy()}, bare {bare.busy()}")
        verdicts.append(
            f"{concurrency}: {overhead:.2f} ms ({'met' if overhead < GOAL_OVERHEAD_MS else 'missed'})"
        )
    return Table(
        title="Link flows: guildlink's callback against a bare token handler",
        columns=[
            "browsers",
            "timed flows per side",
            "flows/s ours",
            "flows/s bare",
            "flows/s ours/bare",
            "callback p50 ours (ms)",
            "p50 bare (ms)",
            "p99 ours (ms)",
            "p99 bare (ms)",
            "overhead p50 (ms)",
            "p50 ours/bare",
            "server CPU/flow ours (ms)",
            "server CPU/flow bare (ms)",
        ],
        rows=rows,
        notes=[
            f"Goal: overhead over the bare handler under {GOAL_OVERHEAD_MS:g} ms at p50. By browsers: "
            + "; ".join(verdicts)
            + ".",
            "Callback latency: from the browser sending GET /authorize-discord?code=... to the whole page read,"
            " timed in the load process. Ours checks and consumes the state, POSTs the code to the sandbox's token"
            " endpoint, GETs /users/@me, commits the link and renders the success page; bare does the same"
            " form-encoded token POST and answers a short text, nothing else.",
            "A flow, ours: GET /link (a state committed, cookie set) → POST /_sandbox/authorize → GET callback → 200."
            " Bare has no /link: the same consent query, fresh code from /_sandbox/authorize → GET callback → 200.",
            f"Processes: sandbox (--members {MEMBERS} --guilds {GUILDS}), ours, bare, and a fresh load process"
            " per measurement (one aiohttp session and cookie jar per browser, keep-alive), all on this"
            " 2-core machine. Server CPU/flow is the server process's user+system time (its SQLite thread"
            " included) over every flow of a measurement, warm-up ones too.",
            "Ours is create_app() with a real SQLite store (WAL, links committed with synchronous=FULL) in a temp"
            " dir on local disk, a no-op linker and an always-ready bot status: the Discord bot and its member"
            " sync do not run. Both servers: 127.0.0.1, plain http, AppRunner with main.py's access log class,"
            " logging at WARNING (no per-request lines).",
            "CPU during the timed flows as shares of one core, server/load process, by browsers: "
            + "; ".join(busy)
            + ". The sandbox's share is not measured; all three share 2 cores.",
            f"{chosen.rounds} round(s), ours and bare alternating first; {chosen.warmup} untimed flow(s) per"
            " browser before each measurement; latencies pooled over rounds, flows/s = flows / timed wall time.",
        ],
    )


if __name__ == "__main__":
    run_standalone(main, "bench.link_flows")
