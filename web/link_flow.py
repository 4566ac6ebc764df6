"""The consent flow's pages: landing page, /link and /start to Discord, and the /authorize-discord callback."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NoReturn
from urllib.parse import quote, urlencode

from aiohttp import web

from config import Settings
from store import InviteUnusableError, Link, RefConflictError, StoreUnavailableError, SyncPhase, SyncState
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
from web.oauth import DiscordOAuthError, InvalidClientError, InvalidGrantError, TokenGrant
from web.params import ParameterError, parse_optional_snowflake, parse_whole_number
from web.rate_limit import client_address
from web.states import (
    STATE_TTL,
    AcceptedState,
    StateProblem,
    browser_cookie_name,
    is_token,
    new_token,
    token_hash,
)

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

# Discord's codes are 30 characters; anything much longer is not a code.
MAX_CODE_LENGTH = 256


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


def start_url(invite_token: str | None) -> str:
    """Where a flow starts again: the same invite (its ref kept) or a fresh /link."""
    return f"/start/{invite_token}" if invite_token else "/link"


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


async def _open_invite(request: web.Request, invite_token: str | None) -> bool:
    if not is_token(invite_token):
        return False
    invite = await request.app[STORE].get_invite(token_hash(invite_token))
    return invite is not None and invite.is_open(datetime.now(UTC))


def _invite_gone(request: web.Request) -> web.Response:
    return request.app[PAGES].error(
        400,
        "This link is no longer valid",
        "It was already used to link a server, or it has expired. Ask for a new one where you got it.",
    )


@routes.get("/start/{invite}")
async def start_invite(request: web.Request) -> web.Response:
    """A backend's invite: bind a state to this browser; the invite is used up only when a link is stored.

    So a chat's link preview or a mail scanner that opens the URL first takes nothing away from the admin.
    """
    if unavailable := _unavailable(request):
        return unavailable
    invite_token = request.match_info["invite"]
    if not await _open_invite(request, invite_token):
        return _invite_gone(request)
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


STATE_MESSAGES = {
    StateProblem.MISSING: "This page needs the link Discord sends you back with.",
    StateProblem.UNKNOWN: "This authorization was already used, or it is not one we started.",
    StateProblem.EXPIRED: "This authorization took too long and has expired.",
    StateProblem.OTHER_BROWSER: "This authorization was started in another browser. Please start again here.",
}


@dataclass(frozen=True, slots=True)
class CallbackParams:
    """The callback's query, checked before anything is used up, exchanged or stored."""

    state: str | None
    code: str | None
    error: str | None
    guild_hint: int | None
    permissions: int


def _callback_params(request: web.Request) -> CallbackParams:
    query = request.query
    code = query.get("code")
    if code is not None and (len(code) > MAX_CODE_LENGTH or not code.isascii() or not code.isprintable()):
        raise ParameterError("code", "code is not an authorization code Discord issues.")
    permissions = query.get("permissions")
    return CallbackParams(
        state=query.get("state"),
        code=code,
        error=query.get("error"),
        guild_hint=parse_optional_snowflake(query.get("guild_id"), "guild_id"),
        permissions=0 if permissions is None else parse_whole_number(permissions, "permissions"),
    )


# /metrics' label for a callback's answer.
CALLBACK_OUTCOMES = {
    200: "linked",
    400: "refused",
    409: "ref_conflict",
    502: "discord_error",
    503: "unavailable",
}


async def authorize_callback(request: web.Request) -> web.Response:
    """Discord's redirect after consent: check parameters and state, exchange the code, store the link."""
    response = await _answer_callback(request)
    outcome = "cancelled" if response.status == 200 and "error" in request.query else None
    request.app[METRICS].callbacks.labels(
        outcome or CALLBACK_OUTCOMES.get(response.status, str(response.status))
    ).inc()
    return response


async def _answer_callback(request: web.Request) -> web.Response:
    pages = request.app[PAGES]
    try:
        params = _callback_params(request)
    except ParameterError as exc:
        log.info("link.callback_refused parameter=%s", exc.parameter)
        return pages.error(400, "Invalid answer from Discord", str(exc), retry_url="/link")
    cookie = browser_cookie_name(request.app[SETTINGS].serves_https)
    accepted = await request.app[STATES].accept(params.state, request.cookies.get(cookie))
    if isinstance(accepted, StateProblem):
        log.info("link.state_refused reason=%s", accepted.name)
        return pages.error(400, "Please start again", STATE_MESSAGES[accepted], retry_url="/link")
    retry_url = start_url(accepted.invite_token)

    if params.error is not None:
        log.info("link.consent_declined error=%r", params.error[:64])
        return pages.render("cancelled.html", retry_url=retry_url)
    if not params.code:
        return pages.error(
            400, "Missing code", "Discord's answer carried no authorization code.", retry_url=retry_url
        )
    if accepted.invite_token is not None and not await _open_invite(request, accepted.invite_token):
        return _invite_gone(request)
    return await _complete_link(request, accepted, params, params.code, retry_url)


async def _complete_link(
    request: web.Request, accepted: AcceptedState, params: CallbackParams, code: str, retry_url: str
) -> web.Response:
    pages = request.app[PAGES]
    try:
        grant = await request.app[OAUTH].exchange_code(code)
    except InvalidGrantError:
        return pages.error(
            400, "This link has expired", InvalidGrantError.public_message, retry_url=retry_url
        )
    except InvalidClientError:
        return pages.error(502, "Configuration problem", InvalidClientError.public_message)
    except DiscordOAuthError as exc:
        return pages.error(502, "Discord did not answer", exc.public_message, retry_url=retry_url)

    if grant.guild_id is None:
        log.warning("link.no_guild_in_token scopes=%s", " ".join(grant.scopes))
        return pages.error(
            400,
            "No server was chosen",
            "Discord did not add the bot to a server. Please start again and pick a server.",
            retry_url=retry_url,
        )
    # From here on Discord has added the bot to grant.guild_id: either the link is stored, or the bot leaves.
    try:
        link = await _store_link(request, accepted, params, grant)
    except _LinkNotStored as refused:
        return await _abandon(request, grant.guild_id, refused, retry_url)
    except Exception:
        log.exception("link.failed_after_exchange guild=%d", grant.guild_id)
        return await _abandon(
            request, grant.guild_id, _LinkNotStored(500, "Something went wrong", ""), retry_url
        )
    log.info("link.saved guild=%d user=%d", link.guild_id, link.linked_by_id)
    try:
        # Never waits on the gateway: the bot picks the sync up in its own time.
        await request.app[LINKER].guild_linked(link)
    except Exception:
        # The link is committed; the bot picks every active link up again at start-up.
        log.exception("link.handoff_failed guild=%d", link.guild_id)
    progress_url = f"/progress/{request.app[PROGRESS].issue(link.guild_id)}"
    return pages.render("linked.html", link=link, progress_url=progress_url)


class _LinkNotStored(Exception):
    """The exchange succeeded but no link may be stored; what the admin's page says."""

    def __init__(self, status: int, heading: str, message: str, *, keeps_bot: bool = False) -> None:
        super().__init__(heading)
        self.status = status
        self.heading = heading
        self.message = message
        self.keeps_bot = keeps_bot


async def _store_link(
    request: web.Request, accepted: AcceptedState, params: CallbackParams, grant: TokenGrant
) -> Link:
    assert grant.guild_id is not None
    if params.guild_hint is not None and params.guild_hint != grant.guild_id:
        # The redirect's guild_id is only a hint; a mismatch means the URL was tampered with.
        log.warning("link.guild_mismatch token_guild=%d redirect_guild=%d", grant.guild_id, params.guild_hint)
        raise _LinkNotStored(
            400, "Server mismatch", "The server in the address does not match the one Discord authorized."
        )
    try:
        user = await request.app[OAUTH].fetch_user(grant.access_token)
    except DiscordOAuthError as exc:
        raise _LinkNotStored(502, "Discord did not answer", exc.public_message) from exc
    store = request.app[STORE]
    invite = await store.get_invite(token_hash(accepted.invite_token)) if accepted.invite_token else None
    # The access token is dropped here: nothing we do needs it again.
    try:
        return await store.save_link(
            Link(
                guild_id=grant.guild_id,
                guild_name=grant.guild_name or str(grant.guild_id),
                linked_by_id=user.id,
                linked_by_username=user.username,
                scopes=grant.scopes,
                permissions=params.permissions,
                linked_at=datetime.now(UTC),
                ref=invite.ref if invite else None,
            ),
            invite_hash=invite.token_hash if invite else None,
        )
    except InviteUnusableError as exc:
        raise _LinkNotStored(
            400, "This link is no longer valid", "It was used to link another server, or it has expired."
        ) from exc
    except RefConflictError as exc:
        log.warning("link.ref_conflict guild=%d: linked for another ref, left unchanged", grant.guild_id)
        raise _LinkNotStored(
            409,
            "Already linked",
            "This server is already linked for another account. Nothing was changed; "
            "ask whoever sent you this link to sort it out with us.",
            keeps_bot=True,
        ) from exc
    except StoreUnavailableError as exc:
        raise _LinkNotStored(
            503, "Please try again in a minute", "We could not record the link right now."
        ) from exc


async def _leave_abandoned(request: web.Request, guild_id: int) -> bool:
    """Make the bot leave; Discord's event of this install (DISCORD_PUBLIC_KEY) must then not link it either."""
    if UNCALLED_INSTALLS in request.app:
        request.app[UNCALLED_INSTALLS].callback_abandoned(guild_id)
    return await request.app[LINKER].guild_abandoned(guild_id)


async def _abandon(
    request: web.Request, guild_id: int, refused: _LinkNotStored, retry_url: str
) -> web.Response:
    """No link was stored: leave the guild (unless an earlier link keeps the bot there) and say which."""
    store = request.app[STORE]
    try:
        existing = await store.get_link(guild_id)
    except StoreUnavailableError:
        existing = None
    if refused.keeps_bot or (existing is not None and existing.active):
        outcome = "Nothing was stored; the bot stays for the server's existing link."
    elif await _leave_abandoned(request, guild_id):
        outcome = "Nothing was stored, and the bot has left the server."
    else:
        outcome = (
            "Nothing was stored, but the bot could not leave the server: "
            "remove it under Server Settings > Integrations."
        )
    log.info("link.not_stored guild=%d status=%d bot_left=%s", guild_id, refused.status, "left" in outcome)
    message = f"{refused.message} {outcome}".strip()
    return request.app[PAGES].error(refused.status, refused.heading, message, retry_url=retry_url)
