"""Settings: every problem named at once, secrets never shown."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from config import (
    SETTINGS_TABLE,
    Secret,
    Settings,
    SettingsError,
    masked_database_url,
    masked_url,
    parse_settings,
)
from web.tls import server_ssl_context

ROOT = Path(__file__).resolve().parent.parent


def bot_token_for(user_id: int) -> str:
    first = base64.urlsafe_b64encode(str(user_id).encode()).decode().rstrip("=")
    return f"{first}.GhIjKl.{'x' * 27}"


def valid_env(**overrides: str) -> dict[str, str]:
    env = {
        "DISCORD_CLIENT_ID": "123456789012345678",
        "DISCORD_CLIENT_SECRET": "s3cret-value-never-shown",
        "DISCORD_BOT_TOKEN": bot_token_for(123456789012345678),
    }
    env.update(overrides)
    return env


def test_defaults_follow_the_documented_values() -> None:
    settings = parse_settings(valid_env())
    assert settings.redirect_uri == "https://localhost:8080/authorize-discord"
    assert settings.api_base_url == "https://discord.com/api/v10"
    assert settings.authorize_url == "https://discord.com/oauth2/authorize"
    assert settings.scopes == ("identify", "guilds", "bot")
    assert settings.web_port == 8080
    assert settings.redirect_path == "/authorize-discord"
    assert settings.database_url == "sqlite:///data/guildlink.db"


def test_every_missing_required_variable_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings({})
    text = str(caught.value)
    for name in ("DISCORD_CLIENT_ID", "DISCORD_CLIENT_SECRET", "DISCORD_BOT_TOKEN"):
        assert name in text


def test_bot_token_from_another_application_is_called_a_mix_up() -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(valid_env(DISCORD_BOT_TOKEN=bot_token_for(999)))
    assert "belongs to application 999" in str(caught.value)


@pytest.mark.parametrize("token", ["not-a-token", "a.b", "!!!.b.c"])
def test_malformed_bot_token_is_refused(token: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(valid_env(DISCORD_BOT_TOKEN=token))
    assert "DISCORD_BOT_TOKEN" in str(caught.value)
    assert token not in str(caught.value)


def test_secrets_are_masked_in_repr() -> None:
    settings = parse_settings(valid_env(API_TOKEN="t" * 40))
    text = repr(settings) + str(settings)
    assert "s3cret-value-never-shown" not in text
    assert bot_token_for(123456789012345678) not in text
    assert "t" * 40 not in text
    assert settings.client_secret.reveal() == "s3cret-value-never-shown"
    assert f"{Secret('x')}" == "Secret('**********')"


def test_https_redirect_elsewhere_than_localhost_needs_a_certificate() -> None:
    with pytest.raises(SettingsError, match="TLS_CERT_FILE"):
        parse_settings(valid_env(DISCORD_REDIRECT_URI="https://links.example.com/authorize-discord"))
    settings = parse_settings(valid_env(DISCORD_REDIRECT_URI="http://links.example.com/cb"))
    assert not settings.serves_https and settings.web_port == 80


def test_behind_a_tls_terminating_proxy_an_https_redirect_uri_is_served_as_plain_http() -> None:
    public = "https://links.example.com/authorize-discord"
    settings = parse_settings(
        valid_env(DISCORD_REDIRECT_URI=public, TRUSTED_PROXIES="10.0.0.2", WEB_PORT="8080")
    )
    assert settings.serves_https and settings.tls_by_proxy and server_ssl_context(settings) is None
    assert settings.web_port == 8080 and settings.public_base_url == "https://links.example.com"
    local = parse_settings(
        valid_env(DISCORD_REDIRECT_URI="https://localhost:8443/cb", TRUSTED_PROXIES="10.0.0.2")
    )
    assert not local.tls_by_proxy  # localhost keeps its self-signed certificate


def test_legacy_discordapp_domain_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"discord\.com"):
        parse_settings(valid_env(DISCORD_BASE_URL="https://discordapp.com"))


def test_main_exits_2_with_one_message_and_no_traceback(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "DISCORD_CLIENT_SECRET": "s3cret-value-never-shown"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--env-file", str(tmp_path / "none.env")],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "DISCORD_CLIENT_ID" in result.stderr and "DISCORD_BOT_TOKEN" in result.stderr
    assert "s3cret-value-never-shown" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "url",
    [
        "mysql://db",
        "sqlite:///",
        "postgresql:///guildlink",  # no server: neither a host nor a socket folder
        "postgresql://guildlink:pa55word@db:port/guildlink",
        "postgresql://guildlink:pa55word@[::1/guildlink",
    ],
)
def test_a_database_this_build_cannot_open_is_refused_at_start_without_its_password(url: str) -> None:
    with pytest.raises(SettingsError, match="DATABASE_URL") as caught:
        parse_settings(valid_env(DATABASE_URL=url))
    assert "pa55word" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///data/guildlink.db",
        "sqlite:////var/lib/guildlink/guildlink.db",
        "postgresql://guildlink:pa55word@db.internal:5432/guildlink",
        "postgres://db.internal/guildlink",
        "postgresql:///guildlink?host=/run/postgresql",
    ],
)
def test_sqlite_and_postgresql_urls_are_accepted(url: str) -> None:
    assert parse_settings(valid_env(DATABASE_URL=url)).database_url == url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://guildlink:pa55word@db:5432/guildlink", "postgresql://guildlink:***@db:5432/guildlink"),
        (
            "postgresql://guildlink@db/guildlink?password=pa55word",
            "postgresql://guildlink@db/guildlink?password=***",
        ),
        ("postgresql://guildlink:pa@55word@db/guildlink", "postgresql://guildlink:***@db/guildlink"),
        ("sqlite:///data/guildlink.db", "sqlite:///data/guildlink.db"),
    ],
)
def test_a_database_urls_password_is_masked_wherever_it_is_shown(url: str, shown: str) -> None:
    assert masked_database_url(url) == shown
    assert "pa55word" not in repr(parse_settings(valid_env(DATABASE_URL=url)))


def test_shards_are_all_of_the_recommended_count_unless_set() -> None:
    settings = parse_settings(valid_env())
    assert settings.shard_count is None and settings.shard_ids is None
    settings = parse_settings(valid_env(SHARD_COUNT="8", SHARD_IDS="3, 1,2"))
    assert settings.shard_count == 8 and settings.shard_ids == (1, 2, 3)


def test_bad_shard_settings_are_named() -> None:
    for env, named in (
        ({"SHARD_IDS": "0,1"}, "SHARD_IDS needs SHARD_COUNT"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "0,2"}, "between 0 and 1"),
        ({"SHARD_COUNT": "2", "SHARD_IDS": "0,²"}, "shard numbers separated by commas"),
        ({"SHARD_COUNT": "0"}, "SHARD_COUNT"),
        ({"TRUSTED_PROXIES": "proxy.local"}, "TRUSTED_PROXIES"),
        ({"LINK_RATE_LIMIT": "-1"}, "LINK_RATE_LIMIT"),
    ):
        with pytest.raises(SettingsError) as refused:
            parse_settings(valid_env(**env))
        assert any(named in problem for problem in refused.value.problems), (env, refused.value.problems)


def test_a_port_out_of_range_names_the_range_and_the_value() -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(valid_env(WEB_PORT="70000"))
    assert caught.value.problems == ["WEB_PORT must be between 0 and 65535, not 70000."]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LOG_LEVEL", "verbose"),
        ("LOG_FORMAT", "yaml"),
        ("METRICS", "sometimes"),
        ("DISCORD_CLIENT_ID", "my-app"),
        ("DISCORD_BASE_URL", "https://discord.com/api"),
        ("DISCORD_REDIRECT_URI", "localhost:8080"),
        ("LINK_RATE_LIMIT", "-1"),
    ],
)
def test_a_bad_value_is_named_in_its_message(name: str, value: str) -> None:
    env = valid_env(**{name: value})
    if name == "DISCORD_CLIENT_ID":
        del env["DISCORD_BOT_TOKEN"]
    with pytest.raises(SettingsError) as caught:
        parse_settings(env)
    assert any(problem.startswith(name) and value in problem for problem in caught.value.problems)


def test_a_database_url_that_may_hold_a_password_is_not_echoed() -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(valid_env(DATABASE_URL="mysql://app:hunter2@db/guildlink"))
    assert "hunter2" not in str(caught.value) and "'mysql'" in str(caught.value)


def test_the_settings_table_lists_exactly_the_variables_parse_settings_reads() -> None:
    read: set[str] = set()

    class Recording(dict[str, str]):
        def get(self, key: str, default: object = None) -> object:  # type: ignore[override]
            read.add(key)
            return super().get(key, default)

    parse_settings(Recording(valid_env(SHARD_COUNT="2", SHARD_IDS="0")))
    assert read == {info.name for info in SETTINGS_TABLE}


def readme_settings_rows() -> list[str]:
    """The README's settings table as the declarations make it: one row per setting, in their order."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for setting in SETTINGS_TABLE:
        plain = setting.shown_default is not None or setting.required or setting.default is None
        default = setting.help_default if plain else f"`{setting.help_default}`"
        rows.append(f"| `{setting.name}` | {default} | {setting.help} |")
    return rows


def test_the_readmes_settings_table_is_exactly_the_declarations_and_the_env_example_names_each() -> None:
    readme = (ROOT / "README.md").read_text().splitlines()
    start = readme.index("| variable | default | meaning |")
    end = next((i for i in range(start, len(readme)) if not readme[i].startswith("|")), len(readme))
    expected = readme_settings_rows()
    assert readme[start:end] == expected, "README.md's settings table should read:\n" + "\n".join(expected)
    example = (ROOT / ".env.example").read_text()
    named = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", example, re.MULTILINE))
    assert named == {setting.name for setting in SETTINGS_TABLE}


def test_settings_has_one_field_per_declaration() -> None:
    assert [setting.attribute for setting in SETTINGS_TABLE] == [field.name for field in fields(Settings)]
    assert len({setting.name for setting in SETTINGS_TABLE}) == len(SETTINGS_TABLE)


def test_help_shows_each_settings_help_as_plain_text() -> None:
    retention = next(setting for setting in SETTINGS_TABLE if setting.name == "EVENT_RETENTION_DAYS")
    assert "[The event feed](#the-event-feed)" in retention.help and "`" in retention.help
    assert "see The event feed)" in retention.meaning and "`" not in retention.meaning
    assert "[" not in retention.meaning and "(#" not in retention.meaning


def test_an_https_redirect_uri_behind_a_trusted_proxy_needs_no_certificate_of_ours() -> None:
    settings = parse_settings(
        valid_env(
            DISCORD_REDIRECT_URI="https://links.example.com/authorize-discord", TRUSTED_PROXIES="127.0.0.1"
        )
    )
    assert settings.serves_https and settings.tls_by_proxy and settings.web_port == 443
    assert not parse_settings(valid_env()).tls_by_proxy  # https://localhost: a self-signed certificate


WEBHOOK_SECRET = "w" * 32


def test_the_event_feed_and_webhooks_default_to_a_week_and_off() -> None:
    settings = parse_settings(valid_env())
    assert settings.event_retention_days == 7
    assert settings.webhook_url is None and settings.webhook_secret is None
    assert settings.webhook_events == ("*",)


def test_webhook_settings_are_read_and_the_secret_masked() -> None:
    settings = parse_settings(
        valid_env(
            WEBHOOK_URL="https://user:pa55word@backend.example.com/hooks/t0ken?key=k3y",
            WEBHOOK_SECRET=WEBHOOK_SECRET,
            WEBHOOK_EVENTS=" guild.* , member.left ",
            EVENT_RETENTION_DAYS="30",
        )
    )
    assert settings.webhook_url == "https://user:pa55word@backend.example.com/hooks/t0ken?key=k3y"
    assert settings.webhook_secret is not None and settings.webhook_secret.reveal() == WEBHOOK_SECRET
    assert settings.webhook_events == ("guild.*", "member.left")
    assert settings.event_retention_days == 30
    for value in (WEBHOOK_SECRET, "pa55word", "t0ken", "k3y"):
        assert value not in repr(settings)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"WEBHOOK_URL": "https://backend.example.com/hook"}, "go together"),
        ({"WEBHOOK_SECRET": WEBHOOK_SECRET}, "go together"),
        ({"WEBHOOK_URL": "ftp://backend.example.com/hook", "WEBHOOK_SECRET": WEBHOOK_SECRET}, "http(s)"),
        ({"WEBHOOK_URL": "backend.example.com/hook", "WEBHOOK_SECRET": WEBHOOK_SECRET}, "http(s)"),
        ({"WEBHOOK_URL": "https://backend:port/hook", "WEBHOOK_SECRET": WEBHOOK_SECRET}, "http(s)"),
        ({"WEBHOOK_URL": "https://backend.example.com/", "WEBHOOK_SECRET": "short"}, "too short"),
        ({"WEBHOOK_EVENTS": "guild.*,Member Left"}, "WEBHOOK_EVENTS"),
        ({"WEBHOOK_EVENTS": ","}, "WEBHOOK_EVENTS"),
        ({"EVENT_RETENTION_DAYS": "0"}, "EVENT_RETENTION_DAYS"),
        ({"EVENT_RETENTION_DAYS": "a week"}, "EVENT_RETENTION_DAYS"),
    ],
)
def test_bad_webhook_and_feed_settings_are_named(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError) as caught:
        parse_settings(valid_env(**env))
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "https://user:pa55word@backend.example.com:8443/hooks/t0ken?key=k3y",
            "https://backend.example.com:8443/***",
        ),
        ("http://[::1]:9000/hook", "http://[::1]:9000/***"),
    ],
)
def test_a_webhook_url_is_shown_without_what_may_be_a_credential(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_the_identify_interval_is_discords_unless_set_for_another_server() -> None:
    assert parse_settings(valid_env()).identify_interval == 5.25
    assert parse_settings(valid_env(IDENTIFY_INTERVAL="1.25")).identify_interval == 1.25
    for raw in ("-1", "soon", "120"):
        with pytest.raises(SettingsError) as refused:
            parse_settings(valid_env(IDENTIFY_INTERVAL=raw))
        assert any("IDENTIFY_INTERVAL" in problem for problem in refused.value.problems)


def test_the_read_pause_stays_below_discord_pys_heartbeat_timeout() -> None:
    default = parse_settings(valid_env())
    assert (default.member_buffer_max, default.read_pause_max) == (50_000, 20.0)
    tuned = parse_settings(valid_env(MEMBER_BUFFER_MAX="2000", READ_PAUSE_MAX="1.5"))
    assert (tuned.member_buffer_max, tuned.read_pause_max) == (2_000, 1.5)
    for name, raw in (("READ_PAUSE_MAX", "60"), ("READ_PAUSE_MAX", "0"), ("MEMBER_BUFFER_MAX", "10")):
        with pytest.raises(SettingsError) as refused:
            parse_settings(valid_env(**{name: raw}))
        assert any(problem.startswith(name) for problem in refused.value.problems), (name, raw)


def test_discord_webhook_events_are_off_by_default_and_record_after_a_minute() -> None:
    settings = parse_settings(valid_env())
    assert settings.discord_public_key is None
    assert (settings.link_without_callback, settings.link_callback_grace) == ("record", 60.0)


def test_discord_webhook_event_settings_are_read() -> None:
    key = "ab" * 32
    settings = parse_settings(
        valid_env(DISCORD_PUBLIC_KEY=key, LINK_WITHOUT_CALLBACK="Refuse", LINK_CALLBACK_GRACE_SECONDS="2.5")
    )
    assert settings.discord_public_key == bytes.fromhex(key)
    assert (settings.link_without_callback, settings.link_callback_grace) == ("refuse", 2.5)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DISCORD_PUBLIC_KEY", "zz" * 32),
        ("DISCORD_PUBLIC_KEY", "ab" * 31),
        ("LINK_WITHOUT_CALLBACK", "ignore"),
        ("LINK_CALLBACK_GRACE_SECONDS", "-1"),
        ("LINK_CALLBACK_GRACE_SECONDS", "soon"),
    ],
)
def test_a_malformed_discord_webhook_event_setting_is_named(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as raised:
        parse_settings(valid_env(**{name: value}))
    [problem] = raised.value.problems
    assert problem.startswith(name)
