"""When each guild's member list is read: one sync per guild at a time, retries, and Discord's 30 s window."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

from bot.sync_progress import (
    GuildLockLostError,
    LinkGoneError,
    SyncedElsewhereError,
    SyncProgress,
    save_phase,
)
from metrics import Metrics
from store import Store, StoreUnavailableError, SyncPhase, SyncState

log = logging.getLogger(__name__)

# A failed sync (database full or read-only, Discord down) is retried with growing waits up to this one, for as
# long as the link lasts: nothing is given up.
RETRY_MAX_WAIT = 300.0

# Reads a guild's members once (member count or None); raises the errors of bot/sync_progress.py.
SyncOnce = Callable[[int, int | None], Awaitable[object]]


class SyncScheduler:
    """Runs each guild's sync as one task until it succeeds or the link goes, waiting between failed tries."""

    def __init__(
        self,
        store: Store,
        sync_once: SyncOnce,
        *,
        retry_first_wait: float,
        locked_retry_wait: float,
        metrics: Metrics,
        on_finished: Callable[[int], None],
    ) -> None:
        self._store = store
        self._sync_once = sync_once
        self._retry_first_wait = retry_first_wait
        self._locked_retry_wait = locked_retry_wait
        self._metrics = metrics
        # Called once a guild's task ends, however it ends: what was kept for its run can go.
        self._on_finished = on_finished
        self._running: dict[int, asyncio.Task[None]] = {}
        # Guilds whose running sync must be followed by another (member events of theirs were dropped).
        self._stale: set[int] = set()

    def is_syncing(self, guild_id: int) -> bool:
        return guild_id in self._running

    def resync(self, guild_id: int) -> None:
        """Read the guild again from scratch (member events of it were dropped unwritten)."""
        if guild_id in self._running:
            # The running sync may have read those members before the events: it is followed by another.
            self._stale.add(guild_id)
        else:
            self.schedule(guild_id)

    def schedule(self, guild_id: int, *, member_count: int | None = None) -> None:
        """Sync the guild soon, unless a sync of it is already running (it reconciles everything)."""
        if guild_id not in self._running:
            self._running[guild_id] = asyncio.create_task(
                self._run(guild_id, member_count), name=f"sync-{guild_id}"
            )

    async def cancel(self, guild_id: int) -> None:
        """Stop the guild's running sync (it was unlinked)."""
        task = self._running.get(guild_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            log.info("sync.cancelled guild=%d", guild_id)

    async def wait_idle(self) -> None:
        """Wait for every scheduled sync to finish (tests and shutdown)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def close(self) -> None:
        for task in self._running.values():
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def _run(self, guild_id: int, member_count: int | None) -> None:
        """Sync until it succeeds or the link goes; each failure is recorded, then retried after a wait."""
        wait = self._retry_first_wait
        scheduled_at = datetime.now(UTC)
        try:
            while True:
                try:
                    started = time.monotonic()
                    await self._sync_once(guild_id, member_count)
                    self._metrics.sync_seconds.observe(time.monotonic() - started)
                    self._metrics.syncs.labels("synced").inc()
                    if guild_id in self._stale:
                        self._stale.discard(guild_id)
                        log.info("sync.again guild=%d: member events were dropped while it ran", guild_id)
                        continue
                    return
                except LinkGoneError:
                    log.info("sync.stopped guild=%d: the link is no longer active", guild_id)
                    self._metrics.syncs.labels("stopped").inc()
                    return
                except SyncedElsewhereError:
                    # Not a failure: someone else is at it. Look again later, since that someone may die
                    # mid-sync (then its lock dies with it); if it finishes, there is nothing left to do.
                    log.info(
                        "sync.locked_elsewhere guild=%d: another process is syncing it, next look in %.0fs",
                        guild_id,
                        self._locked_retry_wait,
                    )
                    await asyncio.sleep(self._locked_retry_wait)
                    if await self._synced_since(guild_id, scheduled_at):
                        log.info("sync.done_elsewhere guild=%d", guild_id)
                        return
                    continue
                except Exception as exc:
                    self._metrics.sync_failures.labels(type(exc).__name__).inc()
                    # The store's reason is safe to log (it names the condition, never a value); the
                    # others' messages may quote what Discord sent.
                    log.warning(
                        "sync.failed guild=%d error=%s reason=%s retry_in=%.0fs",
                        guild_id,
                        type(exc).__name__,
                        exc.reason if isinstance(exc, StoreUnavailableError) else "-",
                        wait,
                    )
                    # Without its lock the guild's state is no longer ours to write: whoever took the lock
                    # may be syncing it, or may have finished.
                    if not isinstance(exc, GuildLockLostError):
                        await self._record_failure(guild_id, member_count, exc)
                await asyncio.sleep(wait)
                wait = min(wait * 2, RETRY_MAX_WAIT)
        finally:
            self._running.pop(guild_id, None)
            self._stale.discard(guild_id)
            self._on_finished(guild_id)

    async def _synced_since(self, guild_id: int, since: datetime) -> bool:
        try:
            sync = await self._store.get_sync_state(guild_id)
        except StoreUnavailableError:
            return False
        # Held is finished too: that sync ended, and its removals wait for a confirmation, not for us.
        if sync is None or sync.phase not in (SyncPhase.SYNCED, SyncPhase.HELD):
            return False
        return (sync.updated_at or since) > since

    async def _record_failure(self, guild_id: int, member_count: int | None, exc: Exception) -> None:
        try:
            await self._store.save_sync_state(
                SyncState(guild_id, SyncPhase.FAILED, member_count=member_count, error=_reason(exc))
            )
        except Exception as store_exc:
            # The store may be what failed; the retry records the outcome once it is back.
            log.warning("sync.failure_not_recorded guild=%d error=%s", guild_id, type(store_exc).__name__)


class MemberListWindow:
    """Discord's one whole-list request per guild per bot per window, booked in the database."""

    def __init__(self, store: Store, *, cooldown: float) -> None:
        self._store = store
        self.cooldown = cooldown

    async def wait_turn(self, progress: SyncProgress) -> None:
        """Wait until the guild's window allows a request, showing the wait in its sync state meanwhile."""
        # In the database: the last request may have come from another process, or from this one before
        # a restart, and Discord counts them all as the bot's.
        wait = await self._store.member_list_wait(progress.guild_id)
        if wait <= 0:
            return
        log.info("sync.cooldown guild=%d wait=%.1f", progress.guild_id, wait)
        # Recorded, so that the success page counts down instead of showing no progress for half a minute.
        now = datetime.now(UTC)
        await save_phase(
            self._store, progress, SyncPhase.WAITING, now, waiting_until=now + timedelta(seconds=wait)
        )
        await asyncio.sleep(wait)
        await save_phase(self._store, progress, SyncPhase.SYNCING, datetime.now(UTC))

    async def note_sent(self, guild_id: int) -> None:
        """A whole-list request went out: the next waits a whole window."""
        await self._store.hold_off_member_list(guild_id, self.cooldown)

    async def note_rate_limited(self, guild_id: int, retry_after: float) -> None:
        """Discord refused a request: its `retry_after`, not our window, decides when the next may go."""
        await self._store.hold_off_member_list(guild_id, retry_after)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
