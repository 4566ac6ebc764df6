"""This process's memory while something runs, as tests and benchmarks measure it."""

from __future__ import annotations

import asyncio
from pathlib import Path


def rss_mb() -> float:
    """This process's resident set size now, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class PeakRss:
    """The highest RSS sampled every `interval` seconds from now on.

    Sampled rather than the kernel's high-water mark, which counts start-up and whatever ran before.
    """

    def __init__(self, interval: float = 0.01) -> None:
        self.start = rss_mb()
        self.peak = self.start
        self._interval = interval
        self._task = asyncio.create_task(self._sample())

    async def _sample(self) -> None:
        while True:
            self.peak = max(self.peak, rss_mb())
            await asyncio.sleep(self._interval)

    def stop(self) -> float:
        """Stop sampling; return the growth, peak over start, in MiB."""
        self._task.cancel()
        self.peak = max(self.peak, rss_mb())
        return self.peak - self.start
