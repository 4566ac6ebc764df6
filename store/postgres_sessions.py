"""Sessions of guildlink's own on PostgreSQL: how the dedicated ones connect, and the start-up check that
connections are sessions at all (not shared per transaction by a pooler such as pgbouncer)."""

from __future__ import annotations

import asyncpg

from store.errors import TransactionPoolingError
from store.postgres_errors import unavailable_on_failure

# The server notices a vanished client (a machine that lost power, a cut cable) through TCP keepalives:
# after about a minute rather than the kernel's default two hours, so that its locks go with it. SET once
# connected rather than sent as startup parameters, which pgbouncer refuses ("unsupported startup
# parameter") unless listed in its ignore_startup_parameters. Behind pgbouncer they reach only its socket to
# the server: the socket from guildlink is pgbouncer's, kept alive by its own tcp_keep* settings.
_KEEPALIVES = "SET tcp_keepalives_idle = 30; SET tcp_keepalives_interval = 10; SET tcp_keepalives_count = 3"

SESSION_CHECK_APPLICATION_NAME = "guildlink-session-check"
# A setting of guildlink's own (a custom "guildlink." parameter) that a session keeps until it ends.
_MARK = "guildlink.session_mark"


async def connect_session(
    dsn: str, application_name: str, *, connect_timeout: float, command_timeout: float | None = None
) -> asyncpg.Connection:
    """A connection of its own (locks, LISTEN), named `application_name` and kept alive from the server's end."""
    conn = await asyncpg.connect(
        dsn,
        timeout=connect_timeout,
        command_timeout=command_timeout,
        server_settings={"application_name": application_name},
    )
    try:
        await conn.execute(_KEEPALIVES)
    except BaseException:
        conn.terminate()
        raise
    return conn


async def check_sessions_are_own(dsn: str, *, connect_timeout: float) -> None:
    """Raise TransactionPoolingError unless each connection keeps one server session to itself.

    Two connections each mark their session, then read their marks back in turn (the second one first): a
    pooler that shares sessions between transactions has, whichever session it picks first (pgbouncer takes
    the one used last, or with server_round_robin the one idle longest), given the second connection the
    first one's session, or given one of them a session that is not the one it marked.
    """
    with unavailable_on_failure():
        first = await _checking_session(dsn, connect_timeout)
        try:
            second = await _checking_session(dsn, connect_timeout)
            try:
                # Simple queries only: prepared statements are what such a pooler loses first.
                await first.execute(f"SET {_MARK} = 'first'")
                await second.execute(f"SET {_MARK} = 'second'")
                own = await _kept(second, "second") and await _kept(first, "first")
            finally:
                await second.close(timeout=connect_timeout)
        finally:
            await first.close(timeout=connect_timeout)
    if not own:
        raise TransactionPoolingError()


async def _checking_session(dsn: str, connect_timeout: float) -> asyncpg.Connection:
    return await connect_session(
        dsn, SESSION_CHECK_APPLICATION_NAME, connect_timeout=connect_timeout, command_timeout=connect_timeout
    )


async def _kept(conn: asyncpg.Connection, mark: str) -> bool:
    """Whether the session that runs this statement is the one that was marked `mark`."""
    try:
        await conn.execute(
            f"DO $$ BEGIN IF current_setting('{_MARK}', true) IS DISTINCT FROM '{mark}' THEN"
            " RAISE EXCEPTION 'not the marked session'; END IF; END $$"
        )
    except asyncpg.RaiseError:
        return False
    return True
