"""The supervisor: a task that raises is logged, counted and restarted; one that keeps failing is named."""

from __future__ import annotations

import asyncio
import logging

import pytest

from metrics import Metrics
from supervision import FailingTask, Supervisor
from tests.harness import eventually


def crashes_counted(metrics: Metrics, task: str) -> float:
    value = metrics.registry.get_sample_value("guildlink_task_crashes_total", {"task": task})
    return 0.0 if value is None else value


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_a_task_that_raises_is_logged_once_with_its_traceback_counted_and_restarted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    metrics = Metrics()
    supervisor = Supervisor(metrics, first_wait=0.01)
    runs: list[int] = []
    restarted = asyncio.Event()

    async def run() -> None:
        runs.append(len(runs) + 1)
        if len(runs) == 1:
            raise ValueError("a bug")
        restarted.set()
        await asyncio.Event().wait()

    task = supervisor.spawn("flaky", run)
    await restarted.wait()
    assert runs == [1, 2] and not task.done()
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
    record = tracebacks[0]
    assert record.levelno == logging.ERROR and record.exc_info is not None
    assert record.exc_info[0] is ValueError and "task.crashed task=flaky crashes=1" in record.getMessage()
    assert crashes_counted(metrics, "flaky") == 1
    # One crash followed by a run that works is not "failing".
    assert supervisor.failing() == []
    await stop(task)


async def test_a_task_that_keeps_crashing_is_failing_until_a_run_lasts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    supervisor = Supervisor(metrics, first_wait=0.001, max_wait=0.001, stable_after=0.2, failing_after=3)
    broken = True
    runs = 0

    async def run() -> None:
        nonlocal runs
        runs += 1
        if broken:
            raise KeyError("a bug")
        await asyncio.Event().wait()

    task = supervisor.spawn("broken", run)

    async def failing() -> list[FailingTask]:
        return supervisor.failing()

    [reported] = await eventually(failing)
    assert reported.name == "broken" and reported.error == "KeyError" and reported.crashes >= 3
    broken = False

    async def recovered() -> bool:
        return supervisor.failing() == []

    await eventually(recovered)
    assert not task.done()
    assert crashes_counted(metrics, "broken") >= 3
    # The traceback once per streak of one error; each later crash in one line.
    crash_lines = [r for r in caplog.records if r.getMessage().startswith("task.crashed")]
    assert len([r for r in crash_lines if r.exc_info]) == 1
    assert len(crash_lines) == crashes_counted(metrics, "broken")
    await stop(task)


async def test_cancelling_a_task_stops_it_cleanly_and_counts_no_crash(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics()
    supervisor = Supervisor(metrics)
    started, cleaned_up = asyncio.Event(), asyncio.Event()

    async def run() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            cleaned_up.set()

    task = supervisor.spawn("steady", run)
    await started.wait()
    await stop(task)
    assert task.cancelled() and cleaned_up.is_set()
    assert crashes_counted(metrics, "steady") == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def test_cancelling_a_task_waiting_to_restart_stops_it_and_forgets_it() -> None:
    metrics = Metrics()
    supervisor = Supervisor(metrics, first_wait=3600.0, failing_after=1)

    async def run() -> None:
        raise RuntimeError("a bug")

    task = supervisor.spawn("waiting", run)

    async def failing() -> list[FailingTask]:
        return supervisor.failing()

    assert await eventually(failing) == [FailingTask("waiting", 1, "RuntimeError")]
    await stop(task)
    assert task.cancelled() and supervisor.failing() == []
    assert crashes_counted(metrics, "waiting") == 1


async def test_a_cancellation_from_inside_the_task_is_a_crash() -> None:
    metrics = Metrics()
    supervisor = Supervisor(metrics, first_wait=0.01)
    runs = 0
    restarted = asyncio.Event()

    async def run() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            # What the task awaited was cancelled by someone else, not the task itself.
            waited: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            waited.cancel()
            await waited
        restarted.set()
        await asyncio.Event().wait()

    task = supervisor.spawn("inner-cancel", run)
    await restarted.wait()
    assert crashes_counted(metrics, "inner-cancel") == 1
    await stop(task)


async def test_a_task_that_returns_is_not_started_again() -> None:
    metrics = Metrics()
    supervisor = Supervisor(metrics, first_wait=0.01)
    runs = 0

    async def run() -> None:
        nonlocal runs
        runs += 1

    task = supervisor.spawn("done", run)
    await task
    assert runs == 1 and crashes_counted(metrics, "done") == 0 and supervisor.failing() == []
