"""`main.py --sandbox`: the local Discord in this process, guildlink's settings pointed at it, first steps."""

from __future__ import annotations

import logging
import os
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path

from config import DEFAULT_DATA_DIR, DEFAULT_REDIRECT_URI, Settings
from sandbox import Sandbox, SandboxOptions

log = logging.getLogger(__name__)

# Under DATA_DIR: the sandbox's links stay apart from real ones, and its world outlives a restart.
DATABASE_NAME = "sandbox.db"
WORLD_FILE_NAME = "sandbox-world.json"
API_TOKEN_FILE_NAME = "sandbox-api-token"
# Until the sandbox listens, settings are checked against an address of the same shape.
PLACEHOLDER_BASE_URL = "http://127.0.0.1:1"


@dataclass(frozen=True)
class SandboxRun:
    """A sandbox, not started yet, and guildlink's environment with the sandbox's credentials in it."""

    sandbox: Sandbox
    env: dict[str, str]
    # Where the generated API token is kept; None when API_TOKEN came from the settings.
    api_token_file: Path | None

    def settings_env(self) -> dict[str, str]:
        """The environment for parse_settings, with the sandbox's address once it listens."""
        return self.env | {"DISCORD_BASE_URL": self.sandbox.base_url or PLACEHOLDER_BASE_URL}


def data_dir_of(env: dict[str, str]) -> Path:
    return Path(env.get("DATA_DIR") or DEFAULT_DATA_DIR)


def database_url(env: dict[str, str]) -> str:
    """The sandbox's database: SANDBOX_DATABASE_URL, else DATA_DIR/sandbox.db (never DATABASE_URL's)."""
    return env.get("SANDBOX_DATABASE_URL") or f"sqlite:///{data_dir_of(env) / DATABASE_NAME}"


def prepare(env: dict[str, str], *, members: int, guilds: int) -> SandboxRun:
    """The sandbox for this data directory (its world restored) and guildlink's environment for it."""
    data_dir = data_dir_of(env)
    redirect_uri = env.get("DISCORD_REDIRECT_URI") or DEFAULT_REDIRECT_URI
    sandbox = Sandbox(
        SandboxOptions(
            redirect_uris=[redirect_uri],
            members=members,
            guilds=guilds,
            world_file=data_dir / WORLD_FILE_NAME,
        )
    )
    token_file = None if env.get("API_TOKEN") else data_dir / API_TOKEN_FILE_NAME
    env = env | {
        "DISCORD_CLIENT_ID": str(sandbox.client_id),
        "DISCORD_CLIENT_SECRET": sandbox.client_secret,
        "DISCORD_BOT_TOKEN": sandbox.bot_token,
        "DISCORD_REDIRECT_URI": redirect_uri,
        "DATABASE_URL": database_url(env),
        "API_TOKEN": env.get("API_TOKEN") or kept_api_token(data_dir / API_TOKEN_FILE_NAME),
    }
    return SandboxRun(sandbox, env, token_file)


def kept_api_token(path: Path) -> str:
    """The token kept at `path`, made there (readable by its owner only) the first time."""
    try:
        token = path.read_text().strip()
        if len(token) >= 32:
            return token
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("sandbox_mode.api_token_unreadable path=%s error=%s", path, exc.strerror or exc)
    token = secrets.token_urlsafe(32)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(token + "\n")
    except OSError as exc:
        log.warning(
            "sandbox_mode.api_token_not_kept path=%s error=%s: a new one next run", path, exc.strerror
        )
    return token


def first_steps(run: SandboxRun, settings: Settings, *, members: int, guilds: int, python: str) -> str:
    """What to do first: open the page, then two curl lines that work as printed once a server is linked."""
    sandbox = run.sandbox
    assert settings.api_token is not None
    # The self-signed certificate made for localhost is not one curl (or a browser) knows.
    insecure = "k" if settings.serves_https and not (settings.tls_cert_file or settings.tls_by_proxy) else ""
    auth = shlex.quote(f"Authorization: Bearer {settings.api_token.reveal()}")
    base = settings.public_base_url
    first = sandbox.managed_guilds()[0]
    kept = f" (kept in {run.api_token_file})" if run.api_token_file else ""
    warning = " (its certificate is self-signed: accept the browser's warning)" if insecure else ""
    lines = [
        f"Sandbox Discord running at {sandbox.base_url}: {_count(guilds, 'server')} of"
        f" {_count(members, 'member')}{' each' if guilds > 1 else ''}; it keeps its world in"
        f" {sandbox.options.world_file}.",
        f"Open {base}/ in a browser{warning}, click 'Add to Discord', pick a server and click Authorize.",
        f"Links and members go to {settings.database_url}; `{python} main.py status` lists them.",
        f"The API's token{kept}: API_TOKEN={settings.api_token.reveal()}",
        "Once a server is linked, list the linked servers:",
        f"  curl -s{insecure} -H {auth} {shlex.quote(base + '/api/guilds')}",
        f"and page the members of {first.name!r} (once it is linked):",
        f"  curl -s{insecure} -H {auth} {shlex.quote(f'{base}/api/guilds/{first.id}/members?limit=5')}",
    ]
    return "\n".join(lines)


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
