"""Typed keys for what the web app's handlers need."""

from __future__ import annotations

from aiohttp import web

from config import Settings
from handoff import BotStatusSource, GuildLinker, HandoffStatusSource
from metrics import Metrics
from store import Store
from supervision import Supervisor
from web.oauth import DiscordOAuthClient
from web.pages import Pages
from web.progress import ProgressTokens
from web.rate_limit import ClientRateLimiter
from web.readiness import DatabaseProbe
from web.states import StateKeeper
from web.store_counts import StoreCounts
from web.uncalled_installs import UncalledInstalls

SETTINGS = web.AppKey("settings", Settings)
STORE = web.AppKey("store", Store)
LINKER = web.AppKey("linker", GuildLinker)
BOT_STATUS = web.AppKey("bot_status", BotStatusSource)
HANDOFF_STATUS = web.AppKey("handoff_status", HandoffStatusSource)
PAGES = web.AppKey("pages", Pages)
OAUTH = web.AppKey("oauth", DiscordOAuthClient)
STATES = web.AppKey("states", StateKeeper)
PROGRESS = web.AppKey("progress", ProgressTokens)
# None when LINK_RATE_LIMIT=0.
RATE_LIMIT: web.AppKey[ClientRateLimiter | None] = web.AppKey("rate_limit")
DATABASE_PROBE = web.AppKey("database_probe", DatabaseProbe)
METRICS = web.AppKey("metrics", Metrics)
# The process's background tasks (the bot's too): /readyz names one that keeps failing.
SUPERVISOR = web.AppKey("supervisor", Supervisor)
STORE_COUNTS = web.AppKey("store_counts", StoreCounts)
# Only with DISCORD_PUBLIC_KEY: the announced server installs waiting for the callback.
UNCALLED_INSTALLS = web.AppKey("uncalled_installs", UncalledInstalls)
