"""Our gateway commands stay under Discord's 120 per 60 s in any window; presence is merged."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.gateway_budget import GatewayBudget
from bot.presence import MergedPresence


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_no_window_holds_more_than_the_limit() -> None:
    clock = FakeClock()

    async def fake_sleep(seconds: float) -> None:
        clock.now += seconds

    budget = GatewayBudget(limit=10, window=60.0, clock=clock, sleep=fake_sleep)
    sent: list[float] = []
    for index in range(35):
        clock.now += 0.5 if index % 3 else 7.0  # bursts and pauses
        await budget.acquire()
        sent.append(clock.now)
    # Any 60 s window, sliding, not fixed: at most 10.
    assert max(sum(1 for t in sent if start <= t < start + 60.0) for start in sent) == 10


async def test_the_wait_estimate_counts_queued_commands() -> None:
    clock = FakeClock()
    budget = GatewayBudget(limit=2, window=60.0, clock=clock)
    assert budget.wait_estimate() == 0.0
    await budget.acquire()
    clock.now += 10
    await budget.acquire()
    assert budget.wait_estimate() == 50.0  # the first slot frees 60 s after the first command


class GatedSleep:
    """asyncio.sleep on the fake clock: while the gate is shut, a sleeper waits; once open, the clock jumps."""

    def __init__(self, clock: FakeClock) -> None:
        self._clock = clock
        self.gate = asyncio.Event()
        self.gate.set()

    async def __call__(self, seconds: float) -> None:
        # A hair past the deadline, as a real clock would be: `now + (deadline - now)` may round below it.
        until = self._clock.now + seconds + 1e-9
        await self.gate.wait()
        self._clock.now = max(self._clock.now, until)


async def _estimate_then_send(
    limit: int, gaps: list[float], waiters: int, later: float
) -> tuple[float, float]:
    """Send after each gap, queue `waiters` behind a full window, let `later` pass; estimate, then ask for real."""
    clock = FakeClock()
    sleep = GatedSleep(clock)
    budget = GatewayBudget(limit=limit, window=60.0, clock=clock, sleep=sleep)
    for gap in gaps:
        clock.now += gap
        await budget.acquire()
    sleep.gate.clear()
    queued = [asyncio.create_task(budget.acquire()) for _ in range(waiters)]
    for _ in range(3):
        await asyncio.sleep(0)  # each takes its place in the queue
    clock.now += later
    estimate = budget.wait_estimate()
    asked = clock.now
    ours = asyncio.create_task(budget.acquire())
    await asyncio.sleep(0)
    sleep.gate.set()
    await asyncio.gather(*queued, ours)
    return estimate, clock.now - asked


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(1, 6),
    gaps=st.lists(st.floats(0.0, 90.0), max_size=20),
    waiters=st.integers(0, 40),
    later=st.floats(0.0, 400.0),
)
def test_the_wait_estimate_never_fails_and_foretells_when_a_command_goes(
    limit: int, gaps: list[float], waiters: int, later: float
) -> None:
    # However many wait, and however much of the window has emptied while they slept.
    estimate, waited = asyncio.run(_estimate_then_send(limit, gaps, waiters, later))
    assert estimate >= 0.0
    assert waited == pytest.approx(estimate, abs=1e-6)


async def test_the_wait_estimate_with_many_waiters_and_an_emptying_window() -> None:
    # Three sends 20 s apart fill the window; ten more queue; 50 s on, only the last send is still in it.
    estimate, waited = await _estimate_then_send(3, [0.0, 20.0, 20.0], 10, 50.0)
    assert estimate == 180.0 and waited == pytest.approx(estimate)


async def test_presence_updates_are_merged_and_only_sent_when_the_text_changes() -> None:
    shown: list[str] = []

    async def send(text: str) -> None:
        shown.append(text)

    presence = MergedPresence(send, interval=0.2)
    for count in range(1, 301):
        presence.want(f"{count} linked servers")
    await asyncio.sleep(0.5)
    presence.want("300 linked servers")
    await asyncio.sleep(0.3)
    await presence.close()
    assert shown[-1] == "300 linked servers" and len(shown) <= 2


@given(
    limit=st.integers(1, 20),
    sent_at=st.lists(st.floats(0.0, 120.0), max_size=40),
    waiting=st.integers(0, 200),
    later=st.floats(0.0, 200.0),
)
def test_the_wait_estimate_never_raises_and_stays_within_its_rounds(
    limit: int, sent_at: list[float], waiting: int, later: float
) -> None:
    # However many wait, and however much of the window has emptied since (the case that raised IndexError).
    clock = FakeClock()
    budget = GatewayBudget(limit=limit, window=60.0, clock=clock)
    for at in sorted(sent_at)[:limit]:
        clock.now = 1000.0 + at
        budget._sent.append(clock.now)
    budget._waiting = waiting
    clock.now += later
    estimate = budget.wait_estimate()
    rounds = max(len(budget._sent) + waiting - limit, 0) // limit
    assert 0.0 <= estimate <= (rounds + 1) * 60.0
