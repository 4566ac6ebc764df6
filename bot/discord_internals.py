"""Every use of discord.py's private attributes, each with why no public API serves (discord.py 2.7.1, pinned)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import discord


def parser_table(client: discord.Client) -> dict[str, Callable[[Any], None]]:
    """The gateway dispatch parsers, keyed by event name, to take raw member dispatches as they arrive.

    No public hook serves: with its member cache off discord.py builds a Member per chunk entry only to throw
    it away, drops GUILD_MEMBER_UPDATE for members it doesn't hold, and ignores RATE_LIMITED.
    """
    return client._connection.parsers


def unanswered_heartbeat_seconds(client: discord.Client) -> float:
    """How long the last heartbeat has waited for its ACK (0 once answered, or with no session).

    `Client.latency` only changes when an ACK arrives, so a silent Discord keeps showing the last good
    latency; the keep-alive thread's send and ACK times are the only record of a heartbeat left unanswered.
    """
    ws = client.ws
    keep_alive = getattr(ws, "_keep_alive", None) if ws is not None else None
    if keep_alive is None:
        return 0.0
    last_send: float = keep_alive._last_send
    last_ack: float = keep_alive._last_ack
    return 0.0 if last_ack >= last_send else time.perf_counter() - last_send


def gateway_socket_open(client: discord.Client) -> bool:
    """Whether the gateway's WebSocket is open right now.

    `Client.is_ready()` stays true while discord.py reconnects after a drop (it keeps READY's cache), and the
    public on_connect/on_disconnect events arrive as tasks that may still be pending at shutdown; the
    current DiscordWebSocket's `socket` is where the connection's state is.
    """
    ws = client.ws
    socket = getattr(ws, "socket", None) if ws is not None else None
    return socket is not None and not socket.closed
