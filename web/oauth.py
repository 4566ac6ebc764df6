"""The client for Discord's OAuth2 token endpoint and the user it authorized."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

from config import Secret

log = logging.getLogger(__name__)

USER_AGENT = "DiscordBot (https://github.com/guildlink/guildlink, 0.1.0)"
# A Retry-After longer than this is not worth keeping an admin's browser waiting for.
MAX_RETRY_WAIT = 10.0


class DiscordOAuthError(Exception):
    """Discord did not complete the OAuth2 exchange; `public_message` may be shown to the admin."""

    public_message = "Discord could not complete the authorization. Please try again."


class InvalidGrantError(DiscordOAuthError):
    """The code is expired, used, or was issued for another redirect URI: the admin must start again."""

    public_message = "This authorization link has expired or was already used. Please start again."


class InvalidClientError(DiscordOAuthError):
    """Discord refused our client credentials: the operator must fix DISCORD_CLIENT_ID / DISCORD_CLIENT_SECRET."""

    public_message = "This server's Discord application settings are wrong; its operator has been told."


class DiscordUnavailableError(DiscordOAuthError):
    """Discord kept failing (5xx, 429, timeout, unreadable answer) after one retry."""

    public_message = "Discord did not answer in time. Please try again in a minute."


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """The token endpoint's answer; the access token is only held long enough to ask who the user is."""

    access_token: Secret
    scopes: tuple[str, ...]
    guild_id: int | None
    guild_name: str | None


@dataclass(frozen=True, slots=True)
class DiscordUser:
    """Who authorized: what a link records of them."""

    id: int
    username: str


class DiscordOAuthClient:
    """Exchanges codes and reads `/users/@me`, with a timeout and one retry on 429 or 5xx."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_base_url: str,
        client_id: int,
        client_secret: Secret,
        redirect_uri: str,
        timeout: float = 10.0,
    ) -> None:
        self._session = session
        self._api = api_base_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._redirect_uri = redirect_uri
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def exchange_code(self, code: str) -> TokenGrant:
        """Trade an authorization code for a token grant; raise a DiscordOAuthError subclass on failure."""
        form = {
            "client_id": str(self._client_id),
            "client_secret": self._client_secret.reveal(),
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": self._redirect_uri,
        }
        body = await self._request("POST", "/oauth2/token", data=form)
        try:
            guild = body.get("guild") or {}
            return TokenGrant(
                access_token=Secret(str(body["access_token"])),
                scopes=tuple(str(body.get("scope", "")).split()),
                guild_id=int(guild["id"]) if "id" in guild else None,
                guild_name=str(guild["name"]) if "name" in guild else None,
            )
        except (KeyError, TypeError, ValueError) as exc:
            log.error("oauth.token_response_malformed keys=%s", sorted(body))
            raise DiscordUnavailableError("malformed token response") from exc

    async def check_client_credentials(self) -> None:
        """Ask for a client_credentials token: InvalidClientError if Discord refuses the id or the secret.

        The token itself is dropped unused. One attempt: Discord's reachability is the bot's to wait for.
        """
        form = {"grant_type": "client_credentials", "scope": "identify"}
        auth = aiohttp.BasicAuth(str(self._client_id), self._client_secret.reveal())
        await self._request("POST", "/oauth2/token", data=form, auth=auth, attempts=1)

    async def fetch_user(self, access_token: Secret) -> DiscordUser:
        """The user who authorized, from `GET /users/@me` with their access token."""
        body = await self._request(
            "GET", "/users/@me", headers={"Authorization": f"Bearer {access_token.reveal()}"}
        )
        try:
            return DiscordUser(id=int(body["id"]), username=str(body["username"]))
        except (KeyError, TypeError, ValueError) as exc:
            log.error("oauth.user_response_malformed keys=%s", sorted(body))
            raise DiscordUnavailableError("malformed user response") from exc

    async def _request(self, method: str, path: str, *, attempts: int = 2, **kwargs: Any) -> dict[str, Any]:
        url = f"{self._api}{path}"
        headers = {"User-Agent": USER_AGENT, **kwargs.pop("headers", {})}
        for attempt in range(1, attempts + 1):
            try:
                async with self._session.request(
                    method, url, headers=headers, timeout=self._timeout, **kwargs
                ) as response:
                    status = response.status
                    body = await self._json(response)
                    retry_after = _retry_after(response, body)
            except (aiohttp.ClientError, TimeoutError) as exc:
                log.warning(
                    "oauth.request_failed path=%s attempt=%d error=%s", path, attempt, type(exc).__name__
                )
                if attempt == attempts:
                    raise DiscordUnavailableError(f"{method} {path}: {type(exc).__name__}") from exc
                continue
            if status < 400 and body is not None:
                return body
            error = (body or {}).get("error")
            log.warning(
                "oauth.discord_error path=%s status=%d error=%s attempt=%d", path, status, error, attempt
            )
            if status == 429 or status >= 500 or body is None:
                if attempt < attempts and retry_after <= MAX_RETRY_WAIT:
                    await asyncio.sleep(max(retry_after, 0.25))
                    continue
                raise DiscordUnavailableError(f"{method} {path}: HTTP {status}")
            if error == "invalid_grant":
                raise InvalidGrantError(str(error))
            if status == 401 and path == "/oauth2/token":
                log.error("oauth.invalid_client: Discord refused DISCORD_CLIENT_ID/DISCORD_CLIENT_SECRET")
                raise InvalidClientError(str(error))
            raise DiscordOAuthError(f"{method} {path}: HTTP {status} {error}")
        raise AssertionError("unreachable")

    @staticmethod
    async def _json(response: aiohttp.ClientResponse) -> dict[str, Any] | None:
        try:
            body = await response.json(content_type=None)
        except (ValueError, aiohttp.ContentTypeError):
            return None
        return body if isinstance(body, dict) else None


def _retry_after(response: aiohttp.ClientResponse, body: dict[str, Any] | None) -> float:
    """Discord gives `retry_after` in the body and the Retry-After header; take the larger."""
    waits = [0.0]
    for raw in ((body or {}).get("retry_after"), response.headers.get("Retry-After")):
        try:
            waits.append(float(raw))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
    return max(waits)
