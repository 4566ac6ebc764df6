"""States survive floods and are never usable without their browser; invites are used up only by a stored link."""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import aiohttp

from sandbox import Sandbox, SandboxOptions
from tests.harness import World, browser, free_port, settings_for, started, token_requests, world


async def _invite(w: World, ref: str) -> str:
    token = w.running.settings.api_token
    assert token is not None
    async with w.browser.session.post(
        f"{w.running.web_url}/api/links",
        json={"ref": ref},
        headers={"Authorization": f"Bearer {token.reveal()}"},
    ) as response:
        assert response.status == 201
        return str((await response.json())["url"]).removeprefix(w.running.web_url)


async def test_a_flood_of_link_from_one_client_is_refused_and_harms_no_one(
    make_sandbox, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        invite = await _invite(w, "customer")
        admin_consent = await w.browser.start_link()
        # The flood comes from another loopback address, as another client would.
        connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
        async with aiohttp.ClientSession(connector=connector) as flooder:

            async def one() -> int:
                async with flooder.get(w.running.web_url + "/link", allow_redirects=False) as response:
                    return response.status

            statuses = await asyncio.gather(*(one() for _ in range(300)))
        assert statuses.count(429) >= 250 and set(statuses) <= {302, 429}
        status, page = await w.browser.callback(sandbox.authorize(admin_consent, guild.id))
        assert status == 200, page
        async with w.browser.session.get(w.running.web_url + invite, allow_redirects=False) as response:
            assert response.status == 302


async def test_an_invite_survives_previews_and_is_used_up_by_the_link(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=2, members=5))
    async with world(sandbox, tmp_path) as w:
        first, second = sandbox.managed_guilds()[:2]
        invite = await _invite(w, "customer-7")
        async with aiohttp.ClientSession() as preview:  # a chat's link preview, no cookies kept
            for _ in range(2):
                async with preview.get(w.running.web_url + invite, allow_redirects=False) as response:
                    assert response.status == 302
        consent = await w.browser.start_link(invite)
        status, page = await w.browser.callback(sandbox.authorize(consent, first.id))
        assert status == 200, page
        link = await w.running.store.get_link(first.id)
        assert link is not None and link.ref == "customer-7"
        async with w.browser.session.get(w.running.web_url + invite, allow_redirects=False) as response:
            assert response.status == 400 and "no longer valid" in await response.text()
        assert await w.running.store.get_link(second.id) is None


async def test_a_failed_invite_flow_can_be_retried_with_the_same_ref(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        invite = await _invite(w, "customer-8")
        status, page = await w.browser.callback(
            sandbox.authorize(await w.browser.start_link(invite), deny=True)
        )
        assert status == 200 and f'href="{invite}"' in page
        status, page = await w.browser.callback(
            sandbox.authorize(await w.browser.start_link(invite), guild.id)
        )
        assert status == 200, page
        link = await w.running.store.get_link(guild.id)
        assert link is not None and link.ref == "customer-8"


async def test_an_invite_token_is_no_state(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        token = (await _invite(w, "customer")).rsplit("/", 1)[1]
        async with aiohttp.ClientSession() as stranger:  # no cookie at all
            url = f"{w.running.web_url}/authorize-discord?code=c&state={token}"
            async with stranger.get(url) as response:
                assert response.status == 400
        assert token_requests(sandbox) == 0


async def test_a_state_without_its_browser_cookie_is_refused(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        location = sandbox.authorize(await w.browser.start_link(), sandbox.managed_guilds()[0].id)
        async with aiohttp.ClientSession() as stranger, stranger.get(location) as response:
            assert response.status == 400 and "another browser" in await response.text()
        assert token_requests(sandbox) == 0
        status, _ = await w.browser.callback(location)  # not used up by the refusal
        assert status == 200


async def test_another_customers_invite_cannot_move_a_linked_guild(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        ours = await _invite(w, "customer-a")
        assert (await w.browser.callback(sandbox.authorize(await w.browser.start_link(ours), guild.id)))[
            0
        ] == 200
        theirs = await _invite(w, "customer-b")
        status, page = await w.browser.callback(
            sandbox.authorize(await w.browser.start_link(theirs), guild.id)
        )
        assert status == 409 and "already linked" in page and "bot stays" in page
        link = await w.running.store.get_link(guild.id)
        assert link is not None and link.active and link.ref == "customer-a"
        assert guild.id in sandbox.bot_guild_ids()


async def test_under_https_the_browser_cookie_is_host_only_and_secure(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    settings = settings_for(sandbox, tmp_path, port=free_port(), https=True)
    async with (
        started(settings) as running,
        browser(sandbox, running) as b,
        b.session.get(running.web_url + "/link", allow_redirects=False) as response,
    ):
        cookie = response.headers["Set-Cookie"]
        state = dict(parse_qsl(urlsplit(response.headers["Location"]).query))["state"]
    assert cookie.startswith("__Host-guildlink_browser=") and "Secure" in cookie and "Path=/" in cookie
    assert "Domain" not in cookie and len(state) < 200
