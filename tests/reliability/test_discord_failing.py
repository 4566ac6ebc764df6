"""Discord failing at each step of the exchange: a clear page, nothing partial stored, the bot not left behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sandbox import Sandbox, SandboxOptions
from tests.harness import world
from tests.reliability.report import ReliabilityReport

TOKEN = "/api/v10/oauth2/token"
USER = "/api/v10/users/@me"
SECTION = "Discord failing during the callback"

# (what fails, fault: method, path, status, times, body), the page's status
FAULTS: list[tuple[str, tuple[str, str, int, int, dict[str, Any] | None], int]] = [
    ("token endpoint 500 twice", ("POST", TOKEN, 500, 2, None), 502),
    ("token endpoint 502 twice", ("POST", TOKEN, 502, 2, None), 502),
    ("token endpoint 429 twice", ("POST", TOKEN, 429, 2, {"message": "slow down", "retry_after": 0.1}), 502),
    ("token response without access_token", ("POST", TOKEN, 200, 1, {"token_type": "Bearer"}), 502),
    ("token response without guild", ("POST", TOKEN, 200, 1, {"access_token": "a", "scope": "bot"}), 400),
    ("invalid_grant", ("POST", TOKEN, 400, 1, {"error": "invalid_grant"}), 400),
    ("invalid_client", ("POST", TOKEN, 401, 1, {"error": "invalid_client"}), 502),
    ("/users/@me 500 twice", ("GET", USER, 500, 2, None), 502),
    ("/users/@me 401", ("GET", USER, 401, 1, {"message": "401: Unauthorized", "code": 0}), 502),
]


@pytest.mark.parametrize(("what", "fault", "page_status"), FAULTS, ids=[f[0] for f in FAULTS])
async def test_discord_failing_leaves_nothing_partial(
    make_sandbox,
    tmp_path: Path,
    report: ReliabilityReport,
    what: str,
    fault: tuple[str, str, int, int, dict[str, Any] | None],
    page_status: int,
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        method, path, status, times, body = fault
        sandbox.fail_next(method, path, status=status, times=times, body=body)
        page_status_seen, page = await w.browser.callback(
            sandbox.authorize(await w.browser.start_link(), guild.id)
        )
        report.count(SECTION, "faults injected")
        stored = await w.running.store.get_link(guild.id)
        left_behind = guild.id in sandbox.bot_guild_ids()
        report.count(SECTION, "links stored after a failure (goal 0)", int(stored is not None))
        report.count(SECTION, "bots left behind without a link (goal 0)", int(left_behind))
        report.count(SECTION, "server_errors", int(page_status_seen >= 500 and page_status_seen != 502))
        assert page_status_seen == page_status, (what, page)
        assert stored is None and not left_behind
        assert "Traceback" not in page and "<h1>" in page
