"""The records guildlink keeps: links, invites, members and each guild's sync state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class Link:
    """A guild our bot was added to through our consent flow; keyed by guild id."""

    guild_id: int
    guild_name: str
    linked_by_id: int
    linked_by_username: str
    scopes: tuple[str, ...]
    permissions: int
    linked_at: datetime
    ref: str | None = None
    active: bool = True
    # Kept by every write of members, so that listing guilds never counts rows.
    member_count: int = 0


@dataclass(frozen=True, slots=True)
class Invite:
    """A backend's one-time consent link for its customer `ref`; only a hash of its token is kept."""

    token_hash: bytes
    ref: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None
    guild_id: int | None = None

    def is_open(self, now: datetime) -> bool:
        """Neither used by a stored link nor expired."""
        return self.used_at is None and now < self.expires_at


class Member(NamedTuple):
    """One member of a linked guild, as last seen on Discord.

    A NamedTuple rather than a dataclass: a million of them pass through a sync, and a tuple is built
    twice as fast.
    """

    user_id: int
    username: str
    global_name: str | None
    nick: str | None
    avatar: str | None
    bot: bool
    roles: tuple[int, ...]
    joined_at: str | None


class SyncPhase(StrEnum):
    PENDING = "pending"
    # Discord allows one whole-member-list request per guild per 30 s: the sync waits for the window.
    WAITING = "waiting"
    SYNCING = "syncing"
    SYNCED = "synced"
    FAILED = "failed"
    # The link is inactive (unlinked, or the bot was removed): no members are kept.
    REMOVED = "removed"


@dataclass(frozen=True, slots=True)
class SyncState:
    """How far reading one guild's member list has come."""

    guild_id: int
    phase: SyncPhase
    members_stored: int = 0
    member_count: int | None = None
    synced_at: datetime | None = None
    error: str | None = None
    updated_at: datetime | None = None
    # Phase WAITING: when the wait for Discord's member-list window ends.
    waiting_until: datetime | None = None


@dataclass(frozen=True, slots=True)
class LinkedGuild:
    """A link with its sync state, as the API and `status` list them (read in one query)."""

    link: Link
    sync: SyncState | None
