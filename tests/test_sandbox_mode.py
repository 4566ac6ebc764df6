"""`main.py --sandbox` as a new user meets it: what it prints works, a restart keeps the links, status finds them."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import pytest

import run_record
import sandbox_mode
from main import status, status_database, with_port
from tests.harness import eventually, free_port

ROOT = Path(__file__).resolve().parent.parent
CURL = "curl -s"


@asynccontextmanager
async def sandbox_mode_process(data_dir: Path, port: int, *args: str) -> AsyncIterator[list[str]]:
    """`main.py --sandbox --port PORT` in `data_dir` with JSON logs; yields its stdout lines once it is ready.

    Stopped with SIGTERM on exit, which must end it with code 0 and JSON-only logs.
    """
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "DATA_DIR": str(data_dir), "LOG_FORMAT": "json"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "main.py"),
        "--sandbox",
        "--port",
        str(port),
        "--env-file",
        str(data_dir / "none.env"),
        *args,
        cwd=data_dir,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    stderr_task = asyncio.create_task(process.stderr.read())
    lines: list[str] = []
    try:
        while not any(line.lstrip().startswith("curl") and "/members" in line for line in lines):
            line = await asyncio.wait_for(process.stdout.readline(), 30)
            assert line, (await stderr_task).decode()[-3000:]
            lines.append(line.decode().rstrip("\n"))

        async def ready() -> bool:
            async with (
                aiohttp.ClientSession() as http,
                http.get(f"https://localhost:{port}/readyz", ssl=False) as response,
            ):
                return response.status == 200

        # Printed once the web server listens: it answers at once, and is ready once the bot is.
        await eventually(ready, within=30)
        yield lines
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 15)
        stderr = (await stderr_task).decode()
    assert process.returncode == 0, stderr[-3000:]
    # LOG_FORMAT=json: every line of the log is one JSON object.
    entries = [json.loads(line) for line in stderr.splitlines()]
    assert any(entry.get("event") == "guildlink.started" for entry in entries)


async def curl(line: str) -> Any:
    """Run a printed curl line as a shell would; its JSON answer."""
    done = await asyncio.create_subprocess_exec(
        *shlex.split(line), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await done.communicate()
    assert done.returncode == 0, err.decode()
    return json.loads(out)


async def link_as_a_browser(web_url: str, guild_id: str) -> None:
    """Add to Discord, pick the server, Authorize: as a browser walks it through the sandbox's pages."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar, connector=aiohttp.TCPConnector(ssl=False)) as browser:
        async with browser.get(f"{web_url}/link", allow_redirects=False) as response:
            consent = response.headers["Location"]
        parts = urlsplit(consent)
        form = dict(parse_qsl(parts.query)) | {"guild_id": guild_id, "action": "authorize"}
        async with browser.post(
            f"{parts.scheme}://{parts.netloc}{parts.path}", data=form, allow_redirects=False
        ) as response:
            callback = response.headers["Location"]
        async with browser.get(callback, allow_redirects=False) as response:
            assert response.status == 200, await response.text()


async def test_a_new_user_links_a_server_uses_the_printed_curl_lines_restarts_and_keeps_the_link(
    tmp_path: Path,
) -> None:
    port = free_port()
    web_url = f"https://localhost:{port}"
    async with sandbox_mode_process(
        tmp_path, port, "--sandbox-guilds", "1", "--sandbox-members", "30"
    ) as printed:
        assert any(f"Open {web_url}/ in a browser" in line for line in printed)
        list_guilds, page_members = (line.strip() for line in printed if line.lstrip().startswith("curl"))
        assert await curl(list_guilds) == {"guilds": []}
        guild_id = urlsplit(shlex.split(page_members)[-1]).path.split("/")[3]
        await link_as_a_browser(web_url, guild_id)

        async def synced() -> bool:
            guilds = (await curl(list_guilds))["guilds"]
            return bool(guilds) and guilds[0]["sync"]["state"] == "synced"

        await eventually(synced, within=20)
        members = await curl(page_members)
        assert len(members["members"]) == 5 and members["next_after"] is not None

    status_run = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "main.py"),
        "status",
        "--env-file",
        str(tmp_path / "none.env"),
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "DATA_DIR": str(tmp_path)},
        stdout=asyncio.subprocess.PIPE,
    )
    stdout = (await asyncio.wait_for(status_run.communicate(), 30))[0].decode()
    assert status_run.returncode == 0
    assert "sandbox.db (the last run's" in stdout.splitlines()[0]
    row = next(line for line in stdout.splitlines() if line.startswith(guild_id))
    assert " yes " in row and " synced " in row

    # A restart: the sandbox remembers that its bot is in the server, so the link stays, members and all.
    async with sandbox_mode_process(
        tmp_path, port, "--sandbox-guilds", "1", "--sandbox-members", "30"
    ) as again:
        assert [line.strip() for line in again if line.lstrip().startswith("curl")] == [
            list_guilds,
            page_members,
        ]
        await asyncio.sleep(0.5)  # past the shard's READY, when links to guilds it does not hold are dropped
        (guild,) = (await curl(list_guilds))["guilds"]
        assert guild["active"] and guild["member_count"] == 31  # the 30 and the bot
        assert (await curl(page_members))["members"] == members["members"]


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--sandbox", "--sandbox-members", "-5"], {}, "--sandbox-members: -5 is not between 1"),
        (["--sandbox", "--sandbox-guilds", "0"], {}, "--sandbox-guilds: 0 is not between 1"),
        (["--port", "70000"], {}, "--port: 70000 is not between 0 and 65,535"),
        (["--sandbox"], {"LOG_LEVEL": "verbose"}, "LOG_LEVEL must be one of"),
    ],
)
def test_a_bad_number_or_setting_exits_2_without_a_traceback(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args, "--env-file", str(tmp_path / "none.env")],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", ""), "DATA_DIR": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2 and named in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) <= 2  # the argument's one line, or the settings heading and its line


def test_port_moves_a_local_redirect_uri_but_never_a_public_one() -> None:
    assert with_port({}, 9000) == {
        "WEB_PORT": "9000",
        "DISCORD_REDIRECT_URI": "https://localhost:9000/authorize-discord",
    }
    public = {"DISCORD_REDIRECT_URI": "https://links.example.com/authorize-discord"}
    assert with_port(public, 9000) == public | {"WEB_PORT": "9000"}


async def test_status_reads_database_url_first_and_points_at_the_last_runs_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox_db = f"sqlite:///{tmp_path / 'sandbox.db'}"
    run_record.save(tmp_path, sandbox_db, sandbox=True)
    env = {"DATA_DIR": str(tmp_path)}
    assert status_database(env, sandbox=False)[0] == sandbox_db
    assert (
        status_database(env | {"DATABASE_URL": "sqlite:///other.db"}, sandbox=False)[0]
        == "sqlite:///other.db"
    )
    assert status_database(env, sandbox=True)[0] == sandbox_db

    assert await status(env | {"DATABASE_URL": f"sqlite:///{tmp_path / 'real.db'}"}, sandbox=False) == 0
    out = capsys.readouterr().out
    assert f"The last run (--sandbox) used {sandbox_db}: `main.py status --sandbox` lists its links." in out


def test_the_run_record_never_holds_a_password(tmp_path: Path) -> None:
    run_record.save(tmp_path, "postgresql://guildlink:hunter2@db.internal:5432/guildlink", sandbox=False)
    text = (tmp_path / run_record.RECORD_NAME).read_text()
    assert "hunter2" not in text
    last = run_record.load(tmp_path)
    assert last is not None and last.database_url == "postgresql://guildlink@db.internal:5432/guildlink"


def test_help_lists_every_setting_with_its_default_and_version_reads_pyproject() -> None:
    from config import SETTINGS_TABLE

    help_text = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    for info in SETTINGS_TABLE:
        assert f"  {info.name} " in help_text and info.help_default.split()[0] in help_text, info.name
    version = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--version"], capture_output=True, text=True, timeout=30
    )
    assert version.returncode == 0 and version.stdout.strip() == "guildlink 0.1.0"


def test_one_of_anything_is_not_printed_as_a_plural(tmp_path: Path) -> None:
    from config import parse_settings
    from sandbox.__main__ import count

    run = sandbox_mode.prepare({"DATA_DIR": str(tmp_path)}, members=1, guilds=1)
    steps = sandbox_mode.first_steps(
        run, parse_settings(run.settings_env()), members=1, guilds=1, python="python"
    )
    assert "1 server of 1 member;" in steps
    assert (count(1, "member"), count(2, "more guild"), count(10_000, "member")) == (
        "1 member",
        "2 more guilds",
        "10,000 members",
    )
