"""A server for bench.link_flows in its own process: guildlink's web app ("ours") or a bare token handler.

`python -m bench.link_server_worker ours|bare PORT DATA_DIR`, configured by the same environment variables as
`python main.py` (ours: its DATABASE_URL; with SHARD_COUNT and SHARD_IDS for some of the shards on PostgreSQL,
the fleet's hand-off, as lifecycle.py wires it, without a bot behind it). Prints `{"url": ...}` once listening;
each `cpu` line on stdin is answered with this process's CPU seconds so far; stdin's end or SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import resource
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from aiohttp import web

from config import Settings, parse_settings
from fleet_handoff import FleetLinker
from handoff import BotStatus, GuildLinker, HandoffStatusSource
from lifecycle import fleet_shards
from metrics import Metrics
from store import Link, PostgresStore, open_store
from web.access_log import PathOnlyAccessLogger
from web.app import create_app
from web.oauth import USER_AGENT
from web.rate_limit import ClientRateLimiter

SETTINGS_KEY = web.AppKey("settings", Settings)
SESSION_KEY = web.AppKey("session", aiohttp.ClientSession)


class NoLinker:
    """The hand-off without a bot: the benchmark measures the web face only, no member sync runs."""

    async def guild_linked(self, link: Link) -> None:
        return None

    async def guild_unlinked(self, guild_id: int) -> None:
        return None

    async def guild_abandoned(self, guild_id: int) -> bool:
        return True

    def __contains__(self, guild_id: object) -> bool:
        return False

    def is_syncing(self, guild_id: int) -> bool:
        return False


class ReadyBot:
    """A bot-status source that always reports a ready gateway session."""

    def bot_status(self) -> BotStatus:
        return BotStatus(ready=True, state="ready", latency_ms=None, guild_count=0)


def bare_app(settings: Settings) -> web.Application:
    """What any OAuth2 callback must do at least: one form-encoded token POST, nothing else."""
    app = web.Application()
    app[SETTINGS_KEY] = settings
    app.cleanup_ctx.append(_bare_session)
    app.router.add_get(settings.redirect_path, _bare_callback)
    return app


async def _bare_session(app: web.Application) -> AsyncIterator[None]:
    # Same client set-up as guildlink's OAuth client: one session per app, same User-Agent.
    async with aiohttp.ClientSession(headers={"User-Agent": USER_AGENT}) as session:
        app[SESSION_KEY] = session
        yield


async def _bare_callback(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    form = {
        "client_id": str(settings.client_id),
        "client_secret": settings.client_secret.reveal(),
        "grant_type": "authorization_code",
        "code": request.query.get("code", ""),
        "redirect_uri": settings.redirect_uri,
    }
    async with request.app[SESSION_KEY].post(
        f"{settings.api_base_url}/oauth2/token", data=form, timeout=aiohttp.ClientTimeout(total=10)
    ) as response:
        body = await response.json(content_type=None)
        status = response.status
    if status != 200 or "access_token" not in body:
        return web.Response(status=502, text=f"token endpoint answered {status}")
    return web.Response(text="linked")


async def serve(mode: str, port: int, data_dir: Path) -> None:
    """Serve `mode`'s app on 127.0.0.1:`port` until stdin closes or SIGTERM."""
    settings = parse_settings(dict(os.environ))
    async with contextlib.AsyncExitStack() as stack:
        if mode == "ours":
            store = await stack.enter_async_context(open_store(settings.database_url))
            linker: GuildLinker = NoLinker()
            handoff: HandoffStatusSource | None = None
            shards = fleet_shards(settings)
            if shards is not None:
                # A link for the other process's shard is a NOTIFY, and this one hears the other's.
                assert isinstance(store, PostgresStore)
                fleet = FleetLinker(store, store, NoLinker(), shards, Metrics())
                await stack.enter_async_context(fleet.running(settings.database_url))
                linker = handoff = fleet
            # Every simulated browser comes from 127.0.0.1: the per-client limit would measure itself.
            unlimited = ClientRateLimiter(burst=10**9, per_minute=10**9)
            app = create_app(
                settings,
                store,
                linker=linker,
                bot_status=ReadyBot(),
                rate_limit=unlimited,
                handoff_status=handoff,
            )
        else:
            app = bare_app(settings)
        # The access log class main.py uses, for both: at WARNING neither writes a line.
        runner = web.AppRunner(app, access_log_class=PathOnlyAccessLogger)
        await runner.setup()
        stack.push_async_callback(runner.cleanup)
        await web.TCPSite(runner, "127.0.0.1", port).start()
        print(json.dumps({"url": f"http://localhost:{port}"}), flush=True)
        await _answer_until_stopped()


async def _answer_until_stopped() -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def answer() -> None:
        while line := await reader.readline():
            if line.strip() == b"cpu":
                usage = resource.getrusage(resource.RUSAGE_SELF)
                print(json.dumps({"cpu_s": usage.ru_utime + usage.ru_stime}), flush=True)
        stop.set()

    answering = asyncio.create_task(answer())
    await stop.wait()
    answering.cancel()


def main() -> int:
    mode, port, data_dir = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
    if mode not in ("ours", "bare"):
        raise SystemExit(f"mode must be ours or bare, not {mode!r}")
    # LOG_LEVEL=WARNING as in the start-up benchmark: per-request INFO lines are not what is measured.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(serve(mode, port, data_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
