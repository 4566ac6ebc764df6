"""Discord's answers to a role write, in plain words for the backend, and which of them are worth a retry."""

from __future__ import annotations

from typing import NamedTuple

# Discord's JSON error codes that a role write meets.
UNKNOWN_GUILD = 10004
UNKNOWN_MEMBER = 10007
UNKNOWN_ROLE = 10011
MISSING_ACCESS = 50001
MISSING_PERMISSIONS = 50013

# Answered to a change whose write Discord took with a success that the member, read back, does not show
# (seen on Discord: discord-api-docs issue 6074).
NOT_TAKEN = "Discord answered success but the member's roles did not change"
# Answered, without a request to Discord, to a change whose guild was unlinked before its turn came.
UNLINKED = "the guild was unlinked before the change was applied"


class RoleWriteError(Exception):
    """Discord refused a role write or a read-back: HTTP status (0: no answer), Discord's JSON code or None."""

    def __init__(
        self, status: int, code: int | None, message: str = "", *, retry_after: float | None = None
    ) -> None:
        super().__init__(f"HTTP {status} code {code}")
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """No answer, a 429 or a 5xx: Discord may take the same request later. Any other 4xx is final."""
        return self.status in (0, 429) or self.status >= 500

    @property
    def invalid_request(self) -> bool:
        """Counts toward Discord's 10,000 invalid requests per 10 minutes (401, 403 and 429 answers)."""
        return self.status in (401, 403, 429)


class Explained(NamedTuple):
    code: int | None
    reason: str


def explain(error: RoleWriteError, *, role_id: int, user_id: int) -> Explained:
    """Discord's code and a plain sentence saying what to do about it."""
    code = error.code or None
    if code == MISSING_PERMISSIONS:
        reason = f"the bot's highest role must be above role {role_id}, and the bot needs Manage Roles"
    elif code == UNKNOWN_ROLE:
        reason = f"Discord knows no role {role_id} in this guild"
    elif code == UNKNOWN_MEMBER:
        reason = f"user {user_id} is not a member of this guild"
    elif code == UNKNOWN_GUILD:
        reason = "Discord knows no such guild"
    elif code == MISSING_ACCESS:
        reason = "the bot has no access to this guild (it may have been removed from it)"
    elif error.status == 401:
        reason = "Discord refused the bot's token"
    else:
        # Discord's own message names no user data; bounded all the same.
        detail = f": {error.message[:200]}" if error.message else ""
        reason = f"Discord refused the change (HTTP {error.status}, code {code}){detail}"
    return Explained(code, reason)
