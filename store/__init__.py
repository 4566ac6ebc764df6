"""The database: links, invites, members and sync states behind one `Store` interface."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from store.base import GuildLock, Store
from store.errors import (
    InviteUnusableError,
    RefConflictError,
    StoreError,
    StoreUnavailableError,
    TransactionPoolingError,
)
from store.models import (
    Event,
    EventType,
    HoldRule,
    Invite,
    Link,
    LinkCounts,
    LinkedGuild,
    LinkSource,
    Member,
    MemberChange,
    MemberChangeKind,
    PrunedEvents,
    ScrubReason,
    SyncOutcome,
    SyncPhase,
    SyncState,
    UserData,
    UserErasure,
    WebhookBacklog,
    WebhookCursor,
)
from store.postgres import PostgresStore
from store.role_changes import (
    MAX_AUDIT_REASON,
    RoleAction,
    RoleChange,
    RoleChangeOutcome,
    RoleChangeRequest,
    RoleChangeStatus,
)
from store.sqlite import SqliteStore

__all__ = [
    "MAX_AUDIT_REASON",
    "Event",
    "EventType",
    "GuildLock",
    "HoldRule",
    "Invite",
    "InviteUnusableError",
    "Link",
    "LinkCounts",
    "LinkSource",
    "LinkedGuild",
    "Member",
    "MemberChange",
    "MemberChangeKind",
    "PostgresStore",
    "PrunedEvents",
    "RefConflictError",
    "RoleAction",
    "RoleChange",
    "RoleChangeOutcome",
    "RoleChangeRequest",
    "RoleChangeStatus",
    "ScrubReason",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "SyncOutcome",
    "SyncPhase",
    "SyncState",
    "TransactionPoolingError",
    "UnsupportedDatabaseError",
    "UserData",
    "UserErasure",
    "WebhookBacklog",
    "WebhookCursor",
    "is_postgres_url",
    "open_store",
    "sqlite_path",
]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


class UnsupportedDatabaseError(ValueError):
    """DATABASE_URL names an engine this build has no driver code for."""


def sqlite_path(database_url: str) -> Path:
    """The file behind `sqlite:///relative.db` or `sqlite:////absolute.db`."""
    return Path(database_url.removeprefix("sqlite:///"))


def is_postgres_url(database_url: str) -> bool:
    return database_url.startswith(POSTGRES_SCHEMES)


@asynccontextmanager
async def open_store(database_url: str) -> AsyncIterator[Store]:
    """Open the store that `database_url` names (SQLite or PostgreSQL), migrated, and close it on exit."""
    if is_postgres_url(database_url):
        async with PostgresStore.open(database_url) as postgres:
            yield postgres
    elif database_url.startswith("sqlite:///"):
        async with SqliteStore.open(sqlite_path(database_url)) as sqlite:
            yield sqlite
    else:
        raise UnsupportedDatabaseError(
            "DATABASE_URL must be sqlite:///path/to/file.db or postgresql://user:password@host:5432/database."
        )
