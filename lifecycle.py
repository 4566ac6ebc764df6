"""The process's life, shared by main.py and the tests: start store, web server and bot; stop them in reverse."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from bot import reachability
from bot.client import GUILD_READY_TIMEOUT, GuildlinkBot
from bot.discord_internals import discord_endpoint
from bot.member_sync import MEMBER_LIST_COOLDOWN
from config import Settings
from fleet_handoff import FleetLinker, Shards
from handoff import DirectHandoff, GuildLinker, HandoffStatusSource
from metrics import Metrics
from store import PostgresStore, Store, is_postgres_url, open_store
from supervision import Supervisor
from web.access_log import PathOnlyAccessLogger
from web.app import create_app
from web.oauth import USER_AGENT, DiscordOAuthClient, DiscordOAuthError, InvalidClientError
from web.tls import server_ssl_context

log = logging.getLogger(__name__)

# Objects the collector's youngest generation takes before a collection (CPython's default: 700). A storm
# queues tens of thousands of member events faster than they are committed; at 700 they set off a full
# collection of the growing queue every few thousand events, about 0.6 s in a 55,000-event storm
# (bench.storm). Garbage without cycles is freed at once either way; only cycles wait longer.
GC_YOUNG_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Set the process's collector for a server that holds bursts of young objects (see GC_YOUNG_THRESHOLD)."""
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


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
    handoff: HandoffStatusSource = field(default_factory=DirectHandoff)


@dataclass
class _Handoff:
    """The hand-off as wired: what the web side calls, its status for /readyz, and what listens (if anything)."""

    linker: GuildLinker
    status: HandoffStatusSource
    listening: Callable[[], AbstractAsyncContextManager[object]]


def fleet_shards(settings: Settings) -> Shards | None:
    """This process's shards when other processes run the rest on one PostgreSQL; None when it runs them all."""
    if settings.shard_ids is None or settings.shard_count is None:
        return None
    if set(settings.shard_ids) == set(range(settings.shard_count)):
        return None
    if not is_postgres_url(settings.database_url):
        log.warning(
            "guildlink.shards_without_fleet shards=%s of %d: on SQLite no other process can hear of links"
            " to the other shards' guilds; run a fleet on PostgreSQL",
            ",".join(map(str, settings.shard_ids)),
            settings.shard_count,
        )
        return None
    return Shards(settings.shard_count, settings.shard_ids)


def _handoff(settings: Settings, store: Store, bot: GuildlinkBot) -> _Handoff:
    """One process: a direct call into the bot. A fleet's process: NOTIFY to the shard's owner, LISTEN for ours."""
    shards = fleet_shards(settings)
    if shards is None:
        return _Handoff(bot.links, DirectHandoff(), contextlib.nullcontext)
    assert isinstance(store, PostgresStore), "fleet_shards() is None unless DATABASE_URL is PostgreSQL"
    fleet = FleetLinker(store, store, bot.links, shards, bot.metrics, bot.supervisor)
    log.info("guildlink.fleet shards=%s of %d", ",".join(map(str, shards.ids)), shards.count)
    return _Handoff(fleet, fleet, lambda: fleet.running(settings.database_url))


@contextlib.asynccontextmanager
async def run_guildlink(
    settings: Settings,
    *,
    member_list_cooldown: float = MEMBER_LIST_COOLDOWN,
    identify_interval: float | None = None,
    guild_ready_timeout: float = GUILD_READY_TIMEOUT,
) -> AsyncIterator[Running]:
    """Start store, web server and bot; on exit close them in reverse order (bot, web, store).

    `identify_interval` None: IDENTIFY_INTERVAL's setting.
    """
    ssl_context = server_ssl_context(settings)
    if settings.api_token is None:
        log.warning(
            "guildlink.api_disabled: API_TOKEN is not set, so /api answers 503; make one with"
            " python -c 'import secrets; print(secrets.token_urlsafe(32))', put API_TOKEN=... in .env and restart"
        )
    endpoint = None if settings.uses_default_discord else settings.discord_base_url
    async with open_store(settings.database_url) as store:
        with discord_endpoint(endpoint):
            metrics = Metrics()
            bot = GuildlinkBot(
                settings,
                store,
                member_list_cooldown=member_list_cooldown,
                identify_interval=settings.identify_interval
                if identify_interval is None
                else identify_interval,
                guild_ready_timeout=guild_ready_timeout,
                metrics=metrics,
                # One for the process: /readyz names whichever task of bot, web or hand-off keeps failing.
                supervisor=Supervisor(metrics),
            )
            handoff = _handoff(settings, store, bot)
            async with _started_web_and_bot(settings, store, bot, handoff, ssl_context) as running:
                yield running


@contextlib.asynccontextmanager
async def _started_web_and_bot(
    settings: Settings,
    store: Store,
    bot: GuildlinkBot,
    handoff: _Handoff,
    ssl_context: ssl.SSLContext | None,
) -> AsyncIterator[Running]:
    app = create_app(
        settings,
        store,
        linker=handoff.linker,
        bot_status=bot,
        metrics=bot.metrics,
        handoff_status=handoff.status,
        supervisor=bot.supervisor,
    )
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
                # Inside the bot's life: no notice reaches a bot that is not started yet or closed already.
                async with handoff.listening():
                    yield Running(settings, store, bot, bot_task, web_url, handoff.status)
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
