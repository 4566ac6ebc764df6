"""Every use of discord.py's private or undocumented parts, each with why no public API serves (discord.py 2.7.1, pinned).

discord.py's `HTTPClient` (`client.http`), `Route`, `DiscordWebSocket` and every underscore name count as private:
none is documented, and any may change in a minor release. Review this module whenever discord.py is upgraded
(tests/bot/test_discord_internals.py fails once it leaves 2.7.x).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import discord
import yarl
from aiohttp.client_proto import ResponseHandler
from aiohttp.connector import Connection
from discord.gateway import DiscordWebSocket, KeepAliveHandler
from discord.http import Route

# The discord.py release this module was last reviewed against: its private parts are read as they are there.
REVIEWED_DISCORD_PY = "2.7"


@contextlib.contextmanager
def discord_endpoint(base_url: str | None) -> Iterator[None]:
    """Point discord.py's REST (and, via `use_gateway_url`, its gateway) at `base_url`; restore both on exit.

    discord.py has no per-client base URL: `Route.BASE` and `DiscordWebSocket.DEFAULT_GATEWAY` are class
    attributes it reads for every client. One process talks to one Discord, and restoring them on exit keeps
    one test's sandbox from leaking into the next.
    """
    saved_base, saved_gateway = Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY
    if base_url is not None:
        Route.BASE = f"{base_url}/api/v10"
    try:
        yield
    finally:
        Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY = saved_base, saved_gateway


def use_gateway_url(url: str) -> None:
    """Dial `url` for every shard: discord.py uses DEFAULT_GATEWAY when the shard count is given."""
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)


def parser_table(client: discord.Client) -> dict[str, Callable[[Any], None]]:
    """The gateway dispatch parsers, keyed by event name, to take raw member dispatches as they arrive.

    No public hook serves: with its member cache off discord.py builds a Member per chunk entry only to throw
    it away, drops GUILD_MEMBER_UPDATE for members it doesn't hold, and ignores RATE_LIMITED.
    """
    return client._connection.parsers


def websocket_of_guild(client: discord.Client, guild_id: int) -> DiscordWebSocket | None:
    """The shard connection that carries `guild_id`, to send it an op 8 within our own command budget.

    `Guild.chunk()` is the public way, but it needs the guild object, waits on discord.py's own chunk
    collector (which a RATE_LIMITED answer leaves hanging) and builds Member objects we do not keep.
    """
    try:
        return client._get_websocket(guild_id)
    except (KeyError, AttributeError):
        return None


def websocket_of_shard(client: discord.AutoShardedClient, shard_id: int) -> DiscordWebSocket | None:
    """A shard's connection: `ShardInfo` exposes its latency and closed state, not its keep-alive."""
    info = client.get_shard(shard_id)
    return getattr(info._parent, "ws", None) if info is not None else None


def socket_open(ws: DiscordWebSocket | None) -> bool:
    """Whether the connection's WebSocket is open right now.

    `Client.is_ready()` stays true while discord.py reconnects after a drop (it keeps READY's cache), and
    the public on_disconnect event arrives as a task that may still be pending at shutdown.
    """
    socket = getattr(ws, "socket", None) if ws is not None else None
    return socket is not None and not socket.closed


def unanswered_heartbeat_seconds(ws: DiscordWebSocket | None) -> float:
    """How long the connection's last heartbeat has waited for its ACK (0 once answered, or with no session).

    `latency` only changes when an ACK arrives, so a silent Discord keeps showing the last good latency;
    the keep-alive thread's send and ACK times are the only record of a heartbeat left unanswered.
    """
    keep_alive = getattr(ws, "_keep_alive", None) if ws is not None else None
    if keep_alive is None:
        return 0.0
    last_send: float = keep_alive._last_send
    last_ack: float = keep_alive._last_ack
    return 0.0 if last_ack >= last_send else time.perf_counter() - last_send


async def close_orphaned_connections(client: discord.Client) -> int:
    """Close this client's connections that discord.py no longer tracks, heartbeat thread first; return how many.

    A shard's connection starts its heartbeat thread on HELLO, before IDENTIFY; closed in that window (the
    IDENTIFY pacing, a reconnect), the connection is in no shard yet, so `close()` never reaches it: its
    socket stays open and its thread wakes up to 41 s later to post to a closed event loop. The running
    heartbeat threads are the only handle on such a connection.
    """
    orphans = running_heartbeats(client)
    for ws in orphans:
        await ws.close(code=1000)
    return len(orphans)


def set_reading_paused(ws: DiscordWebSocket | None, paused: bool) -> None:
    """Stop (or resume) reading the connection's socket, so that TCP holds further events at Discord.

    The read valve's back-pressure: dispatches reach us synchronously from discord.py's reader, which cannot
    be made to wait; pausing the transport under aiohttp's WebSocket is the one way to slow it. aiohttp
    resumes it by itself whenever it hands over a frame it had buffered, so a pause is applied again at each
    dispatch read while paused.
    """
    protocol = _socket_protocol(ws)
    if protocol is not None:
        (protocol.pause_reading if paused else protocol.resume_reading)()


def socket_reading(ws: DiscordWebSocket | None) -> bool:
    """Whether the connection's transport is reading (not paused by `set_reading_paused`); False with none."""
    protocol = _socket_protocol(ws)
    transport = protocol.transport if protocol is not None else None
    return transport is not None and transport.is_reading()


def _socket_protocol(ws: DiscordWebSocket | None) -> ResponseHandler | None:
    """The asyncio protocol under discord.py's aiohttp WebSocket: its connection's, the one aiohttp pauses.

    (The WebSocket's own `_protocol` is the negotiated subprotocol's name, not this.)
    """
    socket = getattr(ws, "socket", None) if ws is not None else None
    connection = getattr(socket, "_conn", None)
    return connection.protocol if isinstance(connection, Connection) else None


def heartbeat_timeout(client: discord.Client) -> float:
    """discord.py's `heartbeat_timeout` option: with nothing read for this long, it drops the session.

    The option is public to set and kept only on the private connection state.
    """
    return float(client._connection.heartbeat_timeout)


def has_event_waiters(client: discord.Client, event: str) -> bool:
    """Whether a `wait_for(event)` is waiting: the one other thing `Client.dispatch` serves.

    The public `wait_for` keeps its futures in `_listeners`; no public API asks whether any are there.
    """
    return bool(client._listeners.get(event))


def quiet_voice_warnings() -> None:
    """Silence discord.py's warnings that its voice libraries (PyNaCl, davey) are missing, for every later client.

    This bot never joins a voice channel. The switches are undocumented class attributes of `VoiceClient`,
    read when a client is constructed; no client option turns the warnings off.
    """
    set_voice_warnings(enabled=False)


def set_voice_warnings(*, enabled: bool) -> None:
    """Arm (tests: as in a fresh process) or disarm discord.py's one-time voice library warnings."""
    discord.VoiceClient.warn_nacl = enabled
    discord.VoiceClient.warn_dave = enabled


def rest_user_agent(client: discord.Client) -> str:
    """The User-Agent discord.py's REST client sends, so that our own probe of Discord introduces itself alike.

    Discord asks every bot for a `DiscordBot (url, version)` agent; discord.py builds its own only on its
    undocumented `HTTPClient`.
    """
    return str(client.http.user_agent)


async def leave_guild(client: discord.Client, guild_id: int) -> None:
    """DELETE /users/@me/guilds/{id}, by id: the public `Guild.leave()` needs the guild in discord.py's cache.

    A guild this process does not hold (not arrived yet, another process's shard, gone from the session) has
    no `Guild` object here, and the bot must still leave it.
    """
    await client.http.leave_guild(guild_id)


async def fetch_member_page(
    client: discord.Client, guild_id: int, *, limit: int, after: int
) -> Sequence[Mapping[str, Any]]:
    """GET /guilds/{id}/members?limit=&after=, as raw payloads.

    The public `Guild.fetch_members` needs the cached guild and builds a Member object per entry, which the
    store's reader would only throw away.
    """
    members: Sequence[Mapping[str, Any]] = await client.http.get_members(guild_id, limit, after or None)
    return members


async def fetch_member_payload(client: discord.Client, guild_id: int, user_id: int) -> Mapping[str, Any]:
    """GET /guilds/{g}/members/{u}, raw: the public `Guild.fetch_member` needs the guild in the cache."""
    member: Mapping[str, Any] = await client.http.get_member(guild_id, user_id)
    return member


async def add_member_role(
    client: discord.Client, guild_id: int, user_id: int, role_id: int, *, reason: str | None
) -> None:
    """PUT /guilds/{g}/members/{u}/roles/{r} by ids: the public `Member.add_roles` needs a cached Member.

    With the member cache off there is none, and fetching one first would double the requests per change.
    """
    await client.http.add_role(guild_id, user_id, role_id, reason=reason)


async def remove_member_role(
    client: discord.Client, guild_id: int, user_id: int, role_id: int, *, reason: str | None
) -> None:
    """DELETE /guilds/{g}/members/{u}/roles/{r} by ids, for the reason `add_member_role` gives."""
    await client.http.remove_role(guild_id, user_id, role_id, reason=reason)


async def request_whole_member_list(ws: DiscordWebSocket, guild_id: int, nonce: str) -> None:
    """Send REQUEST_GUILD_MEMBERS (op 8) for every member, tagged with `nonce`, on the guild's connection.

    `Guild.chunk()` is the public way; see `websocket_of_guild` for why it does not serve.
    """
    await ws.request_chunks(guild_id, query="", limit=0, nonce=nonce)


def gateway_session_id(client: discord.Client) -> str | None:
    """The session id of an unsharded client's gateway connection (tests: a RESUME names it); None with none.

    discord.py keeps it on its undocumented `DiscordWebSocket` only.
    """
    ws = getattr(client, "ws", None)
    session_id = getattr(ws, "session_id", None)
    return str(session_id) if session_id is not None else None


def running_heartbeats(client: discord.Client) -> list[DiscordWebSocket]:
    """The connections of `client` whose heartbeat thread still runs (see `close_orphaned_connections`)."""
    return [
        thread.ws
        for thread in threading.enumerate()
        if isinstance(thread, KeepAliveHandler)
        and not thread._stop_ev.is_set()
        and getattr(thread.ws, "_connection", None) is client._connection
    ]
