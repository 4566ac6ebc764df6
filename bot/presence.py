"""The bot's presence, merged: at most one update every few seconds, and only when its text changes."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

# A burst of links changes the count hundreds of times a minute; the members list shows the last one.
PRESENCE_INTERVAL = 5.0


class MergedPresence:
    """Calls `send(text)` for the latest wanted text, never more often than every `interval` seconds."""

    def __init__(
        self, send: Callable[[str], Awaitable[None]], *, interval: float = PRESENCE_INTERVAL
    ) -> None:
        self._send = send
        self._interval = interval
        self._wanted: str | None = None
        self._shown: str | None = None
        self._last_sent = float("-inf")
        self._task: asyncio.Task[None] | None = None

    def want(self, text: str) -> None:
        """Show `text` soon; returns at once."""
        self._wanted = text
        if self._wanted != self._shown and (self._task is None or self._task.done()):
            self._task = asyncio.create_task(self._catch_up(), name="presence")

    def forget_shown(self) -> None:
        """A fresh gateway session shows no activity: send the wanted text again."""
        self._shown = None
        if self._wanted is not None:
            self.want(self._wanted)

    async def _catch_up(self) -> None:
        while self._wanted is not None and self._wanted != self._shown:
            await asyncio.sleep(max(0.0, self._last_sent + self._interval - time.monotonic()))
            text = self._wanted
            self._last_sent = time.monotonic()
            try:
                await self._send(text)
            except Exception as exc:
                # Not shown; the next change (or a fresh session) tries again.
                log.warning("presence.update_failed error=%s", type(exc).__name__)
                return
            self._shown = text

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
