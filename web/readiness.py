"""Whether the database takes writes, for /readyz."""

from __future__ import annotations

import time

from store import Store, StoreUnavailableError

# Readiness writes to the database (a read-only file or a full disk only shows on a write); a probe
# hammered by a client must not become a stream of fsyncs, so one answer serves for this long.
WRITE_PROBE_INTERVAL = 1.0


class DatabaseProbe:
    """Whether the store answers and takes writes, checked at most once per WRITE_PROBE_INTERVAL."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._checked_at = float("-inf")
        self._problem: str | None = None

    async def problem(self) -> str | None:
        """None when the database is writable; otherwise why not."""
        now = time.monotonic()
        if now - self._checked_at >= WRITE_PROBE_INTERVAL:
            self._checked_at = now
            try:
                await self._store.check_writable()
                self._problem = None
            except StoreUnavailableError as exc:
                self._problem = exc.reason
        return self._problem or self._store.recent_write_failure()
