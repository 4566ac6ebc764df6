"""Hostile parameters get a 400 naming them (never a 500), and a bad callback exchanges nothing."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest

from sandbox import Sandbox, SandboxOptions
from tests.harness import token_requests, world
from web.params import ParameterError, parse_snowflake, parse_whole_number

HOSTILE_NUMBERS = ["²", "٣", "1²", "-1", "+1", " 1", "1_000", "0x10", "", "9" * 25, "9" * 5000, str(2**63)]


@pytest.mark.parametrize("raw", HOSTILE_NUMBERS)
def test_only_ascii_digits_within_64_bits_are_numbers(raw: str) -> None:
    with pytest.raises(ParameterError) as refused:
        parse_snowflake(raw, "guild_id")
    assert refused.value.parameter == "guild_id"


def test_numbers_keep_their_value_and_bounds() -> None:
    assert parse_snowflake(str(2**63 - 1), "id") == 2**63 - 1
    assert parse_whole_number("0042", "limit", low=1, high=100) == 42
    with pytest.raises(ParameterError):
        parse_whole_number("0", "limit", low=1, high=100)


async def test_hostile_numbers_in_every_route_are_named_400s(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        session, url = w.browser.session, w.running.web_url
        auth = {"Authorization": f"Bearer {w.running.settings.api_token.reveal()}"}  # type: ignore[union-attr]
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id)
        for raw in ("%C2%B2", "%D9%A3", "9" * 25, "9" * 5000):
            async with session.get(f"{url}/link?guild_id={raw}", allow_redirects=False) as response:
                assert response.status == 400, raw
            async with session.get(f"{url}/api/guilds/{raw}", headers=auth) as response:
                assert response.status == 400 and (await response.json())["parameter"] == "guild_id"
            for name in ("limit", "after"):
                members = f"{url}/api/guilds/{guild.id}/members?{name}={raw}"
                async with session.get(members, headers=auth) as response:
                    assert response.status == 400 and (await response.json())["parameter"] == name
        async with session.get(f"{url}/static/{'a' * 300}") as response:
            assert response.status == 404
        for body in ("[" * 5000, '{"ref": "\\ud800"}', '{"ref": "a\\u0000b"}', '{"ref": 5}', "x" * 10_000):
            async with session.post(f"{url}/api/links", data=body, headers=auth) as response:
                assert response.status == 400, body[:20]


@pytest.mark.parametrize(
    "hostile",
    [
        {"guild_id": "²"},
        {"guild_id": "9" * 25},
        {"permissions": "9" * 60},
        {"permissions": "9" * 5000},
        {"permissions": "٣"},
        {"code": "x" * 5000},
    ],
)
async def test_a_valid_state_with_hostile_parameters_exchanges_and_stores_nothing(
    make_sandbox, tmp_path: Path, hostile: dict[str, str]
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        consent = await w.browser.start_link()
        query = {"code": "a-code", "state": consent["state"], "guild_id": "1", "permissions": "0"} | hostile
        status, page = await w.browser.callback(f"{w.running.web_url}/authorize-discord?{urlencode(query)}")
        assert status == 400 and next(iter(hostile)) in page
        assert token_requests(sandbox) == 0
        assert await w.running.store.list_links() == []
