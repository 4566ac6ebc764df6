"""Our share of a gateway connection's command limit, counted over a sliding window."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable

# Discord closes a connection with 4008 past 120 commands in 60 s. discord.py counts a fixed window of 110 and,
# when full, blocks the socket (heartbeats too) until the window ends. Our commands (op 8, presence) stay
# under 100 in ANY 60 s, which leaves room for heartbeats (about 2 a minute) and IDENTIFY/RESUME below both
# limits, so neither Discord's close nor discord.py's stall can happen.
COMMAND_WINDOW = 60.0
OUR_COMMANDS_PER_WINDOW = 100


class GatewayBudget:
    """Commands we may send on one connection: at most `limit` in any `window` seconds, first come first served."""

    def __init__(
        self,
        *,
        limit: int = OUR_COMMANDS_PER_WINDOW,
        window: float = COMMAND_WINDOW,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if limit < 1 or window <= 0:
            raise ValueError("a budget needs a limit of 1 or more commands in a window longer than 0 s")
        self._limit = limit
        self._window = window
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._queue = asyncio.Lock()
        self._waiting = 0

    def _forget_old(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - self._window:
            self._sent.popleft()

    def wait_estimate(self) -> float:
        """Roughly how long a command asked for now would wait for its turn (queued commands included)."""
        now = self._clock()
        self._forget_old(now)
        ahead = len(self._sent) + self._waiting - self._limit
        if ahead < 0:
            return 0.0
        # Each full window lets `limit` more through.
        rounds, position = divmod(ahead, self._limit)
        # The slot at `position` frees when the command in it leaves the window. Past the commands counted
        # now (the window emptied while many waited), the waiters ahead take those slots about now, so they
        # free a whole window later.
        if position < len(self._sent):
            # Clamped: float rounding of clock readings must not put it past a window from now.
            frees_in = min(max(self._sent[position] + self._window - now, 0.0), self._window)
        else:
            frees_in = self._window
        return rounds * self._window + frees_in

    async def acquire(self) -> None:
        """Wait for a slot, then count one command as sent."""
        self._waiting += 1
        try:
            async with self._queue:
                while True:
                    now = self._clock()
                    self._forget_old(now)
                    if len(self._sent) < self._limit:
                        self._sent.append(now)
                        return
                    await self._sleep(self._sent[0] + self._window - now)
        finally:
            self._waiting -= 1
