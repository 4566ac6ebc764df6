"""Webhooks against receivers that misbehave, on each engine: a huge or endless answer, one event refused for
good (every later one waits behind it, and /metrics and /readyz say how long)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from store import MemberChange, MemberChangeKind, Store
from tests.harness import eventually
from tests.store.records import a_link, a_member
from tests.web.receiver import WEBHOOK_SECRET, posted_to
from tests.web.serving import AUTH, Served, app_settings, serving
from web.feed import EventTypes
from web.feed_pruning import prune_old_events
from web.webhooks import DeliveryPolicy

FAST = DeliveryPolicy(first_retry=0.05, max_retry=0.2, poll_interval=0.05, save_interval=0.05)
HUGE_ANSWER = 200 * 1024 * 1024
MiB = 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def webhook_settings(database_url: str, url: str, **more: str) -> dict[str, str]:
    return {"WEBHOOK_URL": url, "WEBHOOK_SECRET": WEBHOOK_SECRET, **more}


def joined(guild_id: int, user_id: int) -> MemberChange:
    return MemberChange(guild_id, user_id, MemberChangeKind.JOINED, a_member(user_id), datetime.now(UTC))


def deliveries(served: Served, result: str) -> float:
    value = served.metrics.registry.get_sample_value("guildlink_webhook_deliveries_total", {"result": result})
    return value or 0.0


def memory_kib(field: str) -> int:
    """VmRSS (now) or VmHWM (the peak since the last reset) of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/self/status")


def reset_peak_memory() -> int:
    """Make VmHWM measure from now (Linux: 5 in clear_refs resets it to VmRSS); return VmRSS in KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return memory_kib("VmRSS")


async def test_a_receiver_streaming_200_mb_answers_costs_no_memory_and_each_event_counts_as_delivered(
    database_url: str, store: Store
) -> None:
    sent: list[int] = []

    async def stream_huge_answers(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=200)
        response.content_length = HUGE_ANSWER
        await response.prepare(request)
        chunk, written = b"x" * (1024 * 1024), 0
        sent.append(0)
        # The writes wait while we do not read; once we drop the connection they fail, and the answer ends.
        with contextlib.suppress(ConnectionError):
            while written < HUGE_ANSWER:
                await response.write(chunk)
                written += len(chunk)
                sent[-1] = written
        return response

    await store.save_link(a_link(7))
    await store.apply_member_changes([joined(7, 1), joined(7, 2)])
    gc.collect()
    before = reset_peak_memory()
    async with posted_to(stream_huge_answers) as url:
        settings = app_settings(database_url, webhook_settings(database_url, url))
        async with serving(settings, store, webhook_policy=FAST) as served:

            async def all_delivered() -> bool:
                return deliveries(served, "delivered") == 3

            await eventually(all_delivered, within=30)
    growth_mib = (memory_kib("VmHWM") - before) / 1024
    print(f"peak RSS growth while three receivers' answers streamed 200 MB each: {growth_mib:.1f} MiB")
    # Read whole, one answer alone would have taken 200 MiB; a capped read takes kilobytes (the rest is the
    # app, its client and the receiver's own buffers).
    assert growth_mib < 40, growth_mib
    # No answer was read to its end: each connection was dropped past the cap.
    assert len(sent) == 3 and all(count < HUGE_ANSWER for count in sent), sent
    assert deliveries(served, "failed") == 0


async def test_a_receiver_that_trickles_its_answer_delays_the_next_event_by_seconds_not_forever(
    database_url: str, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    endless = asyncio.Event()

    async def trickle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            while not endless.is_set():
                await response.write(b".")
                await asyncio.sleep(0.2)
        return response

    await store.save_link(a_link(7))
    await store.apply_member_changes([joined(7, 1)])
    last = (await store.list_events())[-1].id
    async with posted_to(trickle) as url:
        settings = app_settings(database_url, webhook_settings(database_url, url))
        async with serving(settings, store, webhook_policy=FAST) as served:

            async def cursor_at_last() -> bool:
                return (await store.webhook_cursor()).delivered_up_to == last

            await eventually(cursor_at_last, within=30)
        endless.set()
    assert deliveries(served, "delivered") == 2 and deliveries(served, "failed") == 0
    assert caplog.text.count("webhooks.answer_dropped event_id=") == 2


def scraped(text: str) -> dict[str, float]:
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


async def test_one_refused_event_holds_back_every_later_one_and_metrics_and_readyz_show_the_lag(
    database_url: str, store: Store
) -> None:
    await store.save_link(a_link(7))
    await store.save_link(a_link(8))
    await store.apply_member_changes([joined(8, user_id) for user_id in range(5)])
    refused = (await store.list_events())[0]

    async def refuse_the_first(request: web.Request) -> web.Response:
        body = await request.json()
        return web.Response(status=422 if body["id"] == str(refused.id) else 200)

    async with posted_to(refuse_the_first) as url:
        env = {**webhook_settings(database_url, url), "METRICS": "open"}
        async with (
            serving(app_settings(database_url, env), store, webhook_policy=FAST) as served,
            aiohttp.ClientSession(headers=AUTH) as http,
        ):

            async def failing() -> bool:
                return (await store.webhook_cursor()).failures >= 2

            await eventually(failing, within=10)

            async def readyz_says_so() -> dict[str, Any]:
                async with http.get(f"{served.url}/readyz") as response:
                    details: dict[str, Any] = (await response.json())["webhooks"]
                return details if details["failures"] else {}

            details = await eventually(readyz_says_so, within=10)
            # Guild 8's events wait behind guild 7's refused one: head of the line.
            assert details["backlog_events"] == 7
            age = details["oldest_undelivered_age_seconds"]
            assert isinstance(age, float) and age >= 0
            async with http.get(f"{served.url}/metrics") as response:
                found = scraped(await response.text())
            assert found["guildlink_webhook_backlog_events"] == 7
            assert found["guildlink_webhook_consecutive_failures"] >= 1
            assert found["guildlink_webhook_oldest_undelivered_age_seconds"] >= 0
            assert deliveries(served, "delivered") == 0


async def test_readyz_has_no_webhook_details_while_webhooks_are_off(database_url: str, store: Store) -> None:
    async with (
        serving(app_settings(database_url), store) as served,
        aiohttp.ClientSession() as http,
        http.get(f"{served.url}/readyz") as response,
    ):
        assert (await response.json())["webhooks"] is None


async def test_pruning_events_the_webhooks_never_delivered_counts_and_logs_them(
    database_url: str, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await store.save_link(a_link(7))
    await store.apply_member_changes([joined(7, user_id) for user_id in range(20)])
    events = await store.list_events()
    await store.advance_webhook_cursor(events[0].id)  # the link was delivered, no member event yet
    async with serving(app_settings(database_url), store) as served:
        # Webhooks send guild events only: the member events were never to be delivered.
        guild_only = await prune_old_events(
            store, timedelta(seconds=-1), served.metrics, EventTypes.matching(["guild.*"])
        )
        assert guild_only.count == 21 and deliveries(served, "pruned") == 0
        await store.apply_member_changes([joined(7, user_id) for user_id in range(20, 23)])
        pruned = await prune_old_events(
            store, timedelta(seconds=-1), served.metrics, EventTypes.matching(["*"])
        )
    assert pruned.count == 3 and deliveries(served, "pruned") == 3
    assert served.metrics.registry.get_sample_value("guildlink_feed_pruned_events_total") == 24
    assert f"webhooks.pruned_undelivered events=3 from_id={events[-1].id + 1} " in caplog.text
