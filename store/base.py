"""The store's interface: what web/ and bot/ may ask of the database, whatever its engine."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any, Protocol

from store.models import (
    Event,
    EventType,
    HoldRule,
    Invite,
    Link,
    LinkCounts,
    LinkedGuild,
    Member,
    MemberChange,
    PrunedEvents,
    SyncOutcome,
    SyncState,
    UserData,
    UserErasure,
    WebhookBacklog,
    WebhookCursor,
)
from store.role_changes import RoleChange, RoleChangeOutcome, RoleChangeRequest


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

    async def deactivate_link(self, guild_id: int, *, bot_removed: bool = False) -> bool:
        """Mark the link inactive, delete its members, record the sync as removed; False if no link.

        Announces guild.unlinked (or guild.removed when the bot was removed from the guild) once.
        """

    async def announce(self, kind: EventType, guild_id: int, data: dict[str, Any]) -> None:
        """Write one event that goes with no other change (what Discord's webhook events tell); guild_id 0: none."""

    # Members: written only while the guild's link is active.
    async def upsert_members(
        self,
        guild_id: int,
        members: Iterable[Member],
        seen_at: datetime,
        *,
        progress: SyncState | None = None,
        snapshot_at: datetime | None = None,
    ) -> int | None:
        """Write a batch of members (and the sync's `progress`) in one transaction; return how many.

        A member that a gateway event changed after `snapshot_at` (when the sync asked) keeps the event's
        data. On a resync (the guild was synced before) each member the chunk adds or changes is announced
        as member.joined or member.updated. None, and nothing written, if the guild's link is not active.
        """

    async def apply_member_changes(self, changes: Sequence[MemberChange]) -> int:
        """Apply gateway member events in order, as one transaction, each announced in the feed; return how many.

        Events of guilds whose link is not active are ignored.
        """

    async def finish_sync(self, guild_id: int, started: datetime, hold: HoldRule) -> SyncOutcome | None:
        """End a full sync that began at `started`: remove the members it did not see and record it synced.

        On a resync each removal is announced as member.left; if `hold` holds for their number, nothing is
        removed and the sync is recorded held (announced as sync.held). None if the link is not active.
        """

    async def confirm_held_removals(self, guild_id: int) -> SyncOutcome | None:
        """Apply a held resync's removals, each announced as member.left; None unless the guild's sync is held."""

    async def list_members(self, guild_id: int, *, after: int = 0, limit: int = 1000) -> Sequence[Member]: ...

    async def search_members(
        self, guild_id: int, text: str, *, after: int = 0, limit: int = 100
    ) -> Sequence[Member]:
        """Members whose username, global name or nick contains `text` (ASCII case ignored), by user id.

        `text` matches literally (% and _ are not wildcards); pages like `list_members`, after `after`.
        """

    async def count_members(self, guild_id: int) -> int: ...

    # Sync state
    async def save_sync_state(self, sync: SyncState) -> bool:
        """Record the sync's state if the guild's link is active; False (nothing written) otherwise.

        A change of phase to syncing, synced or failed is announced in the feed.
        """

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

    # The event feed (written with each change, by the methods above)
    async def list_events(self, *, after: int = 0, limit: int = 100) -> list[Event]:
        """Events with ids above `after`, oldest first; ids grow in commit order, so paging misses none."""

    async def prune_events(self, before: datetime) -> PrunedEvents:
        """Delete the events below the first one created at or after `before` (the feed stays a contiguous
        run of ids) and record the highest id deleted; say what was deleted."""

    async def feed_pruned_up_to(self) -> int:
        """The highest event id pruning ever deleted (every id up to it is gone); 0 if none."""

    async def scrub_departed(self, left_before: datetime) -> int:
        """Scrub the member data of events before each member.left created before `left_before`; say how many."""

    async def erase_user(self, user_id: int) -> UserErasure:
        """Delete the user's member rows in every guild, scrub their data from every event, announce user.erased."""

    async def export_user(self, user_id: int, *, event_limit: int) -> UserData:
        """Everything stored about the user: member rows, links they made, up to `event_limit` events naming them."""

    async def webhook_backlog(self) -> WebhookBacklog:
        """The events after the webhook cursor (or after the pruned ones): their number by id, the oldest's time."""

    async def count_links(self) -> LinkCounts:
        """Links by sync state and the members of the active ones, counted by the database in one query."""

    async def page_linked_guilds(self, *, after: int = 0, limit: int = 100) -> list[LinkedGuild]:
        """Up to `limit` links with their sync states, by guild id, after the guild id `after`."""

    # Webhook delivery: one deliverer at a time, its progress kept in the database.
    def webhook_delivery_lock(self) -> AbstractAsyncContextManager[asyncio.Event]:
        """Wait until no other holder (in any process) delivers webhooks, then hold the right until exit.

        The event it yields is set if the right is lost meanwhile (PostgreSQL: the lock's connection ended).
        """

    async def webhook_cursor(self) -> WebhookCursor:
        """The delivery's progress; a cursor at 0, with no failures, before the first delivery."""

    async def advance_webhook_cursor(self, event_id: int) -> None:
        """Record every event up to `event_id` as delivered or skipped, clearing failures; never moves back."""

    async def note_webhook_failure(self, retry_at: datetime) -> int:
        """Count one more failure of the next event, to be tried again at `retry_at`; return the count."""

    # Role changes the backend asked for: a durable queue, applied by the bot's workers in every process.
    async def queue_role_change(self, request: RoleChangeRequest) -> RoleChange | None:
        """Queue the change, announced as role_change.queued; None (nothing written) unless the guild is linked.

        If the member's latest pending change of this role is the same action, that change is returned and
        nothing is written: repeating a request never queues it twice.
        """

    async def get_role_change(self, change_id: int) -> RoleChange | None: ...

    async def list_role_changes(self, guild_id: int, *, limit: int = 50) -> list[RoleChange]:
        """The guild's latest role changes, newest first."""

    async def claim_role_changes(self, holder: str, *, lease: float, limit: int) -> list[RoleChange]:
        """Up to `limit` due pending changes, each its member's oldest pending one, held by `holder` for `lease` s.

        A change held by anyone else whose lease has not run out is not claimed; oldest first.
        """

    async def finish_role_change(
        self, change_id: int, holder: str, outcome: RoleChangeOutcome
    ) -> RoleChange | None:
        """Record the change applied or failed (one attempt more), announced in the same transaction.

        None, and nothing written, unless `holder` still holds it (its lease ran out and another took it).
        """

    async def retry_role_change(self, change_id: int, holder: str, *, after: float) -> bool:
        """Count one attempt more and let the change be claimed again `after` seconds from now; False unless held."""

    async def note_invalid_request(self, *, window: float) -> None:
        """Count one invalid answer (401, 403, 429) from Discord, for every process; forget those past `window` s."""

    async def count_invalid_requests(self, *, window: float) -> int:
        """Invalid answers noted by any process in the last `window` seconds."""
