"""The operator console in a real Chromium: sign in, the servers and their live bars, members, unlink, sign out.

Every page is also screenshotted, on a desk and on a 375 px phone, into tests/e2e/artifacts/ (git-ignored).
"""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import BrowserContext, ConsoleMessage, Page, ViewportSize, expect

from lifecycle import Running
from sandbox import Sandbox, SandboxOptions
from store import RoleAction, RoleChangeRequest, RoleChangeStatus, SyncPhase, SyncState
from tests.harness import browser, eventually, free_port, is_synced, settings_for, started

API_TOKEN = "test-api-token-" + "x" * 32
ARTIFACTS = Path(__file__).parent / "artifacts"
PHONE = ViewportSize(width=375, height=740)
DESK = ViewportSize(width=1280, height=800)


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Path:
    """tests/e2e/artifacts/<test>/, emptied first; its path is printed (pytest -s shows it)."""
    folder = ARTIFACTS / request.node.name
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    print(f"\nscreenshots: {folder}")
    return folder


def _watch_console(page: Page) -> list[str]:
    """Console errors and uncaught exceptions; a CSP violation (an inline script or style) shows up here."""
    problems: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(f"console: {message.text} at {message.location.get('url', '')}")

    page.on("console", on_console)
    page.on("pageerror", lambda error: problems.append(f"pageerror: {error}"))
    return problems


@contextlib.asynccontextmanager
async def _linked(sandbox: Sandbox, tmp_path: Path, guilds: int) -> AsyncIterator[Running]:
    """guildlink over HTTPS with the sandbox's first `guilds` servers linked and synced."""
    async with started(settings_for(sandbox, tmp_path, port=free_port(), https=True)) as running:
        async with browser(sandbox, running) as b:
            for guild in sandbox.managed_guilds()[:guilds]:
                status, page = await b.link_guild(guild.id)
                assert status == 200, page
                await eventually(lambda: is_synced(running, guild.id), within=20)  # noqa: B023
        yield running


async def _sign_in(page: Page, web_url: str, token: str = API_TOKEN) -> None:
    await page.goto(web_url + "/admin")
    await page.wait_for_url(web_url + "/admin/sign-in")
    await page.locator("#token").fill(token)
    await page.locator("#sign-in").click()


async def _fits(page: Page, name: str, folder: Path) -> None:
    """The page needs no sideways scrolling at the current width; screenshot it whole and its first screen."""
    width = await page.evaluate("document.documentElement.scrollWidth")
    await page.screenshot(path=folder / f"{name}.png", full_page=True)
    await page.screenshot(path=folder / f"{name}-first-screen.png")
    assert page.viewport_size is not None
    assert width <= page.viewport_size["width"], (name, width)


async def _sync_state(
    running: Running, guild_id: int, phase: SyncPhase, stored: int, *, error: str | None = None
) -> None:
    """Write a sync's state as the bot would, so the page's bar has something to follow."""
    count = (await running.store.count_members(guild_id)) or None
    sync = SyncState(guild_id, phase, members_stored=stored, member_count=count, error=error)
    assert await running.store.save_sync_state(sync)


async def _failed_role_changes(running: Running, guild_id: int) -> None:
    """Role changes with the longest reasons, refused by Discord (the bot lacks Manage Roles) and recorded."""
    user_id = (await running.store.list_members(guild_id, limit=1))[0].user_id
    queued = [
        await running.store.queue_role_change(
            RoleChangeRequest(guild_id, user_id, 9_223_372_036_854_775_000 + n, RoleAction.ADD, "r" * 512)
        )
        for n in range(2)
    ]

    async def failed() -> bool:
        changes = [await running.store.get_role_change(c.id) for c in queued if c is not None]
        return all(c is not None and c.status is RoleChangeStatus.FAILED for c in changes)

    await eventually(failed, within=10)


async def test_an_operator_signs_in_watches_syncs_browses_members_unlinks_and_signs_out(
    make_sandbox, browser_context: BrowserContext, tmp_path: Path, screenshots: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=2, members=120))
    first, second = sandbox.managed_guilds()[:2]
    async with _linked(sandbox, tmp_path, guilds=2) as running:
        url = running.web_url
        page = await browser_context.new_page()
        problems = _watch_console(page)

        await _sign_in(page, url, "not-the-token")
        await expect(page.locator("#sign-in-problem")).to_have_text("That is not the API token.")
        await page.screenshot(path=screenshots / "01-sign-in-refused.png", full_page=True)
        assert not [c for c in await browser_context.cookies() if c["name"] == "__Host-guildlink_admin"]
        # Chromium logs the refused sign-in's 401 as a console error: that one was asked for.
        assert [p for p in problems if "status of 401" not in p] == []
        problems.clear()

        # A sync under way when the list opens: the bar moves without a reload.
        stored = await running.store.count_members(first.id)
        await _sync_state(running, first.id, SyncPhase.SYNCING, 30)
        await page.locator("#token").fill(API_TOKEN)
        await page.locator("#sign-in").click()
        await page.wait_for_url(url + "/admin/")
        [cookie] = [c for c in await browser_context.cookies() if c["name"] == "__Host-guildlink_admin"]
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"

        rows = page.locator("tr.server")
        await expect(rows).to_have_count(2)
        row = page.locator(f'tr[data-guild="{first.id}"]')
        bar = row.locator("progress")
        await expect(row.locator('[data-field="label"]')).to_have_text("Reading members")
        assert (await bar.get_attribute("value"), await bar.get_attribute("max")) == ("30", str(stored))
        await page.screenshot(path=screenshots / "02-servers-syncing.png", full_page=True)
        # Names are text, never markup.
        await expect(page.locator(f'tr[data-guild="{second.id}"] .server-name')).to_have_text(second.name)
        assert await page.locator("main b, main script:not([src])").count() == 0

        await _sync_state(running, first.id, SyncPhase.SYNCING, 90)
        await expect(row.locator('[data-field="detail"]')).to_have_text(f"90 of {stored} read")
        assert await bar.evaluate("bar => bar.value") == 90
        await _sync_state(running, first.id, SyncPhase.FAILED, 90, error="Discord closed the gateway (4000)")
        await expect(row.locator('[data-field="error"]')).to_have_text("Discord closed the gateway (4000)")
        await _sync_state(running, first.id, SyncPhase.SYNCED, stored)
        await expect(row.locator('[data-field="label"]')).to_have_text("Synced")
        await expect(row.locator('[data-field="error"]')).to_be_empty()  # the dash is CSS's
        await page.screenshot(path=screenshots / "03-servers-synced.png", full_page=True)

        # One server's members, 50 a page, by user id.
        await row.locator(".server-name").click()
        await page.wait_for_url(f"{url}/admin/guilds/{first.id}")
        await expect(page.locator("h1#server-heading")).to_have_text(first.name)
        members = page.locator("tr.member")
        await expect(members).to_have_count(50)
        await page.screenshot(path=screenshots / "04-members.png", full_page=True)
        seen = [await members.nth(i).get_attribute("data-user") for i in range(50)]
        while await page.locator("#next-page").count():
            await page.locator("#next-page").click()
            await page.wait_for_load_state()
            seen += [await r.get_attribute("data-user") for r in await members.all()]
        expected = sorted(int(m["user"]["id"]) for m in sandbox.members(first.id))
        assert [int(user) for user in seen if user] == expected
        await page.locator("#first-page").click()
        await expect(members).to_have_count(50)

        # Search by any name, case ignored.
        await page.locator("#q").fill("HIRO")
        await page.locator("#q").press("Enter")
        await page.wait_for_url(re.compile(r".*\?q=HIRO$"))
        found = await members.count()
        hiros = [m for m in sandbox.members(first.id) if "hiro" in m["user"]["username"]]
        assert found == min(len(hiros), 50) and found > 0
        for text in await page.locator("tr.member td:first-child").all_inner_texts():
            assert "hiro" in text.lower()
        await page.screenshot(path=screenshots / "05-search.png", full_page=True)

        # Unlink: a confirmation page first; Cancel changes nothing.
        await page.locator("#unlink").click()
        await page.wait_for_url(f"{url}/admin/guilds/{first.id}/unlink")
        await expect(page.locator("h1#unlink-heading")).to_have_text(f"Unlink {first.name}?")
        await page.screenshot(path=screenshots / "06-unlink-confirm.png", full_page=True)
        await page.locator("#cancel-unlink").click()
        await page.wait_for_url(f"{url}/admin/guilds/{first.id}")
        link = await running.store.get_link(first.id)
        assert link is not None and link.active
        await page.locator("#unlink").click()
        await page.locator("#confirm-unlink").click()
        await page.wait_for_url(f"{url}/admin/?unlinked={first.id}")
        await expect(page.locator("#unlinked-notice strong")).to_have_text(first.name)
        await expect(row.locator('[data-field="label"]')).to_have_text("Unlinked")
        await expect(row.locator("a.danger")).to_have_count(0)
        await page.screenshot(path=screenshots / "07-unlinked.png", full_page=True)
        link = await running.store.get_link(first.id)
        assert link is not None and not link.active
        assert await running.store.count_members(first.id) == 0
        assert first.id not in sandbox.bot_guild_ids() and second.id in sandbox.bot_guild_ids()

        await page.locator("#sign-out").click()
        await page.wait_for_url(f"{url}/admin/sign-in?signed_out=1")
        await expect(page.locator("#signed-out")).to_be_visible()
        await page.screenshot(path=screenshots / "08-signed-out.png", full_page=True)
        assert not [c for c in await browser_context.cookies() if c["name"] == "__Host-guildlink_admin"]
        await page.goto(url + "/admin/")
        assert urlsplit(page.url).path == "/admin/sign-in"
        assert problems == []


async def test_every_console_page_fits_a_375_px_phone_without_sideways_scrolling(
    make_sandbox, browser_context: BrowserContext, tmp_path: Path, screenshots: Path
) -> None:
    # Four servers: among them the very long name and the one that looks like markup.
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=4, members=60))
    guilds = sandbox.managed_guilds()[:4]
    longest = max(guilds, key=lambda g: len(g.name))
    async with _linked(sandbox, tmp_path, guilds=4) as running:
        url = running.web_url
        await _sync_state(running, guilds[1].id, SyncPhase.SYNCING, 20)
        await _sync_state(
            running,
            guilds[2].id,
            SyncPhase.FAILED,
            10,
            error="Discord closed the gateway (4000): " + "x" * 80,
        )
        await _failed_role_changes(running, longest.id)
        page = await browser_context.new_page()
        problems = _watch_console(page)
        sizes = ((DESK, "desk"), (PHONE, "phone"))
        for viewport, prefix in sizes:
            await page.set_viewport_size(viewport)
            await page.goto(url + "/admin/sign-in")
            await _fits(page, f"{prefix}-1-sign-in", screenshots)
        await _sign_in(page, url)
        await page.wait_for_url(url + "/admin/")
        # Between a phone and a desk too: no width where the tables outgrow the screen.
        for width in range(375, 1300, 75):
            await page.set_viewport_size(ViewportSize(width=width, height=800))
            for path in ("/admin/", f"/admin/guilds/{longest.id}"):
                await page.goto(url + path)
                assert await page.evaluate("document.documentElement.scrollWidth") <= width, (path, width)
        for viewport, prefix in sizes:
            await page.set_viewport_size(viewport)
            await page.goto(url + "/admin/")
            await expect(page.locator("tr.server")).to_have_count(4)
            await _fits(page, f"{prefix}-2-servers", screenshots)
            await page.goto(f"{url}/admin/guilds/{longest.id}")
            await expect(page.locator("tr.member")).to_have_count(50)
            await page.locator("tr.member details").first.locator("summary").click()
            await _fits(page, f"{prefix}-3-members", screenshots)
            await page.locator("#q").fill("o")
            await page.locator("#q").press("Enter")
            await page.wait_for_url(re.compile(r".*\?q=o$"))
            await _fits(page, f"{prefix}-4-search", screenshots)
            await page.goto(f"{url}/admin/guilds/{longest.id}/unlink")
            await _fits(page, f"{prefix}-5-unlink", screenshots)
            assert problems == []
            # A form whose CSRF token is not this session's: refused, and nothing is unlinked.
            await page.locator('input[name="csrf"]').last.evaluate("field => { field.value = 'forged'; }")
            await page.locator("#confirm-unlink").click()
            await expect(page.locator("h1")).to_have_text("This form has expired")
            await _fits(page, f"{prefix}-6-csrf-refused", screenshots)
            link = await running.store.get_link(longest.id)
            assert link is not None and link.active
            await page.goto(f"{url}/admin/guilds/1")
            await _fits(page, f"{prefix}-7-not-found", screenshots)
            # Chromium logs the 403 and 404 it was sent to as console errors.
            assert [p for p in problems if not re.search("status of 40[34]", p)] == []
            problems.clear()


async def test_without_api_token_the_console_page_says_it_is_off_and_fits_a_phone(
    make_sandbox, browser_context: BrowserContext, tmp_path: Path, screenshots: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    settings = settings_for(sandbox, tmp_path, port=free_port(), https=True, env={"API_TOKEN": ""})
    async with started(settings, ready=False) as running:
        page = await browser_context.new_page()
        for viewport, prefix in ((DESK, "desk"), (PHONE, "phone")):
            await page.set_viewport_size(viewport)
            await page.goto(running.web_url + "/admin")
            await expect(page.locator("h1#console-off")).to_have_text("The console is off")
            await expect(page.locator("main")).to_contain_text("API_TOKEN")
            await _fits(page, f"{prefix}-console-off", screenshots)
