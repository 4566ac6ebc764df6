"""Signing in to the console with API_TOKEN, and signing out."""

from __future__ import annotations

import hashlib
import hmac
import logging

from aiohttp import web

from printable import printable
from web.admin.keys import CSRF, SESSIONS, SIGN_IN_LIMIT
from web.admin.respond import (
    delete_cookie,
    error_page,
    page,
    read_cookie,
    see_other,
    set_cookie,
    signed_in_session,
)
from web.admin.session import SESSION_COOKIE, SIGN_IN_COOKIE, Session, SessionKeeper
from web.keys import SETTINGS
from web.rate_limit import client_address

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

CONSOLE_PATH = "/admin/"


def token_matches(presented: str, api_token: str) -> bool:
    """Compared in constant time; hashing first keeps even the token's length from showing in the timing."""
    return hmac.compare_digest(
        hashlib.sha256(presented.encode(errors="replace")).digest(),
        hashlib.sha256(api_token.encode()).digest(),
    )


async def to_console(request: web.Request) -> web.Response:
    """GET /admin (on the main app): the console lives under /admin/."""
    return see_other(CONSOLE_PATH)


def _form_session(request: web.Request, sessions: SessionKeeper) -> Session:
    """This browser's sign-in form session if it is still good (several tabs share it), else a new one."""
    session = sessions.open(read_cookie(request, SIGN_IN_COOKIE))
    return session if session is not None and not session.signed_in else sessions.start(signed_in=False)


def _sign_in_page(request: web.Request, *, status: int = 200, problem: str | None = None) -> web.Response:
    sessions, csrf = request.app[SESSIONS], request.app[CSRF]
    assert sessions is not None and csrf is not None  # the guard answers for a console that is off
    form_session = _form_session(request, sessions)
    response = page(
        request,
        "sign_in.html",
        status=status,
        form_csrf=csrf.token(form_session),
        problem=problem,
        signed_out="signed_out" in request.query,
    )
    set_cookie(
        request, response, SIGN_IN_COOKIE, sessions.seal(form_session), sessions.seconds_left(form_session)
    )
    return response


@routes.get("/sign-in")
async def sign_in_form(request: web.Request) -> web.Response:
    if signed_in_session(request) is not None:
        return see_other(CONSOLE_PATH)
    return _sign_in_page(request)


@routes.post("/sign-in")
async def sign_in(request: web.Request) -> web.Response:
    """The guard checked the form's CSRF token; here the attempt is counted, then the token compared."""
    settings = request.config_dict[SETTINGS]
    sessions = request.app[SESSIONS]
    assert sessions is not None and settings.api_token is not None
    client = client_address(request, settings.trusted_proxies)
    wait = request.app[SIGN_IN_LIMIT].retry_after(client)
    if wait:
        log.info("admin.sign_in_rate_limited client=%s", printable(client))
        response = error_page(
            request, 429, "Too many attempts", "Too many sign-ins were tried from here. Please wait a minute."
        )
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    presented = (await request.post()).get("token")
    if not isinstance(presented, str) or not token_matches(presented.strip(), settings.api_token.reveal()):
        log.warning("admin.sign_in_refused client=%s", printable(client))
        return _sign_in_page(request, status=401, problem="That is not the API token.")
    session = sessions.start(signed_in=True)
    response = see_other(CONSOLE_PATH)
    set_cookie(request, response, SESSION_COOKIE, sessions.seal(session), sessions.seconds_left(session))
    delete_cookie(request, response, SIGN_IN_COOKIE)
    log.info("admin.signed_in session=%s client=%s", session.ref, printable(client))
    return response


@routes.post("/sign-out")
async def sign_out(request: web.Request) -> web.Response:
    session = signed_in_session(request)
    response = see_other("/admin/sign-in?signed_out=1")
    delete_cookie(request, response, SESSION_COOKIE)
    log.info("admin.signed_out session=%s", session.ref if session else "-")
    return response
