"""Add/Remove Guild Member Role as Discord answers them: 204s, refusals, the role hierarchy, silent successes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from multidict import CIMultiDictProxy

from sandbox import Sandbox
from tests.sandbox.discord_schemas import validate_response

ROLE_ROUTE = "PUT /guilds/{guild_id}/members/{user_id}/roles/{role_id}"


@dataclass
class Answer:
    """A REST answer: status, JSON body (None for 204) and headers."""

    status: int
    body: Any
    headers: CIMultiDictProxy[str]


@dataclass
class Guild:
    """A guild the bot is in, with Manage Roles, and the ids a test writes with."""

    id: int
    member_id: int
    roles: dict[str, dict[str, Any]]  # Discord role objects by name

    def role_id(self, name: str) -> int:
        return int(self.roles[name]["id"])


class Bot:
    """The bot's REST client for role writes."""

    def __init__(self, http: aiohttp.ClientSession, sandbox: Sandbox, auth: str | None = None) -> None:
        self.http, self.sandbox = http, sandbox
        self.auth = f"Bot {sandbox.bot_token}" if auth is None else auth

    async def write(
        self, method: str, guild_id: int, user_id: int | str, role_id: int | str, *, reason: str | None = None
    ) -> Answer:
        url = f"{self.sandbox.base_url}/api/v10/guilds/{guild_id}/members/{user_id}/roles/{role_id}"
        headers = {"Authorization": self.auth} if self.auth else {}
        if reason is not None:
            headers["X-Audit-Log-Reason"] = quote(reason)
        async with self.http.request(method, url, headers=headers) as resp:
            body = None if resp.status == 204 else await resp.json()
            return Answer(resp.status, body, resp.headers)

    async def add(self, guild: Guild, role: str, **kw: Any) -> Answer:
        return await self.write("PUT", guild.id, guild.member_id, guild.role_id(role), **kw)

    async def remove(self, guild: Guild, role: str, **kw: Any) -> Answer:
        return await self.write("DELETE", guild.id, guild.member_id, guild.role_id(role), **kw)

    async def roles_of(self, guild_id: int, user_id: int) -> list[str]:
        url = f"{self.sandbox.base_url}/api/v10/guilds/{guild_id}/members/{user_id}"
        async with self.http.get(url, headers={"Authorization": self.auth}) as resp:
            roles: list[str] = (await resp.json())["roles"]
            return roles


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def bot(http: aiohttp.ClientSession, sandbox: Sandbox) -> Bot:
    return Bot(http, sandbox)


async def joined(bot: Bot, index: int = 0, *, manage_roles: bool = True) -> Guild:
    """Put the bot in a managed guild (its role on top, with or without Manage Roles) and pick a member."""
    sandbox = bot.sandbox
    guild_id = sandbox.managed_guilds()[index].id
    sandbox.add_bot(guild_id)
    sandbox.set_bot_permissions(guild_id, manage_roles=manage_roles)
    url = f"{sandbox.base_url}/api/v10/guilds/{guild_id}"
    async with bot.http.get(url, headers={"Authorization": bot.auth}) as resp:
        roles = {r["name"]: r for r in (await resp.json())["roles"]}
    member = next(
        m
        for m in sandbox.members(guild_id)
        if not m["user"].get("bot") and m["user"]["id"] != str(sandbox.user_id)
    )
    return Guild(guild_id, int(member["user"]["id"]), roles)


def refused(answer: Answer, status: int, code: int) -> bool:
    """Whether the answer is Discord's error with this status and code, in the shape Discord's spec gives."""
    validate_response(answer.body, ROLE_ROUTE, "4XX")
    return (answer.status, answer.body["code"]) == (status, code)


async def test_adding_and_removing_a_role_answer_204_and_change_the_member(bot: Bot) -> None:
    guild = await joined(bot)
    artists = guild.roles["🎨 Artists"]["id"]
    for _ in range(2):  # adding a role held is still 204, and holds it once
        answer = await bot.add(guild, "🎨 Artists")
        assert (answer.status, answer.body) == (204, None)
        assert (await bot.roles_of(guild.id, guild.member_id)).count(artists) == 1
    for _ in range(2):  # so is removing one not held
        answer = await bot.remove(guild, "🎨 Artists")
        assert (answer.status, answer.body) == (204, None)
        assert artists not in await bot.roles_of(guild.id, guild.member_id)
    writes = bot.sandbox.recent_role_writes(guild.id)
    assert [(w.method, w.status, w.changed) for w in writes] == [
        ("PUT", 204, True),
        ("PUT", 204, False),
        ("DELETE", 204, True),
        ("DELETE", 204, False),
    ]


async def test_the_audit_log_reason_is_url_decoded_and_kept_with_the_write(bot: Bot) -> None:
    guild = await joined(bot)
    reason = "linked: Zoë 🌸 & co / 100%"
    assert (await bot.add(guild, "Members", reason=reason)).status == 204
    assert (await bot.remove(guild, "Members")).status == 204
    writes = bot.sandbox.recent_role_writes(guild.id)
    assert [(w.user_id, w.role_id, w.reason) for w in writes] == [
        (guild.member_id, guild.role_id("Members"), reason),
        (guild.member_id, guild.role_id("Members"), None),
    ]


async def test_only_the_bot_token_may_write_roles(bot: Bot) -> None:
    guild = await joined(bot)
    for auth in ("", "Bot not-the-token", "Bearer not-a-token"):
        answer = await Bot(bot.http, bot.sandbox, auth).add(guild, "Members")
        assert refused(answer, 401, 0)
    assert bot.sandbox.recent_role_writes(guild.id) == []


async def test_a_guild_that_does_not_exist_is_unknown_and_one_without_the_bot_is_missing_access(
    bot: Bot,
) -> None:
    guild = await joined(bot)
    assert refused(await bot.write("PUT", 12345, guild.member_id, guild.role_id("Members")), 404, 10004)
    other = bot.sandbox.managed_guilds()[1].id
    answer = await bot.write("DELETE", other, guild.member_id, guild.role_id("Members"))
    assert refused(answer, 403, 50001)


async def test_an_unknown_member_is_10007_and_an_unknown_role_10011(bot: Bot) -> None:
    guild = await joined(bot)
    for user in (guild.member_id + 1, "not-a-snowflake"):
        assert refused(await bot.write("PUT", guild.id, user, guild.role_id("Members")), 404, 10007)
    for role in (guild.role_id("Members") + 99, "not-a-snowflake"):
        assert refused(await bot.write("DELETE", guild.id, guild.member_id, role), 404, 10011)


async def test_without_manage_roles_every_write_is_missing_permissions(bot: Bot) -> None:
    guild = await joined(bot, manage_roles=False)
    assert refused(await bot.add(guild, "Members"), 403, 50013)
    bot.sandbox.set_bot_permissions(guild.id, administrator=True)
    assert (await bot.add(guild, "Members")).status == 204
    bot.sandbox.set_bot_permissions(guild.id, administrator=False, manage_roles=True)
    assert (await bot.remove(guild, "Members")).status == 204
    bot.sandbox.set_bot_permissions(guild.id, manage_roles=False)
    assert refused(await bot.remove(guild, "Members"), 403, 50013)
    assert guild.roles["Members"]["id"] not in await bot.roles_of(guild.id, guild.member_id)


async def test_everyone_and_managed_roles_are_never_written(bot: Bot) -> None:
    guild = await joined(bot)
    bot.sandbox.set_bot_permissions(guild.id, administrator=True)
    everyone = guild.id  # @everyone's id is the guild's
    assert refused(await bot.write("PUT", guild.id, guild.member_id, everyone), 403, 50013)
    own = bot.sandbox.bot_role(guild.id).id
    assert refused(await bot.write("PUT", guild.id, guild.member_id, own), 403, 50013)


async def test_a_role_at_or_above_the_bots_highest_is_missing_permissions(bot: Bot) -> None:
    guild = await joined(bot)
    sandbox = bot.sandbox
    position = sandbox.move_bot_role(guild.id, below=guild.role_id("🎨 Artists"))
    assert position == guild.roles["🎨 Artists"]["position"]  # the bot's role took its place, it moved up one
    assert refused(await bot.add(guild, "🎨 Artists"), 403, 50013)
    assert refused(await bot.add(guild, "Admin"), 403, 50013)
    assert (await bot.add(guild, "Members")).status == 204
    sandbox.move_bot_role(guild.id, position=1)  # the lowest a role can be: nothing is below it
    assert refused(await bot.remove(guild, "Members"), 403, 50013)
    sandbox.move_bot_role(guild.id, position=99)  # back on top
    assert (await bot.remove(guild, "Members")).status == 204
    assert (await bot.add(guild, "Admin")).status == 204
