"""Reading a guild's whole member list into the store, within Discord's one-request-per-30-s rule."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from bot.payloads import member_from_payload
from bot.read_valve import ReadValve
from metrics import Metrics
from store import GuildLock, HoldRule, Member, Store, StoreUnavailableError, SyncPhase, SyncState

log = logging.getLogger(__name__)

# Discord answers a second whole-list request for a guild within this window with RATE_LIMITED.
MEMBER_LIST_COOLDOWN = 30.0
CHUNK_TIMEOUT = 20.0
REST_PAGE_SIZE = 1000
MAX_GATEWAY_ATTEMPTS = 3
# When op 8 would wait this long for the connection's command budget (a burst of links), a guild small
# enough to read in a few REST pages is read that way instead, so its sync starts within seconds.
GATEWAY_WAIT_BEFORE_REST = 5.0
REST_OVERFLOW_MAX_MEMBERS = 5 * REST_PAGE_SIZE
# A failed sync (database full or read-only, Discord down) is retried with growing waits, for as long as
# the link lasts: nothing is given up.
RETRY_FIRST_WAIT = 5.0
RETRY_MAX_WAIT = 300.0
# Our op 8 nonces start with this, so a chunk of a cancelled request is known as ours and dropped.
NONCE_PREFIX = "gl-"
# How often a sync that another process holds the guild's lock for looks again (that process may die).
LOCKED_RETRY_WAIT = 10.0


class LinkGoneError(Exception):
    """The guild's link became inactive while it was being synced: stop, keep nothing."""


class SyncedElsewhereError(Exception):
    """Another process (or store) holds the guild's sync lock: it is syncing the guild now."""


class GuildLockLostError(Exception):
    """The guild's sync lock was lost mid-sync (its database session ended): another process may take over."""


class SyncAbandonedError(Exception):
    """The database fell so far behind the guild's chunks that they were dropped: the sync starts again later."""

    def __init__(self, guild_id: int) -> None:
        super().__init__(
            f"guild {guild_id}: the database fell behind the gateway, so its chunks were dropped"
        )


class ChunkRequester(Protocol):
    def gateway_wait(self, guild_id: int) -> float:
        """Roughly how long an op 8 for the guild would wait for its connection's command budget."""

    async def request_whole_list(self, guild_id: int, nonce: str) -> None:
        """Send REQUEST_GUILD_MEMBERS (op 8) for every member of the guild, within the command budget."""

    async def fetch_member_page(self, guild_id: int, after: int) -> Sequence[Mapping[str, Any]]:
        """`GET /guilds/{id}/members?limit=1000&after=` through the REST API."""


@dataclass
class _ChunkRequest:
    """One whole-list request in flight: chunks flow through `chunks` to the writer.

    The valve counts every member in `chunks` and the chunk being written, with the other producers': past
    its cap the gateway stops being read, so the queue is bounded although the parser cannot wait.
    """

    guild_id: int
    nonce: str
    valve: ReadValve
    # Each chunk with the time it arrived: Discord's view of those members then.
    chunks: asyncio.Queue[tuple[datetime, list[Member]] | None] = field(default_factory=asyncio.Queue)
    # Members in `chunks` (not the chunk being written): what abandoning the request frees.
    queued: int = 0
    received: int = 0
    rate_limited: float | None = None
    abandoned: bool = False

    def put(self, received_at: datetime, members: list[Member]) -> None:
        if self.abandoned:
            return
        self.chunks.put_nowait((received_at, members))
        self.queued += len(members)
        self.valve.grow(len(members))

    def take(self, chunk: tuple[datetime, list[Member]]) -> list[Member]:
        """The writer has taken the chunk: it counts as being written, no longer as queued."""
        self.queued -= len(chunk[1])
        return chunk[1]

    def drop_queued(self) -> None:
        while not self.chunks.empty():
            self.chunks.get_nowait()
        self.valve.shrink(self.queued)
        self.queued = 0

    def abandon(self) -> None:
        """Drop the queued chunks and those still to come; the writer stops after the chunk it is writing."""
        self.abandoned = True
        self.drop_queued()
        self.chunks.put_nowait(None)


class GatewayRateLimitedError(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"RATE_LIMITED, retry after {retry_after:.1f}s")
        self.retry_after = retry_after


class MemberSync:
    """Syncs guilds one request at a time each, streaming chunks from the socket to the store."""

    def __init__(
        self,
        store: Store,
        requester: ChunkRequester,
        *,
        cooldown: float = MEMBER_LIST_COOLDOWN,
        chunk_timeout: float = CHUNK_TIMEOUT,
        retry_first_wait: float = RETRY_FIRST_WAIT,
        locked_retry_wait: float = LOCKED_RETRY_WAIT,
        hold: HoldRule | None = None,
        metrics: Metrics | None = None,
        valve: ReadValve | None = None,
    ) -> None:
        self._store = store
        self._requester = requester
        self._cooldown = cooldown
        self._chunk_timeout = chunk_timeout
        self._retry_first_wait = retry_first_wait
        self._locked_retry_wait = locked_retry_wait
        self._hold = hold or HoldRule()
        self._metrics = metrics or Metrics()
        # Alone (no bot around it), nothing to pause: the valve only counts.
        self._valve = valve or ReadValve(lambda paused: None, cap=2**62, max_pause=CHUNK_TIMEOUT)
        self._valve.add_shedder(self._abandon_buffering)
        self._requests: dict[str, _ChunkRequest] = {}
        self._running: dict[int, asyncio.Task[None]] = {}
        # Members removed while a sync runs: a later chunk must not bring them back.
        self._removed: dict[int, set[int]] = {}
        # Guilds whose running sync must be followed by another (member events of theirs were dropped).
        self._stale: set[int] = set()

    # Raw gateway dispatches, called synchronously from discord.py's parser table.

    def on_members_chunk(self, data: Mapping[str, Any]) -> bool:
        """Take a GUILD_MEMBERS_CHUNK of ours; False if the chunk answers someone else's request."""
        nonce = str(data.get("nonce"))
        request = self._requests.get(nonce)
        if request is None or request.abandoned:
            # A chunk of a request we gave up (the guild was unlinked, the database fell behind): drop it.
            return request is not None or nonce.startswith(NONCE_PREFIX)
        removed = self._removed.get(request.guild_id, set())
        members = [member_from_payload(m) for m in data.get("members", ())]
        request.put(datetime.now(UTC), [m for m in members if m.user_id not in removed])
        request.received += 1
        if request.received >= int(data.get("chunk_count", 1)):
            request.chunks.put_nowait(None)
        return True

    def on_rate_limited(self, data: Mapping[str, Any]) -> None:
        """RATE_LIMITED for our op 8: wake the sync so that it waits `retry_after` and asks again."""
        meta = data.get("meta") or {}
        request = self._requests.get(str(meta.get("nonce")))
        if request is None or data.get("opcode") != 8:
            log.warning("sync.rate_limited_unmatched opcode=%s", data.get("opcode"))
            return
        self._metrics.rate_limited.inc()
        request.rate_limited = float(data.get("retry_after", self._cooldown))
        request.chunks.put_nowait(None)

    def note_member_removed(self, guild_id: int, user_id: int) -> None:
        if guild_id in self._running:
            self._removed.setdefault(guild_id, set()).add(user_id)

    def _abandon_buffering(self) -> None:
        """The valve's shedder: give up the syncs holding chunks, the largest first, until it is back to half."""
        for request in sorted(self._requests.values(), key=lambda r: r.queued, reverse=True):
            if not self._valve.above_resume_mark() or request.queued == 0:
                return
            log.warning(
                "sync.abandoned guild=%d chunks_dropped_members=%d: the database is behind, resync later",
                request.guild_id,
                request.queued,
            )
            request.abandon()

    # Scheduling

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
        """Stop the guild's running sync (it was unlinked); chunks still arriving are dropped."""
        task = self._running.get(guild_id)
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            log.info("sync.cancelled guild=%d", guild_id)

    async def _run(self, guild_id: int, member_count: int | None) -> None:
        """Sync until it succeeds or the link goes; each failure is recorded, then retried after a wait."""
        wait = self._retry_first_wait
        scheduled_at = datetime.now(UTC)
        try:
            while True:
                try:
                    started = time.monotonic()
                    await self.sync(guild_id, member_count=member_count)
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
            self._removed.pop(guild_id, None)
            self._stale.discard(guild_id)

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

    async def wait_idle(self) -> None:
        """Wait for every scheduled sync to finish (tests and shutdown)."""
        while self._running:
            await asyncio.gather(*self._running.values(), return_exceptions=True)

    async def close(self) -> None:
        for task in self._running.values():
            task.cancel()
        await asyncio.gather(*self._running.values(), return_exceptions=True)

    # One sync

    async def sync(self, guild_id: int, *, member_count: int | None = None) -> int:
        """Read every member of the guild into the store, drop those not seen; return the count.

        Raise LinkGoneError if the guild's link is (or becomes) inactive; nothing is kept then. Raise
        SyncedElsewhereError if another process holds the guild's sync lock.
        """
        # Held for the whole sync, every chunk's transaction included: two processes never read one guild
        # at once (each would spend the guild's one whole-list request, and each would drop as "not seen"
        # what the other one wrote).
        lock = await self._store.try_lock_guild(guild_id)
        if lock is None:
            raise SyncedElsewhereError(guild_id)
        try:
            return await self._sync_holding(guild_id, member_count, lock)
        finally:
            await lock.release()

    async def _sync_holding(self, guild_id: int, member_count: int | None, lock: GuildLock) -> int:
        started = datetime.now(UTC)
        if not await self._store.save_sync_state(
            SyncState(guild_id, SyncPhase.SYNCING, member_count=member_count, updated_at=started)
        ):
            raise LinkGoneError(guild_id)
        link = await self._store.get_link(guild_id)
        progress = _Progress(guild_id, link.guild_name if link else "?", member_count, lock)
        small = member_count is not None and member_count <= REST_OVERFLOW_MAX_MEMBERS
        if small and self._requester.gateway_wait(guild_id) > GATEWAY_WAIT_BEFORE_REST:
            log.info("sync.via_rest guild=%d: the gateway's command budget is busy", guild_id)
            await self._via_rest(guild_id, progress)
        else:
            try:
                await self._via_gateway(guild_id, progress)
            except (TimeoutError, GatewayRateLimitedError, ConnectionError) as exc:
                log.warning("sync.gateway_failed guild=%d error=%s: using REST", guild_id, exc)
                await self._via_rest(guild_id, progress)
        progress.check_lock()
        # The removals, their member.left events and the final state in one transaction; a suspicious
        # share of removals (Discord's list came back short?) is held for confirmation instead.
        outcome = await self._store.finish_sync(guild_id, started, self._hold)
        if outcome is None:
            raise LinkGoneError(guild_id)
        if outcome.held:
            self._metrics.syncs_held.inc()
            log.warning(
                "sync.held guild=%d members=%d would_remove=%d: confirm with POST /api/guilds/%d/sync/confirm",
                guild_id,
                outcome.members,
                outcome.held,
                guild_id,
            )
        log.info(
            "sync.done guild=%d members=%d removed=%d held=%d seconds=%.1f",
            guild_id,
            outcome.members,
            outcome.removed,
            outcome.held,
            progress.elapsed(),
        )
        return outcome.members

    async def _wait_for_cooldown(self, guild_id: int, progress: _Progress) -> None:
        # In the database: the last request may have come from another process, or from this one before
        # a restart, and Discord counts them all as the bot's.
        wait = await self._store.member_list_wait(guild_id)
        if wait <= 0:
            return
        log.info("sync.cooldown guild=%d wait=%.1f", guild_id, wait)
        # Recorded, so that the success page counts down instead of showing no progress for half a minute.
        now = datetime.now(UTC)
        await self._save_progress(
            progress, SyncPhase.WAITING, now, waiting_until=now + timedelta(seconds=wait)
        )
        await asyncio.sleep(wait)
        await self._save_progress(progress, SyncPhase.SYNCING, datetime.now(UTC))

    async def _save_progress(
        self, progress: _Progress, phase: SyncPhase, now: datetime, *, waiting_until: datetime | None = None
    ) -> None:
        state = SyncState(
            progress.guild_id,
            phase,
            members_stored=progress.stored,
            member_count=progress.expected,
            updated_at=now,
            waiting_until=waiting_until,
        )
        if not await self._store.save_sync_state(state):
            raise LinkGoneError(progress.guild_id)

    async def _via_gateway(self, guild_id: int, progress: _Progress) -> None:
        for attempt in range(1, MAX_GATEWAY_ATTEMPTS + 1):
            await self._wait_for_cooldown(guild_id, progress)
            request = _ChunkRequest(guild_id, NONCE_PREFIX + secrets.token_hex(12), self._valve)
            self._requests[request.nonce] = request
            try:
                await self._requester.request_whole_list(guild_id, request.nonce)
                # After the send: the request may have waited for the command budget first.
                await self._store.hold_off_member_list(guild_id, self._cooldown)
                await self._drain(request, progress)
            finally:
                del self._requests[request.nonce]
                request.drop_queued()
            if request.rate_limited is None:
                return
            log.warning(
                "sync.rate_limited guild=%d retry_after=%.1f attempt=%d",
                guild_id,
                request.rate_limited,
                attempt,
            )
            # Discord's window, not ours, decides when the next request may go.
            await self._store.hold_off_member_list(guild_id, request.rate_limited)
        raise GatewayRateLimitedError(request.rate_limited or self._cooldown)

    async def _drain(self, request: _ChunkRequest, progress: _Progress) -> None:
        while True:
            chunk = await self._next_chunk(request)
            if request.abandoned:
                raise SyncAbandonedError(request.guild_id)
            if chunk is None:
                return
            members = request.take(chunk)
            try:
                await self._write(request.guild_id, members, progress, chunk[0])
            finally:
                self._valve.shrink(len(members))

    async def _next_chunk(self, request: _ChunkRequest) -> tuple[datetime, list[Member]] | None:
        while True:
            # Every wait is bounded: a request Discord never answers must not hang the sync.
            try:
                return await asyncio.wait_for(request.chunks.get(), self._chunk_timeout)
            except TimeoutError:
                # Unless we stopped reading: then the chunks wait at Discord for the database to catch up.
                if not self._valve.paused_within(self._chunk_timeout):
                    raise

    async def _via_rest(self, guild_id: int, progress: _Progress) -> None:
        after = 0
        while True:
            page = await self._requester.fetch_member_page(guild_id, after)
            members = [member_from_payload(m) for m in page]
            if members:
                await self._write(guild_id, members, progress, datetime.now(UTC))
            if len(page) < REST_PAGE_SIZE:
                return
            after = max(m.user_id for m in members)

    async def _write(
        self, guild_id: int, members: list[Member], progress: _Progress, received_at: datetime
    ) -> None:
        """Commit a chunk with its progress.

        A member that a gateway event changed after the chunk arrived keeps the event's (newer) data.
        """
        progress.check_lock()
        now = datetime.now(UTC)
        state = SyncState(
            guild_id,
            SyncPhase.SYNCING,
            members_stored=progress.stored + len(members),
            member_count=progress.expected,
            updated_at=now,
        )
        # The chunk and the progress it makes commit together, and only while the link is active.
        written = await self._store.upsert_members(
            guild_id, members, now, progress=state, snapshot_at=received_at
        )
        if written is None:
            raise LinkGoneError(guild_id)
        progress.add(written)


@dataclass
class _Progress:
    """One sync under way: the lock it holds, and counts for the log line 'guild G: 45,000 / 120,000 members'."""

    guild_id: int
    guild_name: str
    expected: int | None
    lock: GuildLock
    stored: int = 0
    started: float = field(default_factory=time.monotonic)
    last_logged: float = 0.0

    def add(self, count: int) -> None:
        self.stored += count
        now = time.monotonic()
        if now - self.last_logged >= 2.0:
            self.last_logged = now
            expected = f"{self.expected:,}" if self.expected is not None else "?"
            log.info(
                "sync.progress guild %d %r: %s / %s members",
                self.guild_id,
                self.guild_name,
                f"{self.stored:,}",
                expected,
            )

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def check_lock(self) -> None:
        """Before each write: a sync whose lock is gone stops, as another process may be syncing now."""
        if not self.lock.held:
            raise GuildLockLostError(self.guild_id)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]
