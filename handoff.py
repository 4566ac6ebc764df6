"""The narrow interface where web/ and bot/ meet; owned by neither, wired in lifecycle.py.

One process: the web side calls the bot's LinkedGuilds directly. A fleet on PostgreSQL: fleet_handoff.py's
FleetLinker, another implementation of the same interface, tells the process that owns the guild's shard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from store.models import Link


def shard_of(guild_id: int, shard_count: int) -> int:
    """Discord's rule: the shard that carries a guild."""
    return (guild_id >> 22) % shard_count


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


@dataclass(frozen=True, slots=True)
class HandoffStatus:
    """How links reach this process's shards, for /readyz and /metrics."""

    # "direct": a call within this process; "notify": PostgreSQL NOTIFY to whichever process owns the shard.
    mode: str
    # False while the LISTEN connection is down: links for this process's shards wait for the catch-up.
    listening: bool = True
    # From a link's commit (in whichever process) to this process hearing of it, for the last one heard.
    last_notify_lag_ms: float | None = None
    notices_heard: int = 0
    # Links found by a catch-up (at start-up, after a reconnect, now and then) rather than by a notice.
    caught_up: int = 0


class HandoffStatusSource(Protocol):
    def handoff_status(self) -> HandoffStatus: ...


class DirectHandoff:
    """The hand-off within one process: a call, never down."""

    def handoff_status(self) -> HandoffStatus:
        return HandoffStatus(mode="direct")
