"""guildlink's command line: runs the web server and the Discord bot in one event loop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import discord

from bot.reachability import DiscordRefusedTokenError, NotDiscordError
from config import (
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIRECT_URI,
    Settings,
    SettingsError,
    parse_settings,
    read_environment,
)
from lifecycle import CannotListenError, run_guildlink
from log_format import JsonFormatter
from printable import printable
from store import StoreUnavailableError, open_store, sqlite_path
from web.malformed_requests import quiet_malformed_requests
from web.oauth import InvalidClientError

log = logging.getLogger("guildlink")

EXIT_SETTINGS = 2
EXIT_DISCORD_REFUSED = 3
EXIT_DATABASE = 4
EXIT_CANNOT_LISTEN = 5
SANDBOX_DATABASE_URL = "sqlite:///data/sandbox.db"


def setup_logging(level: str, log_format: str = "text") -> None:
    """One handler on stderr: text lines, or (LOG_FORMAT=json) one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler])
    quiet_chatty_libraries(level)
    quiet_malformed_requests()


CHATTY_LIBRARIES = ("discord", "aiosqlite")


def quiet_chatty_libraries(level: str) -> None:
    """Keep discord.py and aiosqlite at INFO or above even when we debug.

    At DEBUG they log whole gateway payloads and every SQL statement with its parameters: tokens,
    OAuth2 states, members' data.
    """
    for name in CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(logging.INFO, logging.getLevelName(level)))


async def serve(settings: Settings) -> int:
    """Run until SIGINT/SIGTERM or until Discord refuses the bot; return the exit code."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        return await _serve_until_stopped(settings, stop)
    except CannotListenError as exc:
        print(
            f"guildlink: cannot listen on {exc.host}:{exc.port} ({exc.reason}); stop the program using it"
            " or set WEB_PORT (and the redirect URI's port) to a free one.",
            file=sys.stderr,
        )
        return EXIT_CANNOT_LISTEN
    except StoreUnavailableError as exc:
        print(
            f"guildlink: cannot use the database {settings.database_url}: {exc.reason}; make the file and its"
            " folder writable and free some disk space, or set DATABASE_URL to another file.",
            file=sys.stderr,
        )
        return EXIT_DATABASE


async def _serve_until_stopped(settings: Settings, stop: asyncio.Event) -> int:
    async with run_guildlink(settings) as running:
        log.info("guildlink.started web=%s", running.web_url)
        log.info(
            "guildlink.share_link url=%s/link: share this link with server admins", settings.public_base_url
        )
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({running.bot_task, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if running.bot_task.done():
            return _bot_exit_code(running.bot_task, settings)
        log.info("guildlink.stopping")
    return 0


def _bot_exit_code(task: asyncio.Task[None], settings: Settings) -> int:
    exc = task.exception()
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        print(
            "guildlink: Discord refused the Server Members intent (close code 4014).\n"
            "  Open the Developer Portal > your application > Bot > Privileged Gateway Intents,\n"
            "  switch on 'Server Members Intent', save, and start guildlink again.",
            file=sys.stderr,
        )
        return EXIT_DISCORD_REFUSED
    if isinstance(exc, InvalidClientError):
        print(
            "guildlink: Discord refused DISCORD_CLIENT_ID and DISCORD_CLIENT_SECRET (invalid_client): reset the"
            " secret on the Developer Portal's OAuth2 page and put it in DISCORD_CLIENT_SECRET.",
            file=sys.stderr,
        )
        return EXIT_SETTINGS
    if isinstance(exc, NotDiscordError):
        print(
            f"guildlink: DISCORD_BASE_URL {settings.discord_base_url} does not answer as Discord's API does ({exc});"
            " set it to https://discord.com or to a Discord-compatible server.",
            file=sys.stderr,
        )
        return EXIT_SETTINGS
    if isinstance(exc, discord.LoginFailure | DiscordRefusedTokenError):
        print(
            "guildlink: Discord refused DISCORD_BOT_TOKEN.\n"
            "  Open the Developer Portal > your application > Bot, reset the token, and put the new one in .env.",
            file=sys.stderr,
        )
        return EXIT_DISCORD_REFUSED
    if exc is not None:
        log.error("guildlink.bot_failed error=%s", type(exc).__name__, exc_info=exc)
        return 1
    log.error("guildlink.bot_stopped: the gateway session ended")
    return 1


async def serve_with_sandbox(env: dict[str, str], *, members: int, guilds: int) -> int:
    """Start the local Discord in this process and point guildlink at it: no Discord account needed."""
    from sandbox import Sandbox, SandboxOptions

    redirect_uri = env.get("DISCORD_REDIRECT_URI") or DEFAULT_REDIRECT_URI
    async with Sandbox(
        SandboxOptions(redirect_uris=[redirect_uri], members=members, guilds=guilds)
    ) as sandbox:
        env = env | {
            "DISCORD_CLIENT_ID": str(sandbox.client_id),
            "DISCORD_CLIENT_SECRET": sandbox.client_secret,
            "DISCORD_BOT_TOKEN": sandbox.bot_token,
            "DISCORD_BASE_URL": sandbox.base_url,
            "DATABASE_URL": env.get("SANDBOX_DATABASE_URL") or SANDBOX_DATABASE_URL,
        }
        settings = parse_settings(env)
        print(
            f"Sandbox Discord running at {sandbox.base_url} ({guilds} servers of {members} members).\n"
            f"Open {settings.public_base_url}/ in a browser and click 'Add to Discord'.",
            flush=True,
        )
        return await serve(settings)


async def print_status(database_url: str) -> int:
    """The operator's view: linked guilds, sync state and member counts, without starting the bot."""
    # Every text field is escaped: guild names and sync errors come from Discord, so from anyone who can
    # name a server, and an ESC or a newline in them would reach the operator's terminal as is.
    if not database_url.startswith("sqlite:///"):
        print(
            f"guildlink: DATABASE_URL must be a sqlite:/// URL for now, not {printable(database_url.split(':')[0])}.",
            file=sys.stderr,
        )
        return EXIT_SETTINGS
    if not sqlite_path(database_url).is_file():
        print(
            f"No database at {printable(str(sqlite_path(database_url)))}: no guild is linked yet (or DATABASE_URL points elsewhere)."
        )
        return 0
    async with open_store(database_url) as store:
        links = await store.list_links()
        if not links:
            print("No guild is linked yet.")
            return 0
        print(f"{'guild id':<20} {'active':<6} {'sync':<8} {'members':>9}  {'synced at':<25} name")
        for link in links:
            sync = await store.get_sync_state(link.guild_id)
            members = await store.count_members(link.guild_id)
            phase = printable(sync.phase.value if sync else "pending")
            synced_at = printable(
                sync.synced_at.isoformat(timespec="seconds") if sync and sync.synced_at else "-"
            )
            print(
                f"{link.guild_id:<20} {'yes' if link.active else 'no':<6} {phase:<8} {members:>9,}  {synced_at:<25} "
                f"{printable(link.guild_name)}"
            )
            if sync and sync.error:
                print(f"{'':<20} error: {printable(sync.error)}")
    return 0


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="main.py", description="Link Discord servers and sync their members."
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=("run", "status"),
        default="run",
        help="run (default): web server and bot; status: linked guilds and their sync, from the database",
    )
    parser.add_argument("--env-file", type=Path, default=Path(".env"), help="settings file (default: .env)")
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="run against a local Discord in this process (no account needed)",
    )
    parser.add_argument("--sandbox-members", type=int, default=200, help="members per sandbox server")
    parser.add_argument("--sandbox-guilds", type=int, default=3, help="servers the sandbox admin manages")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    env = read_environment(args.env_file)
    if args.command == "status":
        return asyncio.run(print_status(env.get("DATABASE_URL") or DEFAULT_DATABASE_URL))
    try:
        if args.sandbox:
            setup_logging((env.get("LOG_LEVEL") or "INFO").upper())
            return asyncio.run(
                serve_with_sandbox(env, members=args.sandbox_members, guilds=args.sandbox_guilds)
            )
        settings = parse_settings(env)
    except SettingsError as exc:
        print("guildlink: cannot start, fix these settings (in the environment or .env):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_SETTINGS
    setup_logging(settings.log_level, settings.log_format)
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
