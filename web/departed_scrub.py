"""A departed member's names and nick leave the event feed MEMBER_DATA_AFTER_LEAVE_HOURS after the leave.

Each hour the store walks on through the member.left events past that window and scrubs the member data of
the events before each of them (a tombstone stays, so that readers' cursors keep working).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from aiohttp import web

from metrics import Metrics
from store import ScrubReason, Store
from web.keys import METRICS, SETTINGS, STORE
from web.periodic import running_every

log = logging.getLogger(__name__)

SCRUB_INTERVAL = 3600.0
# After a failed scrub (the database refused the write): sooner than an hour, not in a tight loop.
RETRY_INTERVAL = 60.0


async def scrub_departed(store: Store, window: timedelta, metrics: Metrics) -> int:
    """Scrub what the feed holds of members who left more than `window` ago; count and log it."""
    scrubbed = await store.scrub_departed(datetime.now(UTC) - window)
    if scrubbed:
        metrics.events_scrubbed.labels(ScrubReason.LEFT.value).inc(scrubbed)
        log.info("feed.departed_scrubbed events=%d window_hours=%d", scrubbed, window // timedelta(hours=1))
    return scrubbed


async def departed_scrub(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the scrubbing task, at start-up and every hour until the app stops."""
    window = timedelta(hours=app[SETTINGS].member_data_after_leave_hours)
    store, metrics = app[STORE], app[METRICS]
    async with running_every(
        app,
        "departed-scrub",
        SCRUB_INTERVAL,
        lambda: scrub_departed(store, window, metrics),
        retry=RETRY_INTERVAL,
        log=log,
        failed="feed.departed_scrub_failed",
    ):
        yield
