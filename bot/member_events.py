"""Member joins, changes and leaves: batched into one transaction at a time, in the order the gateway sent them.

An event the database refuses for what it holds (PostgreSQL text cannot hold a NUL character) is set aside
alone, so that the events around it are stored, and its guild is resynced.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from bot.payloads import member_from_payload
from bot.read_valve import ReadValve
from metrics import Metrics
from store import MemberChange, MemberChangeKind, Store, StoreUnavailableError
from supervision import Supervisor

log = logging.getLogger(__name__)

# The writer takes whatever has gathered, up to this many events, and commits it as one transaction.
BATCH_CAP = 5_000
# A write the database refused (full disk, read-only for a moment) is tried again after these waits, growing
# to the last; the batch is never dropped, and the events behind it wait, so the order holds.
RETRY_WAITS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
SHUTDOWN_DRAIN_SECONDS = 10.0


class MemberEventWriter:
    """One queue, one writer task: an update followed by a removal can never land the other way round.

    Events are taken from discord.py's parser table as they are read, so GUILD_MEMBER_ADD, UPDATE and
    REMOVE keep the gateway's order: the public on_member_join and on_raw_member_remove run as tasks,
    later than a synchronous UPDATE that followed them on the socket.
    """

    def __init__(
        self,
        store: Store,
        *,
        is_linked: Callable[[int], bool],
        supervisor: Supervisor,
        metrics: Metrics,
        valve: ReadValve | None = None,
        resync: Callable[[int], None] = lambda guild_id: None,
        batch_cap: int = BATCH_CAP,
    ) -> None:
        self._store = store
        self._is_linked = is_linked
        self._supervisor = supervisor
        self._refused = metrics.member_events_refused
        # Past the valve's cap (events and sync chunks together) reading from the gateway pauses: TCP's flow
        # control then holds the rest at Discord. Should the pause reach its cap, the queued events are
        # dropped and their guilds `resync`ed, which reads each member as it is then.
        self._valve = valve or ReadValve(lambda paused: None, cap=2**62, max_pause=60.0)
        self._valve.add_shedder(self._drop_queued)
        # Called with the guild of an event that was refused or dropped: what the store holds of it may be stale.
        self._resync = resync
        # A batch held by a stalled database must leave the valve room to reopen below its cap.
        self._batch_cap = min(batch_cap, max(1, self._valve.cap // 4))
        self._pending: deque[MemberChange] = deque()
        self._arrived = asyncio.Event()
        self._drained = asyncio.Event()
        self._drained.set()
        self._writing = 0
        # Events stored since start (benchmarks and tests wait for a count), and refused by the database.
        self.stored = 0
        self.refused = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = self._supervisor.spawn("member-events", self._write_forever)

    def queued(self) -> int:
        """Events received and not yet stored."""
        return len(self._pending) + self._writing

    async def wait_written(self) -> None:
        """Until every event received so far is stored (tests, shutdown)."""
        await self._drained.wait()

    async def close(self) -> None:
        """Write what is queued (for up to SHUTDOWN_DRAIN_SECONDS), then stop."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self.wait_written(), SHUTDOWN_DRAIN_SECONDS)
        except TimeoutError:
            # The database is refusing writes; the next start's full resync reconciles what is left.
            log.warning("members.events_unwritten_at_shutdown count=%d", self.queued())
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    # Raw dispatches, called synchronously from discord.py's parser table.

    def member_joined(self, data: Mapping[str, Any]) -> None:
        self._take(data, MemberChangeKind.JOINED)

    def member_updated(self, data: Mapping[str, Any]) -> None:
        """GUILD_MEMBER_UPDATE carries the whole member and user."""
        self._take(data, MemberChangeKind.UPDATED)

    def member_removed(self, data: Mapping[str, Any]) -> None:
        self._take(data, MemberChangeKind.LEFT)

    def _take(self, data: Mapping[str, Any], kind: MemberChangeKind) -> None:
        guild_id = int(data["guild_id"])
        if not self._is_linked(guild_id):
            return
        member = None if kind is MemberChangeKind.LEFT else member_from_payload(data)
        user_id = member.user_id if member else int(data["user"]["id"])
        self._pending.append(MemberChange(guild_id, user_id, kind, member, datetime.now(UTC)))
        self._arrived.set()
        self._drained.clear()
        self._valve.grow(1)

    def _drop_queued(self) -> None:
        """The valve's shedder: drop the events not being written, and read their guilds again instead."""
        if not self._pending:
            return
        dropped = len(self._pending)
        guilds = {change.guild_id for change in self._pending}
        self._pending.clear()
        self._arrived.clear()
        if not self._writing:
            self._drained.set()
        self._valve.shrink(dropped)
        log.warning(
            "members.events_dropped count=%d guilds=%d: the database is behind; those guilds are read again",
            dropped,
            len(guilds),
        )
        for guild_id in sorted(guilds):
            self._resync(guild_id)

    # The writer

    async def _write_forever(self) -> None:
        while True:
            await self._arrived.wait()
            batch = [self._pending.popleft() for _ in range(min(self._batch_cap, len(self._pending)))]
            if not self._pending:
                self._arrived.clear()
            self._writing = len(batch)
            try:
                await self._write_until_stored(batch)
            finally:
                self._writing = 0
                self._valve.shrink(len(batch))
                # Also when the writer crashed (it is restarted): wait_written must not wait for a lost batch.
                if not self._pending:
                    self._drained.set()

    async def _write_until_stored(self, batch: list[MemberChange]) -> None:
        """Store the batch, but for any event the database refuses for what it holds (found by halving)."""
        try:
            await self._write_retrying(batch)
        except Exception as exc:
            # Not a database that is down (that is retried): something in the batch it will never take.
            if len(batch) == 1:
                self._refuse(batch[0], exc)
                return
            half = len(batch) // 2
            await self._write_until_stored(batch[:half])
            await self._write_until_stored(batch[half:])

    def _refuse(self, change: MemberChange, exc: Exception) -> None:
        error = type(exc).__name__
        self.refused += 1
        self._refused.labels(error).inc()
        # Ids and the error's class only: its message may quote the member's data.
        log.error(
            "members.event_refused guild=%d user=%d kind=%s error=%s: not stored, the guild is resynced",
            change.guild_id,
            change.user_id,
            change.kind.value,
            error,
        )
        try:
            self._resync(change.guild_id)
        except Exception:
            # The events behind it must still be stored; the guild's next GUILD_CREATE resyncs it.
            log.exception("members.resync_not_scheduled guild=%d", change.guild_id)

    async def _write_retrying(self, batch: list[MemberChange]) -> None:
        for attempt in itertools.count(1):
            try:
                await self._store.apply_member_changes(batch)
                self.stored += len(batch)
                return
            except StoreUnavailableError as exc:
                wait = RETRY_WAITS[min(attempt, len(RETRY_WAITS)) - 1]
                log.warning(
                    "members.event_write_retry events=%d attempt=%d wait=%.1f reason=%s",
                    len(batch),
                    attempt,
                    wait,
                    exc.reason,
                )
                await asyncio.sleep(wait)
