"""The backend's JSON API: linked guilds, their members, one-time consent links, unlinking."""

from __future__ import annotations

import hmac
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from store import Link, PendingState, Store
from web.keys import LINKER, SETTINGS, STORE
from web.middleware import json_error
from web.states import MAX_PENDING_STATES, new_token

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

OPENAPI_FILE = Path(__file__).parent / "openapi.json"
INVITE_TTL = timedelta(hours=1)
MAX_REF_LENGTH = 200


class ParameterError(Exception):
    """A request parameter is malformed; answered 400 naming it."""

    def __init__(self, parameter: str, message: str) -> None:
        super().__init__(message)
        self.parameter = parameter


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
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.encode(), api_token.reveal().encode()):
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


async def guild_json(store: Store, link: Link) -> dict[str, Any]:
    sync = await store.get_sync_state(link.guild_id)
    return {
        "id": str(link.guild_id),
        "name": link.guild_name,
        "ref": link.ref,
        "linked_by": {"id": str(link.linked_by_id), "username": link.linked_by_username},
        "linked_at": _time(link.linked_at),
        "active": link.active,
        "member_count": await store.count_members(link.guild_id),
        "sync": {
            "state": sync.phase.value if sync else "pending",
            "members_stored": sync.members_stored if sync else 0,
            "synced_at": _time(sync.synced_at) if sync else None,
            "error": sync.error if sync else None,
        },
    }


def _snowflake(raw: str, parameter: str) -> int:
    if not raw.isdigit() or len(raw) > 20 or int(raw) >= 2**63:
        raise ParameterError(parameter, f"{parameter} must be a Discord id (a string of digits).")
    return int(raw)


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise ParameterError(name, f"{name} must be a whole number from {low} to {high}.")
    return int(raw)


async def _link_or_404(request: web.Request) -> Link:
    guild_id = _snowflake(request.match_info["guild_id"], "guild_id")
    link = await request.app[STORE].get_link(guild_id)
    if link is None:
        raise web.HTTPNotFound(
            text=json.dumps({"error": "not_found", "message": f"No guild {guild_id} was ever linked."}),
            content_type="application/json",
        )
    return link


@routes.get("/api/guilds")
async def list_guilds(request: web.Request) -> web.Response:
    store = request.app[STORE]
    links = await store.list_links(ref=request.query.get("ref"))
    return web.json_response({"guilds": [await guild_json(store, link) for link in links]})


@routes.get("/api/guilds/{guild_id}")
async def get_guild(request: web.Request) -> web.Response:
    return web.json_response(await guild_json(request.app[STORE], await _link_or_404(request)))


@routes.get("/api/guilds/{guild_id}/members")
async def list_members(request: web.Request) -> web.Response:
    limit = _int_query(request, "limit", 100, 1, 1000)
    after = _snowflake(request.query["after"], "after") if "after" in request.query else 0
    link = await _link_or_404(request)
    members = await request.app[STORE].list_members(link.guild_id, after=after, limit=limit)
    body = {
        "members": [
            {
                "id": str(m.user_id),
                "username": m.username,
                "global_name": m.global_name,
                "nick": m.nick,
                "avatar": m.avatar,
                "bot": m.bot,
                "roles": [str(role) for role in m.roles],
                "joined_at": m.joined_at,
            }
            for m in members
        ],
        "next_after": str(members[-1].user_id) if len(members) == limit else None,
    }
    return web.json_response(body)


@routes.post("/api/links")
async def create_link(request: web.Request) -> web.Response:
    """A one-time link on our server that starts the consent flow for the backend's customer `ref`."""
    try:
        body = await request.json()
    except ValueError:
        raise ParameterError("body", 'The body must be JSON: {"ref": "..."}.') from None
    ref = body.get("ref") if isinstance(body, dict) else None
    if not isinstance(ref, str) or not 1 <= len(ref) <= MAX_REF_LENGTH:
        raise ParameterError("ref", f"ref must be a string of 1 to {MAX_REF_LENGTH} characters.")
    now = datetime.now(UTC)
    # An invite is a pending state not yet bound to a browser (empty hash); /start binds it.
    invite = PendingState(
        state=new_token(), browser_hash=b"", created_at=now, expires_at=now + INVITE_TTL, ref=ref
    )
    await request.app[STORE].add_pending_state(invite, limit=MAX_PENDING_STATES)
    url = f"{request.app[SETTINGS].public_base_url}/start/{invite.state}"
    log.info("api.link_created expires_at=%s", _time(invite.expires_at))
    return web.json_response({"url": url, "expires_at": _time(invite.expires_at)}, status=201)


@routes.delete("/api/guilds/{guild_id}")
async def unlink_guild(request: web.Request) -> web.Response:
    link = await _link_or_404(request)
    await request.app[LINKER].guild_unlinked(link.guild_id)
    unlinked = await request.app[STORE].get_link(link.guild_id)
    assert unlinked is not None
    return web.json_response(await guild_json(request.app[STORE], unlinked))


@routes.get("/api/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI_FILE.read_bytes(), content_type="application/json")
