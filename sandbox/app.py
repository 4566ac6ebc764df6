"""`Sandbox`: the aiohttp application wiring OAuth2, REST, the gateway and the controls together."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web

from . import oauth, payloads, roles, saved_world
from .control import ControlHandlers
from .errors import SandboxError
from .gateway import Gateway, GatewayCommand
from .oauth import OAuthHandlers, OAuthState
from .ratelimits import RateLimits
from .rest import (
    API_PREFIXES,
    RestHandlers,
    api_error,
    banned_response,
    global_rate_limited_response,
    json_response,
    rate_limited_response,
)
from .roles import RoleWrite, RoleWriteLog, RoleWriteOutcome
from .world import ADMINISTRATOR, MANAGE_ROLES, Guild, GuildInfo, Member, Role, User, World, iso_time

log = logging.getLogger(__name__)


class _Unset:
    """Marks an argument that was not given (None means "clear it")."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


@dataclass
class SandboxOptions:
    """How the sandbox's world and application are set up; the last three may change at run time."""

    guilds: int = 3
    members: int = 50
    redirect_uris: list[str] = field(default_factory=lambda: ["https://localhost:8080/authorize-discord"])
    requires_code_grant: bool = True
    members_intent_enabled: bool = True
    member_list_cooldown: float = 30.0
    # Discord's own limits on sessions: a session may hold this many guilds (else 4011), and IDENTIFY goes
    # at most once per identify_interval per max_concurrency bucket (else op 9). Lower them in tests.
    max_guilds_per_session: int = 2500
    identify_interval: float = 5.0
    max_concurrency: int = 1
    seed: int = 1
    host: str = "127.0.0.1"
    port: int = 0
    # Discord's REST limits (sandbox/ratelimits.py): Add/Remove Guild Member Role per guild per window, the
    # bot's requests per window across every route, invalid requests (401, 403, 429) per window before a
    # temporary ban. Lower them in tests; they may change at run time.
    role_write_limit: int = 10
    role_write_window: float = 10.0
    global_rate_limit: int = 50
    global_rate_window: float = 1.0
    invalid_request_limit: int = 10_000
    invalid_request_window: float = 600.0
    # Where the world is kept across restarts (the bot's guilds, members added, changed or removed);
    # None: a fresh world every start.
    world_file: Path | None = None


@dataclass
class RequestRecord:
    """One HTTP request the sandbox received."""

    method: str
    path: str
    query: dict[str, str]
    time: float
    # A token request's grant_type (form field), so that tests can tell the kinds apart.
    grant_type: str | None = None


@dataclass
class Fault:
    """An injected error for the next `times` requests to method and path."""

    method: str
    path: str
    status: int
    times: int
    retry_after: float | None = None
    body: dict[str, Any] | None = None


async def _grant_type(request: web.Request) -> str | None:
    """The grant_type of a form-encoded token request (aiohttp keeps the parsed form for the handler)."""
    if request.method != "POST" or not request.path.endswith("/oauth2/token"):
        return None
    if request.content_type != "application/x-www-form-urlencoded":
        return None
    value = (await request.post()).get("grant_type")
    return value if isinstance(value, str) else None


def make_bot_token(client_id: int, seed: int) -> str:
    """A token shaped like Discord's: base64(id) . base64(timestamp) . base64(hmac)."""

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    stamp = (1_700_000_000 + seed).to_bytes(4, "big")
    mac = hmac.new(f"sandbox-bot:{seed}".encode(), str(client_id).encode(), hashlib.sha256).digest()[:27]
    return f"{b64(str(client_id).encode())}.{b64(stamp)}.{b64(mac)}"


class Sandbox:
    """A local Discord: consent page, OAuth2, REST and gateway on one base URL."""

    def __init__(self, options: SandboxOptions | None = None) -> None:
        self.options = options or SandboxOptions()
        opts = self.options
        self.world = World(seed=opts.seed, guilds=opts.guilds, members=opts.members)
        if opts.world_file is not None:
            saved_world.load(self.world, opts.world_file)
        self.client_id = self.world.application_id
        self.client_secret = self.world.client_secret
        self.bot_token = make_bot_token(self.client_id, opts.seed)
        self.application_name = self.world.application_name
        self.user_id = self.world.admin.id
        self.base_url = ""
        self.requests: list[RequestRecord] = []
        self.gateway_commands: list[GatewayCommand] = []
        self.oauth_state = OAuthState()
        self.gateway = Gateway(self.world, opts, self.bot_token, self._record_command)
        self._faults: list[Fault] = []
        self._tampered_guild: int | None = None
        self.role_writes = RoleWriteLog()
        self.rate_limits = RateLimits(opts)
        self._waiters: list[
            tuple[int, Callable[[GatewayCommand], bool] | None, asyncio.Future[GatewayCommand]]
        ] = []
        self._runner: web.AppRunner | None = None
        self.app = self._build_app()

    # -- life --------------------------------------------------------------------------------------

    def _build_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        oauth_handlers = OAuthHandlers(self)
        app.add_routes(
            [
                web.get("/oauth2/authorize", oauth_handlers.consent),
                web.post("/oauth2/authorize", oauth_handlers.consent_submit),
                web.get("/oauth2/authorized", oauth_handlers.authorized),
                web.get("/gateway", self.gateway.handle),
                web.get("/gateway/resume", self.gateway.handle),
            ]
        )
        for prefix in API_PREFIXES:
            app.router.add_post(f"{prefix}/oauth2/token", oauth_handlers.token)
            app.router.add_post(f"{prefix}/oauth2/token/revoke", oauth_handlers.revoke)
        app.add_routes(RestHandlers(self).routes())
        app.add_routes(ControlHandlers(self).routes())
        return app

    async def start(self) -> str:
        """Bind and serve; returns the base URL."""
        runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.options.host, self.options.port)
        await site.start()
        self._runner = runner
        host, port = runner.addresses[0][:2]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        self.base_url = f"http://{host}:{port}"
        ws_base = "ws" + self.base_url[4:]
        self.gateway.url = f"{ws_base}/gateway"
        self.gateway.resume_url = f"{ws_base}/gateway/resume"
        log.info("sandbox.started base_url=%s", self.base_url)
        return self.base_url

    async def stop(self) -> None:
        """Close gateway sockets and the server."""
        await self.gateway.close()
        for _, _, fut in self._waiters:
            fut.cancel()
        self._waiters.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info("sandbox.stopped")

    @property
    def gateway_url(self) -> str:
        """The WebSocket URL GET /gateway/bot returns."""
        return self.gateway.url

    async def __aenter__(self) -> Sandbox:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        self.requests.append(
            RequestRecord(
                request.method, request.path, dict(request.query), time.time(), await _grant_type(request)
            )
        )
        if not request.path.startswith("/api"):
            return await self._answer(request, handler)
        if self.rate_limits.banned():
            log.warning("sandbox.banned method=%s path=%s", request.method, request.path)
            return banned_response()
        response = await self._answer(request, handler)
        self.rate_limits.note_answer(response.status, response.headers.get("X-RateLimit-Scope"))
        return response

    async def _answer(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if request.path.startswith("/api") and self._is_bot(request):
            retry_after = self.rate_limits.take_global()
            if retry_after is not None:
                return global_rate_limited_response(retry_after)
        fault = self._take_fault(request.method, request.path)
        if fault is not None:
            log.info("sandbox.fault method=%s path=%s status=%s", request.method, request.path, fault.status)
            if fault.status == 429:
                return rate_limited_response(request.path, fault.retry_after or 1.0, fault.body)
            body = fault.body or payloads.error(0, f"{fault.status}: injected by the sandbox")
            return json_response(body, fault.status, route=request.path)
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if not request.path.startswith("/api") or exc.status < 400:
                raise
            return api_error(exc.status, 0, f"{exc.status}: {exc.reason}")

    def _is_bot(self, request: web.Request) -> bool:
        """Whether a REST request carries the bot's token (the global limit counts those)."""
        header = request.headers.get("Authorization", "")
        expected = f"Bot {self.bot_token}"
        return secrets.compare_digest(header.encode(), expected.encode())

    # -- records -----------------------------------------------------------------------------------

    def _record_command(self, command: GatewayCommand) -> None:
        self.gateway_commands.append(command)
        for waiter in list(self._waiters):
            op, predicate, fut = waiter
            if fut.done() or op != command.op or (predicate is not None and not predicate(command)):
                continue
            fut.set_result(command)
            self._waiters.remove(waiter)

    async def wait_for_gateway_command(
        self,
        op: int,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - the interface tests rely on
        predicate: Callable[[GatewayCommand], bool] | None = None,
        since: int | None = None,
    ) -> GatewayCommand:
        """The next gateway command with this op (or, with `since`, the first at or after that log index)."""
        if since is not None:
            for command in self.gateway_commands[since:]:
                if command.op == op and (predicate is None or predicate(command)):
                    return command
        fut: asyncio.Future[GatewayCommand] = asyncio.get_running_loop().create_future()
        waiter = (op, predicate, fut)
        self._waiters.append(waiter)
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            if waiter in self._waiters:
                self._waiters.remove(waiter)

    # -- faults ------------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        path: str,
        *,
        status: int,
        times: int = 1,
        retry_after: float | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        """Answer the next `times` requests to method and path with this error."""
        self._faults.append(Fault(method.upper(), path, status, times, retry_after, body))

    def pending_faults(self) -> list[Fault]:
        """Injected errors not yet used up."""
        return list(self._faults)

    def _take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self._faults:
            if fault.method == method.upper() and fault.path == path:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def tamper_redirect_guild_id(self, guild_id: int) -> None:
        """The next authorize redirect shows this guild_id instead of the chosen one."""
        self._tampered_guild = guild_id

    def take_tampered_guild_id(self) -> int | None:
        """The tampered guild id, once."""
        value, self._tampered_guild = self._tampered_guild, None
        return value

    def drop_gateway(self) -> None:
        """Drop every gateway socket without a close frame, so clients RESUME."""
        self.gateway.drop_all()

    async def send_reconnect(self) -> None:
        """Op 7 RECONNECT to every session."""
        self.gateway.reconnect_all()

    async def send_invalid_session(self, resumable: bool = False) -> None:
        """Op 9 INVALID_SESSION to every session."""
        self.gateway.invalidate_all(resumable)

    # -- OAuth2 ------------------------------------------------------------------------------------

    def authorize(self, query: Mapping[str, str], guild_id: int | None = None, *, deny: bool = False) -> str:
        """What clicking Authorize (or Cancel) on /oauth2/authorize?<query> does; returns the Location."""
        return oauth.authorize(self, query, guild_id, deny=deny)

    # -- world -------------------------------------------------------------------------------------

    def _guild(self, guild_id: int) -> Guild:
        try:
            return self.world.guild(guild_id)
        except KeyError:
            raise SandboxError(f"unknown guild {guild_id}") from None

    def managed_guilds(self) -> list[GuildInfo]:
        """Guilds the signed-in user can add the bot to."""
        return [g.info() for g in self.world.managed_guilds()]

    def guild(self, guild_id: int) -> GuildInfo:
        """A guild's summary."""
        return self._guild(guild_id).info()

    def bot_guild_ids(self) -> set[int]:
        """Guilds the bot is in."""
        return set(self.world.bot_guilds)

    def members(self, guild_id: int) -> list[dict[str, Any]]:
        """Current member payloads as the REST API returns them, ordered by user id."""
        return [payloads.member(m) for m in self._guild(guild_id).iter_members()]

    def _save_world(self) -> None:
        if self.options.world_file is not None:
            saved_world.save(self.world, self.options.world_file)

    def _live(self, guild_id: int) -> bool:
        return guild_id in self.world.bot_guilds and not self.world.guild(guild_id).unavailable

    def add_member(self, guild_id: int, *, username: str | None = None, bot: bool = False) -> int:
        """A new user joins the guild (GUILD_MEMBER_ADD); returns the user id."""
        guild = self._guild(guild_id)
        uid = self.world.new_user_id()
        user = User(id=uid, username=username or f"newcomer{uid % 100_000}", bot=bot)
        member = Member(user=user, joined_at=iso_time(int(time.time() * 1000)))
        guild.add(member)
        self._save_world()
        if self._live(guild_id):
            self.gateway.member_event(guild_id, "GUILD_MEMBER_ADD", payloads.member(member, guild_id))
        return uid

    def update_member(
        self,
        guild_id: int,
        user_id: int,
        *,
        nick: str | None = UNSET,
        roles: list[int] | None = UNSET,
        username: str | None = UNSET,
        global_name: str | None = UNSET,
        avatar: str | None = UNSET,
    ) -> None:
        """Change a member (GUILD_MEMBER_UPDATE); arguments not given stay as they are."""
        guild = self._guild(guild_id)
        member = guild.get_member(user_id)
        if member is None:
            raise SandboxError(f"user {user_id} is not a member of guild {guild_id}")
        user = member.user
        user_changes: dict[str, Any] = {}
        if username is not UNSET:
            user_changes["username"] = username
        if global_name is not UNSET:
            user_changes["global_name"] = global_name
        if avatar is not UNSET:
            user_changes["avatar"] = avatar
        member_changes: dict[str, Any] = {"user": replace(user, **user_changes)}
        if nick is not UNSET:
            member_changes["nick"] = nick
        if roles is not UNSET:
            member_changes["roles"] = tuple(roles or ())
        updated = replace(member, **member_changes)
        guild.replace(updated)
        self._save_world()
        if self._live(guild_id):
            self.gateway.member_event(guild_id, "GUILD_MEMBER_UPDATE", payloads.member(updated, guild_id))

    def remove_member(self, guild_id: int, user_id: int) -> None:
        """A member leaves the guild (GUILD_MEMBER_REMOVE)."""
        guild = self._guild(guild_id)
        member = guild.get_member(user_id)
        if member is None:
            raise SandboxError(f"user {user_id} is not a member of guild {guild_id}")
        guild.remove(user_id)
        self._save_world()
        if self._live(guild_id):
            data = {"guild_id": str(guild_id), "user": payloads.user(member.user)}
            self.gateway.member_event(guild_id, "GUILD_MEMBER_REMOVE", data)

    def add_bot(self, guild_id: int, *, permissions: int = 0) -> None:
        """The bot joins the guild: connected sessions get GUILD_CREATE without `unavailable`."""
        guild = self._guild(guild_id)
        if not self.world.bot_join(guild_id, permissions):
            return
        log.info("sandbox.bot_joined guild=%s", guild_id)
        self._save_world()
        if not guild.unavailable:
            self.gateway.guild_create(guild_id, join=True)

    def kick_bot(self, guild_id: int) -> None:
        """The bot is removed: GUILD_DELETE without `unavailable`."""
        self._guild(guild_id)
        if self.world.bot_leave(guild_id):
            log.info("sandbox.bot_left guild=%s", guild_id)
            self._save_world()
            self.gateway.guild_delete(guild_id, unavailable=False)

    def set_guild_unavailable(self, guild_id: int, unavailable: bool) -> None:
        """An outage (GUILD_DELETE unavailable) or its end (GUILD_CREATE)."""
        guild = self._guild(guild_id)
        if guild.unavailable == unavailable:
            return
        guild.unavailable = unavailable
        if guild_id not in self.world.bot_guilds:
            return
        if unavailable:
            self.gateway.guild_delete(guild_id, unavailable=True)
        else:
            self.gateway.guild_create(guild_id, join=False)

    # -- roles -------------------------------------------------------------------------------------

    def write_member_role(self, guild_id: int, user_id: int, role_id: int, *, add: bool) -> RoleWriteOutcome:
        """What the bot's Add (or Remove) Guild Member Role does; GUILD_MEMBER_UPDATE when the member changed."""
        guild = self._guild(guild_id)
        refused = roles.refusal(guild, self.world.bot_user.id, user_id, role_id)
        if refused is not None:
            return RoleWriteOutcome(refused, changed=False, silent=False)
        if self.role_writes.take_silent(guild_id):
            log.info("sandbox.role_write_silenced guild=%s user=%s role=%s", guild_id, user_id, role_id)
            return RoleWriteOutcome(None, changed=False, silent=True)
        member = guild.get_member(user_id)
        assert member is not None  # refusal() answered Unknown Member otherwise
        held = member.roles
        if add:
            wanted = held if role_id in held else (*held, role_id)
        else:
            wanted = tuple(r for r in held if r != role_id)
        if wanted == held:
            return RoleWriteOutcome(None, changed=False, silent=False)
        self.update_member(guild_id, user_id, roles=list(wanted))
        return RoleWriteOutcome(None, changed=True, silent=False)

    def recent_role_writes(self, guild_id: int) -> list[RoleWrite]:
        """The bot's recent role writes in a guild (method, user, role, status, audit reason), oldest first."""
        return self.role_writes.recent(guild_id)

    def silence_role_writes(self, guild_id: int, times: int = 1) -> None:
        """The guild's next `times` allowed role writes answer 204 but change nothing and send no event."""
        self._guild(guild_id)
        if times < 1:
            raise SandboxError("times must be at least 1")
        self.role_writes.silence(guild_id, times)

    def bot_role(self, guild_id: int) -> Role:
        """The bot's own (managed) role in a guild it is in."""
        guild = self._guild(guild_id)
        role = next((r for r in guild.roles if r.bot_id == self.world.bot_user.id), None)
        if guild_id not in self.world.bot_guilds or role is None:
            raise SandboxError(f"the bot is not in guild {guild_id}")
        return role

    def move_bot_role(self, guild_id: int, *, position: int | None = None, below: int | None = None) -> int:
        """Move the bot's role to `position` (1 is just above @everyone) or just below role `below`.

        Its neighbours shift as Discord's role order does; sessions get GUILD_ROLE_UPDATE for each role
        that moved. Returns the bot role's new position.
        """
        if (position is None) == (below is None):
            raise SandboxError("give either position or below")
        guild = self._guild(guild_id)
        mine = self.bot_role(guild_id)
        if below is not None:
            target = guild.role(below)
            if target is None or target.id == guild.id or target.id == mine.id:
                raise SandboxError(f"role {below} is not another role of guild {guild_id} above @everyone")
            others = sorted(
                (r for r in guild.roles if r.id not in (guild.id, mine.id)), key=lambda r: r.position
            )
            position = others.index(target) + 1
        assert position is not None
        moved = guild.move_role(mine.id, position)
        log.info("sandbox.bot_role_moved guild=%s position=%s", guild_id, mine.position)
        self._roles_changed(guild_id, moved)
        return mine.position

    def set_bot_permissions(
        self, guild_id: int, *, manage_roles: bool | None = None, administrator: bool | None = None
    ) -> int:
        """Grant or revoke Manage Roles (or Administrator) on the bot's role; returns its permissions."""
        mine = self.bot_role(guild_id)
        for bit, allowed in ((MANAGE_ROLES, manage_roles), (ADMINISTRATOR, administrator)):
            if allowed is not None:
                mine.permissions = mine.permissions | bit if allowed else mine.permissions & ~bit
        log.info("sandbox.bot_permissions guild=%s permissions=%s", guild_id, mine.permissions)
        self._roles_changed(guild_id, [mine])
        return mine.permissions

    def _roles_changed(self, guild_id: int, changed: list[Role]) -> None:
        self._save_world()
        if self._live(guild_id):
            for role in changed:
                self.gateway.role_update(guild_id, payloads.role(role))
