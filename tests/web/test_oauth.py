"""The OAuth client's error handling, with Discord's answers mocked (aioresponses)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aioresponses import aioresponses

from config import Secret
from web.oauth import (
    DiscordOAuthClient,
    DiscordUnavailableError,
    InvalidClientError,
    InvalidGrantError,
)

API = "https://discord.test/api/v10"
TOKEN_URL = f"{API}/oauth2/token"
GRANT = {
    "access_token": "user-access-token",
    "token_type": "Bearer",
    "expires_in": 604800,
    "refresh_token": "refresh",
    "scope": "identify guilds bot",
    "guild": {"id": "81384788765712384", "name": "Guild"},
}


@pytest.fixture
async def client() -> AsyncIterator[DiscordOAuthClient]:
    async with aiohttp.ClientSession() as session:
        yield DiscordOAuthClient(
            session,
            api_base_url=API,
            client_id=1,
            client_secret=Secret("client-secret"),
            redirect_uri="https://localhost:8080/authorize-discord",
            timeout=2,
        )


async def test_code_is_exchanged_with_a_form_body_and_user_agent(client: DiscordOAuthClient) -> None:
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, payload=GRANT)
        grant = await client.exchange_code("the-code")
        call = mocked.requests[("POST", aiohttp.client.URL(TOKEN_URL))][0]
    assert grant.guild_id == 81384788765712384 and grant.guild_name == "Guild"
    assert grant.access_token.reveal() == "user-access-token"
    assert call.kwargs["data"]["grant_type"] == "authorization_code"
    assert call.kwargs["data"]["code"] == "the-code"
    assert call.kwargs["headers"]["User-Agent"].startswith("DiscordBot (")


async def test_a_429_is_retried_once_after_retry_after(client: DiscordOAuthClient) -> None:
    with aioresponses() as mocked:
        mocked.post(
            TOKEN_URL, status=429, payload={"message": "limited", "retry_after": 0.05, "global": False}
        )
        mocked.post(TOKEN_URL, payload=GRANT)
        grant = await client.exchange_code("c")
    assert grant.guild_id == 81384788765712384


async def test_a_second_5xx_gives_up(client: DiscordOAuthClient) -> None:
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, status=502, body="bad gateway")
        mocked.post(TOKEN_URL, status=503, body="unavailable")
        with pytest.raises(DiscordUnavailableError):
            await client.exchange_code("c")


async def test_a_long_retry_after_is_not_waited_for(client: DiscordOAuthClient) -> None:
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, status=429, payload={"retry_after": 3600}, headers={"Retry-After": "3600"})
        with pytest.raises(DiscordUnavailableError):
            await client.exchange_code("c")


async def test_invalid_grant_means_start_again(client: DiscordOAuthClient) -> None:
    with aioresponses() as mocked:
        mocked.post(
            TOKEN_URL, status=400, payload={"error": "invalid_grant", "error_description": "Invalid code"}
        )
        with pytest.raises(InvalidGrantError):
            await client.exchange_code("c")


async def test_invalid_client_is_the_operators_problem(client: DiscordOAuthClient) -> None:
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, status=401, payload={"error": "invalid_client"})
        with pytest.raises(InvalidClientError):
            await client.exchange_code("c")


async def test_connection_errors_are_retried_then_reported(client: DiscordOAuthClient) -> None:
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, exception=aiohttp.ClientConnectionError("refused"))
        mocked.post(TOKEN_URL, exception=TimeoutError())
        with pytest.raises(DiscordUnavailableError) as caught:
            await client.exchange_code("secret-code-value")
    assert "secret-code-value" not in str(caught.value)


async def test_malformed_token_response_is_an_unavailable_discord(client: DiscordOAuthClient) -> None:
    with aioresponses() as mocked:
        mocked.post(TOKEN_URL, payload={"unexpected": True})
        with pytest.raises(DiscordUnavailableError):
            await client.exchange_code("c")


async def test_user_is_read_with_the_bearer_token(client: DiscordOAuthClient) -> None:
    with aioresponses() as mocked:
        mocked.get(
            re.compile(f"{API}/users/@me"), payload={"id": "42", "username": "admin", "global_name": None}
        )
        user = await client.fetch_user(Secret("tok"))
        call = next(iter(mocked.requests.values()))[0]
    assert user.id == 42 and user.username == "admin"
    assert call.kwargs["headers"]["Authorization"] == "Bearer tok"
