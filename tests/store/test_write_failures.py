"""What /readyz remembers of failed writes: one failure for a minute, a store that keeps failing for longer."""

from __future__ import annotations

from store.write_failures import FAILING_MEMORY, FAILING_STREAK, WRITE_FAILURE_MEMORY, WriteFailureMemory

# A sync's retries: 5 s after the first failure, then 10, 20, 40, 80, 160 s, then every 300 s.
RETRY_WAITS = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0)


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_one_failure_is_remembered_for_a_minute_or_until_members_are_written() -> None:
    clock = Clock()
    memory = WriteFailureMemory(clock)
    memory.failed("the disk holding the database is full")
    clock.now += WRITE_FAILURE_MEMORY - 1
    assert memory.recent() == "the disk holding the database is full"
    clock.now += 1
    assert memory.recent() is None
    memory.failed("the disk holding the database is full")
    memory.succeeded()
    assert memory.recent() is None


def test_a_store_that_keeps_failing_stays_reported_between_a_syncs_retries() -> None:
    clock = Clock()
    memory = WriteFailureMemory(clock)
    memory.failed("the database is read-only")
    for wait in RETRY_WAITS:
        # Every moment until the next attempt, which fails again.
        for step in range(int(wait)):
            clock.now += 1
            assert memory.recent() == "the database is read-only", (wait, step)
        memory.failed("the database is read-only")
    clock.now += FAILING_MEMORY
    assert memory.recent() is None
    memory.succeeded()
    memory.failed("the database is read-only")
    clock.now += WRITE_FAILURE_MEMORY
    assert memory.recent() is None  # a new failure starts a new count


def test_failures_far_apart_are_not_a_store_that_keeps_failing() -> None:
    clock = Clock()
    memory = WriteFailureMemory(clock)
    for _ in range(FAILING_STREAK + 2):
        memory.failed("the database server was shut down by its administrator")
        clock.now += WRITE_FAILURE_MEMORY
        assert memory.recent() is None
