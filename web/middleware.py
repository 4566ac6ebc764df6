"""Security headers on every response, and one error middleware that turns exceptions into pages or JSON."""

from __future__ import annotations

import logging

from aiohttp import web
from aiohttp.typedefs import Handler

from printable import printable
from store import StoreUnavailableError
from web.keys import PAGES, SETTINGS

log = logging.getLogger(__name__)

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    # The callback's URL carries the code: never cache it, never leak it as a referrer.
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
}
# Only when we serve HTTPS ourselves. No includeSubDomains (nor preload): the operator's other hosts under
# this name are not ours to know, and the header would lock browsers out of any that still speak only HTTP.
STRICT_TRANSPORT_SECURITY = "max-age=31536000"
# In place of aiohttp's "Python/3.x aiohttp/3.y": versions only help whoever scans for known holes.
SERVER = "guildlink"


async def add_security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare hook: also covers static files and error responses."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    # config_dict, not app: under a sub-app, request.app may be the sub-app, which holds no settings.
    if request.config_dict[SETTINGS].serves_https:
        response.headers.setdefault("Strict-Transport-Security", STRICT_TRANSPORT_SECURITY)
    response.headers["Server"] = SERVER


def wants_json(request: web.Request) -> bool:
    return request.path.startswith(("/api/", "/discord/")) or request.path in ("/healthz", "/readyz")


def json_error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Render aiohttp's HTTP errors and unexpected exceptions as our pages or JSON, never a traceback."""
    try:
        return await handler(request)
    except StoreUnavailableError as exc:
        # Nothing was half-written: each store call is one transaction. The client may simply try again.
        log.warning("web.store_unavailable path=%s reason=%s", request.path, exc.reason)
        message = f"We cannot record anything right now ({exc.reason}). Please try again in a minute."
        if wants_json(request):
            response = json_error(503, "store_unavailable", message)
        else:
            response = request.app[PAGES].error(503, "Please try again in a minute", message)
        response.headers["Retry-After"] = "30"
        return response
    except web.HTTPException as exc:
        if exc.status < 400 or (exc.text and exc.content_type in ("application/json", "text/html")):
            raise
        if wants_json(request):
            response = json_error(exc.status, exc.reason.lower().replace(" ", "_"), exc.reason)
        else:
            response = request.app[PAGES].error(exc.status, exc.reason, "There is nothing here.")
        # A 405 must say which methods the resource takes (RFC 9110 §15.5.6); aiohttp's own carries it.
        if "Allow" in exc.headers:
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        # The path, never the query: the callback's query holds the code. Escaped, as in the access log.
        log.exception(
            "web.unhandled_error method=%s path=%s", printable(request.method), printable(request.path)
        )
        if wants_json(request):
            return json_error(500, "internal_error", "Something went wrong on our side.")
        return request.app[PAGES].error(
            500, "Something went wrong", "Something went wrong on our side. Please try again."
        )
