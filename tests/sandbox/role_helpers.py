"""Helpers for the role-write tests: the bot's REST client for Add/Remove Guild Member Role, a joined guild."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
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
            if resp.status == 204:
                body = None
            elif resp.content_type == "application/json":
                body = await resp.json()
            else:
                body = await resp.text()  # Cloudflare's ban page
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


async def joined(bot: Bot, index: int = 0, *, manage_roles: bool = True) -> Guild:
    """Put the bot in a managed guild (its role on top, with or without Manage Roles); pick a member with no roles."""
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
    member_id = int(member["user"]["id"])
    sandbox.update_member(guild_id, member_id, roles=[])  # so that every test starts from a member with none
    return Guild(guild_id, member_id, roles)


def refused(answer: Answer, status: int, code: int) -> bool:
    """Whether the answer is Discord's error with this status and code, in the shape Discord's spec gives."""
    validate_response(answer.body, ROLE_ROUTE, "4XX")
    return (answer.status, answer.body["code"]) == (status, code)
