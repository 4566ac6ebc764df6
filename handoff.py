"""The narrow interface where web/ and bot/ meet; owned by neither, wired in main.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from store.models import Link


class GuildLinker(Protocol):
    """The bot's side of a link: told when a guild is linked or unlinked, whichever comes first."""

    async def guild_linked(self, link: Link) -> None:
        """Guild `link.guild_id` is linked (the link is committed): read its members. Never waits on the gateway."""

    async def guild_abandoned(self, guild_id: int) -> bool:
        """Discord added the bot but no link was stored: leave the guild; False if leaving failed."""

    async def guild_unlinked(self, guild_id: int) -> None:
        """The backend unlinked the guild: leave it."""


@dataclass(frozen=True, slots=True)
class ShardStatus:
    """One gateway connection of this process."""

    shard_id: int
    state: str
    latency_ms: float | None
    guild_count: int


@dataclass(frozen=True, slots=True)
class BotStatus:
    """What /readyz reports about the gateway sessions: ready only when every shard of this process is."""

    ready: bool
    state: str
    latency_ms: float | None
    guild_count: int
    shards: tuple[ShardStatus, ...] = ()
    # Member events received from the gateway and not yet stored.
    event_queue_depth: int = 0
    # False while the bot waits for Discord to answer at all (a consent would not complete now).
    discord_reachable: bool = True


class BotStatusSource(Protocol):
    def bot_status(self) -> BotStatus: ...
