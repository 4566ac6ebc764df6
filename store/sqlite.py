"""The SQLite engine of the store (aiosqlite): one writer connection, one reader, WAL."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from store.migrations import MIGRATIONS
from store.models import Link, Member, PendingState, SyncPhase, SyncState

log = logging.getLogger(__name__)


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _roles_text(roles: tuple[int, ...]) -> str:
    # Space-separated ids: several times cheaper to write than JSON, and this runs once per member.
    return " ".join(map(str, roles))


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


class SqliteStore:
    """The store on one SQLite file; writes are serialized, reads use their own connection."""

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader
        # aiosqlite shares one connection between coroutines, so transactions would interleave:
        # one lock around BEGIN IMMEDIATE ... COMMIT keeps each write whole.
        self._write_lock = asyncio.Lock()
        self._durable = True

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path) -> AsyncIterator[SqliteStore]:
        """Open (creating if needed) the database file, migrate it, and close it on exit."""
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await aiosqlite.connect(path, isolation_level=None)
        try:
            await writer.execute("PRAGMA journal_mode=WAL")
            # Links must survive a power cut once the success page is sent.
            await writer.execute("PRAGMA synchronous=FULL")
            await writer.execute("PRAGMA busy_timeout=5000")
            reader = await aiosqlite.connect(path, isolation_level=None)
            try:
                await reader.execute("PRAGMA busy_timeout=5000")
                store = cls(writer, reader)
                await store._migrate()
                yield store
            finally:
                await reader.close()
        finally:
            await writer.close()

    async def _use_durability(self, durable: bool) -> None:
        """FULL fsyncs the WAL at every commit; NORMAL only at checkpoints (a power cut may undo the last few)."""
        if durable != self._durable:
            await self._writer.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            self._durable = durable

    @asynccontextmanager
    async def _statement(
        self, sql: str, params: Sequence[Any] = (), *, durable: bool
    ) -> AsyncIterator[aiosqlite.Cursor]:
        """One write statement, atomic on its own (autocommit): a single trip to the database thread."""
        async with self._write_lock:
            await self._use_durability(durable)
            async with self._writer.execute(sql, params) as cursor:
                yield cursor

    @asynccontextmanager
    async def _transaction(self, *, durable: bool = True) -> AsyncIterator[aiosqlite.Connection]:
        """Several write statements as one; `durable=False` for what a resync rebuilds (members, sync states)."""
        async with self._write_lock:
            await self._use_durability(durable)
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")

    async def _migrate(self) -> None:
        await self._writer.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)"
        )
        async with self._writer.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version") as cursor:
            row = await cursor.fetchone()
        current = int(row[0]) if row else 0
        for version, script in enumerate(MIGRATIONS, start=1):
            if version <= current:
                continue
            async with self._transaction() as db:
                for statement in filter(None, (part.strip() for part in script.split(";"))):
                    await db.execute(statement)
                await db.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                    (version, _time(datetime.now(UTC))),
                )
            log.info("store.migrated version=%d", version)

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self._reader.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def ping(self) -> None:
        await self._fetchall("SELECT 1")

    # Pending OAuth2 states

    # Pending OAuth2 states are not fsync'd: after a power cut the worst case is an admin clicking again,
    # and a state that came back could not be used twice anyway (Discord's code is single use).

    async def add_pending_state(self, pending: PendingState, *, limit: int) -> int:
        # Bounded: expired states go, then the oldest beyond `limit`, so a flood of /link costs at most `limit` rows.
        async with self._statement(
            "DELETE FROM pending_states WHERE expires_at <= ? OR state IN ("
            " SELECT state FROM pending_states ORDER BY created_at DESC LIMIT -1 OFFSET ?)",
            (_time(datetime.now(UTC)), max(limit - 1, 0)),
            durable=False,
        ) as cursor:
            dropped = cursor.rowcount
        async with self._statement(
            "INSERT INTO pending_states (state, browser_hash, created_at, expires_at, ref) VALUES (?, ?, ?, ?, ?)",
            (
                pending.state,
                pending.browser_hash,
                _time(pending.created_at),
                _time(pending.expires_at),
                pending.ref,
            ),
            durable=False,
        ):
            pass
        return dropped

    async def take_pending_state(self, state: str) -> PendingState | None:
        async with self._statement(
            "DELETE FROM pending_states WHERE state = ? RETURNING browser_hash, created_at, expires_at, ref",
            (state,),
            durable=False,
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        return PendingState(
            state=state,
            browser_hash=bytes(row[0]),
            created_at=datetime.fromisoformat(row[1]),
            expires_at=datetime.fromisoformat(row[2]),
            ref=row[3],
        )

    async def count_pending_states(self) -> int:
        rows = await self._fetchall("SELECT COUNT(*) FROM pending_states")
        return int(rows[0][0])

    # Links

    async def save_link(self, link: Link) -> Link:
        # Durable: the success page promises the link is recorded.
        async with self._statement(
            "INSERT INTO links (guild_id, guild_name, linked_by_id, linked_by_username, scopes, permissions,"
            " linked_at, ref, active) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)"
            " ON CONFLICT (guild_id) DO UPDATE SET guild_name = excluded.guild_name,"
            " linked_by_id = excluded.linked_by_id, linked_by_username = excluded.linked_by_username,"
            " scopes = excluded.scopes, permissions = excluded.permissions, linked_at = excluded.linked_at,"
            f" ref = COALESCE(excluded.ref, links.ref), active = 1 RETURNING {self._LINK_COLUMNS}",
            (
                link.guild_id,
                link.guild_name,
                link.linked_by_id,
                link.linked_by_username,
                " ".join(link.scopes),
                link.permissions,
                _time(link.linked_at),
                link.ref,
            ),
            durable=True,
        ) as cursor:
            row = await cursor.fetchone()
        assert row is not None
        return self._link(row)

    _LINK_COLUMNS = (
        "guild_id, guild_name, linked_by_id, linked_by_username, scopes, permissions, linked_at, ref, active"
    )

    @staticmethod
    def _link(row: Sequence[Any]) -> Link:
        return Link(
            guild_id=row[0],
            guild_name=row[1],
            linked_by_id=row[2],
            linked_by_username=row[3],
            scopes=tuple(row[4].split()),
            permissions=row[5],
            linked_at=datetime.fromisoformat(row[6]),
            ref=row[7],
            active=bool(row[8]),
        )

    async def get_link(self, guild_id: int) -> Link | None:
        rows = await self._fetchall(f"SELECT {self._LINK_COLUMNS} FROM links WHERE guild_id = ?", (guild_id,))
        return self._link(rows[0]) if rows else None

    async def list_links(self, *, ref: str | None = None, active_only: bool = False) -> list[Link]:
        sql = f"SELECT {self._LINK_COLUMNS} FROM links WHERE 1 = 1"
        params: list[Any] = []
        if ref is not None:
            sql += " AND ref = ?"
            params.append(ref)
        if active_only:
            sql += " AND active = 1"
        rows = await self._fetchall(sql + " ORDER BY linked_at, guild_id", params)
        return [self._link(row) for row in rows]

    async def deactivate_link(self, guild_id: int) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute("UPDATE links SET active = 0 WHERE guild_id = ?", (guild_id,))
            found = cursor.rowcount > 0
            await db.execute("DELETE FROM members WHERE guild_id = ?", (guild_id,))
            await db.execute("DELETE FROM sync_states WHERE guild_id = ?", (guild_id,))
        return found

    # Members

    async def upsert_members(
        self,
        guild_id: int,
        members: Iterable[Member],
        seen_at: datetime,
        *,
        progress: SyncState | None = None,
    ) -> int:
        seen = _time(seen_at)
        rows = [
            (
                guild_id,
                m.user_id,
                m.username,
                m.global_name,
                m.nick,
                m.avatar,
                m.bot,
                _roles_text(m.roles),
                m.joined_at,
                seen,
            )
            for m in members
        ]
        async with self._transaction(durable=False) as db:
            await db.executemany(
                "INSERT INTO members (guild_id, user_id, username, global_name, nick, avatar, bot, roles,"
                " joined_at, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (guild_id, user_id) DO UPDATE SET username = excluded.username,"
                " global_name = excluded.global_name, nick = excluded.nick, avatar = excluded.avatar,"
                " bot = excluded.bot, roles = excluded.roles, joined_at = excluded.joined_at,"
                " last_seen = excluded.last_seen",
                rows,
            )
            if progress is not None:
                await self._write_sync_state(db, progress)
        return len(rows)

    async def remove_member(self, guild_id: int, user_id: int) -> None:
        async with self._transaction(durable=False) as db:
            await db.execute("DELETE FROM members WHERE guild_id = ? AND user_id = ?", (guild_id, user_id))

    async def remove_members_not_seen_since(self, guild_id: int, since: datetime) -> int:
        async with self._transaction(durable=False) as db:
            cursor = await db.execute(
                "DELETE FROM members WHERE guild_id = ? AND last_seen < ?", (guild_id, _time(since))
            )
            return cursor.rowcount

    async def list_members(self, guild_id: int, *, after: int = 0, limit: int = 1000) -> Sequence[Member]:
        rows = await self._fetchall(
            "SELECT user_id, username, global_name, nick, avatar, bot, roles, joined_at FROM members"
            " WHERE guild_id = ? AND user_id > ? ORDER BY user_id LIMIT ?",
            (guild_id, after, limit),
        )
        return [
            Member(
                user_id=row[0],
                username=row[1],
                global_name=row[2],
                nick=row[3],
                avatar=row[4],
                bot=bool(row[5]),
                roles=tuple(map(int, row[6].split())),
                joined_at=row[7],
            )
            for row in rows
        ]

    async def count_members(self, guild_id: int) -> int:
        rows = await self._fetchall("SELECT COUNT(*) FROM members WHERE guild_id = ?", (guild_id,))
        return int(rows[0][0])

    # Sync state

    async def save_sync_state(self, sync: SyncState) -> None:
        async with self._transaction(durable=False) as db:
            await self._write_sync_state(db, sync)

    @staticmethod
    async def _write_sync_state(db: aiosqlite.Connection, sync: SyncState) -> None:
        await db.execute(
            "INSERT INTO sync_states (guild_id, phase, members_stored, member_count, synced_at, error,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (guild_id) DO UPDATE SET"
            " phase = excluded.phase, members_stored = excluded.members_stored,"
            " member_count = excluded.member_count, synced_at = COALESCE(excluded.synced_at, sync_states.synced_at),"
            " error = excluded.error, updated_at = excluded.updated_at",
            (
                sync.guild_id,
                sync.phase.value,
                sync.members_stored,
                sync.member_count,
                _time(sync.synced_at) if sync.synced_at else None,
                sync.error,
                _time(sync.updated_at or datetime.now(UTC)),
            ),
        )

    async def get_sync_state(self, guild_id: int) -> SyncState | None:
        rows = await self._fetchall(
            "SELECT phase, members_stored, member_count, synced_at, error, updated_at FROM sync_states"
            " WHERE guild_id = ?",
            (guild_id,),
        )
        if not rows:
            return None
        row = rows[0]
        return SyncState(
            guild_id=guild_id,
            phase=SyncPhase(row[0]),
            members_stored=row[1],
            member_count=row[2],
            synced_at=_parse_time(row[3]),
            error=row[4],
            updated_at=_parse_time(row[5]),
        )
