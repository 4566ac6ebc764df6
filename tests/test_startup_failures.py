"""Start-up failures are one plain line and a documented exit code; an unreachable Discord is waited for."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from aiohttp import web

from bot.discord_internals import set_voice_warnings
from main import EXIT_CANNOT_LISTEN, EXIT_SETTINGS, serve
from sandbox import Sandbox, SandboxOptions
from tests.harness import browser, eventually, free_port, settings_for, started


async def test_a_busy_port_is_one_line_and_exit_5(
    make_sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = await serve(settings_for(sandbox, tmp_path, port=port))
    err = capsys.readouterr().err
    assert code == EXIT_CANNOT_LISTEN
    assert err.count("\n") == 1 and f"127.0.0.1:{port}" in err and "Traceback" not in err


@pytest.fixture
async def not_discord() -> AsyncIterator[str]:
    """Another HTTP server: everything is 404."""
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def test_a_base_url_that_is_not_discord_is_a_settings_error(
    make_sandbox, tmp_path: Path, not_discord: str, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    env = {"DISCORD_BASE_URL": not_discord}
    code = await serve(settings_for(sandbox, tmp_path, port=free_port(), env=env))
    err = capsys.readouterr().err
    assert (
        code == EXIT_SETTINGS
        and err.count("\n") == 1
        and "DISCORD_BASE_URL" in err
        and "Traceback" not in err
    )


async def test_while_discord_is_unreachable_the_web_face_explains_and_the_bot_retries(
    make_sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    options = SandboxOptions(guilds=1, members=5, port=port)
    # Settings name the sandbox's address before anything listens there: Discord is down at start-up.
    placeholder = Sandbox(options)
    placeholder.base_url = f"http://127.0.0.1:{port}"
    settings = settings_for(placeholder, tmp_path, port=free_port())
    async with started(settings, ready=False) as running, browser(placeholder, running) as b:

        async def readyz() -> dict[str, object]:
            async with b.session.get(running.web_url + "/readyz") as response:
                assert response.status == 503
                return dict(await response.json())

        body = await eventually(readyz, within=5)
        assert "waiting for Discord" in str(body["reasons"])
        async with b.session.get(running.web_url + "/link", allow_redirects=False) as response:
            assert response.status == 503 and "try again in a minute" in (await response.text()).lower()
        assert any("bot.discord_unreachable" in r.getMessage() for r in caplog.records)
        # The start-up check of the client secret could not reach Discord either: logged, not an exit.
        assert any("guildlink.client_credentials_unchecked" in r.getMessage() for r in caplog.records)

        sandbox: Sandbox = await make_sandbox(options)  # Discord comes back
        sandbox.options.redirect_uris.append(settings.redirect_uri)

        async def ready() -> bool:
            return running.bot.bot_status().ready

        await eventually(ready, within=30)
        async with b.session.get(running.web_url + "/link", allow_redirects=False) as response:
            assert response.status == 302


async def test_a_discord_that_never_answers_is_timed_out_and_retried(
    make_sandbox, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("bot.reachability.PROBE_TIMEOUT", 0.5)
    accepted: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)  # accept, then say nothing

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    silent = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    settings = settings_for(sandbox, tmp_path, port=free_port(), env={"DISCORD_BASE_URL": silent})
    async with started(settings, ready=False) as running:

        async def retried() -> bool:
            return sum("did not answer" in r.getMessage() for r in caplog.records) >= 2

        await eventually(retried, within=10)
        assert "did not answer" in running.bot.bot_status().state
    server.close()
    for writer in accepted:
        writer.close()
    await server.wait_closed()


async def test_a_refused_client_secret_is_one_line_naming_it_and_exit_2_before_the_bot_connects(
    make_sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    env = {"DISCORD_CLIENT_SECRET": "not-the-secret-" + "x" * 17}
    code = await asyncio.wait_for(serve(settings_for(sandbox, tmp_path, port=free_port(), env=env)), 15)
    err = capsys.readouterr().err
    assert code == EXIT_SETTINGS
    assert err.count("\n") == 1 and "DISCORD_CLIENT_SECRET" in err and "Traceback" not in err
    assert "not-the-secret" not in err
    assert not [c for c in sandbox.gateway_commands if c.op == 2]  # no IDENTIFY: the bot never connected


async def test_the_client_credentials_are_checked_once_at_start_up(
    make_sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with started(settings_for(sandbox, tmp_path, port=free_port())):
        pass
    grants = [r.grant_type for r in sandbox.requests if r.path.endswith("/oauth2/token")]
    assert grants == ["client_credentials"]
    assert any("guildlink.client_credentials_accepted" in r.getMessage() for r in caplog.records)


async def test_an_unset_api_token_is_warned_about_once_with_how_to_make_one(
    make_sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    settings = replace(settings_for(sandbox, tmp_path, port=free_port()), api_token=None)
    async with started(settings):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    about_token = [m for m in warnings if "API_TOKEN" in m]
    assert len(about_token) == 1 and "secrets.token_urlsafe(32)" in about_token[0]


async def test_the_bot_does_not_warn_about_voice_libraries(
    make_sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # discord.py warns once per process; as if this were the first client (which leaves them disarmed).
    set_voice_warnings(enabled=True)
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with started(settings_for(sandbox, tmp_path, port=free_port())):
        pass
    assert not [r for r in caplog.records if r.name.startswith("discord") and r.levelno >= logging.WARNING]


async def test_a_bot_shut_down_during_the_start_up_checks_never_logs_in(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with started(settings_for(sandbox, tmp_path, port=free_port()), ready=False) as running:
        pass  # stopped at once, while the client credentials check and the gateway probe are under way
    assert running.bot_task.done()
    # Logging in (GET /users/@me) after close() would open discord.py's HTTP session, and nothing would close it.
    assert not [r for r in sandbox.requests if r.path.endswith("/users/@me")]
