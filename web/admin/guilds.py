"""The console's views of linked servers: the list with live sync state, one server's members, unlinking."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from printable import printable
from store import LinkedGuild, SyncPhase
from web.admin.respond import error_page, page, see_other
from web.keys import LINKER, SETTINGS, STORE
from web.params import ParameterError, parse_optional_snowflake, parse_snowflake
from web.rate_limit import client_address

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

PAGE_SIZE = 50
MAX_SEARCH_LENGTH = 100
# What the list says of each sync phase; the script shows the same words (sync.json carries them).
PHASE_LABELS = {
    SyncPhase.PENDING.value: "Waiting for the bot",
    SyncPhase.WAITING.value: "Waiting for Discord",
    SyncPhase.SYNCING.value: "Reading members",
    SyncPhase.SYNCED.value: "Synced",
    SyncPhase.FAILED.value: "Failed, retrying",
    SyncPhase.REMOVED.value: "Unlinked",
}


def sync_view(guild: LinkedGuild, now: datetime | None = None) -> dict[str, Any]:
    """A guild's sync as the list and its script show it; snowflakes as strings, as at every JSON edge."""
    now = now or datetime.now(UTC)
    sync = guild.sync
    phase = sync.phase.value if sync else SyncPhase.PENDING.value
    if not guild.link.active:
        phase = SyncPhase.REMOVED.value
    read = sync.members_stored if sync else 0
    expected = sync.member_count if sync else None
    # The bar: full once synced, a fraction while reading, indeterminate (value None) until a count is known.
    bar_value: int | None = None
    bar_max = 1
    detail = ""
    if phase == SyncPhase.SYNCED.value:
        bar_value = 1
    elif phase in (SyncPhase.SYNCING.value, SyncPhase.FAILED.value) and expected:
        bar_value, bar_max = min(read, expected), expected
        detail = f"{read:,} of {expected:,} read"
    elif phase in (SyncPhase.SYNCING.value, SyncPhase.FAILED.value):
        detail = f"{read:,} read"
    elif phase == SyncPhase.WAITING.value and sync is not None and sync.waiting_until is not None:
        # Discord's one whole-member-list request per guild per 30 s; the script's polls count it down.
        seconds = max(0, round((sync.waiting_until - now).total_seconds()))
        detail = f"member-list window opens in {seconds} s"
    return {
        "id": str(guild.link.guild_id),
        "state": phase,
        "label": PHASE_LABELS[phase],
        "detail": detail,
        "bar": phase != SyncPhase.REMOVED.value,
        "bar_value": bar_value,
        "bar_max": bar_max,
        "members_stored": guild.link.member_count,
        "error": (sync.error if sync else None) or "",
    }


@routes.get("/")
async def guild_list(request: web.Request) -> web.Response:
    guilds = await request.config_dict[STORE].list_linked_guilds()
    unlinked = None
    try:
        unlinked_id = parse_optional_snowflake(request.query.get("unlinked"), "unlinked")
    except ParameterError:
        unlinked_id = None
    if unlinked_id is not None:
        unlinked = next(
            (g.link for g in guilds if g.link.guild_id == unlinked_id and not g.link.active), None
        )
    return page(
        request,
        "guilds.html",
        guilds=[(guild, sync_view(guild)) for guild in guilds],
        active_count=sum(1 for guild in guilds if guild.link.active),
        unlinked=unlinked,
    )


@routes.get("/sync.json")
async def sync_json(request: web.Request) -> web.Response:
    """Every guild's sync state, polled by the list's script (the guard answers 401 without a session)."""
    guilds = await request.config_dict[STORE].list_linked_guilds()
    return web.json_response({"guilds": [sync_view(guild) for guild in guilds]})


async def _guild_or_error(request: web.Request) -> LinkedGuild | web.Response:
    try:
        guild_id = parse_snowflake(request.match_info["guild_id"], "guild_id")
    except ParameterError:
        return error_page(request, 404, "No such server", "That is not a server's id.")
    store = request.config_dict[STORE]
    link = await store.get_link(guild_id)
    if link is None:
        return error_page(request, 404, "No such server", f"No server {guild_id} was ever linked.")
    return LinkedGuild(link, await store.get_sync_state(guild_id))


@routes.get("/guilds/{guild_id}")
async def members(request: web.Request) -> web.Response:
    """One page of a server's members by user id, or of those whose name holds the search text."""
    guild = await _guild_or_error(request)
    if isinstance(guild, web.Response):
        return guild
    search = request.query.get("q", "").strip()
    try:
        after = parse_optional_snowflake(request.query.get("after") or None, "after") or 0
    except ParameterError as exc:
        return error_page(request, 400, "Invalid page", str(exc))
    if len(search) > MAX_SEARCH_LENGTH or not search.isprintable():
        return error_page(
            request, 400, "Invalid search", f"Search for up to {MAX_SEARCH_LENGTH} printable characters."
        )
    store, guild_id = request.config_dict[STORE], guild.link.guild_id
    # One more than a page tells whether a next page exists, without a count over the whole guild.
    if not guild.link.active:
        found = []
    elif search:
        found = list(await store.search_members(guild_id, search, after=after, limit=PAGE_SIZE + 1))
    else:
        found = list(await store.list_members(guild_id, after=after, limit=PAGE_SIZE + 1))
    shown = found[:PAGE_SIZE]
    return page(
        request,
        "members.html",
        guild=guild,
        sync=sync_view(guild),
        members=shown,
        search=search,
        paged=after > 0,
        next_after=str(shown[-1].user_id) if len(found) > PAGE_SIZE else None,
    )


@routes.get("/guilds/{guild_id}/unlink")
async def unlink_confirmation(request: web.Request) -> web.Response:
    guild = await _guild_or_error(request)
    if isinstance(guild, web.Response):
        return guild
    return page(request, "unlink.html", guild=guild)


@routes.post("/guilds/{guild_id}/unlink")
async def unlink(request: web.Request) -> web.Response:
    """The guard checked the form's CSRF token: the bot leaves, the link goes inactive, members are deleted."""
    guild = await _guild_or_error(request)
    if isinstance(guild, web.Response):
        return guild
    guild_id = guild.link.guild_id
    if guild.link.active:
        await request.config_dict[LINKER].guild_unlinked(guild_id)
        client = client_address(request, request.config_dict[SETTINGS].trusted_proxies)
        log.info("admin.guild_unlinked guild=%d client=%s", guild_id, printable(client))
    return see_other(f"/admin/?unlinked={guild_id}")
