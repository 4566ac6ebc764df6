"""Webhooks: each event of the feed POSTed, signed, to WEBHOOK_URL; at least once, in id order, with retries.

Progress lives in the store (the webhook cursor), so a restart or a crash loses and reorders nothing; only
the holder of the store's delivery lock delivers, so several processes on one PostgreSQL send each event once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import aiohttp
from aiohttp import web

from config import Secret, Settings, masked_url
from metrics import Metrics
from store import Event, Store, StoreUnavailableError
from web.feed import EventTypes, event_json, matched_by
from web.keys import SUPERVISOR

log = logging.getLogger(__name__)

USER_AGENT = "guildlink-webhooks/0.1.0 (+https://github.com/guildlink/guildlink)"
SIGNATURE_HEADER = "Guildlink-Signature"
EVENT_ID_HEADER = "Guildlink-Event-Id"
EVENT_TYPE_HEADER = "Guildlink-Event-Type"
# Events read from the feed at a time.
BATCH = 500
# After the database failed, or the loop met a bug: wait this long before starting again.
RESTART_DELAY = 5.0


# What is read of a receiver's answer, and for how long, before it is dropped with its connection: its status
# is all that counts (a 1 GiB answer read whole once took the process from 70 MiB to 2.1 GiB of RSS), and a
# receiver that trickles its answer must not hold delivery for the whole request timeout, nor turn a 200 into
# a retry.
RESPONSE_READ_LIMIT = 64 * 1024
DRAIN_SECONDS = 2.0


@dataclass(frozen=True)
class DeliveryPolicy:
    """When to retry, give up, look for new events and save progress (tests shorten these)."""

    # Waits between attempts at one event: first_retry, doubling, at most max_retry.
    first_retry: float = 1.0
    max_retry: float = 600.0
    # An event still undelivered this long after it happened is logged and skipped.
    give_up_after: timedelta = timedelta(hours=24)
    poll_interval: float = 0.5
    # Progress is written at most this often while delivering (and at every failure, and when caught up): a
    # crash delivers at most this much again, and the database is not written once per event.
    save_interval: float = 0.5
    request_timeout: float = 10.0

    def retry_delay(self, failures: int) -> float:
        """The wait after the `failures`-th failure in a row of one event."""
        return min(self.max_retry, self.first_retry * 2 ** min(failures - 1, 40))


async def _drain_small(response: aiohttp.ClientResponse) -> bool:
    """Read and drop the answer's body, up to RESPONSE_READ_LIMIT and for DRAIN_SECONDS at most; past either,
    close the connection (False): a receiver that streams gigabytes, or trickles, costs neither memory nor time."""
    left = RESPONSE_READ_LIMIT
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            while left >= 0:
                chunk = await response.content.read(min(left + 1, 16_384))
                if not chunk:
                    return True
                left -= len(chunk)
    except (aiohttp.ClientError, TimeoutError):
        pass
    response.close()
    return False


def signature_header(secret: bytes, timestamp: int, body: bytes) -> str:
    """`t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: the receiver checks both, as Stripe's do."""
    mac = hmac.new(secret, b"%d." % timestamp + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


class WebhookDeliverer:
    """The delivery loop: reads the feed after the stored cursor and POSTs what `types` matches, in order."""

    def __init__(
        self,
        store: Store,
        session: aiohttp.ClientSession,
        *,
        url: str,
        secret: Secret,
        types: EventTypes,
        metrics: Metrics,
        policy: DeliveryPolicy,
    ) -> None:
        self._store = store
        self._session = session
        self._url = url
        self._secret = secret.reveal().encode()
        self._types = types
        self._delivered = metrics.webhook_deliveries.labels("delivered")
        self._failed = metrics.webhook_deliveries.labels("failed")
        self._gave_up = metrics.webhook_deliveries.labels("gave_up")
        self._policy = policy
        self._position = 0  # every event up to here was delivered or skipped
        self._saved = 0  # ... and up to here the store knows it
        self._saved_at = 0.0
        # Set when the app stops: the POST in flight is finished and saved, so a restart repeats nothing.
        self._stopping = asyncio.Event()
        self.posting = False

    def stop(self) -> None:
        """Finish the POST under way, save the progress and return from run()."""
        self._stopping.set()

    async def run(self) -> None:
        """Deliver for as long as the app runs: while this process holds the delivery lock, else wait for it."""
        while not self._stopping.is_set():
            try:
                async with self._store.webhook_delivery_lock() as lost:
                    log.info("webhooks.delivering url=%s", masked_url(self._url))
                    await self._deliver_while_held(lost)
                if lost.is_set():
                    log.warning("webhooks.lock_lost: another process may deliver now; waiting to take over")
            except StoreUnavailableError as exc:
                log.warning("webhooks.store_unavailable reason=%s", exc.reason)
                await self._pause(RESTART_DELAY)
            except Exception:
                log.exception("webhooks.loop_failed")
                await self._pause(RESTART_DELAY)

    async def _deliver_while_held(self, lost: asyncio.Event) -> None:
        cursor = await self._store.webhook_cursor()
        self._position = self._saved = cursor.delivered_up_to
        self._saved_at = time.monotonic()
        # A backoff under way before a restart goes on where it was.
        if cursor.retry_at and not await self._pause(_seconds_until(cursor.retry_at), lost):
            return
        try:
            await self._deliver_events(cursor.failures, lost)
        finally:
            if not lost.is_set():
                try:
                    await self._save()
                except StoreUnavailableError as exc:
                    log.warning(
                        "webhooks.progress_not_saved event_id=%d reason=%s", self._position, exc.reason
                    )

    async def _deliver_events(self, failures: int, lost: asyncio.Event) -> None:
        while not self._halted(lost):
            events = await self._store.list_events(after=self._position, limit=BATCH)
            if not events:
                await self._save()
                await self._pause(self._policy.poll_interval, lost)
                continue
            for event in events:
                if self._halted(lost):
                    return
                if event.type in self._types:
                    if not await self._deliver(event, failures, lost):
                        return
                    failures = 0
                self._position = event.id
                if time.monotonic() - self._saved_at >= self._policy.save_interval:
                    await self._save()

    async def _deliver(self, event: Event, failures: int, lost: asyncio.Event) -> bool:
        """POST `event` until it is taken or given up (True), or until the lock is lost or we stop (False)."""
        body = json.dumps(event_json(event), separators=(",", ":")).encode()
        while not self._halted(lost):
            self.posting = True
            try:
                problem = await self._post(event, body)
            finally:
                self.posting = False
            if problem is None:
                self._delivered.inc()
                if failures:
                    # The stored failures and retry time go with this save.
                    self._position = event.id
                    await self._save()
                return True
            failures += 1
            self._failed.inc()
            now = datetime.now(UTC)
            if now - event.created_at >= self._policy.give_up_after:
                log.error(
                    "webhooks.gave_up event_id=%d type=%s guild_id=%d attempts=%d problem=%s",
                    event.id,
                    event.type.value,
                    event.guild_id,
                    failures,
                    problem,
                )
                self._gave_up.inc()
                self._position = event.id
                await self._save()
                return True
            delay = self._policy.retry_delay(failures)
            await self._save()
            await self._store.note_webhook_failure(now + timedelta(seconds=delay))
            log.warning(
                "webhooks.delivery_failed event_id=%d attempt=%d problem=%s retry_in=%.1fs",
                event.id,
                failures,
                problem,
                delay,
            )
            if not await self._pause(delay, lost):
                return False
        return False

    async def _post(self, event: Event, body: bytes) -> str | None:
        """One attempt; None if the receiver took it (2xx), else what went wrong."""
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: signature_header(self._secret, int(time.time()), body),
            EVENT_ID_HEADER: str(event.id),
            EVENT_TYPE_HEADER: event.type.value,
        }
        try:
            # No redirects: the receiver is configured, not discovered, and a redirect would resend the body.
            async with self._session.post(
                self._url, data=body, headers=headers, allow_redirects=False
            ) as response:
                # The status decides; the body is only drained so that the connection can be used again.
                if not await _drain_small(response):
                    log.info(
                        "webhooks.answer_dropped event_id=%d status=%d: over %d bytes or %.0f s",
                        event.id,
                        response.status,
                        RESPONSE_READ_LIMIT,
                        DRAIN_SECONDS,
                    )
                return None if 200 <= response.status < 300 else f"HTTP {response.status}"
        except (aiohttp.ClientError, TimeoutError) as exc:
            return type(exc).__name__

    async def _save(self) -> None:
        if self._position > self._saved:
            await self._store.advance_webhook_cursor(self._position)
            self._saved = self._position
        self._saved_at = time.monotonic()

    def _halted(self, lost: asyncio.Event) -> bool:
        return lost.is_set() or self._stopping.is_set()

    async def _pause(self, seconds: float, lost: asyncio.Event | None = None) -> bool:
        """Sleep `seconds`; False (at once) if the lock is lost or we stop meanwhile."""
        wakers = [asyncio.create_task(self._stopping.wait())]
        if lost is not None:
            wakers.append(asyncio.create_task(lost.wait()))
        try:
            done, _ = await asyncio.wait(
                wakers, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for waker in wakers:
                waker.cancel()
        return not done


def _seconds_until(moment: datetime) -> float:
    return (moment - datetime.now(UTC)).total_seconds()


def webhook_delivery(
    settings: Settings, store: Store, metrics: Metrics, policy: DeliveryPolicy
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup_ctx that runs the delivery loop, with its own HTTP client, while the app runs."""
    url, secret = settings.webhook_url, settings.webhook_secret
    assert url is not None and secret is not None
    for pattern in settings.webhook_events:
        if not matched_by(pattern):
            log.warning("webhooks.pattern_matches_nothing pattern=%s", pattern)
    types = EventTypes.matching(settings.webhook_events)

    async def deliver(app: web.Application) -> AsyncIterator[None]:
        timeout = aiohttp.ClientTimeout(total=policy.request_timeout, sock_connect=policy.request_timeout / 2)
        # Answers are never decompressed: their bodies are dropped, and a small gzip can inflate to gigabytes.
        async with aiohttp.ClientSession(
            headers={"User-Agent": USER_AGENT},
            timeout=timeout,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
        ) as session:
            deliverer = WebhookDeliverer(
                store, session, url=url, secret=secret, types=types, metrics=metrics, policy=policy
            )
            task = app[SUPERVISOR].spawn("webhook-delivery", deliverer.run)
            yield
            deliverer.stop()
            if deliverer.posting:
                # Its answer decides whether the event is sent again after a restart: wait for it, no longer
                # than one request may take. Anything else (a wait for the lock, a pause) simply ends.
                await asyncio.wait({task}, timeout=policy.request_timeout + 1)
            task.cancel()
            await asyncio.wait({task})

    return deliver
