"""The link flow in a real Chromium: our landing page, the sandbox's consent page, our HTTPS success page."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from playwright.async_api import BrowserContext, ConsoleMessage, Page, Route, expect

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

        progress = page.locator("#progress-text")
        done = re.compile(r"^Done: all ([\d,]+) members are read\. From now on the bot keeps them in sync")
        await expect(progress).to_have_text(done, timeout=20_000)
        assert (await progress.inner_text()).endswith("You can close this page.")
        match = done.match(await progress.inner_text())
        assert match is not None
        shown = int(match.group(1).replace(",", ""))
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


async def _link_in(page: Page, web_url: str, sandbox: Sandbox, guild_id: int) -> None:
    await _to_consent_page(page, web_url, sandbox)
    await page.locator("select#guild_id").select_option(value=str(guild_id))
    await page.locator("button.authorize").click()
    await page.wait_for_url(lambda url: url.startswith(web_url + "/authorize-discord?"))


async def test_the_success_page_shows_the_total_a_bar_the_time_left_a_countdown_and_the_end(
    make_sandbox, browser_context: BrowserContext, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=50))
    guild = sandbox.managed_guilds()[0]
    async with started(settings_for(sandbox, tmp_path, port=free_port(), https=True)) as running:
        page = await browser_context.new_page()
        problems = _watch_console(page)
        # The page's script reads /progress: here it answers what a long sync would, one state after another.
        answer: dict[str, object] = {"state": "syncing", "members_stored": 6000, "member_count": 100_001}

        async def progress(route: Route) -> None:
            await route.fulfill(json={"waiting_seconds": None, **answer})

        await page.route("**/progress/*", progress)
        await _link_in(page, running.web_url, sandbox, guild.id)
        text, bar = page.locator("#progress-text"), page.locator("#progress-bar")

        await expect(text).to_have_text("6,000 of 100,001 members read")
        assert await bar.evaluate("bar => [bar.value, bar.max]") == [6000, 100_001]
        await page.wait_for_timeout(2500)
        answer["members_stored"] = 12_000
        await expect(text).to_have_text(
            re.compile(r"^12,000 of 100,001 members read · about \d+ (s|min)( \d+ s)? left$")
        )

        answer.update(state="waiting", members_stored=0, waiting_seconds=23.4)
        await expect(text).to_have_text(re.compile(r"once every 30 seconds.*: reading starts in 23 s\.$"))

        answer.update(state="synced", members_stored=100_001, waiting_seconds=None)
        await expect(text).to_have_text(
            "Done: all 100,001 members are read. From now on the bot keeps them in sync as members join,"
            " leave or change. You can close this page."
        )
        assert await bar.evaluate("bar => bar.value === bar.max")
        assert problems == []


async def test_without_javascript_the_success_page_says_what_happens(
    make_sandbox, browser_context: BrowserContext, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=50))
    guild = sandbox.managed_guilds()[0]
    browser = browser_context.browser
    assert browser is not None
    context = await browser.new_context(java_script_enabled=False, ignore_https_errors=True)
    try:
        async with started(settings_for(sandbox, tmp_path, port=free_port(), https=True)) as running:
            page = await context.new_page()
            await _link_in(page, running.web_url, sandbox, guild.id)
            await expect(page.locator("h1#linked")).to_be_visible()
            said = await page.locator("#what-happens").inner_text()
            assert "reads the server's member list" in said and "keeps it in sync" in said
            assert "you can close this page" in said
            await expect(page.locator("#progress")).to_be_hidden()
    finally:
        await context.close()
