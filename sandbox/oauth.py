"""OAuth2: the consent page, the token endpoint and token revocation, as Discord serves them."""

from __future__ import annotations

import base64
import binascii
import html
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from . import payloads
from .errors import SandboxError

if TYPE_CHECKING:
    from .app import Sandbox

log = logging.getLogger(__name__)

CODE_LIFETIME = 600.0
ACCESS_LIFETIME = 604_800
KNOWN_SCOPES = {
    "activities.read",
    "activities.write",
    "applications.builds.read",
    "applications.builds.upload",
    "applications.commands",
    "applications.commands.permissions.update",
    "applications.entitlements",
    "applications.store.update",
    "bot",
    "connections",
    "dm_channels.read",
    "email",
    "gdm.join",
    "guilds",
    "guilds.join",
    "guilds.members.read",
    "identify",
    "messages.read",
    "openid",
    "relationships.read",
    "role_connections.write",
    "rpc",
    "rpc.notifications.read",
    "voice",
    "webhook.incoming",
}
SCOPE_TEXT = {
    "identify": "Access your username, avatar, and banner",
    "email": "Access your email address",
    "guilds": "Know what servers you're in",
    "guilds.members.read": "Read your member info (nickname, avatar, roles, etc...) for servers you belong to",
    "bot": "Add a bot to a server",
    "applications.commands": "Create commands",
}
ACCESS_DENIED = "The resource owner or authorization server denied the request"
# The client credentials grant has no consent page, so nothing that needs one: no bot, no webhook, no join.
CONSENT_ONLY_SCOPES = {"bot", "webhook.incoming", "guilds.join", "applications.commands"}
GRANT_TYPES = ("authorization_code", "refresh_token", "client_credentials")


@dataclass
class AuthorizeRequest:
    """A validated /oauth2/authorize query."""

    query: dict[str, str]
    scopes: list[str]
    redirect_uri: str | None
    state: str | None
    guild_hint: int | None
    disable_guild_select: bool
    permissions: int


@dataclass
class CodeGrant:
    """An authorization code waiting to be exchanged."""

    code: str
    scopes: list[str]
    redirect_uri: str | None
    guild_id: int | None
    permissions: int
    expires_at: float
    used: bool = False


@dataclass
class TokenGrant:
    """An access token and its refresh token (none for the client credentials grant)."""

    access_token: str
    refresh_token: str | None
    scopes: list[str]
    expires_at: float
    revoked: bool = False
    guild_id: int | None = None


@dataclass
class OAuthState:
    """Codes and tokens the sandbox has issued."""

    codes: dict[str, CodeGrant] = field(default_factory=dict)
    access: dict[str, TokenGrant] = field(default_factory=dict)
    refresh: dict[str, TokenGrant] = field(default_factory=dict)

    def bearer(self, token: str) -> TokenGrant | None:
        """The live grant behind an access token, or None."""
        grant = self.access.get(token)
        if grant is None or grant.revoked or grant.expires_at < time.time():
            return None
        return grant


def _int(value: str | None, name: str) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise SandboxError(f"Invalid {name}: {value!r}") from None


def parse_authorize(sandbox: Sandbox, query: Mapping[str, str]) -> AuthorizeRequest:
    """Validate an authorize query the way Discord does before showing the consent page."""
    q = {str(k): str(v) for k, v in query.items()}
    if q.get("client_id") != str(sandbox.client_id):
        raise SandboxError("Unknown Application: client_id does not match the sandbox application")
    scopes = q.get("scope", "").split()
    if not scopes:
        raise SandboxError("Invalid scope: no scope given")
    unknown = [s for s in scopes if s not in KNOWN_SCOPES]
    if unknown:
        raise SandboxError(f"Invalid scope: {unknown[0]}")
    redirect_uri = q.get("redirect_uri")
    if redirect_uri is not None:
        if redirect_uri not in sandbox.options.redirect_uris:
            raise SandboxError("Invalid OAuth2 redirect_uri: not registered for this application")
        if q.get("response_type") != "code":
            raise SandboxError("Invalid response_type: only 'code' is supported")
    elif set(scopes) - {"bot", "applications.commands"}:
        raise SandboxError("Invalid OAuth2 redirect_uri: a redirect_uri is required for these scopes")
    elif sandbox.options.requires_code_grant:
        raise SandboxError(
            "This bot requires the OAuth2 code grant: redirect_uri and response_type=code needed"
        )
    if q.get("integration_type", "0") not in ("0", "1"):
        raise SandboxError("Invalid integration_type")
    if q.get("prompt", "consent") not in ("consent", "none"):
        raise SandboxError("Invalid prompt")
    disable = q.get("disable_guild_select", "false").lower() == "true"
    guild_hint = _int(q.get("guild_id"), "guild_id")
    if disable and guild_hint is None:
        raise SandboxError("disable_guild_select requires guild_id")
    permissions = _int(q.get("permissions"), "permissions") or 0
    return AuthorizeRequest(
        query=q,
        scopes=scopes,
        redirect_uri=redirect_uri,
        state=q.get("state"),
        guild_hint=guild_hint,
        disable_guild_select=disable,
        permissions=permissions,
    )


def _with_query(uri: str, params: dict[str, str]) -> str:
    return uri + ("&" if "?" in uri else "?") + urlencode(params)


def authorize(sandbox: Sandbox, query: Mapping[str, str], guild_id: int | None, *, deny: bool) -> str:
    """Click Authorize (or Cancel): the redirect Location Discord would answer with."""
    req = parse_authorize(sandbox, query)
    if deny:
        log.info("oauth.denied")
        if req.redirect_uri is None:
            return f"{sandbox.base_url}/oauth2/authorized?error=access_denied"
        params = {"error": "access_denied", "error_description": ACCESS_DENIED}
        if req.state is not None:
            params["state"] = req.state
        return _with_query(req.redirect_uri, params)
    bot = "bot" in req.scopes
    chosen: int | None = None
    if bot:
        chosen = guild_id if guild_id is not None else req.guild_hint
        if chosen is None:
            raise SandboxError("A server must be chosen to add the bot to")
        if req.disable_guild_select and chosen != req.guild_hint:
            raise SandboxError("The server picker is locked to the guild_id in the request")
        if chosen not in {g.id for g in sandbox.world.managed_guilds()}:
            raise SandboxError("You do not have Manage Server permission in that server")
        if not sandbox.options.requires_code_grant:
            # Discord adds the bot on the click, so its GUILD_CREATE precedes the browser's redirect.
            sandbox.app_installed(chosen, scopes=req.scopes, permissions=req.permissions)
    if req.redirect_uri is None:
        return f"{sandbox.base_url}/oauth2/authorized"
    code = secrets.token_urlsafe(22)
    sandbox.oauth_state.codes[code] = CodeGrant(
        code=code,
        scopes=req.scopes,
        redirect_uri=req.redirect_uri,
        guild_id=chosen,
        permissions=req.permissions,
        expires_at=time.time() + CODE_LIFETIME,
    )
    params = {"code": code}
    if req.state is not None:
        params["state"] = req.state
    if bot and chosen is not None:
        shown = sandbox.take_tampered_guild_id()
        params["guild_id"] = str(shown if shown is not None else chosen)
        params["permissions"] = str(req.permissions)
    log.info("oauth.authorized guild=%s scopes=%s", chosen, " ".join(req.scopes))
    return _with_query(req.redirect_uri, params)


# -- pages ---------------------------------------------------------------------------------------

_STYLE = (
    "body{font-family:sans-serif;background:#313338;color:#dbdee1;display:flex;justify-content:center}"
    "main{background:#2b2d31;padding:2em;margin-top:4em;border-radius:8px;max-width:30em}"
    "button{padding:.6em 1.4em;margin:.3em;border:0;border-radius:4px}"
    ".authorize{background:#5865f2;color:white}.cancel{background:transparent;color:#dbdee1}"
    ".error{color:#fa777c}"
)


def _page(title: str, body: str, status: int = 200) -> web.Response:
    text = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head><body><main>{body}</main></body></html>"
    )
    return web.Response(text=text, status=status, content_type="text/html")


def error_page(message: str) -> web.Response:
    """Discord's error page: no redirect, just the reason."""
    return _page(
        "Discord: Invalid request", f"<h1>Invalid request</h1><p class=error>{html.escape(message)}</p>", 400
    )


def consent_page(sandbox: Sandbox, req: AuthorizeRequest, *, problem: str | None = None) -> web.Response:
    """The consent page with the server picker (guilds the user can manage only); `problem` above the form."""
    e = html.escape
    admin = sandbox.world.admin
    hidden = "".join(
        f'<input type="hidden" name="{e(k)}" value="{e(v)}">' for k, v in req.query.items() if k != "guild_id"
    )
    scopes = "".join(f"<li>{e(SCOPE_TEXT.get(s, s))} <code>{e(s)}</code></li>" for s in req.scopes)
    picker = ""
    if "bot" in req.scopes:
        guilds = sandbox.world.managed_guilds()
        if req.disable_guild_select:
            guilds = [g for g in guilds if g.id == req.guild_hint]
        options = "".join(
            f'<option value="{g.id}"{" selected" if g.id == req.guild_hint else ""}>{e(g.name)}</option>'
            for g in guilds
        )
        placeholder = "" if req.guild_hint else '<option value="" disabled selected>Select a server</option>'
        # A locked picker is sent as the hidden field below; an open one must have a server picked.
        locked = " disabled" if req.disable_guild_select else " required"
        picker = f'<label>Add to server:<br><select name="guild_id" id="guild_id"{locked}>{placeholder}{options}</select></label>'
        if req.disable_guild_select:
            picker += f'<input type="hidden" name="guild_id" value="{req.guild_hint}">'
        if req.permissions:
            picker += f"<p>Permissions requested: <code>{req.permissions}</code></p>"
    body = (
        f"<h1>{e(sandbox.application_name)}</h1>"
        f"<p>wants to access your account, signed in as <b>{e(admin.global_name or admin.username)}</b></p>"
        f"<p>This will allow the developer of {e(sandbox.application_name)} to:</p><ul>{scopes}</ul>"
        + (f'<p class="error" role="alert">{e(problem)}</p>' if problem else "")
        + f'<form method="post" action="/oauth2/authorize">{hidden}{picker}'
        '<div><button class="cancel" type="submit" name="action" value="cancel" formnovalidate>Cancel</button>'
        '<button class="authorize" type="submit" name="action" value="authorize">Authorize</button></div>'
        "</form>"
    )
    return _page(f"Discord | Authorize access to your account: {sandbox.application_name}", body)


# -- handlers ------------------------------------------------------------------------------------


def _json(obj: Any, status: int = 200) -> web.Response:
    # RFC 6749 5.1: a response that carries tokens (or an error about them) must not be cached.
    return web.Response(
        body=payloads.dumps(obj),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
    )


def _oauth_error(error: str, description: str | None = None, status: int = 400) -> web.Response:
    body = {"error": error}
    if description is not None:
        body["error_description"] = description
    return _json(body, status)


class OAuthHandlers:
    """aiohttp handlers for the consent page and the token endpoints."""

    def __init__(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox

    async def consent(self, request: web.Request) -> web.Response:
        """GET /oauth2/authorize."""
        try:
            req = parse_authorize(self.sandbox, request.query)
        except SandboxError as exc:
            return error_page(str(exc))
        return consent_page(self.sandbox, req)

    async def consent_submit(self, request: web.Request) -> web.StreamResponse:
        """POST /oauth2/authorize: the form's Authorize or Cancel."""
        form = await request.post()
        fields = {k: str(v) for k, v in form.items()}
        action = fields.pop("action", "authorize")
        guild_raw = fields.get("guild_id")
        try:
            guild_id = int(guild_raw) if guild_raw else None
            if action != "cancel" and guild_id is None:
                # As on Discord: Authorize without a server picked keeps the admin on the page.
                req = parse_authorize(self.sandbox, fields)
                if "bot" in req.scopes and req.guild_hint is None:
                    return consent_page(self.sandbox, req, problem="Choose a server to add the bot to.")
            location = authorize(self.sandbox, fields, guild_id, deny=action == "cancel")
        except (SandboxError, ValueError) as exc:
            return error_page(str(exc))
        raise web.HTTPFound(location)

    async def authorized(self, request: web.Request) -> web.Response:
        """Where a bot-only authorization without a redirect_uri ends."""
        if request.query.get("error"):
            return _page("Discord", "<h1>Authorization cancelled</h1>")
        return _page("Discord", f"<h1>Authorized</h1><p>{html.escape(self.sandbox.application_name)}</p>")

    def _client_ok(self, request: web.Request, form: Mapping[str, Any]) -> bool:
        client_id, secret = form.get("client_id"), form.get("client_secret")
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                decoded = base64.b64decode(header[6:], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            client_id, _, secret = decoded.partition(":")
        return (
            isinstance(client_id, str)
            and isinstance(secret, str)
            and client_id == str(self.sandbox.client_id)
            and secrets.compare_digest(secret.encode(), self.sandbox.client_secret.encode())
        )

    async def _form(self, request: web.Request) -> dict[str, str]:
        # Discord reads form-encoded bodies only; a JSON body looks like an empty form.
        if request.content_type != "application/x-www-form-urlencoded":
            await request.read()
            return {}
        return {k: str(v) for k, v in (await request.post()).items()}

    async def token(self, request: web.Request) -> web.Response:
        """POST /api/v10/oauth2/token."""
        form = await self._form(request)
        grant_type = form.get("grant_type")
        if grant_type not in GRANT_TYPES:
            return _oauth_error("unsupported_grant_type", f"Grant type {grant_type} is not supported")
        if not self._client_ok(request, form):
            log.info("oauth.token_refused reason=invalid_client")
            return _json({"error": "invalid_client"}, 401)
        if grant_type == "client_credentials":
            return self._client_credentials(form)
        state = self.sandbox.oauth_state
        if grant_type == "refresh_token":
            old = state.refresh.get(form.get("refresh_token", ""))
            if old is None or old.revoked:
                return _oauth_error("invalid_grant", 'Invalid "refresh_token" in request.')
            old.revoked = True
            grant = self._issue(old.scopes, old.guild_id)
            log.info("oauth.refreshed")
            return _json(self._token_body(grant, guild=False))
        code = state.codes.get(form.get("code", ""))
        if code is None or code.used or code.expires_at < time.time():
            log.info("oauth.token_refused reason=invalid_code")
            return _oauth_error("invalid_grant", 'Invalid "code" in request.')
        code.used = True
        if form.get("redirect_uri") != code.redirect_uri:
            return _oauth_error("invalid_grant", 'Invalid "redirect_uri" in request.')
        if "bot" in code.scopes and code.guild_id is not None:
            # With "Requires OAuth2 Code Grant" the bot joins now, before the token response.
            self.sandbox.app_installed(code.guild_id, scopes=code.scopes, permissions=code.permissions)
        grant = self._issue(code.scopes, code.guild_id)
        log.info("oauth.exchanged guild=%s", code.guild_id)
        return _json(self._token_body(grant, guild="bot" in code.scopes))

    def _client_credentials(self, form: Mapping[str, str]) -> web.Response:
        """A token for the application's owner (the sandbox's signed-in user), with no refresh token."""
        scopes = form.get("scope", "").split()
        refused = [s for s in scopes if s not in KNOWN_SCOPES or s in CONSENT_ONLY_SCOPES]
        if not scopes or refused:
            shown = refused[0] if refused else ""
            return _oauth_error(
                "invalid_scope", f'The requested scope is invalid, unknown, or malformed: "{shown}"'
            )
        grant = self._issue(scopes, None, refreshable=False)
        log.info("oauth.client_credentials scopes=%s", " ".join(scopes))
        return _json(self._token_body(grant, guild=False))

    def _issue(self, scopes: list[str], guild_id: int | None, *, refreshable: bool = True) -> TokenGrant:
        grant = TokenGrant(
            access_token=secrets.token_urlsafe(22),
            refresh_token=secrets.token_urlsafe(22) if refreshable else None,
            scopes=scopes,
            expires_at=time.time() + ACCESS_LIFETIME,
            guild_id=guild_id,
        )
        state = self.sandbox.oauth_state
        state.access[grant.access_token] = grant
        if grant.refresh_token is not None:
            state.refresh[grant.refresh_token] = grant
        return grant

    def _token_body(self, grant: TokenGrant, *, guild: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "token_type": "Bearer",
            "access_token": grant.access_token,
            "expires_in": ACCESS_LIFETIME,
            "scope": " ".join(grant.scopes),
        }
        if grant.refresh_token is not None:
            body["refresh_token"] = grant.refresh_token
        if guild and grant.guild_id is not None:
            body["guild"] = payloads.guild(self.sandbox.world.guild(grant.guild_id))
        return body

    async def revoke(self, request: web.Request) -> web.Response:
        """POST /api/v10/oauth2/token/revoke: ends the whole authorization behind a token."""
        form = await self._form(request)
        if not self._client_ok(request, form):
            return _json({"error": "invalid_client"}, 401)
        token = form.get("token")
        if not token:
            return _oauth_error("invalid_request", 'Missing "token" in request.')
        state = self.sandbox.oauth_state
        grant = state.access.get(token) or state.refresh.get(token)
        if grant is not None:
            grant.revoked = True
            log.info("oauth.revoked")
        return _json({})
