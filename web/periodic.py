"""The feed's hourly upkeep (pruning, scrubbing departed members' data): one loop for each such job."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from store import StoreUnavailableError


async def run_every(
    interval: float, job: Callable[[], Awaitable[object]], *, retry: float, log: logging.Logger, failed: str
) -> None:
    """Run `job` now and every `interval` s; a database that refuses it is logged as `failed`, tried after `retry` s."""
    while True:
        try:
            await job()
        except StoreUnavailableError as exc:
            log.warning("%s reason=%s", failed, exc.reason)
            await asyncio.sleep(retry)
            continue
        await asyncio.sleep(interval)
