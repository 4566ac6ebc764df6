"""The PostgreSQL engine of the store (asyncpg): a pool of connections, one transaction per write."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from store.errors import InviteUnusableError, RefConflictError, StoreUnavailableError
from store.like import contains_pattern
from store.member_changes import member_writes
from store.migrations.postgres import MIGRATIONS
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
from store.postgres_errors import LOST_CONNECTION, unavailable_on_failure
from store.postgres_locks import LOCKS_APPLICATION_NAME, PostgresGuildLock, PostgresGuildLocks
from store.postgres_role_changes import PostgresRoleChanges
from store.postgres_sessions import check_sessions_are_own, connect_session
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
from store.write_failures import WriteFailureMemory

log = logging.getLogger(__name__)

POOL_MAX_SIZE = 10
CONNECT_TIMEOUT = 10.0
# A statement, or a wait for a free connection, that takes longer than this counts as the database failing.
COMMAND_TIMEOUT = 60.0
ACQUIRE_TIMEOUT = 30.0

# Advisory locks of the store itself take the two-int key space, (this, what), so that they never meet the
# one-bigint keys that per-guild work may take with a guild id.
_LOCK_CLASS = 0x676C6E6B  # "glnk"
_MIGRATION_LOCK = 1
_INVITES_LOCK = 2
# IDENTIFY buckets: (this, bucket).
_IDENTIFY_CLASS = 0x676C6964  # "glid"
# Held from the insert of events to the commit: ids then commit in the order they were drawn, so a reader
# paging by id never passes an id whose event commits after it looked.
_EVENTS_LOCK = 3
# A session lock, held on a connection of its own for as long as this process delivers webhooks.
_WEBHOOK_LOCK = 4
# How often a process waiting to deliver webhooks tries the lock again, and how often the holder checks
# that the lock's connection (so the lock) is still there.
WEBHOOK_LOCK_RETRY = 1.0
WEBHOOK_LOCK_CHECK = 5.0

_LINK_COLUMNS = (
    "links.guild_id, guild_name, linked_by_id, linked_by_username, scopes, permissions, linked_at, ref,"
    " active, links.member_count, links.source"
)
_SYNC_COLUMNS = (
    "phase, members_stored, sync_states.member_count, synced_at, error, updated_at, waiting_until,"
    " held_removals, held_before"
)
_MEMBER_COLUMNS = ("user_id", "username", "global_name", "nick", "avatar", "bot", "roles", "joined_at")

# Each connection's own staging table for a chunk of members, emptied at every commit: COPY fills it, one
# INSERT ... SELECT merges it. Temporary tables are not written to the WAL, and each session has its own;
# made by the first chunk a connection writes, and kept by the pool (see _reset_pooled). Roles arrive as the
# array's text form ('{1,2}') and are cast in the merge: asyncpg checks an int array against three abstract
# classes and each element against one, and text made the COPY of a 1,000-member chunk a fifth faster.
_STAGED_MEMBER = """
    user_id BIGINT NOT NULL,
    username TEXT NOT NULL,
    global_name TEXT,
    nick TEXT,
    avatar TEXT,
    bot BOOLEAN NOT NULL,
    roles TEXT NOT NULL,
    joined_at TEXT"""
_STAGING = f"CREATE TEMPORARY TABLE IF NOT EXISTS member_chunk ({_STAGED_MEMBER}\n) ON COMMIT DELETE ROWS"

# The same for a batch of member events: any guilds, each row stamped with when its event arrived. The
# writer has left at most one change per member in it, so one merge touches no row twice.
_CHANGE_STAGING = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS member_change_batch (\n    guild_id BIGINT NOT NULL,"
    f"{_STAGED_MEMBER},\n    changed_at TIMESTAMPTZ NOT NULL\n) ON COMMIT DELETE ROWS"
)
_CHANGE_COLUMNS = ("guild_id", *_MEMBER_COLUMNS, "changed_at")

# One statement: the merge, and the link's member count raised by the rows it inserted. A row the merge
# inserted has no xmax; one it updated carries the updating transaction's id there, as the row's lock. (PG 15
# has no MERGE ... RETURNING merge_action(); the alternative, probing the primary key for each chunk row
# before the merge, cost a quarter of the merge's time.)
_MERGE_CHUNK = """
WITH merged AS (
    INSERT INTO members (guild_id, user_id, username, global_name, nick, avatar, bot, roles, joined_at,
        last_seen)
    SELECT $1, user_id, username, global_name, nick, avatar, bot, roles::bigint[], joined_at, $2 FROM member_chunk
    ON CONFLICT (guild_id, user_id) DO UPDATE SET {fresher}, last_seen = excluded.last_seen
    RETURNING xmax = 0 AS inserted
), added AS (
    SELECT COUNT(*) FILTER (WHERE inserted) AS n FROM merged
), counted AS (
    UPDATE links SET member_count = member_count + added.n FROM added WHERE guild_id = $1 AND added.n > 0
)
SELECT n FROM added
""".format(
    # A member a gateway event changed after the chunk's snapshot ($3) keeps the event's data.
    fresher=", ".join(
        f"{column} = CASE WHEN members.changed_at IS NULL OR members.changed_at < $3"
        f" THEN excluded.{column} ELSE members.{column} END"
        for column in ("username", "global_name", "nick", "avatar", "bot", "roles", "joined_at")
    )
)

# last_seen never goes back in time: an event written late must not make a resync that read the member since
# take it for gone. Each with its guilds' member counts moved by the rows it inserted (no xmax, as in _MERGE_CHUNK) or deleted:
# under the link locks, nothing else writes these guilds' members meanwhile.
_MERGE_CHANGES = """
WITH merged AS (
    INSERT INTO members (guild_id, user_id, username, global_name, nick, avatar, bot, roles, joined_at,
        last_seen, changed_at)
    SELECT guild_id, user_id, username, global_name, nick, avatar, bot, roles::bigint[], joined_at, changed_at,
        changed_at
    FROM member_change_batch
    ON CONFLICT (guild_id, user_id) DO UPDATE SET username = excluded.username,
        global_name = excluded.global_name, nick = excluded.nick, avatar = excluded.avatar, bot = excluded.bot,
        roles = excluded.roles, joined_at = excluded.joined_at,
        last_seen = GREATEST(members.last_seen, excluded.last_seen), changed_at = excluded.changed_at
    RETURNING guild_id, xmax = 0 AS inserted
), added AS (
    SELECT guild_id, COUNT(*) FILTER (WHERE inserted) AS n FROM merged GROUP BY guild_id
)
UPDATE links SET member_count = member_count + added.n FROM added
WHERE links.guild_id = added.guild_id AND added.n > 0
"""

_REMOVE_MEMBERS = """
WITH gone AS (
    DELETE FROM members USING unnest($1::bigint[], $2::bigint[]) AS leaving (guild_id, user_id)
    WHERE members.guild_id = leaving.guild_id AND members.user_id = leaving.user_id
    RETURNING members.guild_id
), removed AS (
    SELECT guild_id, COUNT(*) AS n FROM gone GROUP BY guild_id
)
UPDATE links SET member_count = member_count - removed.n FROM removed WHERE links.guild_id = removed.guild_id
"""
_EVENT_COLUMNS = ("type", "guild_id", "data", "created_at", "user_id", "personal")
# As SQLite's _SCRUB_SET: a member event's data becomes a tombstone, guild.linked loses the admin's username.
_SCRUB_SET = (
    "UPDATE events SET personal = false, data = CASE type"
    " WHEN 'guild.linked' THEN jsonb_set(data, '{linked_by,username}', 'null'::jsonb)"
    " WHEN 'guild.install_refused' THEN jsonb_set(data, '{installed_by,username}', 'null'::jsonb)"
    " ELSE jsonb_build_object('user_id', user_id::text, 'scrubbed', $1::text) END"
)
# The departed-data scrub walks this many member.left events to a transaction.
SCRUB_BATCH = 1000


def _rowcount(status: str) -> int:
    """The count at the end of a command tag such as 'DELETE 3' or 'INSERT 0 1'."""
    return int(status.rsplit(" ", 1)[-1])


class PostgresStore(PostgresRoleChanges):
    """The store on one PostgreSQL database, shared by any number of guildlink processes."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        connect: Callable[[str], Awaitable[asyncpg.Connection]],
        guild_locks: PostgresGuildLocks,
    ) -> None:
        self._pool = pool
        self._connect = connect
        self._guild_locks = guild_locks
        self._write_failures = WriteFailureMemory()

    @classmethod
    @asynccontextmanager
    async def open(cls, dsn: str) -> AsyncIterator[PostgresStore]:
        """Connect to the database `dsn` names, migrate it, check it takes writes, close the pool on exit.

        Raise StoreUnavailableError if it cannot be reached, migrated or written, TransactionPoolingError (one)
        if a pooler shares its sessions between transactions.
        """
        # Before anything else runs on such a pooler and fails in ways that would not say why.
        await check_sessions_are_own(dsn, connect_timeout=CONNECT_TIMEOUT)
        with unavailable_on_failure():
            pool = await asyncpg.create_pool(
                dsn,
                min_size=1,
                max_size=POOL_MAX_SIZE,
                timeout=CONNECT_TIMEOUT,
                command_timeout=COMMAND_TIMEOUT,
                reset=_reset_pooled,
            )

        async def connect(application_name: str = LOCKS_APPLICATION_NAME) -> asyncpg.Connection:
            """A session of its own, outside the pool, for session locks."""
            return await connect_session(
                dsn, application_name, connect_timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT
            )

        guild_locks = PostgresGuildLocks(connect)
        try:
            store = cls(pool, connect, guild_locks)
            await store._migrate()
            await store.check_writable()
            yield store
        finally:
            await guild_locks.close()
            await pool.close()

    @asynccontextmanager
    async def _transaction(
        self, *, durable: bool = True, staging: str | None = None
    ) -> AsyncIterator[asyncpg.Connection]:
        """Several statements as one; `durable=False` for what a resync rebuilds (members, sync states, nonces).

        `staging`: the CREATE TEMPORARY TABLE IF NOT EXISTS of a staging table the transaction fills.
        """
        # The commit of a durable=False transaction returns before the WAL is flushed; a crash may undo the
        # last few such commits, never leave one half done (SQLite's synchronous=NORMAL).
        preamble = ([] if durable else ["SET LOCAL synchronous_commit TO OFF"]) + (
            [staging] if staging else []
        )
        try:
            with unavailable_on_failure():
                async with self._begun() as conn:
                    if preamble:
                        # One round trip: statements without parameters go together as one simple query.
                        await conn.execute(";".join(preamble))
                    yield conn
        except StoreUnavailableError as exc:
            self._write_failures.failed(exc.reason)
            raise

    @asynccontextmanager
    async def _begun(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection in a new transaction, committed on exit, rolled back on an exception.

        A connection the server ended while it sat in the pool fails at BEGIN, before anything of ours ran:
        then the try is repeated on a new connection, so that a database restart fails no request.
        """
        for attempt in range(2):
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT) as conn:
                transaction = conn.transaction()
                try:
                    await transaction.start()
                except LOST_CONNECTION:
                    if attempt:
                        raise
                    await self._replace_connections()
                    continue
                try:
                    yield conn
                except BaseException:
                    await transaction.rollback()
                    raise
                await transaction.commit()
                return

    async def _migrate(self) -> None:
        for version, script in enumerate(MIGRATIONS, start=1):
            if script is None:
                continue
            async with self._transaction() as conn:
                # Two processes starting at once: the second waits here, then finds the step applied.
                await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _LOCK_CLASS, _MIGRATION_LOCK)
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_version"
                    " (version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
                )
                # Each step not recorded yet, not only those above the highest, as SQLite's migrator: a number
                # may be kept (None) for a step that comes later.
                if await conn.fetchval(
                    "SELECT EXISTS (SELECT 1 FROM schema_version WHERE version = $1)", version
                ):
                    continue
                await conn.execute(script)
                await conn.execute(
                    "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                    version,
                    datetime.now(UTC),
                )
            log.info("store.migrated engine=postgres version=%d", version)

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        with unavailable_on_failure():
            try:
                return await self._pool.fetch(sql, *args, timeout=COMMAND_TIMEOUT)
            except LOST_CONNECTION:
                # A read is safe to repeat on a new connection.
                await self._replace_connections()
                return await self._pool.fetch(sql, *args, timeout=COMMAND_TIMEOUT)

    async def _execute(self, sql: str, *args: Any) -> None:
        """One statement on its own (autocommit); repeated on a new connection if the first was lost before it ran."""
        with unavailable_on_failure():
            try:
                await self._pool.execute(sql, *args, timeout=COMMAND_TIMEOUT)
            except LOST_CONNECTION:
                await self._replace_connections()
                await self._pool.execute(sql, *args, timeout=COMMAND_TIMEOUT)

    async def _replace_connections(self) -> None:
        """Have every pooled connection replaced at its next use: one lost usually means a restart ended all."""
        log.warning("store.connection_lost engine=postgres: reconnecting")
        await self._pool.expire_connections()

    async def ping(self) -> None:
        await self._fetch("SELECT 1")

    async def check_writable(self) -> None:
        async with self._transaction() as conn:
            await conn.execute(
                "INSERT INTO health (id, checked_at) VALUES (1, $1)"
                " ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                datetime.now(UTC),
            )
        # Every sync starts on it: a pool that works beside a lock connection that cannot open is a store
        # whose syncs all fail.
        try:
            await self._guild_locks.check()
        except StoreUnavailableError as exc:
            raise StoreUnavailableError(f"cannot take guild sync locks: {exc.reason}") from exc

    def recent_write_failure(self) -> str | None:
        return self._write_failures.recent()

    # OAuth2 states: not durable. After a crash the worst case is a state usable once more, and the code it
    # came back with is single use at Discord anyway.

    async def use_state_once(self, nonce: bytes, expires_at: datetime) -> bool:
        async with self._transaction(durable=False) as conn:
            await conn.execute("DELETE FROM used_states WHERE expires_at <= $1", datetime.now(UTC))
            # A second use waits for the first one's commit, then does nothing.
            status = await conn.execute(
                "INSERT INTO used_states (nonce, expires_at) VALUES ($1, $2) ON CONFLICT (nonce) DO NOTHING",
                nonce,
                expires_at,
            )
            return _rowcount(status) == 1

    # Invites

    async def add_invite(self, invite: Invite, *, limit: int) -> bool:
        # Durable: the backend hands the URL on as soon as we answer.
        async with self._transaction() as conn:
            # Counting and inserting is one step for the bound to hold: concurrent additions take turns.
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _LOCK_CLASS, _INVITES_LOCK)
            await conn.execute("DELETE FROM invites WHERE expires_at <= $1", datetime.now(UTC))
            if await conn.fetchval("SELECT COUNT(*) FROM invites WHERE used_at IS NULL") >= limit:
                return False
            await conn.execute(
                "INSERT INTO invites (token_hash, ref, created_at, expires_at) VALUES ($1, $2, $3, $4)",
                invite.token_hash,
                invite.ref,
                invite.created_at,
                invite.expires_at,
            )
        return True

    async def get_invite(self, token_hash: bytes) -> Invite | None:
        rows = await self._fetch(
            "SELECT ref, created_at, expires_at, used_at, guild_id FROM invites WHERE token_hash = $1",
            token_hash,
        )
        if not rows:
            return None
        ref, created_at, expires_at, used_at, guild_id = rows[0]
        return Invite(token_hash, ref, created_at, expires_at, used_at=used_at, guild_id=guild_id)

    # Links

    async def save_link(self, link: Link, *, invite_hash: bytes | None = None) -> Link:
        now = datetime.now(UTC)
        # Durable: the success page promises the link is recorded.
        async with self._transaction() as conn:
            if invite_hash is not None:
                # Locked: of two links started from one invite, the second reads it used.
                invite = await conn.fetchrow(
                    "SELECT used_at, expires_at FROM invites WHERE token_hash = $1 FOR UPDATE", invite_hash
                )
                if invite is None or invite[0] is not None or invite[1] <= now:
                    raise InviteUnusableError("the invite is unknown, used or expired")
            # The ref rule sits in the upsert's WHERE, which PostgreSQL checks on the locked, latest row: a
            # concurrent first link of the same guild for another ref is refused too. No row back: refused.
            row = await conn.fetchrow(
                "INSERT INTO links (guild_id, guild_name, linked_by_id, linked_by_username, scopes, permissions,"
                " linked_at, ref, active, source) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, TRUE, $9)"
                " ON CONFLICT (guild_id) DO UPDATE SET guild_name = excluded.guild_name,"
                " linked_by_id = excluded.linked_by_id, linked_by_username = excluded.linked_by_username,"
                " scopes = excluded.scopes, permissions = excluded.permissions, linked_at = excluded.linked_at,"
                " ref = COALESCE(excluded.ref, links.ref), active = TRUE, source = excluded.source"
                " WHERE NOT links.active OR excluded.ref IS NULL OR links.ref IS NULL OR links.ref = excluded.ref"
                f" RETURNING {_LINK_COLUMNS}",
                link.guild_id,
                link.guild_name,
                link.linked_by_id,
                link.linked_by_username,
                list(link.scopes),
                link.permissions,
                link.linked_at,
                link.ref,
                link.source.value,
            )
            if row is None:
                raise RefConflictError(link.guild_id)
            # A new or revived link waits for its sync; a link that is being synced keeps its progress.
            await conn.execute(
                "INSERT INTO sync_states (guild_id, phase, updated_at) VALUES ($1, 'pending', $2)"
                " ON CONFLICT (guild_id) DO UPDATE SET phase = 'pending', members_stored = 0, error = NULL,"
                " synced_at = NULL, updated_at = excluded.updated_at WHERE sync_states.phase = 'removed'",
                link.guild_id,
                now,
            )
            if invite_hash is not None:
                await conn.execute(
                    "UPDATE invites SET used_at = $1, guild_id = $2 WHERE token_hash = $3",
                    now,
                    link.guild_id,
                    invite_hash,
                )
            saved = _link(row)
            await _add_events(conn, [(EventType.GUILD_LINKED, saved.guild_id, link_event_data(saved))], now)
        return saved

    async def get_link(self, guild_id: int) -> Link | None:
        rows = await self._fetch(f"SELECT {_LINK_COLUMNS} FROM links WHERE guild_id = $1", guild_id)
        return _link(rows[0]) if rows else None

    async def list_links(self, *, ref: str | None = None, active_only: bool = False) -> list[Link]:
        rows = await self._fetch(
            f"SELECT {_LINK_COLUMNS} FROM links WHERE ($1::text IS NULL OR ref = $1) AND (active OR NOT $2)"
            " ORDER BY linked_at, guild_id",
            ref,
            active_only,
        )
        return [_link(row) for row in rows]

    async def list_linked_guilds(self, *, ref: str | None = None) -> list[LinkedGuild]:
        rows = await self._fetch(
            f"SELECT {_LINK_COLUMNS}, {_SYNC_COLUMNS} FROM links"
            " LEFT JOIN sync_states ON sync_states.guild_id = links.guild_id"
            " WHERE $1::text IS NULL OR ref = $1 ORDER BY linked_at, links.guild_id",
            ref,
        )
        return _linked_guilds(rows)

    async def deactivate_link(self, guild_id: int, *, bot_removed: bool = False) -> bool:
        async with self._transaction() as conn:
            # The link's row first, as every member write takes it: a chunk in flight commits before this
            # update (and its members are deleted below) or reads the link inactive after it.
            link = await _lock_link(conn, guild_id)
            if link is None:
                return False
            await conn.execute(
                "UPDATE links SET active = FALSE, member_count = 0 WHERE guild_id = $1", guild_id
            )
            await conn.execute("DELETE FROM members WHERE guild_id = $1", guild_id)
            if link.active:
                await conn.execute(
                    f"{_SCRUB_SET} WHERE guild_id = $2 AND personal AND type = ANY($3::text[])",
                    ScrubReason.UNLINKED.value,
                    guild_id,
                    SCRUBBED_MEMBER_EVENTS,
                )
                await _write_sync_state(conn, SyncState(guild_id, SyncPhase.REMOVED), previous=link.phase)
                kind = EventType.GUILD_REMOVED if bot_removed else EventType.GUILD_UNLINKED
                await _add_events(conn, [(kind, guild_id, {})], datetime.now(UTC))
        return True

    async def announce(self, kind: EventType, guild_id: int, data: dict[str, Any]) -> None:
        async with self._transaction() as conn:
            await _add_events(conn, [(kind, guild_id, data)], datetime.now(UTC))

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
        given = list(members)
        # One merge may not touch a row twice: the last of a user's duplicates wins, as in a row-by-row write.
        chunk = latest_copies(given)
        snapshot = snapshot_at or seen_at
        async with self._transaction(durable=False, staging=_STAGING) as conn:
            link = await _lock_link(conn, guild_id)
            if link is None or not link.active:
                return None
            events: list[AnnouncedEvent] = []
            if link.resync:
                stored = await _stored_members(conn, guild_id, [m.user_id for m in chunk])
                events, _ = chunk_events(guild_id, chunk, stored, snapshot)
            await conn.copy_records_to_table(
                "member_chunk", records=[_staged(m) for m in chunk], columns=_MEMBER_COLUMNS
            )
            await conn.fetchval(_MERGE_CHUNK, guild_id, seen_at, snapshot)
            if events:
                await _add_events(conn, events, datetime.now(UTC))
            if progress is not None:
                await _write_sync_state(conn, progress, previous=link.phase)
        self._write_failures.succeeded()
        return len(given)

    async def finish_sync(self, guild_id: int, started: datetime, hold: HoldRule) -> SyncOutcome | None:
        async with self._transaction(durable=False) as conn:
            link = await _lock_link(conn, guild_id)
            if link is None or not link.active:
                return None
            unseen = await conn.fetchval(
                "SELECT COUNT(*) FROM members WHERE guild_id = $1 AND last_seen < $2", guild_id, started
            )
            if link.resync and hold.holds(unseen, link.member_count):
                await _write_sync_state(
                    conn, held_state(guild_id, link.member_count, unseen, started), previous=link.phase
                )
                return SyncOutcome(link.member_count, 0, held=unseen)
            return await _remove_unseen(conn, guild_id, started, link)

    async def confirm_held_removals(self, guild_id: int) -> SyncOutcome | None:
        async with self._transaction(durable=False) as conn:
            link = await _lock_link(conn, guild_id)
            if (
                link is None
                or not link.active
                or link.phase != SyncPhase.HELD.value
                or link.held_before is None
            ):
                return None
            return await _remove_unseen(conn, guild_id, link.held_before, link)

    async def apply_member_changes(self, changes: Sequence[MemberChange]) -> int:
        # Set-based, as chunks are: a storm's batch of thousands is a few statements, not a few per member.
        async with self._transaction(durable=False, staging=_CHANGE_STAGING) as conn:
            # Each guild's link row, locked in id order (as every member write takes it; no deadlock).
            active = {
                guild_id
                for guild_id in sorted({change.guild_id for change in changes})
                if await _lock_active_link(conn, guild_id)
            }
            applied = [change for change in changes if change.guild_id in active]
            if not applied:
                return 0
            writes = member_writes(applied)
            if writes.upserts:
                await conn.copy_records_to_table(
                    "member_change_batch",
                    records=[_change_row(c) for c in writes.upserts],
                    columns=_CHANGE_COLUMNS,
                )
                await conn.execute(_MERGE_CHANGES)
            if writes.removals:
                await conn.execute(
                    _REMOVE_MEMBERS,
                    [c.guild_id for c in writes.removals],
                    [c.user_id for c in writes.removals],
                )
            # COPY, not one JSON array split by the server (jsonb_array_elements): that saved the client 60 ms
            # of CPU for 55,000 events, but the insert took 730 ms instead of 600, the server parsing more.
            await _add_events(
                conn,
                [(MEMBER_EVENTS[c.kind], c.guild_id, member_change_data(c)) for c in applied],
                datetime.now(UTC),
            )
        self._write_failures.succeeded()
        return len(applied)

    async def list_events(self, *, after: int = 0, limit: int = 100) -> list[Event]:
        rows = await self._fetch(
            "SELECT id, type, guild_id, data, created_at FROM events WHERE id > $1 ORDER BY id LIMIT $2",
            after,
            limit,
        )
        return [_event(row) for row in rows]

    async def scrub_departed(self, left_before: datetime) -> int:
        scrubbed = 0
        while True:
            async with self._transaction(durable=False) as conn:
                # The mark's row held until commit: two processes' scrubs take turns instead of walking twice.
                await conn.execute(
                    "INSERT INTO feed_scrub (id, departed_up_to) VALUES (1, 0) ON CONFLICT DO NOTHING"
                )
                mark = await conn.fetchval("SELECT departed_up_to FROM feed_scrub WHERE id = 1 FOR UPDATE")
                rows = await conn.fetch(
                    "SELECT id, guild_id, user_id, created_at < $2 FROM events WHERE type = 'member.left'"
                    " AND id > $1 ORDER BY id LIMIT $3",
                    mark,
                    left_before,
                    SCRUB_BATCH,
                )
                # Up to the first leave still within the window: the walk goes on from there next time.
                due = list(itertools.takewhile(lambda row: row[3], rows))
                for left_id, guild_id, user_id, _ in due:
                    status = await conn.execute(
                        f"{_SCRUB_SET} WHERE user_id = $2 AND personal AND guild_id = $3 AND id < $4"
                        " AND type = ANY($5::text[])",
                        ScrubReason.LEFT.value,
                        user_id,
                        guild_id,
                        left_id,
                        SCRUBBED_MEMBER_EVENTS,
                    )
                    scrubbed += int(status.split()[-1])
                if due:
                    await conn.execute("UPDATE feed_scrub SET departed_up_to = $1 WHERE id = 1", due[-1][0])
            if len(due) < SCRUB_BATCH:
                return scrubbed

    async def erase_user(self, user_id: int) -> UserErasure:
        async with self._transaction() as conn:
            # The links' rows first, in guild order, as every member write takes them (see _lock_link).
            link_rows = await conn.fetch(
                "SELECT guild_id FROM links WHERE active AND guild_id IN (SELECT guild_id FROM members"
                " WHERE user_id = $1 AND guild_id = ANY(ARRAY(SELECT guild_id FROM links WHERE active)))"
                " ORDER BY guild_id FOR NO KEY UPDATE",
                user_id,
            )
            member_guilds = [
                row[0]
                for row in await conn.fetch(
                    "DELETE FROM members WHERE guild_id = ANY($2::bigint[]) AND user_id = $1 RETURNING guild_id",
                    user_id,
                    [row[0] for row in link_rows],
                )
            ]
            for guild_id in member_guilds:
                await _add_to_member_count(conn, guild_id, -1)
            event_guilds = [
                row[0]
                for row in await conn.fetch(
                    f"{_SCRUB_SET} WHERE user_id = $2 AND personal RETURNING guild_id",
                    ScrubReason.ERASED.value,
                    user_id,
                )
            ]
            link_guilds = [
                row[0]
                for row in await conn.fetch(
                    "UPDATE links SET linked_by_username = '' WHERE linked_by_id = $1 RETURNING guild_id",
                    user_id,
                )
            ]
            guild_ids = tuple(sorted({*member_guilds, *event_guilds, *link_guilds}))
            if guild_ids:
                await _add_events(
                    conn,
                    [(EventType.USER_ERASED, guild_id, {"user_id": str(user_id)}) for guild_id in guild_ids],
                    datetime.now(UTC),
                )
        return UserErasure(user_id, guild_ids, len(member_guilds), len(event_guilds))

    async def export_user(self, user_id: int, *, event_limit: int) -> UserData:
        member_rows = await self._fetch(
            "SELECT guild_id, user_id, username, global_name, nick, avatar, bot, roles, joined_at FROM members"
            " WHERE user_id = $1 AND guild_id = ANY(ARRAY(SELECT guild_id FROM links WHERE active))"
            " ORDER BY guild_id",
            user_id,
        )
        members = _members(row[1:] for row in member_rows)
        link_rows = await self._fetch(
            f"SELECT {_LINK_COLUMNS} FROM links WHERE linked_by_id = $1 ORDER BY guild_id", user_id
        )
        event_rows = await self._fetch(
            "SELECT id, type, guild_id, data, created_at FROM events WHERE user_id = $1 ORDER BY id LIMIT $2",
            user_id,
            event_limit + 1,
        )
        return UserData(
            user_id,
            tuple(zip((row[0] for row in member_rows), members, strict=True)),
            tuple(_link(row) for row in link_rows),
            tuple(_event(row) for row in event_rows[:event_limit]),
            events_truncated=len(event_rows) > event_limit,
        )

    async def prune_events(self, before: datetime) -> PrunedEvents:
        async with self._transaction(durable=False) as conn:
            # The webhook cursor's row held until the commit: what counts as undelivered below stays so.
            delivered = await conn.fetchval(
                "SELECT delivered_up_to FROM webhook_cursor WHERE id = 1 FOR UPDATE"
            )
            # Everything below the first event still within the retention goes, so the feed keeps a
            # contiguous run of ids and the mark below is exact.
            up_to = await conn.fetchval(
                "SELECT COALESCE(MAX(id), 0) FROM events WHERE id < COALESCE("
                "(SELECT id FROM events WHERE created_at >= $1 ORDER BY id LIMIT 1), 9223372036854775807)",
                before,
            )
            if not up_to:
                return PrunedEvents()
            undelivered = await conn.fetch(
                "SELECT type, COUNT(*), MIN(id) FROM events WHERE id <= $1 AND id > $2 GROUP BY type",
                up_to,
                delivered or 0,
            )
            count = _rowcount(await conn.execute("DELETE FROM events WHERE id <= $1", up_to))
            await conn.execute(
                "INSERT INTO feed_pruned (id, pruned_up_to, pruned_at) VALUES (1, $1, now()) ON CONFLICT (id)"
                " DO UPDATE SET pruned_up_to = GREATEST(feed_pruned.pruned_up_to, excluded.pruned_up_to),"
                " pruned_at = excluded.pruned_at",
                up_to,
            )
        return PrunedEvents(
            count=count,
            up_to=up_to,
            undelivered={EventType(row[0]): row[1] for row in undelivered},
            first_undelivered=min((row[2] for row in undelivered), default=None),
        )

    async def feed_pruned_up_to(self) -> int:
        rows = await self._fetch("SELECT pruned_up_to FROM feed_pruned WHERE id = 1")
        return int(rows[0][0]) if rows else 0

    async def webhook_backlog(self) -> WebhookBacklog:
        # Counted by id, not by row: two look-ups in the primary key however long the backlog is (ids a
        # rolled-back write drew count too).
        [row] = await self._fetch(
            "WITH mark AS (SELECT GREATEST("
            " COALESCE((SELECT delivered_up_to FROM webhook_cursor WHERE id = 1), 0),"
            " COALESCE((SELECT pruned_up_to FROM feed_pruned WHERE id = 1), 0)) AS at)"
            " SELECT GREATEST(0, COALESCE((SELECT MAX(id) FROM events), 0) - mark.at),"
            " (SELECT created_at FROM events WHERE id > mark.at ORDER BY id LIMIT 1) FROM mark"
        )
        return WebhookBacklog(int(row[0]) if row[1] else 0, row[1])

    async def count_links(self) -> LinkCounts:
        rows = await self._fetch(
            "SELECT CASE WHEN NOT links.active THEN 'removed' ELSE COALESCE(sync_states.phase, 'pending') END,"
            " COUNT(*), SUM(CASE WHEN links.active THEN links.member_count ELSE 0 END) FROM links"
            " LEFT JOIN sync_states ON sync_states.guild_id = links.guild_id GROUP BY 1"
        )
        return LinkCounts({row[0]: row[1] for row in rows}, sum(int(row[2]) for row in rows))

    async def page_linked_guilds(self, *, after: int = 0, limit: int = 100) -> list[LinkedGuild]:
        rows = await self._fetch(
            f"SELECT {_LINK_COLUMNS}, {_SYNC_COLUMNS} FROM links"
            " LEFT JOIN sync_states ON sync_states.guild_id = links.guild_id"
            " WHERE links.guild_id > $1 ORDER BY links.guild_id LIMIT $2",
            after,
            limit,
        )
        return _linked_guilds(rows)

    async def list_members(self, guild_id: int, *, after: int = 0, limit: int = 1000) -> Sequence[Member]:
        rows = await self._fetch(
            "SELECT user_id, username, global_name, nick, avatar, bot, roles, joined_at FROM members"
            " WHERE guild_id = $1 AND user_id > $2 ORDER BY user_id LIMIT $3",
            guild_id,
            after,
            limit,
        )
        return _members(rows)

    async def search_members(
        self, guild_id: int, text: str, *, after: int = 0, limit: int = 100
    ) -> Sequence[Member]:
        # ILIKE folds case as the database's locale does (ASCII only under the C locale). The primary key
        # walks one guild in user-id order and the scan stops at `limit` matches.
        rows = await self._fetch(
            "SELECT user_id, username, global_name, nick, avatar, bot, roles, joined_at FROM members"
            " WHERE guild_id = $1 AND user_id > $2 AND (username ILIKE $3 ESCAPE '\\'"
            " OR global_name ILIKE $3 ESCAPE '\\' OR nick ILIKE $3 ESCAPE '\\') ORDER BY user_id LIMIT $4",
            guild_id,
            after,
            contains_pattern(text),
            limit,
        )
        return _members(rows)

    async def count_members(self, guild_id: int) -> int:
        rows = await self._fetch("SELECT COUNT(*) FROM members WHERE guild_id = $1", guild_id)
        return int(rows[0][0])

    # Sync state

    async def save_sync_state(self, sync: SyncState) -> bool:
        async with self._transaction(durable=False) as conn:
            link = await _lock_link(conn, sync.guild_id)
            if link is None or not link.active:
                return False
            await _write_sync_state(conn, sync, previous=link.phase)
        return True

    async def get_sync_state(self, guild_id: int) -> SyncState | None:
        rows = await self._fetch(f"SELECT {_SYNC_COLUMNS} FROM sync_states WHERE guild_id = $1", guild_id)
        return _sync_state(guild_id, rows[0]) if rows else None

    # Webhook delivery

    @asynccontextmanager
    async def webhook_delivery_lock(self) -> AsyncIterator[asyncio.Event]:
        conn = await self._take_webhook_lock()
        lost = asyncio.Event()

        def connection_ended(_: object) -> None:
            lost.set()

        # The server ends a session's advisory locks with the session: another process may deliver from then on.
        conn.add_termination_listener(connection_ended)
        watch = asyncio.create_task(_watch_lock_connection(conn, lost), name="webhook-lock-watch")
        try:
            yield lost
        finally:
            watch.cancel()
            await asyncio.wait({watch})
            conn.remove_termination_listener(connection_ended)
            # Closing the session ends its lock; a connection that ended already has nothing left to close.
            conn.terminate()

    async def _take_webhook_lock(self) -> asyncpg.Connection:
        """A connection of its own holding the webhook lock, tried once a second until it is taken.

        Its own, not the pool's: pooled connections carry no session state (see _reset_pooled).
        """
        conn: asyncpg.Connection | None = None
        try:
            while True:
                with unavailable_on_failure():
                    if conn is None or conn.is_closed():
                        conn = await self._connect("guildlink-webhook-lock")
                    if await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", _LOCK_CLASS, _WEBHOOK_LOCK):
                        taken, conn = conn, None
                        return taken
                await asyncio.sleep(WEBHOOK_LOCK_RETRY)
        finally:
            if conn is not None:
                conn.terminate()

    async def webhook_cursor(self) -> WebhookCursor:
        rows = await self._fetch(
            "SELECT delivered_up_to, failures, retry_at FROM webhook_cursor WHERE id = 1"
        )
        return WebhookCursor(rows[0][0], rows[0][1], rows[0][2]) if rows else WebhookCursor()

    # Not durable: a crash of the server may undo the last few advances, and those events are delivered
    # again, which at-least-once allows.

    async def advance_webhook_cursor(self, event_id: int) -> None:
        async with self._transaction(durable=False) as conn:
            await conn.execute(
                "INSERT INTO webhook_cursor (id, delivered_up_to) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET"
                " delivered_up_to = excluded.delivered_up_to, failures = 0, retry_at = NULL"
                " WHERE excluded.delivered_up_to > webhook_cursor.delivered_up_to",
                event_id,
            )

    async def note_webhook_failure(self, retry_at: datetime) -> int:
        async with self._transaction(durable=False) as conn:
            failures = await conn.fetchval(
                "INSERT INTO webhook_cursor (id, delivered_up_to, failures, retry_at) VALUES (1, 0, 1, $1)"
                " ON CONFLICT (id) DO UPDATE SET failures = webhook_cursor.failures + 1,"
                " retry_at = excluded.retry_at RETURNING failures",
                retry_at,
            )
        return int(failures)

    # What the processes of a fleet share. Every time is the server's clock_timestamp(): machines whose
    # clocks disagree still agree on the database's.

    async def try_lock_guild(self, guild_id: int) -> PostgresGuildLock | None:
        try:
            return await self._guild_locks.try_lock(guild_id)
        except StoreUnavailableError as exc:
            self._write_failures.failed(f"cannot take guild sync locks: {exc.reason}")
            raise

    async def member_list_wait(self, guild_id: int) -> float:
        rows = await self._fetch(
            "SELECT EXTRACT(EPOCH FROM until - clock_timestamp()) FROM member_list_cooldowns WHERE guild_id = $1",
            guild_id,
        )
        return max(0.0, float(rows[0][0])) if rows else 0.0

    async def hold_off_member_list(self, guild_id: int, seconds: float) -> None:
        # Not durable: a crash that undoes it costs at worst one RATE_LIMITED answer, which the sync handles.
        async with self._transaction(durable=False) as conn:
            await conn.execute(
                "INSERT INTO member_list_cooldowns (guild_id, until) VALUES ($1, clock_timestamp() + $2::interval)"
                " ON CONFLICT (guild_id) DO UPDATE SET until = excluded.until",
                guild_id,
                timedelta(seconds=seconds),
            )

    async def reserve_identify(self, bucket: int, interval: float) -> float:
        async with self._transaction() as conn:
            # The bucket's processes queue here, each reading the slot the one before it booked; a row lock
            # would not do for the very first booking, when there is no row yet.
            await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _IDENTIFY_CLASS, bucket)
            last, now = await conn.fetchrow(
                "SELECT (SELECT identified_at FROM identify_buckets WHERE bucket = $1), clock_timestamp()",
                bucket,
            )
            slot = now if last is None else max(now, last + timedelta(seconds=interval))
            await conn.execute(
                "INSERT INTO identify_buckets (bucket, identified_at) VALUES ($1, $2)"
                " ON CONFLICT (bucket) DO UPDATE SET identified_at = excluded.identified_at",
                bucket,
                slot,
            )
        return float((slot - now).total_seconds())

    async def list_unfinished_links(self, shard_count: int, shard_ids: Sequence[int]) -> list[Link]:
        rows = await self._fetch(
            f"SELECT {_LINK_COLUMNS} FROM links LEFT JOIN sync_states ON sync_states.guild_id = links.guild_id"
            " WHERE links.active AND (links.guild_id >> 22) % $1 = ANY($2::bigint[])"
            " AND (sync_states.phase IS NULL OR sync_states.phase = ANY($3::text[]))"
            " ORDER BY linked_at, links.guild_id",
            shard_count,
            list(shard_ids),
            list(UNFINISHED_PHASES),
        )
        return [_link(row) for row in rows]

    async def _add_feed_events(
        self, conn: asyncpg.Connection, events: Sequence[AnnouncedEvent], at: datetime
    ) -> None:
        """The feed's writer, for the role-change methods (store/postgres_role_changes.py)."""
        await _add_events(conn, events, at)

    async def notify(self, channel: str, payload: str) -> None:
        """NOTIFY `channel` with `payload`: every session LISTENing on it, in any process, hears it once."""
        await self._execute("SELECT pg_notify($1, $2)", channel, payload)


async def _watch_lock_connection(conn: asyncpg.Connection, lost: asyncio.Event) -> None:
    """Set `lost` once the connection holding the webhook lock stops answering (the lock may be gone)."""
    while not lost.is_set():
        await asyncio.sleep(WEBHOOK_LOCK_CHECK)
        try:
            await conn.fetchval("SELECT 1", timeout=WEBHOOK_LOCK_CHECK)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError) as exc:
            log.warning("store.webhook_lock_lost engine=postgres error=%s", type(exc).__name__)
            lost.set()


async def _reset_pooled(conn: asyncpg.Connection) -> None:
    """Nothing to reset on a connection handed back to the pool: asyncpg has rolled back its transaction.

    Pooled connections only ever run transactions: LISTEN and session locks live on connections of their
    own, and settings are SET LOCAL. asyncpg's default reset (unlock all, UNLISTEN, RESET ALL) would add a
    round trip to every transaction.
    """


async def _lock_link(conn: asyncpg.Connection, guild_id: int) -> LinkState | None:
    """Lock the guild's link row until commit; read it with its sync's state (None: no link).

    Every write of a guild's members or sync state takes this lock first, so they take turns per guild
    (the member count stays exact) and an unlink is ordered wholly before or after each of them.
    """
    row = await conn.fetchrow(
        "SELECT links.active, sync_states.synced_at IS NOT NULL, sync_states.phase, sync_states.held_before,"
        " links.member_count FROM links LEFT JOIN sync_states USING (guild_id)"
        " WHERE links.guild_id = $1 FOR NO KEY UPDATE OF links",
        guild_id,
    )
    return None if row is None else LinkState(row[0], bool(row[1]), row[2], row[3], row[4])


async def _lock_active_link(conn: asyncpg.Connection, guild_id: int) -> bool:
    """Lock the guild's link row until commit and say whether it is active (see _lock_link)."""
    link = await _lock_link(conn, guild_id)
    return link is not None and link.active


async def _stored_members(
    conn: asyncpg.Connection, guild_id: int, user_ids: list[int]
) -> dict[int, StoredMember]:
    """The stored rows of `user_ids`, with when a gateway event last changed each."""
    rows = await conn.fetch(
        "SELECT user_id, username, global_name, nick, avatar, bot, roles, joined_at, changed_at FROM members"
        " WHERE guild_id = $1 AND user_id = ANY($2::bigint[])",
        guild_id,
        user_ids,
    )
    return {m.user_id: StoredMember(m, row[8]) for m, row in zip(_members(rows), rows, strict=True)}


async def _remove_unseen(
    conn: asyncpg.Connection, guild_id: int, before: datetime, link: LinkState
) -> SyncOutcome:
    """Remove the members not seen since `before` (announced on a resync) and record the sync as done."""
    rows = await conn.fetch(
        "DELETE FROM members WHERE guild_id = $1 AND last_seen < $2 RETURNING user_id", guild_id, before
    )
    removed = sorted(row[0] for row in rows)
    if removed:
        await _add_to_member_count(conn, guild_id, -len(removed))
    if removed and link.resync:
        await _add_events(conn, left_events(guild_id, removed), datetime.now(UTC))
    members = link.member_count - len(removed)
    await _write_sync_state(conn, synced_state(guild_id, members), previous=link.phase)
    return SyncOutcome(members, len(removed))


async def _add_to_member_count(conn: asyncpg.Connection, guild_id: int, delta: int) -> None:
    await conn.execute(
        "UPDATE links SET member_count = member_count + $2 WHERE guild_id = $1", guild_id, delta
    )


def _change_row(change: MemberChange) -> tuple[Any, ...]:
    """A row of member_change_batch (_CHANGE_COLUMNS)."""
    m = change.member
    assert m is not None
    # _staged's row, inline: this runs for every event of a storm. Member is a NamedTuple whose first six
    # fields are the staging table's first six columns.
    return (change.guild_id, *m[:6], _roles_literal(m.roles), m.joined_at, change.received_at)


def _event(row: Sequence[Any]) -> Event:
    """An Event from a row of id, type, guild_id, data, created_at."""
    return Event(row[0], EventType(row[1]), row[2], json.loads(row[3]), row[4])


def _members(rows: Iterable[Sequence[Any]]) -> list[Member]:
    """Members from rows of (user_id, username, global_name, nick, avatar, bot, roles, joined_at)."""
    return [Member(row[0], row[1], row[2], row[3], row[4], row[5], tuple(row[6]), row[7]) for row in rows]


def _staged(m: Member) -> tuple[Any, ...]:
    """A row of member_chunk (_MEMBER_COLUMNS)."""
    return (
        m.user_id,
        m.username,
        m.global_name,
        m.nick,
        m.avatar,
        m.bot,
        _roles_literal(m.roles),
        m.joined_at,
    )


def _roles_literal(roles: tuple[int, ...]) -> str:
    """Role ids as PostgreSQL's text form of an array, '{1,2}', for a staging table (see _STAGING)."""
    return "{" + ",".join(map(str, roles)) + "}"


async def _add_events(conn: asyncpg.Connection, events: Sequence[AnnouncedEvent], at: datetime) -> None:
    """Announce changes in the feed, in the transaction that makes them."""
    await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", _LOCK_CLASS, _EVENTS_LOCK)
    # COPY numbers the rows from the id sequence in the order given.
    await conn.copy_records_to_table(
        "events",
        records=[
            (kind.value, guild_id, event_data_json(data), at, *event_subject(kind, data))
            for kind, guild_id, data in events
        ],
        columns=_EVENT_COLUMNS,
    )


async def _write_sync_state(conn: asyncpg.Connection, sync: SyncState, *, previous: str | None) -> None:
    """Write the sync's state, announcing it in the feed when its phase changed from `previous`."""
    if announced := sync_event(previous, sync):
        await _add_events(conn, [(announced[0], sync.guild_id, announced[1])], datetime.now(UTC))
    await conn.execute(
        "INSERT INTO sync_states (guild_id, phase, members_stored, member_count, synced_at, error,"
        " updated_at, waiting_until, held_removals, held_before) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        " ON CONFLICT (guild_id) DO UPDATE SET phase = excluded.phase, members_stored = excluded.members_stored,"
        " member_count = excluded.member_count, synced_at = COALESCE(excluded.synced_at, sync_states.synced_at),"
        " error = excluded.error, updated_at = excluded.updated_at, waiting_until = excluded.waiting_until,"
        " held_removals = excluded.held_removals, held_before = excluded.held_before",
        sync.guild_id,
        sync.phase.value,
        sync.members_stored,
        sync.member_count,
        sync.synced_at,
        sync.error,
        sync.updated_at or datetime.now(UTC),
        sync.waiting_until,
        sync.held_removals,
        sync.held_before,
    )


def _linked_guilds(rows: Iterable[Sequence[Any]]) -> list[LinkedGuild]:
    """Rows of _LINK_COLUMNS then _SYNC_COLUMNS (NULL without a sync state)."""
    width = 11
    return [
        LinkedGuild(_link(row[:width]), _sync_state(row[0], row[width:]) if row[width] is not None else None)
        for row in rows
    ]


def _link(row: Sequence[Any]) -> Link:
    return Link(
        guild_id=row[0],
        guild_name=row[1],
        linked_by_id=row[2],
        linked_by_username=row[3],
        scopes=tuple(row[4]),
        permissions=row[5],
        linked_at=row[6],
        ref=row[7],
        active=row[8],
        member_count=row[9],
        source=LinkSource(row[10]),
    )


def _sync_state(guild_id: int, row: Sequence[Any]) -> SyncState:
    return SyncState(
        guild_id=guild_id,
        phase=SyncPhase(row[0]),
        members_stored=row[1],
        member_count=row[2],
        synced_at=row[3],
        error=row[4],
        updated_at=row[5],
        waiting_until=row[6],
        held_removals=row[7],
        held_before=row[8],
    )
