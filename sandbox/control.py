"""`/_sandbox/...`: the sandbox's Python controls over HTTP, for scripts and load tests."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import payloads
from .errors import SandboxError
from .rest import json_response

if TYPE_CHECKING:
    from .app import Sandbox

log = logging.getLogger(__name__)

_UNSET_KEYS = ("nick", "roles", "username", "global_name", "avatar")
# Settings that PATCH /_sandbox/settings changes, with their types.
_SETTINGS: dict[str, type] = {
    "requires_code_grant": bool,
    "members_intent_enabled": bool,
    "member_list_cooldown": float,
    "role_write_limit": int,
    "role_write_window": float,
    "global_rate_limit": int,
    "global_rate_window": float,
    "invalid_request_limit": int,
    "invalid_request_window": float,
}
# How many events of a storm are made between turns of the gateway's writers.
STORM_STREAM_EVERY = 100


def _error(message: str, status: int = 400) -> web.Response:
    return json_response({"error": message}, status)


class ControlHandlers:
    """aiohttp handlers for /_sandbox/..."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def routes(self) -> list[web.RouteDef]:
        """The control routes."""
        return [
            web.get("/_sandbox/state", self.state),
            web.post("/_sandbox/authorize", self.authorize),
            web.patch("/_sandbox/settings", self.settings),
            web.get("/_sandbox/guilds/{guild_id}/members", self.members),
            web.post("/_sandbox/guilds/{guild_id}/members", self.add_member),
            web.patch("/_sandbox/guilds/{guild_id}/members/{user_id}", self.update_member),
            web.delete("/_sandbox/guilds/{guild_id}/members/{user_id}", self.remove_member),
            web.post("/_sandbox/guilds/{guild_id}/storm", self.storm),
            web.put("/_sandbox/guilds/{guild_id}/bot", self.add_bot),
            web.delete("/_sandbox/guilds/{guild_id}/bot", self.kick_bot),
            web.post("/_sandbox/guilds/{guild_id}/unavailable", self.unavailable),
            web.post("/_sandbox/guilds/{guild_id}/tamper-redirect", self.tamper),
            web.patch("/_sandbox/guilds/{guild_id}/bot-role", self.bot_role),
            web.get("/_sandbox/guilds/{guild_id}/role-writes", self.role_writes),
            web.post("/_sandbox/guilds/{guild_id}/silent-role-writes", self.silent_role_writes),
            web.get("/_sandbox/rate-limits", self.rate_limits),
            web.post("/_sandbox/rate-limits/reset", self.reset_rate_limits),
            web.post("/_sandbox/fail", self.fail),
            web.post("/_sandbox/gateway/drop", self.drop),
            web.post("/_sandbox/gateway/reconnect", self.reconnect),
            web.post("/_sandbox/gateway/invalid-session", self.invalid_session),
        ]

    @staticmethod
    async def _body(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        data = await request.json()
        if not isinstance(data, dict):
            raise SandboxError("body must be a JSON object")
        return data

    @staticmethod
    def _ids(request: web.Request) -> tuple[int, int | None]:
        guild_id = int(request.match_info["guild_id"])
        user = request.match_info.get("user_id")
        return guild_id, int(user) if user is not None else None

    async def state(self, request: web.Request) -> web.Response:
        """Everything a script needs to know: application, guilds, settings."""
        sb = self.sandbox
        return json_response(
            {
                "base_url": sb.base_url,
                "client_id": str(sb.client_id),
                "user_id": str(sb.user_id),
                "guilds": [
                    {"id": str(g.id), "name": g.name, "member_count": g.member_count}
                    for g in sb.managed_guilds()
                ],
                "bot_guild_ids": sorted(str(g) for g in sb.bot_guild_ids()),
                "settings": {key: getattr(sb.options, key) for key in _SETTINGS},
            }
        )

    async def authorize(self, request: web.Request) -> web.Response:
        """What clicking Authorize (or, with "deny": true, Cancel) would redirect to."""
        try:
            body = await self._body(request)
            deny = bool(body.pop("deny", False))
            raw_guild = body.pop("guild_id", None)
            guild_id = int(raw_guild) if raw_guild not in (None, "") else None
            query = {k: str(v) for k, v in body.items()}
            if guild_id is not None and "disable_guild_select" in query:
                query["guild_id"] = str(guild_id)
            location = self.sandbox.authorize(query, guild_id, deny=deny)
        except (SandboxError, ValueError) as exc:
            return _error(str(exc))
        return json_response({"location": location})

    async def settings(self, request: web.Request) -> web.Response:
        """Change run-time settings: the app's switches, the member-list cooldown, the REST rate limits."""
        body = await self._body(request)
        opts = self.sandbox.options
        try:
            changes = {key: kind(body[key]) for key, kind in _SETTINGS.items() if key in body}
        except (TypeError, ValueError):
            return _error(f"settings are {', '.join(f'{k} ({t.__name__})' for k, t in _SETTINGS.items())}")
        for key, value in changes.items():
            setattr(opts, key, value)
        return await self.state(request)

    async def members(self, request: web.Request) -> web.Response:
        """Every member of a guild, as the REST API would return them."""
        guild_id, _ = self._ids(request)
        try:
            return json_response(self.sandbox.members(guild_id))
        except SandboxError as exc:
            return _error(str(exc), 404)

    async def add_member(self, request: web.Request) -> web.Response:
        """A member joins."""
        guild_id, _ = self._ids(request)
        body = await self._body(request)
        try:
            uid = self.sandbox.add_member(guild_id, username=body.get("username"), bot=bool(body.get("bot")))
        except SandboxError as exc:
            return _error(str(exc), 404)
        return json_response({"user_id": str(uid)})

    async def update_member(self, request: web.Request) -> web.Response:
        """A member changes (only the keys given)."""
        guild_id, user_id = self._ids(request)
        assert user_id is not None
        body = await self._body(request)
        changes: dict[str, Any] = {k: body[k] for k in _UNSET_KEYS if k in body}
        if changes.get("roles") is not None:
            changes["roles"] = [int(r) for r in changes["roles"]]
        try:
            self.sandbox.update_member(guild_id, user_id, **changes)
        except SandboxError as exc:
            return _error(str(exc), 404)
        return json_response({})

    async def remove_member(self, request: web.Request) -> web.Response:
        """A member leaves."""
        guild_id, user_id = self._ids(request)
        assert user_id is not None
        try:
            self.sandbox.remove_member(guild_id, user_id)
        except SandboxError as exc:
            return _error(str(exc), 404)
        return json_response({})

    async def storm(self, request: web.Request) -> web.Response:
        """A burst of member events: `updates` members change nick, then `removals` members leave.

        A role change fanning out, then a purge. Streamed as it is made, the gateway's writers getting a turn
        every STORM_STREAM_EVERY events; with `"paced": false` all of it is made first and queued, so the
        writers then send it as fast as the socket takes it. The answer says how long the making took.
        """
        guild_id, _ = self._ids(request)
        try:
            body = await self._body(request)
            updates, removals = int(body.get("updates", 0)), int(body.get("removals", 0))
            paced = body.get("paced", True)
            if not isinstance(paced, bool):
                raise TypeError("paced")
        except (SandboxError, ValueError, TypeError):
            return _error("updates and removals must be whole numbers, paced true or false, in a JSON object")
        try:
            user_ids = [int(m["user"]["id"]) for m in self.sandbox.members(guild_id)]
        except SandboxError as exc:
            return _error(str(exc), 404)
        if not (0 <= updates <= len(user_ids) and 0 <= removals <= len(user_ids)):
            return _error(f"the guild has {len(user_ids)} members")
        started = time.perf_counter()
        for index, user_id in enumerate(user_ids[:updates]):
            self.sandbox.update_member(guild_id, user_id, nick=f"storm {index}")
            if paced:
                await _let_gateway_send(index)
        for index, user_id in enumerate(user_ids[len(user_ids) - removals :]):
            self.sandbox.remove_member(guild_id, user_id)
            if paced:
                await _let_gateway_send(index)
        return json_response({"events": updates + removals, "seconds": time.perf_counter() - started})

    async def add_bot(self, request: web.Request) -> web.Response:
        """The bot joins a guild."""
        guild_id, _ = self._ids(request)
        try:
            self.sandbox.add_bot(guild_id)
        except SandboxError as exc:
            return _error(str(exc), 404)
        return json_response({})

    async def kick_bot(self, request: web.Request) -> web.Response:
        """The bot is removed from a guild."""
        guild_id, _ = self._ids(request)
        try:
            self.sandbox.kick_bot(guild_id)
        except SandboxError as exc:
            return _error(str(exc), 404)
        return json_response({})

    async def unavailable(self, request: web.Request) -> web.Response:
        """Start or end a guild outage ({"unavailable": bool})."""
        guild_id, _ = self._ids(request)
        body = await self._body(request)
        try:
            self.sandbox.set_guild_unavailable(guild_id, bool(body.get("unavailable", True)))
        except SandboxError as exc:
            return _error(str(exc), 404)
        return json_response({})

    async def tamper(self, request: web.Request) -> web.Response:
        """The next authorize redirect carries this guild id."""
        guild_id, _ = self._ids(request)
        self.sandbox.tamper_redirect_guild_id(guild_id)
        return json_response({})

    async def bot_role(self, request: web.Request) -> web.Response:
        """Move the bot's role or change its permissions: {"position"?, "below"?, "manage_roles"?, "administrator"?}.

        `position` puts it there (1 is just above @everyone), `below` just under that role id; Discord's role
        hierarchy then decides which roles the bot may write (50013 for the others).
        """
        guild_id, _ = self._ids(request)
        try:
            body = await self._body(request)
            position = int(body["position"]) if body.get("position") is not None else None
            below = int(body["below"]) if body.get("below") is not None else None
            flags = {}
            for key in ("manage_roles", "administrator"):
                if body.get(key) is not None:
                    if not isinstance(body[key], bool):
                        raise TypeError(key)
                    flags[key] = body[key]
            if position is not None and below is not None:
                raise ValueError("position and below")
        except (SandboxError, ValueError, TypeError):
            return _error(
                'a JSON object with "position" (a number) or "below" (a role id), '
                '"manage_roles" and "administrator" true or false'
            )
        sb = self.sandbox
        try:
            if position is not None or below is not None:
                sb.move_bot_role(guild_id, position=position, below=below)
            if flags:
                sb.set_bot_permissions(guild_id, **flags)
            role = sb.bot_role(guild_id)
        except SandboxError as exc:
            return _error(str(exc), 404)
        return json_response({"role": payloads.role(role)})

    async def role_writes(self, request: web.Request) -> web.Response:
        """The bot's recent role writes in a guild, oldest first, and the silent successes still to come."""
        guild_id, _ = self._ids(request)
        sb = self.sandbox
        return json_response(
            {
                "writes": [w.as_json() for w in sb.recent_role_writes(guild_id)],
                "silent_pending": sb.role_writes.silenced(guild_id),
            }
        )

    async def silent_role_writes(self, request: web.Request) -> web.Response:
        """The guild's next {"times": N} allowed role writes answer 204 but change nothing (no event either)."""
        guild_id, _ = self._ids(request)
        try:
            body = await self._body(request)
            times = body.get("times", 1)
            if isinstance(times, bool) or not isinstance(times, int) or times < 1:
                raise ValueError("times")
        except (SandboxError, ValueError):
            return _error('"times" must be a whole number of at least 1, in a JSON object')
        try:
            self.sandbox.silence_role_writes(guild_id, times)
        except SandboxError as exc:
            return _error(str(exc), 404)
        return json_response({"silent_pending": self.sandbox.role_writes.silenced(guild_id)})

    async def rate_limits(self, request: web.Request) -> web.Response:
        """The REST rate-limit counters: invalid requests of the window, the global window, every bucket."""
        return json_response(self.sandbox.rate_limits.counters())

    async def reset_rate_limits(self, request: web.Request) -> web.Response:
        """Forget every bucket, the global window and the invalid requests counted."""
        self.sandbox.rate_limits.reset()
        return json_response(self.sandbox.rate_limits.counters())

    async def fail(self, request: web.Request) -> web.Response:
        """Inject errors: {"method", "path", "status", "times"?, "retry_after"?, "body"?}."""
        body = await self._body(request)
        try:
            self.sandbox.fail_next(
                str(body["method"]),
                str(body["path"]),
                status=int(body["status"]),
                times=int(body.get("times", 1)),
                retry_after=float(body["retry_after"]) if body.get("retry_after") is not None else None,
                body=body.get("body"),
            )
        except (KeyError, ValueError) as exc:
            return _error(f"bad fault: {exc}")
        return json_response({"pending": [asdict(f) for f in self.sandbox.pending_faults()]})

    async def drop(self, request: web.Request) -> web.Response:
        """Cut every gateway socket."""
        self.sandbox.drop_gateway()
        return json_response({})

    async def reconnect(self, request: web.Request) -> web.Response:
        """Op 7 to every session."""
        await self.sandbox.send_reconnect()
        return json_response({})

    async def invalid_session(self, request: web.Request) -> web.Response:
        """Op 9 to every session ({"resumable": bool})."""
        body = await self._body(request)
        await self.sandbox.send_invalid_session(bool(body.get("resumable", False)))
        return json_response({})


async def _let_gateway_send(index: int) -> None:
    """Every STORM_STREAM_EVERY events, let the gateway's writers send what is queued.

    Discord streams a burst as it happens; queuing all of it first and sending it after would hold the
    first event back for as long as the whole storm takes to make.
    """
    if index % STORM_STREAM_EVERY == STORM_STREAM_EVERY - 1:
        await asyncio.sleep(0)
