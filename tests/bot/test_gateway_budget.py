"""Our gateway commands stay under Discord's 120 per 60 s in any window; presence is merged."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from bot.gateway_budget import GatewayBudget
from bot.presence import MergedPresence


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_no_window_holds_more_than_the_limit(monkeypatch) -> None:
    clock = FakeClock()
    budget = GatewayBudget(limit=10, window=60.0, clock=clock)
    sent: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        clock.now += seconds

    monkeypatch.setattr("bot.gateway_budget.asyncio.sleep", fake_sleep)
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
