"""The REST API: routes, errors, headers, and every response checked against our schemas of Discord's payloads."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from sandbox import Sandbox
from tests.sandbox.discord_schemas import validate, validate_response

REDIRECT = "https://localhost:8080/authorize-discord"


async def token_response(http: aiohttp.ClientSession, sandbox: Sandbox, code: str) -> dict[str, Any]:
    """Exchange an authorization code at the token endpoint, as a client with its credentials would."""
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": str(sandbox.client_id),
        "client_secret": sandbox.client_secret,
    }
    async with http.post(f"{sandbox.base_url}/api/v10/oauth2/token", data=form) as resp:
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
        return body


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Api:
    def __init__(self, http: aiohttp.ClientSession, sandbox: Sandbox, auth: str) -> None:
        self.http, self.sandbox, self.auth = http, sandbox, auth

    async def get(self, path: str, **params: str) -> tuple[int, Any, CIMultiDictProxy[str]]:
        url = f"{self.sandbox.base_url}/api/v10{path}"
        headers = {"Authorization": self.auth} if self.auth else {}
        async with self.http.get(url, headers=headers, params=params) as resp:
            assert resp.headers["Content-Type"] == "application/json"  # exactly: discord.py reads no other
            return resp.status, await resp.json(), resp.headers


@pytest.fixture
def bot(http: aiohttp.ClientSession, sandbox: Sandbox) -> Api:
    return Api(http, sandbox, f"Bot {sandbox.bot_token}")


@pytest.fixture
async def user(http: aiohttp.ClientSession, sandbox: Sandbox) -> Api:
    query = {
        "client_id": str(sandbox.client_id),
        "response_type": "code",
        "scope": "identify guilds email",
        "redirect_uri": REDIRECT,
    }
    code = sandbox.authorize(query).split("code=")[1].split("&")[0]
    token = (await token_response(http, sandbox, code))["access_token"]
    return Api(http, sandbox, f"Bearer {token}")


async def test_users_me_for_bot_and_user_match_discords_schemas(bot: Api, user: Api) -> None:
    status, body, headers = await bot.get("/users/@me")
    assert status == 200
    validate_response(body, "/users/@me")
    assert body["id"] == str(bot.sandbox.client_id)
    assert body["bot"] is True
    assert "X-RateLimit-Bucket" in headers
    status, body, _ = await user.get("/users/@me")
    assert status == 200
    validate_response(body, "/users/@me")
    assert body["id"] == str(user.sandbox.user_id)
    assert body["email"]


async def test_my_guilds_match_discords_schemas(bot: Api, user: Api) -> None:
    sandbox = bot.sandbox
    status, body, _ = await user.get("/users/@me/guilds", with_counts="true")
    assert status == 200
    validate_response(body, "/users/@me/guilds")
    managed = {str(g.id) for g in sandbox.managed_guilds()}
    assert len(body) == len(managed) + 1  # plus the guild where the user is a plain member
    assert {g["id"] for g in body} >= managed
    assert all(isinstance(g["approximate_member_count"], int) for g in body)
    owner = [g for g in body if g["owner"]]
    assert owner
    status, body, _ = await bot.get("/users/@me/guilds")
    assert (status, body) == (200, [])
    sandbox.add_bot(sandbox.managed_guilds()[0].id)
    _, body, _ = await bot.get("/users/@me/guilds")
    validate_response(body, "/users/@me/guilds")
    assert [g["id"] for g in body] == [str(sandbox.managed_guilds()[0].id)]


async def test_application_and_gateway_match_discords_schemas(bot: Api) -> None:
    status, body, _ = await bot.get("/oauth2/applications/@me")
    assert status == 200
    validate_response(body, "/oauth2/applications/@me")
    assert body["id"] == str(bot.sandbox.client_id)
    assert body["redirect_uris"] == [REDIRECT]
    status, body, _ = await bot.get("/gateway/bot")
    assert status == 200
    validate_response(body, "/gateway/bot")
    assert body["url"] == bot.sandbox.gateway_url
    assert body["url"].startswith("ws://")
    anonymous = Api(bot.http, bot.sandbox, "")
    status, body, _ = await anonymous.get("/gateway")
    assert status == 200
    validate_response(body, "/gateway")


async def test_guild_and_members_match_discords_schemas(bot: Api) -> None:
    sandbox = bot.sandbox
    guild = sandbox.managed_guilds()[1]
    sandbox.add_bot(guild.id)
    status, body, _ = await bot.get(f"/guilds/{guild.id}", with_counts="true")
    assert status == 200
    validate_response(body, "/guilds/{guild_id}")
    assert body["name"] == guild.name
    assert body["approximate_member_count"] == sandbox.guild(guild.id).member_count
    status, body, _ = await bot.get(f"/guilds/{guild.id}/members", limit="1000")
    assert status == 200
    validate_response(body, "/guilds/{guild_id}/members")
    assert body == sandbox.members(guild.id)
    assert any(m["nick"] for m in body)
    assert any(m["user"].get("bot") for m in body)
    assert any(m["roles"] for m in body)


async def test_member_pages_follow_user_id_order(bot: Api) -> None:
    sandbox = bot.sandbox
    guild = sandbox.managed_guilds()[0]
    sandbox.add_bot(guild.id)
    sandbox.remove_member(guild.id, int(sandbox.members(guild.id)[5]["user"]["id"]))
    added = sandbox.add_member(guild.id)
    seen: list[str] = []
    after = "0"
    while True:
        status, page, _ = await bot.get(f"/guilds/{guild.id}/members", limit="7", after=after)
        assert status == 200
        if not page:
            break
        seen += [m["user"]["id"] for m in page]
        after = page[-1]["user"]["id"]
    assert seen == [m["user"]["id"] for m in sandbox.members(guild.id)]
    assert [int(s) for s in seen] == sorted(int(s) for s in seen)
    assert str(added) in seen
    assert len(seen) == sandbox.guild(guild.id).member_count


async def test_errors_match_discords_schemas(bot: Api) -> None:
    sandbox = bot.sandbox
    guild = sandbox.managed_guilds()[0]
    status, body, _ = await bot.get(f"/guilds/{guild.id}/members")
    assert (status, body) == (403, {"message": "Missing Access", "code": 50001})
    validate_response(body, "/guilds/{guild_id}/members", "4XX")
    status, body, _ = await bot.get("/guilds/12345")
    assert (status, body["code"]) == (404, 10004)
    sandbox.add_bot(guild.id)
    status, body, _ = await bot.get(f"/guilds/{guild.id}/members", limit="1001")
    assert (status, body["code"]) == (400, 50035)
    # Discord sends string codes inside "errors"; our schema follows it where the official spec says integers.
    assert body["errors"]["limit"]["_errors"][0]["code"] == "NUMBER_TYPE_MAX"
    validate_response(body, "/guilds/{guild_id}/members", "4XX")
    bad = Api(bot.http, sandbox, "Bot not-the-token")
    status, body, _ = await bad.get("/users/@me")
    assert status == 401
    validate_response(body, "/users/@me", "4XX")
    status, body, _ = await bot.get("/nowhere")
    assert status == 404
    validate_response(body, "/users/@me", "4XX")


async def test_injected_429_carries_discords_rate_limit_body_and_headers(bot: Api) -> None:
    sandbox = bot.sandbox
    sandbox.fail_next("GET", "/api/v10/users/@me", status=429, times=2, retry_after=1.5)
    for _ in range(2):
        status, body, headers = await bot.get("/users/@me")
        assert status == 429
        validate_response(body, "/users/@me", "429")
        assert body["retry_after"] == 1.5
        assert body["global"] is False
        assert headers["Retry-After"] == "2"
        assert headers["X-RateLimit-Remaining"] == "0"
        assert float(headers["X-RateLimit-Reset-After"]) == 1.5
        assert headers["X-RateLimit-Limit"] and headers["X-RateLimit-Bucket"] and headers["X-RateLimit-Reset"]
    status, _, _ = await bot.get("/users/@me")
    assert status == 200
    sandbox.fail_next("GET", "/api/v10/gateway/bot", status=503)
    status, body, _ = await bot.get("/gateway/bot")
    assert status == 503
    assert body["code"] == 0


async def test_bot_leaving_a_guild(bot: Api) -> None:
    sandbox = bot.sandbox
    guild = sandbox.managed_guilds()[0]
    sandbox.add_bot(guild.id)
    url = f"{sandbox.base_url}/api/v10/users/@me/guilds/{guild.id}"
    async with bot.http.delete(url, headers={"Authorization": bot.auth}) as resp:
        assert resp.status == 204
    assert sandbox.bot_guild_ids() == set()
    status, _, _ = await bot.get(f"/guilds/{guild.id}")
    assert status == 403


async def test_every_request_is_logged(bot: Api) -> None:
    await bot.get("/gateway/bot", v="10")
    record = bot.sandbox.requests[-1]
    assert (record.method, record.path, record.query) == ("GET", "/api/v10/gateway/bot", {"v": "10"})
    assert record.time > 0


async def test_token_response_guild_and_gateway_payloads_match_discords_schemas(
    http: aiohttp.ClientSession, sandbox: Sandbox
) -> None:
    guild = sandbox.managed_guilds()[0]
    query = {
        "client_id": str(sandbox.client_id),
        "response_type": "code",
        "scope": "bot",
        "redirect_uri": REDIRECT,
    }
    code = sandbox.authorize(query, guild.id).split("code=")[1].split("&")[0]
    body = await token_response(http, sandbox, code)
    validate(body["guild"], "guild.json")
    # The gateway has no schema of its own here, but its member and role objects are the REST ones.
    for member in sandbox.members(guild.id):
        validate(member, "guild-member.json")
    bot_role = next(r for r in body["guild"]["roles"] if r["managed"])
    assert bot_role["tags"] == {"bot_id": str(sandbox.client_id)}


async def test_default_soundboard_sounds_match_discords_schema(bot: Api, user: Api) -> None:
    status, body, headers = await bot.get("/soundboard-default-sounds")
    assert status == 200
    validate_response(body, "/soundboard-default-sounds")
    assert body and all("guild_id" not in sound and "user" not in sound for sound in body)
    assert "X-RateLimit-Bucket" in headers
    # Discord's spec gives the route to bot tokens only.
    for other in (user, Api(bot.http, bot.sandbox, "")):
        status, body, _ = await other.get("/soundboard-default-sounds")
        assert status == 401
        validate_response(body, "/users/@me", "4XX")
