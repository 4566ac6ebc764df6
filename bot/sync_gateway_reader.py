"""Reading a guild's member list through the gateway: REQUEST_GUILD_MEMBERS (op 8) and its chunks, by nonce."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from bot.payloads import member_from_payload
from bot.read_valve import ReadValve
from bot.sync_progress import SyncProgress, write_members
from bot.sync_scheduler import MemberListWindow
from metrics import Metrics
from store import Member, Store

log = logging.getLogger(__name__)

MAX_GATEWAY_ATTEMPTS = 3
# Our op 8 nonces start with this, so a chunk of a cancelled request is known as ours and dropped.
NONCE_PREFIX = "gl-"


class SyncAbandonedError(Exception):
    """The database fell so far behind the guild's chunks that they were dropped: the sync starts again later."""

    def __init__(self, guild_id: int) -> None:
        super().__init__(
            f"guild {guild_id}: the database fell behind the gateway, so its chunks were dropped"
        )


class GatewayRateLimitedError(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"RATE_LIMITED, retry after {retry_after:.1f}s")
        self.retry_after = retry_after


class WholeListRequester(Protocol):
    def gateway_wait(self, guild_id: int) -> float:
        """Roughly how long an op 8 for the guild would wait for its connection's command budget."""

    async def request_whole_list(self, guild_id: int, nonce: str) -> None:
        """Send REQUEST_GUILD_MEMBERS (op 8) for every member of the guild, within the command budget."""


@dataclass
class ChunkRequest:
    """One whole-list request in flight: chunks flow through `chunks` to the writer.

    The valve counts every member in `chunks` and the chunk being written, with the other producers': past
    its cap the gateway stops being read, so the queue is bounded although the parser cannot wait.
    """

    guild_id: int
    nonce: str
    valve: ReadValve
    # Each chunk with the time it arrived: Discord's view of those members then.
    chunks: asyncio.Queue[tuple[datetime, list[Member]] | None] = field(default_factory=asyncio.Queue)
    # Members in `chunks` (not the chunk being written): what abandoning the request frees.
    queued: int = 0
    received: int = 0
    rate_limited: float | None = None
    abandoned: bool = False

    def put(self, received_at: datetime, members: list[Member]) -> None:
        if self.abandoned:
            return
        self.chunks.put_nowait((received_at, members))
        self.queued += len(members)
        self.valve.grow(len(members))

    def take(self, chunk: tuple[datetime, list[Member]]) -> list[Member]:
        """The writer has taken the chunk: it counts as being written, no longer as queued."""
        self.queued -= len(chunk[1])
        return chunk[1]

    def drop_queued(self) -> None:
        while not self.chunks.empty():
            self.chunks.get_nowait()
        self.valve.shrink(self.queued)
        self.queued = 0

    def abandon(self) -> None:
        """Drop the queued chunks and those still to come; the writer stops after the chunk it is writing."""
        self.abandoned = True
        self.drop_queued()
        self.chunks.put_nowait(None)


class GatewayMemberReader:
    """Streams a guild's chunks from the socket to the store, one request per guild at a time.

    Its first three methods are called synchronously from discord.py's parser table.
    """

    def __init__(
        self,
        store: Store,
        requester: WholeListRequester,
        window: MemberListWindow,
        *,
        chunk_timeout: float,
        valve: ReadValve,
        metrics: Metrics,
    ) -> None:
        self._store = store
        self._requester = requester
        self._window = window
        self._chunk_timeout = chunk_timeout
        self._valve = valve
        self._metrics = metrics
        self._valve.add_shedder(self._abandon_buffering)
        self._requests: dict[str, ChunkRequest] = {}
        # Members removed while a guild's sync runs: a later chunk must not bring them back.
        self._removed: dict[int, set[int]] = {}

    # Raw gateway dispatches

    def on_members_chunk(self, data: Mapping[str, Any]) -> bool:
        """Take a GUILD_MEMBERS_CHUNK of ours; False if the chunk answers someone else's request."""
        nonce = str(data.get("nonce"))
        request = self._requests.get(nonce)
        if request is None or request.abandoned:
            # A chunk of a request we gave up (the guild was unlinked, the database fell behind): drop it.
            return request is not None or nonce.startswith(NONCE_PREFIX)
        removed = self._removed.get(request.guild_id, set())
        members = [member_from_payload(m) for m in data.get("members", ())]
        request.put(datetime.now(UTC), [m for m in members if m.user_id not in removed])
        request.received += 1
        if request.received >= int(data.get("chunk_count", 1)):
            request.chunks.put_nowait(None)
        return True

    def on_rate_limited(self, data: Mapping[str, Any]) -> None:
        """RATE_LIMITED for our op 8: wake the sync so that it waits `retry_after` and asks again."""
        meta = data.get("meta") or {}
        request = self._requests.get(str(meta.get("nonce")))
        if request is None or data.get("opcode") != 8:
            log.warning("sync.rate_limited_unmatched opcode=%s", data.get("opcode"))
            return
        self._metrics.rate_limited.inc()
        request.rate_limited = float(data.get("retry_after", self._window.cooldown))
        request.chunks.put_nowait(None)

    def note_removed(self, guild_id: int, user_id: int) -> None:
        """A member of a guild being synced left: keep it out of the chunks still to come."""
        self._removed.setdefault(guild_id, set()).add(user_id)

    def forget_removed(self, guild_id: int) -> None:
        """The guild's sync has ended: its removals no longer need remembering."""
        self._removed.pop(guild_id, None)

    def _abandon_buffering(self) -> None:
        """The valve's shedder: give up the syncs holding chunks, the largest first, until it is back to half."""
        for request in sorted(self._requests.values(), key=lambda r: r.queued, reverse=True):
            if not self._valve.above_resume_mark() or request.queued == 0:
                return
            log.warning(
                "sync.abandoned guild=%d chunks_dropped_members=%d: the database is behind, resync later",
                request.guild_id,
                request.queued,
            )
            request.abandon()

    # Reading

    def gateway_wait(self, guild_id: int) -> float:
        """Roughly how long a request for the guild would wait for its connection's command budget."""
        return self._requester.gateway_wait(guild_id)

    async def read(self, progress: SyncProgress) -> None:
        """Request the whole list (again after a RATE_LIMITED, within Discord's window) and write its chunks.

        Raise GatewayRateLimitedError after MAX_GATEWAY_ATTEMPTS refusals, TimeoutError when chunks stop coming.
        """
        guild_id = progress.guild_id
        for attempt in range(1, MAX_GATEWAY_ATTEMPTS + 1):
            await self._window.wait_turn(progress)
            request = ChunkRequest(guild_id, NONCE_PREFIX + secrets.token_hex(12), self._valve)
            self._requests[request.nonce] = request
            try:
                await self._requester.request_whole_list(guild_id, request.nonce)
                # After the send: the request may have waited for the command budget first.
                await self._window.note_sent(guild_id)
                await self._drain(request, progress)
            finally:
                del self._requests[request.nonce]
                request.drop_queued()
            if request.rate_limited is None:
                return
            log.warning(
                "sync.rate_limited guild=%d retry_after=%.1f attempt=%d",
                guild_id,
                request.rate_limited,
                attempt,
            )
            await self._window.note_rate_limited(guild_id, request.rate_limited)
        raise GatewayRateLimitedError(request.rate_limited or self._window.cooldown)

    async def _drain(self, request: ChunkRequest, progress: SyncProgress) -> None:
        while True:
            chunk = await self._next_chunk(request)
            if request.abandoned:
                raise SyncAbandonedError(request.guild_id)
            if chunk is None:
                return
            members = request.take(chunk)
            try:
                await write_members(self._store, members, progress, chunk[0])
            finally:
                self._valve.shrink(len(members))

    async def _next_chunk(self, request: ChunkRequest) -> tuple[datetime, list[Member]] | None:
        while True:
            # Every wait is bounded: a request Discord never answers must not hang the sync.
            try:
                return await asyncio.wait_for(request.chunks.get(), self._chunk_timeout)
            except TimeoutError:
                # Unless we stopped reading: then the chunks wait at Discord for the database to catch up.
                if not self._valve.paused_within(self._chunk_timeout):
                    raise
