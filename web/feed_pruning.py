"""The event feed kept to EVENT_RETENTION_DAYS: older events are deleted at start-up and every hour."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from aiohttp import web

from store import Store, StoreUnavailableError
from web.keys import SETTINGS, STORE, SUPERVISOR

log = logging.getLogger(__name__)

PRUNE_INTERVAL = 3600.0
# After a failed prune (the database refused the write): sooner than an hour, not in a tight loop.
RETRY_INTERVAL = 60.0


async def prune_old_events(store: Store, retention: timedelta) -> int:
    """Delete the events older than `retention`; return how many."""
    pruned = await store.prune_events(datetime.now(UTC) - retention)
    if pruned:
        log.info("feed.pruned events=%d retention_days=%d", pruned, retention.days)
    return pruned


async def _prune_forever(store: Store, retention: timedelta) -> None:
    while True:
        try:
            await prune_old_events(store, retention)
        except StoreUnavailableError as exc:
            log.warning("feed.prune_failed reason=%s", exc.reason)
            await asyncio.sleep(RETRY_INTERVAL)
            continue
        await asyncio.sleep(PRUNE_INTERVAL)


async def feed_pruning(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the pruning task, from start-up until the app stops."""
    retention = timedelta(days=app[SETTINGS].event_retention_days)
    store = app[STORE]
    task = app[SUPERVISOR].spawn("feed-pruning", lambda: _prune_forever(store, retention))
    yield
    task.cancel()
    await asyncio.wait({task})
