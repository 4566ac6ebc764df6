"""OAuth2 `state`: unguessable, single use, short-lived, kept in the store and bound to one browser."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TypeGuard

from store import PendingState, Store

log = logging.getLogger(__name__)

STATE_TTL = timedelta(minutes=10)
# At most this many consent flows may be pending at once; the oldest give way to a flood.
MAX_PENDING_STATES = 10_000
BROWSER_COOKIE = "guildlink_browser"


def new_token() -> str:
    """256 bits from `secrets`, URL-safe."""
    return secrets.token_urlsafe(32)


def browser_hash(browser_id: str) -> bytes:
    # Only a hash is stored, so the database alone can't be replayed as a cookie.
    return hashlib.sha256(browser_id.encode()).digest()


def is_browser_id(value: str | None) -> TypeGuard[str]:
    return value is not None and 32 <= len(value) <= 64 and value.replace("-", "").replace("_", "").isalnum()


class StateProblem(Enum):
    """Why a callback's state was refused."""

    MISSING = "missing"
    UNKNOWN = "unknown or already used"
    EXPIRED = "expired"
    OTHER_BROWSER = "opened in another browser"


@dataclass(frozen=True, slots=True)
class AcceptedState:
    """A state that passed every check; `ref` is the backend's id for the customer, if any."""

    ref: str | None


class StateKeeper:
    """Issues states for browsers and checks them on the way back."""

    def __init__(self, store: Store, *, ttl: timedelta = STATE_TTL, limit: int = MAX_PENDING_STATES) -> None:
        self._store = store
        self._ttl = ttl
        self._limit = limit

    async def issue(self, browser_id: str, *, ref: str | None = None) -> PendingState:
        """A fresh state bound to `browser_id`."""
        now = datetime.now(UTC)
        pending = PendingState(
            state=new_token(),
            browser_hash=browser_hash(browser_id),
            created_at=now,
            expires_at=now + self._ttl,
            ref=ref,
        )
        dropped = await self._store.add_pending_state(pending, limit=self._limit)
        if dropped:
            log.info("state.pruned count=%d", dropped)
        return pending

    async def accept(self, state: str | None, browser_id: str | None) -> AcceptedState | StateProblem:
        """Consume `state` (first, whatever follows) and say whether this browser may use it."""
        if not state:
            return StateProblem.MISSING
        pending = await self._store.take_pending_state(state)
        if pending is None:
            return StateProblem.UNKNOWN
        if pending.expires_at <= datetime.now(UTC):
            return StateProblem.EXPIRED
        presented = browser_hash(browser_id) if is_browser_id(browser_id) else b""
        if not hmac.compare_digest(presented, pending.browser_hash):
            return StateProblem.OTHER_BROWSER
        return AcceptedState(ref=pending.ref)
