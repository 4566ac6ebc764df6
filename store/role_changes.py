"""Role changes the backend asked for: the queue's records, its states and the events that announce them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from store.models import EventType

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


# The columns of a role_changes row, in the order `role_change_from_row` reads them (both engines).
ROLE_CHANGE_COLUMNS = (
    "id, guild_id, user_id, role_id, action, reason, status, error_code, error_reason, attempts, created_at,"
    " updated_at, applied_at, next_attempt_at"
)


def role_change_from_row(row: Sequence[Any], time: Callable[[Any], datetime]) -> RoleChange:
    """A RoleChange from a row of ROLE_CHANGE_COLUMNS; `time` reads the engine's times (text on SQLite)."""
    return RoleChange(
        id=row[0],
        guild_id=row[1],
        user_id=row[2],
        role_id=row[3],
        action=RoleAction(row[4]),
        reason=row[5],
        status=RoleChangeStatus(row[6]),
        error_code=row[7],
        error_reason=row[8],
        attempts=row[9],
        created_at=time(row[10]),
        updated_at=time(row[11]),
        applied_at=time(row[12]) if row[12] is not None else None,
        next_attempt_at=time(row[13]),
    )


def finished_event(status: RoleChangeStatus) -> EventType:
    """The event that announces a change recorded with `status` (applied or failed)."""
    return (
        EventType.ROLE_CHANGE_APPLIED if status is RoleChangeStatus.APPLIED else EventType.ROLE_CHANGE_FAILED
    )
