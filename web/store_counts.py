"""What /metrics and /readyz read from the store, counted at most once per COUNT_INTERVAL however often asked.

A scrape or probe never reads every link: the database counts them in one query, and twenty scrapes at once
share one count.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Generic, TypeVar

from store import Store, WebhookBacklog, WebhookCursor

COUNT_INTERVAL = 5.0

T = TypeVar("T")


class Recent(Generic[T]):
    """An async reading kept for `interval` seconds; those who ask while it is read wait for that one read."""

    def __init__(self, read: Callable[[], Awaitable[T]], interval: float) -> None:
        self._read = read
        self._interval = interval
        self._lock = asyncio.Lock()
        self._value: T | None = None
        self._read_at = float("-inf")

    async def get(self) -> T:
        async with self._lock:
            if self._value is None or time.monotonic() - self._read_at >= self._interval:
                self._value = await self._read()
                self._read_at = time.monotonic()
            return self._value


@dataclass(frozen=True)
class WebhookLag:
    """How far webhook delivery is behind the feed: the events after its cursor and the next one's failures."""

    backlog: WebhookBacklog
    cursor: WebhookCursor

    def oldest_age(self, now: datetime | None = None) -> float:
        """Seconds since the oldest undelivered event was written; 0 with none."""
        if self.backlog.oldest_at is None:
            return 0.0
        return max(0.0, ((now or datetime.now(UTC)) - self.backlog.oldest_at).total_seconds())


class StoreCounts:
    """The link counts, and (when webhooks are on) the delivery lag, each read at most once per interval."""

    def __init__(self, store: Store, *, webhooks: bool, interval: float = COUNT_INTERVAL) -> None:
        self._store = store
        self.links = Recent(store.count_links, interval)
        self.webhook_lag = Recent(self._webhook_lag, interval) if webhooks else None

    async def _webhook_lag(self) -> WebhookLag:
        return WebhookLag(await self._store.webhook_backlog(), await self._store.webhook_cursor())
