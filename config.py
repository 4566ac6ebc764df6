"""Every setting of guildlink, read once from the environment and `.env`, validated, secrets masked."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from dotenv import dotenv_values

DEFAULT_DISCORD_BASE_URL = "https://discord.com"
DEFAULT_REDIRECT_URI = "https://localhost:8080/authorize-discord"
DEFAULT_DATABASE_URL = "sqlite:///data/guildlink.db"
DEFAULT_SCOPES = "identify guilds bot"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
# Discord's 5 s between IDENTIFYs of a max_concurrency bucket, plus a margin for clocks and the trip there.
DEFAULT_IDENTIFY_INTERVAL = 5.0 + 0.25


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
    data_dir: Path = Path("data")
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
    # Seconds between IDENTIFYs of one bucket across the fleet: Discord's rule; lower only for a
    # Discord-compatible server with a shorter window (the sandbox's --identify-interval).
    identify_interval: float = DEFAULT_IDENTIFY_INTERVAL

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
        return urlsplit(self.redirect_uri).scheme == "https"

    @property
    def behind_tls_proxy(self) -> bool:
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

    def get(name: str, default: str | None = None) -> str | None:
        raw = env.get(name, "").strip()
        return raw if raw else default

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
                "DISCORD_CLIENT_ID must be the numeric Application ID (a snowflake such as 1234567890)."
            )
    if bot_token:
        problems.extend(_bot_token_problems(bot_token, client_id))

    redirect_uri = get("DISCORD_REDIRECT_URI", DEFAULT_REDIRECT_URI) or DEFAULT_REDIRECT_URI
    redirect = urlsplit(redirect_uri)
    if redirect.scheme not in ("http", "https") or not redirect.hostname or not redirect.path:
        problems.append(
            "DISCORD_REDIRECT_URI must be an absolute http(s) URL with a path, "
            f"such as {DEFAULT_REDIRECT_URI}; register the same value in the Developer Portal."
        )

    base_url = (get("DISCORD_BASE_URL", DEFAULT_DISCORD_BASE_URL) or "").rstrip("/")
    base = urlsplit(base_url)
    if base.scheme not in ("http", "https") or not base.hostname or base.path:
        problems.append(
            f"DISCORD_BASE_URL must be a scheme and host such as {DEFAULT_DISCORD_BASE_URL}, without a path."
        )
    elif base.hostname and base.hostname.endswith("discordapp.com"):
        problems.append(f"DISCORD_BASE_URL names the retired discordapp.com: use {DEFAULT_DISCORD_BASE_URL}.")

    scopes = tuple((get("DISCORD_SCOPES", DEFAULT_SCOPES) or DEFAULT_SCOPES).split())
    if "bot" not in scopes:
        problems.append(
            "DISCORD_SCOPES must include 'bot': without it Discord adds no bot and sends no guild."
        )

    permissions = _int_setting(get("DISCORD_PERMISSIONS", "0"), "DISCORD_PERMISSIONS", problems, minimum=0)

    default_port = redirect.port or (443 if redirect.scheme == "https" else 80)
    web_port = _int_setting(
        get("WEB_PORT", str(default_port)), "WEB_PORT", problems, minimum=0, maximum=65535
    )

    tls_cert = get("TLS_CERT_FILE")
    tls_key = get("TLS_KEY_FILE")
    if bool(tls_cert) != bool(tls_key):
        problems.append("TLS_CERT_FILE and TLS_KEY_FILE go together: set both, or neither.")
    for name, path in (("TLS_CERT_FILE", tls_cert), ("TLS_KEY_FILE", tls_key)):
        if path and not Path(path).is_file():
            problems.append(f"{name} names {path}, which is not a readable file.")
    trusted_proxies = frozenset(
        part.strip() for part in (get("TRUSTED_PROXIES") or "").split(",") if part.strip()
    )
    if (
        redirect.scheme == "https"
        and not tls_cert
        and redirect.hostname not in LOCAL_HOSTS
        and not trusted_proxies
    ):
        problems.append(
            f"DISCORD_REDIRECT_URI is https on {redirect.hostname}: set TLS_CERT_FILE and TLS_KEY_FILE, or, behind"
            " a TLS-terminating proxy, set TRUSTED_PROXIES to its address (this process then serves plain HTTP"
            " on WEB_PORT); a self-signed certificate is made for localhost only."
        )

    database_url = get("DATABASE_URL", DEFAULT_DATABASE_URL) or DEFAULT_DATABASE_URL
    database_problem = database_url_problem(database_url)
    if database_problem:
        problems.append(database_problem)

    log_level = (get("LOG_LEVEL", "INFO") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        problems.append(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}.")

    api_token = get("API_TOKEN")
    if api_token is not None and len(api_token) < 32:
        problems.append(
            "API_TOKEN is too short: use at least 32 random characters (python -c 'import secrets; print(secrets.token_urlsafe(32))')."
        )

    shard_count, shard_ids = _shard_settings(get("SHARD_COUNT"), get("SHARD_IDS"), problems)
    metrics = (get("METRICS", "token") or "token").lower()
    if metrics not in ("off", "token", "open"):
        problems.append("METRICS must be off, token (behind API_TOKEN) or open.")
    identify_interval = _float_setting(
        get("IDENTIFY_INTERVAL", str(DEFAULT_IDENTIFY_INTERVAL)), "IDENTIFY_INTERVAL", problems, maximum=60.0
    )
    link_rate_limit = _int_setting(
        get("LINK_RATE_LIMIT", "20"), "LINK_RATE_LIMIT", problems, minimum=0, maximum=100_000
    )
    for proxy in trusted_proxies:
        try:
            ipaddress.ip_address(proxy)
        except ValueError:
            problems.append(f"TRUSTED_PROXIES must be IP addresses separated by commas, not {proxy!r}.")

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
        web_host=get("WEB_HOST", "127.0.0.1") or "127.0.0.1",
        web_port=web_port,
        tls_cert_file=Path(tls_cert) if tls_cert else None,
        tls_key_file=Path(tls_key) if tls_key else None,
        database_url=database_url,
        api_token=Secret(api_token) if api_token else None,
        log_level=log_level,
        data_dir=Path(get("DATA_DIR", "data") or "data"),
        shard_count=shard_count,
        shard_ids=shard_ids,
        identify_interval=identify_interval,
        link_rate_limit=link_rate_limit,
        metrics=metrics,
        trusted_proxies=trusted_proxies,
    )


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
    return (
        "DATABASE_URL must be sqlite:///path/to/file.db (relative), sqlite:////absolute/path.db,"
        " or postgresql://user:password@host:5432/database."
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


def _float_setting(raw: str | None, name: str, problems: list[str], *, maximum: float) -> float:
    """A number of seconds from 0 to `maximum`."""
    try:
        value = float(raw or "")
    except ValueError:
        problems.append(f"{name} must be a number of seconds, not {raw!r}.")
        return 0.0
    if not 0 <= value <= maximum:
        problems.append(f"{name} must be between 0 and {maximum:g} seconds.")
    return value


def _int_setting(
    raw: str | None, name: str, problems: list[str], *, minimum: int, maximum: int | None = None
) -> int:
    try:
        value = int(raw or "")
    except ValueError:
        problems.append(f"{name} must be a whole number, not {raw!r}.")
        return 0
    if value < minimum or (maximum is not None and value > maximum):
        upper = f" and {maximum}" if maximum is not None else ""
        problems.append(f"{name} must be at least {minimum}{upper}.")
    return value


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
