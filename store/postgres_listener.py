"""LISTEN on one PostgreSQL channel from a connection of its own, for as long as the process runs.

A notification sent while no session listens is lost for good, so the listener tells its owner each time it
is (re)connected, and the owner catches up from the tables; it also calls the owner now and then, for what
no notification announced (a sender that died between its commit and its NOTIFY). A connection that the
server ended is noticed at once; one that went silent (a network cut) by a ping that gets no answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg

from store.errors import StoreUnavailableError
from store.postgres_errors import reason
from store.postgres_locks import LISTEN_APPLICATION_NAME
from store.postgres_sessions import connect_session
from supervision import Supervisor

log = logging.getLogger(__name__)

PING_INTERVAL = 15.0
PING_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
RETRY_FIRST_WAIT = 1.0
RETRY_MAX_WAIT = 30.0
# Between catch-ups while connected: the rare notice never sent is picked up within this long.
CATCH_UP_INTERVAL = 300.0


class Listener:
    """One channel's notifications passed to `on_notice`; `catch_up` after every connect and every so often."""

    def __init__(
        self,
        dsn: str,
        channel: str,
        *,
        on_notice: Callable[[str], None],
        catch_up: Callable[[], Awaitable[None]],
        supervisor: Supervisor,
        ping_interval: float = PING_INTERVAL,
        catch_up_interval: float = CATCH_UP_INTERVAL,
    ) -> None:
        self._dsn = dsn
        self._channel = channel
        self._on_notice = on_notice
        self._catch_up = catch_up
        self._supervisor = supervisor
        self._ping_interval = ping_interval
        self._catch_up_interval = catch_up_interval
        self._connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connects = 0

    @property
    def listening(self) -> bool:
        return self._connected.is_set()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Listener]:
        """Listen in the background until the block ends."""
        self._task = self._supervisor.spawn(f"listen-{self._channel}", self._run)
        try:
            yield self
        finally:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        wait = RETRY_FIRST_WAIT
        while True:
            try:
                await self._listen_once()
                wait = RETRY_FIRST_WAIT  # it was up for a while: start the waits over
            except (
                asyncpg.PostgresError,
                asyncpg.InterfaceError,
                asyncpg.InternalClientError,
                OSError,
            ) as exc:
                why = reason(exc) or type(exc).__name__
                log.warning(
                    "handoff.listen_failed channel=%s reason=%s retry_in=%.0fs", self._channel, why, wait
                )
            await asyncio.sleep(wait)
            wait = min(wait * 2, RETRY_MAX_WAIT)

    async def _listen_once(self) -> None:
        """Connect, LISTEN, and return (or raise) when the connection ends."""
        conn = await connect_session(self._dsn, LISTEN_APPLICATION_NAME, connect_timeout=CONNECT_TIMEOUT)
        lost = asyncio.Event()
        conn.add_termination_listener(lambda _conn: lost.set())
        try:
            await conn.add_listener(self._channel, self._notified)
            self.connects += 1
            self._connected.set()
            log.info("handoff.listening channel=%s connects=%d", self._channel, self.connects)
            await self._keep_caught_up(conn, lost)
            log.warning("handoff.listen_lost channel=%s", self._channel)
        finally:
            self._connected.clear()
            if not conn.is_closed():
                conn.terminate()

    async def _keep_caught_up(self, conn: asyncpg.Connection, lost: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        caught_up_at: float | None = None
        while not lost.is_set():
            # After LISTEN, not before: a link committed in between is both notified and caught up (the
            # owner takes it twice, harmlessly) rather than neither.
            due = caught_up_at is None or loop.time() - caught_up_at >= self._catch_up_interval
            if due and await self._try_catch_up():
                caught_up_at = loop.time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), self._ping_interval)
            if not lost.is_set():
                await conn.fetchval("SELECT 1", timeout=PING_TIMEOUT)

    async def _try_catch_up(self) -> bool:
        try:
            await self._catch_up()
        except StoreUnavailableError as exc:
            log.warning("handoff.catch_up_failed reason=%s: trying again at the next ping", exc.reason)
            return False
        except Exception:
            # A bug in the catch-up must not end the listening: notices still arrive, and it is tried again.
            log.exception("handoff.catch_up_failed: trying again at the next ping")
            return False
        return True

    def _notified(self, conn: object, pid: int, channel: str, payload: str) -> None:
        self._on_notice(payload)
