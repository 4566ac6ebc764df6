"""How a sync ends, whatever the engine: the events a resync announces, the hold, the final sync state.

A resync (a sync of a guild synced before) announces its diff as live gateway events are announced, in the
transaction that writes it: a chunk's joins and updates, the final removals. A first sync announces only
`guild.synced`: the backend pages the members then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from store.models import EventType, Member, SyncPhase, SyncState, member_data, member_left_data

# (type, guild id, data): what the engines' _add_events write.
AnnouncedEvent = tuple[EventType, int, dict[str, Any]]


class LinkState(NamedTuple):
    """A guild's link and sync as a member write reads them, in its transaction."""

    active: bool
    # Synced before (since it was last linked): a sync now is a resync, which announces its diff.
    resync: bool
    phase: str | None
    held_before: datetime | None
    member_count: int


class StoredMember(NamedTuple):
    """A member's stored row, and when a gateway event last changed it (None: only syncs wrote it)."""

    member: Member
    changed_at: datetime | None


def latest_copies(members: Iterable[Member]) -> list[Member]:
    """Each user once, as its last copy in `members`: one chunk may carry a user twice."""
    return list({member.user_id: member for member in members}.values())


def _same(stored: Member, seen: Member) -> bool:
    # Discord does not promise an order of a member's roles: the same set in another order is no change.
    return stored._replace(roles=()) == seen._replace(roles=()) and set(stored.roles) == set(seen.roles)


def chunk_events(
    guild_id: int, chunk: Sequence[Member], stored: Mapping[int, StoredMember], snapshot_at: datetime
) -> tuple[list[AnnouncedEvent], int]:
    """The member.joined and member.updated events of a resync's chunk (each user once), and how many joined.

    A member that a gateway event changed at or after `snapshot_at` keeps the event's data (the chunk's is
    older), so the chunk announces nothing for it: the event was announced when it arrived.
    """
    events: list[AnnouncedEvent] = []
    joined = 0
    for member in chunk:
        row = stored.get(member.user_id)
        if row is None:
            joined += 1
            events.append((EventType.MEMBER_JOINED, guild_id, member_data(member)))
        elif (row.changed_at is None or row.changed_at < snapshot_at) and not _same(row.member, member):
            events.append((EventType.MEMBER_UPDATED, guild_id, member_data(member)))
    return events, joined


def left_events(guild_id: int, user_ids: Iterable[int]) -> list[AnnouncedEvent]:
    """member.left for each user a resync (or its confirmation) removed, as a gateway leave is announced."""
    return [(EventType.MEMBER_LEFT, guild_id, member_left_data(user_id)) for user_id in user_ids]


def held_state(guild_id: int, members: int, removals: int, before: datetime) -> SyncState:
    """A resync whose `removals` (members not seen since `before`) wait for confirmation."""
    return SyncState(
        guild_id,
        SyncPhase.HELD,
        members_stored=members,
        member_count=members,
        held_removals=removals,
        held_before=before,
    )


def synced_state(guild_id: int, members: int) -> SyncState:
    return SyncState(
        guild_id, SyncPhase.SYNCED, members_stored=members, member_count=members, synced_at=datetime.now(UTC)
    )
