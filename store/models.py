"""The records guildlink keeps: links, invites, members, each guild's sync state, and the event feed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

import orjson


class LinkSource(StrEnum):
    """Who told us of a link: our OAuth2 callback, or only Discord's APPLICATION_AUTHORIZED webhook event."""

    CALLBACK = "callback"
    DISCORD_WEBHOOK = "discord_webhook"


@dataclass(frozen=True, slots=True)
class Link:
    """A guild our bot was added to (through our consent flow, or as Discord's webhook event said); keyed by guild id."""

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
    source: LinkSource = LinkSource.CALLBACK


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

    def as_json(self) -> dict[str, Any]:
        """The member as the API and the event feed show it (snowflakes as strings)."""
        return {
            "id": str(self.user_id),
            "username": self.username,
            "global_name": self.global_name,
            "nick": self.nick,
            "avatar": self.avatar,
            "bot": self.bot,
            "roles": [str(role) for role in self.roles],
            "joined_at": self.joined_at,
        }


class SyncPhase(StrEnum):
    PENDING = "pending"
    # Discord allows one whole-member-list request per guild per 30 s: the sync waits for the window.
    WAITING = "waiting"
    SYNCING = "syncing"
    SYNCED = "synced"
    FAILED = "failed"
    # A resync would have removed a suspicious share of the guild's members: its joins and changes are
    # applied, its removals wait for the operator's or backend's confirmation.
    HELD = "held"
    # The link is inactive (unlinked, or the bot was removed): no members are kept.
    REMOVED = "removed"


# A sync in one of these phases is not finished: the fleet's catch-up picks its link up again.
UNFINISHED_PHASES: tuple[str, ...] = tuple(
    phase.value for phase in (SyncPhase.PENDING, SyncPhase.SYNCING, SyncPhase.FAILED, SyncPhase.WAITING)
)


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
    # Phase HELD: how many members the held resync would remove, and its cut-off: the members not seen since
    # then (by that resync or any gateway event) are the ones a confirmation removes.
    held_removals: int | None = None
    held_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class LinkedGuild:
    """A link with its sync state, as the API and `status` list them (read in one query)."""

    link: Link
    sync: SyncState | None


class MemberChangeKind(StrEnum):
    JOINED = "joined"
    UPDATED = "updated"
    LEFT = "left"


class MemberChange(NamedTuple):
    """One member event from the gateway, as it is stored: `member` is None when the member left.

    A NamedTuple, as Member is: one is made for every event of a storm, in less than half a frozen
    dataclass's time (0.3 µs against 0.7).
    """

    guild_id: int
    user_id: int
    kind: MemberChangeKind
    member: Member | None
    received_at: datetime


class EventType(StrEnum):
    """What the event feed announces; each is written in the same transaction as the change itself."""

    GUILD_LINKED = "guild.linked"
    SYNC_STARTED = "sync.started"
    GUILD_SYNCED = "guild.synced"
    SYNC_FAILED = "sync.failed"
    SYNC_HELD = "sync.held"
    GUILD_UNLINKED = "guild.unlinked"
    GUILD_REMOVED = "guild.removed"
    MEMBER_JOINED = "member.joined"
    MEMBER_UPDATED = "member.updated"
    MEMBER_LEFT = "member.left"
    # A user's data was erased on the backend's request: one per guild that held some of it.
    USER_ERASED = "user.erased"
    # Discord's webhook events: a server install no callback stored, refused (LINK_WITHOUT_CALLBACK=refuse);
    # a user removed the app (its guild_id is 0: no guild).
    GUILD_INSTALL_REFUSED = "guild.install_refused"
    APP_DEAUTHORIZED = "app.deauthorized"
    # A role change the backend asked for (store/role_changes.py), announced as queued, then applied or failed.
    ROLE_CHANGE_QUEUED = "role_change.queued"
    ROLE_CHANGE_APPLIED = "role_change.applied"
    ROLE_CHANGE_FAILED = "role_change.failed"


MEMBER_EVENTS = {
    MemberChangeKind.JOINED: EventType.MEMBER_JOINED,
    MemberChangeKind.UPDATED: EventType.MEMBER_UPDATED,
    MemberChangeKind.LEFT: EventType.MEMBER_LEFT,
}


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the feed: `id` orders it (ids grow in commit order), `data` is JSON."""

    id: int
    type: EventType
    guild_id: int
    data: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class WebhookCursor:
    """How far webhook delivery has come: every event up to `delivered_up_to` was delivered or skipped.

    The next one has failed `failures` times in a row and is tried again at `retry_at`.
    """

    delivered_up_to: int = 0
    failures: int = 0
    retry_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PrunedEvents:
    """What one prune deleted: `count` events, every id up to `up_to` (0: none), a prefix of the feed.

    `undelivered` counts, by type, those the webhook cursor had not passed yet; `first_undelivered` is the
    lowest such id.
    """

    count: int = 0
    up_to: int = 0
    undelivered: dict[EventType, int] = field(default_factory=dict)
    first_undelivered: int | None = None


@dataclass(frozen=True, slots=True)
class WebhookBacklog:
    """The events after the webhook cursor: how many (by id), and when the oldest of them was written."""

    events: int = 0
    oldest_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class LinkCounts:
    """Links by sync state (inactive ones as 'removed', active ones without a sync as 'pending'), counted
    in the database, and the members stored across the active ones."""

    states: dict[str, int]
    members: int

    @property
    def total(self) -> int:
        return sum(self.states.values())

    @property
    def active(self) -> int:
        return self.total - self.states.get(SyncPhase.REMOVED.value, 0)


class ScrubReason(StrEnum):
    """Why an event's personal data was scrubbed: its `data` says so in place of what it held."""

    ERASED = "erased"
    UNLINKED = "unlinked"
    LEFT = "left"


class EventSubject(NamedTuple):
    """The user whose data an event holds, and whether it holds more of theirs than the id (to be scrubbed)."""

    user_id: int | None
    personal: bool


_NO_SUBJECT = EventSubject(None, False)
# Events naming a user by id alone (in data's user_id): found by an export, nothing to scrub.
_ID_ONLY_EVENTS = frozenset(
    {
        EventType.MEMBER_LEFT,
        EventType.USER_ERASED,
        EventType.APP_DEAUTHORIZED,
        EventType.ROLE_CHANGE_QUEUED,
        EventType.ROLE_CHANGE_APPLIED,
        EventType.ROLE_CHANGE_FAILED,
    }
)


def event_subject(kind: EventType, data: dict[str, Any]) -> EventSubject:
    """Whose data an event of `kind` with `data` holds: the member, or the admin who linked the guild."""
    if kind is EventType.MEMBER_JOINED or kind is EventType.MEMBER_UPDATED:
        return EventSubject(int(data["member"]["id"]), True)
    if kind in _ID_ONLY_EVENTS:
        return EventSubject(int(data["user_id"]), False)
    if kind is EventType.GUILD_LINKED:
        return EventSubject(int(data["linked_by"]["id"]), True)
    if kind is EventType.GUILD_INSTALL_REFUSED:
        return EventSubject(int(data["installed_by"]["id"]), True)
    return _NO_SUBJECT


# The member events whose data a scrub replaces by a tombstone; guild.linked and guild.install_refused only
# lose the admin's username.
SCRUBBED_MEMBER_EVENTS = (EventType.MEMBER_JOINED.value, EventType.MEMBER_UPDATED.value)


@dataclass(frozen=True, slots=True)
class UserErasure:
    """What erasing one user removed: member rows, events scrubbed, and the guilds that held either."""

    user_id: int
    guild_ids: tuple[int, ...]
    members_deleted: int
    events_scrubbed: int


@dataclass(frozen=True, slots=True)
class UserData:
    """Everything stored about one user: their member rows, the links they made, the events naming them."""

    user_id: int
    members: tuple[tuple[int, Member], ...]
    links: tuple[Link, ...]
    events: tuple[Event, ...]
    # More events than the export's limit name them: the feed holds the rest, by id after the last one.
    events_truncated: bool


def link_event_data(link: Link) -> dict[str, Any]:
    return {
        "name": link.guild_name,
        "ref": link.ref,
        "linked_by": {"id": str(link.linked_by_id), "username": link.linked_by_username},
        "source": link.source.value,
    }


def sync_event(previous: str | None, sync: SyncState) -> tuple[EventType, dict[str, Any]] | None:
    """The event a sync state's write announces: only a change of phase to syncing, synced, failed or held."""
    # A sync that waited for Discord's window and now asks goes on: it was announced when it started.
    if previous == sync.phase.value or (
        previous == SyncPhase.WAITING.value and sync.phase is SyncPhase.SYNCING
    ):
        return None
    if sync.phase is SyncPhase.SYNCING:
        return EventType.SYNC_STARTED, {"member_count": sync.member_count}
    if sync.phase is SyncPhase.SYNCED:
        return EventType.GUILD_SYNCED, {"members": sync.members_stored}
    if sync.phase is SyncPhase.FAILED:
        return EventType.SYNC_FAILED, {"error": sync.error, "members_stored": sync.members_stored}
    if sync.phase is SyncPhase.HELD:
        return EventType.SYNC_HELD, {"would_remove": sync.held_removals, "members": sync.members_stored}
    return None


def event_data_json(data: dict[str, Any]) -> str:
    """An event's data as the feed stores it."""
    # orjson, not json: a storm writes tens of thousands of these; a member event's data took json.dumps
    # 4.2 µs and takes orjson 0.24 µs.
    return orjson.dumps(data).decode()


@dataclass(frozen=True, slots=True)
class HoldRule:
    """When a resync's removals are held for confirmation: more than `share` of the stored members, and at
    least `minimum` of them (RECONCILE_HOLD_SHARE, RECONCILE_HOLD_MIN)."""

    share: float = 0.1
    minimum: int = 50

    def holds(self, removals: int, stored: int) -> bool:
        return removals >= self.minimum and removals > self.share * stored


@dataclass(frozen=True, slots=True)
class SyncOutcome:
    """What finishing a sync did: members removed (each announced on a resync), or held for confirmation."""

    members: int
    removed: int
    held: int = 0


def member_change_data(change: MemberChange) -> dict[str, Any]:
    if change.member is None:
        return member_left_data(change.user_id)
    return member_data(change.member)


def member_data(member: Member) -> dict[str, Any]:
    """member.joined's and member.updated's data, for a gateway event and a resync's diff alike."""
    return {"member": member.as_json()}


def member_left_data(user_id: int) -> dict[str, Any]:
    """member.left's data, for a gateway leave and a resync's removal alike."""
    return {"user_id": str(user_id)}
