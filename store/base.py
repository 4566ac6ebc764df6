"""The store's interface: what web/ and bot/ may ask of the database, whatever its engine."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Protocol

from store.models import Invite, Link, LinkedGuild, Member, SyncState


class GuildLock(Protocol):
    """One guild's sync lock, held by one holder at a time across every process on the database."""

    @property
    def held(self) -> bool:
        """False once released, or lost with the database session that held it."""

    async def release(self) -> None:
        """Let the next holder take it; never raises (a lost lock is released already)."""


class Store(Protocol):
    """Links, invites, members and sync states; every write is its own transaction.

    Every method raises `StoreUnavailableError` when the database cannot be read or written.
    """

    async def ping(self) -> None:
        """Raise if the database does not answer."""

    async def check_writable(self) -> None:
        """Raise StoreUnavailableError unless a durable write goes through (read-only file, full disk)."""

    def recent_write_failure(self) -> str | None:
        """Why the last write failed, if it failed lately and no write has succeeded since."""

    # OAuth2 states are signed and kept by nobody; only their single use is recorded.
    async def use_state_once(self, nonce: bytes, expires_at: datetime) -> bool:
        """Record that the state with `nonce` was used; False if it was used before."""

    # Invites
    async def add_invite(self, invite: Invite, *, limit: int) -> bool:
        """Store an invite unless `limit` open invites exist already (False then); expired ones are pruned."""

    async def get_invite(self, token_hash: bytes) -> Invite | None: ...

    # Links
    async def save_link(self, link: Link, *, invite_hash: bytes | None = None) -> Link:
        """Insert or update the link of `link.guild_id` and mark it active, using up the invite if one is given.

        Raise InviteUnusableError if the invite is no longer open, RefConflictError if the guild is actively
        linked for another ref; nothing is written then.
        """

    async def get_link(self, guild_id: int) -> Link | None: ...

    async def list_links(self, *, ref: str | None = None, active_only: bool = False) -> list[Link]: ...

    async def list_linked_guilds(self, *, ref: str | None = None) -> list[LinkedGuild]:
        """Links with their sync states, in one query."""

    async def deactivate_link(self, guild_id: int) -> bool:
        """Mark the link inactive, delete its members and record the sync as removed; False if no link."""

    # Members: written only while the guild's link is active.
    async def upsert_members(
        self,
        guild_id: int,
        members: Iterable[Member],
        seen_at: datetime,
        *,
        progress: SyncState | None = None,
    ) -> int | None:
        """Write a batch of members (and the sync's `progress`) in one transaction; return how many.

        None, and nothing written, if the guild's link is not active.
        """

    async def remove_member(self, guild_id: int, user_id: int) -> None: ...

    async def remove_members_not_seen_since(self, guild_id: int, since: datetime) -> int:
        """Delete the members a full resync did not see again; return how many."""

    async def list_members(self, guild_id: int, *, after: int = 0, limit: int = 1000) -> Sequence[Member]: ...

    async def count_members(self, guild_id: int) -> int: ...

    # Sync state
    async def save_sync_state(self, sync: SyncState) -> bool:
        """Record the sync's state if the guild's link is active; False (nothing written) otherwise."""

    async def get_sync_state(self, guild_id: int) -> SyncState | None: ...

    # What the processes of a fleet share: one guild's sync at a time, Discord's per-bot limits, and the
    # links each process must pick up. Times are the database's clock, so that machines need not agree.
    async def try_lock_guild(self, guild_id: int) -> GuildLock | None:
        """Take the guild's sync lock, or None if anyone else (another process, or store) holds it.

        The lock dies with its holder: a process that ends, or loses its database session, loses it.
        """

    async def member_list_wait(self, guild_id: int) -> float:
        """Seconds until the guild's next whole-member-list request may go (0: now), whoever sent the last."""

    async def hold_off_member_list(self, guild_id: int, seconds: float) -> None:
        """No whole-member-list request for the guild for `seconds` from now, from any process."""

    async def reserve_identify(self, bucket: int, interval: float) -> float:
        """Book the bucket's next IDENTIFY, `interval` after the one booked last; return the seconds to wait for it."""

    async def list_unfinished_links(self, shard_count: int, shard_ids: Sequence[int]) -> list[Link]:
        """Active links of guilds on `shard_ids` (of `shard_count`) whose sync is not finished: pending,
        syncing, failed or waiting, or without a sync state."""
