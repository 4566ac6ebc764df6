"""The records guildlink keeps: links, pending consent states, members and each guild's sync state."""

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


@dataclass(frozen=True, slots=True)
class PendingState:
    """An OAuth2 `state` handed to one browser, waiting for Discord's redirect."""

    state: str
    browser_hash: bytes
    created_at: datetime
    expires_at: datetime
    ref: str | None = None


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
    SYNCING = "syncing"
    SYNCED = "synced"
    FAILED = "failed"


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
