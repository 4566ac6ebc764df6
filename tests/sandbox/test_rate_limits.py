"""Discord's REST rate limits in the sandbox: the role routes' bucket per guild, the global limit, invalid requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from bot.discord_internals import add_member_role, remove_member_role
from sandbox import Sandbox, SandboxOptions
from sandbox.ratelimits import RateLimits
from tests.conftest import MakeSandbox
from tests.sandbox.discord_schemas import validate_response
from tests.sandbox.helpers import make_client, running
from tests.sandbox.role_helpers import ROLE_ROUTE, Answer, Bot, joined

Point = Callable[[Sandbox], None]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def bucket_of(answer: Answer) -> tuple[str, str, float]:
    """An answer's X-RateLimit-Limit, -Remaining and -Reset-After."""
    h = answer.headers
    return h["X-RateLimit-Limit"], h["X-RateLimit-Remaining"], float(h["X-RateLimit-Reset-After"])


async def test_role_writes_share_a_bucket_per_guild_and_a_429_says_how_long_to_wait(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(SandboxOptions(role_write_limit=3, role_write_window=2.0))
    bot = Bot(http, sandbox)
    guild = await joined(bot)
    answers = [
        await bot.add(guild, "Members"),
        await bot.write("PUT", guild.id, guild.member_id + 1, guild.role_id("Members")),  # a 404 counts too
        await bot.remove(guild, "Members"),
    ]
    assert [a.status for a in answers] == [204, 404, 204]
    assert [bucket_of(a)[:2] for a in answers] == [("3", "2"), ("3", "1"), ("3", "0")]
    assert all(0 < bucket_of(a)[2] <= 2.0 for a in answers)
    assert len({a.headers["X-RateLimit-Bucket"] for a in answers}) == 1  # PUT and DELETE: one bucket
    assert all(float(a.headers["X-RateLimit-Reset"]) > 1e9 for a in answers)  # epoch seconds

    limited = await bot.add(guild, "Members")
    assert limited.status == 429
    validate_response(limited.body, ROLE_ROUTE, "429")
    assert limited.body["message"] == "You are being rate limited."
    assert limited.body["global"] is False
    retry_after = limited.body["retry_after"]
    assert 0 < retry_after <= 2.0
    assert limited.headers["Retry-After"] in ("1", "2")
    assert bucket_of(limited) == ("3", "0", retry_after)
    assert limited.headers["X-RateLimit-Scope"] == "user"
    assert limited.headers["X-RateLimit-Bucket"] == answers[0].headers["X-RateLimit-Bucket"]
    assert "X-RateLimit-Global" not in limited.headers
    assert guild.roles["Members"]["id"] not in await bot.roles_of(guild.id, guild.member_id)

    # Another guild's bucket is its own (guild_id is the route's major parameter), under the same hash.
    other = await joined(bot, 1)
    elsewhere = await bot.add(other, "Members")
    assert (elsewhere.status, bucket_of(elsewhere)[:2]) == (204, ("3", "2"))
    assert elsewhere.headers["X-RateLimit-Bucket"] == answers[0].headers["X-RateLimit-Bucket"]

    await asyncio.sleep(retry_after)  # what the 429 asks for, and all it asks for
    again = await bot.add(guild, "Members")
    assert (again.status, bucket_of(again)[:2]) == (204, ("3", "2"))
    assert [w.status for w in sandbox.recent_role_writes(guild.id)] == [204, 404, 204, 429, 204]


async def test_the_global_limit_counts_every_route_of_the_bot_token(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(SandboxOptions(global_rate_limit=4, global_rate_window=2.0))
    bot = Bot(http, sandbox)
    guild = await joined(bot)  # one GET /guilds/{id}

    async def me() -> int:
        async with http.get(
            f"{sandbox.base_url}/api/v10/users/@me", headers={"Authorization": bot.auth}
        ) as r:
            return r.status

    assert [await me(), await me()] == [200, 200]
    assert (await bot.add(guild, "Members")).status == 204  # the fourth request of the window
    async with http.get(f"{sandbox.base_url}/api/v10/gateway") as resp:
        assert resp.status == 200  # not the bot's token: not the bot's global limit
    limited = await bot.add(guild, "🎨 Artists")
    assert limited.status == 429
    validate_response(limited.body, ROLE_ROUTE, "429")
    assert limited.body["global"] is True
    assert limited.headers["X-RateLimit-Global"] == "true"
    assert limited.headers["X-RateLimit-Scope"] == "global"
    assert int(limited.headers["Retry-After"]) >= 1
    assert "X-RateLimit-Bucket" not in limited.headers
    assert await me() == 429
    retry_after = limited.body["retry_after"]
    assert 0 < retry_after <= 2.0
    await asyncio.sleep(retry_after)
    assert (await bot.add(guild, "🎨 Artists")).status == 204
    window = sandbox.rate_limits.counters()["global"]
    assert (window["limit"], window["remaining"], window["limited"]) == (4, 3, 2)


async def test_invalid_requests_are_counted_and_past_the_limit_the_client_is_banned(
    make_sandbox: MakeSandbox, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(SandboxOptions(invalid_request_limit=4))
    bot = Bot(http, sandbox)
    guild = await joined(bot, manage_roles=False)
    assert (await Bot(http, sandbox, "Bot not-the-token").add(guild, "Members")).status == 401
    assert (await bot.add(guild, "Members")).status == 403
    assert (await bot.write("PUT", guild.id, 1, guild.role_id("Members"))).status == 403  # 50013 first
    sandbox.set_bot_permissions(guild.id, manage_roles=True)
    assert (await bot.write("PUT", guild.id, 1, guild.role_id("Members"))).status == 404  # not counted
    assert sandbox.rate_limits.invalid_requests() == 3
    sandbox.fail_next("GET", f"/api/v10/guilds/{guild.id}", status=429, retry_after=0.1)
    async with http.get(
        f"{sandbox.base_url}/api/v10/guilds/{guild.id}", headers={"Authorization": bot.auth}
    ) as r:
        assert r.status == 429
    assert sandbox.rate_limits.invalid_requests() == 4
    banned = await bot.add(guild, "Members")  # even a request that would be valid
    assert banned.status == 429
    assert banned.headers["Content-Type"].startswith("text/html")
    assert "Via" not in banned.headers and "X-RateLimit-Bucket" not in banned.headers
    assert sandbox.rate_limits.counters()["banned"] is True
    (member,) = (m for m in sandbox.members(guild.id) if m["user"]["id"] == str(guild.member_id))
    assert member["roles"] == []


def test_the_invalid_request_window_slides_and_shared_429s_do_not_count() -> None:
    now = [1000.0]
    options = SandboxOptions(invalid_request_limit=3, invalid_request_window=600.0)
    limits = RateLimits(options, clock=lambda: now[0])
    for status, scope in ((401, None), (403, None), (429, "shared"), (404, None), (429, "user")):
        limits.note_answer(status, scope)
        now[0] += 100
    # The 401, the 403 and the user-scoped 429; not the shared 429, not the 404.
    assert (limits.invalid_requests(), limits.banned()) == (3, True)
    now[0] = 1000.0 + 600.0  # the 401 of t=1000 has left the window
    assert (limits.invalid_requests(), limits.banned()) == (2, False)


async def test_discord_py_waits_out_the_role_bucket_from_its_headers(
    make_sandbox: MakeSandbox, point_discord_py: Point, http: aiohttp.ClientSession
) -> None:
    sandbox = await make_sandbox(SandboxOptions(role_write_limit=2, role_write_window=0.5))
    guild = await joined(Bot(http, sandbox))
    point_discord_py(sandbox)
    client = make_client()
    async with running(client, sandbox):
        names = ["Members", "🎨 Artists", '<b>Bold</b> & "Quoted"']
        for name in names:
            await add_member_role(client, guild.id, guild.member_id, guild.role_id(name), reason=name)
        for name in names:
            await remove_member_role(client, guild.id, guild.member_id, guild.role_id(name), reason=None)
    writes = sandbox.recent_role_writes(guild.id)
    # Remaining 0 and Reset-After are enough: discord.py waits before the third write, never meeting a 429.
    assert [(w.method, w.status, w.changed) for w in writes] == [("PUT", 204, True)] * 3 + [
        ("DELETE", 204, True)
    ] * 3
