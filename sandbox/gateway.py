"""The Gateway: WebSocket sessions, zlib-stream compression, resume buffers and command limits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import secrets
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import WSMsgType, web

from . import payloads
from .world import Member, World

log = logging.getLogger(__name__)

DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE_UPDATE, VOICE_STATE_UPDATE = 0, 1, 2, 3, 4
RESUME, RECONNECT, REQUEST_GUILD_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 6, 7, 8, 9, 10, 11

GUILDS = 1 << 0
GUILD_MEMBERS = 1 << 1
# Every intent bit Discord defines; anything else is closed with 4013.
VALID_INTENTS = sum(1 << b for b in (*range(17), 20, 21, 24, 25))

HEARTBEAT_INTERVAL_MS = 41_250
COMMAND_LIMIT = 120
COMMAND_WINDOW = 60.0
CHUNK_SIZE = 1000
QUERY_LIMIT = 100
RESUME_WINDOW = 180.0
# Per session; chunks of a huge guild would otherwise pin hundreds of MB just in case of a resume.
RESUME_BUFFER_BYTES = 64 * 1024 * 1024
TRACE = ['["sandbox-gateway",{"micros":0}]']


@dataclass
class GatewayCommand:
    """One command a client sent on the gateway."""

    session_id: str | None
    op: int
    data: Any
    time: float


class GatewaySettings(Protocol):
    """The run-time settings the gateway reads (SandboxOptions satisfies it)."""

    members_intent_enabled: bool
    member_list_cooldown: float
    max_guilds_per_session: int
    identify_interval: float
    max_concurrency: int


@dataclass
class _Close:
    code: int
    reason: str


class Connection:
    """One WebSocket: an ordered, optionally zlib-stream compressed, outgoing queue."""

    def __init__(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport | None, compress: bool
    ) -> None:
        self.ws = ws
        self.transport = transport
        self.session: Session | None = None
        self.closing = False
        self.received: deque[float] = deque()
        self._compressor = zlib.compressobj() if compress else None
        self._queue: asyncio.Queue[bytes | _Close] = asyncio.Queue()
        self.writable = asyncio.Event()
        self.writable.set()
        self.writer = asyncio.create_task(self._write_loop())

    def send(self, payload: bytes) -> None:
        """Queue one message (already serialized JSON)."""
        if not self.closing:
            self._queue.put_nowait(payload)

    def send_op(self, op: int, d: Any) -> None:
        """Queue a non-dispatch message."""
        self.send(payloads.dumps({"t": None, "s": None, "op": op, "d": d}))

    def close(self, code: int, reason: str) -> None:
        """Close with a code once everything queued so far is sent."""
        if not self.closing:
            self._queue.put_nowait(_Close(code, reason))
            self.closing = True

    def drop(self) -> None:
        """Cut the TCP connection without a close frame, as a network failure would."""
        self.closing = True
        self.writable.set()
        self.writer.cancel()
        if self.transport is not None:
            self.transport.abort()

    async def wait_writable(self) -> None:
        """Wait until the outgoing queue is short (flow control for long chunk streams)."""
        if self._queue.qsize() > 4 and not self.closing:
            self.writable.clear()
            await self.writable.wait()

    async def finish(self) -> None:
        """Stop the writer (the socket is gone)."""
        self.closing = True
        self.writable.set()
        self.writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.writer

    async def _write_loop(self) -> None:
        try:
            while True:
                item = await self._queue.get()
                if self._queue.qsize() <= 4:
                    self.writable.set()
                if isinstance(item, _Close):
                    await self.ws.close(code=item.code, message=item.reason.encode())
                    return
                if self._compressor is not None:
                    data = self._compressor.compress(item) + self._compressor.flush(zlib.Z_SYNC_FLUSH)
                    await self.ws.send_bytes(data)
                else:
                    await self.ws.send_str(item.decode())
        except (ConnectionError, RuntimeError) as exc:
            log.debug("gateway.write_failed error=%r", exc)
        finally:
            self.closing = True
            self.writable.set()


@dataclass
class Session:
    """A gateway session: outlives its socket so that a client can RESUME it."""

    id: str
    intents: int
    shard_id: int
    shard_count: int
    large_threshold: int
    shard_given: bool
    seq: int = 0
    conn: Connection | None = None
    resumable: bool = True
    disconnected_at: float | None = None
    buffer: deque[tuple[int, bytes]] = field(default_factory=deque)
    buffered_bytes: int = 0

    def owns(self, guild_id: int) -> bool:
        """Whether this session's shard carries the guild."""
        return (guild_id >> 22) % self.shard_count == self.shard_id

    def dispatch(self, event: str, data: Any) -> None:
        """Send (or, while disconnected, just buffer) one dispatch event."""
        self.seq += 1
        payload = payloads.dumps({"t": event, "s": self.seq, "op": DISPATCH, "d": data})
        self.buffer.append((self.seq, payload))
        self.buffered_bytes += len(payload)
        while self.buffered_bytes > RESUME_BUFFER_BYTES and len(self.buffer) > 1:
            _, old = self.buffer.popleft()
            self.buffered_bytes -= len(old)
        if self.conn is not None:
            self.conn.send(payload)

    def replay_after(self, seq: int) -> list[bytes] | None:
        """Events after `seq`, or None when some of them are no longer buffered."""
        if seq > self.seq:
            return None
        if seq == self.seq:
            return []
        if not self.buffer or self.buffer[0][0] > seq + 1:
            return None
        return [p for s, p in self.buffer if s > seq]


class Gateway:
    """Every gateway connection and session of the sandbox's one bot."""

    def __init__(
        self,
        world: World,
        settings: GatewaySettings,
        bot_token: str,
        record: Callable[[GatewayCommand], None],
    ) -> None:
        self.world = world
        self.settings = settings
        self.bot_token = bot_token
        self.record = record
        self.url = ""
        self.resume_url = ""
        self.sessions: dict[str, Session] = {}
        self.connections: set[Connection] = set()
        self._member_list_at: dict[int, float] = {}
        # When each max_concurrency bucket last accepted an IDENTIFY.
        self._identified_at: dict[int, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    # -- connections -----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """The WebSocket endpoint."""
        compress = request.query.get("compress")
        encoding = request.query.get("encoding", "json")
        ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
        await ws.prepare(request)
        conn = Connection(ws, request.transport, compress == "zlib-stream")
        self.connections.add(conn)
        log.info("gateway.connect compress=%s", compress)
        try:
            if encoding != "json" or compress not in (None, "zlib-stream"):
                conn.close(4002, "Error while decoding payload.")
            else:
                conn.send_op(HELLO, {"heartbeat_interval": HEARTBEAT_INTERVAL_MS, "_trace": TRACE})
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    break
                if conn.closing:
                    continue
                self._on_message(conn, msg.data)
        finally:
            self.connections.discard(conn)
            session = conn.session
            if session is not None and session.conn is conn:
                session.conn = None
                session.disconnected_at = time.monotonic()
            await conn.finish()
            log.info("gateway.disconnect session=%s code=%s", session.id if session else None, ws.close_code)
        return ws

    def _on_message(self, conn: Connection, raw: str | bytes) -> None:
        now = time.monotonic()
        window = conn.received
        while window and now - window[0] > COMMAND_WINDOW:
            window.popleft()
        if len(window) >= COMMAND_LIMIT:
            log.warning("gateway.rate_limited session=%s", conn.session.id if conn.session else None)
            conn.close(4008, "Rate limited.")
            return
        window.append(now)
        try:
            msg = json.loads(raw)
            op = msg["op"]
            d = msg.get("d")
            if not isinstance(op, int):
                raise TypeError("op")
        except (ValueError, KeyError, TypeError):
            conn.close(4002, "Error while decoding payload.")
            return
        self.record(GatewayCommand(conn.session.id if conn.session else None, op, d, time.time()))
        if op == HEARTBEAT:
            conn.send_op(HEARTBEAT_ACK, None)
        elif op == IDENTIFY:
            if conn.session is not None:
                conn.close(4005, "Already authenticated.")
            else:
                self._identify(conn, d)
        elif op == RESUME:
            self._resume(conn, d)
        elif op in (PRESENCE_UPDATE, VOICE_STATE_UPDATE, REQUEST_GUILD_MEMBERS):
            if conn.session is None:
                conn.close(4003, "Not authenticated.")
            elif op == REQUEST_GUILD_MEMBERS:
                self._request_members(conn.session, d)
        else:
            conn.close(4001, "Unknown opcode.")

    def _token_ok(self, token: Any) -> bool:
        if not isinstance(token, str):
            return False
        token = token.removeprefix("Bot ")
        return secrets.compare_digest(token.encode(), self.bot_token.encode())

    def _identify(self, conn: Connection, d: Any) -> None:
        if not isinstance(d, dict) or not self._token_ok(d.get("token")):
            conn.close(4004, "Authentication failed.")
            return
        intents = d.get("intents")
        if (
            isinstance(intents, bool)
            or not isinstance(intents, int)
            or intents < 0
            or intents & ~VALID_INTENTS
        ):
            conn.close(4013, "Invalid intent(s).")
            return
        if intents & GUILD_MEMBERS and not self.settings.members_intent_enabled:
            conn.close(4014, "Disallowed intent(s).")
            return
        shard = d.get("shard")
        shard_given = shard is not None
        if shard is None:
            shard = [0, 1]
        if (
            not isinstance(shard, list)
            or len(shard) != 2
            or not all(isinstance(x, int) and not isinstance(x, bool) for x in shard)
            or not 0 <= shard[0] < shard[1]
        ):
            conn.close(4010, "Invalid shard.")
            return
        bucket = shard[0] % max(self.settings.max_concurrency, 1)
        now = time.monotonic()
        last = self._identified_at.get(bucket)
        if last is not None and now - last < self.settings.identify_interval:
            # Discord's answer to an IDENTIFY inside the bucket's window: op 9, the client waits and tries again.
            log.warning(
                "gateway.identify_too_soon bucket=%d wait=%.2f",
                bucket,
                last + self.settings.identify_interval - now,
            )
            conn.send_op(INVALID_SESSION, False)
            return
        world = self.world
        held = sum(1 for gid in world.bot_guilds if (gid >> 22) % shard[1] == shard[0])
        if held > self.settings.max_guilds_per_session:
            log.warning(
                "gateway.sharding_required guilds=%d limit=%d", held, self.settings.max_guilds_per_session
            )
            conn.close(4011, "Sharding required.")
            return
        self._identified_at[bucket] = now
        threshold = d.get("large_threshold", 50)
        threshold = min(max(threshold if isinstance(threshold, int) else 50, 50), 250)
        self._expire_sessions()
        session = Session(
            id=secrets.token_hex(16),
            intents=intents,
            shard_id=shard[0],
            shard_count=shard[1],
            large_threshold=threshold,
            shard_given=shard_given,
            conn=conn,
        )
        self.sessions[session.id] = session
        conn.session = session
        guild_ids = sorted(gid for gid in world.bot_guilds if session.owns(gid))
        ready: dict[str, Any] = {
            "v": 10,
            "user": payloads.private_user(world.bot_user),
            "user_settings": {},
            "guilds": [{"id": str(gid), "unavailable": True} for gid in guild_ids],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.resume_url,
            "application": {"id": str(world.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["sandbox"],
            "auth": {},
            "_trace": TRACE,
        }
        if shard_given:
            ready["shard"] = [session.shard_id, session.shard_count]
        log.info("gateway.identify session=%s intents=%s shard=%s", session.id, intents, shard)
        session.dispatch("READY", ready)
        for gid in guild_ids:
            guild = world.guild(gid)
            if not guild.unavailable:
                session.dispatch(
                    "GUILD_CREATE",
                    payloads.gateway_guild(world, guild, large_threshold=threshold, join=False),
                )

    def _resume(self, conn: Connection, d: Any) -> None:
        if not isinstance(d, dict) or not self._token_ok(d.get("token")):
            conn.close(4004, "Authentication failed.")
            return
        self._expire_sessions()
        session = self.sessions.get(str(d.get("session_id")))
        seq = d.get("seq")
        replay = None
        if session is not None and session.resumable and isinstance(seq, int):
            replay = session.replay_after(seq)
        if session is None or replay is None:
            log.info("gateway.resume_refused session=%s seq=%s", d.get("session_id"), seq)
            conn.send_op(INVALID_SESSION, False)
            return
        old = session.conn
        if old is not None and old is not conn:
            old.session = None
            old.close(4009, "Session timed out.")
        for payload in replay:
            conn.send(payload)
        conn.session = session
        session.conn = conn
        session.disconnected_at = None
        log.info("gateway.resume session=%s seq=%s replayed=%s", session.id, seq, len(replay))
        session.dispatch("RESUMED", {"_trace": TRACE})

    def _expire_sessions(self) -> None:
        now = time.monotonic()
        for sid, session in list(self.sessions.items()):
            gone = session.disconnected_at is not None and now - session.disconnected_at > RESUME_WINDOW
            if gone or not session.resumable:
                del self.sessions[sid]

    # -- member requests -------------------------------------------------------------------------

    def _request_members(self, session: Session, d: Any) -> None:
        if not isinstance(d, dict):
            return
        raw_ids = d.get("guild_id")
        guild_ids: list[Any] = raw_ids if isinstance(raw_ids, list) else [raw_ids]
        nonce = d.get("nonce")
        if not isinstance(nonce, str) or len(nonce.encode()) > 32:
            nonce = None  # Discord drops a nonce longer than 32 bytes
        query = d.get("query")
        limit = d.get("limit", 0)
        limit = limit if isinstance(limit, int) and limit >= 0 else 0
        raw_users = d.get("user_ids")
        user_ids: list[int] | None = None
        if raw_users is not None:
            items = raw_users if isinstance(raw_users, list) else [raw_users]
            try:
                user_ids = [int(x) for x in items][:QUERY_LIMIT]
            except (TypeError, ValueError):
                return
        presences = bool(d.get("presences"))
        for raw in guild_ids:
            try:
                guild_id = int(raw)
            except (TypeError, ValueError):
                continue
            if guild_id not in self.world.bot_guilds or not session.owns(guild_id):
                log.info("gateway.request_members_ignored session=%s guild=%s", session.id, guild_id)
                continue
            whole = user_ids is None and query == "" and limit == 0
            if whole and not session.intents & GUILD_MEMBERS:
                log.info("gateway.request_members_without_intent session=%s guild=%s", session.id, guild_id)
                continue
            if whole:
                now = time.monotonic()
                last = self._member_list_at.get(guild_id)
                cooldown = self.settings.member_list_cooldown
                if last is not None and now - last < cooldown:
                    meta: dict[str, Any] = {"guild_id": str(guild_id)}
                    if nonce is not None:
                        meta["nonce"] = nonce
                    retry = round(cooldown - (now - last), 3)
                    log.info("gateway.member_list_rate_limited guild=%s retry_after=%s", guild_id, retry)
                    session.dispatch("RATE_LIMITED", {"opcode": 8, "retry_after": retry, "meta": meta})
                    continue
                self._member_list_at[guild_id] = now
            self._spawn(self._send_chunks(session, guild_id, query, limit, user_ids, nonce, presences))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send_chunks(
        self,
        session: Session,
        guild_id: int,
        query: Any,
        limit: int,
        user_ids: list[int] | None,
        nonce: str | None,
        presences: bool,
    ) -> None:
        guild = self.world.guild(guild_id)
        extra: dict[str, Any] = {}
        if nonce is not None:
            extra["nonce"] = nonce
        if presences:
            extra["presences"] = []
        if user_ids is not None:
            found: list[Member] = []
            not_found: list[str] = []
            for uid in user_ids:
                m = guild.get_member(uid)
                if m is None:
                    not_found.append(str(uid))
                else:
                    found.append(m)
            self._dispatch_chunk(session, guild_id, found, 0, 1, {**extra, "not_found": not_found})
            return
        if query == "" and limit == 0:
            total = guild.member_count
            count = max(1, math.ceil(total / CHUNK_SIZE))
            members = guild.iter_members()
            for index in range(count):
                size = CHUNK_SIZE if index < count - 1 else max(total - CHUNK_SIZE * index, 0)
                chunk = [m for _, m in zip(range(size), members, strict=False)]
                self._dispatch_chunk(session, guild_id, chunk, index, count, extra)
                conn = session.conn
                if conn is not None:
                    await conn.wait_writable()
                await asyncio.sleep(0)
            return
        text = str(query or "").lower()
        cap = min(limit or QUERY_LIMIT, QUERY_LIMIT)
        matched: list[Member] = []
        for scanned, m in enumerate(self._matching(guild.iter_members(), text), start=1):
            if m is not None:
                matched.append(m)
                if len(matched) >= cap:
                    break
            if scanned % 20_000 == 0:
                await asyncio.sleep(0)  # a query over a huge guild must not stall other sessions
        self._dispatch_chunk(session, guild_id, matched, 0, 1, extra)

    @staticmethod
    def _matching(members: Iterator[Member], text: str) -> Iterator[Member | None]:
        for m in members:
            names = (m.user.username, m.nick or "")
            yield m if any(n.lower().startswith(text) for n in names if n) else None

    def _dispatch_chunk(
        self,
        session: Session,
        guild_id: int,
        members: list[Member],
        index: int,
        count: int,
        extra: dict[str, Any],
    ) -> None:
        data: dict[str, Any] = {
            "guild_id": str(guild_id),
            "members": [payloads.member(m) for m in members],
            "chunk_index": index,
            "chunk_count": count,
            **extra,
        }
        session.dispatch("GUILD_MEMBERS_CHUNK", data)

    # -- fan-out of world changes ----------------------------------------------------------------

    def live_sessions(self, guild_id: int, intent: int = 0) -> list[Session]:
        """Sessions that should receive an event about this guild."""
        self._expire_sessions()
        return [s for s in self.sessions.values() if s.owns(guild_id) and (s.intents & intent) == intent]

    def member_event(self, guild_id: int, event: str, data: dict[str, Any]) -> None:
        """GUILD_MEMBER_ADD / UPDATE / REMOVE to sessions with the members intent."""
        for session in self.live_sessions(guild_id, GUILD_MEMBERS):
            session.dispatch(event, data)

    def role_update(self, guild_id: int, role: dict[str, Any]) -> None:
        """GUILD_ROLE_UPDATE to sessions with the guilds intent."""
        data = {"guild_id": str(guild_id), "role": role}
        for session in self.live_sessions(guild_id, GUILDS):
            session.dispatch("GUILD_ROLE_UPDATE", data)

    def guild_create(self, guild_id: int, *, join: bool) -> None:
        """GUILD_CREATE: a join (no `unavailable` key) or a guild coming back from an outage."""
        guild = self.world.guild(guild_id)
        for session in self.live_sessions(guild_id):
            data = payloads.gateway_guild(
                self.world, guild, large_threshold=session.large_threshold, join=join
            )
            session.dispatch("GUILD_CREATE", data)

    def guild_delete(self, guild_id: int, *, unavailable: bool) -> None:
        """GUILD_DELETE: the bot left (no `unavailable`) or an outage (`unavailable: true`)."""
        data: dict[str, Any] = {"id": str(guild_id)}
        if unavailable:
            data["unavailable"] = True
        for session in self.live_sessions(guild_id):
            session.dispatch("GUILD_DELETE", data)

    # -- faults ----------------------------------------------------------------------------------

    def drop_all(self) -> None:
        """Cut every socket without a close frame."""
        for conn in list(self.connections):
            conn.drop()

    def reconnect_all(self) -> None:
        """Op 7 to every identified connection."""
        for conn in list(self.connections):
            if conn.session is not None:
                conn.send_op(RECONNECT, None)

    def invalidate_all(self, resumable: bool) -> None:
        """Op 9 to every identified connection; a non-resumable one ends its session."""
        for conn in list(self.connections):
            session = conn.session
            if session is None:
                continue
            conn.send_op(INVALID_SESSION, resumable)
            if not resumable:
                session.resumable = False
                conn.session = None
                session.conn = None

    async def close(self) -> None:
        """Close every socket and stop background work."""
        for task in list(self._tasks):
            task.cancel()
        for conn in list(self.connections):
            conn.close(1001, "Sandbox stopping.")
        writers = [conn.writer for conn in self.connections]
        if writers:
            await asyncio.wait(writers, timeout=2.0)
        for conn in list(self.connections):
            conn.drop()
        self.sessions.clear()
