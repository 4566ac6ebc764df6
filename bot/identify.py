"""IDENTIFY pacing: at most one per `interval` per max_concurrency bucket, across every process of the bot."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from config import DEFAULT_IDENTIFY_INTERVAL
from store import StoreUnavailableError

log = logging.getLogger(__name__)

IDENTIFY_INTERVAL = DEFAULT_IDENTIFY_INTERVAL


class IdentifySlots(Protocol):
    """Where the processes of a fleet book their IDENTIFYs: the store, on the database's clock."""

    async def reserve_identify(self, bucket: int, interval: float) -> float: ...


class IdentifyPacer:
    """Waits before an IDENTIFY until its bucket (`shard_id % max_concurrency`) may identify again.

    The bucket's slots are booked in the database (`slots`), so processes starting together on several
    machines take turns; this process's own last IDENTIFY is kept too, for when the database fails.
    """

    def __init__(
        self,
        *,
        interval: float = IDENTIFY_INTERVAL,
        max_concurrency: int = 1,
        slots: IdentifySlots | None = None,
    ) -> None:
        self._interval = interval
        self.max_concurrency = max_concurrency
        self._slots = slots
        self._last: dict[int, float] = {}
        self._locks: dict[int, asyncio.Lock] = {}

    def bucket(self, shard_id: int) -> int:
        return shard_id % max(self.max_concurrency, 1)

    async def wait_turn(self, shard_id: int) -> None:
        """Return when `shard_id` may IDENTIFY; counts it as identifying now."""
        bucket = self.bucket(shard_id)
        # This process's shards of the bucket queue here, so that one at a time books a slot and waits for it.
        async with self._locks.setdefault(bucket, asyncio.Lock()):
            last = self._last.get(bucket)
            wait = 0.0 if last is None else last + self._interval - time.monotonic()
            wait = max(wait, await self._booked_wait(shard_id, bucket))
            if wait > 0:
                log.info("bot.identify_wait shard=%d bucket=%d seconds=%.1f", shard_id, bucket, wait)
                await asyncio.sleep(wait)
            self._last[bucket] = time.monotonic()

    async def _booked_wait(self, shard_id: int, bucket: int) -> float:
        if self._slots is None:
            return 0.0
        try:
            return await self._slots.reserve_identify(bucket, self._interval)
        except StoreUnavailableError as exc:
            # Better an IDENTIFY paced within this process than none: at worst Discord answers op 9, and
            # discord.py waits and tries again.
            log.warning(
                "bot.identify_unbooked shard=%d bucket=%d reason=%s: pacing within this process only",
                shard_id,
                bucket,
                exc.reason,
            )
            return 0.0
