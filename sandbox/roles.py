"""Role writes on members (Add/Remove Guild Member Role): Discord's checks, the record of writes, silent successes."""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import NamedTuple

from .world import ADMINISTRATOR, MANAGE_ROLES, Guild

log = logging.getLogger(__name__)

# Role writes kept per guild for tests and the controls to read back.
ROLE_WRITES_KEPT = 200


class Refusal(NamedTuple):
    """Discord's error for a role write it refuses: HTTP status, JSON error code, message."""

    status: int
    code: int
    message: str


UNKNOWN_MEMBER = Refusal(404, 10007, "Unknown Member")
UNKNOWN_ROLE = Refusal(404, 10011, "Unknown Role")
MISSING_PERMISSIONS = Refusal(403, 50013, "Missing Permissions")


class RoleWriteOutcome(NamedTuple):
    """What a role write did: refused (and why), changed the member, or answered 204 and did nothing."""

    refusal: Refusal | None
    changed: bool
    silent: bool


@dataclass
class RoleWrite:
    """One role write the bot sent: what it asked, what it was answered, and whether the member changed."""

    method: str
    user_id: int
    role_id: int
    status: int
    code: int | None
    reason: str | None
    changed: bool
    # Answered 204 but did nothing (an injected silent success).
    silent: bool
    time: float

    def as_json(self) -> dict[str, object]:
        """The record as the controls show it (snowflakes as strings)."""
        return {
            "method": self.method,
            "user_id": str(self.user_id),
            "role_id": str(self.role_id),
            "status": self.status,
            "code": self.code,
            "reason": self.reason,
            "changed": self.changed,
            "silent": self.silent,
            "time": self.time,
        }


def refusal(guild: Guild, bot_user_id: int, user_id: int, role_id: int) -> Refusal | None:
    """Why Discord would refuse this bot's write of `role_id` on `user_id`, or None if it may.

    Checked in this order: the bot's Manage Roles (or Administrator), the member, the role, then the role
    itself: @everyone and managed roles (a bot's or an integration's) are never assigned by hand, and any
    other must sit strictly below the bot's highest role. Administrator does not lift the hierarchy.
    """
    bot_member = guild.get_member(bot_user_id)
    if bot_member is None or not guild.permissions_of(bot_member) & (MANAGE_ROLES | ADMINISTRATOR):
        return MISSING_PERMISSIONS
    if guild.get_member(user_id) is None:
        return UNKNOWN_MEMBER
    role = guild.role(role_id)
    if role is None:
        return UNKNOWN_ROLE
    if role.id == guild.id or role.managed or role.position >= guild.top_role_position(bot_member):
        return MISSING_PERMISSIONS
    return None


class RoleWriteLog:
    """The recent role writes of each guild, and the silent successes injected for its next writes."""

    def __init__(self) -> None:
        self._writes: dict[int, deque[RoleWrite]] = {}
        self._silent: dict[int, int] = {}

    def record(self, guild_id: int, write: RoleWrite) -> None:
        """Keep one write (the oldest go past ROLE_WRITES_KEPT)."""
        self._writes.setdefault(guild_id, deque(maxlen=ROLE_WRITES_KEPT)).append(write)

    def recent(self, guild_id: int) -> list[RoleWrite]:
        """The guild's kept writes, oldest first."""
        return list(self._writes.get(guild_id, ()))

    def silence(self, guild_id: int, times: int) -> None:
        """The guild's next `times` role writes that Discord would allow answer 204 and change nothing."""
        self._silent[guild_id] = self._silent.get(guild_id, 0) + times

    def silenced(self, guild_id: int) -> int:
        """How many silent successes are still to come for the guild."""
        return self._silent.get(guild_id, 0)

    def take_silent(self, guild_id: int) -> bool:
        """Use up one silent success of the guild, if one is pending."""
        left = self._silent.get(guild_id, 0)
        if left <= 0:
            return False
        if left == 1:
            del self._silent[guild_id]
        else:
            self._silent[guild_id] = left - 1
        return True
