"""The consent flow's pages: landing page, /link and /start to Discord, and the /authorize-discord callback."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn
from urllib.parse import quote, urlencode

from aiohttp import web

from config import Settings
from store import SyncPhase, SyncState
from web.keys import (
    BOT_STATUS,
    LINKER,
    METRICS,
    OAUTH,
    PAGES,
    PROGRESS,
    RATE_LIMIT,
    SETTINGS,
    STATES,
    STORE,
    UNCALLED_INSTALLS,
)
from web.link_callback import (
    BotFate,
    CallbackOutcome,
    CallbackResult,
    Cancelled,
    LinkCallback,
    Linked,
    NotStored,
    Refused,
    invite_is_open,
    parse_callback_params,
    start_url,
)
from web.oauth import InvalidClientError, InvalidGrantError
from web.params import ParameterError, parse_optional_snowflake
from web.rate_limit import client_address
from web.states import STATE_TTL, browser_cookie_name, is_token, new_token

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


def consent_url(settings: Settings, state: str, guild_id: int | None = None) -> str:
    """Discord's consent page for our application, asking for the configured scopes."""
    params = {
        "response_type": "code",
        "client_id": str(settings.client_id),
        "scope": " ".join(settings.scopes),
        "permissions": str(settings.permissions),
        "prompt": "consent",
        "redirect_uri": settings.redirect_uri,
        "state": state,
    }
    if guild_id is not None:
        params |= {"guild_id": str(guild_id), "disable_guild_select": "true"}
    # quote_via keeps spaces as %20, as Discord's own examples write the scope list.
    return f"{settings.authorize_url}?{urlencode(params, quote_via=quote)}"


@routes.get("/")
async def index(request: web.Request) -> web.Response:
    return request.app[PAGES].render("index.html")


def _unavailable(request: web.Request) -> web.Response | None:
    """A 'try again in a minute' page while Discord cannot be reached, or too many flows from this client."""
    if not request.app[BOT_STATUS].bot_status().discord_reachable:
        log.info("link.discord_unreachable path=%s", request.path)
        response = request.app[PAGES].error(
            503,
            "Please try again in a minute",
            "Discord cannot be reached from here right now, so it could not add the bot. Nothing was started.",
        )
        response.headers["Retry-After"] = "60"
        return response
    return _rate_limited(request)


def _rate_limited(request: web.Request) -> web.Response | None:
    """A 429 page for a client that opens flows faster than an admin could; None if it may go on."""
    limiter = request.app[RATE_LIMIT]
    wait = (
        limiter.retry_after(client_address(request, request.app[SETTINGS].trusted_proxies))
        if limiter is not None
        else 0
    )
    if not wait:
        return None
    log.info("link.rate_limited path=%s", request.path)
    response = request.app[PAGES].error(
        429, "Too many attempts", "Too many links were opened from here. Please wait a minute."
    )
    response.headers["Retry-After"] = str(int(wait) + 1)
    return response


def redirect_to_consent(request: web.Request, *, invite_token: str | None, guild_id: int | None) -> NoReturn:
    """Seal a state bound to this browser (cookie) and send the browser to Discord's consent page."""
    settings = request.app[SETTINGS]
    cookie = browser_cookie_name(settings.serves_https)
    browser_id = request.cookies.get(cookie)
    if not is_token(browser_id):
        browser_id = new_token()
    state = request.app[STATES].issue(browser_id, invite_token=invite_token)
    response = web.HTTPFound(consent_url(settings, state, guild_id))
    response.set_cookie(
        cookie,
        browser_id,
        max_age=int(STATE_TTL.total_seconds()),
        path="/",
        httponly=True,
        samesite="Lax",
        secure=settings.serves_https,
    )
    log.info("link.consent_started guild_hint=%s invite=%s", guild_id, invite_token is not None)
    raise response


@routes.get("/link")
async def link(request: web.Request) -> web.Response:
    if unavailable := _unavailable(request):
        return unavailable
    try:
        guild_id = parse_optional_snowflake(request.query.get("guild_id"), "guild_id")
    except ParameterError as exc:
        return request.app[PAGES].error(400, "Invalid server", str(exc), retry_url="/link")
    redirect_to_consent(request, invite_token=None, guild_id=guild_id)


@routes.get("/start/{invite}")
async def start_invite(request: web.Request) -> web.Response:
    """A backend's invite: bind a state to this browser; the invite is used up only when a link is stored.

    So a chat's link preview or a mail scanner that opens the URL first takes nothing away from the admin.
    """
    if unavailable := _unavailable(request):
        return unavailable
    invite_token = request.match_info["invite"]
    if not await invite_is_open(request.app[STORE], invite_token):
        # The page the callback shows for an invite used up meanwhile.
        return outcome_page(request.app, Refused(CallbackResult.INVITE_GONE, start_url(invite_token)))
    redirect_to_consent(request, invite_token=invite_token, guild_id=None)


@routes.get("/progress/{token}")
async def progress(request: web.Request) -> web.Response:
    """Counts of one guild's member sync, for the success page's script; nothing else."""
    guild_id = request.app[PROGRESS].guild_of(request.match_info["token"])
    if guild_id is None:
        return web.json_response(
            {"error": "not_found", "message": "Unknown or expired progress link."}, status=404
        )
    sync = await request.app[STORE].get_sync_state(guild_id)
    return web.json_response(progress_json(sync, datetime.now(UTC)))


def progress_json(sync: SyncState | None, now: datetime) -> dict[str, object]:
    """The success page's counts, and the seconds left while the sync waits for Discord's member-list window."""
    # Seconds rather than a time: the browser's clock may be off; ours decided the wait.
    waiting_seconds = None
    if sync is not None and sync.phase is SyncPhase.WAITING and sync.waiting_until is not None:
        waiting_seconds = max(0.0, round((sync.waiting_until - now).total_seconds(), 1))
    return {
        "state": sync.phase.value if sync else "pending",
        "members_stored": sync.members_stored if sync else 0,
        "member_count": sync.member_count if sync else None,
        "waiting_seconds": waiting_seconds,
    }


@dataclass(frozen=True, slots=True)
class CallbackPage:
    """How the callback answers one CallbackResult: status, /metrics' label, template and the page's words."""

    status: int
    label: str
    template: str = "error.html"
    heading: str = ""
    # None: the outcome's own detail (the malformed parameter's message, or Discord's public message).
    message: str | None = None
    # Whether the page offers to start again (same invite or a fresh /link); not where starting again is futile.
    offers_retry: bool = True


# One row per way a callback ends: the page's template and words, its HTTP status and /metrics' label.
CALLBACK_PAGES: dict[CallbackResult, CallbackPage] = {
    CallbackResult.LINKED: CallbackPage(200, "linked", "linked.html"),
    CallbackResult.CANCELLED: CallbackPage(200, "cancelled", "cancelled.html"),
    CallbackResult.BAD_PARAMETER: CallbackPage(400, "refused", heading="Invalid answer from Discord"),
    CallbackResult.STATE_MISSING: CallbackPage(
        400,
        "refused",
        heading="Please start again",
        message="This page needs the link Discord sends you back with.",
    ),
    CallbackResult.STATE_UNKNOWN: CallbackPage(
        400,
        "refused",
        heading="Please start again",
        message="This authorization was already used, or it is not one we started.",
    ),
    CallbackResult.STATE_EXPIRED: CallbackPage(
        400,
        "refused",
        heading="Please start again",
        message="This authorization took too long and has expired.",
    ),
    CallbackResult.STATE_OTHER_BROWSER: CallbackPage(
        400,
        "refused",
        heading="Please start again",
        message="This authorization was started in another browser. Please start again here.",
    ),
    CallbackResult.NO_CODE: CallbackPage(
        400, "refused", heading="Missing code", message="Discord's answer carried no authorization code."
    ),
    CallbackResult.INVITE_GONE: CallbackPage(
        400,
        "refused",
        heading="This link is no longer valid",
        message="It was already used to link a server, or it has expired. Ask for a new one where you got it.",
        offers_retry=False,
    ),
    CallbackResult.CODE_EXPIRED: CallbackPage(
        400, "refused", heading="This link has expired", message=InvalidGrantError.public_message
    ),
    CallbackResult.CLIENT_REFUSED: CallbackPage(
        502,
        "discord_error",
        heading="Configuration problem",
        message=InvalidClientError.public_message,
        offers_retry=False,
    ),
    CallbackResult.NO_GUILD: CallbackPage(
        400,
        "refused",
        heading="No server was chosen",
        message="Discord did not add the bot to a server. Please start again and pick a server.",
    ),
    CallbackResult.DISCORD_FAILED: CallbackPage(502, "discord_error", heading="Discord did not answer"),
    CallbackResult.GUILD_MISMATCH: CallbackPage(
        400,
        "refused",
        heading="Server mismatch",
        message="The server in the address does not match the one Discord authorized.",
    ),
    CallbackResult.INVITE_USED: CallbackPage(
        400,
        "refused",
        heading="This link is no longer valid",
        message="It was used to link another server, or it has expired.",
    ),
    CallbackResult.REF_CONFLICT: CallbackPage(
        409,
        "ref_conflict",
        heading="Already linked",
        message="This server is already linked for another account. Nothing was changed; "
        "ask whoever sent you this link to sort it out with us.",
    ),
    CallbackResult.STORE_UNAVAILABLE: CallbackPage(
        503,
        "unavailable",
        heading="Please try again in a minute",
        message="We could not record the link right now.",
    ),
    # The label is the status, as /metrics has always counted a failure nobody foresaw.
    CallbackResult.FAILED: CallbackPage(500, "500", heading="Something went wrong", message=""),
}

# What a page that stored nothing adds: where the bot is now.
BOT_FATES = {
    BotFate.STAYS: "Nothing was stored; the bot stays for the server's existing link.",
    BotFate.LEFT: "Nothing was stored, and the bot has left the server.",
    BotFate.NOT_LEFT: (
        "Nothing was stored, but the bot could not leave the server: "
        "remove it under Server Settings > Integrations."
    ),
}


async def authorize_callback(request: web.Request) -> web.Response:
    """Discord's redirect after consent: parse it, let LinkCallback decide, answer with the outcome's page."""
    app = request.app
    outcome: CallbackOutcome
    try:
        params = parse_callback_params(request.query)
    except ParameterError as exc:
        log.info("link.callback_refused parameter=%s", exc.parameter)
        outcome = Refused(CallbackResult.BAD_PARAMETER, start_url(None), str(exc))
    else:
        browser_id = request.cookies.get(browser_cookie_name(app[SETTINGS].serves_https))
        outcome = await _link_callback(app).answer(params, browser_id)
    response = outcome_page(app, outcome)
    app[METRICS].callbacks.labels(CALLBACK_PAGES[outcome.result].label).inc()
    return response


def _link_callback(app: web.Application) -> LinkCallback:
    # Built per callback: the OAuth client exists only while the app runs (cleanup_ctx), and this is cheap.
    return LinkCallback(
        states=app[STATES],
        oauth=app[OAUTH],
        store=app[STORE],
        linker=app[LINKER],
        abandoned_installs=app.get(UNCALLED_INSTALLS),
    )


def outcome_page(app: web.Application, outcome: CallbackOutcome) -> web.Response:
    """The outcome's row of CALLBACK_PAGES, rendered with what the outcome holds."""
    page = CALLBACK_PAGES[outcome.result]
    pages = app[PAGES]
    if isinstance(outcome, Linked):
        progress_url = f"/progress/{app[PROGRESS].issue(outcome.link.guild_id)}"
        return pages.render(page.template, status=page.status, link=outcome.link, progress_url=progress_url)
    if isinstance(outcome, Cancelled):
        return pages.render(page.template, status=page.status, retry_url=outcome.retry_url)
    message = outcome.detail if page.message is None else page.message
    if isinstance(outcome, NotStored):
        bot_left = outcome.bot is BotFate.LEFT
        log.info("link.not_stored guild=%d status=%d bot_left=%s", outcome.guild_id, page.status, bot_left)
        message = f"{message} {BOT_FATES[outcome.bot]}".strip()
    return pages.render(
        page.template,
        status=page.status,
        heading=page.heading,
        message=message,
        retry_url=outcome.retry_url if page.offers_retry else None,
    )
