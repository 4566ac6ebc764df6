"""OAuth2 `state`: sealed (AES-GCM), stateless until used, single use, short-lived, bound to one browser.

Issuing a state stores nothing, so a flood of /link cannot push an admin's flow out of any pool; only the
nonce of a state that came back is recorded, to refuse its second use. Every process that shares the client
secret can open any process's states.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import struct
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TypeGuard

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from config import Secret
from store import Store

STATE_TTL = timedelta(minutes=10)
BROWSER_COOKIE = "guildlink_browser"
# Under HTTPS the cookie takes the __Host- prefix: the browser then refuses it unless it is Secure, has
# Path=/ and no Domain, so a sibling subdomain cannot plant a browser id of its choosing.
SECURE_BROWSER_COOKIE = "__Host-guildlink_browser"
_NONCE_BYTES = 12
_BROWSER_HASH_BYTES = 16
_HEADER = struct.Struct(">Q16s")  # expiry (Unix seconds), browser hash; the invite token follows
_ASSOCIATED_DATA = b"guildlink state v2"
# A sealed state with an invite token is about 130 characters; anything far longer is not ours.
MAX_STATE_LENGTH = 512


def new_token() -> str:
    """256 bits from `secrets`, URL-safe."""
    return secrets.token_urlsafe(32)


def is_token(value: str | None) -> TypeGuard[str]:
    """Shaped like `new_token()`'s output (browser ids, invite tokens)."""
    return value is not None and 32 <= len(value) <= 64 and value.replace("-", "").replace("_", "").isalnum()


def token_hash(token: str) -> bytes:
    # Only a hash is stored, so the database alone can't be replayed as a cookie or an invite.
    return hashlib.sha256(token.encode()).digest()


def browser_cookie_name(serves_https: bool) -> str:
    return SECURE_BROWSER_COOKIE if serves_https else BROWSER_COOKIE


class StateProblem(Enum):
    """Why a callback's state was refused."""

    MISSING = "missing"
    UNKNOWN = "unknown or already used"
    EXPIRED = "expired"
    OTHER_BROWSER = "opened in another browser"


@dataclass(frozen=True, slots=True)
class AcceptedState:
    """A state that passed every check; `invite_token` if the flow started from a backend's invite."""

    invite_token: str | None


class StateKeeper:
    """Seals states for browsers and checks them on the way back."""

    def __init__(self, client_secret: Secret, store: Store) -> None:
        key = hmac.new(client_secret.reveal().encode(), b"guildlink oauth state v2", hashlib.sha256).digest()
        self._aead = AESGCM(key)
        self._store = store

    def issue(self, browser_id: str, *, invite_token: str | None = None, now: float | None = None) -> str:
        """A fresh state bound to `browser_id`, carrying the invite it started from, if any."""
        expires = int((time.time() if now is None else now) + STATE_TTL.total_seconds())
        plaintext = _HEADER.pack(expires, _browser_hash(browser_id)) + (invite_token or "").encode()
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plaintext, _ASSOCIATED_DATA)
        return base64.urlsafe_b64encode(sealed).decode().rstrip("=")

    async def accept(
        self, state: str | None, browser_id: str | None, *, now: float | None = None
    ) -> AcceptedState | StateProblem:
        """Open `state`, check its browser and age, then use it up; a refused state is not used up."""
        if not state:
            return StateProblem.MISSING
        opened = self._open(state)
        if opened is None:
            return StateProblem.UNKNOWN
        nonce, expires, bound_to, invite = opened
        if expires <= (time.time() if now is None else now):
            return StateProblem.EXPIRED
        # No cookie matches nothing: every state we seal is bound to a browser.
        if not is_token(browser_id) or not hmac.compare_digest(_browser_hash(browser_id), bound_to):
            return StateProblem.OTHER_BROWSER
        if not await self._store.use_state_once(nonce, datetime.fromtimestamp(expires, UTC)):
            return StateProblem.UNKNOWN
        return AcceptedState(invite_token=invite or None)

    def _open(self, state: str) -> tuple[bytes, int, bytes, str] | None:
        if len(state) > MAX_STATE_LENGTH or not state.isascii():
            return None
        try:
            sealed = base64.urlsafe_b64decode(state + "=" * (-len(state) % 4))
            nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
            plaintext = self._aead.decrypt(nonce, ciphertext, _ASSOCIATED_DATA)
            expires, bound_to = _HEADER.unpack_from(plaintext)
            invite = plaintext[_HEADER.size :].decode("ascii")
        except (binascii.Error, ValueError, InvalidTag, struct.error, UnicodeDecodeError):
            return None
        return nonce, expires, bound_to, invite


def _browser_hash(browser_id: str) -> bytes:
    return hashlib.sha256(browser_id.encode()).digest()[:_BROWSER_HASH_BYTES]
