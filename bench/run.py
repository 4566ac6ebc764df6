"""Run every benchmark: `python -m bench [--smoke | --full] [--results FILE]`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from bench import link_flows, startup, storage, sync
from bench.common import RESULTS, BenchArgs, Table, report

BENCHMARKS = (sync, storage, link_flows, startup)


def parse_args(argv: Sequence[str]) -> BenchArgs:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--smoke", action="store_true", help="the smallest sizes: proves the scripts run")
    size.add_argument("--full", action="store_true", help="include the 1,000,000-member guild")
    parser.add_argument(
        "--results", type=Path, default=RESULTS, help="Markdown file the tables are appended to"
    )
    parser.add_argument("--rounds", type=int, default=2, help="runs of each side of a comparison")
    args = parser.parse_args(argv)
    return BenchArgs(smoke=args.smoke, full=args.full, results=args.results, rounds=args.rounds)


async def run_all(args: BenchArgs) -> list[Table]:
    tables: list[Table] = []
    for benchmark in BENCHMARKS:
        tables += await benchmark.main(args)
    return tables


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    report(asyncio.run(run_all(args)), args, command=" ".join(["python -m bench", *argv]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
