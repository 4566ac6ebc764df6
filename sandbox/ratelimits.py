"""Discord's REST rate limits: per-route buckets keyed by the major parameter, the global limit, invalid requests.

Figures (SandboxOptions' defaults, lowered in tests):
- Add/Remove Guild Member Role: 10 requests per 10 s per guild, PUT and DELETE in one bucket; what large bots
  see in the headers of these routes (Discord publishes no figure and says to read the headers).
- Global: 50 requests per second per bot token, across every route.
- Invalid requests (401, 403, and 429 other than `X-RateLimit-Scope: shared`): 10,000 per 10 minutes, then
  Cloudflare bans the client for a while; here the ban lasts until the count over the last window drops below.

Windows are fixed, as Discord's are: the first request opens one, and it resets `window` seconds later.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

log = logging.getLogger(__name__)

INVALID_STATUSES = (401, 403, 429)


class RateLimitSettings(Protocol):
    """The limits the sandbox enforces (SandboxOptions satisfies it; read at every request)."""

    role_write_limit: int
    role_write_window: float
    global_rate_limit: int
    global_rate_window: float
    invalid_request_limit: int
    invalid_request_window: float


def ceil_ms(seconds: float) -> float:
    """Seconds rounded up to the millisecond: a client that waits this long finds the window reset."""
    return math.ceil(seconds * 1000) / 1000


def bucket_hash(route: str) -> str:
    """The `X-RateLimit-Bucket` of a route: the same for every major parameter, as Discord's is."""
    return hashlib.md5(route.encode()).hexdigest()


@dataclass
class Window:
    """A fixed window: `limit` requests from the one that opened it until `seconds` later."""

    limit: int
    seconds: float
    opened: float = -math.inf
    used: int = 0

    def _roll(self, now: float) -> None:
        if now >= self.opened + self.seconds:
            self.opened, self.used = now, 0

    def take(self, now: float) -> float | None:
        """Count one request; None if it may go, else the seconds until the window resets."""
        self._roll(now)
        if self.used >= self.limit:
            return self.reset_after(now)
        if self.used == 0:
            self.opened = now
        self.used += 1
        return None

    def remaining(self, now: float) -> int:
        """Requests left in the current window."""
        self._roll(now)
        return max(self.limit - self.used, 0)

    def reset_after(self, now: float) -> float:
        """Seconds until the current window resets (a whole window if none is open)."""
        self._roll(now)
        return self.seconds if self.used == 0 else max(self.opened + self.seconds - now, 0.0)


class BucketState(NamedTuple):
    """A per-route bucket as one request left it: what the X-RateLimit-* headers say, and whether it was over."""

    route: str
    major: int
    bucket: str
    limit: int
    remaining: int
    reset_after: float
    # None: the request was let through; else the seconds to wait (a 429).
    retry_after: float | None

    def headers(self) -> dict[str, str]:
        """X-RateLimit-Limit/Remaining/Reset/Reset-After/Bucket, true to the bucket."""
        reset_after = ceil_ms(self.reset_after)
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": f"{math.ceil((time.time() + reset_after) * 1000) / 1000:.3f}",
            "X-RateLimit-Reset-After": f"{reset_after:.3f}",
            "X-RateLimit-Bucket": self.bucket,
        }

    def as_json(self) -> dict[str, object]:
        """The bucket as the controls show it."""
        return {
            "route": self.route,
            "major": str(self.major),
            "bucket": self.bucket,
            "limit": self.limit,
            "remaining": self.remaining,
            "reset_after": round(self.reset_after, 3),
        }


class RateLimits:
    """Every bucket of the sandbox's bot, its global window, and the invalid requests of the last window."""

    def __init__(self, settings: RateLimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self._buckets: dict[tuple[str, int], Window] = {}
        self._global = Window(settings.global_rate_limit, settings.global_rate_window)
        self._invalid: deque[float] = deque()
        self.global_limited = 0
        self.route_limited = 0

    def take_route(self, route: str, major: int, *, limit: int, window: float) -> BucketState:
        """Count one request to `route` for its major parameter (the guild id)."""
        now = self.clock()
        bucket = self._buckets.get((route, major))
        if bucket is None:
            bucket = self._buckets[(route, major)] = Window(limit, window)
        bucket.limit, bucket.seconds = limit, window
        retry_after = bucket.take(now)
        if retry_after is not None:
            self.route_limited += 1
            log.info("ratelimit.route_exceeded route=%s major=%s retry_after=%.3f", route, major, retry_after)
        return self._state(route, major, bucket, now, retry_after)

    def take_role_write(self, guild_id: int) -> BucketState:
        """Count one Add/Remove Guild Member Role of a guild."""
        s = self.settings
        return self.take_route(
            "guilds/{guild_id}/members/{user_id}/roles/{role_id}",
            guild_id,
            limit=s.role_write_limit,
            window=s.role_write_window,
        )

    def take_global(self) -> float | None:
        """Count one request of the bot; None if it may go, else the seconds until the global window resets."""
        self._global.limit = self.settings.global_rate_limit
        self._global.seconds = self.settings.global_rate_window
        retry_after = self._global.take(self.clock())
        if retry_after is not None:
            self.global_limited += 1
            log.info("ratelimit.global_exceeded retry_after=%.3f", retry_after)
        return retry_after

    def note_answer(self, status: int, scope: str | None) -> None:
        """Count an answer toward the invalid-request limit if Discord would (a shared 429 is not counted)."""
        if status in INVALID_STATUSES and not (status == 429 and scope == "shared"):
            self._invalid.append(self.clock())

    def invalid_requests(self) -> int:
        """Invalid requests (401, 403, 429) in the last invalid_request_window seconds."""
        cutoff = self.clock() - self.settings.invalid_request_window
        while self._invalid and self._invalid[0] <= cutoff:
            self._invalid.popleft()
        return len(self._invalid)

    def banned(self) -> bool:
        """Whether the client is over the invalid-request limit (Cloudflare's temporary ban)."""
        return self.invalid_requests() >= self.settings.invalid_request_limit

    def buckets(self) -> list[BucketState]:
        """Every per-route bucket as it stands now."""
        now = self.clock()
        return [self._state(route, major, b, now, None) for (route, major), b in self._buckets.items()]

    def reset(self) -> None:
        """Forget every bucket, the global window and the invalid requests counted."""
        self._buckets.clear()
        self._global = Window(self.settings.global_rate_limit, self.settings.global_rate_window)
        self._invalid.clear()
        self.global_limited = self.route_limited = 0

    def counters(self) -> dict[str, Any]:
        """The counters as the controls show them."""
        now = self.clock()
        s = self.settings
        return {
            "invalid_requests": self.invalid_requests(),
            "invalid_request_limit": s.invalid_request_limit,
            "invalid_request_window": s.invalid_request_window,
            "banned": self.banned(),
            "global": {
                "limit": s.global_rate_limit,
                "window": s.global_rate_window,
                "remaining": self._global.remaining(now),
                "reset_after": round(self._global.reset_after(now), 3),
                "limited": self.global_limited,
            },
            "route_limited": self.route_limited,
            "buckets": [b.as_json() for b in self.buckets()],
        }

    @staticmethod
    def _state(route: str, major: int, bucket: Window, now: float, retry_after: float | None) -> BucketState:
        return BucketState(
            route=route,
            major=major,
            bucket=bucket_hash(route),
            limit=bucket.limit,
            remaining=bucket.remaining(now),
            reset_after=bucket.reset_after(now),
            retry_after=retry_after,
        )
