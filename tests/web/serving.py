"""The web app alone on a real socket, over a store of the test's own: no bot, no sandbox."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from config import Settings, parse_settings
from handoff import BotStatus
from metrics import Metrics
from store import Link, Store
from web.app import create_app

API_TOKEN = "test-api-token-" + "x" * 32
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}


class NoBot:
    """A linker and bot status that do nothing: these tests write the store themselves."""

    async def guild_linked(self, link: Link) -> None:
        return None

    async def guild_unlinked(self, guild_id: int) -> None:
        return None

    async def guild_abandoned(self, guild_id: int) -> bool:
        return True

    def bot_status(self) -> BotStatus:
        return BotStatus(ready=True, state="ready", latency_ms=1.0, guild_count=0)


def app_settings(database_url: str, env: Mapping[str, str] | None = None) -> Settings:
    return parse_settings(
        {
            "DISCORD_CLIENT_ID": "1",
            "DISCORD_CLIENT_SECRET": "client-secret",
            "DISCORD_BOT_TOKEN": "MQ.a.b",
            "DISCORD_REDIRECT_URI": "http://localhost:1/authorize-discord",
            "DATABASE_URL": database_url,
            "API_TOKEN": API_TOKEN,
            **(env or {}),
        }
    )


@dataclass
class Served:
    url: str
    app: web.Application
    metrics: Metrics


@contextlib.asynccontextmanager
async def serving(settings: Settings, store: Store, **create_app_kwargs: Any) -> AsyncIterator[Served]:
    """create_app on 127.0.0.1 and a free port, with its cleanup_ctx run on exit."""
    metrics = create_app_kwargs.pop("metrics", None) or Metrics()
    bot = NoBot()
    linker = create_app_kwargs.pop("linker", None) or bot
    app = create_app(settings, store, linker=linker, bot_status=bot, metrics=metrics, **create_app_kwargs)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield Served(f"http://{host}:{port}", app, metrics)
    finally:
        await runner.cleanup()
