"""Role writes and member read-backs through discord.py's HTTP client, which keeps Discord's REST limits.

discord.py's client follows each route's bucket (`X-RateLimit-*`), waits out a 429's `retry_after` (up to
five tries) and the global limit across the process; what it still raises is turned into RoleWriteError.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import discord

from bot.discord_internals import add_member_role, fetch_member_payload, remove_member_role
from bot.role_errors import RoleWriteError
from store import RoleAction, RoleChange


class DiscordRoleRest:
    """The bot's REST client for one role change at a time."""

    def __init__(self, client: discord.Client) -> None:
        self._client = client

    async def write(self, change: RoleChange) -> None:
        """PUT or DELETE /guilds/{g}/members/{u}/roles/{r}, with the change's audit log reason."""
        write = add_member_role if change.action is RoleAction.ADD else remove_member_role
        with _as_role_write_error():
            await write(self._client, change.guild_id, change.user_id, change.role_id, reason=change.reason)

    async def member_roles(self, guild_id: int, user_id: int) -> frozenset[int]:
        """The member's roles as Discord holds them now (GET /guilds/{g}/members/{u})."""
        with _as_role_write_error():
            member = await fetch_member_payload(self._client, guild_id, user_id)
        return frozenset(int(role) for role in member["roles"])


@contextmanager
def _as_role_write_error() -> Iterator[None]:
    try:
        yield
    except discord.HTTPException as exc:
        raise RoleWriteError(exc.status, exc.code or None, exc.text) from exc
    except discord.RateLimited as exc:
        # discord.py gave up waiting: the 429's retry_after was above its max_ratelimit_timeout.
        raise RoleWriteError(429, None, retry_after=exc.retry_after) from exc
    except (OSError, aiohttp.ClientError, TimeoutError) as exc:
        raise RoleWriteError(0, None, type(exc).__name__) from exc
