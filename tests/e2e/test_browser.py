"""The link flow in a real Chromium: our landing page, the sandbox's consent page, our HTTPS success page."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from playwright.async_api import BrowserContext, ConsoleMessage, Page, expect

from sandbox import Sandbox, SandboxOptions
from tests.harness import free_port, settings_for, started, token_requests

SCREENSHOT_COPY = Path("/tmp/guildlink-success.png")


def _watch_console(page: Page) -> list[str]:
    """Console errors and uncaught exceptions (a CSP violation shows up here), collected as they come."""
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        where = message.location.get("url", "")
        # The sandbox serves no favicon; Chromium's automatic request for it there is noise.
        if message.type == "error" and urlsplit(where).path != "/favicon.ico":
            problems.append(f"console: {message.text} at {where}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
    return problems


async def _to_consent_page(page: Page, web_url: str, sandbox: Sandbox) -> None:
    """Open our landing page, click "Add to Discord", arrive on the sandbox's consent page."""
    await page.goto(web_url + "/")
    await expect(page.locator("#add-to-discord")).to_have_text("Add to Discord")
    await page.locator("#add-to-discord").click()
    await page.wait_for_url(lambda url: url.startswith(sandbox.base_url + "/oauth2/authorize?"))
    await expect(page.locator("button.authorize")).to_be_visible()


async def test_add_to_discord_links_the_picked_server_and_shows_its_members_read(
    make_sandbox, browser_context: BrowserContext, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=2, members=50))
    # The guild whose name looks like markup: the page must show it as text.
    guild = next(g for g in sandbox.managed_guilds() if "<" in g.name)
    port = free_port()
    async with started(settings_for(sandbox, tmp_path, port=port, https=True)) as running:
        assert running.web_url == f"https://localhost:{port}"
        page = await browser_context.new_page()
        problems = _watch_console(page)

        await _to_consent_page(page, running.web_url, sandbox)
        picker = page.locator("select#guild_id")
        assert sorted(await picker.locator("option:not([disabled])").all_inner_texts()) == sorted(
            g.name for g in sandbox.managed_guilds()
        )
        assert await picker.select_option(value=str(guild.id)) == [str(guild.id)]
        await page.locator("button.authorize").click()
        await page.wait_for_url(lambda url: url.startswith(running.web_url + "/authorize-discord?"))

        url = urlsplit(page.url)
        assert (url.scheme, url.netloc, url.path) == ("https", f"localhost:{port}", "/authorize-discord")
        assert dict(parse_qsl(url.query))["guild_id"] == str(guild.id)
        heading = page.locator("h1#linked")
        await expect(heading).to_be_visible()
        assert await heading.inner_text() == f"Linked {guild.name}"
        assert await page.locator("main strong").inner_text() == guild.name
        # Rendered as text: the name's <b> did not become an element.
        assert await page.locator("main b").count() == 0

        link = await running.store.get_link(guild.id)
        assert link is not None and link.active and link.guild_name == guild.name
        assert link.linked_by_id == sandbox.user_id

        progress = page.locator("#progress")
        await expect(progress).to_have_text(re.compile(r"^[\d,]+ members read$"), timeout=20_000)
        shown = int((await progress.inner_text()).split()[0].replace(",", ""))
        stored = await running.store.count_members(guild.id)
        assert shown == stored and stored > 0
        assert stored == sandbox.guild(guild.id).member_count

        screenshot = tmp_path / "success.png"
        await page.screenshot(path=screenshot, full_page=True)
        shutil.copyfile(screenshot, SCREENSHOT_COPY)
        assert problems == []


async def test_cancel_on_the_consent_page_lands_on_you_cancelled_and_stores_nothing(
    make_sandbox, browser_context: BrowserContext, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=2, members=50))
    port = free_port()
    async with started(settings_for(sandbox, tmp_path, port=port, https=True)) as running:
        page = await browser_context.new_page()
        problems = _watch_console(page)

        await _to_consent_page(page, running.web_url, sandbox)
        await page.locator("button.cancel").click()
        await page.wait_for_url(lambda url: url.startswith(running.web_url + "/authorize-discord?"))

        url = urlsplit(page.url)
        assert (url.scheme, url.netloc, url.path) == ("https", f"localhost:{port}", "/authorize-discord")
        assert dict(parse_qsl(url.query))["error"] == "access_denied"
        await expect(page.locator("h1")).to_have_text("You cancelled")
        assert "Nothing was changed" in await page.locator("main").inner_text()
        assert await running.store.list_links() == []
        assert token_requests(sandbox) == 0
        assert problems == []
