"""The SQLite engine of the store (aiosqlite): one writer connection, one reader, WAL."""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite
import orjson

from store.errors import InviteUnusableError, RefConflictError, StoreUnavailableError
from store.like import contains_pattern
from store.member_changes import member_writes, user_ids_by_guild
from store.migrations.sqlite import MIGRATIONS
from store.models import (
    MEMBER_EVENTS,
    SCRUBBED_MEMBER_EVENTS,
    UNFINISHED_PHASES,
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
    PrunedEvents,
    ScrubReason,
    SyncOutcome,
    SyncPhase,
    SyncState,
    UserData,
    UserErasure,
    WebhookBacklog,
    WebhookCursor,
    event_data_json,
    event_subject,
    link_event_data,
    member_change_data,
    sync_event,
)
from store.reconcile import (
    AnnouncedEvent,
    LinkState,
    StoredMember,
    chunk_events,
    held_state,
    latest_copies,
    left_events,
    synced_state,
)
from store.sqlite_locks import FileGuildLocks, SqliteGuildLock
from store.sqlite_role_changes import SqliteRoleChanges
from store.write_failures import WriteFailureMemory

log = logging.getLogger(__name__)


# How often a process waiting to deliver webhooks tries the lock again.
WEBHOOK_LOCK_RETRY = 1.0


def _time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _roles_text(roles: tuple[int, ...]) -> str:
    # Space-separated ids: several times cheaper to write than JSON, and this runs once per member.
    return " ".join(map(str, roles))


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _reason(exc: sqlite3.Error) -> str:
    """A reason fit for operators and clients: the condition, never a value."""
    text = str(exc).lower()
    if "readonly" in text or "read-only" in text:
        return "the database is read-only"
    if "full" in text:
        return "the disk holding the database is full"
    if "locked" in text or "busy" in text:
        return "the database is locked by another program"
    if "unable to open" in text:
        return "the database file cannot be opened"
    return f"the database failed ({getattr(exc, 'sqlite_errorname', type(exc).__name__)})"


@contextmanager
def _unavailable_on_failure() -> Iterator[None]:
    try:
        yield
    except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
        if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError):
            raise
        raise StoreUnavailableError(_reason(exc)) from exc


def _open_private(path: Path) -> None:
    """Create the database file, or check an existing one can be written; readable by its owner only.

    It holds members' data; SQLite gives the -wal and -shm files the database file's permissions.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _fresher(column: str) -> str:
    """The chunk's value, unless a gateway event changed the member after the chunk's snapshot (?11)."""
    return (
        f"{column} = CASE WHEN members.changed_at IS NULL OR members.changed_at < ?11"
        f" THEN excluded.{column} ELSE members.{column} END"
    )


_UPSERT_CHUNK = (
    "INSERT INTO members (guild_id, user_id, username, global_name, nick, avatar, bot, roles, joined_at,"
    " last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (guild_id, user_id) DO UPDATE SET "
    + ", ".join(map(_fresher, ("username", "global_name", "nick", "avatar", "bot", "roles", "joined_at")))
    + ", last_seen = excluded.last_seen"
)

_UPSERT_CHANGES = (
    "INSERT INTO members (guild_id, user_id, username, global_name, nick, avatar, bot, roles, joined_at,"
    " last_seen, changed_at) VALUES {values} ON CONFLICT (guild_id, user_id) DO UPDATE SET"
    " username = excluded.username, global_name = excluded.global_name, nick = excluded.nick,"
    " avatar = excluded.avatar, bot = excluded.bot, roles = excluded.roles, joined_at = excluded.joined_at,"
    # Never back in time: an event written late (the database was slow) must not make a resync that read
    # the member since take it for gone. ISO times in UTC compare as text.
    " last_seen = max(members.last_seen, excluded.last_seen), changed_at = excluded.changed_at"
)
_INSERT_EVENTS = "INSERT INTO events (type, guild_id, data, created_at, user_id, personal) VALUES {values}"
# A batch of member events is written ROWS_PER_STATEMENT rows to a statement (the rest one by one): a
# statement per row cost the storm's writer thread a third more, the feed's AUTOINCREMENT counter being
# updated at the end of every statement. 250 rows of 11 parameters stay far below SQLite's 32,766.
ROWS_PER_STATEMENT = 250


def _rows_statements(sql: str, columns: int) -> tuple[str, str]:
    """`sql` with one row of `columns` parameters, and with ROWS_PER_STATEMENT of them."""
    row = "(" + ", ".join("?" * columns) + ")"
    return sql.format(values=row), sql.format(values=", ".join([row] * ROWS_PER_STATEMENT))


_UPSERT_CHANGE, _UPSERT_CHANGES_MANY = _rows_statements(_UPSERT_CHANGES, 11)
_INSERT_EVENT, _INSERT_EVENTS_MANY = _rows_statements(_INSERT_EVENTS, 6)
_MEMBER_EVENT_TYPES = {kind: event.value for kind, event in MEMBER_EVENTS.items()}
# A scrubbed event keeps its id, type, guild and time; a member event's data becomes a tombstone naming the
# user and why; guild.linked and guild.install_refused only lose the admin's username. ?1: the ScrubReason.
_SCRUB_SET = (
    "UPDATE events SET personal = 0, data = CASE type"
    " WHEN 'guild.linked' THEN json_set(data, '$.linked_by.username', NULL)"
    " WHEN 'guild.install_refused' THEN json_set(data, '$.installed_by.username', NULL)"
    " ELSE json_object('user_id', CAST(user_id AS TEXT), 'scrubbed', ?1) END"
)
_MEMBER_TYPES_SQL = "(" + ", ".join(f"'{kind}'" for kind in SCRUBBED_MEMBER_EVENTS) + ")"
# The departed-data scrub walks this many member.left events to a transaction.
SCRUB_BATCH = 1000


async def _insert_rows(
    db: aiosqlite.Connection, one: str, many: str, rows: Sequence[tuple[Any, ...]]
) -> None:
    """Insert `rows` in order: ROWS_PER_STATEMENT to a `many` statement, what is left by `one`."""
    whole = len(rows) - len(rows) % ROWS_PER_STATEMENT
    if whole:
        await db.executemany(
            many,
            [
                list(itertools.chain.from_iterable(rows[start : start + ROWS_PER_STATEMENT]))
                for start in range(0, whole, ROWS_PER_STATEMENT)
            ],
        )
    if whole < len(rows):
        await db.executemany(one, rows[whole:])


def _event(row: Sequence[Any]) -> Event:
    """An Event from a row of id, type, guild_id, data, created_at."""
    return Event(row[0], EventType(row[1]), row[2], json.loads(row[3]), datetime.fromisoformat(row[4]))


def _utc_text(value: datetime) -> str:
    """_time, without its conversion for a time in UTC already (a storm's every event is one)."""
    return value.isoformat() if value.tzinfo is UTC else _time(value)


def _change_row(change: MemberChange) -> tuple[Any, ...]:
    """The parameters of _UPSERT_CHANGE: the member's columns, then last_seen and changed_at."""
    m = change.member
    assert m is not None
    at = _utc_text(change.received_at)
    # Member is a NamedTuple: its first six fields are the columns' order.
    return (change.guild_id, *m[:6], _roles_text(m.roles), m.joined_at, at, at)


def _member_row(guild_id: int, m: Member, last_seen: str, at: str) -> tuple[Any, ...]:
    """The parameters of _UPSERT_CHUNK (`at`: the chunk's snapshot)."""
    return (
        guild_id,
        m.user_id,
        m.username,
        m.global_name,
        m.nick,
        m.avatar,
        m.bot,
        _roles_text(m.roles),
        m.joined_at,
        last_seen,
        at,
    )


async def _add_events(db: aiosqlite.Connection, events: Sequence[AnnouncedEvent], at: datetime) -> None:
    """Announce changes in the feed, in the transaction that makes them."""
    created = _time(at)
    await db.executemany(
        _INSERT_EVENT,
        [
            (kind.value, guild_id, event_data_json(data), created, *event_subject(kind, data))
            for kind, guild_id, data in events
        ],
    )


class SqliteStore(SqliteRoleChanges):
    """The store on one SQLite file; writes are serialized, reads use their own connection."""

    def __init__(
        self, writer: aiosqlite.Connection, reader: aiosqlite.Connection, guild_locks: FileGuildLocks
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._guild_locks = guild_locks
        # aiosqlite shares one connection between coroutines, so transactions would interleave:
        # one lock around BEGIN IMMEDIATE ... COMMIT keeps each write whole.
        self._write_lock = asyncio.Lock()
        self._durable = True
        self._write_failures = WriteFailureMemory()

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path) -> AsyncIterator[SqliteStore]:
        """Open (creating if needed) the database file, migrate it, check it takes writes, close it on exit.

        Raise StoreUnavailableError if it cannot be opened, migrated or written.
        """
        try:
            _open_private(path)
        except OSError as exc:
            raise StoreUnavailableError(f"the database file cannot be written ({exc.strerror})") from exc
        with _unavailable_on_failure():
            writer = await aiosqlite.connect(path, isolation_level=None)
        try:
            with _unavailable_on_failure():
                await writer.execute("PRAGMA journal_mode=WAL")
                # Links must survive a power cut once the success page is sent.
                await writer.execute("PRAGMA synchronous=FULL")
                await writer.execute("PRAGMA busy_timeout=5000")
                reader = await aiosqlite.connect(path, isolation_level=None)
            try:
                with _unavailable_on_failure():
                    await reader.execute("PRAGMA busy_timeout=5000")
                store = cls(writer, reader, FileGuildLocks.of_file(path))
                try:
                    await store._migrate()
                    await store.check_writable()
                    yield store
                finally:
                    store._guild_locks.release_all_of(store)
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
            try:
                with _unavailable_on_failure():
                    await self._use_durability(durable)
                    async with self._writer.execute(sql, params) as cursor:
                        yield cursor
            except StoreUnavailableError as exc:
                self._write_failures.failed(exc.reason)
                raise

    @asynccontextmanager
    async def _transaction(self, *, durable: bool = True) -> AsyncIterator[aiosqlite.Connection]:
        """Several write statements as one; `durable=False` for what a resync rebuilds (members, sync states)."""
        async with self._write_lock:
            try:
                with _unavailable_on_failure():
                    await self._use_durability(durable)
                    try:
                        # Inside: a BEGIN whose await is cancelled still runs, and must be undone too.
                        await self._writer.execute("BEGIN IMMEDIATE")
                        yield self._writer
                        await self._writer.execute("COMMIT")
                    except BaseException:
                        await self._rollback()
                        raise
            except StoreUnavailableError as exc:
                self._write_failures.failed(exc.reason)
                raise

    async def _rollback(self) -> None:
        # A failed COMMIT (disk full) may have rolled back already, and a COMMIT whose await was cancelled still
        # runs in the writer's thread: its state is known only after this ROLLBACK, which the thread runs next.
        try:
            await self._writer.execute("ROLLBACK")
        except sqlite3.OperationalError:
            if self._writer.in_transaction:
                raise

    async def _migrate(self) -> None:
        with _unavailable_on_failure():
            await self._writer.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL, applied_at TEXT NOT NULL)"
            )
            async with self._writer.execute("SELECT version FROM schema_version") as cursor:
                applied = {int(row[0]) for row in await cursor.fetchall()}
        # Each step not recorded yet, not only those above the highest: a number may be kept for a step that
        # comes later (see MIGRATIONS), and a file may have the steps after it already.
        for version, script in enumerate(MIGRATIONS, start=1):
            if version in applied or script is None:
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
        with _unavailable_on_failure():
            async with self._reader.execute(sql, params) as cursor:
                return list(await cursor.fetchall())

    async def ping(self) -> None:
        await self._fetchall("SELECT 1")

    async def check_writable(self) -> None:
        async with self._statement(
            "INSERT INTO health (id, checked_at) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
            (_time(datetime.now(UTC)),),
            durable=True,
        ):
            pass

    def recent_write_failure(self) -> str | None:
        return self._write_failures.recent()

    # OAuth2 states: not fsync'd. After a power cut the worst case is a state usable once more, and the
    # code it came back with is single use at Discord anyway.

    async def use_state_once(self, nonce: bytes, expires_at: datetime) -> bool:
        now = _time(datetime.now(UTC))
        async with self._transaction(durable=False) as db:
            await db.execute("DELETE FROM used_states WHERE expires_at <= ?", (now,))
            cursor = await db.execute(
                "INSERT INTO used_states (nonce, expires_at) VALUES (?, ?) ON CONFLICT (nonce) DO NOTHING",
                (nonce, _time(expires_at)),
            )
            return cursor.rowcount == 1

    # Invites

    async def add_invite(self, invite: Invite, *, limit: int) -> bool:
        now = _time(datetime.now(UTC))
        # Durable: the backend hands the URL on as soon as we answer.
        async with self._transaction(durable=True) as db:
            await db.execute("DELETE FROM invites WHERE expires_at <= ?", (now,))
            async with db.execute("SELECT COUNT(*) FROM invites WHERE used_at IS NULL") as cursor:
                row = await cursor.fetchone()
            if row is not None and row[0] >= limit:
                return False
            await db.execute(
                "INSERT INTO invites (token_hash, ref, created_at, expires_at) VALUES (?, ?, ?, ?)",
                (invite.token_hash, invite.ref, _time(invite.created_at), _time(invite.expires_at)),
            )
        return True

    async def get_invite(self, token_hash: bytes) -> Invite | None:
        rows = await self._fetchall(
            "SELECT ref, created_at, expires_at, used_at, guild_id FROM invites WHERE token_hash = ?",
            (token_hash,),
        )
        if not rows:
            return None
        ref, created_at, expires_at, used_at, guild_id = rows[0]
        return Invite(
            token_hash=token_hash,
            ref=ref,
            created_at=datetime.fromisoformat(created_at),
            expires_at=datetime.fromisoformat(expires_at),
            used_at=_parse_time(used_at),
            guild_id=guild_id,
        )

    # Links

    _LINK_COLUMNS = (
        "links.guild_id, guild_name, linked_by_id, linked_by_username, scopes, permissions, linked_at, ref,"
        " active, links.member_count, links.source"
    )

    async def save_link(self, link: Link, *, invite_hash: bytes | None = None) -> Link:
        now = datetime.now(UTC)
        # Durable: the success page promises the link is recorded.
        async with self._transaction(durable=True) as db:
            if invite_hash is not None:
                async with db.execute(
                    "SELECT used_at, expires_at FROM invites WHERE token_hash = ?", (invite_hash,)
                ) as cursor:
                    invite = await cursor.fetchone()
                if invite is None or invite[0] is not None or datetime.fromisoformat(invite[1]) <= now:
                    raise InviteUnusableError("the invite is unknown, used or expired")
            async with db.execute(
                "SELECT ref, active FROM links WHERE guild_id = ?", (link.guild_id,)
            ) as cursor:
                existing = await cursor.fetchone()
            if (
                existing is not None
                and existing[1]
                and link.ref is not None
                and existing[0] not in (None, link.ref)
            ):
                raise RefConflictError(link.guild_id)
            async with db.execute(
                "INSERT INTO links (guild_id, guild_name, linked_by_id, linked_by_username, scopes, permissions,"
                " linked_at, ref, active, source) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1, ?)"
                " ON CONFLICT (guild_id) DO UPDATE SET guild_name = excluded.guild_name,"
                " linked_by_id = excluded.linked_by_id, linked_by_username = excluded.linked_by_username,"
                " scopes = excluded.scopes, permissions = excluded.permissions, linked_at = excluded.linked_at,"
                " ref = COALESCE(excluded.ref, links.ref), active = 1, source = excluded.source"
                f" RETURNING {self._LINK_COLUMNS}",
                (
                    link.guild_id,
                    link.guild_name,
                    link.linked_by_id,
                    link.linked_by_username,
                    " ".join(link.scopes),
                    link.permissions,
                    _time(link.linked_at),
                    link.ref,
                    link.source.value,
                ),
            ) as cursor:
                row = await cursor.fetchone()
            # A new or revived link waits for its sync; a link that is being synced keeps its progress.
            await db.execute(
                "INSERT INTO sync_states (guild_id, phase, updated_at) VALUES (?, 'pending', ?)"
                " ON CONFLICT (guild_id) DO UPDATE SET phase = 'pending', members_stored = 0, error = NULL,"
                " synced_at = NULL, updated_at = excluded.updated_at WHERE sync_states.phase = 'removed'",
                (link.guild_id, _time(now)),
            )
            if invite_hash is not None:
                await db.execute(
                    "UPDATE invites SET used_at = ?, guild_id = ? WHERE token_hash = ?",
                    (_time(now), link.guild_id, invite_hash),
                )
            assert row is not None
            saved = self._link(row)
            await _add_events(db, [(EventType.GUILD_LINKED, saved.guild_id, link_event_data(saved))], now)
        return saved

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
            member_count=row[9],
            source=LinkSource(row[10]),
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

    async def list_linked_guilds(self, *, ref: str | None = None) -> list[LinkedGuild]:
        sql = (
            f"SELECT {self._LINK_COLUMNS}, {self._SYNC_COLUMNS} FROM links"
            " LEFT JOIN sync_states ON sync_states.guild_id = links.guild_id"
        )
        params: list[Any] = []
        if ref is not None:
            sql += " WHERE ref = ?"
            params.append(ref)
        rows = await self._fetchall(sql + " ORDER BY linked_at, links.guild_id", params)
        return self._linked_guilds(rows)

    @classmethod
    def _linked_guilds(cls, rows: Iterable[Sequence[Any]]) -> list[LinkedGuild]:
        """Rows of _LINK_COLUMNS then _SYNC_COLUMNS (NULL without a sync state)."""
        width = 11
        return [
            LinkedGuild(
                cls._link(row[:width]),
                cls._sync_state(row[0], row[width:]) if row[width] is not None else None,
            )
            for row in rows
        ]

    async def deactivate_link(self, guild_id: int, *, bot_removed: bool = False) -> bool:
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE links SET active = 0, member_count = 0 WHERE guild_id = ? AND active = 1", (guild_id,)
            )
            found = cursor.rowcount > 0
            await db.execute("DELETE FROM members WHERE guild_id = ?", (guild_id,))
            if found:
                await db.execute(
                    f"{_SCRUB_SET} WHERE guild_id = ?2 AND personal = 1 AND type IN {_MEMBER_TYPES_SQL}",
                    (ScrubReason.UNLINKED.value, guild_id),
                )
                await self._write_sync_state(db, SyncState(guild_id, SyncPhase.REMOVED))
                kind = EventType.GUILD_REMOVED if bot_removed else EventType.GUILD_UNLINKED
                await _add_events(db, [(kind, guild_id, {})], datetime.now(UTC))
            else:
                cursor = await db.execute("SELECT 1 FROM links WHERE guild_id = ?", (guild_id,))
                found = await cursor.fetchone() is not None
        return found

    async def _add_feed_events(
        self, db: aiosqlite.Connection, events: Sequence[AnnouncedEvent], at: datetime
    ) -> None:
        """The feed's writer, for the role-change methods (store/sqlite_role_changes.py)."""
        await _add_events(db, events, at)

    async def announce(self, kind: EventType, guild_id: int, data: dict[str, Any]) -> None:
        async with self._transaction() as db:
            await _add_events(db, [(kind, guild_id, data)], datetime.now(UTC))

    # Members

    async def upsert_members(
        self,
        guild_id: int,
        members: Iterable[Member],
        seen_at: datetime,
        *,
        progress: SyncState | None = None,
        snapshot_at: datetime | None = None,
    ) -> int | None:
        seen = _time(seen_at)
        # A member a gateway event changed after the snapshot (a sync's request) keeps the event's data.
        snapshot = snapshot_at or seen_at
        given = list(members)
        chunk = latest_copies(given)
        rows = [_member_row(guild_id, m, seen, _time(snapshot)) for m in chunk]
        user_ids = json.dumps([m.user_id for m in chunk])
        async with self._transaction(durable=False) as db:
            # Checked inside the transaction: an unlink commits either before this (nothing is written)
            # or after it (and deletes what this wrote).
            link = await self._link_state(db, guild_id)
            if link is None or not link.active:
                return None
            events: list[AnnouncedEvent] = []
            if link.resync:
                stored = await self._stored_members(db, guild_id, user_ids)
                events, added = chunk_events(guild_id, chunk, stored, snapshot)
            else:
                async with db.execute(
                    "SELECT COUNT(*) FROM members WHERE guild_id = ? AND user_id IN (SELECT value FROM json_each(?))",
                    (guild_id, user_ids),
                ) as cursor:
                    known = await cursor.fetchone()
                added = len(rows) - (known[0] if known else 0)
            await db.executemany(_UPSERT_CHUNK, rows)
            if added:
                await self._add_to_member_count(db, guild_id, added)
            if events:
                await _add_events(db, events, datetime.now(UTC))
            if progress is not None:
                await self._write_sync_state(db, progress)
        self._write_failures.succeeded()
        return len(given)

    @staticmethod
    async def _link_state(db: aiosqlite.Connection, guild_id: int) -> LinkState | None:
        async with db.execute(
            "SELECT links.active, sync_states.synced_at IS NOT NULL, sync_states.phase, sync_states.held_before,"
            " links.member_count FROM links LEFT JOIN sync_states USING (guild_id) WHERE links.guild_id = ?",
            (guild_id,),
        ) as cursor:
            row = await cursor.fetchone()
        if row is None:
            return None
        return LinkState(bool(row[0]), bool(row[1]), row[2], _parse_time(row[3]), row[4])

    @staticmethod
    async def _stored_members(
        db: aiosqlite.Connection, guild_id: int, user_ids: str
    ) -> dict[int, StoredMember]:
        """The stored rows of the users in `user_ids` (a JSON array), with when an event last changed each."""
        async with db.execute(
            "SELECT user_id, username, global_name, nick, avatar, bot, roles, joined_at, changed_at FROM members"
            " WHERE guild_id = ? AND user_id IN (SELECT value FROM json_each(?))",
            (guild_id, user_ids),
        ) as cursor:
            rows = list(await cursor.fetchall())
        members = SqliteStore._members(rows)
        return {m.user_id: StoredMember(m, _parse_time(row[8])) for m, row in zip(members, rows, strict=True)}

    async def finish_sync(self, guild_id: int, started: datetime, hold: HoldRule) -> SyncOutcome | None:
        async with self._transaction(durable=False) as db:
            link = await self._link_state(db, guild_id)
            if link is None or not link.active:
                return None
            async with db.execute(
                "SELECT COUNT(*) FROM members WHERE guild_id = ? AND last_seen < ?",
                (guild_id, _time(started)),
            ) as cursor:
                row = await cursor.fetchone()
            unseen = row[0] if row else 0
            if link.resync and hold.holds(unseen, link.member_count):
                await self._write_sync_state(db, held_state(guild_id, link.member_count, unseen, started))
                return SyncOutcome(link.member_count, 0, held=unseen)
            return await self._remove_unseen(db, guild_id, started, link)

    async def confirm_held_removals(self, guild_id: int) -> SyncOutcome | None:
        async with self._transaction(durable=False) as db:
            link = await self._link_state(db, guild_id)
            if (
                link is None
                or not link.active
                or link.phase != SyncPhase.HELD.value
                or link.held_before is None
            ):
                return None
            return await self._remove_unseen(db, guild_id, link.held_before, link)

    async def _remove_unseen(
        self, db: aiosqlite.Connection, guild_id: int, before: datetime, link: LinkState
    ) -> SyncOutcome:
        """Remove the members not seen since `before` (announced on a resync) and record the sync as done."""
        async with db.execute(
            "DELETE FROM members WHERE guild_id = ? AND last_seen < ? RETURNING user_id",
            (guild_id, _time(before)),
        ) as cursor:
            removed = sorted(row[0] for row in await cursor.fetchall())
        if removed:
            await self._add_to_member_count(db, guild_id, -len(removed))
        if removed and link.resync:
            await _add_events(db, left_events(guild_id, removed), datetime.now(UTC))
        members = link.member_count - len(removed)
        await self._write_sync_state(db, synced_state(guild_id, members))
        return SyncOutcome(members, len(removed))

    @staticmethod
    async def _is_active(db: aiosqlite.Connection, guild_id: int) -> bool:
        async with db.execute("SELECT active FROM links WHERE guild_id = ?", (guild_id,)) as cursor:
            row = await cursor.fetchone()
        return bool(row and row[0])

    @staticmethod
    async def _add_to_member_count(db: aiosqlite.Connection, guild_id: int, delta: int) -> None:
        await db.execute(
            "UPDATE links SET member_count = member_count + ? WHERE guild_id = ?", (delta, guild_id)
        )

    async def apply_member_changes(self, changes: Sequence[MemberChange]) -> int:
        guild_ids = orjson.dumps(sorted({change.guild_id for change in changes})).decode()
        async with self._transaction(durable=False) as db:
            async with db.execute(
                "SELECT guild_id FROM links WHERE active = 1 AND guild_id IN (SELECT value FROM json_each(?))",
                (guild_ids,),
            ) as cursor:
                active = {row[0] for row in await cursor.fetchall()}
            applied = [change for change in changes if change.guild_id in active]
            if not applied:
                return 0
            writes = member_writes(applied)
            # Each guild's count moves by the members its upserts add and its removals delete: the first
            # counted before the upsert, the second by the deletes themselves.
            deltas = dict.fromkeys(active, 0)
            for guild_id, user_ids in user_ids_by_guild(writes.upserts).items():
                deltas[guild_id] += len(user_ids) - await self._count_present(db, guild_id, user_ids)
            await _insert_rows(
                db, _UPSERT_CHANGE, _UPSERT_CHANGES_MANY, [_change_row(c) for c in writes.upserts]
            )
            for guild_id, user_ids in user_ids_by_guild(writes.removals).items():
                cursor = await db.execute(
                    "DELETE FROM members WHERE guild_id = ? AND user_id IN (SELECT value FROM json_each(?))",
                    (guild_id, orjson.dumps(user_ids).decode()),
                )
                deltas[guild_id] -= cursor.rowcount
                await cursor.close()
            for guild_id, delta in deltas.items():
                if delta:
                    await self._add_to_member_count(db, guild_id, delta)
            created = _time(datetime.now(UTC))
            await _insert_rows(
                db,
                _INSERT_EVENT,
                _INSERT_EVENTS_MANY,
                [
                    # The event's subject (event_subject) read off the change: the storm's hot path.
                    (
                        _MEMBER_EVENT_TYPES[c.kind],
                        c.guild_id,
                        event_data_json(member_change_data(c)),
                        created,
                        c.user_id,
                        c.member is not None,
                    )
                    for c in applied
                ],
            )
        self._write_failures.succeeded()
        return len(applied)

    @staticmethod
    async def _count_present(db: aiosqlite.Connection, guild_id: int, user_ids: list[int]) -> int:
        """How many of `user_ids` are the guild's members now."""
        async with db.execute(
            "SELECT COUNT(*) FROM members WHERE guild_id = ? AND user_id IN (SELECT value FROM json_each(?))",
            (guild_id, orjson.dumps(user_ids).decode()),
        ) as cursor:
            row = await cursor.fetchone()
        return int(row[0]) if row else 0

    async def list_events(self, *, after: int = 0, limit: int = 100) -> list[Event]:
        rows = await self._fetchall(
            "SELECT id, type, guild_id, data, created_at FROM events WHERE id > ? ORDER BY id LIMIT ?",
            (after, limit),
        )
        return [_event(row) for row in rows]

    async def prune_events(self, before: datetime) -> PrunedEvents:
        async with self._transaction(durable=False) as db:
            # The first event still within the retention, walked to by id (+: not through the created_at
            # index, which would read every newer event): everything below it goes, so the feed keeps a
            # contiguous run of ids and the mark below is exact.
            async with db.execute(
                "SELECT id FROM events WHERE +created_at >= ? ORDER BY id LIMIT 1", (_time(before),)
            ) as cursor:
                row = await cursor.fetchone()
            keep_from = row[0] if row else None
            async with db.execute(
                "SELECT COALESCE(MAX(id), 0) FROM events WHERE ? IS NULL OR id < ?", (keep_from, keep_from)
            ) as cursor:
                (up_to,) = await cursor.fetchone() or (0,)
            if not up_to:
                return PrunedEvents()
            async with db.execute(
                "SELECT type, COUNT(*), MIN(id) FROM events WHERE id <= ? AND id > COALESCE("
                "(SELECT delivered_up_to FROM webhook_cursor WHERE id = 1), 0) GROUP BY type",
                (up_to,),
            ) as cursor:
                undelivered = list(await cursor.fetchall())
            deleted = await db.execute("DELETE FROM events WHERE id <= ?", (up_to,))
            await db.execute(
                "INSERT INTO feed_pruned (id, pruned_up_to, pruned_at) VALUES (1, ?, ?) ON CONFLICT (id)"
                " DO UPDATE SET pruned_up_to = MAX(pruned_up_to, excluded.pruned_up_to),"
                " pruned_at = excluded.pruned_at",
                (up_to, _time(datetime.now(UTC))),
            )
        return PrunedEvents(
            count=deleted.rowcount,
            up_to=up_to,
            undelivered={EventType(kind): count for kind, count, _ in undelivered},
            first_undelivered=min((first for _, _, first in undelivered), default=None),
        )

    async def scrub_departed(self, left_before: datetime) -> int:
        scrubbed = 0
        while True:
            async with self._transaction(durable=False) as db:
                async with db.execute(
                    "SELECT id, guild_id, user_id, created_at < ? FROM events WHERE type = 'member.left' AND id >"
                    " COALESCE((SELECT departed_up_to FROM feed_scrub WHERE id = 1), 0) ORDER BY id LIMIT ?",
                    (_time(left_before), SCRUB_BATCH),
                ) as cursor:
                    rows = list(await cursor.fetchall())
                # Up to the first leave still within the window: the walk goes on from there next time.
                due = list(itertools.takewhile(lambda row: row[3], rows))
                for left_id, guild_id, user_id, _ in due:
                    cursor = await db.execute(
                        f"{_SCRUB_SET} WHERE user_id = ?2 AND personal = 1 AND guild_id = ?3 AND id < ?4"
                        f" AND type IN {_MEMBER_TYPES_SQL}",
                        (ScrubReason.LEFT.value, user_id, guild_id, left_id),
                    )
                    scrubbed += cursor.rowcount
                    await cursor.close()
                if due:
                    await db.execute(
                        "INSERT INTO feed_scrub (id, departed_up_to) VALUES (1, ?)"
                        " ON CONFLICT (id) DO UPDATE SET departed_up_to = excluded.departed_up_to",
                        (due[-1][0],),
                    )
            if len(due) < SCRUB_BATCH:
                return scrubbed

    async def erase_user(self, user_id: int) -> UserErasure:
        async with self._transaction() as db:
            # By guild, through the members' primary key: there is no index on user_id alone.
            async with db.execute(
                "DELETE FROM members WHERE user_id = ? AND guild_id IN (SELECT guild_id FROM links WHERE active = 1)"
                " RETURNING guild_id",
                (user_id,),
            ) as cursor:
                member_guilds = [row[0] for row in await cursor.fetchall()]
            for guild_id in member_guilds:
                await self._add_to_member_count(db, guild_id, -1)
            async with db.execute(
                f"{_SCRUB_SET} WHERE user_id = ?2 AND personal = 1 RETURNING guild_id",
                (ScrubReason.ERASED.value, user_id),
            ) as cursor:
                event_guilds = [row[0] for row in await cursor.fetchall()]
            async with db.execute(
                "UPDATE links SET linked_by_username = '' WHERE linked_by_id = ? RETURNING guild_id",
                (user_id,),
            ) as cursor:
                link_guilds = [row[0] for row in await cursor.fetchall()]
            guild_ids = tuple(sorted({*member_guilds, *event_guilds, *link_guilds}))
            await _add_events(
                db,
                [(EventType.USER_ERASED, guild_id, {"user_id": str(user_id)}) for guild_id in guild_ids],
                datetime.now(UTC),
            )
        return UserErasure(user_id, guild_ids, len(member_guilds), len(event_guilds))

    async def export_user(self, user_id: int, *, event_limit: int) -> UserData:
        member_rows = await self._fetchall(
            "SELECT guild_id, user_id, username, global_name, nick, avatar, bot, roles, joined_at FROM members"
            " WHERE user_id = ? AND guild_id IN (SELECT guild_id FROM links WHERE active = 1) ORDER BY guild_id",
            (user_id,),
        )
        members = self._members(row[1:] for row in member_rows)
        link_rows = await self._fetchall(
            f"SELECT {self._LINK_COLUMNS} FROM links WHERE linked_by_id = ? ORDER BY guild_id", (user_id,)
        )
        event_rows = await self._fetchall(
            "SELECT id, type, guild_id, data, created_at FROM events WHERE user_id = ? ORDER BY id LIMIT ?",
            (user_id, event_limit + 1),
        )
        return UserData(
            user_id,
            tuple(zip((row[0] for row in member_rows), members, strict=True)),
            tuple(self._link(row) for row in link_rows),
            tuple(_event(row) for row in event_rows[:event_limit]),
            events_truncated=len(event_rows) > event_limit,
        )

    async def feed_pruned_up_to(self) -> int:
        rows = await self._fetchall("SELECT pruned_up_to FROM feed_pruned WHERE id = 1")
        return int(rows[0][0]) if rows else 0

    async def webhook_backlog(self) -> WebhookBacklog:
        # Counted by id, not by row: two look-ups in the primary key however long the backlog is.
        rows = await self._fetchall(
            "WITH mark AS (SELECT MAX("
            " COALESCE((SELECT delivered_up_to FROM webhook_cursor WHERE id = 1), 0),"
            " COALESCE((SELECT pruned_up_to FROM feed_pruned WHERE id = 1), 0)) AS at)"
            " SELECT MAX(0, COALESCE((SELECT MAX(id) FROM events), 0) - mark.at),"
            " (SELECT created_at FROM events WHERE id > mark.at ORDER BY id LIMIT 1) FROM mark"
        )
        [(events, oldest)] = rows
        return WebhookBacklog(int(events) if oldest else 0, _parse_time(oldest))

    async def count_links(self) -> LinkCounts:
        rows = await self._fetchall(
            "SELECT CASE WHEN links.active = 0 THEN 'removed' ELSE COALESCE(sync_states.phase, 'pending') END,"
            " COUNT(*), SUM(CASE WHEN links.active = 1 THEN links.member_count ELSE 0 END) FROM links"
            " LEFT JOIN sync_states ON sync_states.guild_id = links.guild_id GROUP BY 1"
        )
        return LinkCounts({row[0]: row[1] for row in rows}, sum(row[2] for row in rows))

    async def page_linked_guilds(self, *, after: int = 0, limit: int = 100) -> list[LinkedGuild]:
        rows = await self._fetchall(
            f"SELECT {self._LINK_COLUMNS}, {self._SYNC_COLUMNS} FROM links"
            " LEFT JOIN sync_states ON sync_states.guild_id = links.guild_id"
            " WHERE links.guild_id > ? ORDER BY links.guild_id LIMIT ?",
            (after, limit),
        )
        return self._linked_guilds(rows)

    async def list_members(self, guild_id: int, *, after: int = 0, limit: int = 1000) -> Sequence[Member]:
        rows = await self._fetchall(
            "SELECT user_id, username, global_name, nick, avatar, bot, roles, joined_at FROM members"
            " WHERE guild_id = ? AND user_id > ? ORDER BY user_id LIMIT ?",
            (guild_id, after, limit),
        )
        return self._members(rows)

    async def search_members(
        self, guild_id: int, text: str, *, after: int = 0, limit: int = 100
    ) -> Sequence[Member]:
        # SQLite's LIKE ignores the case of ASCII letters only. The primary key walks one guild in user-id
        # order, so a page stops as soon as it holds `limit` matches; no name index could keep that order.
        rows = await self._fetchall(
            "SELECT user_id, username, global_name, nick, avatar, bot, roles, joined_at FROM members"
            " WHERE guild_id = ?1 AND user_id > ?2 AND (username LIKE ?3 ESCAPE '\\'"
            " OR global_name LIKE ?3 ESCAPE '\\' OR nick LIKE ?3 ESCAPE '\\') ORDER BY user_id LIMIT ?4",
            (guild_id, after, contains_pattern(text), limit),
        )
        return self._members(rows)

    @staticmethod
    def _members(rows: Iterable[Sequence[Any]]) -> list[Member]:
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

    async def save_sync_state(self, sync: SyncState) -> bool:
        async with self._transaction(durable=False) as db:
            if not await self._is_active(db, sync.guild_id):
                return False
            await self._write_sync_state(db, sync)
        return True

    @staticmethod
    async def _write_sync_state(db: aiosqlite.Connection, sync: SyncState) -> None:
        async with db.execute("SELECT phase FROM sync_states WHERE guild_id = ?", (sync.guild_id,)) as cursor:
            previous = await cursor.fetchone()
        if announced := sync_event(previous[0] if previous else None, sync):
            await _add_events(db, [(announced[0], sync.guild_id, announced[1])], datetime.now(UTC))
        await db.execute(
            "INSERT INTO sync_states (guild_id, phase, members_stored, member_count, synced_at, error,"
            " updated_at, waiting_until, held_removals, held_before) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (guild_id) DO UPDATE SET phase = excluded.phase, members_stored = excluded.members_stored,"
            " member_count = excluded.member_count, synced_at = COALESCE(excluded.synced_at, sync_states.synced_at),"
            " error = excluded.error, updated_at = excluded.updated_at, waiting_until = excluded.waiting_until,"
            " held_removals = excluded.held_removals, held_before = excluded.held_before",
            (
                sync.guild_id,
                sync.phase.value,
                sync.members_stored,
                sync.member_count,
                _time(sync.synced_at) if sync.synced_at else None,
                sync.error,
                _time(sync.updated_at or datetime.now(UTC)),
                _time(sync.waiting_until) if sync.waiting_until else None,
                sync.held_removals,
                _time(sync.held_before) if sync.held_before else None,
            ),
        )

    _SYNC_COLUMNS = (
        "phase, members_stored, sync_states.member_count, synced_at, error, updated_at, waiting_until,"
        " held_removals, held_before"
    )

    @staticmethod
    def _sync_state(guild_id: int, row: Sequence[Any]) -> SyncState:
        return SyncState(
            guild_id=guild_id,
            phase=SyncPhase(row[0]),
            members_stored=row[1],
            member_count=row[2],
            synced_at=_parse_time(row[3]),
            error=row[4],
            updated_at=_parse_time(row[5]),
            waiting_until=_parse_time(row[6]),
            held_removals=row[7],
            held_before=_parse_time(row[8]),
        )

    async def get_sync_state(self, guild_id: int) -> SyncState | None:
        rows = await self._fetchall(
            f"SELECT {self._SYNC_COLUMNS} FROM sync_states WHERE guild_id = ?", (guild_id,)
        )
        return self._sync_state(guild_id, rows[0]) if rows else None

    # Webhook delivery

    @asynccontextmanager
    async def webhook_delivery_lock(self) -> AsyncIterator[asyncio.Event]:
        # A lock on a file beside the database: one SQLite database has one process, but a second one
        # started by mistake must not deliver too, and the kernel lets go of the lock when its holder dies.
        rows = await self._fetchall("PRAGMA database_list")
        path = next(row[2] for row in rows if row[1] == "main") + "-webhooks.lock"
        try:
            fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:
            raise StoreUnavailableError(f"the webhook lock file cannot be opened ({exc.strerror})") from exc
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(WEBHOOK_LOCK_RETRY)
            try:
                yield asyncio.Event()  # never lost while the process lives
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    async def webhook_cursor(self) -> WebhookCursor:
        rows = await self._fetchall(
            "SELECT delivered_up_to, failures, retry_at FROM webhook_cursor WHERE id = 1"
        )
        if not rows:
            return WebhookCursor()
        return WebhookCursor(rows[0][0], rows[0][1], _parse_time(rows[0][2]))

    # Not fsync'd (a process crash loses no commit in WAL mode): a power cut may undo the last few advances,
    # and those events are delivered again, which at-least-once allows.

    async def advance_webhook_cursor(self, event_id: int) -> None:
        async with self._statement(
            "INSERT INTO webhook_cursor (id, delivered_up_to) VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET"
            " delivered_up_to = excluded.delivered_up_to, failures = 0, retry_at = NULL"
            " WHERE excluded.delivered_up_to > webhook_cursor.delivered_up_to",
            (event_id,),
            durable=False,
        ):
            pass

    async def note_webhook_failure(self, retry_at: datetime) -> int:
        async with self._statement(
            "INSERT INTO webhook_cursor (id, delivered_up_to, failures, retry_at) VALUES (1, 0, 1, ?)"
            " ON CONFLICT (id) DO UPDATE SET failures = webhook_cursor.failures + 1, retry_at = excluded.retry_at"
            " RETURNING failures",
            (_time(retry_at),),
            durable=False,
        ) as cursor:
            # Every row read, so that the statement (and its autocommit) is finished inside the lock.
            [row] = await cursor.fetchall()
        return int(row[0])

    # What a fleet shares on PostgreSQL, here for the one process a SQLite file serves (and any other
    # store it opens on the file): the same answers, from this machine's clock.

    async def try_lock_guild(self, guild_id: int) -> SqliteGuildLock | None:
        return self._guild_locks.try_lock(guild_id, owner=self)

    async def member_list_wait(self, guild_id: int) -> float:
        rows = await self._fetchall("SELECT until FROM member_list_cooldowns WHERE guild_id = ?", (guild_id,))
        if not rows:
            return 0.0
        return max(0.0, (datetime.fromisoformat(rows[0][0]) - datetime.now(UTC)).total_seconds())

    async def hold_off_member_list(self, guild_id: int, seconds: float) -> None:
        until = _time(datetime.now(UTC) + timedelta(seconds=seconds))
        async with self._statement(
            "INSERT INTO member_list_cooldowns (guild_id, until) VALUES (?, ?)"
            " ON CONFLICT (guild_id) DO UPDATE SET until = excluded.until",
            (guild_id, until),
            durable=False,
        ):
            pass

    async def reserve_identify(self, bucket: int, interval: float) -> float:
        # BEGIN IMMEDIATE takes the file's write lock: bookings take turns, as under PostgreSQL's bucket lock.
        async with self._transaction() as db:
            async with db.execute(
                "SELECT identified_at FROM identify_buckets WHERE bucket = ?", (bucket,)
            ) as cursor:
                row = await cursor.fetchone()
            now = datetime.now(UTC)
            slot = (
                now if row is None else max(now, datetime.fromisoformat(row[0]) + timedelta(seconds=interval))
            )
            await db.execute(
                "INSERT INTO identify_buckets (bucket, identified_at) VALUES (?, ?)"
                " ON CONFLICT (bucket) DO UPDATE SET identified_at = excluded.identified_at",
                (bucket, _time(slot)),
            )
        return (slot - now).total_seconds()

    async def list_unfinished_links(self, shard_count: int, shard_ids: Sequence[int]) -> list[Link]:
        rows = await self._fetchall(
            f"SELECT {self._LINK_COLUMNS} FROM links"
            " LEFT JOIN sync_states ON sync_states.guild_id = links.guild_id"
            " WHERE links.active = 1 AND (links.guild_id >> 22) % ? IN (SELECT value FROM json_each(?))"
            " AND (sync_states.phase IS NULL OR sync_states.phase IN (SELECT value FROM json_each(?)))"
            " ORDER BY linked_at, links.guild_id",
            (shard_count, json.dumps(list(shard_ids)), json.dumps(UNFINISHED_PHASES)),
        )
        return [self._link(row) for row in rows]
