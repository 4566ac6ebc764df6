"""guildlink's command line: runs the web server and the Discord bot in one event loop."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import textwrap
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlsplit, urlunsplit

import discord

import run_record
import sandbox_mode
from bot.reachability import DiscordRefusedTokenError, NotDiscordError
from config import (
    DEFAULT_DATA_DIR,
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIRECT_URI,
    LOCAL_HOSTS,
    SETTINGS_TABLE,
    Settings,
    SettingsError,
    database_url_problem,
    masked_database_url,
    parse_settings,
    read_environment,
)
from lifecycle import CannotListenError, run_guildlink, tune_garbage_collector
from log_format import JsonFormatter
from printable import printable
from store import (
    StoreUnavailableError,
    SyncPhase,
    TransactionPoolingError,
    is_postgres_url,
    open_store,
    sqlite_path,
)
from web.malformed_requests import quiet_malformed_requests
from web.oauth import InvalidClientError

log = logging.getLogger("guildlink")

EXIT_SETTINGS = 2
EXIT_DISCORD_REFUSED = 3
EXIT_DATABASE = 4
EXIT_CANNOT_LISTEN = 5
PYPROJECT = Path(__file__).with_name("pyproject.toml")
# Beyond these the sandbox's world takes minutes to build, or one gateway session cannot hold its guilds.
MAX_SANDBOX_GUILDS = 2_500
MAX_SANDBOX_MEMBERS = 10_000_000


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


async def serve(
    settings: Settings, *, sandbox: bool = False, on_started: Callable[[], None] | None = None
) -> int:
    """Run until SIGINT/SIGTERM or until Discord refuses the bot; return the exit code.

    `on_started` is called once the web server listens (the sandbox's first steps are printed then)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        return await _serve_until_stopped(settings, stop, sandbox=sandbox, on_started=on_started)
    except CannotListenError as exc:
        print(
            f"guildlink: cannot listen on {exc.host}:{exc.port} ({exc.reason}); stop the program using it"
            " or set WEB_PORT (and the redirect URI's port) to a free one.",
            file=sys.stderr,
        )
        return EXIT_CANNOT_LISTEN
    except StoreUnavailableError as exc:
        print(database_failure(settings.database_url, exc), file=sys.stderr)
        return EXIT_DATABASE


def database_failure(database_url: str, exc: StoreUnavailableError) -> str:
    """One line for the operator: which database (its password masked), what is wrong, what to do."""
    if isinstance(exc, TransactionPoolingError):
        advice = (
            "set pool_mode = session for this database in pgbouncer.ini, or point DATABASE_URL at PostgreSQL"
            " itself"
        )
    elif is_postgres_url(database_url):
        advice = (
            "check that the PostgreSQL server is running and takes this user's writes, or fix DATABASE_URL"
        )
    else:
        advice = "make the file and its folder writable and free some disk space, or set DATABASE_URL to another file"
    return (
        f"guildlink: cannot use the database {printable(masked_database_url(database_url))}: {exc.reason};"
        f" {advice}."
    )


async def _serve_until_stopped(
    settings: Settings, stop: asyncio.Event, *, sandbox: bool, on_started: Callable[[], None] | None
) -> int:
    async with run_guildlink(settings) as running:
        # The database is open: from now on `status` reads this one.
        run_record.save(settings.data_dir, settings.database_url, sandbox=sandbox)
        log.info("guildlink.started web=%s", running.web_url)
        if on_started is not None:
            on_started()
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


async def serve_with_sandbox(run: sandbox_mode.SandboxRun, *, members: int, guilds: int) -> int:
    """Start the local Discord in this process and point guildlink at it: no Discord account needed."""
    async with run.sandbox as sandbox:
        settings = parse_settings(run.settings_env())
        log.info("sandbox_mode.started base_url=%s", sandbox.base_url)
        steps = sandbox_mode.first_steps(run, settings, members=members, guilds=guilds, python=shown_python())
        return await serve(settings, sandbox=True, on_started=lambda: print(steps, flush=True))


def shown_python() -> str:
    """How to call this interpreter in a hint: relative when it lives under this folder (.venv/bin/python)."""
    executable = Path(sys.executable)
    try:
        return str(executable.relative_to(Path.cwd()))
    except ValueError:
        return "python" if executable.name.startswith("python") else str(executable)


def status_database(env: dict[str, str], *, sandbox: bool) -> tuple[str, str]:
    """The database `status` reads, and why that one."""
    data_dir = Path(env.get("DATA_DIR") or DEFAULT_DATA_DIR)
    if sandbox:
        return sandbox_mode.database_url(env), "the sandbox's (--sandbox)"
    if env.get("DATABASE_URL"):
        return env["DATABASE_URL"], "DATABASE_URL"
    last = run_record.load(data_dir)
    if last is not None:
        return last.database_url, f"the last run's, recorded in {data_dir / run_record.RECORD_NAME}"
    return DEFAULT_DATABASE_URL, "the default"


async def status(env: dict[str, str], *, sandbox: bool) -> int:
    """`main.py status`: say which database, list its links, and point at the last run's if it was another."""
    database_url, why = status_database(env, sandbox=sandbox)
    print(f"Database: {printable(run_record.without_password(database_url))} ({why})")
    last = run_record.load(Path(env.get("DATA_DIR") or DEFAULT_DATA_DIR))
    if last is not None and last.database_url != run_record.without_password(database_url):
        how = "`main.py status --sandbox` lists" if last.sandbox else "unset DATABASE_URL to list"
        print(
            f"The last run{' (--sandbox)' if last.sandbox else ''} used {printable(last.database_url)}: {how} its links."
        )
    return await print_status(database_url)


async def print_status(database_url: str) -> int:
    """The operator's view: linked guilds, sync state and member counts, without starting the bot."""
    # Every text field is escaped: guild names and sync errors come from Discord, so from anyone who can
    # name a server, and an ESC or a newline in them would reach the operator's terminal as is.
    problem = database_url_problem(database_url)
    if problem:
        print(f"guildlink: {problem}", file=sys.stderr)
        return EXIT_SETTINGS
    if database_url.startswith("sqlite:///") and not sqlite_path(database_url).is_file():
        print(
            f"No database at {printable(str(sqlite_path(database_url)))}: no guild is linked yet (or DATABASE_URL points elsewhere)."
        )
        return 0
    try:
        async with open_store(database_url) as store:
            guilds = await store.list_linked_guilds()
    except StoreUnavailableError as exc:
        print(database_failure(database_url, exc), file=sys.stderr)
        return EXIT_DATABASE
    if not guilds:
        print("No guild is linked yet.")
        return 0
    print(f"{'guild id':<20} {'active':<6} {'sync':<8} {'members':>9}  {'synced at':<25} name")
    for guild in guilds:
        link, sync = guild.link, guild.sync
        phase = printable(sync.phase.value if sync else "pending")
        synced_at = printable(
            sync.synced_at.isoformat(timespec="seconds") if sync and sync.synced_at else "-"
        )
        print(
            f"{link.guild_id:<20} {'yes' if link.active else 'no':<6} {phase:<8} {link.member_count:>9,}  {synced_at:<25} "
            f"{printable(link.guild_name)}"
        )
        if sync and sync.error:
            print(f"{'':<20} error: {printable(sync.error)}")
        if sync and sync.phase is SyncPhase.HELD:
            print(
                f"{'':<20} held: {sync.held_removals or 0:,} members would leave;"
                f" confirm with POST /api/guilds/{link.guild_id}/sync/confirm or in the console"
            )
    return 0


def project_version() -> str:
    """guildlink's version, from pyproject.toml: the one place it is written."""
    try:
        return str(tomllib.loads(PYPROJECT.read_text())["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from low to high, else a message naming the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low:,} and {high:,}")
        return value

    parse.__name__ = "number"
    return parse


class OneLineParser(argparse.ArgumentParser):
    """Reports a bad argument in one line (exit 2), as a bad setting is, not with the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_SETTINGS, f"{self.prog}: {message} (see --help)\n")


def settings_epilog() -> str:
    """Every setting with its default, from config's one table, and what --sandbox and status read."""
    width = max(len(info.name) for info in SETTINGS_TABLE) + 2
    lines = ["settings (from the environment, or NAME=value lines in --env-file; the environment wins):"]
    for info in SETTINGS_TABLE:
        text = f"{info.meaning} [default: {info.help_default}]"
        # Not at hyphens: a default such as the redirect URI must stay whole to be copied.
        wrapped = textwrap.wrap(text, 100 - width - 2, break_on_hyphens=False) or [""]
        lines.append(f"  {info.name:<{width}}{wrapped[0]}")
        lines.extend(f"  {'':<{width}}{more}" for more in wrapped[1:])
    lines += [
        "",
        "--sandbox uses the sandbox's credentials and address, keeps its links in DATA_DIR/sandbox.db",
        "(SANDBOX_DATABASE_URL to change it) apart from real ones, its world in DATA_DIR/sandbox-world.json,",
        "and an API token in DATA_DIR/sandbox-api-token unless API_TOKEN is set.",
        "status reads DATABASE_URL if set, else the database the last run used (DATA_DIR/last-run.json);",
        "status --sandbox reads the sandbox's.",
    ]
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = OneLineParser(
        prog="main.py",
        description="Link Discord servers and sync their members.",
        epilog=settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=("run", "status"),
        default="run",
        help="run (default): web server and bot; status: linked guilds and their sync, from the database",
    )
    parser.add_argument("--version", action="version", version=f"guildlink {project_version()}")
    parser.add_argument("--env-file", type=Path, default=Path(".env"), help="settings file (default: .env)")
    parser.add_argument(
        "--port",
        type=whole_number(0, 65535),
        help="the web server's port (WEB_PORT); a localhost redirect URI follows it (default: its port, 8080)",
    )
    parser.add_argument(
        "--sandbox",
        action="store_true",
        help="run against a local Discord in this process (no account needed); with status: list its links",
    )
    parser.add_argument(
        "--sandbox-members",
        type=whole_number(1, MAX_SANDBOX_MEMBERS),
        default=200,
        help="members per sandbox server (default 200)",
    )
    parser.add_argument(
        "--sandbox-guilds",
        type=whole_number(1, MAX_SANDBOX_GUILDS),
        default=3,
        help="servers the sandbox admin manages (default 3)",
    )
    return parser.parse_args(argv)


def with_port(env: dict[str, str], port: int) -> dict[str, str]:
    """WEB_PORT=port; a redirect URI on this machine moves to the same port (a public one stays as set)."""
    redirect_uri = env.get("DISCORD_REDIRECT_URI") or DEFAULT_REDIRECT_URI
    parts = urlsplit(redirect_uri)
    env = env | {"WEB_PORT": str(port)}
    if parts.hostname in LOCAL_HOSTS:
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        env["DISCORD_REDIRECT_URI"] = urlunsplit(parts._replace(netloc=f"{host}:{port}"))
    return env


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    env = read_environment(args.env_file)
    if args.port is not None:
        env = with_port(env, args.port)
    if args.command == "status":
        return asyncio.run(status(env, sandbox=args.sandbox))
    run = None
    try:
        if args.sandbox:
            run = sandbox_mode.prepare(env, members=args.sandbox_members, guilds=args.sandbox_guilds)
            env = run.settings_env()
        # Checked before anything starts, logging included: a bad LOG_LEVEL is a setting like any other.
        settings = parse_settings(env)
    except SettingsError as exc:
        print("guildlink: cannot start, fix these settings (in the environment or .env):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_SETTINGS
    setup_logging(settings.log_level, settings.log_format)
    tune_garbage_collector()
    if run is not None:
        return asyncio.run(serve_with_sandbox(run, members=args.sandbox_members, guilds=args.sandbox_guilds))
    return asyncio.run(serve(settings))


if __name__ == "__main__":
    sys.exit(main())
