"""The console's views of linked servers: the list with live sync state, one server's members, unlinking."""

from __future__ import annotations

import logging
import math
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
# A server's latest role changes shown on its page.
ROLE_CHANGES_SHOWN = 20
MAX_SEARCH_LENGTH = 100
# What the list says of each sync phase; the script shows the same words (sync.json carries them).
PHASE_LABELS = {
    SyncPhase.PENDING.value: "Waiting for the bot",
    SyncPhase.WAITING.value: "Waiting for Discord",
    SyncPhase.SYNCING.value: "Reading members",
    SyncPhase.SYNCED.value: "Synced",
    SyncPhase.FAILED.value: "Failed, retrying",
    SyncPhase.HELD.value: "Held: removals await confirmation",
    SyncPhase.REMOVED.value: "Unlinked",
}


def sync_view(guild: LinkedGuild) -> dict[str, Any]:
    """A guild's sync as the list and its script show it; snowflakes as strings, as at every JSON edge."""
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
        seconds = max(0, math.ceil((sync.waiting_until - datetime.now(UTC)).total_seconds()))
        detail = f"member list in {seconds} s"
    elif phase == SyncPhase.HELD.value and sync is not None:
        bar_value = 1
        detail = f"{sync.held_removals or 0:,} would leave"
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
        "held_removals": (sync.held_removals or 0) if sync and phase == SyncPhase.HELD.value else 0,
    }


@routes.get("/")
async def guild_list(request: web.Request) -> web.Response:
    """One page of the linked servers by guild id: 20,000 links on one page made 21.9 MB of HTML."""
    try:
        after = parse_optional_snowflake(request.query.get("after") or None, "after") or 0
    except ParameterError as exc:
        return error_page(request, 400, "Invalid page", str(exc))
    store = request.config_dict[STORE]
    found = await store.page_linked_guilds(after=after, limit=PAGE_SIZE + 1)
    shown = found[:PAGE_SIZE]
    counts = await store.count_links()
    unlinked = None
    try:
        unlinked_id = parse_optional_snowflake(request.query.get("unlinked"), "unlinked")
    except ParameterError:
        unlinked_id = None
    if unlinked_id is not None and (link := await store.get_link(unlinked_id)) and not link.active:
        unlinked = link
    return page(
        request,
        "guilds.html",
        guilds=[(guild, sync_view(guild)) for guild in shown],
        total=counts.total,
        active_count=counts.active,
        unlinked=unlinked,
        paged=after > 0,
        next_after=str(shown[-1].link.guild_id) if len(found) > PAGE_SIZE else None,
    )


@routes.get("/sync.json")
async def sync_json(request: web.Request) -> web.Response:
    """The sync state of the guilds of one page of the list (`after` as the list's), polled by its script
    (the guard answers 401 without a session)."""
    try:
        after = parse_optional_snowflake(request.query.get("after") or None, "after") or 0
    except ParameterError as exc:
        return web.json_response({"error": "invalid_parameter", "message": str(exc)}, status=400)
    guilds = await request.config_dict[STORE].page_linked_guilds(after=after, limit=PAGE_SIZE)
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
        role_changes=await store.list_role_changes(guild_id, limit=ROLE_CHANGES_SHOWN)
        if guild.link.active
        else [],
    )


@routes.post("/guilds/{guild_id}/sync/confirm")
async def confirm_held_removals(request: web.Request) -> web.Response:
    """The guard checked the form's CSRF token: a held resync's removals are applied and announced."""
    guild = await _guild_or_error(request)
    if isinstance(guild, web.Response):
        return guild
    guild_id = guild.link.guild_id
    outcome = await request.config_dict[STORE].confirm_held_removals(guild_id)
    if outcome is not None:
        client = client_address(request, request.config_dict[SETTINGS].trusted_proxies)
        log.info(
            "admin.held_removals_confirmed guild=%d removed=%d client=%s",
            guild_id,
            outcome.removed,
            printable(client),
        )
    # Nothing held any more (confirmed meanwhile, or a resync cleared it): the page shows the state as it is.
    return see_other(f"/admin/guilds/{guild_id}")


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
