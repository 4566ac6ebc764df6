"""The event feed kept to EVENT_RETENTION_DAYS: older events are deleted at start-up and every hour.

What pruning deletes before the webhooks delivered it is lost to them for good: counted and logged as an error.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from aiohttp import web

from metrics import Metrics
from store import PrunedEvents, Store
from web.feed import EventTypes
from web.keys import METRICS, SETTINGS, STORE
from web.periodic import running_every

log = logging.getLogger(__name__)

PRUNE_INTERVAL = 3600.0
# After a failed prune (the database refused the write): sooner than an hour, not in a tight loop.
RETRY_INTERVAL = 60.0


async def prune_old_events(
    store: Store, retention: timedelta, metrics: Metrics, webhook_types: EventTypes | None = None
) -> PrunedEvents:
    """Delete the events older than `retention`; count and log those webhooks (sending `webhook_types`) never sent."""
    pruned = await store.prune_events(datetime.now(UTC) - retention)
    if not pruned.count:
        return pruned
    metrics.events_pruned.inc(pruned.count)
    log.info(
        "feed.pruned events=%d up_to_id=%d retention_days=%d", pruned.count, pruned.up_to, retention.days
    )
    if webhook_types is not None:
        lost = sum(count for kind, count in pruned.undelivered.items() if kind in webhook_types)
        if lost:
            metrics.webhook_deliveries.labels("pruned").inc(lost)
            log.error(
                "webhooks.pruned_undelivered events=%d from_id=%s up_to_id=%d retention_days=%d:"
                " deleted by the retention before the receiver took them",
                lost,
                pruned.first_undelivered,
                pruned.up_to,
                retention.days,
            )
    return pruned


async def feed_pruning(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the pruning task, from start-up until the app stops."""
    settings = app[SETTINGS]
    retention = timedelta(days=settings.event_retention_days)
    webhook_types = EventTypes.matching(settings.webhook_events) if settings.webhook_url else None
    store, metrics = app[STORE], app[METRICS]
    async with running_every(
        app,
        "feed-pruning",
        PRUNE_INTERVAL,
        lambda: prune_old_events(store, retention, metrics, webhook_types),
        retry=RETRY_INTERVAL,
        log=log,
        failed="feed.prune_failed",
    ):
        yield
