"""Typed keys of the console's sub-app; what it shares with the main app comes through request.config_dict."""

from __future__ import annotations

from aiohttp import web

from web.admin.csrf import CsrfTokens
from web.admin.pages import AdminPages
from web.admin.session import SessionKeeper
from web.rate_limit import ClientRateLimiter

ADMIN_PAGES = web.AppKey("admin_pages", AdminPages)
# None while API_TOKEN is unset: the console is off.
SESSIONS: web.AppKey[SessionKeeper | None] = web.AppKey("admin_sessions")
CSRF: web.AppKey[CsrfTokens | None] = web.AppKey("admin_csrf")
SIGN_IN_LIMIT = web.AppKey("admin_sign_in_limit", ClientRateLimiter)
