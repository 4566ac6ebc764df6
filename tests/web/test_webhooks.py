"""Webhooks against a real receiver, on each engine: every event, as sent, in order, signed, at least once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from store import MemberChange, MemberChangeKind, Store, SyncPhase, SyncState, WebhookCursor, open_store
from tests.harness import eventually
from tests.store.records import a_link, a_member
from tests.web.receiver import WEBHOOK_SECRET, Receiver, readme_verifier, receiving
from tests.web.serving import AUTH, Served, app_settings, serving
from web.webhooks import DeliveryPolicy

verify = readme_verifier()
# Retries every 0.1 s doubling to 0.8 s: the schedule of production (1 s to 10 minutes), sped up.
FAST = DeliveryPolicy(first_retry=0.1, max_retry=0.8, poll_interval=0.05, save_interval=0.05)


def webhook_env(url: str, **more: str) -> dict[str, str]:
    return {"WEBHOOK_URL": url, "WEBHOOK_SECRET": WEBHOOK_SECRET, **more}


def joined(guild_id: int, user_id: int, **fields: Any) -> MemberChange:
    return MemberChange(
        guild_id, user_id, MemberChangeKind.JOINED, a_member(user_id, **fields), datetime.now(UTC)
    )


def left(guild_id: int, user_id: int) -> MemberChange:
    return MemberChange(guild_id, user_id, MemberChangeKind.LEFT, None, datetime.now(UTC))


async def two_guilds_busy(store: Store, start: int = 0) -> None:
    """Links, syncs and member churn of guilds 7 and 8, interleaved."""
    for guild_id in (7, 8):
        await store.save_link(a_link(guild_id))
        await store.save_sync_state(SyncState(guild_id, SyncPhase.SYNCING, member_count=10))
    for user_id in range(start, start + 20):
        await store.apply_member_changes([joined(7, user_id), joined(8, user_id, nick="<b>nick</b> ✓")])
    await store.apply_member_changes([left(7, start), left(8, start + 1)])
    await store.save_sync_state(SyncState(8, SyncPhase.SYNCED, members_stored=19))


async def feed(served: Served) -> list[dict[str, Any]]:
    """Every event as GET /api/events serves it."""
    events: list[dict[str, Any]] = []
    after = "0"
    async with aiohttp.ClientSession(headers=AUTH) as http:
        while True:
            async with http.get(f"{served.url}/api/events?after={after}&limit=1000") as response:
                body = await response.json()
            events += body["events"]
            after = body["next_after"]
            if not body["has_more"]:
                return events


def deliveries(served: Served, result: str) -> float | None:
    return served.metrics.registry.get_sample_value("guildlink_webhook_deliveries_total", {"result": result})


def by_guild(events: list[dict[str, Any]]) -> dict[str, list[str]]:
    order: dict[str, list[str]] = {}
    for event in events:
        order.setdefault(event["guild_id"], []).append(event["id"])
    return order


def test_retries_wait_1_s_doubling_to_10_minutes_for_24_hours() -> None:
    policy = DeliveryPolicy()
    assert [policy.retry_delay(n) for n in range(1, 13)] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]
    assert policy.retry_delay(10_000) == 600
    assert policy.give_up_after == timedelta(hours=24)


async def test_every_event_arrives_as_sent_in_order_through_failures_signed_by_the_secret(
    database_url: str, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await two_guilds_busy(store)
    # The backend is down for its first five attempts, then takes everything.
    receiver = Receiver(answer=lambda number, event: 500 if number <= 5 else 200)
    async with receiving(receiver):
        settings = app_settings(database_url, webhook_env(receiver.url))
        async with serving(settings, store, webhook_policy=FAST) as served:
            await two_guilds_busy(store, start=100)  # more events while delivery runs
            expected = await feed(served)

            async def all_arrived() -> bool:
                return len(receiver.accepted_once()) >= len(expected)

            await eventually(all_arrived, within=20)
            await eventually(lambda: _cursor_at(store, int(expected[-1]["id"])), within=5)

    # Exactly as the feed serves them, each once, in id order (so in order per guild).
    assert receiver.accepted() == expected
    assert by_guild(receiver.accepted()) == by_guild(expected)
    # The five failures were the first event, tried again and again, with growing waits between tries.
    failed = receiver.attempts[:5]
    assert [a.status for a in failed] == [500] * 5
    assert {a.event["id"] for a in receiver.attempts[:6]} == {expected[0]["id"]}
    waits = [
        later.at - earlier.at
        for earlier, later in zip(receiver.attempts[:5], receiver.attempts[1:6], strict=True)
    ]
    for wait, planned in zip(waits, (0.1, 0.2, 0.4, 0.8, 0.8), strict=True):
        assert planned * 0.9 <= wait <= planned + 0.5, waits
    # Every attempt signed, with the event's id beside it for deduplication.
    for attempt in receiver.attempts:
        assert verify(WEBHOOK_SECRET, attempt.headers["Guildlink-Signature"], attempt.body)
        assert attempt.headers["Guildlink-Event-Id"] == attempt.event["id"]
        assert attempt.headers["Guildlink-Event-Type"] == attempt.event["type"]
        assert attempt.headers["Content-Type"] == "application/json"
        assert attempt.headers["User-Agent"].startswith("guildlink-webhooks/")
    assert await store.webhook_cursor() == WebhookCursor(delivered_up_to=int(expected[-1]["id"]))
    assert deliveries(served, "delivered") == len(expected)
    assert deliveries(served, "failed") == 5
    assert "webhooks.delivery_failed event_id=1 attempt=5 problem=HTTP 500" in caplog.text
    assert WEBHOOK_SECRET not in caplog.text and "/hooks/guildlink" not in caplog.text


async def _cursor_at(store: Store, event_id: int) -> bool:
    return (await store.webhook_cursor()).delivered_up_to == event_id


async def test_a_tampered_body_a_wrong_secret_or_an_old_signature_does_not_verify(
    database_url: str, store: Store
) -> None:
    await store.save_link(a_link(7))
    async with receiving() as receiver:
        settings = app_settings(database_url, webhook_env(receiver.url))
        async with serving(settings, store, webhook_policy=FAST):
            await eventually(lambda: _arrived(receiver, 1), within=10)
    [attempt] = receiver.attempts
    header, body = attempt.headers["Guildlink-Signature"], attempt.body
    signed_at = int(header.split(",")[0].removeprefix("t="))
    assert abs(signed_at - time.time()) < 60
    assert verify(WEBHOOK_SECRET, header, body)

    assert not verify(WEBHOOK_SECRET, header, body.replace(b'"7"', b'"8"'))  # another guild
    assert not verify(WEBHOOK_SECRET, header, body + b" ")
    assert not verify("another-secret-of-the-same-length-" + "s" * 24, header, body)
    # Replayed later: the signature is right but too old.
    assert not verify(WEBHOOK_SECRET, header, body, now=signed_at + 301)
    # The signature moved to a fresh timestamp: it no longer matches.
    assert not verify(WEBHOOK_SECRET, header.replace(f"t={signed_at}", f"t={signed_at + 100}"), body)
    for mangled in ("", "v1=abc", f"t={signed_at}", f"t=soon,{header.split(',')[1]}", "t=1,v1=é"):
        assert not verify(WEBHOOK_SECRET, mangled, body)


async def _arrived(receiver: Receiver, count: int) -> bool:
    return len(receiver.accepted_once()) >= count


async def test_webhook_events_sends_the_matching_types_and_moves_past_the_others(
    database_url: str, store: Store
) -> None:
    async with receiving() as receiver:
        env = webhook_env(receiver.url, WEBHOOK_EVENTS="guild.*")
        async with serving(app_settings(database_url, env), store, webhook_policy=FAST):
            await store.save_link(a_link(7))
            await store.apply_member_changes([joined(7, user_id) for user_id in range(50)])
            await store.deactivate_link(7)
            await store.save_link(a_link(7))
            await store.save_link(a_link(9))
            await store.apply_member_changes([joined(9, 1), left(9, 1)])  # the feed ends with skipped events
            last = (await store.list_events(limit=1000))[-1].id
            await eventually(lambda: _cursor_at(store, last), within=10)
    assert [(e["type"], e["guild_id"]) for e in receiver.accepted()] == [
        ("guild.linked", "7"),
        ("guild.unlinked", "7"),
        ("guild.linked", "7"),
        ("guild.linked", "9"),
    ]


async def test_an_event_undeliverable_for_the_give_up_time_is_logged_counted_and_skipped(
    database_url: str, store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    await store.save_link(a_link(7))
    await store.apply_member_changes([joined(7, 1)])
    await store.apply_member_changes([joined(7, 2)])
    refused = (await store.list_events())[1]
    # The backend refuses one event for good (a bug on its side); the others it takes.
    receiver = Receiver(answer=lambda number, event: 422 if event["id"] == str(refused.id) else 200)
    policy = DeliveryPolicy(
        first_retry=0.05, max_retry=0.2, give_up_after=timedelta(seconds=1.5), poll_interval=0.05
    )
    async with receiving(receiver):
        settings = app_settings(database_url, webhook_env(receiver.url))
        async with serving(settings, store, webhook_policy=policy) as served:
            await eventually(lambda: _arrived(receiver, 2), within=10)
            await eventually(lambda: _cursor_at(store, refused.id + 1), within=5)
    assert [e["data"]["member"]["id"] for e in receiver.accepted()[1:]] == ["2"]
    tries = [a for a in receiver.attempts if a.event["id"] == str(refused.id)]
    assert len(tries) >= 4 and tries[-1].at - tries[0].at < 2.5
    assert f"webhooks.gave_up event_id={refused.id} type=member.joined guild_id=7" in caplog.text
    assert deliveries(served, "gave_up") == 1
    assert (await store.webhook_cursor()).failures == 0


async def test_a_stopped_process_resumes_after_its_last_delivery(database_url: str, store: Store) -> None:
    await two_guilds_busy(store)
    events = await store.list_events(limit=1000)
    receiver = Receiver(delay=0.02)
    async with receiving(receiver):
        settings = app_settings(database_url, webhook_env(receiver.url))
        async with serving(settings, store, webhook_policy=FAST):
            await eventually(lambda: _arrived(receiver, 15), within=10)
        stopped_after = len(receiver.attempts)
        assert stopped_after < len(events)
        async with serving(settings, store, webhook_policy=FAST):
            await eventually(lambda: _arrived(receiver, len(events)), within=20)
    # A stop saves the progress: nothing is sent twice, nothing skipped.
    assert [e["id"] for e in receiver.accepted()] == [str(e.id) for e in events]


async def test_a_restart_keeps_the_backoff_under_way(database_url: str, store: Store) -> None:
    await store.save_link(a_link(7))
    receiver = Receiver(answer=lambda number, event: 503)
    policy = DeliveryPolicy(first_retry=2.0, poll_interval=0.05)
    async with receiving(receiver):
        settings = app_settings(database_url, webhook_env(receiver.url))
        async with serving(settings, store, webhook_policy=policy):
            await eventually(lambda: _failures_stored(store, 1), within=10)
        # Started again at once: the next try waits for the stored retry time, then counts as the second.
        async with serving(settings, store, webhook_policy=policy):
            await eventually(lambda: _failures_stored(store, 2), within=10)
    first, second = receiver.attempts
    assert 1.9 <= second.at - first.at <= 3.5
    cursor = await store.webhook_cursor()
    assert cursor.retry_at is not None
    assert 3 <= (cursor.retry_at - datetime.now(UTC)).total_seconds() <= 4  # then 4 s, doubled


async def _failures_stored(store: Store, failures: int) -> bool:
    return (await store.webhook_cursor()).failures == failures


async def test_only_one_process_delivers_and_another_takes_over_when_it_stops(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with (
        receiving() as receiver,
        open_store(postgres_url) as first_store,
        open_store(postgres_url) as second_store,
    ):
        settings = app_settings(postgres_url, webhook_env(receiver.url))
        first = contextlib.AsyncExitStack()
        await first.enter_async_context(serving(settings, first_store, webhook_policy=FAST))
        await eventually(lambda: _logged(caplog, "webhooks.delivering", 1), within=5)
        async with serving(settings, second_store, webhook_policy=FAST):
            await two_guilds_busy(first_store)
            await two_guilds_busy(second_store, start=100)
            written = len(await first_store.list_events(limit=1000))
            await eventually(lambda: _arrived(receiver, written), within=20)
            await asyncio.sleep(0.3)
            assert caplog.text.count("webhooks.delivering") == 1
            # The first process, the one delivering, stops: the second takes over where it left off.
            await first.aclose()
            await eventually(lambda: _logged(caplog, "webhooks.delivering", 2), within=5)
            await two_guilds_busy(second_store, start=200)
            events = await second_store.list_events(limit=1000)
            await eventually(lambda: _arrived(receiver, len(events)), within=20)
    assert [e["id"] for e in receiver.accepted()] == [str(e.id) for e in events]  # each once, in order


async def _logged(caplog: pytest.LogCaptureFixture, text: str, times: int) -> bool:
    return caplog.text.count(text) == times
