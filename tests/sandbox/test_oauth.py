"""The consent page and the OAuth2 token endpoints over HTTP."""

from __future__ import annotations

import base64
import html
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from sandbox import Sandbox, SandboxError, SandboxOptions
from tests.conftest import MakeSandbox

REDIRECT = "https://localhost:8080/authorize-discord"


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def consent_query(sandbox: Sandbox, **extra: str) -> dict[str, str]:
    query = {
        "client_id": str(sandbox.client_id),
        "response_type": "code",
        "scope": "bot identify guilds",
        "redirect_uri": REDIRECT,
        "state": "st<&>ate",
        "permissions": "0",
    }
    query.update(extra)
    return query


def redirect_params(location: str) -> dict[str, str]:
    parts = urlsplit(location)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == REDIRECT
    return {k: v[0] for k, v in parse_qs(parts.query).items()}


async def exchange(
    http: aiohttp.ClientSession, sandbox: Sandbox, form: dict[str, str], *, basic: bool = False
) -> tuple[int, dict[str, Any], str]:
    headers = {}
    if basic:
        raw = f"{sandbox.client_id}:{sandbox.client_secret}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
    else:
        form = {"client_id": str(sandbox.client_id), "client_secret": sandbox.client_secret, **form}
    async with http.post(f"{sandbox.base_url}/api/v10/oauth2/token", data=form, headers=headers) as resp:
        return resp.status, await resp.json(), resp.headers["Content-Type"]


async def test_consent_page_lists_managed_guilds_only_with_names_escaped(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"{sandbox.base_url}/oauth2/authorize", params=consent_query(sandbox)) as resp:
        assert resp.status == 200
        page = await resp.text()
    assert sandbox.application_name in page
    managed = sandbox.managed_guilds()
    assert len(managed) == 3
    for guild in managed:
        assert f'<option value="{guild.id}">{html.escape(guild.name)}</option>' in page
    # The user is a plain member of one more guild, which must not be offered.
    plain = [g for g in sandbox.world.admin_guilds() if g.id not in {m.id for m in managed}]
    assert len(plain) == 1
    assert str(plain[0].id) not in page
    assert "<b>Bold</b>" not in page
    assert "&lt;b&gt;Bold&lt;/b&gt;" in page
    assert 'value="st&lt;&amp;&gt;ate"' in page  # the state is echoed into the form, escaped
    assert "Authorize" in page and "Cancel" in page


async def test_consent_page_preselects_and_locks_the_requested_guild(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    target = sandbox.managed_guilds()[2]
    query = consent_query(sandbox, guild_id=str(target.id), disable_guild_select="true")
    async with http.get(f"{sandbox.base_url}/oauth2/authorize", params=query) as resp:
        page = await resp.text()
    assert f'<option value="{target.id}" selected>' in page
    assert page.count("<option") == 1
    assert 'name="guild_id" id="guild_id" disabled' in page


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"redirect_uri": "https://evil.example/authorize-discord"}, "redirect_uri"),
        ({"redirect_uri": REDIRECT + "/"}, "redirect_uri"),
        ({"client_id": "1234"}, "Unknown Application"),
        ({"response_type": "token"}, "response_type"),
        ({"scope": "bot nonsense"}, "scope"),
    ],
)
async def test_invalid_authorize_request_gets_an_error_page_without_redirect(
    sandbox: Sandbox, http: aiohttp.ClientSession, change: dict[str, str], reason: str
) -> None:
    query = consent_query(sandbox, **change)
    async with http.get(f"{sandbox.base_url}/oauth2/authorize", params=query, allow_redirects=False) as resp:
        assert resp.status == 400
        assert "Location" not in resp.headers
        assert reason in await resp.text()
    with pytest.raises(SandboxError, match=reason):
        sandbox.authorize(query, sandbox.managed_guilds()[0].id)


async def test_authorize_form_redirects_with_code_state_guild_and_permissions(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    guild = sandbox.managed_guilds()[1]
    form = {**consent_query(sandbox, permissions="2048"), "guild_id": str(guild.id), "action": "authorize"}
    async with http.post(f"{sandbox.base_url}/oauth2/authorize", data=form, allow_redirects=False) as resp:
        assert resp.status == 302
        params = redirect_params(resp.headers["Location"])
    assert params["state"] == "st<&>ate"
    assert params["guild_id"] == str(guild.id)
    assert params["permissions"] == "2048"
    assert params["code"]
    # With "Requires OAuth2 Code Grant" on, the bot joins only when the code is exchanged.
    assert sandbox.bot_guild_ids() == set()
    status, body, content_type = await exchange(
        http, sandbox, {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT}
    )
    assert status == 200, body
    assert content_type == "application/json"
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "bot identify guilds"
    assert body["expires_in"] > 0
    assert body["access_token"] and body["refresh_token"]
    assert body["guild"]["id"] == str(guild.id)
    assert body["guild"]["name"] == guild.name
    assert sandbox.bot_guild_ids() == {guild.id}


async def test_cancel_redirects_with_access_denied(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    form = {**consent_query(sandbox), "action": "cancel"}
    async with http.post(f"{sandbox.base_url}/oauth2/authorize", data=form, allow_redirects=False) as resp:
        assert resp.status == 302
        params = redirect_params(resp.headers["Location"])
    assert params["error"] == "access_denied"
    assert params["error_description"]
    assert params["state"] == "st<&>ate"
    assert "code" not in params
    assert params == redirect_params(sandbox.authorize(consent_query(sandbox), deny=True))
    assert sandbox.bot_guild_ids() == set()


async def test_without_code_grant_the_bot_joins_on_authorize(make_sandbox: MakeSandbox) -> None:
    sandbox = await make_sandbox(SandboxOptions(requires_code_grant=False))
    guild = sandbox.managed_guilds()[0]
    sandbox.authorize(consent_query(sandbox), guild.id)
    assert sandbox.bot_guild_ids() == {guild.id}


async def test_picker_refuses_a_guild_the_user_cannot_manage(sandbox: Sandbox) -> None:
    managed = {g.id for g in sandbox.managed_guilds()}
    plain = next(g.id for g in sandbox.world.admin_guilds() if g.id not in managed)
    with pytest.raises(SandboxError, match="Manage Server"):
        sandbox.authorize(consent_query(sandbox), plain)


async def test_code_is_single_use(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    params = redirect_params(sandbox.authorize(consent_query(sandbox), sandbox.managed_guilds()[0].id))
    form = {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT}
    assert (await exchange(http, sandbox, form))[0] == 200
    status, body, _ = await exchange(http, sandbox, form)
    assert status == 400
    assert body["error"] == "invalid_grant"


async def test_exchange_needs_the_same_redirect_uri(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    params = redirect_params(sandbox.authorize(consent_query(sandbox), sandbox.managed_guilds()[0].id))
    form = {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT + "?x=1"}
    status, body, _ = await exchange(http, sandbox, form)
    assert (status, body["error"]) == (400, "invalid_grant")
    assert sandbox.bot_guild_ids() == set()


async def test_wrong_client_secret_is_invalid_client(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    params = redirect_params(sandbox.authorize(consent_query(sandbox), sandbox.managed_guilds()[0].id))
    form = {
        "grant_type": "authorization_code",
        "code": params["code"],
        "redirect_uri": REDIRECT,
        "client_id": str(sandbox.client_id),
        "client_secret": "not-the-secret",
    }
    async with http.post(f"{sandbox.base_url}/api/v10/oauth2/token", data=form) as resp:
        assert resp.status == 401
        assert await resp.json() == {"error": "invalid_client"}
    # The code was not spent by the refused attempt.
    status, _, _ = await exchange(
        http, sandbox, {k: v for k, v in form.items() if not k.startswith("client")}
    )
    assert status == 200


async def test_http_basic_client_authentication(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    params = redirect_params(sandbox.authorize(consent_query(sandbox), sandbox.managed_guilds()[0].id))
    form = {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT}
    status, body, _ = await exchange(http, sandbox, form, basic=True)
    assert status == 200, body


def full_code_form(sandbox: Sandbox) -> dict[str, str]:
    """A fresh code for the first managed guild, as a complete token request with client credentials."""
    params = redirect_params(sandbox.authorize(consent_query(sandbox), sandbox.managed_guilds()[0].id))
    return {
        "grant_type": "authorization_code",
        "code": params["code"],
        "redirect_uri": REDIRECT,
        "client_id": str(sandbox.client_id),
        "client_secret": sandbox.client_secret,
    }


async def test_json_body_is_refused(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    body = full_code_form(sandbox)
    async with http.post(f"{sandbox.base_url}/api/v10/oauth2/token", json=body) as resp:
        assert resp.status == 400
        assert resp.headers["Content-Type"] == "application/json"
        assert (await resp.json())["error"] == "unsupported_grant_type"
    assert sandbox.bot_guild_ids() == set()


async def test_refresh_gives_new_tokens_and_retires_the_old_refresh_token(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    params = redirect_params(sandbox.authorize(consent_query(sandbox), sandbox.managed_guilds()[0].id))
    _, first, _ = await exchange(
        http, sandbox, {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT}
    )
    status, second, _ = await exchange(
        http, sandbox, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert status == 200
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert "guild" not in second
    headers = {"Authorization": f"Bearer {second['access_token']}"}
    async with http.get(f"{sandbox.base_url}/api/v10/users/@me", headers=headers) as resp:
        assert resp.status == 200
        assert (await resp.json())["id"] == str(sandbox.user_id)
    status, body, _ = await exchange(
        http, sandbox, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    )
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_revoke_ends_the_access_token(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    params = redirect_params(sandbox.authorize(consent_query(sandbox), sandbox.managed_guilds()[0].id))
    _, tokens, _ = await exchange(
        http, sandbox, {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT}
    )
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    async with http.get(f"{sandbox.base_url}/api/v10/users/@me", headers=headers) as resp:
        assert resp.status == 200
    form = {
        "token": tokens["access_token"],
        "token_type_hint": "access_token",
        "client_id": str(sandbox.client_id),
        "client_secret": sandbox.client_secret,
    }
    async with http.post(f"{sandbox.base_url}/api/v10/oauth2/token/revoke", data=form) as resp:
        assert resp.status == 200
    async with http.get(f"{sandbox.base_url}/api/v10/users/@me", headers=headers) as resp:
        assert resp.status == 401
        assert (await resp.json())["code"] == 0
    status, body, _ = await exchange(
        http, sandbox, {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    )
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_unversioned_token_endpoint(sandbox: Sandbox, http: aiohttp.ClientSession) -> None:
    form = full_code_form(sandbox)
    async with http.post(f"{sandbox.base_url}/api/oauth2/token", data=form) as resp:
        assert resp.status == 200


async def test_tampered_redirect_guild_differs_from_the_token_response(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    chosen, other = sandbox.managed_guilds()[0], sandbox.managed_guilds()[1]
    sandbox.tamper_redirect_guild_id(other.id)
    params = redirect_params(sandbox.authorize(consent_query(sandbox), chosen.id))
    assert params["guild_id"] == str(other.id)
    _, body, _ = await exchange(
        http, sandbox, {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT}
    )
    assert body["guild"]["id"] == str(chosen.id)
    assert sandbox.bot_guild_ids() == {chosen.id}
    # Only the next redirect is tampered with.
    again = redirect_params(sandbox.authorize(consent_query(sandbox), chosen.id))
    assert again["guild_id"] == str(chosen.id)


async def test_authorize_without_a_server_chosen_stays_on_the_consent_page(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    form = {**consent_query(sandbox), "guild_id": "", "action": "authorize"}
    async with http.post(f"{sandbox.base_url}/oauth2/authorize", data=form, allow_redirects=False) as resp:
        assert resp.status == 200 and "Location" not in resp.headers
        page = await resp.text()
    assert "Choose a server to add the bot to." in page
    # The form is the same one again, its state kept, ready for a server to be picked.
    assert '<select name="guild_id" id="guild_id" required>' in page
    assert f'value="{html.escape("st<&>ate")}"' in page
    assert sandbox.bot_guild_ids() == set()


async def test_client_credentials_give_the_owner_a_token_without_a_refresh_token(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    for basic in (False, True):
        status, body, _ = await exchange(
            http, sandbox, {"grant_type": "client_credentials", "scope": "identify"}, basic=basic
        )
        assert status == 200, body
        assert set(body) == {"token_type", "access_token", "expires_in", "scope"}
        assert body["token_type"] == "Bearer" and body["scope"] == "identify"
        headers = {"Authorization": f"Bearer {body['access_token']}"}
        async with http.get(f"{sandbox.base_url}/api/v10/users/@me", headers=headers) as resp:
            assert resp.status == 200 and (await resp.json())["id"] == str(sandbox.user_id)
    assert sandbox.bot_guild_ids() == set()


async def test_client_credentials_with_a_wrong_secret_are_invalid_client(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    form = {
        "grant_type": "client_credentials",
        "scope": "identify",
        "client_id": str(sandbox.client_id),
        "client_secret": "not-the-secret",
    }
    async with http.post(f"{sandbox.base_url}/api/v10/oauth2/token", data=form) as resp:
        assert resp.status == 401 and await resp.json() == {"error": "invalid_client"}


@pytest.mark.parametrize("scope", ["", "bot", "identify nonsense"])
async def test_client_credentials_refuse_a_scope_that_needs_consent_or_is_unknown(
    sandbox: Sandbox, http: aiohttp.ClientSession, scope: str
) -> None:
    status, body, _ = await exchange(http, sandbox, {"grant_type": "client_credentials", "scope": scope})
    assert status == 400 and body["error"] == "invalid_scope"


async def test_every_token_endpoint_response_forbids_caching(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    """RFC 6749 §5.1: Cache-Control: no-store and Pragma: no-cache on tokens, and on refusals alike."""
    params = redirect_params(sandbox.authorize(consent_query(sandbox), sandbox.managed_guilds()[0].id))
    code = {"grant_type": "authorization_code", "code": params["code"], "redirect_uri": REDIRECT}
    credentials = {"client_id": str(sandbox.client_id), "client_secret": sandbox.client_secret}
    forms = [
        ({**credentials, **code}, 200),
        ({**credentials, **code}, 400),  # the code is used up
        ({**credentials, "grant_type": "client_credentials", "scope": "identify"}, 200),
        ({**credentials, "client_secret": "not-the-secret", "grant_type": "client_credentials"}, 401),
        ({**credentials, "grant_type": "password"}, 400),
    ]
    for form, expected in forms:
        async with http.post(f"{sandbox.base_url}/api/v10/oauth2/token", data=form) as resp:
            assert resp.status == expected, await resp.text()
            assert resp.headers["Cache-Control"] == "no-store", form["grant_type"]
            assert resp.headers["Pragma"] == "no-cache", form["grant_type"]
