"""Every setting of guildlink, read once from the environment and `.env`, validated, secrets masked."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
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
# A pause of reading lasts this long at most, then the buffered members are dropped (their guilds read again
# later). discord.py drops a session after 60 s without reading (its heartbeat_timeout): the maximum stays
# well below, so that the frames read after the pause reach it first.
DEFAULT_READ_PAUSE_MAX = 20.0
MAX_READ_PAUSE_MAX = 45.0


LOG_FORMATS = ("text", "json")
# What an APPLICATION_AUTHORIZED server install that no callback stored becomes (LINK_WITHOUT_CALLBACK).
LINK_WITHOUT_CALLBACK_CHOICES = ("record", "refuse")
DEFAULT_LINK_CALLBACK_GRACE = 60.0
MAX_LINK_CALLBACK_GRACE = 3600.0


@dataclass(frozen=True, slots=True)
class SettingInfo:
    """One environment variable as `--help` and the README list it; `default` is what an unset one means."""

    name: str
    default: str | None
    meaning: str
    # What --help shows when the default is not a plain value (required, unset, or derived from another).
    shown_default: str | None = None

    @property
    def help_default(self) -> str:
        if self.shown_default is not None:
            return self.shown_default
        return self.default if self.default is not None else "unset"


# Every variable parse_settings reads, with the default it applies: the one table --help is made from
# (a test checks that parse_settings reads exactly these, so the two cannot drift apart).
SETTINGS_TABLE: tuple[SettingInfo, ...] = (
    SettingInfo("DISCORD_CLIENT_ID", None, "the application's id (Developer Portal > General)", "required"),
    SettingInfo("DISCORD_CLIENT_SECRET", None, "its client secret (Developer Portal > OAuth2)", "required"),
    SettingInfo("DISCORD_BOT_TOKEN", None, "its bot's token (Developer Portal > Bot)", "required"),
    SettingInfo(
        "DISCORD_REDIRECT_URI",
        DEFAULT_REDIRECT_URI,
        "our OAuth2 callback, registered under OAuth2 > Redirects",
    ),
    SettingInfo(
        "DISCORD_BASE_URL", DEFAULT_DISCORD_BASE_URL, "Discord, or a Discord-compatible server (the sandbox)"
    ),
    SettingInfo("DISCORD_SCOPES", DEFAULT_SCOPES, "what the consent page asks for"),
    SettingInfo("DISCORD_PERMISSIONS", "0", "the bot's permissions the consent page asks for"),
    SettingInfo("WEB_HOST", "127.0.0.1", "the address the web server listens on"),
    SettingInfo("WEB_PORT", None, "the web server's port", "the redirect URI's port"),
    SettingInfo("TLS_CERT_FILE", None, "HTTPS certificate (PEM); with TLS_KEY_FILE"),
    SettingInfo(
        "TLS_KEY_FILE", None, "its private key; both unset with https://localhost: a self-signed one is made"
    ),
    SettingInfo("DATABASE_URL", DEFAULT_DATABASE_URL, "the database"),
    SettingInfo(
        "DATA_DIR", DEFAULT_DATA_DIR, "generated files (self-signed certificate, the last run's record)"
    ),
    SettingInfo("API_TOKEN", None, "bearer token of the JSON API, 32+ characters; unset, /api answers 503"),
    SettingInfo("LOG_LEVEL", "INFO", f"one of {', '.join(LOG_LEVELS)}"),
    SettingInfo("LOG_FORMAT", "text", "text, or json: one JSON object per line"),
    SettingInfo("METRICS", "token", "/metrics: off, token (Bearer API_TOKEN) or open"),
    SettingInfo("LINK_RATE_LIMIT", "20", "consent flows one client may open per minute; 0: no limit"),
    SettingInfo("TRUSTED_PROXIES", None, "reverse proxies' addresses, comma-separated (X-Forwarded-For)"),
    SettingInfo("SHARD_COUNT", None, "shards across every process", "Discord's recommended count"),
    SettingInfo("SHARD_IDS", None, "the shards this process runs, e.g. 0,1,2,3", "all of SHARD_COUNT"),
    SettingInfo("EVENT_RETENTION_DAYS", "7", "how long the event feed keeps each event, in days"),
    SettingInfo(
        "MEMBER_DATA_AFTER_LEAVE_HOURS",
        "24",
        "how long the event feed keeps a departed member's names and nick, in hours (0: at the next hourly scrub)",
    ),
    SettingInfo(
        "RECONCILE_HOLD_SHARE",
        "0.1",
        "a resync that would remove more than this share of a guild's members (and RECONCILE_HOLD_MIN) is held",
    ),
    SettingInfo("RECONCILE_HOLD_MIN", "50", "the fewest removals that hold a resync for confirmation"),
    SettingInfo("WEBHOOK_URL", None, "POST each event, signed, here (with WEBHOOK_SECRET)"),
    SettingInfo("WEBHOOK_SECRET", None, "the webhooks' HMAC key, 32+ characters"),
    SettingInfo("WEBHOOK_EVENTS", "*", "which event types are POSTed, e.g. guild.*"),
    SettingInfo(
        "IDENTIFY_INTERVAL",
        str(DEFAULT_IDENTIFY_INTERVAL),
        "seconds between IDENTIFYs of a max_concurrency bucket (lower only for a Discord-compatible server)",
    ),
    SettingInfo(
        "MEMBER_BUFFER_MAX",
        str(DEFAULT_MEMBER_BUFFER_MAX),
        "members held for a slow database before gateway reading pauses (resumes at half)",
    ),
    SettingInfo(
        "READ_PAUSE_MAX",
        f"{DEFAULT_READ_PAUSE_MAX:g}",
        f"seconds a pause may last (at most {MAX_READ_PAUSE_MAX:g}); then buffered members are dropped, read again later",
    ),
    SettingInfo(
        "DISCORD_PUBLIC_KEY",
        None,
        "the application's public key (General > Public Key, hex): turns on POST /discord/webhook-events",
    ),
    SettingInfo(
        "LINK_WITHOUT_CALLBACK",
        "record",
        "a server install Discord announced but no callback stored: record (link it) or refuse (leave)",
    ),
    SettingInfo(
        "LINK_CALLBACK_GRACE_SECONDS",
        f"{DEFAULT_LINK_CALLBACK_GRACE:g}",
        "seconds the callback has to store an announced install before LINK_WITHOUT_CALLBACK applies",
    ),
)
SETTING_DEFAULTS = {info.name: info.default for info in SETTINGS_TABLE}


MIN_SECRET_LENGTH = 32
# An event type pattern: dotted lower-case words, `*` standing for any run of characters (guild.*, *.left).
EVENT_PATTERN = re.compile(r"[a-z_*]+(\.[a-z_*]+)*")


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
    """The validated settings of one guildlink process."""

    client_id: int
    client_secret: Secret
    bot_token: Secret
    redirect_uri: str = DEFAULT_REDIRECT_URI
    discord_base_url: str = DEFAULT_DISCORD_BASE_URL
    scopes: tuple[str, ...] = tuple(DEFAULT_SCOPES.split())
    permissions: int = 0
    web_host: str = "127.0.0.1"
    web_port: int = 8080
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Out of the repr: a PostgreSQL URL may hold a password. Show it with masked_database_url().
    database_url: str = field(default=DEFAULT_DATABASE_URL, repr=False)
    api_token: Secret | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    data_dir: Path = Path(DEFAULT_DATA_DIR)
    # Consent flows (/link, /start) one client may open per minute; 0 turns the limit off.
    link_rate_limit: int = 20
    # Addresses of reverse proxies whose X-Forwarded-For names the real client (for the limit above).
    trusted_proxies: frozenset[str] = frozenset()
    # /metrics: "off", "token" (Bearer API_TOKEN, as the JSON API) or "open" (anyone who reaches it).
    metrics: str = "token"
    # None: Discord's recommended count (GET /gateway/bot), every shard in this process.
    shard_count: int | None = None
    # None: every shard of shard_count; else just these (a fleet splits them between processes).
    shard_ids: tuple[int, ...] | None = None
    # The event feed (GET /api/events, webhooks) keeps each event this long.
    event_retention_days: int = 7
    member_data_after_leave_hours: int = 24
    # A resync that would remove more than this share of a guild's stored members, and at least this many,
    # applies its joins and changes but holds its removals for confirmation (Discord's list may be short).
    reconcile_hold_share: float = 0.1
    reconcile_hold_min: int = 50
    # Webhooks: every event of the feed POSTed to webhook_url, signed with webhook_secret; None: off.
    # Out of the repr: a URL may carry credentials. Show it with masked_url().
    webhook_url: str | None = field(default=None, repr=False)
    webhook_secret: Secret | None = None
    # Which event types are POSTed (others are skipped): patterns such as guild.* or member.left.
    webhook_events: tuple[str, ...] = ("*",)
    # Seconds between IDENTIFYs of one bucket across the fleet: Discord's rule; lower only for a
    # Discord-compatible server with a shorter window (the sandbox's --identify-interval).
    identify_interval: float = DEFAULT_IDENTIFY_INTERVAL
    # Members (sync chunks, member events) held for the database before gateway reading pauses; resumes at half.
    member_buffer_max: int = DEFAULT_MEMBER_BUFFER_MAX
    # The longest pause: then the buffered members are dropped and their guilds read again later, before
    # discord.py's heartbeat timeout (60 s without reading) would drop the session.
    read_pause_max: float = DEFAULT_READ_PAUSE_MAX
    # Discord's webhook events (POST /discord/webhook-events): the application's Ed25519 public key, 32 bytes;
    # None: the route is not served. Not a secret, but only Discord's signatures may pass it.
    discord_public_key: bytes | None = None
    # A server install announced by APPLICATION_AUTHORIZED that no callback stored within the grace:
    # "record" stores the link (ref unknown), "refuse" makes the bot leave.
    link_without_callback: str = "record"
    link_callback_grace: float = DEFAULT_LINK_CALLBACK_GRACE

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


def load_settings(env_file: Path | None = Path(".env")) -> Settings:
    """Settings from the environment and `env_file`; raise SettingsError naming every problem."""
    return parse_settings(read_environment(env_file))


def parse_settings(env: Mapping[str, str]) -> Settings:
    """Validate raw `NAME=value` settings; raise SettingsError naming every problem."""
    problems: list[str] = []

    def get(name: str) -> str | None:
        """The variable's value, or its default from SETTINGS_TABLE (None: required, or unset)."""
        raw = env.get(name, "").strip()
        return raw if raw else SETTING_DEFAULTS[name]

    def required(name: str, where: str) -> str:
        value = get(name)
        if value is None:
            problems.append(f"{name} is not set: {where}.")
            return ""
        return value

    client_id_raw = required(
        "DISCORD_CLIENT_ID", "copy the Application ID from the Developer Portal's General page"
    )
    client_secret = required(
        "DISCORD_CLIENT_SECRET", "reset and copy it on the Developer Portal's OAuth2 page"
    )
    bot_token = required("DISCORD_BOT_TOKEN", "reset and copy it on the Developer Portal's Bot page")

    client_id = 0
    if client_id_raw:
        if client_id_raw.isdigit():
            client_id = int(client_id_raw)
        else:
            problems.append(
                "DISCORD_CLIENT_ID must be the numeric Application ID (a snowflake such as 1234567890),"
                f" not {client_id_raw!r}."
            )
    if bot_token:
        problems.extend(_bot_token_problems(bot_token, client_id))

    redirect_uri = get("DISCORD_REDIRECT_URI") or DEFAULT_REDIRECT_URI
    redirect = _split_url(redirect_uri)
    if redirect.scheme not in ("http", "https") or not redirect.hostname or not redirect.path:
        problems.append(
            f"DISCORD_REDIRECT_URI must be an absolute http(s) URL with a path, not {redirect_uri!r}: "
            f"such as {DEFAULT_REDIRECT_URI}; register the same value in the Developer Portal."
        )

    base_url = (get("DISCORD_BASE_URL") or "").rstrip("/")
    base = _split_url(base_url)
    if base.scheme not in ("http", "https") or not base.hostname or base.path:
        problems.append(
            f"DISCORD_BASE_URL must be a scheme and host such as {DEFAULT_DISCORD_BASE_URL}, without a path,"
            f" not {base_url!r}."
        )
    elif base.hostname and base.hostname.endswith("discordapp.com"):
        problems.append(f"DISCORD_BASE_URL names the retired discordapp.com: use {DEFAULT_DISCORD_BASE_URL}.")

    scopes = tuple((get("DISCORD_SCOPES") or DEFAULT_SCOPES).split())
    if "bot" not in scopes:
        problems.append(
            f"DISCORD_SCOPES must include 'bot', unlike {' '.join(scopes)!r}: without it Discord adds no bot"
            " and sends no guild."
        )

    permissions = _int_setting(get("DISCORD_PERMISSIONS"), "DISCORD_PERMISSIONS", problems, minimum=0)

    default_port = _port_of(redirect) or (443 if redirect.scheme == "https" else 80)
    web_port = _int_setting(
        get("WEB_PORT") or str(default_port), "WEB_PORT", problems, minimum=0, maximum=65535
    )

    tls_cert = get("TLS_CERT_FILE")
    tls_key = get("TLS_KEY_FILE")
    if bool(tls_cert) != bool(tls_key):
        problems.append("TLS_CERT_FILE and TLS_KEY_FILE go together: set both, or neither.")
    for name, path in (("TLS_CERT_FILE", tls_cert), ("TLS_KEY_FILE", tls_key)):
        if path and not Path(path).is_file():
            problems.append(f"{name} names {path}, which is not a readable file.")
    behind_proxy = bool((get("TRUSTED_PROXIES") or "").strip())
    if (
        redirect.scheme == "https"
        and not tls_cert
        and not behind_proxy
        and redirect.hostname not in LOCAL_HOSTS
    ):
        problems.append(
            f"DISCORD_REDIRECT_URI is https on {redirect.hostname}: set TLS_CERT_FILE and TLS_KEY_FILE, or put a"
            " TLS-terminating proxy in front and name its address in TRUSTED_PROXIES (a self-signed certificate"
            " is made for localhost only)."
        )

    database_url = get("DATABASE_URL") or DEFAULT_DATABASE_URL
    database_problem = database_url_problem(database_url)
    if database_problem:
        problems.append(database_problem)

    log_level_raw = get("LOG_LEVEL") or "INFO"
    log_level = log_level_raw.upper()
    if log_level not in LOG_LEVELS:
        problems.append(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, not {log_level_raw!r}.")
    log_format_raw = get("LOG_FORMAT") or "text"
    log_format = log_format_raw.lower()
    if log_format not in LOG_FORMATS:
        problems.append(f"LOG_FORMAT must be text or json, not {log_format_raw!r}.")

    api_token = get("API_TOKEN")
    if api_token is not None and len(api_token) < 32:
        problems.append(
            "API_TOKEN is too short: use at least 32 random characters (python -c 'import secrets; print(secrets.token_urlsafe(32))')."
        )

    shard_count, shard_ids = _shard_settings(get("SHARD_COUNT"), get("SHARD_IDS"), problems)
    metrics_raw = get("METRICS") or "token"
    metrics = metrics_raw.lower()
    if metrics not in ("off", "token", "open"):
        problems.append(f"METRICS must be off, token (behind API_TOKEN) or open, not {metrics_raw!r}.")
    identify_interval = _float_setting(get("IDENTIFY_INTERVAL"), "IDENTIFY_INTERVAL", problems, maximum=60.0)
    member_buffer_max = _int_setting(
        get("MEMBER_BUFFER_MAX"), "MEMBER_BUFFER_MAX", problems, minimum=1_000, maximum=10_000_000
    )
    read_pause_max = _float_setting(
        get("READ_PAUSE_MAX"), "READ_PAUSE_MAX", problems, minimum=0.1, maximum=MAX_READ_PAUSE_MAX
    )
    link_rate_limit = _int_setting(
        get("LINK_RATE_LIMIT"), "LINK_RATE_LIMIT", problems, minimum=0, maximum=100_000
    )
    trusted_proxies = frozenset(
        part.strip() for part in (get("TRUSTED_PROXIES") or "").split(",") if part.strip()
    )
    for proxy in trusted_proxies:
        try:
            ipaddress.ip_address(proxy)
        except ValueError:
            problems.append(f"TRUSTED_PROXIES must be IP addresses separated by commas, not {proxy!r}.")

    event_retention_days = _int_setting(
        get("EVENT_RETENTION_DAYS"), "EVENT_RETENTION_DAYS", problems, minimum=1, maximum=3650
    )
    member_data_after_leave_hours = _int_setting(
        get("MEMBER_DATA_AFTER_LEAVE_HOURS"),
        "MEMBER_DATA_AFTER_LEAVE_HOURS",
        problems,
        minimum=0,
        maximum=87600,
    )
    reconcile_hold_share = _share_setting(get("RECONCILE_HOLD_SHARE"), "RECONCILE_HOLD_SHARE", problems)
    reconcile_hold_min = _int_setting(get("RECONCILE_HOLD_MIN"), "RECONCILE_HOLD_MIN", problems, minimum=1)
    webhook_url, webhook_secret, webhook_events = _webhook_settings(
        get("WEBHOOK_URL"), get("WEBHOOK_SECRET"), get("WEBHOOK_EVENTS") or "*", problems
    )

    discord_public_key = _public_key_setting(get("DISCORD_PUBLIC_KEY"), problems)
    link_without_callback_raw = get("LINK_WITHOUT_CALLBACK") or "record"
    link_without_callback = link_without_callback_raw.lower()
    if link_without_callback not in LINK_WITHOUT_CALLBACK_CHOICES:
        problems.append(f"LINK_WITHOUT_CALLBACK must be record or refuse, not {link_without_callback_raw!r}.")
    link_callback_grace = _float_setting(
        get("LINK_CALLBACK_GRACE_SECONDS"),
        "LINK_CALLBACK_GRACE_SECONDS",
        problems,
        maximum=MAX_LINK_CALLBACK_GRACE,
    )

    if problems:
        raise SettingsError(problems)
    return Settings(
        client_id=client_id,
        client_secret=Secret(client_secret),
        bot_token=Secret(bot_token),
        redirect_uri=redirect_uri,
        discord_base_url=base_url,
        scopes=scopes,
        permissions=permissions,
        web_host=get("WEB_HOST") or "127.0.0.1",
        web_port=web_port,
        tls_cert_file=Path(tls_cert) if tls_cert else None,
        tls_key_file=Path(tls_key) if tls_key else None,
        database_url=database_url,
        api_token=Secret(api_token) if api_token else None,
        log_level=log_level,
        log_format=log_format,
        data_dir=Path(get("DATA_DIR") or DEFAULT_DATA_DIR),
        shard_count=shard_count,
        shard_ids=shard_ids,
        identify_interval=identify_interval,
        member_buffer_max=member_buffer_max,
        read_pause_max=read_pause_max,
        link_rate_limit=link_rate_limit,
        metrics=metrics,
        trusted_proxies=trusted_proxies,
        event_retention_days=event_retention_days,
        member_data_after_leave_hours=member_data_after_leave_hours,
        reconcile_hold_share=reconcile_hold_share,
        reconcile_hold_min=reconcile_hold_min,
        webhook_url=webhook_url,
        webhook_secret=Secret(webhook_secret) if webhook_secret else None,
        webhook_events=webhook_events,
        discord_public_key=discord_public_key,
        link_without_callback=link_without_callback,
        link_callback_grace=link_callback_grace,
    )


def _public_key_setting(raw: str | None, problems: list[str]) -> bytes | None:
    """DISCORD_PUBLIC_KEY: 64 hex digits (Ed25519's 32 bytes), as the Developer Portal shows it."""
    if raw is None:
        return None
    try:
        key = bytes.fromhex(raw)
    except ValueError:
        key = b""
    if len(key) != 32:
        problems.append(
            "DISCORD_PUBLIC_KEY must be the 64 hex digits of the Developer Portal's General > Public Key."
        )
        return None
    return key


def _webhook_settings(
    url: str | None, secret: str | None, raw_events: str, problems: list[str]
) -> tuple[str | None, str | None, tuple[str, ...]]:
    """WEBHOOK_URL and WEBHOOK_SECRET (both or neither) and WEBHOOK_EVENTS; messages never quote the URL."""
    if bool(url) != bool(secret):
        problems.append("WEBHOOK_URL and WEBHOOK_SECRET go together: set both, or neither.")
    if url:
        try:
            parts = urlsplit(url)
            _ = parts.port  # a port that is not a number raises
        except ValueError:
            parts = urlsplit("")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(
                "WEBHOOK_URL must be an absolute http(s) URL, such as https://backend.example.com/guildlink-events."
            )
    if secret and len(secret) < MIN_SECRET_LENGTH:
        problems.append(
            f"WEBHOOK_SECRET is too short: use at least {MIN_SECRET_LENGTH} random characters"
            " (python -c 'import secrets; print(secrets.token_urlsafe(32))')."
        )
    events = tuple(part.strip() for part in raw_events.split(",") if part.strip())
    bad = [pattern for pattern in events if not EVENT_PATTERN.fullmatch(pattern)]
    if bad or not events:
        problems.append(
            "WEBHOOK_EVENTS must be event types or patterns separated by commas, such as guild.* or"
            f" guild.*,member.left (* matches any characters), not {raw_events!r}."
        )
    return url, secret, events or ("*",)


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


def _shard_settings(
    raw_count: str | None, raw_ids: str | None, problems: list[str]
) -> tuple[int | None, tuple[int, ...] | None]:
    """SHARD_COUNT and SHARD_IDS (e.g. 8 and 0,1,2,3): both unset, SHARD_COUNT alone, or both."""
    count = (
        None
        if raw_count is None
        else _int_setting(raw_count, "SHARD_COUNT", problems, minimum=1, maximum=65535)
    )
    if raw_ids is None:
        return count, None
    if count is None:
        problems.append("SHARD_IDS needs SHARD_COUNT: the total number of shards across every process.")
        return None, None
    parts = [part.strip() for part in raw_ids.split(",")]
    if not all(part.isascii() and part.isdigit() and len(part) <= 5 for part in parts):
        problems.append(
            f"SHARD_IDS must be shard numbers separated by commas, such as 0,1,2,3, not {raw_ids!r}."
        )
        return count, None
    ids = tuple(sorted({int(part) for part in parts}))
    if ids[-1] >= count:
        problems.append(f"SHARD_IDS must be between 0 and {count - 1} (SHARD_COUNT is {count}).")
    return count, ids


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


def _float_setting(
    raw: str | None, name: str, problems: list[str], *, minimum: float = 0.0, maximum: float
) -> float:
    """A number of seconds from `minimum` to `maximum`."""
    try:
        value = float(raw or "")
    except ValueError:
        problems.append(f"{name} must be a number of seconds, not {raw!r}.")
        return 0.0
    if not minimum <= value <= maximum:
        problems.append(f"{name} must be between {minimum:g} and {maximum:g} seconds.")
    return value


def _share_setting(raw: str | None, name: str, problems: list[str]) -> float:
    """A share from 0 to 1 (0: hold any resync that removes at least the minimum; 1: never hold)."""
    try:
        value = float(raw or "")
    except ValueError:
        problems.append(f"{name} must be a share from 0 to 1, such as 0.1, not {raw!r}.")
        return 0.0
    if not 0 <= value <= 1:
        problems.append(f"{name} must be a share from 0 to 1, such as 0.1, not {value:g}.")
    return value


def _int_setting(
    raw: str | None, name: str, problems: list[str], *, minimum: int, maximum: int | None = None
) -> int:
    try:
        value = int(raw or "")
    except ValueError:
        problems.append(f"{name} must be a whole number, not {raw!r}.")
        return 0
    if maximum is not None and not minimum <= value <= maximum:
        problems.append(f"{name} must be between {minimum} and {maximum}, not {value}.")
    elif value < minimum:
        problems.append(f"{name} must be at least {minimum}, not {value}.")
    return value


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


def _bot_token_problems(token: str, client_id: int) -> list[str]:
    """Check a bot token's shape; the first part is the bot's user id in base64."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts):
        return [
            "DISCORD_BOT_TOKEN is not shaped like a bot token (three parts separated by dots): copy it again from the Bot page."
        ]
    try:
        decoded = base64.urlsafe_b64decode(parts[0] + "=" * (-len(parts[0]) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    if not decoded.isdigit():
        return [
            "DISCORD_BOT_TOKEN is not a bot token (its first part is not a user id): copy it again from the Bot page."
        ]
    if client_id and int(decoded) != client_id:
        return [
            f"DISCORD_BOT_TOKEN belongs to application {decoded}, not to DISCORD_CLIENT_ID {client_id}: "
            "copy the token from the Bot page of the same application."
        ]
    return []
