"""Starting guildlink against a sandbox in a test, and walking the consent flow as a browser would."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import parse_qsl, urlsplit

import aiohttp

from config import Settings, parse_settings
from lifecycle import Running, run_guildlink
from sandbox import Sandbox

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_for(
    sandbox: Sandbox, data_dir: Path, *, port: int, https: bool = False, env: Mapping[str, str] | None = None
) -> Settings:
    """Settings that point guildlink at `sandbox`, registering our redirect URI there."""
    scheme = "https" if https else "http"
    redirect_uri = f"{scheme}://localhost:{port}/authorize-discord"
    if redirect_uri not in sandbox.options.redirect_uris:
        sandbox.options.redirect_uris.append(redirect_uri)
    return parse_settings(
        {
            "DISCORD_CLIENT_ID": str(sandbox.client_id),
            "DISCORD_CLIENT_SECRET": sandbox.client_secret,
            "DISCORD_BOT_TOKEN": sandbox.bot_token,
            "DISCORD_BASE_URL": sandbox.base_url,
            "DISCORD_REDIRECT_URI": redirect_uri,
            "DATABASE_URL": f"sqlite:///{data_dir / 'guildlink.db'}",
            "DATA_DIR": str(data_dir),
            "API_TOKEN": "test-api-token-" + "x" * 32,
            **(env or {}),
        }
    )


# discord.py waits this long after the last GUILD_CREATE before READY; the sandbox sends them all at once.
GUILD_READY_TIMEOUT = 0.1


@contextlib.asynccontextmanager
async def started(
    settings: Settings, *, ready: bool = True, cooldown: float = 30.0, identify_interval: float = 0.0
) -> AsyncIterator[Running]:
    """guildlink running; with `ready`, its gateway session is READY before the test goes on.

    `identify_interval` 0 matches make_sandbox's default; a test about the IDENTIFY rate sets both.
    """
    async with run_guildlink(
        settings,
        member_list_cooldown=cooldown,
        identify_interval=identify_interval,
        guild_ready_timeout=GUILD_READY_TIMEOUT,
    ) as running:
        if ready:
            await eventually(lambda: _ready(running), within=15)
        yield running


async def _ready(running: Running) -> bool:
    if running.bot_task.done():
        running.bot_task.result()
    return running.bot.is_ready()


async def eventually(check: Callable[[], Awaitable[T]], *, within: float = 5.0, interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; fail with the last value after `within` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = await check()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {within}s (last value: {value!r})")
        await asyncio.sleep(interval)


@dataclass
class Browser:
    """An HTTP client with a cookie jar, following the flow one redirect at a time."""

    session: aiohttp.ClientSession
    sandbox: Sandbox
    web_url: str

    async def start_link(self, path: str = "/link") -> dict[str, str]:
        """GET /link; return the consent page's query parameters."""
        async with self.session.get(self.web_url + path, allow_redirects=False) as response:
            assert response.status == 302, await response.text()
            location = response.headers["Location"]
        assert location.startswith(self.sandbox.base_url + "/oauth2/authorize?")
        return dict(parse_qsl(urlsplit(location).query))

    async def callback(self, location: str) -> tuple[int, str]:
        """Follow Discord's redirect to our callback; return status and page."""
        async with self.session.get(location, allow_redirects=False) as response:
            return response.status, await response.text()

    async def link_guild(self, guild_id: int) -> tuple[int, str]:
        consent = await self.start_link()
        return await self.callback(self.sandbox.authorize(consent, guild_id))


@contextlib.asynccontextmanager
async def browser(
    sandbox: Sandbox, running: Running, *, jar: aiohttp.CookieJar | None = None
) -> AsyncIterator[Browser]:
    """A browser; pass the same `jar` to be the same browser across restarts."""
    # unsafe=True: the jar must keep cookies for localhost too.
    if jar is None:
        jar = aiohttp.CookieJar(unsafe=True)
    connector = aiohttp.TCPConnector(ssl=False)
    async with aiohttp.ClientSession(cookie_jar=jar, connector=connector, connector_owner=True) as session:
        yield Browser(session, sandbox, running.web_url)


def token_requests(sandbox: Sandbox) -> int:
    """Requests to exchange a code (or refresh a token): the start-up client credentials check is not one."""
    return sum(
        1
        for r in sandbox.requests
        if r.method == "POST" and r.path.endswith("/oauth2/token") and r.grant_type != "client_credentials"
    )


@dataclass
class World:
    """A sandbox, guildlink running against it, and one browser."""

    sandbox: Sandbox
    running: Running
    browser: Browser

    async def link_and_sync(self, guild_id: int, *, within: float = 20) -> None:
        """Link the guild through the consent flow and wait until its members are synced."""
        status, page = await self.browser.link_guild(guild_id)
        assert status == 200, page
        await eventually(lambda: is_synced(self.running, guild_id), within=within)


async def is_synced(running: Running, guild_id: int) -> bool:
    sync = await running.store.get_sync_state(guild_id)
    return sync is not None and sync.phase.value == "synced"


@contextlib.asynccontextmanager
async def world(
    sandbox: Sandbox,
    data_dir: Path,
    *,
    ready: bool = True,
    cooldown: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> AsyncIterator[World]:
    """guildlink started against `sandbox` (settings from `settings_for`), with a browser on it."""
    settings = settings_for(sandbox, data_dir, port=free_port(), env=env)
    async with started(settings, ready=ready, cooldown=cooldown) as running, browser(sandbox, running) as b:
        yield World(sandbox, running, b)
