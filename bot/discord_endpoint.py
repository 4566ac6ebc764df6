"""Pointing discord.py at a Discord-compatible server other than discord.com (the sandbox, say)."""

from __future__ import annotations

import logging

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import HTTPClient, Route

log = logging.getLogger(__name__)


def use_rest_base(base_url: str) -> None:
    """Send discord.py's REST requests to `{base_url}/api/v10`."""
    # discord.py has no per-client base URL: Route.BASE is the one place it reads it from,
    # so this is process-wide, as is the one Discord a process talks to.
    Route.BASE = f"{base_url}/api/v10"


async def use_gateway_of(http: HTTPClient) -> None:
    """Connect discord.py's gateway to the URL that `GET /gateway/bot` of the current REST base names."""
    # A non-sharded Client never asks /gateway/bot; it dials DEFAULT_GATEWAY.
    _, url, _ = await http.get_bot_gateway()
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)
    log.info("bot.gateway_url_set url=%s", url)
