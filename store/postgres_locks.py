"""Per-guild sync locks on PostgreSQL: session-level advisory locks, all on one dedicated connection.

Why a session lock on a connection of its own: a sync commits one transaction per chunk of members, so a
lock taken inside a transaction (`pg_try_advisory_xact_lock`) would be let go between chunks and a second
process could start a whole second sync in a gap; and a pooled connection is no home for a session lock
either, since it goes back to the pool after each transaction and would carry the lock into other work.
One connection holds every lock of the process, so a hundred syncs at once cost one connection, not a
hundred.
The locks die with that connection: a process that is killed, or that loses the connection, loses them, and
whichever process syncs the guild next takes them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

from store.postgres_errors import LOST_CONNECTION, unavailable_on_failure

log = logging.getLogger(__name__)

T = TypeVar("T")

# How an operator tells the dedicated sessions apart in pg_stat_activity.
LOCKS_APPLICATION_NAME = "guildlink-guild-locks"
LISTEN_APPLICATION_NAME = "guildlink-listen"


class PostgresGuildLock:
    """One guild's lock, held on the process's lock connection until released or lost with it."""

    def __init__(self, locks: PostgresGuildLocks, guild_id: int) -> None:
        self._locks = locks
        self.guild_id = guild_id
        self._held = True

    @property
    def held(self) -> bool:
        return self._held

    async def release(self) -> None:
        await self._locks.release(self)

    def forget(self) -> None:
        """The connection that held it ended: it is gone already."""
        self._held = False


class PostgresGuildLocks:
    """The process's guild locks; one-bigint advisory keys (the guild id), apart from the store's own keys."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]]) -> None:
        self._connect = connect
        self._conn: asyncpg.Connection | None = None
        # One statement at a time on the connection, and one answer per guild within this process (a
        # session may take its own advisory lock again, so PostgreSQL would not refuse a second task).
        self._guard = asyncio.Lock()
        self._held: dict[int, PostgresGuildLock] = {}

    async def try_lock(self, guild_id: int) -> PostgresGuildLock | None:
        async with self._guard:
            if guild_id in self._held:
                return None
            with unavailable_on_failure():
                taken = await self._try_lock(guild_id)
            if not taken:
                return None
            lock = self._held[guild_id] = PostgresGuildLock(self, guild_id)
            return lock

    async def release(self, lock: PostgresGuildLock) -> None:
        async with self._guard:
            if not lock.held or self._held.get(lock.guild_id) is not lock:
                return
            del self._held[lock.guild_id]
            lock.forget()
            conn = self._conn
            if conn is None or conn.is_closed():
                return
            try:
                await conn.execute("SELECT pg_advisory_unlock($1::bigint)", lock.guild_id)
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                # Left held by a broken session: end the session, and the server lets go of its locks.
                log.warning("store.guild_unlock_failed guild=%d error=%s", lock.guild_id, type(exc).__name__)
                self._drop(conn)

    async def check(self) -> None:
        """Raise StoreUnavailableError unless the lock connection is open, or opens, and answers (for /readyz)."""
        async with self._guard:
            with unavailable_on_failure():
                await self._on_connection(lambda conn: conn.execute("SELECT 1"))

    async def _try_lock(self, guild_id: int) -> bool:
        return bool(
            await self._on_connection(
                lambda conn: conn.fetchval("SELECT pg_try_advisory_lock($1::bigint)", guild_id)
            )
        )

    async def _on_connection(self, statement: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """`statement` on the lock connection, opened first if need be."""
        for attempt in range(2):
            conn = await self._connection()
            try:
                return await statement(conn)
            except (*LOST_CONNECTION, asyncpg.InterfaceError) as exc:
                # Ended by the server before we heard of it (a restart): its locks are gone already, so a
                # new session loses nothing. Once only: a second loss is the database failing.
                lost = isinstance(exc, LOST_CONNECTION) or conn.is_closed()
                if attempt or not lost:
                    raise
                self._drop(conn)
        raise AssertionError("unreachable: the second attempt returns or raises")

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            conn = await self._connect()
            conn.add_termination_listener(self._on_lost)
            self._conn = conn
        return self._conn

    def _on_lost(self, conn: asyncpg.Connection) -> None:
        if conn is self._conn:
            self._conn = None
            if self._held:
                log.warning("store.guild_locks_lost count=%d: the lock connection ended", len(self._held))
            self._forget_all()

    def _drop(self, conn: asyncpg.Connection) -> None:
        self._on_lost(conn)
        conn.terminate()

    def _forget_all(self) -> None:
        for lock in self._held.values():
            lock.forget()
        self._held.clear()

    async def close(self) -> None:
        """Let every lock go with the connection."""
        async with self._guard:
            conn, self._conn = self._conn, None
            self._forget_all()
            if conn is not None and not conn.is_closed():
                try:
                    await asyncio.wait_for(conn.close(), timeout=5)
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                    conn.terminate()
