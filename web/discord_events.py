"""POST /discord/webhook-events: Discord's signed webhook events, verified, answered 204, and acted on.

Served only with DISCORD_PUBLIC_KEY. Discord signs `X-Signature-Timestamp + body` with the application's
Ed25519 key; a request that fails the check gets 401, which Discord's own check of the URL expects.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from store import EventType
from web.keys import SETTINGS, STORE, UNCALLED_INSTALLS
from web.middleware import json_error
from web.params import ParameterError, parse_snowflake
from web.uncalled_installs import AnnouncedInstall

log = logging.getLogger(__name__)

routes = web.RouteTableDef()

PATH = "/discord/webhook-events"
# Discord's events are a few kilobytes; anything much larger is not one of them.
MAX_BODY_BYTES = 64 * 1024
# A signed request older or newer than this is refused: a captured one cannot be replayed later.
MAX_TIMESTAMP_SKEW = 300
# Discord's webhook types: 0 checks the URL, 1 carries an event.
PING, EVENT = 0, 1
GUILD_INSTALL = 0


class BadSignatureError(Exception):
    """The request is not signed by Discord with the application's key (or too long ago); answered 401."""


def verify_signature(public_key: bytes, headers: Any, body: bytes, now: float) -> None:
    """Raise BadSignatureError unless `X-Signature-Ed25519` signs `X-Signature-Timestamp + body`, timed near `now`."""
    signature_hex = headers.get("X-Signature-Ed25519", "")
    timestamp = headers.get("X-Signature-Timestamp", "")
    if not signature_hex or not timestamp:
        raise BadSignatureError("missing signature headers")
    try:
        signature = bytes.fromhex(signature_hex)
    except ValueError:
        raise BadSignatureError("signature is not hex") from None
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, timestamp.encode() + body)
    except (InvalidSignature, ValueError):
        raise BadSignatureError("signature does not verify") from None
    # Checked after the signature, so that the timestamp is Discord's own.
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise BadSignatureError("timestamp is not a number of seconds")
    if abs(now - int(timestamp)) > MAX_TIMESTAMP_SKEW:
        raise BadSignatureError("timestamp too far from now")


async def _capped_body(request: web.Request) -> bytes | None:
    """The body, or None if it is larger than MAX_BODY_BYTES (read no further than that)."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return None
    body = await request.content.read(MAX_BODY_BYTES + 1)
    return None if len(body) > MAX_BODY_BYTES else body


def _unauthorized() -> web.Response:
    return json_error(401, "invalid_signature", "The request's X-Signature-Ed25519 does not verify.")


def _invalid(parameter: str, message: str) -> web.Response:
    return web.json_response(
        {"error": "invalid_parameter", "parameter": parameter, "message": message}, status=400
    )


@routes.post(PATH)
async def webhook_events(request: web.Request) -> web.Response:
    body = await _capped_body(request)
    if body is None:
        return json_error(413, "body_too_large", f"The body must be at most {MAX_BODY_BYTES} bytes.")
    try:
        verify_signature(request.app[SETTINGS].discord_public_key or b"", request.headers, body, time.time())
    except BadSignatureError as exc:
        # The reason only: never the signature, the timestamp or the body.
        log.info("discord_events.refused reason=%s", exc)
        return _unauthorized()
    if request.content_type != "application/json":
        return json_error(415, "unsupported_media_type", "The body must be application/json.")
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return _invalid("body", "The body must be a JSON object, as Discord sends.")
    if not isinstance(payload, dict) or payload.get("type") not in (PING, EVENT):
        return _invalid("type", "type must be 0 (PING) or 1 (event).")
    if payload["type"] == PING:
        log.info("discord_events.ping")
        return web.Response(status=204)
    event = payload.get("event")
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return _invalid("event", "event must be an object with a type.")
    try:
        await _handle(request, event["type"], event.get("data"))
    except ParameterError as exc:
        log.info("discord_events.malformed type=%s parameter=%s", event["type"][:40], exc.parameter)
        return _invalid(exc.parameter, str(exc))
    return web.Response(status=204)


async def _handle(request: web.Request, kind: str, data: object) -> None:
    if kind == "APPLICATION_AUTHORIZED":
        install = _server_install(_object(data, "event.data"))
        if install is None:
            log.debug("discord_events.user_install")
            return
        log.info("discord_events.install_announced guild=%d user=%d", install.guild_id, install.user_id)
        request.app[UNCALLED_INSTALLS].announced(install)
    elif kind == "APPLICATION_DEAUTHORIZED":
        user_id, _ = _user(_object(data, "event.data"))
        await request.app[STORE].announce(EventType.APP_DEAUTHORIZED, 0, {"user_id": str(user_id)})
        log.info("discord_events.deauthorized user=%d", user_id)
    else:
        log.debug("discord_events.ignored type=%s", kind[:40])


def _object(value: object, parameter: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ParameterError(parameter, f"{parameter} must be an object.")
    return value


def _text(value: object, parameter: str) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= 200 or not value.isprintable():
        raise ParameterError(parameter, f"{parameter} must be 1 to 200 printable characters.")
    return value


def _snowflake(value: object, parameter: str) -> int:
    if not isinstance(value, str):
        raise ParameterError(parameter, f"{parameter} must be a Discord id (a string of digits).")
    return parse_snowflake(value, parameter)


def _user(data: dict[str, Any]) -> tuple[int, str]:
    user = _object(data.get("user"), "event.data.user")
    return _snowflake(user.get("id"), "event.data.user.id"), _text(
        user.get("username"), "event.data.user.username"
    )


def _server_install(data: dict[str, Any]) -> AnnouncedInstall | None:
    """The server install APPLICATION_AUTHORIZED announces; None for a user install (no guild)."""
    if data.get("integration_type") != GUILD_INSTALL or data.get("guild") is None:
        return None
    guild = _object(data.get("guild"), "event.data.guild")
    user_id, username = _user(data)
    scopes = data.get("scopes", [])
    if not isinstance(scopes, list) or not all(
        isinstance(scope, str) and scope.isprintable() for scope in scopes
    ):
        raise ParameterError("event.data.scopes", "event.data.scopes must be a list of scope names.")
    return AnnouncedInstall(
        guild_id=_snowflake(guild.get("id"), "event.data.guild.id"),
        guild_name=_text(guild.get("name"), "event.data.guild.name"),
        user_id=user_id,
        username=username,
        scopes=tuple(scope[:64] for scope in scopes[:32]),
        announced_at=datetime.now(UTC),
    )
