"""A real Chromium (Debian's, driven by Playwright) for the end-to-end tests.

There is no skip when Chromium or Playwright is missing: a browser test that cannot run must fail.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import BrowserContext, async_playwright

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    # This network is closed: keep Chromium from dialling out for updates, sync, safe browsing...
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
async def browser_context() -> AsyncIterator[BrowserContext]:
    """A fresh browser profile (own cookies) that accepts guildlink's self-signed localhost certificate."""
    playwright = await async_playwright().start()
    try:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            context = await browser.new_context(
                ignore_https_errors=True, viewport={"width": 1000, "height": 700}
            )
            context.set_default_timeout(10_000)
            context.set_default_navigation_timeout(10_000)
            try:
                yield context
            finally:
                await context.close()
        finally:
            await browser.close()
    finally:
        await playwright.stop()
