"""The role-change queue on PostgreSQL: workers of every process claim with FOR UPDATE SKIP LOCKED and a lease.

SKIP LOCKED keeps two claims that run at once off each other's rows; the lease (`claimed_until`, the server's
clock) keeps a claimed change from everyone else until its holder records it, or died and the lease ran out.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from store.models import EventType
from store.reconcile import AnnouncedEvent
from store.role_changes import (
    ROLE_CHANGE_COLUMNS,
    RoleChange,
    RoleChangeOutcome,
    RoleChangeRequest,
    RoleChangeStatus,
    finished_event,
    role_change_event_data,
    role_change_from_row,
)

_COLUMNS = ROLE_CHANGE_COLUMNS
# The same, where another table of the statement has an id too.
_QUALIFIED_COLUMNS = ", ".join(f"role_changes.{column.strip()}" for column in _COLUMNS.split(","))


def _as_is(value: datetime) -> datetime:
    return value


def _change(row: Sequence[Any]) -> RoleChange:
    return role_change_from_row(row, _as_is)


class PostgresRoleChanges:
    """PostgresStore's role-change methods (a mixin: the engine supplies transactions, reads and the feed)."""

    if TYPE_CHECKING:

        def _transaction(
            self, *, durable: bool = True, staging: str | None = None
        ) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

        async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]: ...

        async def _add_feed_events(
            self, conn: asyncpg.Connection, events: Sequence[AnnouncedEvent], at: datetime
        ) -> None: ...

    async def _announce(self, conn: asyncpg.Connection, kind: EventType, change: RoleChange) -> None:
        await self._add_feed_events(
            conn, [(kind, change.guild_id, role_change_event_data(change))], change.updated_at
        )

    async def queue_role_change(self, request: RoleChangeRequest) -> RoleChange | None:
        async with self._transaction() as conn:
            # The link's row lock: an unlink waits for the queuing, or the queuing sees the link inactive.
            active = await conn.fetchval(
                "SELECT active FROM links WHERE guild_id = $1 FOR SHARE", request.guild_id
            )
            if not active:
                return None
            # One queuing of a member's role at a time, so that two identical requests at once queue one change.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                f"role_change:{request.guild_id}:{request.user_id}:{request.role_id}",
            )
            latest = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM role_changes WHERE status = 'pending' AND guild_id = $1 AND user_id = $2"
                " AND role_id = $3 ORDER BY id DESC LIMIT 1",
                request.guild_id,
                request.user_id,
                request.role_id,
            )
            if latest is not None and latest["action"] == request.action.value:
                return _change(latest)
            row = await conn.fetchrow(
                "INSERT INTO role_changes (guild_id, user_id, role_id, action, reason, status, created_at,"
                " updated_at, next_attempt_at) VALUES ($1, $2, $3, $4, $5, 'pending', clock_timestamp(),"
                f" clock_timestamp(), clock_timestamp()) RETURNING {_COLUMNS}",
                request.guild_id,
                request.user_id,
                request.role_id,
                request.action.value,
                request.reason,
            )
            change = _change(row)
            await self._announce(conn, EventType.ROLE_CHANGE_QUEUED, change)
        return change

    async def get_role_change(self, change_id: int) -> RoleChange | None:
        rows = await self._fetch(f"SELECT {_COLUMNS} FROM role_changes WHERE id = $1", change_id)
        return _change(rows[0]) if rows else None

    async def list_role_changes(self, guild_id: int, *, limit: int = 50) -> list[RoleChange]:
        rows = await self._fetch(
            f"SELECT {_COLUMNS} FROM role_changes WHERE guild_id = $1 ORDER BY id DESC LIMIT $2",
            guild_id,
            limit,
        )
        return [_change(row) for row in rows]

    async def claim_role_changes(self, holder: str, *, lease: float, limit: int) -> list[RoleChange]:
        # Read first: an idle worker asks every half second, and needs no write transaction to learn that
        # nothing is due.
        due = await self._fetch(
            "SELECT 1 FROM role_changes WHERE status = 'pending' AND next_attempt_at <= clock_timestamp()"
            " AND (claimed_until IS NULL OR claimed_until <= clock_timestamp()) LIMIT 1"
        )
        if not due:
            return []
        async with self._transaction(durable=False) as conn:
            # A row another claim holds is skipped, not waited for; the member's later changes stay behind it
            # (NOT EXISTS sees it pending). A row claimed and committed meanwhile is rechecked by the server
            # before it is locked here, and then found leased.
            rows = await conn.fetch(
                "WITH due AS ("
                " SELECT c.id FROM role_changes c WHERE c.status = 'pending'"
                " AND c.next_attempt_at <= clock_timestamp()"
                " AND (c.claimed_until IS NULL OR c.claimed_until <= clock_timestamp()) AND NOT EXISTS ("
                "  SELECT 1 FROM role_changes e WHERE e.status = 'pending' AND e.guild_id = c.guild_id"
                "  AND e.user_id = c.user_id AND e.id < c.id)"
                " ORDER BY c.id LIMIT $3 FOR UPDATE SKIP LOCKED)"
                " UPDATE role_changes SET claimed_by = $1, claimed_until = clock_timestamp() + $2::interval"
                f" FROM due WHERE role_changes.id = due.id RETURNING {_QUALIFIED_COLUMNS}",
                holder,
                timedelta(seconds=lease),
                limit,
            )
        return sorted((_change(row) for row in rows), key=lambda change: change.id)

    async def finish_role_change(
        self, change_id: int, holder: str, outcome: RoleChangeOutcome
    ) -> RoleChange | None:
        applied = outcome.status is RoleChangeStatus.APPLIED
        async with self._transaction() as conn:
            row = await conn.fetchrow(
                "UPDATE role_changes SET status = $3, error_code = $4, error_reason = $5, attempts = attempts + 1,"
                " updated_at = clock_timestamp(),"
                " applied_at = CASE WHEN $6::boolean THEN clock_timestamp() END,"
                " claimed_by = NULL, claimed_until = NULL"
                f" WHERE id = $1 AND claimed_by = $2 AND status = 'pending' RETURNING {_COLUMNS}",
                change_id,
                holder,
                outcome.status.value,
                outcome.error_code,
                outcome.error_reason,
                applied,
            )
            if row is None:
                return None
            change = _change(row)
            await self._announce(conn, finished_event(outcome.status), change)
        return change

    async def retry_role_change(self, change_id: int, holder: str, *, after: float) -> bool:
        async with self._transaction(durable=False) as conn:
            status = await conn.execute(
                "UPDATE role_changes SET attempts = attempts + 1,"
                " next_attempt_at = clock_timestamp() + $3::interval, updated_at = clock_timestamp(),"
                " claimed_by = NULL, claimed_until = NULL WHERE id = $1 AND claimed_by = $2 AND status = 'pending'",
                change_id,
                holder,
                timedelta(seconds=after),
            )
        return bool(status == "UPDATE 1")

    async def note_invalid_request(self, *, window: float) -> None:
        async with self._transaction(durable=False) as conn:
            await conn.execute(
                "DELETE FROM discord_invalid_requests WHERE at <= clock_timestamp() - $1::interval",
                timedelta(seconds=window),
            )
            await conn.execute("INSERT INTO discord_invalid_requests (at) VALUES (clock_timestamp())")

    async def count_invalid_requests(self, *, window: float) -> int:
        rows = await self._fetch(
            "SELECT COUNT(*) FROM discord_invalid_requests WHERE at > clock_timestamp() - $1::interval",
            timedelta(seconds=window),
        )
        return int(rows[0][0])
