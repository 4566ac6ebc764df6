"""Role changes the backend asked for: the queue's records, its states and the events that announce them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

# Discord's limit on X-Audit-Log-Reason.
MAX_AUDIT_REASON = 512


class RoleAction(StrEnum):
    ADD = "add"
    REMOVE = "remove"


class RoleChangeStatus(StrEnum):
    PENDING = "pending"
    APPLIED = "applied"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class RoleChangeRequest:
    """What the backend asked: give (`add`) or take (`remove`) one role of one member, with an audit reason."""

    guild_id: int
    user_id: int
    role_id: int
    action: RoleAction
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class RoleChange:
    """One queued role change and how far it has come; `error_code` is Discord's (None: not Discord's)."""

    id: int
    guild_id: int
    user_id: int
    role_id: int
    action: RoleAction
    reason: str | None
    status: RoleChangeStatus
    error_code: int | None
    error_reason: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    applied_at: datetime | None
    # When a retry is due (a 5xx or 429 answered it last).
    next_attempt_at: datetime


@dataclass(frozen=True, slots=True)
class RoleChangeOutcome:
    """How one attempt ended: applied, failed for good (with Discord's code and a plain reason)."""

    status: RoleChangeStatus
    error_code: int | None = None
    error_reason: str | None = None


def role_change_event_data(change: RoleChange) -> dict[str, Any]:
    """role_change.queued's, .applied's and .failed's data (the guild is the event's own)."""
    failed = change.status is RoleChangeStatus.FAILED
    return {
        "id": str(change.id),
        "user_id": str(change.user_id),
        "role_id": str(change.role_id),
        "action": change.action.value,
        "status": change.status.value,
        "error": {"code": change.error_code, "reason": change.error_reason} if failed else None,
    }
