"""One user's data on the backend's request: everything stored about them, and its erasure.

The backend answers Discord's Developer Policy (data deleted on request) and the Server Members intent's
review (a retention policy) with these; README's "Data we keep" says what each covers.
"""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from store import Link, ScrubReason, UserData
from web.feed import event_json, json_time
from web.keys import METRICS, STORE
from web.params import parse_snowflake

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

# An export lists at most this many of the user's events; `events_truncated` says there were more.
EXPORT_EVENT_LIMIT = 1000


def _link_json(link: Link) -> dict[str, Any]:
    """A link the user made, as far as it concerns them."""
    return {
        "guild_id": str(link.guild_id),
        "name": link.guild_name,
        "active": link.active,
        "linked_by": {"id": str(link.linked_by_id), "username": link.linked_by_username},
        "linked_at": json_time(link.linked_at),
    }


def user_data_json(data: UserData) -> dict[str, Any]:
    return {
        "user_id": str(data.user_id),
        "members": [
            {"guild_id": str(guild_id), "member": member.as_json()} for guild_id, member in data.members
        ],
        "links": [_link_json(link) for link in data.links],
        "events": [event_json(event) for event in data.events],
        "events_truncated": data.events_truncated,
    }


@routes.get("/api/users/{user_id}")
async def export_user(request: web.Request) -> web.Response:
    user_id = parse_snowflake(request.match_info["user_id"], "user_id")
    data = await request.app[STORE].export_user(user_id, event_limit=EXPORT_EVENT_LIMIT)
    return web.json_response(user_data_json(data))


@routes.delete("/api/users/{user_id}")
async def erase_user(request: web.Request) -> web.Response:
    user_id = parse_snowflake(request.match_info["user_id"], "user_id")
    erased = await request.app[STORE].erase_user(user_id)
    request.app[METRICS].events_scrubbed.labels(ScrubReason.ERASED.value).inc(erased.events_scrubbed)
    log.info(
        "users.erased user_id=%d guilds=%d members=%d events=%d",
        user_id,
        len(erased.guild_ids),
        erased.members_deleted,
        erased.events_scrubbed,
    )
    return web.json_response(
        {
            "user_id": str(user_id),
            "guild_ids": [str(guild_id) for guild_id in erased.guild_ids],
            "members_deleted": erased.members_deleted,
            "events_scrubbed": erased.events_scrubbed,
        }
    )
