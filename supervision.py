"""The process's long-lived background tasks, run so that none of them dies silently.

A task that raises is logged with its traceback, counted in /metrics (`guildlink_task_crashes_total{task}`)
and started again after a growing wait; one that keeps failing is named by /readyz. A root module, as
metrics.py is: store/, bot/, web/ and fleet_handoff.py all start their tasks through the process's one
Supervisor, and none of them owns it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from metrics import Metrics

log = logging.getLogger(__name__)

# The wait before the first restart of a streak of crashes, doubling up to MAX_WAIT.
FIRST_WAIT = 1.0
MAX_WAIT = 60.0
# A run that lasts this long ends a streak: the task works, and its next crash starts the waits over.
STABLE_AFTER = 60.0
# From this many crashes in a row the task is failing (for /readyz), until a run lasts STABLE_AFTER.
FAILING_AFTER = 3


@dataclass(frozen=True, slots=True)
class FailingTask:
    """A task that keeps crashing: what /readyz says of it."""

    name: str
    # In a row, each within STABLE_AFTER of the restart before it.
    crashes: int
    # The class of the last exception: never its message, which may quote data.
    error: str


@dataclass(slots=True)
class _Streak:
    name: str
    crashes: int = 0
    error: str = ""
    running_since: float | None = None


class Supervisor:
    """Runs each task given to `spawn`; restarts it with backoff when it raises, and tells who keeps failing."""

    def __init__(
        self,
        metrics: Metrics,
        *,
        first_wait: float = FIRST_WAIT,
        max_wait: float = MAX_WAIT,
        stable_after: float = STABLE_AFTER,
        failing_after: int = FAILING_AFTER,
    ) -> None:
        self._crashes = metrics.task_crashes
        self._first_wait = first_wait
        self._max_wait = max_wait
        self._stable_after = stable_after
        self._failing_after = failing_after
        self._streaks: list[_Streak] = []

    def spawn(self, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Start `run()` as task `name`, again after each crash; cancel the task returned to stop it.

        A `run()` that returns has finished its work (it was asked to stop): it is not started again.
        """
        # The task's series exists from its start, at 0: an alert on its increase sees the first crash.
        self._crashes.labels(name)
        return asyncio.create_task(self._supervise(name, run), name=name)

    def failing(self) -> list[FailingTask]:
        """The tasks that crashed FAILING_AFTER times in a row and have not run STABLE_AFTER since."""
        now = asyncio.get_running_loop().time()
        return [
            FailingTask(streak.name, streak.crashes, streak.error)
            for streak in self._streaks
            if streak.crashes >= self._failing_after
            and (streak.running_since is None or now - streak.running_since < self._stable_after)
        ]

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        streak = _Streak(name)
        self._streaks.append(streak)
        try:
            while True:
                started = streak.running_since = loop.time()
                crash = await _crash_of(run)
                if crash is None:
                    return
                streak.running_since = None
                if loop.time() - started >= self._stable_after:
                    streak.crashes = 0
                streak.crashes += 1
                again = streak.crashes > 1 and streak.error == type(crash).__name__
                streak.error = type(crash).__name__
                self._crashes.labels(name).inc()
                wait = min(self._max_wait, self._first_wait * 2 ** min(streak.crashes - 1, 30))
                if again:
                    # Its traceback was logged at the first crash of the streak: once is enough to fix it.
                    log.error(
                        "task.crashed_again task=%s crashes=%d error=%s restart_in=%.1fs",
                        name,
                        streak.crashes,
                        streak.error,
                        wait,
                    )
                else:
                    log.error(
                        "task.crashed task=%s crashes=%d restart_in=%.1fs",
                        name,
                        streak.crashes,
                        wait,
                        exc_info=crash,
                    )
                await asyncio.sleep(wait)
                log.info("task.restarted task=%s crashes=%d", name, streak.crashes)
        finally:
            self._streaks.remove(streak)


async def _crash_of(run: Callable[[], Awaitable[None]]) -> BaseException | None:
    """Run once; None if it returned, else what it raised. Our own cancellation goes through."""
    try:
        await run()
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is None or task.cancelling():
            raise
        # Nobody cancelled this task: something inside it cancelled what it awaited, which ends it all the same.
        return exc
    except Exception as exc:
        return exc
    return None
