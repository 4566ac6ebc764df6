"""The backend's JSON API: linked guilds, their members, one-time consent links, unlinking, the event feed."""

from __future__ import annotations

import hmac
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from store import Invite, LinkedGuild, SyncPhase
from web.feed import EventsPrunedError, event_json, parse_event_types, read_page
from web.keys import LINKER, SETTINGS, STORE
from web.middleware import json_error
from web.params import ParameterError, parse_snowflake, parse_whole_number
from web.states import new_token, token_hash

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

OPENAPI_FILE = Path(__file__).parent / "openapi.json"
INVITE_TTL = timedelta(hours=1)
# Open invites are bounded apart from everything else: only the authenticated backend makes them.
MAX_OPEN_INVITES = 10_000
MAX_REF_LENGTH = 200
MAX_BODY_BYTES = 4096


@web.middleware
async def api_auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Bearer API_TOKEN on /api/* (compared in constant time); the OpenAPI document is public."""
    if not request.path.startswith("/api/") or request.path == "/api/openapi.json":
        return await handler(request)
    api_token = request.app[SETTINGS].api_token
    if api_token is None:
        return json_error(
            503, "api_disabled", "The API is off: set API_TOKEN (32 or more random characters) and restart."
        )
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        presented.encode(errors="replace"), api_token.reveal().encode()
    ):
        response = json_error(401, "unauthorized", "Send Authorization: Bearer <API_TOKEN>.")
        response.headers["WWW-Authenticate"] = 'Bearer realm="guildlink"'
        return response
    try:
        return await handler(request)
    except ParameterError as exc:
        return web.json_response(
            {"error": "invalid_parameter", "parameter": exc.parameter, "message": str(exc)}, status=400
        )


def _time(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def guild_json(guild: LinkedGuild) -> dict[str, Any]:
    link, sync = guild.link, guild.sync
    return {
        "id": str(link.guild_id),
        "name": link.guild_name,
        "ref": link.ref,
        "linked_by": {"id": str(link.linked_by_id), "username": link.linked_by_username},
        "linked_at": _time(link.linked_at),
        "active": link.active,
        "source": link.source.value,
        "member_count": link.member_count,
        "sync": {
            "state": sync.phase.value if sync else "pending",
            "members_stored": sync.members_stored if sync else 0,
            "synced_at": _time(sync.synced_at) if sync else None,
            "error": sync.error if sync else None,
            "held_removals": sync.held_removals if sync and sync.phase is SyncPhase.HELD else None,
        },
    }


def _guild_id(request: web.Request) -> int:
    return parse_snowflake(request.match_info["guild_id"], "guild_id")


def _not_found(guild_id: int) -> web.HTTPNotFound:
    return web.HTTPNotFound(
        text=json.dumps({"error": "not_found", "message": f"No guild {guild_id} was ever linked."}),
        content_type="application/json",
    )


async def _linked_guild_or_404(request: web.Request, guild_id: int) -> LinkedGuild:
    store = request.app[STORE]
    link = await store.get_link(guild_id)
    if link is None:
        raise _not_found(guild_id)
    return LinkedGuild(link, await store.get_sync_state(guild_id))


@routes.get("/api/guilds")
async def list_guilds(request: web.Request) -> web.Response:
    guilds = await request.app[STORE].list_linked_guilds(ref=request.query.get("ref"))
    return web.json_response({"guilds": [guild_json(guild) for guild in guilds]})


@routes.get("/api/guilds/{guild_id}")
async def get_guild(request: web.Request) -> web.Response:
    return web.json_response(guild_json(await _linked_guild_or_404(request, _guild_id(request))))


@routes.get("/api/guilds/{guild_id}/members")
async def list_members(request: web.Request) -> web.Response:
    guild_id = _guild_id(request)
    raw_limit = request.query.get("limit")
    limit = 100 if raw_limit is None else parse_whole_number(raw_limit, "limit", low=1, high=1000)
    raw_after = request.query.get("after")
    after = 0 if raw_after is None else parse_snowflake(raw_after, "after")
    link = await request.app[STORE].get_link(guild_id)
    if link is None:
        raise _not_found(guild_id)
    # An inactive link keeps no members; say so rather than serve what a racing write might have left.
    members = await request.app[STORE].list_members(guild_id, after=after, limit=limit) if link.active else []
    body = {
        "members": [m.as_json() for m in members],
        "next_after": str(members[-1].user_id) if len(members) == limit else None,
    }
    return web.json_response(body)


@routes.post("/api/links")
async def create_link(request: web.Request) -> web.Response:
    """A one-time link on our server that starts the consent flow for the backend's customer `ref`."""
    ref = _ref_from_body(await _small_body(request))
    now = datetime.now(UTC)
    token = new_token()
    invite = Invite(token_hash=token_hash(token), ref=ref, created_at=now, expires_at=now + INVITE_TTL)
    if not await request.app[STORE].add_invite(invite, limit=MAX_OPEN_INVITES):
        return json_error(
            429,
            "too_many_invites",
            f"{MAX_OPEN_INVITES:,} invites are open; wait for some to be used or expire.",
        )
    url = f"{request.app[SETTINGS].public_base_url}/start/{token}"
    log.info("api.link_created expires_at=%s", _time(invite.expires_at))
    return web.json_response({"url": url, "expires_at": _time(invite.expires_at)}, status=201)


async def _small_body(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ParameterError("body", f"The body must be at most {MAX_BODY_BYTES} bytes.")
    body = await request.content.read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        raise ParameterError("body", f"The body must be at most {MAX_BODY_BYTES} bytes.")
    return body


def _ref_from_body(body: bytes) -> str:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        raise ParameterError("body", 'The body must be JSON: {"ref": "..."}.') from None
    ref = data.get("ref") if isinstance(data, dict) else None
    if (
        not isinstance(ref, str)
        or not 1 <= len(ref) <= MAX_REF_LENGTH
        # Also refuses a lone surrogate (JSON allows "\ud800"), which no database or page can take.
        or not ref.isprintable()
    ):
        raise ParameterError("ref", f"ref must be 1 to {MAX_REF_LENGTH} printable characters.")
    return ref


@routes.delete("/api/guilds/{guild_id}")
async def unlink_guild(request: web.Request) -> web.Response:
    guild_id = _guild_id(request)
    if await request.app[STORE].get_link(guild_id) is None:
        raise _not_found(guild_id)
    await request.app[LINKER].guild_unlinked(guild_id)
    return web.json_response(guild_json(await _linked_guild_or_404(request, guild_id)))


@routes.post("/api/guilds/{guild_id}/sync/confirm")
async def confirm_held_removals(request: web.Request) -> web.Response:
    """Apply a held resync's removals (each announced as member.left); 409 unless the guild's sync is held."""
    guild_id = _guild_id(request)
    store = request.app[STORE]
    if await store.get_link(guild_id) is None:
        raise _not_found(guild_id)
    outcome = await store.confirm_held_removals(guild_id)
    if outcome is None:
        return json_error(409, "not_held", f"Guild {guild_id} has no held removals to confirm.")
    log.info("api.held_removals_confirmed guild=%d removed=%d", guild_id, outcome.removed)
    body = guild_json(await _linked_guild_or_404(request, guild_id))
    return web.json_response({"removed": outcome.removed, "guild": body})


@routes.get("/api/events")
async def list_events(request: web.Request) -> web.Response:
    """The feed after a cursor, oldest first; `next_after` is the cursor to ask with next."""
    raw_limit = request.query.get("limit")
    limit = 100 if raw_limit is None else parse_whole_number(raw_limit, "limit", low=1, high=1000)
    raw_after = request.query.get("after")
    after = 0 if raw_after is None else parse_whole_number(raw_after, "after")
    raw_types = request.query.get("types")
    types = None if raw_types is None else parse_event_types(raw_types, "types")
    try:
        page = await read_page(request.app[STORE], after=after, limit=limit, types=types)
    except EventsPrunedError as exc:
        return _events_pruned(request, exc)
    return web.json_response(
        {
            "events": [event_json(event) for event in page.events],
            "next_after": str(page.next_after),
            "has_more": page.has_more,
        }
    )


def _events_pruned(request: web.Request, exc: EventsPrunedError) -> web.Response:
    """410: the reader missed events for good; it must rebuild what it keeps, then read on from the oldest kept."""
    days = request.app[SETTINGS].event_retention_days
    log.warning("api.events_pruned after=%d pruned_up_to=%d", exc.after, exc.pruned_up_to)
    return web.json_response(
        {
            "error": "events_pruned",
            "message": (
                f"The events after {exc.after} up to {exc.pruned_up_to} were deleted: the feed keeps"
                f" {days} days (EVENT_RETENTION_DAYS). Re-read the guilds and members you keep from"
                f" /api/guilds, then ask with after={exc.pruned_up_to}."
            ),
            "pruned_up_to": str(exc.pruned_up_to),
            "next_after": str(exc.pruned_up_to),
            "retention_days": days,
        },
        status=410,
    )


@routes.get("/api/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI_FILE.read_bytes(), content_type="application/json")
