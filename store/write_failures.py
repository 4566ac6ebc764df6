"""What /readyz remembers of the last failed write, whatever the engine."""

from __future__ import annotations

import time

# A failed write keeps the store "not writable" for /readyz this long, unless a write of members succeeds
# since: a probe or a sync state can squeeze into a full disk's last pages while a chunk of members cannot.
WRITE_FAILURE_MEMORY = 60.0


class WriteFailureMemory:
    """The reason of the last failed write, until a write of members succeeds or WRITE_FAILURE_MEMORY passes."""

    def __init__(self) -> None:
        self._failure: tuple[float, str] | None = None

    def failed(self, reason: str) -> None:
        self._failure = (time.monotonic(), reason)

    def succeeded(self) -> None:
        self._failure = None

    def recent(self) -> str | None:
        """The reason the last write failed, if it did lately and none succeeded since."""
        if self._failure is None:
            return None
        at, reason = self._failure
        return reason if time.monotonic() - at < WRITE_FAILURE_MEMORY else None
