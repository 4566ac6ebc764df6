"""Per-guild sync locks for the SQLite engine: in memory, since one process uses a SQLite file.

PostgreSQL's advisory locks belong to the database, so every store opened on it sees them. The in-process
equivalent must belong to the file too, not to one store object: every store this process opens on the
same file shares one `FileGuildLocks`, looked up by the file's resolved path. That table is the one
module-level state of the store, kept weakly: it forgets a file once no store holds its locks.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

_BY_FILE: weakref.WeakValueDictionary[str, FileGuildLocks] = weakref.WeakValueDictionary()


class SqliteGuildLock:
    """One guild's lock, held by one store of this process until released or its store closes."""

    def __init__(self, locks: FileGuildLocks, guild_id: int, owner: object) -> None:
        self._locks = locks
        self.guild_id = guild_id
        self.owner = owner
        self._held = True

    @property
    def held(self) -> bool:
        return self._held

    async def release(self) -> None:
        self._locks.release(self)

    def forget(self) -> None:
        self._held = False


class FileGuildLocks:
    """The guild locks of one database file, shared by every store of this process opened on it."""

    def __init__(self) -> None:
        self._held: dict[int, SqliteGuildLock] = {}

    @classmethod
    def of_file(cls, path: Path) -> FileGuildLocks:
        key = os.path.realpath(path)
        locks = _BY_FILE.get(key)
        if locks is None:
            locks = _BY_FILE[key] = cls()
        return locks

    def try_lock(self, guild_id: int, owner: object) -> SqliteGuildLock | None:
        if guild_id in self._held:
            return None
        lock = self._held[guild_id] = SqliteGuildLock(self, guild_id, owner)
        return lock

    def release(self, lock: SqliteGuildLock) -> None:
        if self._held.get(lock.guild_id) is lock:
            del self._held[lock.guild_id]
        lock.forget()

    def release_all_of(self, owner: object) -> None:
        """A store is closing: its locks die with it, as a PostgreSQL session's do."""
        for lock in [lock for lock in self._held.values() if lock.owner is owner]:
            self.release(lock)
