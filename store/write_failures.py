"""What /readyz remembers of the last failed write, whatever the engine."""

from __future__ import annotations

import time
from collections.abc import Callable

# A failed write keeps the store "not writable" for /readyz this long, unless a write of members succeeds
# since: a probe or a sync state can squeeze into a full disk's last pages while a chunk of members cannot.
WRITE_FAILURE_MEMORY = 60.0
# A store that keeps failing, FAILING_STREAK failures each within the memory of the one before (a sync's
# retries come 5, 10, 20 s apart at first), stays "not writable" for FAILING_MEMORY after the last: longer
# than the longest wait between a sync's retries (5 minutes), so /readyz does not turn ready between them.
FAILING_STREAK = 3
FAILING_MEMORY = 600.0


class WriteFailureMemory:
    """The reason of the last failed write, until a write of members succeeds or its memory passes."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failure: tuple[float, str] | None = None
        self._streak = 0

    def failed(self, reason: str) -> None:
        if self.recent() is None:
            self._streak = 0
        self._streak += 1
        self._failure = (self._clock(), reason)

    def succeeded(self) -> None:
        self._failure = None
        self._streak = 0

    def recent(self) -> str | None:
        """The reason the last write failed, if it did lately and none succeeded since."""
        if self._failure is None:
            return None
        at, reason = self._failure
        memory = FAILING_MEMORY if self._streak >= FAILING_STREAK else WRITE_FAILURE_MEMORY
        return reason if self._clock() - at < memory else None
