"""Member joins, changes and leaves written to the store in the order the gateway sent them."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.payloads import member_from_payload
from store import Member, Store, StoreUnavailableError

log = logging.getLogger(__name__)

# A write the database refused (full disk, read-only for a moment) is tried again after these waits, growing
# to the last; the event is never dropped, and those queued behind it wait, so the order holds.
RETRY_WAITS = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
SHUTDOWN_DRAIN_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class _Upsert:
    guild_id: int
    member: Member


@dataclass(frozen=True, slots=True)
class _Remove:
    guild_id: int
    user_id: int


class MemberEventWriter:
    """One queue, one writer task: an update followed by a removal can never land the other way round."""

    def __init__(self, store: Store, *, is_linked: Callable[[int], bool]) -> None:
        self._store = store
        self._is_linked = is_linked
        self._queue: asyncio.Queue[_Upsert | _Remove] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._write_forever())

    async def close(self) -> None:
        """Write what is queued (for up to SHUTDOWN_DRAIN_SECONDS), then stop."""
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._queue.join(), SHUTDOWN_DRAIN_SECONDS)
        except TimeoutError:
            # The database is refusing writes; the next start's full resync reconciles what is left.
            log.warning("members.events_unwritten_at_shutdown count=%d", self._queue.qsize())
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    def queued(self) -> int:
        """Events received and not yet stored."""
        return self._queue.qsize()

    def member_upserted(self, data: Mapping[str, Any]) -> None:
        """GUILD_MEMBER_ADD or GUILD_MEMBER_UPDATE (which carries the whole member and user)."""
        guild_id = int(data["guild_id"])
        if self._is_linked(guild_id):
            self._queue.put_nowait(_Upsert(guild_id, member_from_payload(data)))

    def member_removed(self, data: Mapping[str, Any]) -> None:
        guild_id = int(data["guild_id"])
        if self._is_linked(guild_id):
            self._queue.put_nowait(_Remove(guild_id, int(data["user"]["id"])))

    async def _write_forever(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._write_until_stored(event)
            finally:
                self._queue.task_done()

    async def _write_until_stored(self, event: _Upsert | _Remove) -> None:
        for attempt in itertools.count(1):
            try:
                if isinstance(event, _Upsert):
                    await self._store.upsert_members(event.guild_id, [event.member], datetime.now(UTC))
                else:
                    await self._store.remove_member(event.guild_id, event.user_id)
                return
            except StoreUnavailableError as exc:
                wait = RETRY_WAITS[min(attempt, len(RETRY_WAITS)) - 1]
                log.warning(
                    "members.event_write_retry guild=%d attempt=%d wait=%.1f reason=%s",
                    event.guild_id,
                    attempt,
                    wait,
                    exc.reason,
                )
                await asyncio.sleep(wait)
