"""No secret, token, code or state anywhere guildlink writes or answers, with its logging at DEBUG.

guildlink runs as an operator runs it (`python main.py` with LOG_LEVEL=DEBUG, its output captured) against
the sandbox, which tells which codes and tokens it issued. After a whole flow (links, sync, API, an invite,
failing callbacks) every secret is looked for in the log, in every page and API body, in `main.py status`'s
output and in every byte of the SQLite files, while running and after a clean stop.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp

from sandbox import Sandbox, SandboxOptions
from tests.harness import eventually, free_port
from tests.reliability.report import ReliabilityReport

ROOT = Path(__file__).resolve().parents[2]
SECTION = "Secrets: logs, pages, API, status and database at DEBUG (test_secrets.py)"
# Settings guildlink reads; the test's own environment must not leak into the process it starts.
SETTINGS_PREFIXES = ("DISCORD_", "API_TOKEN", "DATABASE_URL", "DATA_DIR", "LOG_LEVEL", "WEB_", "TLS_")


@dataclass
class Place:
    """Somewhere a secret must not be: a name and every byte of it."""

    name: str
    data: bytes


@dataclass
class Visitor:
    """A browser (one cookie jar) that keeps every body guildlink sent it and every state it was given."""

    session: aiohttp.ClientSession
    web_url: str
    api_token: str
    bodies: list[Place] = field(default_factory=list)
    states: list[str] = field(default_factory=list)

    async def request(
        self, method: str, path: str, *, token: str | None = None, json_body: Any = None
    ) -> tuple[int, bytes, str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with self.session.request(
            method, self.web_url + path, headers=headers, json=json_body, allow_redirects=False
        ) as response:
            body = await response.read()
            location = response.headers.get("Location", "")
        route = re.sub(r"/[A-Za-z0-9_.\-]{20,}", "/{token}", urlsplit(path).path)
        self.bodies.append(Place(f"body of {method} {route} ({response.status})", body))
        return response.status, body, location

    async def api(self, method: str, path: str, json_body: Any = None) -> tuple[int, Any]:
        status, body, _ = await self.request(method, path, token=self.api_token, json_body=json_body)
        return status, json.loads(body)

    async def consent(self, path: str = "/link") -> dict[str, str]:
        """Start a consent flow: the query of Discord's consent page, its state noted as a secret."""
        status, body, location = await self.request("GET", path)
        assert status == 302, body
        consent = dict(parse_qsl(urlsplit(location).query))
        self.states.append(consent["state"])
        return consent

    async def callback(self, location: str) -> tuple[int, str]:
        """Follow Discord's redirect back to guildlink."""
        parts = urlsplit(location)
        status, body, _ = await self.request("GET", f"{parts.path}?{parts.query}")
        return status, body.decode(errors="replace")


def guildlink_environment(sandbox: Sandbox, data_dir: Path, port: int, api_token: str) -> dict[str, str]:
    redirect_uri = f"http://localhost:{port}/authorize-discord"
    sandbox.options.redirect_uris.append(redirect_uri)
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(SETTINGS_PREFIXES)}
    return inherited | {
        "DISCORD_CLIENT_ID": str(sandbox.client_id),
        "DISCORD_CLIENT_SECRET": sandbox.client_secret,
        "DISCORD_BOT_TOKEN": sandbox.bot_token,
        "DISCORD_BASE_URL": sandbox.base_url,
        "DISCORD_REDIRECT_URI": redirect_uri,
        "DATABASE_URL": f"sqlite:///{data_dir / 'guildlink.db'}",
        "DATA_DIR": str(data_dir),
        "API_TOKEN": api_token,
        "LOG_LEVEL": "DEBUG",
    }


@asynccontextmanager
async def guildlink_process(env: dict[str, str], cwd: Path, output: Path) -> AsyncIterator[None]:
    """`python main.py` (cwd without a .env), stdout and stderr into `output`; SIGTERM on the way out."""
    with output.open("wb") as out:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "main.py"), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        yield
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), timeout=20)
            except TimeoutError:
                process.kill()
                await process.wait()


async def ready(session: aiohttp.ClientSession, web_url: str) -> bool:
    try:
        async with session.get(web_url + "/readyz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


def database_files(data_dir: Path, when: str) -> list[Place]:
    """The database, its -wal and -shm, whole."""
    return [
        Place(f"{path.name} ({when})", path.read_bytes()) for path in sorted(data_dir.glob("guildlink.db*"))
    ]


async def walk_the_whole_flow(v: Visitor, sandbox: Sandbox) -> tuple[int, list[str]]:
    """Link two guilds (one through an invite), sync, use the API, fail callbacks every way; return guild 1
    and the invite tokens."""
    first, second = sandbox.managed_guilds()[:2]
    assert (await v.request("GET", "/"))[0] == 200

    consent = await v.consent()
    linked_location = sandbox.authorize(consent, first.id)
    status, page = await v.callback(linked_location)
    assert status == 200, page
    progress = re.search(r"/progress/[A-Za-z0-9_.\-]+", page)
    assert progress is not None, page
    assert (await v.request("GET", progress.group(0)))[0] == 200

    async def synced() -> bool:
        status, body = await v.api("GET", f"/api/guilds/{first.id}")
        return status == 200 and body["sync"]["state"] == "synced"

    await eventually(synced, within=30, interval=0.2)
    status, body = await v.api("GET", "/api/guilds")
    assert status == 200 and [g["id"] for g in body["guilds"]] == [str(first.id)]
    after = ""
    while True:
        status, body = await v.api("GET", f"/api/guilds/{first.id}/members?limit=7{after}")
        assert status == 200, body
        if body["next_after"] is None:
            break
        after = f"&after={body['next_after']}"
    assert (await v.request("GET", "/api/openapi.json"))[0] == 200
    assert (await v.request("GET", "/api/guilds"))[0] == 401
    assert (await v.request("GET", "/api/guilds", token="not-" + v.api_token))[0] == 401

    status, invite = await v.api("POST", "/api/links", {"ref": "customer-42"})
    assert status == 201, invite
    invite_path = urlsplit(invite["url"]).path
    status, page = await v.callback(sandbox.authorize(await v.consent(invite_path), second.id))
    assert status == 200, page
    assert (await v.request("GET", invite_path))[0] == 400

    # Failing callbacks: a replay, Discord down, a tampered guild_id, a cancel, a forged state.
    assert (await v.callback(linked_location))[0] == 400
    sandbox.fail_next("POST", "/api/v10/oauth2/token", status=503, times=2)
    assert (await v.callback(sandbox.authorize(await v.consent(), first.id)))[0] == 502
    sandbox.tamper_redirect_guild_id(first.id)
    assert (await v.callback(sandbox.authorize(await v.consent(), second.id)))[0] == 400
    assert (await v.callback(sandbox.authorize(await v.consent(), deny=True)))[0] == 200
    redirect = urlsplit(sandbox.authorize(await v.consent(), first.id))
    forged = dict(parse_qsl(redirect.query)) | {"state": "forged-" + secrets.token_urlsafe(8)}
    assert (await v.callback(f"{redirect.path}?{urlencode(forged)}"))[0] == 400
    await v.consent()  # abandoned on Discord's consent page: its state stays pending

    status, body = await v.api("DELETE", f"/api/guilds/{second.id}")
    assert status == 200 and body["active"] is False
    return first.id, [invite_path.rsplit("/", 1)[-1]]


def secrets_of(sandbox: Sandbox, v: Visitor, api_token: str, invites: list[str]) -> dict[str, str]:
    """Every secret value of the run, by what it is."""
    state = sandbox.oauth_state
    basic = base64.b64encode(f"{sandbox.client_id}:{sandbox.client_secret}".encode()).decode()
    found: dict[str, str] = {
        sandbox.client_secret: "client secret",
        basic: "client secret (Basic credentials)",
        sandbox.bot_token: "bot token",
        api_token: "API token",
    }
    found |= {code: f"OAuth code #{i}" for i, code in enumerate(state.codes, 1)}
    found |= {token: f"access token #{i}" for i, token in enumerate(state.access, 1)}
    found |= {token: f"refresh token #{i}" for i, token in enumerate(state.refresh, 1)}
    found |= {s: f"state #{i}" for i, s in enumerate(v.states, 1)}
    found |= {token: f"invite token #{i}" for i, token in enumerate(invites, 1)}
    found |= {cookie.value: "browser cookie" for cookie in v.session.cookie_jar}
    return found


async def test_no_secret_token_code_or_state_in_logs_pages_status_or_database(
    make_sandbox, tmp_path: Path, report: ReliabilityReport
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=3, members=30))
    api_token = "api-" + secrets.token_urlsafe(32)
    port = free_port()
    env = guildlink_environment(sandbox, tmp_path, port, api_token)
    web_url = f"http://127.0.0.1:{port}"
    log_file = tmp_path / "guildlink.log"

    async with (
        guildlink_process(env, tmp_path, log_file),
        aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session,
    ):
        try:
            await eventually(lambda: ready(session, web_url), within=30, interval=0.2)
        except AssertionError:
            raise AssertionError(log_file.read_text(errors="replace")[-3000:]) from None
        visitor = Visitor(session, web_url, api_token)
        guild_id, invites = await walk_the_whole_flow(visitor, sandbox)
        running_db = database_files(tmp_path, "while running")

    status = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "main.py"),
        "status",
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    status_output, _ = await status.communicate()
    assert status.returncode == 0 and str(guild_id).encode() in status_output, status_output

    log = log_file.read_bytes()
    places = [
        Place("guildlink's output (LOG_LEVEL=DEBUG)", log),
        *visitor.bodies,
        Place("python main.py status", status_output),
        *running_db,
        *database_files(tmp_path, "after a clean stop"),
    ]
    found = secrets_of(sandbox, visitor, api_token, invites)
    assert log and len(sandbox.oauth_state.codes) >= 5 and len(sandbox.oauth_state.access) >= 3
    # The one place an invite token belongs: the API's answer to the backend that asked for it.
    allowed = {(token, "body of POST /api/links (201)") for token in invites}
    leaks = [
        f"{what} ({value[:6]}…) in {place.name}"
        for value, what in found.items()
        for place in places
        if value.encode() in place.data and (value, place.name) not in allowed
    ]

    report.count(SECTION, "leaked", len(leaks))
    report.count(SECTION, "secret_values_checked", len(found))
    report.count(SECTION, "places_scanned", len(places))
    report.count(SECTION, "bytes_scanned", sum(len(place.data) for place in places))
    report.count(SECTION, "log_bytes", len(log))
    report.fact(
        SECTION,
        "secrets",
        "client secret (+ Basic form), bot token, API token, every OAuth code, access and refresh token "
        "the sandbox issued, every state, the invite token, the browser cookie",
    )
    report.fact(SECTION, "places", "log, every page and API body, status output, guildlink.db* twice")
    assert not leaks, f"{len(leaks)} leaks:\n" + "\n".join(f"- {leak}" for leak in leaks)
