"""Discord's webhook events, as Discord sends them: signed with the application's Ed25519 key, POSTed to its URL.

Setting the URL checks it as the Developer Portal does: a signed PING must get a 2xx, and a request with a
bad signature a 401. Then APPLICATION_AUTHORIZED follows each install and APPLICATION_DEAUTHORIZED each removal
by a user; the deliveries are recorded for the tests.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

log = logging.getLogger(__name__)

PING, EVENT = 0, 1
DELIVERY_TIMEOUT = 10.0


def signing_key(seed: int) -> Ed25519PrivateKey:
    """The application's key pair, the same for the same seed (a world kept across restarts keeps its key)."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"verify:{seed}".encode()).digest())


def public_key_hex(key: Ed25519PrivateKey) -> str:
    """The public key as the Developer Portal shows it (and /applications/@me's verify_key)."""
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


@dataclass(frozen=True, slots=True)
class Delivery:
    """One POST to the webhook events URL: the event type (PING for a check) and the answer's status (0: none)."""

    type: str
    status: int


class AppEvents:
    """The application's webhook events: a URL, the key that signs them, and what was delivered."""

    def __init__(self, key: Ed25519PrivateKey, application_id: int, url: str | None = None) -> None:
        self._key = key
        self._application_id = application_id
        self.url = url
        self.deliveries: list[Delivery] = []
        self._session: aiohttp.ClientSession | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def signed_headers(self, body: bytes, *, timestamp: int | None = None) -> dict[str, str]:
        """Discord's headers for `body`: X-Signature-Ed25519 over X-Signature-Timestamp + body."""
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self._key.sign(stamp.encode() + body).hex()
        return {
            "Content-Type": "application/json",
            "X-Signature-Ed25519": signature,
            "X-Signature-Timestamp": stamp,
        }

    def body(self, kind: int, event_type: str | None = None, data: dict[str, Any] | None = None) -> bytes:
        payload: dict[str, Any] = {"version": 1, "application_id": str(self._application_id), "type": kind}
        if kind == EVENT:
            payload["event"] = {
                "type": event_type,
                "timestamp": datetime.now(UTC).replace(tzinfo=None).isoformat(),
                "data": data or {},
            }
        return json.dumps(payload).encode()

    async def check_url(self, url: str) -> str | None:
        """Discord's check of a new URL: None if it passes (then events go there), else why not."""
        body = self.body(PING)
        status = await self._post(url, body, self.signed_headers(body))
        self.deliveries.append(Delivery("PING", status))
        if not 200 <= status < 300:
            return f"the PING got {status or 'no answer'}, not 204"
        bad = self.signed_headers(body)
        bad["X-Signature-Ed25519"] = "00" * 64
        status = await self._post(url, body, bad)
        self.deliveries.append(Delivery("PING (bad signature)", status))
        if status != 401:
            return f"a bad signature got {status or 'no answer'}, not 401"
        self.url = url
        log.info("app_events.url_set")
        return None

    def send(self, event_type: str, data: dict[str, Any]) -> None:
        """POST the event in the background (Discord does not wait for us either); nothing without a URL."""
        if self.url is None:
            return
        body = self.body(EVENT, event_type, data)
        task = asyncio.get_running_loop().create_task(self._deliver(self.url, event_type, body))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _deliver(self, url: str, event_type: str, body: bytes) -> None:
        status = await self._post(url, body, self.signed_headers(body))
        self.deliveries.append(Delivery(event_type, status))
        log.info("app_events.delivered type=%s status=%d", event_type, status)

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        if self._session is None:
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=False))
        try:
            async with self._session.post(
                url, data=body, headers=headers, timeout=aiohttp.ClientTimeout(total=DELIVERY_TIMEOUT)
            ) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("app_events.unreachable error=%s", type(exc).__name__)
            return 0

    async def close(self) -> None:
        for task in list(self._sending):
            task.cancel()
        await asyncio.gather(*self._sending, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
