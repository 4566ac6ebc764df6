"""Simulated browsers for bench.link_flows, in their own process so their CPU is not the server's.

`python -m bench.link_load_worker PLAN_JSON`; prints one JSON line: callback and flow latencies (ms),
the timed phase's wall time and any failures.
"""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp


@dataclass(frozen=True)
class Plan:
    """What to drive: `ours` walks /link → consent → callback; `bare` walks consent → callback."""

    mode: str
    web_url: str
    sandbox_url: str
    guilds: list[str]
    concurrency: int
    flows: int
    warmup: int
    # For `bare`, which has no /link: the consent query a /link would have produced.
    consent: dict[str, str] = field(default_factory=dict)


@dataclass
class Outcome:
    callback_ms: list[float] = field(default_factory=list)
    flow_ms: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    # This process's CPU over the timed phase: a load generator near one core is itself the limit.
    cpu_s: float = 0.0
    failures: list[str] = field(default_factory=list)


class Browser:
    """One browser: its own session, cookie jar and connections."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        # unsafe=True: the jar must keep cookies for localhost; AF_INET: the servers listen on 127.0.0.1 only.
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            connector=aiohttp.TCPConnector(family=socket.AF_INET),
        )

    async def flow(self, guild_id: str) -> tuple[float, float]:
        """One complete flow; returns (callback seconds, flow seconds)."""
        started = time.perf_counter()
        if self.plan.mode == "ours":
            async with self.session.get(f"{self.plan.web_url}/link", allow_redirects=False) as response:
                await response.read()
                if response.status != 302:
                    raise FlowError(f"/link answered {response.status}")
                consent = dict(parse_qsl(urlsplit(response.headers["Location"]).query))
        else:
            consent = self.plan.consent
        async with self.session.post(
            f"{self.plan.sandbox_url}/_sandbox/authorize", json={**consent, "guild_id": guild_id}
        ) as response:
            body: dict[str, Any] = await response.json()
            if response.status != 200:
                raise FlowError(f"/_sandbox/authorize answered {response.status}: {body}")
        called = time.perf_counter()
        async with self.session.get(body["location"], allow_redirects=False) as response:
            page = await response.text()
            if response.status != 200:
                raise FlowError(f"callback answered {response.status}: {page[:300]}")
        done = time.perf_counter()
        return done - called, done - started


class FlowError(Exception):
    """A flow did not end in 200."""


async def run(plan: Plan) -> Outcome:
    """Warm every browser up, then time `plan.flows` flows spread over `plan.concurrency` browsers."""
    outcome = Outcome()
    browsers = [Browser(plan) for _ in range(plan.concurrency)]
    start_line = asyncio.Barrier(plan.concurrency + 1)
    share, extra = divmod(plan.flows, plan.concurrency)

    async def drive(index: int, browser: Browser) -> None:
        count = share + (1 if index < extra else 0)
        # Spread guilds so concurrent flows rarely link the same one (they could: re-linking updates).
        guilds = [plan.guilds[(index * 7919 + n) % len(plan.guilds)] for n in range(plan.warmup + count)]
        for guild in guilds[: plan.warmup]:
            await _timed(browser, guild, None)
        await start_line.wait()
        for guild in guilds[plan.warmup :]:
            await _timed(browser, guild, outcome)

    async def _timed(browser: Browser, guild: str, into: Outcome | None) -> None:
        try:
            callback_s, flow_s = await browser.flow(guild)
        except Exception as exc:
            # Recorded, not raised: a browser that died before the start line would hang the others.
            outcome.failures.append(f"{type(exc).__name__}: {exc}")
            return
        if into is not None:
            into.callback_ms.append(callback_s * 1000)
            into.flow_ms.append(flow_s * 1000)

    try:
        tasks = [asyncio.create_task(drive(i, b)) for i, b in enumerate(browsers)]
        await start_line.wait()
        started, cpu_started = time.perf_counter(), _cpu_seconds()
        await asyncio.gather(*tasks)
        outcome.elapsed_s = time.perf_counter() - started
        outcome.cpu_s = _cpu_seconds() - cpu_started
    finally:
        await asyncio.gather(*(b.session.close() for b in browsers))
    return outcome


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    plan = Plan(**json.loads(sys.argv[1]))
    outcome = asyncio.run(run(plan))
    print(json.dumps(asdict(outcome)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
