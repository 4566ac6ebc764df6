"""The console's sessions: signed, stateless cookies that any process holding the same API token can check.

A cookie carries a random session id, when the session started and when it was last used, and an HMAC-SHA256
over them with a key derived from API_TOKEN. Nothing is kept on the server, so a fleet of processes behind
one proxy shares sessions; changing API_TOKEN ends every session at once. A session ends 1 hour after its
last page or form, and 8 hours after sign-in whatever happens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
import time
from dataclasses import dataclass, replace

from config import Secret

IDLE_TIMEOUT_SECONDS = 3600
MAX_AGE_SECONDS = 8 * 3600
# The sign-in form's own short session: only its CSRF token depends on it.
SIGN_IN_FORM_SECONDS = 3600

SESSION_COOKIE = "guildlink_admin"
SIGN_IN_COOKIE = "guildlink_admin_sign_in"
# Under HTTPS the __Host- prefix makes the browser refuse the cookie unless it is Secure, has Path=/ and no
# Domain: a sibling subdomain cannot plant a session of its choosing.
HOST_PREFIX = "__Host-"

_VERSION = 1
_ID_BYTES = 16
_PAYLOAD = struct.Struct(">BB16sQQ")  # version, signed in, session id, started, last seen (Unix seconds)
_TAG_BYTES = 32
# Exactly what issue() makes; anything else is refused before any decoding.
_COOKIE_LENGTH = len(base64.urlsafe_b64encode(bytes(_PAYLOAD.size + _TAG_BYTES)).rstrip(b"="))


@dataclass(frozen=True, slots=True)
class Session:
    """One browser's session: `signed_in` False for the sign-in form's short session."""

    id: bytes
    signed_in: bool
    started: int
    seen: int

    @property
    def ref(self) -> str:
        """A short name for logs: a hash of the id, so a log line never helps to forge anything."""
        return hashlib.sha256(self.id).hexdigest()[:12]


def cookie_name(base: str, serves_https: bool) -> str:
    return HOST_PREFIX + base if serves_https else base


def cookie_path(serves_https: bool) -> str:
    # __Host- demands Path=/; over plain HTTP the cookie is kept to the console's own paths.
    return "/" if serves_https else "/admin"


class SessionKeeper:
    """Issues session cookies and checks the ones that come back."""

    def __init__(self, api_token: Secret) -> None:
        secret = api_token.reveal().encode()
        self._key = hmac.new(secret, b"guildlink admin session v1", hashlib.sha256).digest()

    def start(self, *, signed_in: bool, now: float | None = None) -> Session:
        """A new session with a fresh random id (a sign-in never keeps the form's id)."""
        stamp = int(time.time() if now is None else now)
        return Session(os.urandom(_ID_BYTES), signed_in, stamp, stamp)

    def touch(self, session: Session, *, now: float | None = None) -> Session:
        """The same session, used now: its idle time starts again."""
        return replace(session, seen=int(time.time() if now is None else now))

    def seal(self, session: Session) -> str:
        """The cookie value for `session`."""
        payload = _PAYLOAD.pack(_VERSION, session.signed_in, session.id, session.started, session.seen)
        return b64(payload + self._tag(payload))

    def open(self, cookie: str | None, *, now: float | None = None) -> Session | None:
        """The session a cookie carries if we signed it and it has not expired; None otherwise."""
        if cookie is None or len(cookie) != _COOKIE_LENGTH or not cookie.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(cookie + "=" * (-len(cookie) % 4))
        except (binascii.Error, ValueError):
            return None
        payload, tag = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
        if not hmac.compare_digest(tag, self._tag(payload)):
            return None
        version, signed_in, session_id, started, seen = _PAYLOAD.unpack(payload)
        if version != _VERSION:
            return None
        session = Session(session_id, bool(signed_in), started, seen)
        return session if self.seconds_left(session, now=now) > 0 else None

    def seconds_left(self, session: Session, *, now: float | None = None) -> int:
        """Until the session expires: idle or absolute, whichever comes first."""
        # Whole seconds, as the cookie keeps its times: a session is over at its last second, not after it.
        current = int(time.time() if now is None else now)
        if not session.signed_in:
            return session.started + SIGN_IN_FORM_SECONDS - current
        return min(session.seen + IDLE_TIMEOUT_SECONDS, session.started + MAX_AGE_SECONDS) - current

    def _tag(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")
