"""Every setting of guildlink, declared once, read from the environment and `.env`, validated, secrets masked."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, urlsplit, urlunsplit

from dotenv import dotenv_values

DEFAULT_DISCORD_BASE_URL = "https://discord.com"
DEFAULT_REDIRECT_URI = "https://localhost:8080/authorize-discord"
DEFAULT_DATABASE_URL = "sqlite:///data/guildlink.db"
DEFAULT_SCOPES = "identify guilds bot"
DEFAULT_DATA_DIR = "data"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# Discord's 5 s between IDENTIFYs of a max_concurrency bucket, plus a margin for clocks and the trip there.
DEFAULT_IDENTIFY_INTERVAL = 5.0 + 0.25
# Members (sync chunks and member events together, about half a kilobyte each) held for the database before
# reading from the gateway pauses; it resumes at half.
DEFAULT_MEMBER_BUFFER_MAX = 50_000
MIN_MEMBER_BUFFER_MAX = 1_000
MAX_MEMBER_BUFFER_MAX = 10_000_000
# A pause of reading lasts this long at most, then the buffered members are dropped (their guilds read again
# later). discord.py drops a session after 60 s without reading (its heartbeat_timeout): the maximum stays
# well below, so that the frames read after the pause reach it first.
DEFAULT_READ_PAUSE_MAX = 20.0
MIN_READ_PAUSE_MAX = 0.1
MAX_READ_PAUSE_MAX = 45.0
MAX_EVENT_RETENTION_DAYS = 3650
MAX_MEMBER_DATA_AFTER_LEAVE_HOURS = 87600
LOG_FORMATS = ("text", "json")
METRICS_CHOICES = ("off", "token", "open")
# What an APPLICATION_AUTHORIZED server install that no callback stored becomes (LINK_WITHOUT_CALLBACK).
LINK_WITHOUT_CALLBACK_CHOICES = ("record", "refuse")
DEFAULT_LINK_CALLBACK_GRACE = 60.0
MAX_LINK_CALLBACK_GRACE = 3600.0
MIN_SECRET_LENGTH = 32
# An event type pattern: dotted lower-case words, `*` standing for any run of characters (guild.*, *.left).
EVENT_PATTERN = re.compile(r"[a-z_*]+(\.[a-z_*]+)*")
MARKDOWN_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
GENERATE_SECRET = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"

# A setting's parser: (raw value, its variable's name, the problems so far) -> the value Settings holds.
# It appends a message naming the variable for a bad value, and returns a stand-in.
SettingParser = Callable[[str, str, list[str]], Any]


@dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable, declared once: the Settings field it fills, its parser, default and help."""

    name: str
    attribute: str
    parse: SettingParser
    # The raw value an unset variable means; None: unset (the field holds `unset`), or required.
    default: str | None
    # Markdown: the README's table shows it as it is, --help as plain text.
    help: str
    # Where to find a required variable's value, for the message naming it; "": optional.
    required: str = ""
    # What --help and the README show for a default that is no plain value (derived from another setting).
    shown_default: str | None = None
    unset: object = None
    # A variable meaningless without another: (its name, what it holds); unset, this one is refused unread.
    needs: tuple[str, str] | None = None

    @property
    def meaning(self) -> str:
        """The help as plain text (for --help): links reduced to their text, no code marks."""
        return MARKDOWN_LINK.sub(r"\1", self.help).replace("`", "")

    @property
    def help_default(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        if self.required:
            return "required"
        return self.default if self.default is not None else "unset"


@dataclass(frozen=True)
class Secret:
    """A string that never shows itself in a repr, str or format."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        """The secret itself: pass it only to the party it is meant for."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


class SettingsError(Exception):
    """Start-up settings are missing or malformed; `problems` names each bad variable and its fix."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    """The validated settings of one guildlink process: one field per declaration of SETTINGS_TABLE."""

    client_id: int
    client_secret: Secret
    bot_token: Secret
    redirect_uri: str
    discord_base_url: str
    scopes: tuple[str, ...]
    permissions: int
    web_host: str
    web_port: int
    tls_cert_file: Path | None
    tls_key_file: Path | None
    # Out of the repr: a PostgreSQL URL may hold a password. Show it with masked_database_url().
    database_url: str = field(repr=False)
    data_dir: Path
    api_token: Secret | None
    log_level: str
    log_format: str
    metrics: str
    link_rate_limit: int
    trusted_proxies: frozenset[str]
    # None: Discord's recommended count (GET /gateway/bot), every shard in this process.
    shard_count: int | None
    # None: every shard of shard_count; else just these (a fleet splits them between processes).
    shard_ids: tuple[int, ...] | None
    event_retention_days: int
    member_data_after_leave_hours: int
    reconcile_hold_share: float
    reconcile_hold_min: int
    # Out of the repr: a URL may carry credentials. Show it with masked_url(). None: webhooks are off.
    webhook_url: str | None = field(repr=False)
    webhook_secret: Secret | None
    webhook_events: tuple[str, ...]
    identify_interval: float
    member_buffer_max: int
    read_pause_max: float
    # Discord's webhook events: the application's Ed25519 public key, 32 bytes; None: the route is not served.
    # Not a secret, but only Discord's signatures may pass it.
    discord_public_key: bytes | None
    link_without_callback: str
    link_callback_grace: float

    @property
    def api_base_url(self) -> str:
        """Discord's REST base, the token endpoint included."""
        return f"{self.discord_base_url}/api/v10"

    @property
    def authorize_url(self) -> str:
        """Discord's consent page."""
        return f"{self.discord_base_url}/oauth2/authorize"

    @property
    def uses_default_discord(self) -> bool:
        return self.discord_base_url == DEFAULT_DISCORD_BASE_URL

    @property
    def redirect_path(self) -> str:
        """The path our web server serves the OAuth2 callback on."""
        return urlsplit(self.redirect_uri).path or "/"

    @property
    def serves_https(self) -> bool:
        """Browsers reach us over HTTPS (secure cookies, HSTS), whether we or a proxy hold the certificate."""
        return urlsplit(self.redirect_uri).scheme == "https"

    @property
    def tls_by_proxy(self) -> bool:
        """An https redirect URI on a public host with no certificate of ours, behind TRUSTED_PROXIES: the proxy
        terminates TLS and this process serves plain HTTP (browsers still see https: Secure cookies, HSTS)."""
        return (
            self.serves_https
            and self.tls_cert_file is None
            and bool(self.trusted_proxies)
            and urlsplit(self.redirect_uri).hostname not in LOCAL_HOSTS
        )

    @property
    def public_base_url(self) -> str:
        """Where browsers reach us: the redirect URI's scheme, host and port."""
        parts = urlsplit(self.redirect_uri)
        return f"{parts.scheme}://{parts.netloc}"


def read_environment(env_file: Path | None = Path(".env")) -> dict[str, str]:
    """The process environment over the values of `env_file` (if it exists)."""
    values: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        values.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    values.update(os.environ)
    return values


# The parsers of single settings. Each checks what its own value can tell; what depends on another
# setting is checked in _check_settings_together.


def _text_setting(raw: str, name: str, problems: list[str]) -> str:
    return raw


def _path_setting(raw: str, name: str, problems: list[str]) -> Path:
    return Path(raw)


def _file_setting(raw: str, name: str, problems: list[str]) -> Path:
    if not Path(raw).is_file():
        problems.append(f"{name} names {raw}, which is not a readable file.")
    return Path(raw)


def _secret_setting(raw: str, name: str, problems: list[str], *, min_length: int = 0) -> Secret:
    if len(raw) < min_length:
        problems.append(
            f"{name} is too short: use at least {min_length} random characters ({GENERATE_SECRET})."
        )
    return Secret(raw)


def _choice_setting(
    raw: str,
    name: str,
    problems: list[str],
    *,
    choices: tuple[str, ...],
    described: str,
    normal: Callable[[str], str] = str.lower,
) -> str:
    """One of `choices`, whatever its case; `described` lists them for the message."""
    value = normal(raw)
    if value not in choices:
        problems.append(f"{name} must be {described}, not {raw!r}.")
    return value


def _client_id_setting(raw: str, name: str, problems: list[str]) -> int:
    if raw.isascii() and raw.isdigit():
        return int(raw)
    problems.append(
        f"{name} must be the numeric Application ID (a snowflake such as 1234567890), not {raw!r}."
    )
    return 0


def _bot_token_setting(raw: str, name: str, problems: list[str]) -> Secret:
    """A bot token's shape: three parts, the first the bot's user id in base64 (never quoted in a message)."""
    parts = raw.split(".")
    if len(parts) != 3 or not all(parts):
        problems.append(
            f"{name} is not shaped like a bot token (three parts separated by dots): copy it again from the Bot page."
        )
    elif _bot_user_id(raw) is None:
        problems.append(
            f"{name} is not a bot token (its first part is not a user id): copy it again from the Bot page."
        )
    return Secret(raw)


def _bot_user_id(token: str) -> str | None:
    """The user id a bot token's first part encodes, or None."""
    first = token.split(".")[0]
    try:
        decoded = base64.urlsafe_b64decode(first + "=" * (-len(first) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    return decoded if decoded.isdigit() else None


def _redirect_uri_setting(raw: str, name: str, problems: list[str]) -> str:
    redirect = _split_url(raw)
    if redirect.scheme not in ("http", "https") or not redirect.hostname or not redirect.path:
        problems.append(
            f"{name} must be an absolute http(s) URL with a path, not {raw!r}: "
            f"such as {DEFAULT_REDIRECT_URI}; register the same value in the Developer Portal."
        )
    return raw


def _base_url_setting(raw: str, name: str, problems: list[str]) -> str:
    base_url = raw.rstrip("/")
    base = _split_url(base_url)
    if base.scheme not in ("http", "https") or not base.hostname or base.path:
        problems.append(
            f"{name} must be a scheme and host such as {DEFAULT_DISCORD_BASE_URL}, without a path,"
            f" not {base_url!r}."
        )
    elif base.hostname and base.hostname.endswith("discordapp.com"):
        problems.append(f"{name} names the retired discordapp.com: use {DEFAULT_DISCORD_BASE_URL}.")
    return base_url


def _scopes_setting(raw: str, name: str, problems: list[str]) -> tuple[str, ...]:
    scopes = tuple(raw.split())
    if "bot" not in scopes:
        problems.append(
            f"{name} must include 'bot', unlike {' '.join(scopes)!r}: without it Discord adds no bot"
            " and sends no guild."
        )
    return scopes


def _database_url_setting(raw: str, name: str, problems: list[str]) -> str:
    problem = database_url_problem(raw)
    if problem:
        problems.append(problem)
    return raw


def _proxies_setting(raw: str, name: str, problems: list[str]) -> frozenset[str]:
    proxies = frozenset(part.strip() for part in raw.split(",") if part.strip())
    for proxy in proxies:
        try:
            ipaddress.ip_address(proxy)
        except ValueError:
            problems.append(f"{name} must be IP addresses separated by commas, not {proxy!r}.")
    return proxies


def _shard_ids_setting(raw: str, name: str, problems: list[str]) -> tuple[int, ...] | None:
    """Shard numbers such as 0,1,2,3, sorted; their range is checked against SHARD_COUNT together."""
    parts = [part.strip() for part in raw.split(",")]
    if not all(part.isascii() and part.isdigit() and len(part) <= 5 for part in parts):
        problems.append(f"{name} must be shard numbers separated by commas, such as 0,1,2,3, not {raw!r}.")
        return None
    return tuple(sorted({int(part) for part in parts}))


def _webhook_url_setting(raw: str, name: str, problems: list[str]) -> str:
    """An absolute http(s) URL; the message never quotes it (it may carry credentials)."""
    try:
        parts = urlsplit(raw)
        _ = parts.port  # a port that is not a number raises
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        problems.append(
            f"{name} must be an absolute http(s) URL, such as https://backend.example.com/guildlink-events."
        )
    return raw


def _event_patterns_setting(raw: str, name: str, problems: list[str]) -> tuple[str, ...]:
    events = tuple(part.strip() for part in raw.split(",") if part.strip())
    bad = [pattern for pattern in events if not EVENT_PATTERN.fullmatch(pattern)]
    if bad or not events:
        problems.append(
            f"{name} must be event types or patterns separated by commas, such as guild.* or"
            f" guild.*,member.left (* matches any characters), not {raw!r}."
        )
    return events or ("*",)


def _public_key_setting(raw: str, name: str, problems: list[str]) -> bytes | None:
    """64 hex digits (Ed25519's 32 bytes), as the Developer Portal shows them."""
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        key = b""
    if len(key) != 32:
        problems.append(f"{name} must be the 64 hex digits of the Developer Portal's General > Public Key.")
        return None
    return key


def _float_setting(
    raw: str, name: str, problems: list[str], *, minimum: float = 0.0, maximum: float
) -> float:
    """A number of seconds from `minimum` to `maximum`."""
    try:
        value = float(raw)
    except ValueError:
        problems.append(f"{name} must be a number of seconds, not {raw!r}.")
        return 0.0
    if not minimum <= value <= maximum:
        problems.append(f"{name} must be between {minimum:g} and {maximum:g} seconds.")
    return value


def _share_setting(raw: str, name: str, problems: list[str]) -> float:
    """A share from 0 to 1 (0: hold any resync that removes at least the minimum; 1: never hold)."""
    try:
        value = float(raw)
    except ValueError:
        problems.append(f"{name} must be a share from 0 to 1, such as 0.1, not {raw!r}.")
        return 0.0
    if not 0 <= value <= 1:
        problems.append(f"{name} must be a share from 0 to 1, such as 0.1, not {value:g}.")
    return value


def _int_setting(
    raw: str, name: str, problems: list[str], *, minimum: int, maximum: int | None = None
) -> int:
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{name} must be a whole number, not {raw!r}.")
        return 0
    if maximum is not None and not minimum <= value <= maximum:
        problems.append(f"{name} must be between {minimum} and {maximum}, not {value}.")
    elif value < minimum:
        problems.append(f"{name} must be at least {minimum}, not {value}.")
    return value


# Every variable guildlink reads, in the order --help and the README list them: each one's Settings field,
# parser (with its bounds), default and help, declared here only.
SETTINGS_TABLE: tuple[Setting, ...] = (
    Setting(
        "DISCORD_CLIENT_ID",
        "client_id",
        _client_id_setting,
        None,
        "the application's id (Developer Portal > General)",
        required="copy the Application ID from the Developer Portal's General page",
    ),
    Setting(
        "DISCORD_CLIENT_SECRET",
        "client_secret",
        _secret_setting,
        None,
        "its client secret (Developer Portal > OAuth2)",
        required="reset and copy it on the Developer Portal's OAuth2 page",
    ),
    Setting(
        "DISCORD_BOT_TOKEN",
        "bot_token",
        _bot_token_setting,
        None,
        "its bot's token (Developer Portal > Bot), which must belong to the same application",
        required="reset and copy it on the Developer Portal's Bot page",
    ),
    Setting(
        "DISCORD_REDIRECT_URI",
        "redirect_uri",
        _redirect_uri_setting,
        DEFAULT_REDIRECT_URI,
        "our OAuth2 callback, registered under OAuth2 > Redirects; the web server serves its path",
    ),
    Setting(
        "DISCORD_BASE_URL",
        "discord_base_url",
        _base_url_setting,
        DEFAULT_DISCORD_BASE_URL,
        "Discord, or a Discord-compatible server (the sandbox): REST, token endpoint, consent page and"
        " (through `/api/v10/gateway/bot`) the gateway all follow it",
    ),
    Setting("DISCORD_SCOPES", "scopes", _scopes_setting, DEFAULT_SCOPES, "what the consent page asks for"),
    Setting(
        "DISCORD_PERMISSIONS",
        "permissions",
        partial(_int_setting, minimum=0),
        "0",
        "the bot's permissions the consent page asks for",
    ),
    Setting("WEB_HOST", "web_host", _text_setting, "127.0.0.1", "the address the web server listens on"),
    Setting(
        "WEB_PORT",
        "web_port",
        partial(_int_setting, minimum=0, maximum=65535),
        None,
        "the web server's port",
        shown_default="the redirect URI's port",
    ),
    Setting(
        "TLS_CERT_FILE",
        "tls_cert_file",
        _file_setting,
        None,
        "HTTPS certificate (PEM), with `TLS_KEY_FILE`: the web server serves HTTPS with them",
    ),
    Setting(
        "TLS_KEY_FILE",
        "tls_key_file",
        _file_setting,
        None,
        "its private key; both unset with an `https://localhost` redirect URI, a self-signed certificate is made"
        " once under `DATA_DIR/tls`; both unset with `TRUSTED_PROXIES` set, the proxy does TLS and guildlink"
        " serves it plain HTTP; an `http` redirect URI serves plain HTTP",
    ),
    Setting(
        "DATABASE_URL",
        "database_url",
        _database_url_setting,
        DEFAULT_DATABASE_URL,
        "the database: SQLite (`sqlite:///relative.db`, `sqlite:////absolute.db`, no server needed), or PostgreSQL"
        " (`postgresql://user:password@host:5432/guildlink`, or `postgresql:///guildlink?host=/run/postgresql`"
        " for a socket), which several processes can share; its schema is created and upgraded at start-up,"
        " and its password is masked wherever the URL is shown",
    ),
    Setting(
        "DATA_DIR",
        "data_dir",
        _path_setting,
        DEFAULT_DATA_DIR,
        "generated files: the self-signed certificate, the last run's record (for `status`), the sandbox's"
        " database, world and API token",
    ),
    Setting(
        "API_TOKEN",
        "api_token",
        partial(_secret_setting, min_length=MIN_SECRET_LENGTH),
        None,
        f"bearer token of the JSON API and the operator console's sign-in ({MIN_SECRET_LENGTH}+ characters);"
        " unset, `/api` answers 503 and `/admin` says the console is off",
    ),
    Setting(
        "LOG_LEVEL",
        "log_level",
        partial(
            _choice_setting, choices=LOG_LEVELS, described=f"one of {', '.join(LOG_LEVELS)}", normal=str.upper
        ),
        "INFO",
        f"{', '.join(f'`{level}`' for level in LOG_LEVELS[:-1])} or `{LOG_LEVELS[-1]}`",
    ),
    Setting(
        "LOG_FORMAT",
        "log_format",
        partial(_choice_setting, choices=LOG_FORMATS, described="text or json"),
        "text",
        "`text`, or `json`: one JSON object per line (`time`, `level`, `logger`, `event` and the line's ids as"
        " fields, `message`)",
    ),
    Setting(
        "METRICS",
        "metrics",
        partial(_choice_setting, choices=METRICS_CHOICES, described="off, token (behind API_TOKEN) or open"),
        "token",
        "`/metrics`: `off`, `token` (behind `Authorization: Bearer $API_TOKEN`) or `open`",
    ),
    Setting(
        "LINK_RATE_LIMIT",
        "link_rate_limit",
        partial(_int_setting, minimum=0, maximum=100_000),
        "20",
        "consent flows (`/link`, `/start`) one client may open per minute (`429` beyond); `0` turns it off",
    ),
    Setting(
        "TRUSTED_PROXIES",
        "trusted_proxies",
        _proxies_setting,
        None,
        "addresses of your reverse proxies, comma-separated: behind them the client is the last"
        " `X-Forwarded-For` entry; with an `https` redirect URI on a public host and no `TLS_CERT_FILE`, they"
        " terminate TLS and the process serves plain HTTP",
        unset=frozenset(),
    ),
    Setting(
        "SHARD_COUNT",
        "shard_count",
        partial(_int_setting, minimum=1, maximum=65535),
        None,
        "shards across every process (a guild belongs to shard `(guild_id >> 22) % SHARD_COUNT`)",
        shown_default="Discord's recommended count",
    ),
    Setting(
        "SHARD_IDS",
        "shard_ids",
        _shard_ids_setting,
        None,
        "the shards this process runs, e.g. `SHARD_COUNT=8 SHARD_IDS=0,1,2,3` (a fleet splits them between"
        " processes)",
        shown_default="all of SHARD_COUNT",
        needs=("SHARD_COUNT", "the total number of shards across every process"),
    ),
    Setting(
        "EVENT_RETENTION_DAYS",
        "event_retention_days",
        partial(_int_setting, minimum=1, maximum=MAX_EVENT_RETENTION_DAYS),
        "7",
        f"how long the event feed (`GET /api/events`, webhooks) keeps each event, 1 to {MAX_EVENT_RETENTION_DAYS}"
        " days; older ones are pruned at start-up and hourly (a reader whose cursor is older gets `410`, see"
        " [The event feed](#the-event-feed))",
    ),
    Setting(
        "MEMBER_DATA_AFTER_LEAVE_HOURS",
        "member_data_after_leave_hours",
        partial(_int_setting, minimum=0, maximum=MAX_MEMBER_DATA_AFTER_LEAVE_HOURS),
        "24",
        "how long the event feed keeps a departed member's names and nick after the leave, 0 to"
        f" {MAX_MEMBER_DATA_AFTER_LEAVE_HOURS} hours; then their earlier events in that guild are scrubbed"
        " (hourly, see [Data we keep](#data-we-keep))",
    ),
    Setting(
        "RECONCILE_HOLD_SHARE",
        "reconcile_hold_share",
        _share_setting,
        "0.1",
        "a resync that would remove more than this share (0 to 1) of a guild's stored members, and at least"
        " `RECONCILE_HOLD_MIN` of them, applies its joins and changes but holds its removals for confirmation"
        " (see [Held resyncs](#held-resyncs))",
    ),
    Setting(
        "RECONCILE_HOLD_MIN",
        "reconcile_hold_min",
        partial(_int_setting, minimum=1),
        "50",
        "the fewest removals that hold a resync (1 or more)",
    ),
    Setting(
        "WEBHOOK_URL",
        "webhook_url",
        _webhook_url_setting,
        None,
        "with `WEBHOOK_SECRET`, each event is POSTed, signed, to this `http(s)` URL of your backend (see"
        " [Webhooks](#webhooks)); shown in logs as scheme, host and port only",
    ),
    Setting(
        "WEBHOOK_SECRET",
        "webhook_secret",
        partial(_secret_setting, min_length=MIN_SECRET_LENGTH),
        None,
        f"the webhooks' HMAC key, {MIN_SECRET_LENGTH}+ characters, with `WEBHOOK_URL`",
    ),
    Setting(
        "WEBHOOK_EVENTS",
        "webhook_events",
        _event_patterns_setting,
        "*",
        "which event types are POSTed, as patterns separated by commas (`guild.*` sends guild events only;"
        " `guild.*,member.left`); the others are skipped",
    ),
    Setting(
        "IDENTIFY_INTERVAL",
        "identify_interval",
        partial(_float_setting, maximum=60.0),
        f"{DEFAULT_IDENTIFY_INTERVAL:g}",
        "seconds between IDENTIFYs of one `max_concurrency` bucket across every process (Discord's 5 s and a"
        " margin); lower it only for a Discord-compatible server with a shorter window, such as"
        " `python -m sandbox --identify-interval`",
    ),
    Setting(
        "MEMBER_BUFFER_MAX",
        "member_buffer_max",
        partial(_int_setting, minimum=MIN_MEMBER_BUFFER_MAX, maximum=MAX_MEMBER_BUFFER_MAX),
        str(DEFAULT_MEMBER_BUFFER_MAX),
        "members (whole-list chunks and member events together, about half a kilobyte each) the bot holds for"
        " a database that is behind; past it, the gateway is no longer read (TCP holds the rest at Discord)"
        f" until the database has caught up by half; {MIN_MEMBER_BUFFER_MAX} to {MAX_MEMBER_BUFFER_MAX}",
    ),
    Setting(
        "READ_PAUSE_MAX",
        "read_pause_max",
        partial(_float_setting, minimum=MIN_READ_PAUSE_MAX, maximum=MAX_READ_PAUSE_MAX),
        f"{DEFAULT_READ_PAUSE_MAX:g}",
        f"seconds such a pause may last, {MIN_READ_PAUSE_MAX:g} to {MAX_READ_PAUSE_MAX:g} (discord.py drops a"
        " session after 60 s without reading); then the held members are dropped and read again: a sync"
        " holding chunks is given up (`failed`, retried), and the guilds whose member events were dropped are"
        " synced again (a full resync, as after a restart)",
    ),
    Setting(
        "DISCORD_PUBLIC_KEY",
        "discord_public_key",
        _public_key_setting,
        None,
        "the application's Public Key (Developer Portal > General, 64 hex digits): turns on"
        " `POST /discord/webhook-events` (see [Discord's webhook events](#discords-webhook-events)); unset,"
        " that path answers `404`",
    ),
    Setting(
        "LINK_WITHOUT_CALLBACK",
        "link_without_callback",
        partial(_choice_setting, choices=LINK_WITHOUT_CALLBACK_CHOICES, described="record or refuse"),
        "record",
        "a server install Discord announced that our callback did not store within the grace: `record` links"
        " it (`ref` null, `source` `discord_webhook`) and syncs its members; `refuse` makes the bot leave",
    ),
    Setting(
        "LINK_CALLBACK_GRACE_SECONDS",
        "link_callback_grace",
        partial(_float_setting, maximum=MAX_LINK_CALLBACK_GRACE),
        f"{DEFAULT_LINK_CALLBACK_GRACE:g}",
        f"how long (0 to {MAX_LINK_CALLBACK_GRACE:g} s) an announced install waits for the callback before"
        " `LINK_WITHOUT_CALLBACK` applies",
    ),
)

SETTING_BY_NAME = {setting.name: setting for setting in SETTINGS_TABLE}


def parse_settings(env: Mapping[str, str]) -> Settings:
    """Validate raw `NAME=value` settings; raise SettingsError naming every problem."""
    problems: list[str] = []
    values: dict[str, Any] = {}
    for setting in SETTINGS_TABLE:
        raw = _raw_value(env, setting)
        if raw is None:
            if setting.required:
                problems.append(f"{setting.name} is not set: {setting.required}.")
            values[setting.attribute] = setting.unset
        elif setting.needs is not None and _raw_value(env, SETTING_BY_NAME[setting.needs[0]]) is None:
            problems.append(f"{setting.name} needs {setting.needs[0]}: {setting.needs[1]}.")
            values[setting.attribute] = setting.unset
        else:
            values[setting.attribute] = setting.parse(raw, setting.name, problems)
    _check_settings_together(values, problems)
    if problems:
        raise SettingsError(problems)
    return Settings(**values)


def _raw_value(env: Mapping[str, str], setting: Setting) -> str | None:
    """The variable's value, blank meaning unset, else its default (None: unset, or required)."""
    return env.get(setting.name, "").strip() or setting.default


def _check_settings_together(values: dict[str, Any], problems: list[str]) -> None:
    """The checks and defaults that depend on more than one setting; fills WEB_PORT's default."""
    client_id: int | None = values["client_id"]
    bot_token: Secret | None = values["bot_token"]
    bot_user_id = _bot_user_id(bot_token.reveal()) if bot_token else None
    if client_id and bot_user_id is not None and int(bot_user_id) != client_id:
        problems.append(
            f"DISCORD_BOT_TOKEN belongs to application {bot_user_id}, not to DISCORD_CLIENT_ID {client_id}: "
            "copy the token from the Bot page of the same application."
        )

    redirect = _split_url(values["redirect_uri"])
    if values["web_port"] is None:
        values["web_port"] = _port_of(redirect) or (443 if redirect.scheme == "https" else 80)

    tls_cert: Path | None = values["tls_cert_file"]
    if (tls_cert is None) != (values["tls_key_file"] is None):
        problems.append("TLS_CERT_FILE and TLS_KEY_FILE go together: set both, or neither.")
    if (
        redirect.scheme == "https"
        and tls_cert is None
        and not values["trusted_proxies"]
        and redirect.hostname not in LOCAL_HOSTS
    ):
        problems.append(
            f"DISCORD_REDIRECT_URI is https on {redirect.hostname}: set TLS_CERT_FILE and TLS_KEY_FILE, or put a"
            " TLS-terminating proxy in front and name its address in TRUSTED_PROXIES (a self-signed certificate"
            " is made for localhost only)."
        )

    shard_count: int | None = values["shard_count"]
    shard_ids: tuple[int, ...] | None = values["shard_ids"]
    if shard_ids is not None and shard_count is not None and shard_ids[-1] >= shard_count:
        problems.append(f"SHARD_IDS must be between 0 and {shard_count - 1} (SHARD_COUNT is {shard_count}).")

    if (values["webhook_url"] is None) != (values["webhook_secret"] is None):
        problems.append("WEBHOOK_URL and WEBHOOK_SECRET go together: set both, or neither.")


def masked_url(url: str) -> str:
    """A URL fit for a message or a log: its scheme, host and port only.

    Credentials hide in a URL's user part, its query and, as in Slack's and Discord's webhooks, its path.
    """
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return f"{url.partition(':')[0]}://***"
    host = parts.hostname or ""
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}{port}/***"


def database_url_problem(url: str) -> str | None:
    """What is wrong with DATABASE_URL's shape, if anything; the answer never quotes the URL (it may hold a password)."""
    if url.startswith(POSTGRES_SCHEMES):
        try:
            parts = urlsplit(url)
            _ = parts.port  # a port that is not a number raises
        except ValueError:
            return "DATABASE_URL is not a valid PostgreSQL URL: check its host and port (postgresql://user:password@host:5432/guildlink)."
        socket_dir = dict(parse_qsl(parts.query)).get("host", "")
        if not parts.hostname and not socket_dir.startswith("/"):
            return (
                "DATABASE_URL names PostgreSQL but no server: use postgresql://user:password@host:5432/guildlink,"
                " or postgresql:///guildlink?host=/run/postgresql for a local socket."
            )
        return None
    if url.startswith("sqlite:///") and url != "sqlite:///":
        return None
    # Only the scheme is shown: the rest may hold a password.
    scheme = url.partition(":")[0][:20]
    return (
        f"DATABASE_URL names {scheme!r}: it must be sqlite:///path/to/file.db (relative),"
        " sqlite:////absolute/path.db, or postgresql://user:password@host:5432/database."
    )


def masked_database_url(url: str) -> str:
    """DATABASE_URL fit for a message or a log: any password replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return f"{url.partition(':')[0]}://***"
    userinfo, at, hostport = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    pairs = parts.query.split("&")
    masked_pairs = [
        f"{pair.partition('=')[0]}=***" if pair.partition("=")[0].lower() == "password" else pair
        for pair in pairs
    ]
    if not colon and masked_pairs == pairs:
        return url
    netloc = f"{user}{':***' if colon else ''}{at}{hostport}"
    return urlunsplit(parts._replace(netloc=netloc, query="&".join(masked_pairs)))


def _split_url(url: str) -> SplitResult:
    """urlsplit, with an unparseable URL (e.g. '[') read as no URL at all."""
    try:
        return urlsplit(url)
    except ValueError:
        return urlsplit("")


def _port_of(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:  # a port out of range; the URL's other checks report the setting
        return None
