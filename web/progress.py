"""Short-lived, unguessable progress URLs for the success page: they reveal a guild's sync counts only."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from config import Secret

PROGRESS_TTL_SECONDS = 3600


class ProgressTokens:
    """Signs `guild_id:expiry` with a key derived from the client secret, so every process can check it."""

    def __init__(self, client_secret: Secret, *, ttl: int = PROGRESS_TTL_SECONDS) -> None:
        self._key = hmac.new(
            client_secret.reveal().encode(), b"guildlink progress v1", hashlib.sha256
        ).digest()
        self._ttl = ttl

    def issue(self, guild_id: int, *, now: float | None = None) -> str:
        expires = int((time.time() if now is None else now) + self._ttl)
        payload = f"{guild_id}:{expires}".encode()
        return f"{_b64(payload)}.{_b64(self._sign(payload))}"

    def guild_of(self, token: str, *, now: float | None = None) -> int | None:
        """The guild a valid, unexpired token names; None otherwise."""
        try:
            payload_part, signature_part = token.split(".")
            payload = _unb64(payload_part)
            if not hmac.compare_digest(_unb64(signature_part), self._sign(payload)):
                return None
            guild, expires = payload.decode().split(":")
            if int(expires) < (time.time() if now is None else now):
                return None
            return int(guild)
        except ValueError:
            return None

    def _sign(self, payload: bytes) -> bytes:
        return hmac.new(self._key, payload, hashlib.sha256).digest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
