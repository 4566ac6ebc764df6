"""The process's life, shared by main.py and the tests: start store, web server and bot; stop them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from bot import reachability
from bot.client import GUILD_READY_TIMEOUT, GuildlinkBot
from bot.discord_internals import discord_endpoint
from bot.identify import IDENTIFY_INTERVAL
from bot.member_sync import MEMBER_LIST_COOLDOWN
from config import Settings
from metrics import Metrics
from store import Store, open_store
from web.access_log import PathOnlyAccessLogger
from web.app import create_app
from web.oauth import USER_AGENT, DiscordOAuthClient, DiscordOAuthError, InvalidClientError
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
    identify_interval: float = IDENTIFY_INTERVAL,
    guild_ready_timeout: float = GUILD_READY_TIMEOUT,
) -> AsyncIterator[Running]:
    """Start store, web server and bot; on exit close them in reverse order (bot, web, store)."""
    ssl_context = server_ssl_context(settings)
    if settings.api_token is None:
        log.warning(
            "guildlink.api_disabled: API_TOKEN is not set, so /api answers 503; make one with"
            " python -c 'import secrets; print(secrets.token_urlsafe(32))', put API_TOKEN=... in .env and restart"
        )
    endpoint = None if settings.uses_default_discord else settings.discord_base_url
    async with open_store(settings.database_url) as store:
        with discord_endpoint(endpoint):
            bot = GuildlinkBot(
                settings,
                store,
                member_list_cooldown=member_list_cooldown,
                identify_interval=identify_interval,
                guild_ready_timeout=guild_ready_timeout,
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
            bot_task = asyncio.create_task(_checked_bot(settings, bot), name="discord-bot")
            try:
                yield Running(settings, store, bot, bot_task, web_url)
            finally:
                await bot.close()
                await _finish(bot_task)
    finally:
        await runner.cleanup()


async def _checked_bot(settings: Settings, bot: GuildlinkBot) -> None:
    """The bot's life, after the client credentials check: a refused secret ends it (exit 2) at once."""
    await check_client_credentials(settings)
    # Shut down meanwhile: logging in now would open discord.py's HTTP session after close() ran.
    if not bot.is_closed():
        await bot.start(settings.bot_token.reveal())


async def check_client_credentials(settings: Settings) -> None:
    """Raise InvalidClientError if Discord refuses DISCORD_CLIENT_ID/DISCORD_CLIENT_SECRET.

    Otherwise the first admin to link a server would be the first to find out. A Discord that cannot be
    reached now is only logged: the bot waits for it with its own retries.
    """
    timeout = reachability.PROBE_TIMEOUT  # looked up now: the same deadline as the bot's own probe
    async with aiohttp.ClientSession(headers={"User-Agent": USER_AGENT}) as session:
        client = DiscordOAuthClient(
            session,
            api_base_url=settings.api_base_url,
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            redirect_uri=settings.redirect_uri,
            timeout=timeout,
        )
        try:
            await client.check_client_credentials()
        except InvalidClientError:
            raise
        except DiscordOAuthError as exc:
            log.warning("guildlink.client_credentials_unchecked reason=%s: the bot waits for Discord", exc)
            return
    log.info("guildlink.client_credentials_accepted client_id=%d", settings.client_id)


async def _finish(bot_task: asyncio.Task[None]) -> None:
    """Wait briefly for the closed bot's task; its outcome was read already, or no longer matters."""
    try:
        await asyncio.wait_for(asyncio.shield(bot_task), timeout=5)
    except (asyncio.CancelledError, TimeoutError):
        bot_task.cancel()
    except Exception as exc:
        log.debug("guildlink.bot_task_ended_during_shutdown error=%s", type(exc).__name__)
