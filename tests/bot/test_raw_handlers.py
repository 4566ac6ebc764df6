"""Our raw gateway handlers sit in discord.py's parser table: a bad payload must not escape them."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bot.client import GuildlinkBot
from bot.discord_internals import parser_table
from config import parse_settings
from store import SqliteStore
from tests.test_config import valid_env


async def test_an_unreadable_dispatch_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        SqliteStore.open(tmp_path / "db.sqlite") as store,
        GuildlinkBot(parse_settings(valid_env()), store) as bot,
    ):
        parsers = parser_table(bot)
        parsers["RATE_LIMITED"]("not an object")
        # A chunk nobody of ours asked for goes on to discord.py's own parser.
        parsers["GUILD_MEMBERS_CHUNK"]({"guild_id": "1", "nonce": "someone-else", "members": []})
    assert any(record.getMessage().startswith("bot.raw_event_failed") for record in caplog.records)
    assert all(record.levelno <= logging.ERROR for record in caplog.records)


async def test_dispatch_still_reaches_handlers_and_waiters(tmp_path: Path) -> None:
    async with (
        SqliteStore.open(tmp_path / "db.sqlite") as store,
        GuildlinkBot(parse_settings(valid_env()), store) as bot,
    ):
        seen: list[str] = []
        handled = asyncio.Event()

        async def on_socket_event_type(event_type: str) -> None:
            seen.append(event_type)
            handled.set()

        bot.dispatch("socket_event_type", "GUILD_MEMBER_UPDATE")  # nothing handles it yet
        waiting = asyncio.ensure_future(bot.wait_for("socket_event_type"))
        await asyncio.sleep(0)
        bot.dispatch("socket_event_type", "GUILD_MEMBER_REMOVE")
        assert await asyncio.wait_for(waiting, 5) == "GUILD_MEMBER_REMOVE"
        bot.event(on_socket_event_type)
        bot.dispatch("socket_event_type", "GUILD_MEMBER_ADD")
        await asyncio.wait_for(handled.wait(), 5)
        assert seen == ["GUILD_MEMBER_ADD"]
