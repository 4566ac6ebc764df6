"""A benchmark worker's two sides against the sandbox: bare discord.py, and GuildlinkBot set up as main.py would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import discord

from bot.client import GuildlinkBot
from bot.discord_internals import discord_endpoint, use_gateway_url
from config import parse_settings
from store import open_store


async def run_bare(client: discord.Client, sandbox: dict[str, Any]) -> None:
    """Connect a bare client to the sandbox's gateway and return when it is closed (by its own handlers)."""
    with discord_endpoint(sandbox["base_url"]):
        await client.login(sandbox["bot_token"])
        _, url, _ = await client.http.get_bot_gateway()
        use_gateway_url(url)
        async with client:
            await client.connect()


@contextlib.asynccontextmanager
async def running_bot(sandbox: dict[str, Any], database_url: str) -> AsyncIterator[GuildlinkBot]:
    """The bot logged in to the sandbox and ready, its store at `database_url`; closed on exit."""
    # Imported here, so that a worker's bare side does not load guildlink's web stack.
    from lifecycle import tune_garbage_collector

    tune_garbage_collector()
    settings = parse_settings(
        {
            "DISCORD_CLIENT_ID": str(sandbox["client_id"]),
            "DISCORD_CLIENT_SECRET": sandbox["client_secret"],
            "DISCORD_BOT_TOKEN": sandbox["bot_token"],
            "DISCORD_BASE_URL": sandbox["base_url"],
            "DISCORD_REDIRECT_URI": sandbox["redirect_uris"][0],
            "DATABASE_URL": database_url,
        }
    )
    async with open_store(settings.database_url) as store:
        with discord_endpoint(sandbox["base_url"]):
            async with GuildlinkBot(settings, store) as bot:
                task = asyncio.create_task(bot.start(settings.bot_token.reveal()))
                while not bot.is_ready():
                    if task.done():
                        task.result()
                    await asyncio.sleep(0.01)
                try:
                    yield bot
                finally:
                    await bot.close()
                    await asyncio.gather(task, return_exceptions=True)
