"""The database: links, invites, members and sync states behind one `Store` interface."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from store.base import Store
from store.errors import InviteUnusableError, RefConflictError, StoreError, StoreUnavailableError
from store.models import Invite, Link, LinkedGuild, Member, SyncPhase, SyncState
from store.sqlite import SqliteStore

__all__ = [
    "Invite",
    "InviteUnusableError",
    "Link",
    "LinkedGuild",
    "Member",
    "RefConflictError",
    "SqliteStore",
    "Store",
    "StoreError",
    "StoreUnavailableError",
    "SyncPhase",
    "SyncState",
    "open_store",
]


class UnsupportedDatabaseError(ValueError):
    """DATABASE_URL names an engine this build has no driver code for."""


def sqlite_path(database_url: str) -> Path:
    """The file behind `sqlite:///relative.db` or `sqlite:////absolute.db`."""
    return Path(database_url.removeprefix("sqlite:///"))


@asynccontextmanager
async def open_store(database_url: str) -> AsyncIterator[SqliteStore]:
    """Open the store that `database_url` names, migrated, and close it on exit."""
    if not database_url.startswith("sqlite:///"):
        raise UnsupportedDatabaseError(
            "Only sqlite:/// databases are supported so far; set DATABASE_URL=sqlite:///data/guildlink.db."
        )
    async with SqliteStore.open(sqlite_path(database_url)) as store:
        yield store
