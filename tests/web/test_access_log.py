"""The access log: one line per request, whatever the request's path holds."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import yarl

from sandbox import Sandbox, SandboxOptions
from tests.harness import eventually, world


async def test_an_encoded_newline_in_the_path_cannot_forge_a_log_line(
    make_sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))

    async def logged() -> list[str]:
        messages = (r.getMessage() for r in caplog.records if r.name == "aiohttp.access")
        return [m for m in messages if "FAKE" in m]

    async with world(sandbox, tmp_path, ready=False) as w:
        # encoded=True: the client sends the path as written, %0a and all.
        url = yarl.URL(w.running.web_url + "/x%0aFAKE%20line", encoded=True)
        async with w.browser.session.get(url) as response:
            assert response.status == 404
        # aiohttp logs the request after sending the response: wait for the line.
        await eventually(logged)
    [message] = await logged()
    assert "\n" not in message and "\r" not in message
    assert "path=/x\\nFAKE line " in message
