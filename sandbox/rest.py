"""The REST API: the handful of v10 routes the project uses, with Discord's errors and headers."""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from dataclasses import dataclass
from itertools import islice
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from aiohttp import web

from . import payloads
from .oauth import TokenGrant
from .ratelimits import BucketState, ceil_ms
from .roles import UNKNOWN_MEMBER, UNKNOWN_ROLE, Refusal, RoleWrite, RoleWriteOutcome

if TYPE_CHECKING:
    from .app import Sandbox

log = logging.getLogger(__name__)

API_PREFIXES = ("/api/v10", "/api/v9", "/api")
RATE_LIMIT = 50
# Discord's answers pass Google's load balancer, which adds this; discord.py takes a 429 without it for a ban.
DISCORD_VIA = "1.1 google"
UNKNOWN_GUILD = Refusal(404, 10004, "Unknown Guild")
MISSING_ACCESS = Refusal(403, 50001, "Missing Access")
MEMBER_ROLE_PATH = "/guilds/{guild_id}/members/{user_id}/roles/{role_id}"


# Discord's default soundboard sounds, as its documentation lists them (SoundboardSoundResponse, no guild).
DEFAULT_SOUNDS = [
    {
        "name": name,
        "sound_id": sound_id,
        "volume": 1.0,
        "emoji_id": None,
        "emoji_name": emoji,
        "available": True,
    }
    for name, sound_id, emoji in (
        ("quack", "1", "🦆"),
        ("airhorn", "2", "📢"),
        ("cricket", "3", "🦗"),
        ("golf clap", "4", "⛳"),
        ("sad horn", "5", "🎺"),
        ("ba dum tss", "7", "🥁"),
    )
]


def json_response(
    obj: Any, status: int = 200, *, route: str = "", headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON response with exactly `Content-Type: application/json` and Discord's rate-limit headers."""
    all_headers = ratelimit_headers(route, remaining=RATE_LIMIT - 1, reset_after=1.0)
    all_headers["Via"] = DISCORD_VIA
    all_headers.update(headers or {})
    return web.Response(
        body=payloads.dumps(obj), status=status, content_type="application/json", headers=all_headers
    )


def ratelimit_headers(route: str, *, remaining: int, reset_after: float) -> dict[str, str]:
    """The X-RateLimit-* headers Discord puts on every REST response."""
    return {
        "X-RateLimit-Limit": str(RATE_LIMIT),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
        "X-RateLimit-Reset-After": f"{reset_after:.3f}",
        "X-RateLimit-Bucket": hashlib.md5(route.encode()).hexdigest(),
    }


def _retry_after(seconds: float) -> float:
    return max(ceil_ms(seconds), 0.001)


def rate_limited_response(
    route: str, retry_after: float, body: dict[str, Any] | None = None, *, bucket: BucketState | None = None
) -> web.Response:
    """Discord's 429 for a per-route limit: retry_after in the body, Retry-After and the bucket's headers."""
    retry_after = _retry_after(retry_after)
    data = body or {
        "message": "You are being rate limited.",
        "retry_after": retry_after,
        "global": False,
        "code": 0,
    }
    if bucket is not None:
        headers = bucket.headers()
    else:
        headers = ratelimit_headers(route, remaining=0, reset_after=retry_after)
    headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    headers["X-RateLimit-Scope"] = "user"
    headers["Via"] = DISCORD_VIA
    return web.Response(
        body=payloads.dumps(data), status=429, content_type="application/json", headers=headers
    )


def global_rate_limited_response(retry_after: float) -> web.Response:
    """Discord's 429 for the global limit: `"global": true`, X-RateLimit-Global and no bucket headers."""
    retry_after = _retry_after(retry_after)
    data = {"message": "You are being rate limited.", "retry_after": retry_after, "global": True, "code": 0}
    headers = {
        "Retry-After": str(max(1, math.ceil(retry_after))),
        "X-RateLimit-Global": "true",
        "X-RateLimit-Scope": "global",
        "Via": DISCORD_VIA,
    }
    return web.Response(
        body=payloads.dumps(data), status=429, content_type="application/json", headers=headers
    )


def banned_response() -> web.Response:
    """Cloudflare's temporary ban after too many invalid requests: a 429 HTML page, not from Discord's servers.

    No `Via` and no JSON, which is how clients tell it from Discord's own 429 (discord.py raises at once).
    """
    page = "<!DOCTYPE html><title>Access denied | discord.com used Cloudflare to restrict access</title>"
    page += "<h1>Error 1015</h1><p>You are being rate limited.</p>"
    return web.Response(text=page, status=429, content_type="text/html")


def api_error(status: int, code: int, message: str, route: str = "") -> web.Response:
    """Discord's `{"code", "message"}` error body."""
    return json_response(payloads.error(code, message), status, route=route)


def no_content(bucket: BucketState) -> web.Response:
    """204 No Content, with the bucket's rate-limit headers (Discord sends them on it too)."""
    return web.Response(status=204, headers={**bucket.headers(), "Via": DISCORD_VIA})


def _snowflake(raw: str) -> int | None:
    try:
        value = int(raw)
    except ValueError:
        return None
    return value if value > 0 else None


def audit_log_reason(request: web.Request) -> str | None:
    """The `X-Audit-Log-Reason` header, URL-decoded as Discord reads it; None without one."""
    raw = request.headers.get("X-Audit-Log-Reason")
    return unquote(raw) if raw is not None else None


def unauthorized() -> web.Response:
    """401 for a missing or bad token."""
    return api_error(401, 0, "401: Unauthorized")


@dataclass
class Principal:
    """Who a REST request is from: the bot, or the signed-in user through a Bearer token."""

    bot: bool
    grant: TokenGrant | None = None

    def has_scope(self, scope: str) -> bool:
        """Whether a Bearer token carries the scope (the bot has every route it may call)."""
        return self.bot or (self.grant is not None and scope in self.grant.scopes)


class RestHandlers:
    """aiohttp handlers for the REST API."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    def routes(self) -> list[web.RouteDef]:
        """Every route under each API prefix."""
        table = [
            ("GET", "/users/@me", self.me),
            ("GET", "/users/@me/guilds", self.my_guilds),
            ("DELETE", "/users/@me/guilds/{guild_id}", self.leave_guild),
            ("GET", "/oauth2/applications/@me", self.application),
            ("GET", "/applications/@me", self.application),
            ("GET", "/gateway", self.gateway),
            ("GET", "/gateway/bot", self.gateway_bot),
            ("GET", "/soundboard-default-sounds", self.soundboard_default_sounds),
            ("GET", "/guilds/{guild_id}", self.get_guild),
            ("GET", "/guilds/{guild_id}/members", self.list_members),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self.get_member),
            ("PUT", MEMBER_ROLE_PATH, self.add_member_role),
            ("DELETE", MEMBER_ROLE_PATH, self.remove_member_role),
        ]
        return [
            web.route(method, prefix + path, handler)
            for prefix in API_PREFIXES
            for method, path, handler in table
        ]

    def _principal(self, request: web.Request) -> Principal | None:
        header = request.headers.get("Authorization", "")
        if header.startswith("Bot "):
            token = header[4:].encode()
            return (
                Principal(bot=True)
                if secrets.compare_digest(token, self.sandbox.bot_token.encode())
                else None
            )
        if header.startswith("Bearer "):
            grant = self.sandbox.oauth_state.bearer(header[7:])
            return Principal(bot=False, grant=grant) if grant is not None else None
        return None

    def _guild_for_bot(self, request: web.Request) -> tuple[int, web.Response | None]:
        """The path's guild id, or the error a bot token (401) or the guild (404, 403) earns."""
        who = self._principal(request)
        if who is None or not who.bot:
            return 0, unauthorized()
        guild_id = _snowflake(request.match_info["guild_id"]) or 0
        refused = self._guild_refusal(guild_id)
        if refused is not None:
            return guild_id, api_error(refused.status, refused.code, refused.message)
        return guild_id, None

    def _guild_refusal(self, guild_id: int) -> Refusal | None:
        """404 Unknown Guild for a guild that does not exist, 403 Missing Access for one without the bot."""
        if guild_id not in self.sandbox.world.guilds:
            return UNKNOWN_GUILD
        if guild_id not in self.sandbox.world.bot_guilds:
            return MISSING_ACCESS
        return None

    async def me(self, request: web.Request) -> web.Response:
        """GET /users/@me."""
        who = self._principal(request)
        if who is None or not who.has_scope("identify"):
            return unauthorized()
        if who.bot:
            return json_response(payloads.private_user(self.sandbox.world.bot_user), route="users/@me")
        email = who.grant is not None and "email" in who.grant.scopes
        return json_response(payloads.private_user(self.sandbox.world.admin, email=email), route="users/@me")

    async def my_guilds(self, request: web.Request) -> web.Response:
        """GET /users/@me/guilds."""
        who = self._principal(request)
        if who is None or not who.has_scope("guilds"):
            return unauthorized()
        world = self.sandbox.world
        if who.bot:
            me = world.bot_user
            guilds = [world.guild(gid) for gid in world.bot_guilds]
        else:
            me = world.admin
            guilds = world.admin_guilds()
        guilds.sort(key=lambda g: g.id)
        q = request.query
        try:
            limit = int(q.get("limit", "200"))
            after = int(q.get("after", "0"))
            before = int(q["before"]) if "before" in q else None
        except ValueError:
            return api_error(400, 50035, "Invalid Form Body")
        if not 1 <= limit <= 200:
            return api_error(400, 50035, "Invalid Form Body")
        with_counts = q.get("with_counts", "false").lower() == "true"
        picked = [g for g in guilds if g.id > after and (before is None or g.id < before)]
        picked = picked[-limit:] if before is not None and "after" not in q else picked[:limit]
        body = [payloads.my_guild(world, g, me, with_counts=with_counts) for g in picked]
        return json_response(body, route="users/@me/guilds")

    async def leave_guild(self, request: web.Request) -> web.Response:
        """DELETE /users/@me/guilds/{id}: the bot leaves the guild."""
        guild_id, error = self._guild_for_bot(request)
        if error is not None:
            return error
        self.sandbox.kick_bot(guild_id)
        return web.Response(
            status=204, headers=ratelimit_headers("leave", remaining=RATE_LIMIT - 1, reset_after=1)
        )

    async def application(self, request: web.Request) -> web.Response:
        """GET /oauth2/applications/@me."""
        if self._principal(request) is None:
            return unauthorized()
        opts = self.sandbox.options
        body = payloads.application(
            self.sandbox.world,
            opts.redirect_uris,
            requires_code_grant=opts.requires_code_grant,
            members_intent=opts.members_intent_enabled,
        )
        return json_response(body, route="applications/@me")

    async def gateway(self, request: web.Request) -> web.Response:
        """GET /gateway (no authentication)."""
        return json_response({"url": self.sandbox.gateway.url}, route="gateway")

    async def soundboard_default_sounds(self, request: web.Request) -> web.Response:
        """GET /soundboard-default-sounds: Discord's built-in sounds (py-cord asks for them at start-up)."""
        if self._principal(request) is None:
            return unauthorized()
        return json_response(DEFAULT_SOUNDS, route="soundboard-default-sounds")

    async def gateway_bot(self, request: web.Request) -> web.Response:
        """GET /gateway/bot: the URL, a recommended shard count and the session start limit."""
        who = self._principal(request)
        if who is None or not who.bot:
            return unauthorized()
        # Discord recommends about one shard per 1,000 guilds (never more than a session may hold).
        per_shard = min(1000, self.sandbox.options.max_guilds_per_session)
        shards = max(1, math.ceil(len(self.sandbox.world.bot_guilds) / per_shard))
        body = {
            "url": self.sandbox.gateway.url,
            "shards": shards,
            "session_start_limit": {
                "total": 1000,
                "remaining": 999,
                "reset_after": 86_400_000,
                "max_concurrency": self.sandbox.options.max_concurrency,
            },
        }
        return json_response(body, route="gateway/bot")

    async def get_guild(self, request: web.Request) -> web.Response:
        """GET /guilds/{id}."""
        guild_id, error = self._guild_for_bot(request)
        if error is not None:
            return error
        with_counts = request.query.get("with_counts", "false").lower() == "true"
        body = payloads.guild(self.sandbox.world.guild(guild_id), with_counts=with_counts)
        return json_response(body, route=f"guilds/{guild_id}")

    async def list_members(self, request: web.Request) -> web.Response:
        """GET /guilds/{id}/members?limit=1..1000&after=: ordered by user id."""
        guild_id, error = self._guild_for_bot(request)
        if error is not None:
            return error
        route = f"guilds/{guild_id}/members"
        if not self.sandbox.options.members_intent_enabled:
            # Listing members needs the Server Members intent switched on in the portal.
            return api_error(403, 50001, "Missing Access", route)
        try:
            limit = int(request.query.get("limit", "1"))
            after = int(request.query.get("after", "0"))
        except ValueError:
            return api_error(400, 50035, "Invalid Form Body", route)
        if not 1 <= limit <= 1000:
            errors = {
                "limit": {
                    "_errors": [
                        {
                            "code": "NUMBER_TYPE_MAX",
                            "message": "Int value should be less than or equal to 1000.",
                        }
                    ]
                }
            }
            return json_response(payloads.error(50035, "Invalid Form Body", errors), 400, route=route)
        guild = self.sandbox.world.guild(guild_id)
        body = [payloads.member(m) for m in islice(guild.iter_members(after), limit)]
        return json_response(body, route=route)

    async def get_member(self, request: web.Request) -> web.Response:
        """GET /guilds/{id}/members/{user_id}."""
        guild_id, error = self._guild_for_bot(request)
        if error is not None:
            return error
        try:
            member = self.sandbox.world.guild(guild_id).get_member(int(request.match_info["user_id"]))
        except ValueError:
            member = None
        if member is None:
            return api_error(404, 10007, "Unknown Member")
        return json_response(payloads.member(member), route=f"guilds/{guild_id}/members")

    async def add_member_role(self, request: web.Request) -> web.Response:
        """PUT /guilds/{id}/members/{user_id}/roles/{role_id} (Add Guild Member Role): 204, even if held."""
        return self._write_member_role(request, add=True)

    async def remove_member_role(self, request: web.Request) -> web.Response:
        """DELETE /guilds/{id}/members/{user_id}/roles/{role_id} (Remove Guild Member Role): 204, even if not held."""
        return self._write_member_role(request, add=False)

    def _write_member_role(self, request: web.Request, *, add: bool) -> web.Response:
        """Both role routes: the guild's bucket first (every answer but a 401 counts and carries it), then the checks."""
        who = self._principal(request)
        if who is None or not who.bot:
            return unauthorized()
        guild_id = _snowflake(request.match_info["guild_id"]) or 0
        user_id = _snowflake(request.match_info["user_id"])
        role_id = _snowflake(request.match_info["role_id"])
        bucket = self.sandbox.rate_limits.take_role_write(guild_id)
        if bucket.retry_after is not None:
            outcome = RoleWriteOutcome(None, changed=False, silent=False)
            response = rate_limited_response(bucket.route, bucket.retry_after, bucket=bucket)
        else:
            outcome = self._role_write_outcome(guild_id, user_id, role_id, add=add)
            refused = outcome.refusal
            if refused is None:
                response = no_content(bucket)
            else:
                body = payloads.error(refused.code, refused.message)
                response = json_response(body, refused.status, headers=bucket.headers())
        if guild_id in self.sandbox.world.guilds:
            self.sandbox.role_writes.record(
                guild_id,
                RoleWrite(
                    method=request.method,
                    user_id=user_id or 0,
                    role_id=role_id or 0,
                    status=response.status,
                    code=outcome.refusal.code if outcome.refusal is not None else None,
                    reason=audit_log_reason(request),
                    changed=outcome.changed,
                    silent=outcome.silent,
                    time=time.time(),
                ),
            )
        log.info(
            "rest.role_write guild=%s user=%s role=%s method=%s status=%s changed=%s",
            guild_id,
            user_id,
            role_id,
            request.method,
            response.status,
            outcome.changed,
        )
        return response

    def _role_write_outcome(
        self, guild_id: int, user_id: int | None, role_id: int | None, *, add: bool
    ) -> RoleWriteOutcome:
        refused = self._guild_refusal(guild_id)
        if refused is None and user_id is None:
            refused = UNKNOWN_MEMBER
        if refused is None and role_id is None:
            refused = UNKNOWN_ROLE
        if refused is not None or user_id is None or role_id is None:
            return RoleWriteOutcome(refused, changed=False, silent=False)
        return self.sandbox.write_member_role(guild_id, user_id, role_id, add=add)
