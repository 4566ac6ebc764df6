"""A per-client token bucket for routes anyone can call without signing in (/link, /start)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Set
from dataclasses import dataclass

from aiohttp import web


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class ClientRateLimiter:
    """`burst` requests at once per client, refilled at `per_minute`; remembers at most `max_clients` clients.

    Memory stays bounded under a flood from many addresses: the least recently seen client is forgotten
    first (and so starts again with a full bucket, which costs a flood more than it gains).
    """

    def __init__(
        self,
        *,
        burst: int = 20,
        per_minute: float = 20.0,
        max_clients: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = float(burst)
        self._rate = per_minute / 60.0
        self._max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    def retry_after(self, client: str) -> float:
        """Take one request from `client`'s bucket: 0 if allowed, else the seconds until one is."""
        now = self._clock()
        bucket = self._buckets.pop(client, None) or _Bucket(self._burst, now)
        bucket.tokens = min(self._burst, bucket.tokens + (now - bucket.updated) * self._rate)
        bucket.updated = now
        self._buckets[client] = bucket
        while len(self._buckets) > self._max_clients:
            self._buckets.popitem(last=False)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / self._rate

    def tracked_clients(self) -> int:
        # Not __len__: an empty limiter would then be falsy, and `if limiter` would switch it off.
        return len(self._buckets)


def client_address(request: web.Request, trusted_proxies: Set[str]) -> str:
    """The client's address; behind a trusted proxy, the last one it appended to X-Forwarded-For.

    Only the proxy's own entry can be trusted: anything before it came from the client.
    """
    remote = request.remote or "unknown"
    if remote not in trusted_proxies:
        return remote
    forwarded = [
        part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()
    ]
    return forwarded[-1] if forwarded else remote
