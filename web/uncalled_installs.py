"""Server installs Discord announced (APPLICATION_AUTHORIZED) that our callback never stored: recorded or refused.

Discord tells of every install, also of those our callback never sees (a closed tab, Discord's own "Add App"
button). Each announced install waits LINK_CALLBACK_GRACE_SECONDS for the callback, in a supervised task of
its own; then, if the guild is still not actively linked, LINK_WITHOUT_CALLBACK decides: `record` stores the
link (ref unknown) and hands the guild to the bot as the callback does, `refuse` makes the bot leave.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime

from config import Settings
from handoff import GuildLinker
from store import EventType, Link, LinkSource, Store
from supervision import Supervisor

log = logging.getLogger(__name__)

# Installs waiting for their grace at once; beyond it the oldest wait goes on and the new one is decided at
# once. Only Discord's signed events add to it, so the bound is against a flood of real installs.
MAX_WAITING = 10_000
# How long a guild the callback abandoned (the bot left it) stays remembered here, past the grace: Discord's
# event may come before or after the callback.
ABANDONED_MEMORY = 600.0


@dataclass(frozen=True, slots=True)
class AnnouncedInstall:
    """What APPLICATION_AUTHORIZED says of a server install: the guild, who installed, the scopes granted."""

    guild_id: int
    guild_name: str
    user_id: int
    username: str
    scopes: tuple[str, ...]
    announced_at: datetime


class UncalledInstalls:
    """Waits out each announced install's grace, then records or refuses it unless the callback linked it."""

    def __init__(self, settings: Settings, store: Store, linker: GuildLinker, supervisor: Supervisor) -> None:
        self._store = store
        self._linker = linker
        self._supervisor = supervisor
        self._grace = settings.link_callback_grace
        self._refuse = settings.link_without_callback == "refuse"
        # One wait per guild: Discord may announce one install twice (a retried delivery).
        self._waiting: dict[int, asyncio.Task[None]] = {}
        # Guilds our callback saw and left (no link stored), by when: not this module's to record.
        self._abandoned: dict[int, float] = {}

    @property
    def waiting(self) -> int:
        """Installs whose grace is not over yet (or whose decision is under way)."""
        return len(self._waiting)

    def announced(self, install: AnnouncedInstall) -> None:
        """Start the install's grace; never waits (Discord wants its answer quickly)."""
        if install.guild_id in self._waiting:
            log.info("discord_events.install_already_waiting guild=%d", install.guild_id)
            return
        grace = self._grace if len(self._waiting) < MAX_WAITING else 0.0
        # One task name for all: /metrics labels crashes by task, and guild ids would make a label apiece.
        task = self._supervisor.spawn("uncalled-install", lambda: self._decide_after(install, grace))
        self._waiting[install.guild_id] = task
        task.add_done_callback(lambda _: self._waiting.pop(install.guild_id, None))

    def callback_abandoned(self, guild_id: int) -> None:
        """The callback saw this install and stored nothing (the bot left): its event must not link it after.

        Kept in this process only: in a fleet, another process that takes Discord's event does not know.
        """
        now = time.monotonic()
        self._abandoned = {g: at for g, at in self._abandoned.items() if now - at < ABANDONED_MEMORY}
        if len(self._abandoned) < MAX_WAITING:
            self._abandoned[guild_id] = now

    async def _decide_after(self, install: AnnouncedInstall, grace: float) -> None:
        await asyncio.sleep(grace)
        await self.decide(install)

    async def decide(self, install: AnnouncedInstall) -> None:
        """The grace is over: nothing to do if the guild is actively linked, else record or refuse it."""
        abandoned_at = self._abandoned.get(install.guild_id)
        if abandoned_at is not None and time.monotonic() - abandoned_at < ABANDONED_MEMORY:
            log.info("discord_events.install_abandoned_by_callback guild=%d", install.guild_id)
            return
        existing = await self._store.get_link(install.guild_id)
        if existing is not None and existing.active:
            log.info(
                "discord_events.install_linked guild=%d source=%s", install.guild_id, existing.source.value
            )
            return
        if self._refuse:
            await self._refuse_install(install)
        else:
            await self._record_install(install)

    async def _record_install(self, install: AnnouncedInstall) -> None:
        link = await self._store.save_link(
            Link(
                guild_id=install.guild_id,
                guild_name=install.guild_name,
                linked_by_id=install.user_id,
                linked_by_username=install.username,
                scopes=install.scopes,
                # The event carries no permissions: unknown.
                permissions=0,
                linked_at=install.announced_at,
                ref=None,
                source=LinkSource.DISCORD_WEBHOOK,
            )
        )
        log.info("discord_events.install_recorded guild=%d user=%d", link.guild_id, link.linked_by_id)
        try:
            await self._linker.guild_linked(link)
        except Exception:
            # The link is committed; the bot picks every active link up again at start-up.
            log.exception("discord_events.handoff_failed guild=%d", link.guild_id)

    async def _refuse_install(self, install: AnnouncedInstall) -> None:
        bot_left = await self._linker.guild_abandoned(install.guild_id)
        await self._store.announce(
            EventType.GUILD_INSTALL_REFUSED,
            install.guild_id,
            {
                "name": install.guild_name,
                "installed_by": {"id": str(install.user_id), "username": install.username},
                "source": LinkSource.DISCORD_WEBHOOK.value,
                "bot_left": bot_left,
            },
        )
        log.info("discord_events.install_refused guild=%d bot_left=%s", install.guild_id, bot_left)

    async def running(self, _app: object) -> AsyncIterator[None]:
        """For cleanup_ctx: on shutdown the waits still running are cancelled (their installs undecided)."""
        yield
        waiting = list(self._waiting.values())
        if waiting:
            log.warning("discord_events.installs_undecided count=%d: the process stops", len(waiting))
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
