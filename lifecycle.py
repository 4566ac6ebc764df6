"""The process's life, shared by main.py and the tests: start store, web server and bot; stop them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from bot.client import GuildlinkBot
from bot.discord_internals import discord_endpoint
from bot.member_sync import MEMBER_LIST_COOLDOWN
from config import Settings
from metrics import Metrics
from store import Store, open_store
from web.access_log import PathOnlyAccessLogger
from web.app import create_app
from web.tls import server_ssl_context

log = logging.getLogger(__name__)


class CannotListenError(Exception):
    """The web server cannot listen on WEB_HOST:WEB_PORT (the port is taken, or not ours to bind)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"{host}:{port}: {reason}")
        self.host, self.port, self.reason = host, port, reason


@dataclass
class Running:
    """A started guildlink: what tests and the command line need to reach."""

    settings: Settings
    store: Store
    bot: GuildlinkBot
    bot_task: asyncio.Task[None]
    web_url: str


@contextlib.asynccontextmanager
async def run_guildlink(
    settings: Settings,
    *,
    member_list_cooldown: float = MEMBER_LIST_COOLDOWN,
    identify_interval: float | None = None,
) -> AsyncIterator[Running]:
    """Start store, web server and bot; on exit close them in reverse order (bot, web, store).

    `identify_interval` None: IDENTIFY_INTERVAL's setting.
    """
    ssl_context = server_ssl_context(settings)
    endpoint = None if settings.uses_default_discord else settings.discord_base_url
    async with open_store(settings.database_url) as store:
        with discord_endpoint(endpoint):
            bot = GuildlinkBot(
                settings,
                store,
                member_list_cooldown=member_list_cooldown,
                identify_interval=settings.identify_interval
                if identify_interval is None
                else identify_interval,
                metrics=Metrics(),
            )
            async with _started_web_and_bot(settings, store, bot, ssl_context) as running:
                yield running


@contextlib.asynccontextmanager
async def _started_web_and_bot(
    settings: Settings, store: Store, bot: GuildlinkBot, ssl_context: ssl.SSLContext | None
) -> AsyncIterator[Running]:
    app = create_app(settings, store, linker=bot.links, bot_status=bot, metrics=bot.metrics)
    runner = web.AppRunner(app, access_log_class=PathOnlyAccessLogger)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.web_host, settings.web_port, ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as exc:
            raise CannotListenError(settings.web_host, settings.web_port, exc.strerror or str(exc)) from None
        host, port = runner.addresses[0][:2]
        scheme = "https" if ssl_context else "http"
        web_url = f"{scheme}://{'localhost' if host in ('127.0.0.1', '::1') else host}:{port}"
        async with bot:
            bot_task = asyncio.create_task(bot.start(settings.bot_token.reveal()), name="discord-bot")
            try:
                yield Running(settings, store, bot, bot_task, web_url)
            finally:
                await bot.close()
                await _finish(bot_task)
    finally:
        await runner.cleanup()


async def _finish(bot_task: asyncio.Task[None]) -> None:
    """Wait briefly for the closed bot's task; its outcome was read already, or no longer matters."""
    try:
        await asyncio.wait_for(asyncio.shield(bot_task), timeout=5)
    except (asyncio.CancelledError, TimeoutError):
        bot_task.cancel()
    except Exception as exc:
        log.debug("guildlink.bot_task_ended_during_shutdown error=%s", type(exc).__name__)
