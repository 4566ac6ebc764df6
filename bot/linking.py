"""The hand-off's receiving end: which guilds are linked, and when each one's member list is read."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from bot.member_sync import MemberSync
from store import Link, Store

log = logging.getLogger(__name__)


class LinkedGuilds:
    """Tracks the active links of this process's shards; starts a guild's sync once it is both linked and held
    by the gateway session.

    The callback's "guild G is linked" and the gateway's GUILD_CREATE may come in either order.
    """

    def __init__(
        self,
        store: Store,
        member_sync: MemberSync,
        *,
        member_count_of: Callable[[int], int | None],
        leave_guild: Callable[[int], Awaitable[bool]],
        on_change: Callable[[], None],
        owns: Callable[[int], bool] = lambda guild_id: True,
    ) -> None:
        self._store = store
        self._sync = member_sync
        # None while the gateway session does not hold the guild.
        self._member_count_of = member_count_of
        self._leave_guild = leave_guild
        self._on_change = on_change
        # Whether one of this process's shards carries the guild: in a fleet, other processes keep the rest.
        self._owns = owns
        self._active: set[int] = set()

    def __contains__(self, guild_id: object) -> bool:
        return guild_id in self._active

    def __len__(self) -> int:
        return len(self._active)

    def is_syncing(self, guild_id: int) -> bool:
        return self._sync.is_syncing(guild_id)

    async def load(self) -> None:
        """Read the active links of this process's shards from the store (at start-up)."""
        links = await self._store.list_links(active_only=True)
        # Added to, not replaced: a link heard of while the list was read must not be dropped.
        self._active |= {link.guild_id for link in links if self._owns(link.guild_id)}
        log.info("links.loaded active=%d", len(self._active))

    # GuildLinker, called by the web side: none of these waits on the gateway.

    async def guild_linked(self, link: Link) -> None:
        self._active.add(link.guild_id)
        member_count = self._member_count_of(link.guild_id)
        log.info("links.linked guild=%d held=%s", link.guild_id, member_count is not None)
        if member_count is not None:
            self._sync.schedule(link.guild_id, member_count=member_count)
        # Otherwise the gateway's GUILD_CREATE starts it; the store says 'pending' meanwhile.
        self._on_change()

    async def guild_unlinked(self, guild_id: int) -> None:
        # Inactive first: from this commit on the store refuses the sync's writes, then the sync is stopped.
        # Forgotten only once committed: a failed commit leaves the link active, and its events are stored.
        await self._store.deactivate_link(guild_id)
        self._active.discard(guild_id)
        await self._sync.cancel(guild_id)
        if self._member_count_of(guild_id) is not None:
            await self._leave_guild(guild_id)
        log.info("links.unlinked guild=%d", guild_id)
        self._on_change()

    async def guild_abandoned(self, guild_id: int) -> bool:
        if guild_id in self._active:
            return True  # an existing link keeps the bot there
        return await self._leave_guild(guild_id)

    def resync(self, guild_id: int) -> None:
        """What the store holds of the guild may be stale (one of its member events was refused): read it again."""
        if guild_id in self._active:
            log.info("links.resync guild=%d", guild_id)
            # A sync already running may have read those members before the events: it is followed by another.
            self._sync.resync(guild_id)

    # Gateway events, called by the client

    def guild_arrived(self, guild_id: int, member_count: int | None) -> None:
        """GUILD_CREATE: a join, a guild back from an outage, or a fresh session's guild (a gap to fill)."""
        if guild_id in self._active:
            self._sync.schedule(guild_id, member_count=member_count)
        else:
            log.info("links.guild_not_linked guild=%d: waiting for our callback", guild_id)

    async def guild_removed(self, guild_id: int) -> None:
        """The bot was kicked or banned, or the guild was deleted: keep no data on it."""
        if guild_id in self._active:
            # As for an unlink: forgotten once committed (a failed commit is tried again at the next READY).
            await self._store.deactivate_link(guild_id)
            self._active.discard(guild_id)
            await self._sync.cancel(guild_id)
            log.info("links.removed_from_guild guild=%d: link inactive, members deleted", guild_id)
            self._on_change()

    async def forget_missing(self, held: set[int], on_this_shard: Callable[[int], bool]) -> None:
        """After READY: links to guilds this shard no longer holds were removed while we were away."""
        for guild_id in sorted(self._active - held):
            if on_this_shard(guild_id):
                await self.guild_removed(guild_id)
