"""A receiver that answers with an endless body costs us no memory: the answer is read up to a cap, then dropped."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from aiohttp import web

from store import open_store
from tests.harness import eventually
from tests.rss import PeakRss
from tests.store.records import a_link
from tests.web.receiver import WEBHOOK_SECRET, posted_to
from tests.web.serving import app_settings, serving
from tests.web.test_webhooks import FAST

log = logging.getLogger(__name__)

ANSWER_BYTES = 256 * 1024 * 1024


@contextlib.asynccontextmanager
async def flooding_receiver() -> AsyncIterator[tuple[str, list[int]]]:
    """A receiver that takes each POST, then answers 200 with 256 MiB (as fast as we read it)."""
    posts: list[int] = []
    chunk = b"x" * (1024 * 1024)

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        posts.append(1)
        response = web.StreamResponse(status=200)
        response.content_length = ANSWER_BYTES
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(ANSWER_BYTES // len(chunk)):
                await response.write(chunk)
        return response

    async with posted_to(handle) as url:
        yield url, posts


async def test_a_huge_answer_is_not_read_and_the_events_are_delivered(
    tmp_path: Path, record_property
) -> None:
    database_url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    async with flooding_receiver() as (url, posts), open_store(database_url) as store:
        watch = PeakRss()
        env = {"WEBHOOK_URL": url, "WEBHOOK_SECRET": WEBHOOK_SECRET}
        async with serving(app_settings(database_url, env), store, webhook_policy=FAST):
            for guild_id in (1, 2, 3):
                await store.save_link(a_link(guild_id))

            async def all_delivered() -> bool:
                return (await store.webhook_cursor()).delivered_up_to == 3

            await eventually(all_delivered, within=30)
    growth = watch.stop()
    record_property("peak_rss_growth_mib", round(growth, 1))
    log.info("webhook_answer_size peak_rss_growth_mib=%.1f answer_mib=%d", growth, ANSWER_BYTES // 2**20)
    assert len(posts) == 3
    # Reading each 256 MiB answer whole grew the process by at least that much.
    assert growth < 64, f"the process grew by {growth:.0f} MiB while receivers answered 256 MiB each"
