"""Run every benchmark: `python -m bench [--smoke | --full] [--results FILE]`."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from bench import api_guilds, fleet_flows, link_flows, role_changes, startup, storage, storm, sync, webhooks
from bench.common import BenchArgs, Table, parse_bench_args, report

BENCHMARKS = (sync, storage, link_flows, fleet_flows, startup, api_guilds, storm, webhooks, role_changes)


async def run_all(args: BenchArgs) -> list[Table]:
    tables: list[Table] = []
    for benchmark in BENCHMARKS:
        tables += await benchmark.main(args)
    return tables


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_bench_args("python -m bench", argv)
    report(asyncio.run(run_all(args)), args, command=" ".join(["python -m bench", *argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
