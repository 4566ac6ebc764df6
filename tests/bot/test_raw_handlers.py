"""Our raw gateway handlers sit in discord.py's parser table: a bad payload must not escape them."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.client import GuildlinkBot
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
        parsers = bot._connection.parsers
        parsers["RATE_LIMITED"]("not an object")
        # A chunk nobody of ours asked for goes on to discord.py's own parser.
        parsers["GUILD_MEMBERS_CHUNK"]({"guild_id": "1", "nonce": "someone-else", "members": []})
    assert any(record.getMessage().startswith("bot.raw_event_failed") for record in caplog.records)
    assert all(record.levelno <= logging.ERROR for record in caplog.records)
