"""Add/Remove Guild Member Role as Discord answers them: 204s, refusals, the role hierarchy, silent successes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import aiohttp
import discord
import pytest

from sandbox import Sandbox
from tests.sandbox.helpers import EventLog, make_client, running
from tests.sandbox.role_helpers import Bot, joined, refused

Point = Callable[[Sandbox], None]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def bot(http: aiohttp.ClientSession, sandbox: Sandbox) -> Bot:
    return Bot(http, sandbox)


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


async def test_an_injected_silent_success_answers_204_and_changes_nothing(bot: Bot) -> None:
    guild = await joined(bot)
    sandbox = bot.sandbox
    sandbox.silence_role_writes(guild.id, times=2)
    # A write Discord refuses is refused as ever, and leaves the silent successes for the next ones.
    assert refused(await bot.write("PUT", guild.id, guild.member_id, guild.id + 99), 404, 10011)
    for _ in range(2):
        answer = await bot.add(guild, "Members", reason="silenced")
        assert (answer.status, answer.body) == (204, None)
        assert guild.roles["Members"]["id"] not in await bot.roles_of(guild.id, guild.member_id)
    assert (await bot.add(guild, "Members")).status == 204
    assert guild.roles["Members"]["id"] in await bot.roles_of(guild.id, guild.member_id)
    writes = sandbox.recent_role_writes(guild.id)
    assert [(w.status, w.code, w.changed, w.silent) for w in writes] == [
        (404, 10011, False, False),
        (204, None, False, True),
        (204, None, False, True),
        (204, None, True, False),
    ]


async def test_a_real_discord_py_client_sees_member_updates_after_changes_and_none_after_no_ops(
    bot: Bot, point_discord_py: Point
) -> None:
    sandbox = bot.sandbox
    guild = await joined(bot)
    sandbox.silence_role_writes(guild.id, times=1)
    point_discord_py(sandbox)
    client = make_client()
    log = EventLog(client, "member_update")
    async with running(client, sandbox):
        cached = client.get_guild(guild.id)
        member = cached.get_member(guild.member_id) if cached is not None else None
        assert member is not None
        members = discord.Object(guild.role_id("Members"))
        artists = discord.Object(guild.role_id("🎨 Artists"))
        await member.add_roles(members, reason="silenced: 204 and nothing")
        await member.add_roles(artists, reason="linked")
        _, after = await log.wait("member_update")
        assert [r.id for r in after.roles[1:]] == [artists.id]
        await member.add_roles(artists)  # held already: 204, no event
        await member.remove_roles(members)  # not held: 204, no event
        await member.remove_roles(artists, reason="unlinked")
        await log.wait("member_update", lambda _, after: artists.id not in [r.id for r in after.roles])
        # The gateway keeps order: an event for a no-op or the silent write would have come before this one.
        assert len(log.events["member_update"]) == 2
    writes = sandbox.recent_role_writes(guild.id)
    assert [(w.method, w.status, w.changed, w.silent, w.reason) for w in writes] == [
        ("PUT", 204, False, True, "silenced: 204 and nothing"),
        ("PUT", 204, True, False, "linked"),
        ("PUT", 204, False, False, None),
        ("DELETE", 204, False, False, None),
        ("DELETE", 204, True, False, "unlinked"),
    ]


async def test_moving_the_bots_role_reaches_discord_py_as_role_updates(
    bot: Bot, point_discord_py: Point
) -> None:
    sandbox = bot.sandbox
    guild = await joined(bot)
    point_discord_py(sandbox)
    client = make_client()
    log = EventLog(client, "guild_role_update")
    async with running(client, sandbox):
        cached = client.get_guild(guild.id)
        assert cached is not None and cached.me.top_role.id == sandbox.bot_role(guild.id).id
        assert cached.me.top_role.position == len(cached.roles) - 1
        sandbox.move_bot_role(guild.id, below=guild.role_id("Members"))
        await log.wait("guild_role_update", lambda _, after: after.id == sandbox.bot_role(guild.id).id)
        await log.wait("guild_role_update", lambda _, after: after.id == guild.role_id("Admin"))
        assert cached.me.top_role.position == 1
        members = cached.get_role(guild.role_id("Members"))
        assert members is not None and cached.me.top_role < members
        sandbox.set_bot_permissions(guild.id, manage_roles=False)
        await log.wait(
            "guild_role_update",
            lambda before, after: before.permissions.manage_roles and not after.permissions.manage_roles,
        )
        assert not cached.me.guild_permissions.manage_roles
