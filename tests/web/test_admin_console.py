"""The operator console over real sockets: sign-in, sessions, CSRF, the server list, members, unlinking."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest

from config import Secret
from sandbox import Sandbox, SandboxOptions
from store import LinkedGuild, SyncPhase, SyncState
from tests.harness import Browser, browser, eventually, free_port, settings_for, started, world
from tests.store.records import a_link
from web.admin.guilds import PHASE_LABELS, sync_view
from web.admin.session import SessionKeeper

API_TOKEN = "test-api-token-" + "x" * 32
SESSION_COOKIE = "guildlink_admin"
CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    match = CSRF_FIELD.search(page)
    assert match, page
    return match.group(1)


async def get(b: Browser, path: str) -> tuple[int, str, aiohttp.ClientResponse]:
    async with b.session.get(b.web_url + path, allow_redirects=False) as response:
        return response.status, await response.text(), response


async def post(b: Browser, path: str, data: dict[str, str]) -> tuple[int, str, aiohttp.ClientResponse]:
    async with b.session.post(b.web_url + path, data=data, allow_redirects=False) as response:
        return response.status, await response.text(), response


async def sign_in(b: Browser, token: str = API_TOKEN) -> aiohttp.ClientResponse:
    """Open the sign-in form and send it with `token`, as a browser would."""
    status, page, _ = await get(b, "/admin/sign-in")
    assert status == 200, page
    _, _, response = await post(b, "/admin/sign-in", {"csrf": csrf_of(page), "token": token})
    return response


async def console_csrf(b: Browser, path: str = "/admin/") -> str:
    status, page, _ = await get(b, path)
    assert status == 200, page
    return csrf_of(page)


def set_cookies(response: aiohttp.ClientResponse) -> dict[str, Any]:
    """Each Set-Cookie of a response by name, with its attributes."""
    cookies: dict[str, Any] = {}
    for header in response.headers.getall("Set-Cookie", []):
        parsed = SimpleCookie()
        parsed.load(header)
        cookies.update(parsed)
    return cookies


def member_ids(page: str) -> list[int]:
    return [int(found) for found in re.findall(r'data-user="(\d+)"', page)]


def names_of(member: dict[str, Any]) -> list[str]:
    return [
        n for n in (member["user"]["username"], member["user"].get("global_name"), member.get("nick")) if n
    ]


def with_cookie(b: Browser, value: str) -> None:
    b.session.cookie_jar.clear()
    b.session.cookie_jar.update_cookies({SESSION_COOKIE: value}, aiohttp.client.URL(b.web_url + "/admin/"))


async def test_console_pages_send_a_browser_without_a_session_to_sign_in(
    make_sandbox, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id)
        b = w.browser
        assert (await get(b, "/admin"))[2].headers["Location"] == "/admin/"
        for path in ("/admin/", f"/admin/guilds/{guild.id}", f"/admin/guilds/{guild.id}/unlink"):
            status, _, response = await get(b, path)
            assert (status, response.headers["Location"]) == (303, "/admin/sign-in"), path
        status, body, _ = await get(b, "/admin/sync.json")
        assert status == 401 and '"signed_out"' in body
        # A form sent without a session changes nothing either.
        status, _, _ = await post(b, f"/admin/guilds/{guild.id}/unlink", {"csrf": "x"})
        assert status == 303
        link = await w.running.store.get_link(guild.id)
        assert link is not None and link.active


async def test_the_api_token_signs_in_with_an_http_only_strict_expiring_cookie(
    make_sandbox, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path, ready=False) as w:
        response = await sign_in(w.browser)
        assert (response.status, response.headers["Location"]) == (303, "/admin/")
        cookie = set_cookies(response)[SESSION_COOKIE]
        assert cookie["httponly"] and cookie["samesite"] == "Strict" and cookie["path"] == "/admin"
        assert int(cookie["max-age"]) == 3600
        assert not cookie["secure"]  # plain HTTP: a Secure cookie would never come back
        status, page, _ = await get(w.browser, "/admin/")
        assert status == 200 and 'id="servers-heading"' in page and 'id="sign-out"' in page


async def test_under_https_the_session_cookie_is_secure_and_host_prefixed(
    make_sandbox, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    settings = settings_for(sandbox, tmp_path, port=free_port(), https=True)
    async with started(settings, ready=False) as running, browser(sandbox, running) as b:
        _, _, form = await get(b, "/admin/sign-in")
        form_cookie = set_cookies(form)["__Host-guildlink_admin_sign_in"]
        assert form_cookie["secure"] and form_cookie["path"] == "/" and form_cookie["samesite"] == "Strict"
        response = await sign_in(b)
        cookies = set_cookies(response)
        assert SESSION_COOKIE not in cookies
        cookie = cookies["__Host-guildlink_admin"]
        assert cookie["secure"] and cookie["httponly"] and cookie["samesite"] == "Strict"
        assert cookie["path"] == "/" and not cookie["domain"]
        assert (await get(b, "/admin/"))[0] == 200


async def test_a_wrong_token_gets_no_session(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path, ready=False) as w:
        for wrong in ("", API_TOKEN[:-1], API_TOKEN + "y", "x" * 4000):
            response = await sign_in(w.browser, wrong)
            assert response.status == 401
            assert SESSION_COOKIE not in set_cookies(response)
        status, page, _ = await get(w.browser, "/admin/sign-in")
        assert status == 200 and 'id="sign-out"' not in page
        assert (await get(w.browser, "/admin/"))[0] == 303


async def test_sign_in_attempts_are_limited_per_client(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path, ready=False) as w:
        assert [(await sign_in(w.browser, "wrong")).status for _ in range(5)] == [401] * 5
        # Past the burst even the right token waits: the limit counts attempts, not failures.
        refused = await sign_in(w.browser)
        assert refused.status == 429 and int(refused.headers["Retry-After"]) > 0
        assert SESSION_COOKIE not in set_cookies(refused)


async def test_a_form_without_its_sessions_csrf_token_is_refused_with_403(
    make_sandbox, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id)
        async with browser(sandbox, w.running) as other:
            await sign_in(other)
            others_token = await console_csrf(other)
        b = w.browser
        await get(b, "/admin/sign-in")  # the form's own session cookie, but its token left out
        assert (await post(b, "/admin/sign-in", {"token": API_TOKEN}))[0] == 403
        assert (await get(b, "/admin/"))[0] == 303
        await sign_in(b)
        mine = await console_csrf(b)
        assert others_token != mine
        unlink = f"/admin/guilds/{guild.id}/unlink"
        for form in ({}, {"csrf": ""}, {"csrf": others_token}, {"csrf": mine[:-1]}, {"csrf": mine + "A"}):
            status, page, _ = await post(b, unlink, form)
            assert status == 403 and "This form has expired" in page, form
            assert (await post(b, "/admin/sign-out", form))[0] == 403
        link = await w.running.store.get_link(guild.id)
        assert link is not None and link.active
        assert (await get(b, "/admin/"))[0] == 200  # still signed in


async def test_an_expired_session_is_refused_and_a_used_one_is_renewed(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path, ready=False) as w:
        b, keeper, now = w.browser, SessionKeeper(Secret(API_TOKEN)), time.time()
        idle = keeper.start(signed_in=True, now=now - 2 * 3600)
        with_cookie(b, keeper.seal(keeper.touch(idle, now=now - 3601)))
        assert (await get(b, "/admin/"))[0] == 303
        # Used a minute ago, but signed in nine hours ago: over, however busy.
        old = keeper.touch(keeper.start(signed_in=True, now=now - 9 * 3600), now=now - 60)
        with_cookie(b, keeper.seal(old))
        assert (await get(b, "/admin/"))[0] == 303
        recent = keeper.touch(keeper.start(signed_in=True, now=now - 3 * 3600), now=now - 3500)
        with_cookie(b, keeper.seal(recent))
        status, _, response = await get(b, "/admin/")
        assert status == 200
        renewed = keeper.open(set_cookies(response)[SESSION_COOKIE].value)
        assert renewed is not None and renewed.id == recent.id and renewed.seen >= int(now)
        assert keeper.seconds_left(renewed) > 3500
        # The script's poll is not activity: it renews nothing.
        _, _, polled = await get(b, "/admin/sync.json")
        assert polled.status == 200 and SESSION_COOKIE not in set_cookies(polled)


async def test_a_forged_or_foreign_session_cookie_is_refused(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path, ready=False) as w:
        b = w.browser
        keeper = SessionKeeper(Secret(API_TOKEN))
        genuine = keeper.seal(keeper.start(signed_in=True))
        another_secret = SessionKeeper(Secret("another-api-token-" + "z" * 32))
        flipped = genuine[:10] + ("A" if genuine[10] != "A" else "B") + genuine[11:]
        forged = [
            another_secret.seal(another_secret.start(signed_in=True)),
            flipped,
            genuine[:-1],
            genuine + "A",
            "A" * len(genuine),
            keeper.seal(keeper.start(signed_in=False)),  # the sign-in form's session is no session
            "",
            "%00" * 40,
        ]
        for value in forged:
            with_cookie(b, value)
            assert (await get(b, "/admin/"))[0] == 303, value
        with_cookie(b, genuine)
        assert (await get(b, "/admin/"))[0] == 200


async def test_signing_out_ends_the_session_in_this_browser(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path, ready=False) as w:
        b = w.browser
        await sign_in(b)
        status, _, response = await post(b, "/admin/sign-out", {"csrf": await console_csrf(b)})
        assert (status, response.headers["Location"]) == (303, "/admin/sign-in?signed_out=1")
        cleared = set_cookies(response)[SESSION_COOKIE]
        assert cleared.value == "" and cleared["max-age"] == "0" and cleared["path"] == "/admin"
        assert (await get(b, "/admin/"))[0] == 303
        assert 'id="signed-out"' in (await get(b, "/admin/sign-in?signed_out=1"))[1]


async def test_a_session_outlives_a_restart_because_no_process_keeps_it(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    jar = aiohttp.CookieJar(unsafe=True)
    first = settings_for(sandbox, tmp_path, port=free_port())
    async with started(first, ready=False) as running, browser(sandbox, running, jar=jar) as b:
        await sign_in(b)
    second = settings_for(sandbox, tmp_path, port=free_port())
    async with started(second, ready=False) as running, browser(sandbox, running, jar=jar) as b:
        assert (await get(b, "/admin/"))[0] == 200


async def test_without_an_api_token_the_console_is_off_and_says_how_to_turn_it_on(
    make_sandbox, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path, ready=False, env={"API_TOKEN": ""}) as w:
        for path in ("/admin/", "/admin/sign-in", "/admin/sync.json"):
            status, page, _ = await get(w.browser, path)
            assert status == 503 and 'id="console-off"' in page and "API_TOKEN" in page, path
        status, _, _ = await post(w.browser, "/admin/sign-in", {"token": "anything"})
        assert status == 503


async def test_the_main_apps_security_headers_cover_the_console(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    settings = settings_for(sandbox, tmp_path, port=free_port(), https=True)
    async with started(settings, ready=False) as running, browser(sandbox, running) as b:
        await sign_in(b)
        for path, expected in (
            ("/admin/sign-in", 303),
            ("/admin/", 200),
            ("/admin/sync.json", 200),
            ("/admin/guilds/1", 404),
            ("/admin/no-such-page", 404),
            ("/static/admin.js", 200),
        ):
            status, _, response = await get(b, path)
            assert status == expected, path
            headers = response.headers
            assert headers["Content-Security-Policy"].startswith("default-src 'none'; script-src 'self'"), (
                path
            )
            assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store", path
            assert headers["Strict-Transport-Security"] == "max-age=31536000", path
            assert headers["Server"] == "guildlink", path


async def test_the_list_shows_each_server_with_its_sync_and_the_json_the_bars_poll(
    make_sandbox, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=2, members=30))
    async with world(sandbox, tmp_path) as w:
        guilds = sandbox.managed_guilds()[:2]
        for guild in guilds:
            await w.link_and_sync(guild.id)
        await sign_in(w.browser)
        status, page, _ = await get(w.browser, "/admin/")
        assert status == 200
        for guild in guilds:
            assert f'data-guild="{guild.id}"' in page
            assert f">{sandbox.guild(guild.id).member_count}</td>" in page
        # Names are text: the guild called <b>Bold</b> is escaped, never markup.
        assert "<b>Bold</b>" not in page and "&lt;b&gt;Bold&lt;/b&gt;" in page
        status, body, _ = await get(w.browser, "/admin/sync.json")
        views = {view["id"]: view for view in json.loads(body)["guilds"]}
        for guild in guilds:
            view = views[str(guild.id)]
            stored = sandbox.guild(guild.id).member_count
            assert (view["state"], view["members_stored"], view["bar_value"]) == ("synced", stored, 1)


async def test_members_are_paged_by_user_id_and_searched_literally(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=120))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id)
        await sign_in(w.browser)
        everyone = sorted(int(m["user"]["id"]) for m in sandbox.members(guild.id))
        seen: list[int] = []
        path = f"/admin/guilds/{guild.id}"
        while path:
            status, page, _ = await get(w.browser, path)
            assert status == 200
            seen += member_ids(page)
            next_link = re.search(r'id="next-page" href="([^"]+)"', page)
            path = next_link.group(1).replace("&amp;", "&") if next_link else ""
        assert seen == everyone and len(everyone) > 100

        def matching(text: str) -> list[int]:
            return sorted(
                int(m["user"]["id"])
                for m in sandbox.members(guild.id)
                if any(text.lower() in name.lower() for name in names_of(m))
            )

        for text in ("_", "HIRO", "zoë", "%", "\\", "o'b"):
            status, page, _ = await get(w.browser, f"/admin/guilds/{guild.id}?q={quote(text, safe='')}")
            assert status == 200
            assert member_ids(page) == matching(text)[:50], text
        assert matching("_") and matching("%") == []
        status, _, _ = await get(w.browser, f"/admin/guilds/{guild.id}?q={'x' * 101}")
        assert status == 400


async def test_unlinking_asks_first_then_the_bot_leaves_and_members_are_deleted(
    make_sandbox, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=20))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id)
        b = w.browser
        await sign_in(b)
        status, page, _ = await get(b, f"/admin/guilds/{guild.id}/unlink")
        assert status == 200 and 'id="confirm-unlink"' in page
        # Asking is not doing.
        link = await w.running.store.get_link(guild.id)
        assert link is not None and link.active and guild.id in sandbox.bot_guild_ids()
        status, _, response = await post(b, f"/admin/guilds/{guild.id}/unlink", {"csrf": csrf_of(page)})
        assert (status, response.headers["Location"]) == (303, f"/admin/?unlinked={guild.id}")
        link = await w.running.store.get_link(guild.id)
        assert link is not None and not link.active
        assert await w.running.store.count_members(guild.id) == 0
        assert guild.id not in sandbox.bot_guild_ids()
        status, page, _ = await get(b, f"/admin/?unlinked={guild.id}")
        assert 'id="unlinked-notice"' in page and f'href="/admin/guilds/{guild.id}/unlink"' not in page


async def test_a_server_waiting_for_discords_member_list_window_shows_waiting_with_the_countdown(
    make_sandbox, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=30))
    guild = sandbox.managed_guilds()[0]
    async with world(sandbox, tmp_path) as w:
        await w.link_and_sync(guild.id)
        # Linked again at once: the resync waits out the 30 s Discord allows between whole member lists.
        status, page = await w.browser.link_guild(guild.id)
        assert status == 200, page

        async def waiting() -> bool:
            sync = await w.running.store.get_sync_state(guild.id)
            return sync is not None and sync.phase is SyncPhase.WAITING

        await eventually(waiting, within=10)
        await sign_in(w.browser)
        status, page, _ = await get(w.browser, "/admin/")
        assert status == 200, page
        assert "Waiting for Discord" in page and re.search(r"member-list window opens in \d+ s", page)
        status, body, _ = await get(w.browser, "/admin/sync.json")
        assert status == 200, body
        view = json.loads(body)["guilds"][0]
        assert view["state"] == "waiting" and view["label"] == "Waiting for Discord"
        countdown = re.fullmatch(r"member-list window opens in (\d+) s", view["detail"])
        assert countdown is not None and 0 < int(countdown.group(1)) <= 30, view


@pytest.mark.parametrize("phase", list(SyncPhase))
def test_every_sync_phase_has_a_label_of_its_own(phase: SyncPhase) -> None:
    now = datetime.now(UTC)
    sync = SyncState(1, phase, members_stored=3, member_count=5, waiting_until=now + timedelta(seconds=12))
    view = sync_view(LinkedGuild(a_link(1), sync), now)
    assert view["label"] == PHASE_LABELS[phase.value] and view["label"]
    assert len(set(PHASE_LABELS.values())) == len(PHASE_LABELS)
    if phase is SyncPhase.WAITING:
        assert view["detail"] == "member-list window opens in 12 s"
