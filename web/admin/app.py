"""The console's sub-app factory, mounted at /admin on the main app (whose keys it reads through config_dict)."""

from __future__ import annotations

from aiohttp import web

from config import Settings
from web.admin import guilds, sign_in
from web.admin.csrf import CsrfTokens
from web.admin.guard import guard
from web.admin.keys import ADMIN_PAGES, CSRF, SESSIONS, SIGN_IN_LIMIT
from web.admin.pages import AdminPages
from web.admin.session import SessionKeeper
from web.rate_limit import ClientRateLimiter

PREFIX = "/admin"
# Sign-in attempts per client: a few typos go through; guessing a 32-character token never could anyway.
SIGN_IN_BURST = 5
SIGN_IN_PER_MINUTE = 5


def create_admin_app(settings: Settings) -> web.Application:
    """The operator console; off (every page says how to turn it on) while API_TOKEN is unset."""
    admin = web.Application(middlewares=[guard])
    admin[ADMIN_PAGES] = AdminPages()
    admin[SESSIONS] = SessionKeeper(settings.api_token) if settings.api_token else None
    admin[CSRF] = CsrfTokens(settings.api_token) if settings.api_token else None
    admin[SIGN_IN_LIMIT] = ClientRateLimiter(burst=SIGN_IN_BURST, per_minute=SIGN_IN_PER_MINUTE)
    admin.add_routes(sign_in.routes)
    admin.add_routes(guilds.routes)
    return admin


def mount_console(app: web.Application, settings: Settings) -> None:
    """Serve the console under /admin/ (and send /admin there)."""
    app.router.add_get(PREFIX, sign_in.to_console)
    app.add_subapp(PREFIX, create_admin_app(settings))
