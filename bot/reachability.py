"""Waiting for Discord at start-up: the web face stays up and says why, while the bot retries with backoff."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger(__name__)

# Every call has a deadline: a Discord that takes the connection and never answers must not hang start-up.
PROBE_TIMEOUT = 10.0
RETRY_WAITS = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)


class DiscordRefusedTokenError(Exception):
    """GET /gateway/bot answered 401: the bot token is wrong (the operator must reset it)."""


class NotDiscordError(Exception):
    """DISCORD_BASE_URL answers HTTP, but not as Discord's API does (404, or no JSON): a wrong setting."""


@dataclass(frozen=True, slots=True)
class GatewayInfo:
    """What GET /gateway/bot says: where to connect, how many shards, how many may IDENTIFY at once."""

    url: str
    shards: int
    max_concurrency: int


async def wait_for_discord(
    api_base_url: str,
    bot_token: str,
    *,
    user_agent: str,
    on_unreachable: Callable[[str, float], None],
    waits: tuple[float, ...] | None = None,
    request_timeout: float | None = None,
) -> GatewayInfo:
    """GET /gateway/bot until Discord answers; report each failed attempt as (reason, seconds to the next)."""
    waits = waits or RETRY_WAITS
    url = f"{api_base_url}/gateway/bot"
    headers = {"Authorization": f"Bot {bot_token}", "User-Agent": user_agent}
    attempt = 0
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=request_timeout or PROBE_TIMEOUT)
    ) as session:
        while True:
            try:
                async with session.get(url, headers=headers) as response:
                    body = await _json(response)
                    if response.status == 401:
                        raise DiscordRefusedTokenError()
                    if response.status == 404 or (response.status < 400 and body is None):
                        raise NotDiscordError(f"{url} answered HTTP {response.status} without Discord's JSON")
                    if response.status < 400 and body is not None:
                        return _gateway_info(body)
                    reason = f"Discord answered HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                reason = _network_reason(exc)
            wait = waits[min(attempt, len(waits) - 1)]
            attempt += 1
            log.warning("bot.discord_unreachable attempt=%d reason=%s retry_in=%.0fs", attempt, reason, wait)
            on_unreachable(reason, wait)
            await asyncio.sleep(wait)


async def _json(response: aiohttp.ClientResponse) -> dict[str, Any] | None:
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return None
    return body if isinstance(body, dict) else None


def _gateway_info(body: dict[str, Any]) -> GatewayInfo:
    limits = body.get("session_start_limit") or {}
    return GatewayInfo(
        url=str(body["url"]),
        shards=int(body.get("shards", 1)),
        max_concurrency=int(limits.get("max_concurrency", 1)),
    )


def _network_reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "Discord did not answer within the timeout"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return "Discord's host name could not be resolved (DNS)"
    if isinstance(exc, aiohttp.ClientConnectorError | ConnectionRefusedError):
        return "the connection to Discord was refused or failed"
    return f"the connection to Discord failed ({type(exc).__name__})"
