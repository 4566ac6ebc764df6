"""The feed's hourly upkeep (pruning, scrubbing departed members' data): one supervised loop for each such job."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from aiohttp import web

from store import StoreUnavailableError
from web.keys import SUPERVISOR


@asynccontextmanager
async def running_every(
    app: web.Application,
    name: str,
    interval: float,
    job: Callable[[], Awaitable[object]],
    *,
    retry: float,
    log: logging.Logger,
    failed: str,
) -> AsyncIterator[None]:
    """Task `name` (supervised) runs `job` now and every `interval` s while inside; see `run_every`."""
    task = app[SUPERVISOR].spawn(name, lambda: run_every(interval, job, retry=retry, log=log, failed=failed))
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait({task})


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
