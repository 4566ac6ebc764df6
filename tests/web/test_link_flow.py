"""The link flow end to end: real sockets, the sandbox, the real discord.py client and a real SQLite file."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import aiohttp
import pytest

from main import quiet_chatty_libraries
from sandbox import Sandbox, SandboxOptions
from tests.harness import (
    browser,
    eventually,
    free_port,
    is_synced,
    settings_for,
    started,
    token_requests,
    world,
)
from web.states import BROWSER_COOKIE, StateKeeper


async def test_whole_flow_stores_the_link_and_the_bot_holds_the_guild(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=2, members=20))
    async with world(sandbox, tmp_path) as w:
        running, b = w.running, w.browser
        guild = sandbox.managed_guilds()[0]
        consent = await b.start_link()
        assert consent["response_type"] == "code" and consent["prompt"] == "consent"
        assert consent["scope"] == "identify guilds bot" and consent["client_id"] == str(sandbox.client_id)
        assert len(consent["state"]) >= 22
        status, page = await b.callback(sandbox.authorize(consent, guild.id))

        assert status == 200, page
        link = await running.store.get_link(guild.id)
        assert link is not None and link.active and link.linked_by_id == sandbox.user_id
        assert link.guild_name == guild.name
        assert "Reading members" in page and "/progress/" in page
        await eventually(lambda: _holds(running, guild.id), within=10)
        assert len(await running.store.list_links()) == 1


async def _holds(running, guild_id: int) -> bool:
    return running.bot.get_guild(guild_id) is not None


async def test_relinking_the_same_guild_updates_one_link(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        running, b = w.running, w.browser
        guild = sandbox.managed_guilds()[0]
        assert (await b.link_guild(guild.id))[0] == 200
        assert (await b.link_guild(guild.id))[0] == 200
        assert [link.guild_id for link in await running.store.list_links()] == [guild.id]


async def test_unknown_state_is_refused_without_token_request(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        running, b = w.running, w.browser
        status, page = await b.callback(
            f"{running.web_url}/authorize-discord?code=abc&state=forged&guild_id=1"
        )
        assert status == 400 and 'href="/link"' in page
        assert token_requests(sandbox) == 0


async def test_reused_state_is_refused_without_a_second_token_request(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        b = w.browser
        guild = sandbox.managed_guilds()[0]
        location = sandbox.authorize(await b.start_link(), guild.id)
        assert (await b.callback(location))[0] == 200
        status, page = await b.callback(location)
        assert status == 400 and "already used" in page
        assert token_requests(sandbox) == 1


async def test_state_from_another_browser_is_refused(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    guild = sandbox.managed_guilds()[0]
    async with started(settings_for(sandbox, tmp_path, port=free_port())) as running:
        async with browser(sandbox, running) as victim:
            location = sandbox.authorize(await victim.start_link(), guild.id)
        async with browser(sandbox, running) as attacker:
            status, page = await attacker.callback(location)
        assert status == 400 and "another browser" in page
        assert token_requests(sandbox) == 0
        assert await running.store.get_link(guild.id) is None


async def test_expired_state_is_refused(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        running, b = w.running, w.browser
        browser_id = "b" * 43
        keeper = StateKeeper(running.settings.client_secret, running.store)
        old = keeper.issue(browser_id, now=(datetime.now(UTC) - timedelta(minutes=11)).timestamp())
        b.session.cookie_jar.update_cookies(
            {BROWSER_COOKIE: browser_id}, response_url=aiohttp.client.URL(running.web_url)
        )
        status, page = await b.callback(f"{running.web_url}/authorize-discord?code=abc&state={old}")
        assert status == 400 and "expired" in page
        assert token_requests(sandbox) == 0


async def test_cancel_shows_a_friendly_page_and_consumes_the_state(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        b = w.browser
        location = sandbox.authorize(await b.start_link(), deny=True)
        assert "error=access_denied" in location
        status, page = await b.callback(location)
        assert status == 200 and "nothing was changed" in page.lower()
        assert (await b.callback(location))[0] == 400
        assert token_requests(sandbox) == 0


async def test_expired_code_says_start_again(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        running, b = w.running, w.browser
        guild = sandbox.managed_guilds()[0]
        location = sandbox.authorize(await b.start_link(), guild.id)
        code = dict(parse_qsl(urlsplit(location).query))["code"]
        # Someone (or something) used the code first: Discord answers invalid_grant.
        async with aiohttp.ClientSession() as other:
            form = {
                "client_id": str(sandbox.client_id),
                "client_secret": sandbox.client_secret,
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": running.settings.redirect_uri,
            }
            async with other.post(f"{sandbox.base_url}/api/v10/oauth2/token", data=form) as response:
                assert response.status == 200
        status, page = await b.callback(location)
        assert status == 400 and "expired" in page and 'href="/link"' in page
        assert code not in page


async def test_discord_5xx_and_429_are_retried_once(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=2, members=5))
    async with world(sandbox, tmp_path) as w:
        b = w.browser
        first, second = sandbox.managed_guilds()[:2]
        sandbox.fail_next("POST", "/api/v10/oauth2/token", status=502)
        assert (await b.link_guild(first.id))[0] == 200
        sandbox.fail_next("POST", "/api/v10/oauth2/token", status=429, retry_after=0.2)
        assert (await b.link_guild(second.id))[0] == 200
        assert token_requests(sandbox) == 4


async def test_discord_down_twice_gives_a_retry_page_and_stores_nothing(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        running, b = w.running, w.browser
        guild = sandbox.managed_guilds()[0]
        sandbox.fail_next("POST", "/api/v10/oauth2/token", status=503, times=2)
        status, page = await b.link_guild(guild.id)
        assert status == 502 and "try again" in page.lower()
        assert await running.store.get_link(guild.id) is None


async def test_tampered_guild_id_is_refused_and_nothing_stored(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=2, members=5))
    async with world(sandbox, tmp_path) as w:
        running, b = w.running, w.browser
        chosen, other = sandbox.managed_guilds()[:2]
        sandbox.tamper_redirect_guild_id(other.id)
        location = sandbox.authorize(await b.start_link(), chosen.id)
        assert f"guild_id={other.id}" in location
        status, page = await b.callback(location)
        assert status == 400 and "does not match" in page
        assert await running.store.list_links() == []


async def test_guild_create_before_the_callback_still_syncs_once(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=30, requires_code_grant=False))
    async with world(sandbox, tmp_path) as w:
        running, b = w.running, w.browser
        guild = sandbox.managed_guilds()[0]
        location = sandbox.authorize(await b.start_link(), guild.id)
        # Without the code grant the bot joined on Authorize: discord.py holds the guild before our callback.
        await eventually(lambda: _holds(running, guild.id), within=10)
        assert await running.store.get_link(guild.id) is None
        assert (await b.callback(location))[0] == 200
        await eventually(lambda: is_synced(running, guild.id), within=15)
        assert _whole_list_requests(sandbox, guild.id) == 1


async def test_guild_create_after_the_callback_syncs_once(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=30, requires_code_grant=True))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id, within=15)
        assert _whole_list_requests(sandbox, guild.id) == 1


def _whole_list_requests(sandbox: Sandbox, guild_id: int) -> int:
    return sum(
        1
        for c in sandbox.gateway_commands
        if c.op == 8 and int(c.data["guild_id"]) == guild_id and not c.data.get("user_ids")
    )


async def test_restart_keeps_links_and_pending_states(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=2, members=5))
    first, second = sandbox.managed_guilds()[:2]
    settings = settings_for(sandbox, tmp_path, port=free_port())
    jar = aiohttp.CookieJar(unsafe=True)
    async with started(settings) as running, browser(sandbox, running, jar=jar) as b:
        assert (await b.link_guild(first.id))[0] == 200
        pending_location = sandbox.authorize(await b.start_link(), second.id)
    async with started(settings) as running, browser(sandbox, running, jar=jar) as b:
        link = await running.store.get_link(first.id)
        assert link is not None and link.active
        status, page = await b.callback(pending_location)
        assert status == 200, page
        assert {link.guild_id for link in await running.store.list_links()} == {first.id, second.id}


async def test_pages_carry_security_headers_and_escape_names(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=4, members=5))
    async with world(sandbox, tmp_path) as w:
        running, b = w.running, w.browser
        guild = next(g for g in sandbox.managed_guilds() if "<" in g.name or '"' in g.name)
        status, page = await b.link_guild(guild.id)
        assert status == 200
        assert guild.name not in page
        async with b.session.get(running.web_url + "/") as response:
            headers = response.headers
        assert headers["Cache-Control"] == "no-store"
        assert headers["Referrer-Policy"] == "no-referrer"
        assert headers["X-Frame-Options"] == "DENY"
        assert "default-src 'none'" in headers["Content-Security-Policy"]


async def test_link_with_a_guild_preselects_it(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        running, b = w.running, w.browser
        consent = await b.start_link("/link?" + urlencode({"guild_id": "1234"}))
        assert consent["guild_id"] == "1234" and consent["disable_guild_select"] == "true"
        async with b.session.get(running.web_url + "/link?guild_id=abc", allow_redirects=False) as response:
            assert response.status == 400


async def test_readyz_reports_the_bot_and_database(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        running, b = w.running, w.browser
        async with b.session.get(running.web_url + "/readyz") as response:
            body = await response.json()
            assert response.status == 200 and body["bot"]["state"] == "ready" and body["database"] == "ok"
        await running.bot.close()
        async with b.session.get(running.web_url + "/readyz") as response:
            body = await response.json()
            assert response.status == 503 and body["bot"]["state"] == "closed"
        async with b.session.get(running.web_url + "/healthz") as response:
            assert response.status == 200


async def test_no_secret_token_or_code_reaches_the_log(
    make_sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    quiet_chatty_libraries("DEBUG")  # what main.py's setup_logging does with LOG_LEVEL=DEBUG
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=20))
    guild = sandbox.managed_guilds()[0]
    async with world(sandbox, tmp_path) as w:
        consent = await w.browser.start_link()
        location = sandbox.authorize(consent, guild.id)
        assert (await w.browser.callback(location))[0] == 200
        await eventually(lambda: is_synced(w.running, guild.id), within=15)
        api_token = w.running.settings.api_token
    code = dict(parse_qsl(urlsplit(location).query))["code"]
    secrets = [sandbox.client_secret, sandbox.bot_token, code, consent["state"], *sandbox.oauth_state.access]
    assert api_token is not None
    secrets.append(api_token.reveal())
    logged = "\n".join(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    assert "link.saved" in logged
    for secret in secrets:
        assert secret not in logged
