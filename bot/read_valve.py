"""One valve on gateway reading for every member the bot holds on its way to the database."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from metrics import Metrics

log = logging.getLogger(__name__)


class ReadValve:
    """Counts the members held for the store (chunks of syncs, member events); pauses reading past `cap`.

    Reading resumes once the count is back to half. A pause that lasts `max_pause` (below discord.py's
    heartbeat timeout, past which it drops the session) ends anyway: the producers' shedders drop what they
    hold, each arranging for it to be read again, until the count is back to half; then reading resumes.
    """

    def __init__(
        self,
        pause_reading: Callable[[bool], None],
        *,
        cap: int,
        max_pause: float,
        metrics: Metrics | None = None,
    ) -> None:
        self.cap = cap
        self.max_pause = max_pause
        self._resume_at = cap // 2
        self._pause_reading = pause_reading
        self._metrics = metrics or Metrics()
        self._buffered = 0
        # The most held at once since start (tests and benchmarks compare it with the cap).
        self.peak = 0
        self._shedders: list[Callable[[], None]] = []
        self._paused_at: float | None = None
        self._resumed_at = float("-inf")
        self._cap_timer: asyncio.TimerHandle | None = None
        self._shedding = False

    def add_shedder(self, shed: Callable[[], None]) -> None:
        """`shed()` drops what its producer holds when a pause reaches its cap; called in the order added."""
        self._shedders.append(shed)

    @property
    def buffered(self) -> int:
        """Members received and not yet stored (or dropped)."""
        return self._buffered

    @property
    def paused(self) -> bool:
        return self._paused_at is not None

    def above_resume_mark(self) -> bool:
        """Whether more must be written (or shed) before reading may resume."""
        return self._buffered > self._resume_at

    def paused_within(self, seconds: float) -> bool:
        """Whether reading is paused now or was within the last `seconds` (silence then is ours, not Discord's)."""
        return self.paused or time.monotonic() - self._resumed_at < seconds

    def grow(self, count: int) -> None:
        """A producer holds `count` more members."""
        self._buffered += count
        self.peak = max(self.peak, self._buffered)
        if self._paused_at is not None:
            # Again at every dispatch read while paused: a socket opened since (a reconnect) is not paused
            # yet, and aiohttp resumes reading by itself whenever it hands over a frame it had buffered.
            self._pause_reading(True)
        elif self._buffered >= self.cap:
            self._pause()

    def shrink(self, count: int) -> None:
        """A producer stored (or dropped) `count` of the members it held."""
        self._buffered -= count
        if self._paused_at is not None and not self._shedding and not self.above_resume_mark():
            self._resume("drained")

    def reapply(self) -> None:
        """A session (re)started: pause its new socket too if reading is paused."""
        if self._paused_at is not None:
            self._pause_reading(True)

    def close(self) -> None:
        if self._cap_timer is not None:
            self._cap_timer.cancel()
            self._cap_timer = None

    def _pause(self) -> None:
        self._paused_at = time.monotonic()
        self._cap_timer = asyncio.get_running_loop().call_later(self.max_pause, self._cap_reached)
        log.info(
            "gateway.read_paused buffered=%d cap=%d: the database is behind the gateway",
            self._buffered,
            self.cap,
        )
        self._pause_reading(True)

    def _cap_reached(self) -> None:
        self._cap_timer = None
        log.warning(
            "gateway.read_pause_capped buffered=%d seconds=%.1f: dropping buffered members to be read again later",
            self._buffered,
            self.max_pause,
        )
        self._shedding = True
        try:
            for shed in self._shedders:
                if not self.above_resume_mark():
                    break
                try:
                    shed()
                except Exception:
                    log.exception("gateway.shed_failed shedder=%s", getattr(shed, "__qualname__", shed))
        finally:
            self._shedding = False
        # Whatever is left (writes in progress cannot be dropped), reading resumes before discord.py gives up.
        self._resume("capped")

    def _resume(self, ended: str) -> None:
        assert self._paused_at is not None
        seconds = time.monotonic() - self._paused_at
        self._paused_at = None
        self._resumed_at = time.monotonic()
        self.close()
        self._metrics.read_pauses.labels(ended).inc()
        log.info("gateway.read_resumed buffered=%d seconds=%.1f ended=%s", self._buffered, seconds, ended)
        self._pause_reading(False)
