"""Webhook delivery's state on each engine: a cursor that only moves forward, failures counted, one deliverer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from store import Store, WebhookCursor, open_store


async def test_the_cursor_starts_before_the_first_event(store: Store) -> None:
    assert await store.webhook_cursor() == WebhookCursor(delivered_up_to=0, failures=0, retry_at=None)


async def test_the_cursor_advances_and_never_moves_back(store: Store) -> None:
    await store.advance_webhook_cursor(5)
    await store.advance_webhook_cursor(9)
    await store.advance_webhook_cursor(7)
    assert await store.webhook_cursor() == WebhookCursor(delivered_up_to=9)


async def test_failures_are_counted_until_the_cursor_moves_on(store: Store) -> None:
    await store.advance_webhook_cursor(3)
    first = datetime.now(UTC) + timedelta(seconds=1)
    second = first + timedelta(seconds=2)
    assert await store.note_webhook_failure(first) == 1
    assert await store.note_webhook_failure(second) == 2
    assert await store.webhook_cursor() == WebhookCursor(delivered_up_to=3, failures=2, retry_at=second)
    # The same position again is no progress: the failures stand.
    await store.advance_webhook_cursor(3)
    assert (await store.webhook_cursor()).failures == 2
    await store.advance_webhook_cursor(4)
    assert await store.webhook_cursor() == WebhookCursor(delivered_up_to=4)


async def test_a_failure_before_any_delivery_is_kept(store: Store) -> None:
    retry_at = datetime.now(UTC) + timedelta(minutes=1)
    assert await store.note_webhook_failure(retry_at) == 1
    assert await store.webhook_cursor() == WebhookCursor(delivered_up_to=0, failures=1, retry_at=retry_at)


async def test_the_cursor_survives_reopening_the_database(database_url: str) -> None:
    async with open_store(database_url) as store:
        await store.advance_webhook_cursor(12)
    async with open_store(database_url) as store:
        assert (await store.webhook_cursor()).delivered_up_to == 12


async def test_one_deliverer_at_a_time_and_the_next_takes_over(database_url: str) -> None:
    async with open_store(database_url) as first, open_store(database_url) as second:
        async with first.webhook_delivery_lock() as lost:
            waiting = asyncio.create_task(_hold(second))
            await asyncio.sleep(1.5)
            assert not waiting.done() and not lost.is_set()
        await asyncio.wait_for(waiting, timeout=10)


async def _hold(store: Store) -> None:
    async with store.webhook_delivery_lock() as lost:
        assert not lost.is_set()
