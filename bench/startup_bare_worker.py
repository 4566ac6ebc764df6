"""The start-up baseline: a bare discord.py client, configured as guildlink's bot is, that says when it is ready.

`python -m bench.startup_bare_worker` with DISCORD_BOT_TOKEN and DISCORD_BASE_URL in the environment; prints
`{"guilds": N}` when on_ready fires, then closes on SIGTERM. It imports nothing of guildlink.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route


class BareClient(discord.Client):
    """Same intents, member cache and chunking settings as GuildlinkBot; no store, no web, no sync."""

    def __init__(self, base_url: str) -> None:
        intents = discord.Intents.none()
        intents.guilds = True
        intents.members = True
        super().__init__(
            intents=intents,
            member_cache_flags=discord.MemberCacheFlags.none(),
            chunk_guilds_at_startup=False,
            status=discord.Status.online,
        )
        self.base_url = base_url

    async def login(self, token: str) -> None:
        # What bot/discord_endpoint.py does, written out so the baseline loads none of guildlink's modules.
        Route.BASE = f"{self.base_url}/api/v10"
        await super().login(token)
        _, url, _ = await self.http.get_bot_gateway()
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(url)

    async def on_ready(self) -> None:
        print(json.dumps({"guilds": len(self.guilds)}), flush=True)


async def run(token: str, base_url: str) -> int:
    """Log in and hold the session until SIGTERM or SIGINT; 1 if the session ended by itself."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with BareClient(base_url) as client:
        session = asyncio.create_task(client.start(token))
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({session, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        ended_by_itself = session.done()
        await client.close()
        await session
    return 1 if ended_by_itself else 0


def main() -> int:
    return asyncio.run(run(os.environ["DISCORD_BOT_TOKEN"], os.environ["DISCORD_BASE_URL"]))


if __name__ == "__main__":
    sys.exit(main())
