"""What every console handler answers with: pages that know the session, redirects, and the session's cookies."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from web.admin.keys import ADMIN_PAGES, CSRF
from web.admin.session import Session, cookie_name, cookie_path
from web.keys import SETTINGS

# Set by the guard for every request it lets through: the signed-in session, or None (the sign-in page).
SESSION_KEY = "guildlink.admin.session"


def signed_in_session(request: web.Request) -> Session | None:
    session = request.get(SESSION_KEY)
    return session if isinstance(session, Session) else None


def page(request: web.Request, template: str, *, status: int = 200, **context: Any) -> web.Response:
    """A console page; signed in, it carries the sign-out form with this session's CSRF token."""
    session = signed_in_session(request)
    csrf = request.app[CSRF]
    session_csrf = csrf.token(session) if session is not None and csrf is not None else None
    return request.app[ADMIN_PAGES].render(template, status=status, session_csrf=session_csrf, **context)


def error_page(request: web.Request, status: int, heading: str, message: str) -> web.Response:
    return page(request, "error.html", status=status, heading=heading, message=message)


def see_other(location: str) -> web.Response:
    """A 303 to `location` (returned, not raised, so that the guard still sees the response)."""
    return web.Response(status=303, headers={"Location": location})


def set_cookie(
    request: web.Request, response: web.StreamResponse, base: str, value: str, max_age: int
) -> None:
    """One of the console's cookies: HttpOnly, SameSite=Strict, and Secure with the __Host- prefix under HTTPS."""
    https = request.config_dict[SETTINGS].serves_https
    response.set_cookie(
        cookie_name(base, https),
        value,
        max_age=max(max_age, 0),
        path=cookie_path(https),
        httponly=True,
        samesite="Strict",
        secure=https,
    )


def delete_cookie(request: web.Request, response: web.StreamResponse, base: str) -> None:
    https = request.config_dict[SETTINGS].serves_https
    response.del_cookie(
        cookie_name(base, https), path=cookie_path(https), secure=https, httponly=True, samesite="Strict"
    )


def read_cookie(request: web.Request, base: str) -> str | None:
    return request.cookies.get(cookie_name(base, request.config_dict[SETTINGS].serves_https))
