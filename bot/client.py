"""The discord.py client: sharded, Server Members intent, presence, and the wiring of member sync and link events."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import discord

from bot.discord_internals import (
    close_orphaned_connections,
    fetch_member_page,
    has_event_waiters,
    heartbeat_timeout,
    leave_guild,
    parser_table,
    quiet_voice_warnings,
    request_whole_member_list,
    rest_user_agent,
    set_reading_paused,
    socket_open,
    unanswered_heartbeat_seconds,
    use_gateway_url,
    websocket_of_guild,
    websocket_of_shard,
)
from bot.gateway_budget import GatewayBudget
from bot.identify import IDENTIFY_INTERVAL, IdentifyPacer
from bot.linking import LinkedGuilds
from bot.member_events import MemberEventWriter
from bot.member_sync import MEMBER_LIST_COOLDOWN, MemberSync
from bot.presence import MergedPresence
from bot.reachability import wait_for_discord
from bot.read_valve import ReadValve
from bot.role_rest import DiscordRoleRest
from bot.role_writer import RoleChangeWriter
from bot.sync_rest_reader import REST_PAGE_SIZE
from config import Settings
from handoff import BotStatus, ShardStatus, shard_of
from metrics import Metrics
from store import HoldRule, Store
from supervision import Supervisor

log = logging.getLogger(__name__)

R = TypeVar("R")

# Discord answers a heartbeat at once; one left unanswered this long means the session is not really there.
HEARTBEAT_ACK_GRACE = 10.0
SHARD_CONNECT_TIMEOUT = 30.0
# discord.py's default: after READY, how long a quiet gateway means every guild has arrived.
GUILD_READY_TIMEOUT = 2.0
# A pause of reading ends by this share of discord.py's heartbeat timeout at the latest (READ_PAUSE_MAX is
# validated below it too): after the pause, frames read must reach it before the timeout does.
MAX_PAUSE_OF_HEARTBEAT_TIMEOUT = 0.75


def bot_intents() -> discord.Intents:
    """Guilds and the privileged Server Members intent; nothing else."""
    intents = discord.Intents.none()
    intents.guilds = True
    intents.members = True
    return intents


class GuildlinkBot(discord.AutoShardedClient):
    """Holds the gateway sessions (shards); the store, not discord.py's cache, keeps the members.

    With no SHARD_COUNT it runs Discord's recommended count; with SHARD_COUNT and SHARD_IDS, just those.
    """

    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        member_list_cooldown: float = MEMBER_LIST_COOLDOWN,
        identify_interval: float = IDENTIFY_INTERVAL,
        guild_ready_timeout: float = GUILD_READY_TIMEOUT,
        metrics: Metrics | None = None,
        supervisor: Supervisor | None = None,
    ) -> None:
        # Read when a client is constructed: hence before super().__init__.
        quiet_voice_warnings()
        super().__init__(
            intents=bot_intents(),
            # The database is the member cache: discord.py keeps none, and never chunks by itself
            # (its own whole-list request would spend the one we may make every 30 s).
            member_cache_flags=discord.MemberCacheFlags.none(),
            chunk_guilds_at_startup=False,
            shard_count=settings.shard_count,
            status=discord.Status.online,
            # A shard that cannot connect is retried by discord.py; three minutes is too long to notice.
            shard_connect_timeout=SHARD_CONNECT_TIMEOUT,
            guild_ready_timeout=guild_ready_timeout,
        )
        # Only when set (discord.py reads it at launch): its typed options have no "None" for shard_ids.
        if settings.shard_ids is not None:
            self.shard_ids = list(settings.shard_ids)
        self.settings = settings
        self.store = store
        # One budget per connection for the commands we send on it (op 8 and presence).
        self._budgets: dict[int, GatewayBudget] = {}
        # Booked in the store: processes of a fleet starting together take turns per bucket.
        self.identify_pacer = IdentifyPacer(interval=identify_interval, slots=store)
        self._ready_shards: set[int] = set()
        self._unreachable: str | None = None
        self.presence = MergedPresence(self._send_presence)
        self.metrics = metrics or Metrics()
        # The process's one, shared with the web side (for /readyz); a bot of its own in tests.
        self.supervisor = supervisor or Supervisor(self.metrics)
        # One valve for the sync's chunks and the member events: what they hold for the store together pauses
        # reading; a pause ends before discord.py would take the silence for a dead session and reconnect.
        self.read_valve = ReadValve(
            self._pause_gateway_reading,
            cap=settings.member_buffer_max,
            max_pause=min(settings.read_pause_max, heartbeat_timeout(self) * MAX_PAUSE_OF_HEARTBEAT_TIMEOUT),
            metrics=self.metrics,
        )
        # The sync first: when a pause reaches its cap, its chunks are dropped before any member event is.
        self.member_sync = MemberSync(
            store,
            self,
            cooldown=member_list_cooldown,
            hold=HoldRule(settings.reconcile_hold_share, settings.reconcile_hold_min),
            metrics=self.metrics,
            valve=self.read_valve,
        )
        self.links = LinkedGuilds(
            store,
            self.member_sync,
            member_count_of=self._member_count_of,
            leave_guild=self._leave_guild,
            on_change=self.update_presence,
            owns=self.owns_guild,
        )
        self.member_events = MemberEventWriter(
            store,
            is_linked=self.links.__contains__,
            supervisor=self.supervisor,
            metrics=self.metrics,
            valve=self.read_valve,
            resync=self.links.resync,
        )
        # Role changes the backend queued, written through discord.py's REST client (its rate limits).
        self.role_writer = RoleChangeWriter(
            store,
            DiscordRoleRest(self),
            supervisor=self.supervisor,
            metrics=self.metrics,
        )
        self._install_raw_handlers()

    def _install_raw_handlers(self) -> None:
        """Route member dispatches to the store before discord.py's own parsers see them."""
        parsers = parser_table(self)

        def guarded(ours: Callable[[Any], R]) -> Callable[[Any], R | None]:
            # A payload we can't read must not take the gateway session down with it.
            def handle(data: Any) -> R | None:
                try:
                    return ours(data)
                except Exception:
                    log.exception("bot.raw_event_failed handler=%s", getattr(ours, "__name__", ours))
                    return None

            return handle

        def chained(ours: Callable[[Any], None], theirs: Callable[[Any], None]) -> Callable[[Any], None]:
            ours_guarded = guarded(ours)

            def handle(data: Any) -> None:
                ours_guarded(data)
                theirs(data)

            return handle

        original_chunk = parsers["GUILD_MEMBERS_CHUNK"]
        take_chunk = guarded(self.member_sync.on_members_chunk)

        def members_chunk(data: Any) -> None:
            if take_chunk(data) is False:
                original_chunk(data)

        def member_removed(data: Mapping[str, Any]) -> None:
            self.member_sync.note_member_removed(int(data["guild_id"]), int(data["user"]["id"]))
            self.member_events.member_removed(data)

        original_member_update = parsers["GUILD_MEMBER_UPDATE"]

        def own_member_updated(data: Mapping[str, Any]) -> None:
            # With the member cache off discord.py holds only the bot's own member (guild.me, whose roles
            # decide its permissions) and looks up and discards every other update: work for nothing, once
            # per event of a storm.
            if self.user is not None and data["user"]["id"] == str(self.user.id):
                original_member_update(data)

        def session_started(data: Any) -> None:
            # A new socket (READY, or RESUMED after a reconnect) starts out reading: paused too if the valve is.
            self.read_valve.reapply()

        parsers["READY"] = chained(session_started, parsers["READY"])
        parsers["RESUMED"] = chained(session_started, parsers["RESUMED"])
        parsers["GUILD_MEMBERS_CHUNK"] = members_chunk
        parsers["RATE_LIMITED"] = guarded(self.member_sync.on_rate_limited)
        parsers["GUILD_MEMBER_ADD"] = chained(self.member_events.member_joined, parsers["GUILD_MEMBER_ADD"])
        parsers["GUILD_MEMBER_UPDATE"] = chained(self.member_events.member_updated, own_member_updated)
        parsers["GUILD_MEMBER_REMOVE"] = chained(member_removed, parsers["GUILD_MEMBER_REMOVE"])

    # Life cycle

    async def start(self, token: str, *, reconnect: bool = True) -> None:
        """Wait until Discord answers (the web face keeps serving meanwhile), then log in and connect."""
        info = await wait_for_discord(
            self.settings.api_base_url,
            token,
            user_agent=rest_user_agent(self),
            on_unreachable=self._note_unreachable,
        )
        if self.is_closed():
            return  # closed while waiting for Discord: logging in would open a session nothing closes
        self._unreachable = None
        self.identify_pacer.max_concurrency = info.max_concurrency
        if not self.settings.uses_default_discord:
            use_gateway_url(info.url)
        await super().start(token, reconnect=reconnect)

    def _note_unreachable(self, reason: str, retry_in: float) -> None:
        self._unreachable = f"waiting for Discord: {reason}, next try in {retry_in:.0f} s"

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        # discord.py's default sleeps 5 s before every IDENTIFY but the first, bucket or not.
        await self.identify_pacer.wait_turn(shard_id or 0)

    async def setup_hook(self) -> None:
        await self.links.load()
        self.member_events.start()
        self.role_writer.start()
        await self.check_application()

    async def close(self) -> None:
        await self.presence.close()
        await self.member_sync.close()
        await self.member_events.close()
        await self.role_writer.close()
        self.read_valve.close()
        await super().close()
        if orphans := await close_orphaned_connections(self):
            log.info("bot.closed_orphaned_connections count=%d", orphans)

    async def check_application(self) -> None:
        """Warn about Developer Portal settings that would break or bypass the consent flow."""
        info = await self.application_info()
        if self.settings.redirect_uri not in info.redirect_uris:
            log.warning(
                "bot.redirect_uri_not_registered uri=%s: add it under OAuth2 > Redirects in the Developer Portal,"
                " or Discord will refuse the consent",
                self.settings.redirect_uri,
            )
        if not info.bot_require_code_grant:
            log.warning(
                "bot.code_grant_not_required: switch on Bot > 'Requires OAuth2 Code Grant' in the Developer Portal,"
                " or anyone can add the bot without passing through our callback"
            )
        if not (info.flags.gateway_guild_members or info.flags.gateway_guild_members_limited):
            log.warning(
                "bot.members_intent_off: switch on Bot > 'Server Members Intent' in the Developer Portal"
            )

    def dispatch(self, event: str, /, *args: Any, **kwargs: Any) -> None:
        """discord.py's dispatch, skipped for an event that has neither a handler nor a `wait_for` waiting.

        discord.py finds a missing handler by catching AttributeError, and dispatches socket_event_type for
        every gateway event: in a storm, 55,000 of those cost about 0.1 s of CPU, a tenth of what storing the
        storm costs.
        """
        if getattr(self, "on_" + event, None) is not None or has_event_waiters(self, event):
            super().dispatch(event, *args, **kwargs)

    # Gateway events: each delegates at once.

    async def on_ready(self) -> None:
        assert self.user is not None
        log.info("bot.ready user=%d guilds=%d shards=%s", self.user.id, len(self.guilds), sorted(self.shards))

    async def on_shard_ready(self, shard_id: int) -> None:
        """A fresh session of one shard (READY and its guilds): reconcile that shard's links, show the presence."""
        self._ready_shards.add(shard_id)
        self.metrics.reconnects.labels(str(shard_id), "identify").inc()
        held = {guild.id for guild in self.guilds if guild.shard_id == shard_id}
        log.info("bot.shard_ready shard=%d guilds=%d", shard_id, len(held))
        await self.links.forget_missing(held, lambda guild_id: self.shard_of(guild_id) == shard_id)
        # A fresh session shows no activity until we send it again.
        self.presence.forget_shown()
        self.update_presence()

    async def on_shard_resumed(self, shard_id: int) -> None:
        self.metrics.reconnects.labels(str(shard_id), "resume").inc()

    async def on_guild_join(self, guild: discord.Guild) -> None:
        log.info("bot.guild_joined guild=%d members=%s", guild.id, guild.member_count)
        self.links.guild_arrived(guild.id, guild.member_count)

    async def on_guild_available(self, guild: discord.Guild) -> None:
        self.links.guild_arrived(guild.id, guild.member_count)

    async def on_guild_remove(self, guild: discord.Guild) -> None:
        log.info("bot.guild_removed guild=%d", guild.id)
        await self.links.guild_removed(guild.id)

    # Helpers

    def _pause_gateway_reading(self, paused: bool) -> None:
        for shard_id in self._own_shard_ids():
            set_reading_paused(websocket_of_shard(self, shard_id), paused)

    def shard_of(self, guild_id: int) -> int:
        return shard_of(guild_id, self.shard_count or 1)

    def owns_guild(self, guild_id: int) -> bool:
        """Whether one of this process's shards carries the guild (every guild when it runs every shard)."""
        return self.settings.shard_ids is None or self.shard_of(guild_id) in self.settings.shard_ids

    def _budget(self, shard_id: int) -> GatewayBudget:
        return self._budgets.setdefault(shard_id, GatewayBudget())

    def _member_count_of(self, guild_id: int) -> int | None:
        guild = self.get_guild(guild_id)
        return None if guild is None else (guild.member_count or 0)

    async def _leave_guild(self, guild_id: int) -> bool:
        """Leave through REST (no gateway command); True once the bot is not in the guild."""
        try:
            await leave_guild(self, guild_id)
        except discord.NotFound:
            return True  # not there (never added, or gone already)
        except (discord.HTTPException, OSError) as exc:
            log.warning("bot.leave_failed guild=%d error=%s", guild_id, type(exc).__name__)
            return False
        log.info("bot.left guild=%d", guild_id)
        return True

    def update_presence(self) -> None:
        """Online, "Watching N linked servers"; merged, so a burst of links costs one command."""
        count = len(self.links)
        self.presence.want(f"{count} linked server{'s' if count != 1 else ''}")

    async def _send_presence(self, text: str) -> None:
        activity = discord.Activity(type=discord.ActivityType.watching, name=text)
        # One command per shard, each within its own connection's budget.
        for shard_id in sorted(self._ready_shards):
            await self._budget(shard_id).acquire()
            await self.change_presence(status=discord.Status.online, activity=activity, shard_id=shard_id)

    # ChunkRequester, for MemberSync (its gateway and REST readers)

    def gateway_wait(self, guild_id: int) -> float:
        return self._budget(self.shard_of(guild_id)).wait_estimate()

    async def request_whole_list(self, guild_id: int, nonce: str) -> None:
        await self._budget(self.shard_of(guild_id)).acquire()
        ws = websocket_of_guild(self, guild_id)
        if ws is None or self.is_closed() or not socket_open(ws):
            raise ConnectionError("no gateway session for the guild's shard")
        await request_whole_member_list(ws, guild_id, nonce)

    async def fetch_member_page(self, guild_id: int, after: int) -> Sequence[Mapping[str, Any]]:
        return await fetch_member_page(self, guild_id, limit=REST_PAGE_SIZE, after=after)

    # BotStatusSource, for /readyz

    def bot_status(self) -> BotStatus:
        # One pass over the guilds for every shard's count: a probe must not walk 2,500 guilds per shard.
        per_shard = Counter(guild.shard_id for guild in self.guilds)
        shards = tuple(
            self._shard_status(shard_id, per_shard[shard_id]) for shard_id in self._own_shard_ids()
        )
        if self.is_closed():
            state = "closed"
        elif self._unreachable is not None:
            state = self._unreachable
        elif not shards:
            state = "connecting"
        else:
            state = next((s.state for s in shards if s.state != "ready"), "ready")
        latencies = [s.latency_ms for s in shards if s.latency_ms is not None]
        return BotStatus(
            ready=state == "ready",
            state=state,
            latency_ms=round(sum(latencies) / len(latencies), 1) if latencies else None,
            guild_count=len(self.guilds),
            shards=shards,
            event_queue_depth=self.member_events.queued(),
            discord_reachable=self._unreachable is None,
        )

    def _own_shard_ids(self) -> list[int]:
        if self.settings.shard_ids is not None:
            return list(self.settings.shard_ids)
        return list(range(self.shard_count)) if self.shard_count else []

    def _shard_status(self, shard_id: int, guild_count: int) -> ShardStatus:
        ws = websocket_of_shard(self, shard_id)
        info = self.get_shard(shard_id)
        if info is None or shard_id not in self._ready_shards:
            state = "connecting"
        elif info.is_closed() or not socket_open(ws):
            state = "reconnecting"
        elif unanswered_heartbeat_seconds(ws) > HEARTBEAT_ACK_GRACE:
            state = "not answering heartbeats"
        else:
            state = "ready"
        latency = info.latency if info is not None else float("nan")
        return ShardStatus(
            shard_id=shard_id,
            state=state,
            latency_ms=round(latency * 1000, 1) if latency == latency and latency != float("inf") else None,
            guild_count=guild_count,
        )
