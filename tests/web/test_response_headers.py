"""Headers on every kind of response: pages, redirects, static files, errors and the JSON API."""

from __future__ import annotations

from pathlib import Path

from multidict import CIMultiDictProxy

from sandbox import Sandbox, SandboxOptions
from tests.harness import Browser, browser, free_port, settings_for, started, world

# A page, a redirect, a static file, a 404 page, a 405 page, a JSON 401.
REQUESTS = [
    ("GET", "/", 200),
    ("GET", "/link", 302),
    ("GET", "/static/style.css", 200),
    ("GET", "/no-such-page", 404),
    ("POST", "/", 405),
    ("GET", "/api/guilds/1/members", 401),
]


async def _headers_of_every_kind(b: Browser) -> list[CIMultiDictProxy[str]]:
    headers = []
    for method, path, status in REQUESTS:
        async with b.session.request(method, b.web_url + path, allow_redirects=False) as response:
            assert response.status == status, (method, path)
            headers.append(response.headers)
    return headers


async def test_https_responses_carry_hsts_without_include_subdomains(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    settings = settings_for(sandbox, tmp_path, port=free_port(), https=True)
    async with started(settings, ready=False) as running, browser(sandbox, running) as b:
        assert running.web_url.startswith("https://")
        for headers in await _headers_of_every_kind(b):
            assert headers.getall("Strict-Transport-Security") == ["max-age=31536000"]


async def test_plain_http_responses_carry_no_hsts(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path, ready=False) as w:
        assert w.running.web_url.startswith("http://")
        for headers in await _headers_of_every_kind(w.browser):
            assert "Strict-Transport-Security" not in headers


async def test_server_header_names_guildlink_without_versions(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path, ready=False) as w:
        for headers in await _headers_of_every_kind(w.browser):
            assert headers.getall("Server") == ["guildlink"]


async def test_behind_a_tls_terminating_proxy_plain_http_is_served_with_secure_cookies_and_hsts(
    make_sandbox, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    # The redirect URI is https on a public host (the proxy's); the proxy is this machine, and we serve it
    # plain HTTP on WEB_PORT.
    port = free_port()
    proxy = {
        "TRUSTED_PROXIES": "127.0.0.1",
        "DISCORD_REDIRECT_URI": "https://links.example.com/authorize-discord",
        "WEB_PORT": str(port),
    }
    settings = settings_for(sandbox, tmp_path, port=port, https=True, env=proxy)
    async with started(settings, ready=False) as running, browser(sandbox, running) as b:
        assert running.web_url.startswith("http://")
        async with b.session.get(running.web_url + "/link", allow_redirects=False) as response:
            assert response.status == 302
            assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
            cookie = response.headers["Set-Cookie"]
        assert cookie.startswith("__Host-") and "Secure" in cookie


async def test_a_405_names_the_methods_the_resource_takes(make_sandbox, tmp_path: Path) -> None:
    """RFC 9110 §15.5.6: a page's 405 and the API's JSON 405 alike carry Allow."""
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path, ready=False) as w:
        token = w.running.settings.api_token
        assert token is not None
        auth = {"Authorization": f"Bearer {token.reveal()}"}
        for method, path, headers, allowed in (
            ("POST", "/", {}, {"GET", "HEAD"}),
            ("PUT", "/api/guilds/1", auth, {"GET", "HEAD", "DELETE"}),
        ):
            async with w.browser.session.request(
                method, w.browser.web_url + path, headers=headers
            ) as response:
                assert response.status == 405, (method, path)
                assert {m.strip() for m in response.headers["Allow"].split(",")} == allowed, (method, path)
