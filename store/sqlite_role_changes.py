"""The role-change queue on SQLite: one process serves a file, so a claim is a lease its own workers share."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import aiosqlite

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


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _change(row: Sequence[Any]) -> RoleChange:
    return role_change_from_row(row, datetime.fromisoformat)


class SqliteRoleChanges:
    """SqliteStore's role-change methods (a mixin: the engine supplies its transactions and reads)."""

    if TYPE_CHECKING:

        def _transaction(
            self, *, durable: bool = True
        ) -> AbstractAsyncContextManager[aiosqlite.Connection]: ...

        async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]: ...

        async def _add_feed_events(
            self, db: aiosqlite.Connection, events: Sequence[AnnouncedEvent], at: datetime
        ) -> None: ...

    async def _announce(self, db: aiosqlite.Connection, kind: EventType, change: RoleChange) -> None:
        await self._add_feed_events(
            db, [(kind, change.guild_id, role_change_event_data(change))], change.updated_at
        )

    async def queue_role_change(self, request: RoleChangeRequest) -> RoleChange | None:
        now = _time(datetime.now(UTC))
        # Durable: the backend is told the change is queued.
        async with self._transaction() as db:
            async with db.execute(
                "SELECT active FROM links WHERE guild_id = ?", (request.guild_id,)
            ) as cursor:
                link = await cursor.fetchone()
            if not (link and link[0]):
                return None
            async with db.execute(
                f"SELECT {_COLUMNS} FROM role_changes WHERE status = 'pending' AND guild_id = ? AND user_id = ?"
                " AND role_id = ? ORDER BY id DESC LIMIT 1",
                (request.guild_id, request.user_id, request.role_id),
            ) as cursor:
                latest = await cursor.fetchone()
            if latest is not None and latest[4] == request.action.value:
                return _change(latest)
            async with db.execute(
                "INSERT INTO role_changes (guild_id, user_id, role_id, action, reason, status, created_at,"
                f" updated_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?) RETURNING {_COLUMNS}",
                (
                    request.guild_id,
                    request.user_id,
                    request.role_id,
                    request.action.value,
                    request.reason,
                    now,
                    now,
                    now,
                ),
            ) as cursor:
                [row] = await cursor.fetchall()
            change = _change(row)
            await self._announce(db, EventType.ROLE_CHANGE_QUEUED, change)
        return change

    async def get_role_change(self, change_id: int) -> RoleChange | None:
        rows = await self._fetchall(f"SELECT {_COLUMNS} FROM role_changes WHERE id = ?", (change_id,))
        return _change(rows[0]) if rows else None

    async def list_role_changes(self, guild_id: int, *, limit: int = 50) -> list[RoleChange]:
        rows = await self._fetchall(
            f"SELECT {_COLUMNS} FROM role_changes WHERE guild_id = ? ORDER BY id DESC LIMIT ?",
            (guild_id, limit),
        )
        return [_change(row) for row in rows]

    async def claim_role_changes(self, holder: str, *, lease: float, limit: int) -> list[RoleChange]:
        now = datetime.now(UTC)
        # Read first, on the reader: an idle worker asks every half second, and must not take the file's write
        # lock (nor count as a failed write while the disk is full) to learn that nothing is due.
        due = await self._fetchall(
            "SELECT 1 FROM role_changes WHERE status = 'pending' AND next_attempt_at <= ?1"
            " AND (claimed_until IS NULL OR claimed_until <= ?1) LIMIT 1",
            (_time(now),),
        )
        if not due:
            return []
        async with (
            self._transaction(durable=False) as db,
            db.execute(
                f"UPDATE role_changes SET claimed_by = ?1, claimed_until = ?2 WHERE id IN ("
                " SELECT c.id FROM role_changes c WHERE c.status = 'pending' AND c.next_attempt_at <= ?3"
                " AND (c.claimed_until IS NULL OR c.claimed_until <= ?3) AND NOT EXISTS ("
                "  SELECT 1 FROM role_changes e WHERE e.status = 'pending' AND e.guild_id = c.guild_id"
                "  AND e.user_id = c.user_id AND e.id < c.id)"
                f" ORDER BY c.id LIMIT ?4) RETURNING {_COLUMNS}",
                (holder, _time(now + timedelta(seconds=lease)), _time(now), limit),
            ) as cursor,
        ):
            rows = await cursor.fetchall()
        return sorted((_change(row) for row in rows), key=lambda change: change.id)

    async def finish_role_change(
        self, change_id: int, holder: str, outcome: RoleChangeOutcome
    ) -> RoleChange | None:
        now = _time(datetime.now(UTC))
        applied = outcome.status is RoleChangeStatus.APPLIED
        async with self._transaction() as db:
            async with db.execute(
                "UPDATE role_changes SET status = ?, error_code = ?, error_reason = ?, attempts = attempts + 1,"
                " updated_at = ?, applied_at = ?, claimed_by = NULL, claimed_until = NULL"
                f" WHERE id = ? AND claimed_by = ? AND status = 'pending' RETURNING {_COLUMNS}",
                (
                    outcome.status.value,
                    outcome.error_code,
                    outcome.error_reason,
                    now,
                    now if applied else None,
                    change_id,
                    holder,
                ),
            ) as cursor:
                rows = list(await cursor.fetchall())
            if not rows:
                return None
            change = _change(rows[0])
            await self._announce(db, finished_event(outcome.status), change)
        return change

    async def retry_role_change(self, change_id: int, holder: str, *, after: float) -> bool:
        now = datetime.now(UTC)
        async with self._transaction(durable=False) as db:
            cursor = await db.execute(
                "UPDATE role_changes SET attempts = attempts + 1, next_attempt_at = ?, updated_at = ?,"
                " claimed_by = NULL, claimed_until = NULL WHERE id = ? AND claimed_by = ? AND status = 'pending'",
                (_time(now + timedelta(seconds=after)), _time(now), change_id, holder),
            )
            return cursor.rowcount == 1

    async def note_invalid_request(self, *, window: float) -> None:
        now = datetime.now(UTC)
        async with self._transaction(durable=False) as db:
            await db.execute(
                "DELETE FROM discord_invalid_requests WHERE at <= ?",
                (_time(now - timedelta(seconds=window)),),
            )
            await db.execute("INSERT INTO discord_invalid_requests (at) VALUES (?)", (_time(now),))

    async def count_invalid_requests(self, *, window: float) -> int:
        since = _time(datetime.now(UTC) - timedelta(seconds=window))
        rows = await self._fetchall("SELECT COUNT(*) FROM discord_invalid_requests WHERE at > ?", (since,))
        return int(rows[0][0])
