"""The API's role write-back: queue a role change for a member (202), then follow it to applied or failed."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from store import MAX_AUDIT_REASON, RoleAction, RoleChange, RoleChangeRequest, RoleChangeStatus
from web.feed import json_time
from web.keys import STORE
from web.middleware import json_error
from web.params import ParameterError, parse_snowflake, parse_whole_number

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

AUDIT_REASON_HEADER = "X-Audit-Log-Reason"
CHANGE_PATH = "/api/role-changes/{change_id}"


def role_change_json(change: RoleChange) -> dict[str, Any]:
    """A role change as the API shows it (snowflakes and the change's id as strings)."""
    failed = change.status is RoleChangeStatus.FAILED
    return {
        "id": str(change.id),
        "guild_id": str(change.guild_id),
        "user_id": str(change.user_id),
        "role_id": str(change.role_id),
        "action": change.action.value,
        "status": change.status.value,
        "reason": change.reason,
        "attempts": change.attempts,
        "error": {"code": change.error_code, "reason": change.error_reason} if failed else None,
        "created_at": json_time(change.created_at),
        "updated_at": json_time(change.updated_at),
        "applied_at": json_time(change.applied_at) if change.applied_at else None,
    }


def audit_reason(request: web.Request) -> str | None:
    """X-Audit-Log-Reason, percent-decoded as Discord reads it; 1 to 512 printable characters once decoded."""
    raw = request.headers.get(AUDIT_REASON_HEADER)
    if raw is None:
        return None
    message = (
        f"{AUDIT_REASON_HEADER} must be 1 to {MAX_AUDIT_REASON} printable characters, anything beyond"
        " printable ASCII percent-encoded as UTF-8."
    )
    if not raw.isascii():
        raise ParameterError(AUDIT_REASON_HEADER, message)
    try:
        reason = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise ParameterError(AUDIT_REASON_HEADER, message) from None
    if not 1 <= len(reason) <= MAX_AUDIT_REASON or not reason.isprintable():
        raise ParameterError(AUDIT_REASON_HEADER, message)
    return reason


async def _queue(request: web.Request, action: RoleAction) -> web.Response:
    asked = RoleChangeRequest(
        guild_id=parse_snowflake(request.match_info["guild_id"], "guild_id"),
        user_id=parse_snowflake(request.match_info["user_id"], "user_id"),
        role_id=parse_snowflake(request.match_info["role_id"], "role_id"),
        action=action,
        reason=audit_reason(request),
    )
    change = await request.app[STORE].queue_role_change(asked)
    if change is None:
        return json_error(404, "not_found", f"Guild {asked.guild_id} is not linked.")
    log.info(
        "api.role_change_queued id=%d guild=%d user=%d role=%d action=%s",
        change.id,
        change.guild_id,
        change.user_id,
        change.role_id,
        change.action.value,
    )
    response = web.json_response(role_change_json(change), status=202)
    response.headers["Location"] = CHANGE_PATH.format(change_id=change.id)
    return response


@routes.put("/api/guilds/{guild_id}/members/{user_id}/roles/{role_id}")
async def add_role(request: web.Request) -> web.Response:
    """Queue giving the member the role; a repeat while that change is pending returns it."""
    return await _queue(request, RoleAction.ADD)


@routes.delete("/api/guilds/{guild_id}/members/{user_id}/roles/{role_id}")
async def remove_role(request: web.Request) -> web.Response:
    """Queue taking the role from the member; a repeat while that change is pending returns it."""
    return await _queue(request, RoleAction.REMOVE)


@routes.get(CHANGE_PATH)
async def get_role_change(request: web.Request) -> web.Response:
    change_id = parse_whole_number(request.match_info["change_id"], "change_id")
    change = await request.app[STORE].get_role_change(change_id)
    if change is None:
        return json_error(404, "not_found", f"No role change {change_id} was ever queued.")
    return web.json_response(role_change_json(change))
