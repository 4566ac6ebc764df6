"""The store's interface: what web/ and bot/ may ask of the database, whatever its engine."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from store.models import Link, Member, PendingState, SyncState


class Store(Protocol):
    """Links, pending states, members and sync states; every write is its own transaction."""

    async def ping(self) -> None:
        """Raise if the database does not answer."""

    # Pending OAuth2 states
    async def add_pending_state(self, pending: PendingState, *, limit: int) -> int:
        """Store a state, dropping expired ones and then the oldest beyond `limit`; return how many were dropped."""

    async def take_pending_state(self, state: str) -> PendingState | None:
        """Remove and return the state (expired or not) so that it can never be used twice."""

    # Links
    async def save_link(self, link: Link) -> Link:
        """Insert or update the link of `link.guild_id` (re-linking never duplicates) and mark it active."""

    async def get_link(self, guild_id: int) -> Link | None: ...

    async def list_links(self, *, ref: str | None = None, active_only: bool = False) -> list[Link]: ...

    async def deactivate_link(self, guild_id: int) -> bool:
        """Mark the link inactive and delete the guild's members; False if there is no link."""

    # Members
    async def upsert_members(
        self,
        guild_id: int,
        members: Iterable[Member],
        seen_at: datetime,
        *,
        progress: SyncState | None = None,
    ) -> int:
        """Write a batch of members (and the sync's `progress`) in one transaction; return how many."""

    async def remove_member(self, guild_id: int, user_id: int) -> None: ...

    async def remove_members_not_seen_since(self, guild_id: int, since: datetime) -> int:
        """Delete the members a full resync did not see again; return how many."""

    async def list_members(self, guild_id: int, *, after: int = 0, limit: int = 1000) -> Sequence[Member]: ...

    async def count_members(self, guild_id: int) -> int: ...

    # Sync state
    async def save_sync_state(self, sync: SyncState) -> None: ...

    async def get_sync_state(self, guild_id: int) -> SyncState | None: ...
