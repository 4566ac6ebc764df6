"""One member sync under way: the lock it holds, its counts, and the store writes every read strategy shares."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from store import GuildLock, Member, Store, SyncPhase, SyncState

log = logging.getLogger(__name__)


class LinkGoneError(Exception):
    """The guild's link became inactive while it was being synced: stop, keep nothing."""


class SyncedElsewhereError(Exception):
    """Another process (or store) holds the guild's sync lock: it is syncing the guild now."""


class GuildLockLostError(Exception):
    """The guild's sync lock was lost mid-sync (its database session ended): another process may take over."""


@dataclass
class SyncProgress:
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


async def write_members(
    store: Store, members: list[Member], progress: SyncProgress, received_at: datetime
) -> None:
    """Commit a chunk with its progress.

    A member that a gateway event changed after the chunk arrived keeps the event's (newer) data.
    """
    progress.check_lock()
    now = datetime.now(UTC)
    state = SyncState(
        progress.guild_id,
        SyncPhase.SYNCING,
        members_stored=progress.stored + len(members),
        member_count=progress.expected,
        updated_at=now,
    )
    # The chunk and the progress it makes commit together, and only while the link is active.
    written = await store.upsert_members(
        progress.guild_id, members, now, progress=state, snapshot_at=received_at
    )
    if written is None:
        raise LinkGoneError(progress.guild_id)
    progress.add(written)


async def save_phase(
    store: Store,
    progress: SyncProgress,
    phase: SyncPhase,
    now: datetime,
    *,
    waiting_until: datetime | None = None,
) -> None:
    """Record the sync's phase with its counts so far; raise LinkGoneError once the link is inactive."""
    state = SyncState(
        progress.guild_id,
        phase,
        members_stored=progress.stored,
        member_count=progress.expected,
        updated_at=now,
        waiting_until=waiting_until,
    )
    if not await store.save_sync_state(state):
        raise LinkGoneError(progress.guild_id)
