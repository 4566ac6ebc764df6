"""`python -m sandbox`: serve a local Discord; the first line of output is a JSON description of it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from .app import Sandbox, SandboxOptions

log = logging.getLogger(__name__)

# Beyond these the world takes minutes to build or a gateway session would need sharding to hold it.
MAX_GUILDS = 100_000
MAX_MEMBERS = 10_000_000


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from low to high, else one line naming the range."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low:,} and {high:,}")
        return value

    parse.__name__ = "number"  # what argparse's message calls it
    return parse


class OneLineParser(argparse.ArgumentParser):
    """Reports a bad argument in one line (exit 2), not the whole usage."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The command line's options."""
    parser = OneLineParser(prog="python -m sandbox", description=__doc__)
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=whole_number(0, 65535), default=0, help="0 picks a free port")
    parser.add_argument(
        "--guilds", type=whole_number(1, MAX_GUILDS), default=3, help="guilds the signed-in user manages"
    )
    parser.add_argument(
        "--members", type=whole_number(1, MAX_MEMBERS), default=50, help="members in each guild"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=1,
        help="the world's seed: the same seed gives the same application, credentials, guilds and members",
    )
    parser.add_argument(
        "--world-file",
        type=Path,
        help="keep the world here across restarts (the bot's guilds, members added, changed or removed)",
    )
    parser.add_argument(
        "--redirect-uri",
        action="append",
        dest="redirect_uris",
        metavar="URI",
        help="a registered redirect URI (repeatable; default https://localhost:8080/authorize-discord)",
    )
    parser.add_argument("--no-code-grant", action="store_true", help='turn off "Requires OAuth2 Code Grant"')
    parser.add_argument(
        "--no-members-intent", action="store_true", help="switch the Server Members intent off"
    )
    defaults = SandboxOptions()
    parser.add_argument(
        "--max-guilds-per-session",
        type=int,
        default=defaults.max_guilds_per_session,
        help="guilds a session may hold before IDENTIFY is closed with 4011 (Discord: 2500)",
    )
    parser.add_argument(
        "--identify-interval",
        type=float,
        default=defaults.identify_interval,
        help="seconds between IDENTIFYs of a max_concurrency bucket, else op 9 (Discord: 5)",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=defaults.max_concurrency,
        help="IDENTIFY buckets, as /gateway/bot's session_start_limit reports them",
    )
    parser.add_argument(
        "--member-list-cooldown",
        type=float,
        default=defaults.member_list_cooldown,
        help="seconds between whole-member-list requests for one guild, else RATE_LIMITED (Discord: 30)",
    )
    parser.add_argument(
        "--webhook-events-url",
        default=None,
        help="where the application's signed webhook events go (set unchecked; the control checks it)",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        default="WARNING",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
        help="what the sandbox logs on stderr (default WARNING)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, parsed."""
    return build_parser().parse_args(argv)


def options_from(args: argparse.Namespace) -> SandboxOptions:
    """The sandbox's options from the command line."""
    options = SandboxOptions(
        guilds=args.guilds,
        members=args.members,
        seed=args.seed,
        host=args.host,
        port=args.port,
        requires_code_grant=not args.no_code_grant,
        members_intent_enabled=not args.no_members_intent,
        world_file=args.world_file,
        max_guilds_per_session=args.max_guilds_per_session,
        identify_interval=args.identify_interval,
        max_concurrency=args.max_concurrency,
        member_list_cooldown=args.member_list_cooldown,
        webhook_events_url=args.webhook_events_url,
    )
    if args.redirect_uris:
        options.redirect_uris = list(args.redirect_uris)
    return options


async def serve(args: argparse.Namespace) -> None:
    """Start the sandbox, describe it on stdout, serve until SIGINT or SIGTERM."""
    options = options_from(args)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with Sandbox(options) as sandbox:
        guilds = sandbox.managed_guilds()
        info = {
            "base_url": sandbox.base_url,
            "client_id": str(sandbox.client_id),
            "client_secret": sandbox.client_secret,
            "bot_token": sandbox.bot_token,
            "verify_key": sandbox.verify_key,
            "redirect_uris": options.redirect_uris,
            "guilds": [{"id": str(g.id), "name": g.name, "member_count": g.member_count} for g in guilds],
        }
        print(json.dumps(info, ensure_ascii=False), flush=True)
        print(f"Discord sandbox serving at {sandbox.base_url}")
        print(f"  application {sandbox.application_name!r} client_id={sandbox.client_id}")
        print(f"  consent page: {sandbox.base_url}/oauth2/authorize?client_id={sandbox.client_id}&...")
        print(f"  gateway: {sandbox.gateway.url}")
        for g in guilds[:10]:
            print(f"  guild {g.id} {g.name!r}: {count(g.member_count, 'member')}")
        if len(guilds) > 10:
            print(f"  ... and {count(len(guilds) - 10, 'more guild')}")
        print("Ctrl-C to stop.", flush=True)
        await stop.wait()


def count(n: int, noun: str) -> str:
    """'1 member', '2 members', '10,000 members'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr)
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
