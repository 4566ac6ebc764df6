"""The consent flow's pages: landing page, /link to Discord, and the /authorize-discord callback."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import NoReturn
from urllib.parse import quote, urlencode

from aiohttp import web

from config import Settings
from store import Link
from web.keys import LINKER, OAUTH, PAGES, PROGRESS, SETTINGS, STATES, STORE
from web.oauth import DiscordOAuthError, InvalidClientError, InvalidGrantError
from web.states import BROWSER_COOKIE, STATE_TTL, AcceptedState, StateProblem, is_browser_id, new_token

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


async def redirect_to_consent(request: web.Request, *, ref: str | None, guild_id: int | None) -> NoReturn:
    """Issue a state bound to this browser (cookie) and send the browser to Discord's consent page."""
    settings = request.app[SETTINGS]
    browser_id = request.cookies.get(BROWSER_COOKIE)
    if not is_browser_id(browser_id):
        browser_id = new_token()
    pending = await request.app[STATES].issue(browser_id, ref=ref)
    response = web.HTTPFound(consent_url(settings, pending.state, guild_id))
    response.set_cookie(
        BROWSER_COOKIE,
        browser_id,
        max_age=int(STATE_TTL.total_seconds()),
        path="/",
        httponly=True,
        samesite="Lax",
        secure=settings.serves_https,
    )
    log.info("link.consent_started guild_hint=%s ref=%s", guild_id, ref is not None)
    raise response


@routes.get("/link")
async def link(request: web.Request) -> web.Response:
    raw_guild = request.query.get("guild_id")
    if raw_guild is not None and not raw_guild.isdigit():
        return request.app[PAGES].error(
            400,
            "Invalid server",
            "guild_id must be a Discord server id (digits only).",
            offer_fresh_link=True,
        )
    await redirect_to_consent(request, ref=None, guild_id=int(raw_guild) if raw_guild else None)


@routes.get("/start/{invite}")
async def start_invite(request: web.Request) -> web.Response:
    """A one-time link from POST /api/links: bind a state to this browser, carrying the backend's ref."""
    invite = await request.app[STORE].take_pending_state(request.match_info["invite"])
    if invite is None or invite.browser_hash or invite.expires_at <= datetime.now(UTC):
        return request.app[PAGES].error(
            400,
            "This link is no longer valid",
            "It was already used or has expired. Ask for a new one where you got it.",
        )
    await redirect_to_consent(request, ref=invite.ref, guild_id=None)


@routes.get("/progress/{token}")
async def progress(request: web.Request) -> web.Response:
    """Counts of one guild's member sync, for the success page's script; nothing else."""
    guild_id = request.app[PROGRESS].guild_of(request.match_info["token"])
    if guild_id is None:
        return web.json_response(
            {"error": "not_found", "message": "Unknown or expired progress link."}, status=404
        )
    sync = await request.app[STORE].get_sync_state(guild_id)
    return web.json_response(
        {
            "state": sync.phase.value if sync else "pending",
            "members_stored": sync.members_stored if sync else 0,
            "member_count": sync.member_count if sync else None,
        }
    )


STATE_MESSAGES = {
    StateProblem.MISSING: "This page needs the link Discord sends you back with.",
    StateProblem.UNKNOWN: "This authorization was already used, or it is not one we started.",
    StateProblem.EXPIRED: "This authorization took too long and has expired.",
    StateProblem.OTHER_BROWSER: "This authorization was started in another browser. Please start again here.",
}


def _guild_hint(raw: str | None) -> int | None:
    return int(raw) if raw and raw.isdigit() else None


async def _complete_link(request: web.Request, accepted: AcceptedState, code: str) -> web.Response:
    pages = request.app[PAGES]
    oauth = request.app[OAUTH]
    try:
        grant = await oauth.exchange_code(code)
    except InvalidGrantError:
        return pages.error(
            400, "This link has expired", InvalidGrantError.public_message, offer_fresh_link=True
        )
    except InvalidClientError:
        return pages.error(502, "Configuration problem", InvalidClientError.public_message)
    except DiscordOAuthError as exc:
        return pages.error(502, "Discord did not answer", exc.public_message, offer_fresh_link=True)

    if grant.guild_id is None:
        log.warning("link.no_guild_in_token scopes=%s", " ".join(grant.scopes))
        return pages.error(
            400,
            "No server was chosen",
            "Discord did not add the bot to a server. Please start again and pick a server.",
            offer_fresh_link=True,
        )
    hint = request.query.get("guild_id")
    if hint is not None and _guild_hint(hint) != grant.guild_id:
        # The redirect's guild_id is only a hint; a mismatch means the URL was tampered with.
        log.warning("link.guild_mismatch token_guild=%d redirect_guild=%r", grant.guild_id, hint[:24])
        return pages.error(
            400,
            "Server mismatch",
            "The server in the address does not match the one Discord authorized. Nothing was stored.",
            offer_fresh_link=True,
        )

    try:
        user = await oauth.fetch_user(grant.access_token)
    except DiscordOAuthError as exc:
        return pages.error(502, "Discord did not answer", exc.public_message, offer_fresh_link=True)

    permissions = request.query.get("permissions", "")
    # The access token is dropped here: nothing we do needs it again.
    link = await request.app[STORE].save_link(
        Link(
            guild_id=grant.guild_id,
            guild_name=grant.guild_name or str(grant.guild_id),
            linked_by_id=user.id,
            linked_by_username=user.username,
            scopes=grant.scopes,
            permissions=int(permissions) if permissions.isdigit() else 0,
            linked_at=datetime.now(UTC),
            ref=accepted.ref,
        )
    )
    log.info("link.saved guild=%d user=%d", link.guild_id, link.linked_by_id)
    try:
        await request.app[LINKER].guild_linked(link)
    except Exception:
        # The link is committed; the bot picks every active link up again at start-up.
        log.exception("link.handoff_failed guild=%d", link.guild_id)
    progress_url = f"/progress/{request.app[PROGRESS].issue(link.guild_id)}"
    return pages.render("linked.html", link=link, progress_url=progress_url)


async def authorize_callback(request: web.Request) -> web.Response:
    """Discord's redirect after consent: check the state, exchange the code, store the link."""
    pages = request.app[PAGES]
    accepted = await request.app[STATES].accept(
        request.query.get("state"), request.cookies.get(BROWSER_COOKIE)
    )
    if isinstance(accepted, StateProblem):
        log.info("link.state_refused reason=%s", accepted.name)
        return pages.error(400, "Please start again", STATE_MESSAGES[accepted], offer_fresh_link=True)

    if "error" in request.query:
        log.info("link.consent_declined error=%r", request.query["error"][:64])
        return pages.render("cancelled.html")

    code = request.query.get("code")
    if not code:
        return pages.error(
            400, "Missing code", "Discord's answer carried no authorization code.", offer_fresh_link=True
        )
    return await _complete_link(request, accepted, code)
