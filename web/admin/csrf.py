"""CSRF tokens for the console's forms: an HMAC of the session id, so a token is worth nothing in another session."""

from __future__ import annotations

import hashlib
import hmac

from config import Secret
from web.admin.session import Session, b64

CSRF_FIELD = "csrf"


class CsrfTokens:
    """Makes and checks the hidden `csrf` field of every console form (POST)."""

    def __init__(self, api_token: Secret) -> None:
        self._key = hmac.new(api_token.reveal().encode(), b"guildlink admin csrf v1", hashlib.sha256).digest()

    def token(self, session: Session) -> str:
        return b64(hmac.new(self._key, session.id, hashlib.sha256).digest())

    def matches(self, session: Session | None, presented: object) -> bool:
        """`presented` is this session's token (compared in constant time); never without a session."""
        if session is None or not isinstance(presented, str) or not presented:
            return False
        return hmac.compare_digest(presented.encode(errors="replace"), self.token(session).encode())
