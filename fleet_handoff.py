"""The hand-off across processes: a GuildLinker for a fleet of guildlink processes on one PostgreSQL.

A top-level module, as handoff.py is, because it belongs to neither room: the web side of any process calls
it, and it reaches the bot side of whichever process owns the guild's shard. That may be this process (a
direct call into its LinkedGuilds, as in one process) or another one (a NOTIFY on the links channel, heard
by the owner's LISTEN connection). lifecycle.py chooses it when this process runs only some of the shards
on PostgreSQL; web/ never knows which hand-off it was given.

A notice says only which guild and what happened; the owner reads the link itself from the database. A
notice sent while the owner was down or reconnecting is lost, so the owner catches up from the database
each time its LISTEN connection (re)connects and every few minutes: the active links of its shards whose
sync is not finished and that it is not syncing already.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from handoff import GuildLinker, HandoffStatus, shard_of
from metrics import Metrics
from store import Link, Store, StoreUnavailableError
from store.postgres_listener import Listener
from supervision import Supervisor

log = logging.getLogger(__name__)

CHANNEL = "guildlink_links"
LINKED = "linked"
UNLINKED = "unlinked"


@dataclass(frozen=True, slots=True)
class LinkNotice:
    """What a NOTIFY on the links channel carries: the guild, what happened to its link, and when."""

    event: str
    guild_id: int
    # Unix time just after the link's commit, on the sender's clock (the lag's start).
    committed_at: float

    def encode(self) -> str:
        # The guild id as a string, as at every JSON edge of ours.
        return json.dumps({"event": self.event, "guild_id": str(self.guild_id), "at": self.committed_at})

    @classmethod
    def decode(cls, payload: str) -> LinkNotice | None:
        """The notice, or None for a payload that is not one (another program on the channel)."""
        try:
            data = json.loads(payload)
            notice = cls(str(data["event"]), int(data["guild_id"]), float(data["at"]))
        except (ValueError, TypeError, KeyError):
            return None
        return notice if notice.event in (LINKED, UNLINKED) else None


@dataclass(frozen=True, slots=True)
class Shards:
    """The shards this process runs, of how many in the fleet."""

    count: int
    ids: tuple[int, ...]

    def owns(self, guild_id: int) -> bool:
        return shard_of(guild_id, self.count) in self.ids


class LocalLinks(GuildLinker, Protocol):
    """This process's receiving end (the bot's LinkedGuilds): what the catch-up asks of it besides a link."""

    def __contains__(self, guild_id: object) -> bool: ...

    def is_syncing(self, guild_id: int) -> bool: ...


class Notifier(Protocol):
    async def notify(self, channel: str, payload: str) -> None: ...


class FleetLinker:
    """Hands each link to the process whose shard carries the guild; hears and catches up on this process's."""

    def __init__(
        self,
        store: Store,
        notifier: Notifier,
        local: LocalLinks,
        shards: Shards,
        metrics: Metrics,
        supervisor: Supervisor | None = None,
    ) -> None:
        self._store = store
        self._notifier = notifier
        self._local = local
        self._shards = shards
        self._metrics = metrics
        self._supervisor = supervisor or Supervisor(metrics)
        self._heard: asyncio.Queue[LinkNotice] = asyncio.Queue()
        self._listener: Listener | None = None
        self._last_lag: float | None = None
        self._notices = 0
        self._caught_up = 0

    @contextlib.asynccontextmanager
    async def running(self, dsn: str) -> AsyncIterator[FleetLinker]:
        """Listen for this process's notices (and catch up) until the block ends."""
        listener = Listener(
            dsn, CHANNEL, on_notice=self._on_notice, catch_up=self.catch_up, supervisor=self._supervisor
        )
        self._listener = listener
        # One notice at a time, in the order sent: a guild linked then unlinked must end unlinked.
        taking = self._supervisor.spawn("handoff-notices", self._take_notices)
        try:
            async with listener.running():
                yield self
        finally:
            taking.cancel()
            await asyncio.gather(taking, return_exceptions=True)

    def handoff_status(self) -> HandoffStatus:
        return HandoffStatus(
            mode="notify",
            listening=self._listener is not None and self._listener.listening,
            last_notify_lag_ms=None if self._last_lag is None else round(self._last_lag * 1000, 1),
            notices_heard=self._notices,
            caught_up=self._caught_up,
        )

    # GuildLinker, called by the web side of this process.

    async def guild_linked(self, link: Link) -> None:
        if self._shards.owns(link.guild_id):
            await self._local.guild_linked(link)
            return
        await self._tell_owner(LinkNotice(LINKED, link.guild_id, time.time()))

    async def guild_unlinked(self, guild_id: int) -> None:
        if self._shards.owns(guild_id):
            await self._local.guild_unlinked(guild_id)
            return
        # Inactive first, as in one process: from this commit on the store refuses the owner's sync writes.
        await self._store.deactivate_link(guild_id)
        try:
            await self._tell_owner(LinkNotice(UNLINKED, guild_id, time.time()))
        except StoreUnavailableError as exc:
            # The owner's sync stops at its next write anyway, and the leave below does not need it.
            log.warning("handoff.unlink_not_told guild=%d reason=%s", guild_id, exc.reason)
        # The guild has no link now: leaving it is guild_abandoned's work, which any process can do (REST),
        # so the bot leaves even while the owner is down.
        await self._local.guild_abandoned(guild_id)

    async def guild_abandoned(self, guild_id: int) -> bool:
        if self._shards.owns(guild_id):
            return await self._local.guild_abandoned(guild_id)
        # Whether a link keeps the bot there is the database's to say: this process holds only its shards'.
        link = await self._store.get_link(guild_id)
        if link is not None and link.active:
            return True
        return await self._local.guild_abandoned(guild_id)

    async def _tell_owner(self, notice: LinkNotice) -> None:
        await self._notifier.notify(CHANNEL, notice.encode())
        log.info(
            "handoff.notified guild=%d event=%s shard=%d",
            notice.guild_id,
            notice.event,
            shard_of(notice.guild_id, self._shards.count),
        )

    # The receiving end: notices for this process's shards, and the catch-up.

    def _on_notice(self, payload: str) -> None:
        notice = LinkNotice.decode(payload)
        if notice is None:
            log.warning("handoff.notice_unreadable length=%d", len(payload))
            return
        if not self._shards.owns(notice.guild_id):
            return  # another process's (every listener hears every notice)
        lag = max(0.0, time.time() - notice.committed_at)
        self._last_lag = lag
        self._notices += 1
        self._metrics.notify_lag.observe(lag)
        log.info("handoff.heard guild=%d event=%s lag_ms=%.1f", notice.guild_id, notice.event, lag * 1000)
        self._heard.put_nowait(notice)

    async def _take_notices(self) -> None:
        while True:
            notice = await self._heard.get()
            try:
                await self._take(notice)
            except StoreUnavailableError as exc:
                # A link is caught up once the database answers again; an unlink is done by the sender
                # already (inactive, guild left), and GUILD_DELETE tells this process too.
                log.warning(
                    "handoff.notice_not_taken guild=%d event=%s reason=%s",
                    notice.guild_id,
                    notice.event,
                    exc.reason,
                )

    async def _take(self, notice: LinkNotice) -> None:
        if notice.event == UNLINKED:
            await self._local.guild_unlinked(notice.guild_id)
            return
        link = await self._store.get_link(notice.guild_id)
        if link is None or not link.active:
            log.info("handoff.link_gone guild=%d: unlinked before it was heard", notice.guild_id)
            return
        await self._local.guild_linked(link)

    async def catch_up(self) -> None:
        """Hand this process the links of its shards whose sync is not finished and not under way here."""
        for link in await self._store.list_unfinished_links(self._shards.count, self._shards.ids):
            known = link.guild_id in self._local
            if known and self._local.is_syncing(link.guild_id):
                continue
            if not known:
                self._caught_up += 1
                self._metrics.caught_up.inc()
                log.info("handoff.caught_up guild=%d: not heard of before", link.guild_id)
            # A known one again too: the sync of a guild another process left mid-way (its lock died
            # with it) starts here, and one already running is not started twice.
            await self._local.guild_linked(link)
