"""The console's middleware: no page without a signed-in session, no form without its session's CSRF token."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from printable import printable
from web.admin.csrf import CSRF_FIELD
from web.admin.keys import ADMIN_PAGES, CSRF, SESSIONS
from web.admin.respond import SESSION_KEY, error_page, read_cookie, see_other, set_cookie
from web.admin.session import SESSION_COOKIE, SIGN_IN_COOKIE, cookie_name
from web.keys import SETTINGS

log = logging.getLogger(__name__)

SIGN_IN_PATH = "/admin/sign-in"
# Polled by the list's script: answered in JSON, and not counted as activity (an open tab left alone
# must not keep its session alive).
SYNC_JSON_PATH = "/admin/sync.json"


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the session and, on every POST, the CSRF token; signed in, each page renews the idle time."""
    sessions, csrf = request.app[SESSIONS], request.app[CSRF]
    if sessions is None or csrf is None:
        return request.app[ADMIN_PAGES].render("off.html", status=503, session_csrf=None)
    session = sessions.open(read_cookie(request, SESSION_COOKIE))
    if session is not None and not session.signed_in:
        session = None
    request[SESSION_KEY] = session
    if session is None and request.path != SIGN_IN_PATH:
        if request.path == SYNC_JSON_PATH:
            return web.json_response({"error": "signed_out", "message": "Sign in again."}, status=401)
        # Whatever was asked (a form too), nothing happens without a session: sign in first.
        return see_other(SIGN_IN_PATH)
    if request.method == "POST":
        # The sign-in form has a short session of its own, so that it carries a CSRF token too.
        form_session = (
            session if request.path != SIGN_IN_PATH else sessions.open(read_cookie(request, SIGN_IN_COOKIE))
        )
        form = await request.post()
        if not csrf.matches(form_session, form.get(CSRF_FIELD)):
            log.warning("admin.csrf_refused path=%s", printable(request.path))
            return error_page(
                request,
                403,
                "This form has expired",
                "It was not sent from this session's own page. Go back, reload the page and try again.",
            )
    response = await handler(request)
    https = request.config_dict[SETTINGS].serves_https
    if (
        session is not None
        and request.path != SYNC_JSON_PATH
        # The handler set the cookie itself (signing out deletes it): leave it be.
        and cookie_name(SESSION_COOKIE, https) not in response.cookies
    ):
        renewed = sessions.touch(session)
        set_cookie(request, response, SESSION_COOKIE, sessions.seal(renewed), sessions.seconds_left(renewed))
    return response
