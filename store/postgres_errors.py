"""PostgreSQL's failures that an operator must fix, turned into `StoreUnavailableError` with a safe reason."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg

from store.errors import StoreUnavailableError

# By SQLSTATE: the condition in words, never the server's message (it may quote values, names or the user).
_REASONS = {
    "25006": "the database is read-only",
    "28000": "the database server refused the user (see its pg_hba.conf)",
    "28P01": "the database server refused the user name or password",
    "3D000": "the database named in DATABASE_URL does not exist",
    "40001": "a transaction conflicted with another (serialization failure)",
    "40P01": "a transaction conflicted with another (deadlock)",
    "42501": "the database user lacks a privilege the store needs",
    "42P01": "a table of the store is missing from the database",
    "53100": "the disk holding the database is full",
    "53200": "the database server is out of memory",
    "53300": "the database server has too many connections",
    "55P03": "the database is locked by another program",
    "57014": "a database statement was cancelled or timed out",
    "57P01": "the database server was shut down by its administrator",
    "57P02": "the database server crashed",
    "57P03": "the database server is starting up or shutting down",
    "57P04": "the database was dropped",
    "58030": "the database server had an I/O error",
}
_CLASS_REASONS = {
    "08": "the connection to the database failed",
    "25": "the database refused the transaction",
    "28": "the database server refused the login",
    "53": "the database server is out of resources",
    "57": "the database server stopped the work (operator intervention)",
    "58": "the database server had a system error",
    "XX": "the database server had an internal error (possible data corruption)",
}
# A connection that the server ended (a restart, an idle timeout, an administrator) fails at its next use
# with one of these; asyncpg reports one ended while idle in the pool as an internal protocol error.
LOST_CONNECTION = (
    asyncpg.InternalClientError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.AdminShutdownError,
    ConnectionResetError,
)

# pgbouncer's answer to a startup parameter it does not pass on (from DATABASE_URL's query, say): a name only.
_REFUSED_PARAMETER = re.compile(r"unsupported startup parameter: ([A-Za-z_][A-Za-z0-9_.]{0,62})")

# Classes that mean a bug in guildlink rather than a database to fix: data exceptions, integrity
# constraints, syntax; they are raised as they are, with the statement to look at.
_BUG_CLASSES = ("22", "23", "42")


def reason(exc: BaseException) -> str | None:
    """A reason fit for operators and clients for a failure they must fix; None for guildlink's own bugs."""
    if isinstance(exc, asyncpg.PostgresError):
        code = exc.sqlstate or ""
        refused = _REFUSED_PARAMETER.fullmatch(str(exc)) if code == "08P01" else None
        if refused:
            return (
                f"a connection pooler in front of the database refused the startup parameter {refused[1]}"
                f" (pgbouncer: add {refused[1]} to ignore_startup_parameters in pgbouncer.ini)"
            )
        if code in _REASONS:
            return _REASONS[code]
        if code[:2] in _BUG_CLASSES:
            return None
        return _CLASS_REASONS.get(code[:2], f"the database failed ({type(exc).__name__})")
    if isinstance(exc, asyncpg.InternalClientError):
        return "the connection to the database was lost"
    if isinstance(exc, TimeoutError):
        return "the database server did not answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "the database server refused the connection (is it running, on that host and port?)"
    if isinstance(exc, socket.gaierror):
        return "the database server's host name cannot be resolved"
    if isinstance(exc, OSError):
        # strerror is the system's fixed text ("No route to host"), never an address.
        return f"the database server cannot be reached ({exc.strerror or type(exc).__name__})"
    if isinstance(exc, asyncpg.ClientConfigurationError):
        return "DATABASE_URL's connection settings are invalid"
    if isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc):
        return "the connection to the database was lost"
    return None


@contextmanager
def unavailable_on_failure() -> Iterator[None]:
    """Raise StoreUnavailableError for whatever an operator must fix; let guildlink's bugs through."""
    try:
        yield
    except (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError) as exc:
        # TimeoutError is an OSError: a connect, an acquire from a full pool or a statement that took too long.
        why = reason(exc)
        if why is None:
            raise
        raise StoreUnavailableError(why) from exc
