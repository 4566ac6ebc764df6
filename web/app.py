"""The aiohttp application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from config import Settings
from handoff import BotStatusSource, DirectHandoff, GuildLinker, HandoffStatusSource
from metrics import Metrics
from store import Store
from supervision import Supervisor
from web import api, discord_events, health, link_flow, metrics_page, role_changes, user_data
from web.admin.app import mount_console
from web.api import api_auth_middleware
from web.departed_scrub import departed_scrub
from web.feed_pruning import feed_pruning
from web.keys import (
    BOT_STATUS,
    DATABASE_PROBE,
    HANDOFF_STATUS,
    LINKER,
    METRICS,
    OAUTH,
    PAGES,
    PROGRESS,
    RATE_LIMIT,
    SETTINGS,
    STATES,
    STORE,
    STORE_COUNTS,
    SUPERVISOR,
    UNCALLED_INSTALLS,
)
from web.middleware import add_security_headers, error_middleware
from web.oauth import USER_AGENT, DiscordOAuthClient
from web.pages import Pages, static_file
from web.progress import ProgressTokens
from web.rate_limit import ClientRateLimiter
from web.readiness import DatabaseProbe
from web.states import StateKeeper
from web.store_counts import StoreCounts
from web.uncalled_installs import UncalledInstalls
from web.webhooks import DeliveryPolicy, webhook_delivery


def create_app(
    settings: Settings,
    store: Store,
    linker: GuildLinker,
    bot_status: BotStatusSource,
    *,
    rate_limit: ClientRateLimiter | None = None,
    metrics: Metrics | None = None,
    webhook_policy: DeliveryPolicy | None = None,
    handoff_status: HandoffStatusSource | None = None,
    supervisor: Supervisor | None = None,
) -> web.Application:
    """The web face of guildlink: consent flow, probes, the backend's API, webhooks, Discord's webhook events and the
    operator console."""
    app = web.Application(middlewares=[error_middleware, api_auth_middleware])
    app[SETTINGS] = settings
    app[STORE] = store
    app[LINKER] = linker
    app[BOT_STATUS] = bot_status
    app[HANDOFF_STATUS] = handoff_status or DirectHandoff()
    app[PAGES] = Pages()
    app[STATES] = StateKeeper(settings.client_secret, store)
    if rate_limit is None and settings.link_rate_limit:
        rate_limit = ClientRateLimiter(burst=settings.link_rate_limit, per_minute=settings.link_rate_limit)
    app[RATE_LIMIT] = rate_limit
    app[DATABASE_PROBE] = DatabaseProbe(store)
    app[METRICS] = metrics or Metrics()
    app[SUPERVISOR] = supervisor or Supervisor(app[METRICS])
    app[STORE_COUNTS] = StoreCounts(store, webhooks=settings.webhook_url is not None)
    app[PROGRESS] = ProgressTokens(settings.client_secret)
    app.cleanup_ctx.append(_oauth_client)
    app.cleanup_ctx.append(feed_pruning)
    app.cleanup_ctx.append(departed_scrub)
    if settings.webhook_url:
        app.cleanup_ctx.append(
            webhook_delivery(settings, store, app[METRICS], webhook_policy or DeliveryPolicy())
        )
    app.on_response_prepare.append(add_security_headers)
    app.add_routes(link_flow.routes)
    app.router.add_get(settings.redirect_path, link_flow.authorize_callback, name="authorize_discord")
    app.add_routes(health.routes)
    app.add_routes(metrics_page.routes)
    app.add_routes(api.routes)
    app.add_routes(user_data.routes)
    if settings.discord_public_key is not None:
        # Without the key nothing could verify Discord's signatures: the route is not served (404).
        installs = UncalledInstalls(settings, store, linker, app[SUPERVISOR])
        app[UNCALLED_INSTALLS] = installs
        app.cleanup_ctx.append(installs.running)
        app.add_routes(discord_events.routes)
    app.add_routes(role_changes.routes)
    app.router.add_get("/static/{name}", static_file)
    mount_console(app, settings)
    return app


async def _oauth_client(app: web.Application) -> AsyncIterator[None]:
    settings = app[SETTINGS]
    async with aiohttp.ClientSession(headers={"User-Agent": USER_AGENT}) as session:
        app[OAUTH] = DiscordOAuthClient(
            session,
            api_base_url=settings.api_base_url,
            client_id=settings.client_id,
            client_secret=settings.client_secret,
            redirect_uri=settings.redirect_uri,
        )
        yield
