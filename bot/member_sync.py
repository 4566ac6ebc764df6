"""Reading a guild's whole member list into the store, within Discord's one-request-per-30-s rule.

`MemberSync` wires the parts: `SyncScheduler` (bot/sync_scheduler.py) decides when each guild is read, and one
sync picks a reader, the gateway's chunks (bot/sync_gateway_reader.py) or REST pages (bot/sync_rest_reader.py).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from bot.read_valve import ReadValve
from bot.sync_gateway_reader import GatewayMemberReader, GatewayRateLimitedError, WholeListRequester
from bot.sync_progress import LinkGoneError, SyncedElsewhereError, SyncProgress
from bot.sync_rest_reader import REST_PAGE_SIZE, MemberPageFetcher, RestMemberReader
from bot.sync_scheduler import MemberListWindow, SyncScheduler
from metrics import Metrics
from store import GuildLock, HoldRule, Store, SyncPhase, SyncState

log = logging.getLogger(__name__)

# Discord answers a second whole-list request for a guild within this window with RATE_LIMITED.
MEMBER_LIST_COOLDOWN = 30.0
CHUNK_TIMEOUT = 20.0
# When op 8 would wait this long for the connection's command budget (a burst of links), a guild small
# enough to read in a few REST pages is read that way instead, so its sync starts within seconds.
GATEWAY_WAIT_BEFORE_REST = 5.0
REST_OVERFLOW_MAX_MEMBERS = 5 * REST_PAGE_SIZE
# The first wait before a failed sync is tried again; each further one doubles (bot/sync_scheduler.py).
RETRY_FIRST_WAIT = 5.0
# How often a sync that another process holds the guild's lock for looks again (that process may die).
LOCKED_RETRY_WAIT = 10.0


class ChunkRequester(WholeListRequester, MemberPageFetcher, Protocol):
    """What the bot offers the sync: op 8 on the guild's connection, and REST member pages."""


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
        self._hold = hold or HoldRule()
        self._metrics = metrics or Metrics()
        # Alone (no bot around it), nothing to pause: the valve only counts.
        valve = valve or ReadValve(lambda paused: None, cap=2**62, max_pause=CHUNK_TIMEOUT)
        self._gateway = GatewayMemberReader(
            store,
            requester,
            MemberListWindow(store, cooldown=cooldown),
            chunk_timeout=chunk_timeout,
            valve=valve,
            metrics=self._metrics,
        )
        self._rest = RestMemberReader(store, requester)
        self._scheduler = SyncScheduler(
            store,
            self._sync_once,
            retry_first_wait=retry_first_wait,
            locked_retry_wait=locked_retry_wait,
            metrics=self._metrics,
            on_finished=self._gateway.forget_removed,
        )

    # Raw gateway dispatches, called synchronously from discord.py's parser table.

    def on_members_chunk(self, data: Mapping[str, Any]) -> bool:
        """Take a GUILD_MEMBERS_CHUNK of ours; False if the chunk answers someone else's request."""
        return self._gateway.on_members_chunk(data)

    def on_rate_limited(self, data: Mapping[str, Any]) -> None:
        """RATE_LIMITED for our op 8: wake the sync so that it waits `retry_after` and asks again."""
        self._gateway.on_rate_limited(data)

    def note_member_removed(self, guild_id: int, user_id: int) -> None:
        if self._scheduler.is_syncing(guild_id):
            self._gateway.note_removed(guild_id, user_id)

    # Scheduling

    def is_syncing(self, guild_id: int) -> bool:
        return self._scheduler.is_syncing(guild_id)

    def resync(self, guild_id: int) -> None:
        """Read the guild again from scratch (member events of it were dropped unwritten)."""
        self._scheduler.resync(guild_id)

    def schedule(self, guild_id: int, *, member_count: int | None = None) -> None:
        """Sync the guild soon, unless a sync of it is already running (it reconciles everything)."""
        self._scheduler.schedule(guild_id, member_count=member_count)

    async def cancel(self, guild_id: int) -> None:
        """Stop the guild's running sync (it was unlinked); chunks still arriving are dropped."""
        await self._scheduler.cancel(guild_id)

    async def wait_idle(self) -> None:
        """Wait for every scheduled sync to finish (tests and shutdown)."""
        await self._scheduler.wait_idle()

    async def close(self) -> None:
        await self._scheduler.close()

    # One sync

    async def _sync_once(self, guild_id: int, member_count: int | None) -> int:
        return await self.sync(guild_id, member_count=member_count)

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
        progress = SyncProgress(guild_id, link.guild_name if link else "?", member_count, lock)
        small = member_count is not None and member_count <= REST_OVERFLOW_MAX_MEMBERS
        if small and self._gateway.gateway_wait(guild_id) > GATEWAY_WAIT_BEFORE_REST:
            log.info("sync.via_rest guild=%d: the gateway's command budget is busy", guild_id)
            await self._rest.read(progress)
        else:
            try:
                await self._gateway.read(progress)
            except (TimeoutError, GatewayRateLimitedError, ConnectionError) as exc:
                log.warning("sync.gateway_failed guild=%d error=%s: using REST", guild_id, exc)
                await self._rest.read(progress)
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
