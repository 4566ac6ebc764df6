"""IDENTIFY pacing: at most one per `interval` per max_concurrency bucket, as Discord requires."""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger(__name__)

# Discord's window per bucket, plus a margin for clocks and the trip to the gateway.
IDENTIFY_INTERVAL = 5.0 + 0.25


class IdentifyPacer:
    """Waits before an IDENTIFY until its bucket (`shard_id % max_concurrency`) may identify again.

    Within one process; a fleet adds a database lock per bucket on top (see the PostgreSQL hand-off).
    """

    def __init__(self, *, interval: float = IDENTIFY_INTERVAL, max_concurrency: int = 1) -> None:
        self._interval = interval
        self.max_concurrency = max_concurrency
        self._last: dict[int, float] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def bucket(self, shard_id: int) -> int:
        return shard_id % max(self.max_concurrency, 1)

    async def wait_turn(self, shard_id: int) -> None:
        """Return when `shard_id` may IDENTIFY; counts it as identifying now."""
        bucket = self.bucket(shard_id)
        async with self._locks.setdefault(bucket, asyncio.Lock()):
            last = self._last.get(bucket)
            if last is not None:
                wait = last + self._interval - time.monotonic()
                if wait > 0:
                    log.info("bot.identify_wait shard=%d bucket=%d seconds=%.1f", shard_id, bucket, wait)
                    await asyncio.sleep(wait)
            self._last[bucket] = time.monotonic()
