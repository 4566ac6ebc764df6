"""What the operator and the server's members see: presence, start-up warnings, a clean stop."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from main import print_status
from sandbox import Sandbox, SandboxOptions
from tests.harness import free_port, world

ROOT = Path(__file__).resolve().parents[2]


async def test_presence_counts_linked_servers(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=10))
    async with world(sandbox, tmp_path) as w:
        start = len(sandbox.gateway_commands)
        await w.link_and_sync(sandbox.managed_guilds()[0].id)

        def watching_one(command) -> bool:
            activities = (command.data or {}).get("activities") or []
            return command.data.get("status") == "online" and any(
                a.get("type") == 3 and a.get("name") == "1 linked server" for a in activities
            )

        await sandbox.wait_for_gateway_command(3, predicate=watching_one, since=start)


async def test_start_up_warns_about_portal_settings_that_bypass_or_break_the_flow(
    make_sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5, requires_code_grant=False))
    caplog.set_level(logging.WARNING, logger="bot.client")
    async with world(sandbox, tmp_path) as w:
        sandbox.options.redirect_uris.remove(w.running.settings.redirect_uri)
        await w.running.bot.check_application()
    messages = " ".join(record.getMessage() for record in caplog.records)
    assert "Requires OAuth2 Code Grant" in messages
    assert "OAuth2 > Redirects" in messages


def _get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_main_sandbox_serves_the_flow_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "DISCORD_REDIRECT_URI": f"http://localhost:{port}/authorize-discord",
        "SANDBOX_DATABASE_URL": f"sqlite:///{tmp_path / 'sandbox.db'}",
        "DATA_DIR": str(tmp_path),
    }
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--sandbox", "--env-file", str(tmp_path / "none.env")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if _get_json(f"http://localhost:{port}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert process.poll() is None, process.communicate()[1][-2000:]
        process.send_signal(signal.SIGTERM)
        # "Within a few seconds": a shutdown that hangs fails here (TimeoutExpired), nothing is timed.
        stdout, stderr = process.communicate(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, stderr[-2000:]
    assert f"Open http://localhost:{port}/ in a browser" in stdout
    assert "guildlink.stopping" in stderr


async def test_status_command_lists_linked_guilds_from_the_database(
    make_sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=25))
    guild = sandbox.managed_guilds()[0]
    async with world(sandbox, tmp_path) as w:
        await w.link_and_sync(guild.id)
        database_url = w.running.settings.database_url
    capsys.readouterr()
    assert await print_status(database_url) == 0
    output = capsys.readouterr().out
    line = next(line for line in output.splitlines() if line.startswith(str(guild.id)))
    assert "synced" in line and f"{len(sandbox.members(guild.id)):>9,}" in line and "yes" in line
