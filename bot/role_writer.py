"""The role-change worker: claims queued changes, writes them to Discord, reads each member back, records it.

Every process runs one; on PostgreSQL their claims never overlap (store: SKIP LOCKED and a lease), and a
change held by a process that died is taken again when its lease runs out. A member's changes go one at a
time, in the order they were queued.

Discord bans a bot for a while past 10,000 invalid requests (401, 403, 429) in 10 minutes. This worker never
sends a change twice after a final refusal, sends nothing for a minute to a role (or guild) that just
answered Missing Permissions (or Missing Access), and stops writing altogether once the fleet has
been answered INVALID_REQUEST_PAUSE of them in 10 minutes (counted in the database, by every process).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from bot.role_errors import (
    MISSING_ACCESS,
    MISSING_PERMISSIONS,
    NOT_TAKEN,
    UNKNOWN_GUILD,
    UNLINKED,
    RoleWriteError,
    explain,
)
from metrics import Metrics
from store import RoleAction, RoleChange, RoleChangeOutcome, RoleChangeStatus, Store, StoreUnavailableError
from supervision import Supervisor

log = logging.getLogger(__name__)

# Changes in flight at once (one per member at most: the store claims no member's second change).
CONCURRENCY = 8
# How long a claim holds a change; an attempt is cut off well before, so that no change is written by a
# holder whose lease ran out.
LEASE_SECONDS = 60.0
ATTEMPT_TIMEOUT = 40.0
# Waits before the next attempt after a 429, a 5xx or no answer, by attempt; then the change fails.
RETRY_WAITS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0)
MAX_ATTEMPTS = len(RETRY_WAITS) + 1
POLL_SECONDS = 0.5
# After a 50013 on a role (50001 or 10004 on a guild), the other changes of that role (guild) fail at once
# for this long instead of being sent to Discord, which would refuse them too.
REFUSAL_HOLD_SECONDS = 60.0
# Discord's window for invalid requests, and how many this process allows itself in it (Discord bans at
# 10,000 for the whole bot: this leaves room for a fleet of processes and for discord.py's own retries).
INVALID_WINDOW_SECONDS = 600.0
INVALID_REQUEST_PAUSE = 300
PAUSE_RECHECK_SECONDS = 30.0
INVALID_CHECK_SECONDS = 5.0
SHUTDOWN_DRAIN_SECONDS = 10.0


class RoleRest(Protocol):
    """Discord's REST for role changes (bot/role_rest.py); raises RoleWriteError."""

    async def write(self, change: RoleChange) -> None: ...

    async def member_roles(self, guild_id: int, user_id: int) -> frozenset[int]: ...


@dataclass(frozen=True, slots=True)
class InvalidRequestBudget:
    """How many invalid answers every process together allows itself in Discord's window, and how often a
    paused worker looks again."""

    limit: int = INVALID_REQUEST_PAUSE
    window: float = INVALID_WINDOW_SECONDS
    recheck: float = PAUSE_RECHECK_SECONDS
    # Between invalid answers of its own, a worker reads the fleet's count at most this often.
    check_every: float = INVALID_CHECK_SECONDS


class RefusalHolds:
    """Roles (and guilds) Discord just refused the bot: until when, and what it said."""

    def __init__(self, *, hold: float, clock: Callable[[], float]) -> None:
        self._hold = hold
        self._clock = clock
        self._until: dict[tuple[int, int | None], tuple[float, int, str]] = {}

    def hold(self, guild_id: int, role_id: int | None, code: int, reason: str) -> None:
        self._until[(guild_id, role_id)] = (self._clock() + self._hold, code, reason)

    def held(self, change: RoleChange) -> tuple[int, str] | None:
        """Discord's code and reason if the change's role or guild is held now."""
        now = self._clock()
        for key in ((change.guild_id, change.role_id), (change.guild_id, None)):
            entry = self._until.get(key)
            if entry is None:
                continue
            until, code, reason = entry
            if until > now:
                return code, f"{reason} (not sent: Discord refused it {self._hold - (until - now):.0f} s ago)"
            del self._until[key]
        return None


class RoleChangeWriter:
    """One worker task: claim, write, read back, record; started and restarted by the process's Supervisor."""

    def __init__(
        self,
        store: Store,
        rest: RoleRest,
        *,
        supervisor: Supervisor,
        metrics: Metrics,
        poll_seconds: float = POLL_SECONDS,
        concurrency: int = CONCURRENCY,
        retry_waits: tuple[float, ...] = RETRY_WAITS,
        budget: InvalidRequestBudget | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._rest = rest
        self._supervisor = supervisor
        self._outcomes = metrics.role_changes
        self._paused_gauge = metrics.role_writes_paused
        self._poll_seconds = poll_seconds
        self._concurrency = concurrency
        self._retry_waits = retry_waits
        self._budget = budget or InvalidRequestBudget()
        self._clock = clock
        # When the fleet's count of invalid answers is next read (0: at once).
        self._next_budget_check = 0.0
        self._holds = RefusalHolds(hold=REFUSAL_HOLD_SECONDS, clock=clock)
        # Unique per run: a restarted process must not pass for the holder of its predecessor's claims.
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = self._supervisor.spawn("role-changes", self._run_forever)

    async def close(self) -> None:
        """Let the changes in flight finish (up to SHUTDOWN_DRAIN_SECONDS), then stop.

        A change cut off keeps its claim until the lease runs out; then any process takes it again.
        """
        if self._task is None:
            return
        try:
            await asyncio.wait_for(self._idle.wait(), SHUTDOWN_DRAIN_SECONDS)
        except TimeoutError:
            log.warning("roles.changes_in_flight_at_shutdown: taken again when their lease runs out")
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _run_forever(self) -> None:
        while True:
            try:
                if await self._over_budget():
                    self._paused_gauge.set(1)
                    await asyncio.sleep(self._budget.recheck)
                    continue
                self._paused_gauge.set(0)
                claimed = await self._store.claim_role_changes(
                    self.holder, lease=LEASE_SECONDS, limit=self._concurrency
                )
            except StoreUnavailableError as exc:
                log.warning("roles.store_failed reason=%s", exc.reason)
                await asyncio.sleep(max(self._poll_seconds, 1.0))
                continue
            if not claimed:
                await asyncio.sleep(self._poll_seconds)
                continue
            self._idle.clear()
            try:
                await asyncio.gather(*(self._settle(change) for change in claimed))
            finally:
                self._idle.set()

    async def _over_budget(self) -> bool:
        """Whether the fleet was answered `limit` invalid requests within the window (read now and then)."""
        if self._clock() < self._next_budget_check:
            return False
        count = await self._store.count_invalid_requests(window=self._budget.window)
        if count >= self._budget.limit:
            log.warning(
                "roles.writes_paused invalid_requests=%d window=%.0f: Discord bans past 10,000",
                count,
                self._budget.window,
            )
            return True
        self._next_budget_check = self._clock() + self._budget.check_every
        return False

    async def _note_invalid(self) -> None:
        self._next_budget_check = 0.0
        try:
            await self._store.note_invalid_request(window=self._budget.window)
        except StoreUnavailableError as exc:
            log.warning("roles.invalid_request_not_counted reason=%s", exc.reason)

    async def _settle(self, change: RoleChange) -> None:
        """One attempt at a change, and its record; a store that fails leaves it to its lease."""
        try:
            await self._attempt(change)
        except StoreUnavailableError as exc:
            log.warning(
                "roles.record_failed id=%d reason=%s: retried when its lease runs out", change.id, exc.reason
            )

    async def _attempt(self, change: RoleChange) -> None:
        if held := self._holds.held(change):
            await self._finish(change, RoleChangeOutcome(RoleChangeStatus.FAILED, *held))
            return
        link = await self._store.get_link(change.guild_id)
        if link is None or not link.active:
            # Queued before an unlink: the bot has left (or is leaving) the guild, and the backend let it go.
            await self._finish(change, RoleChangeOutcome(RoleChangeStatus.FAILED, None, UNLINKED))
            return
        try:
            async with asyncio.timeout(ATTEMPT_TIMEOUT):
                await self._rest.write(change)
                roles = await self._rest.member_roles(change.guild_id, change.user_id)
        except TimeoutError:
            await self._refused(change, RoleWriteError(0, None, "no answer in time"))
            return
        except RoleWriteError as error:
            await self._refused(change, error)
            return
        if (change.role_id in roles) == (change.action is RoleAction.ADD):
            await self._finish(change, RoleChangeOutcome(RoleChangeStatus.APPLIED))
        else:
            await self._finish(change, RoleChangeOutcome(RoleChangeStatus.FAILED, None, NOT_TAKEN))

    async def _refused(self, change: RoleChange, error: RoleWriteError) -> None:
        if error.invalid_request:
            await self._note_invalid()
        attempt = change.attempts + 1
        if error.retryable and attempt < MAX_ATTEMPTS:
            wait = self._retry_waits[min(attempt, len(self._retry_waits)) - 1]
            wait = max(wait, error.retry_after or 0.0)
            if await self._store.retry_role_change(change.id, self.holder, after=wait):
                self._outcomes.labels("retried").inc()
                log.info(
                    "roles.change_retried id=%d guild=%d status=%d attempt=%d wait=%.1f",
                    change.id,
                    change.guild_id,
                    error.status,
                    attempt,
                    wait,
                )
            return
        if error.retryable:
            answered = f"HTTP {error.status}" if error.status else "no answer"
            outcome = RoleChangeOutcome(
                RoleChangeStatus.FAILED,
                None,
                f"Discord kept answering {answered}; gave up after {attempt} attempts",
            )
        else:
            code, reason = explain(error, role_id=change.role_id, user_id=change.user_id)
            if code == MISSING_PERMISSIONS:
                self._holds.hold(change.guild_id, change.role_id, code, reason)
            elif code in (MISSING_ACCESS, UNKNOWN_GUILD):
                self._holds.hold(change.guild_id, None, code, reason)
            outcome = RoleChangeOutcome(RoleChangeStatus.FAILED, code, reason)
        await self._finish(change, outcome)

    async def _finish(self, change: RoleChange, outcome: RoleChangeOutcome) -> None:
        recorded = await self._store.finish_role_change(change.id, self.holder, outcome)
        if recorded is None:
            # The lease ran out and another worker took it: its record is the one that counts.
            log.warning("roles.lease_lost id=%d", change.id)
            return
        self._outcomes.labels(outcome.status.value).inc()
        log.info(
            "roles.change_%s id=%d guild=%d user=%d role=%d action=%s code=%s",
            outcome.status.value,
            change.id,
            change.guild_id,
            change.user_id,
            change.role_id,
            change.action.value,
            outcome.error_code,
        )
