"""A backend's webhook receiver on a real socket, recording every attempt; and the README's own verifier."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

README = Path(__file__).resolve().parents[2] / "README.md"
WEBHOOK_SECRET = "webhook-secret-for-tests-" + "s" * 32

Verifier = Callable[..., bool]


def readme_verifier() -> Verifier:
    """`verify_guildlink_signature` exactly as the README's Webhooks section writes it for receivers."""
    section = README.read_text(encoding="utf-8").split("\n## Webhooks\n", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md (Webhooks)", "exec"), namespace)
    verifier: Verifier = namespace["verify_guildlink_signature"]
    return verifier


@dataclass(frozen=True)
class Attempt:
    """One POST as it reached the receiver, and the status it was answered."""

    headers: dict[str, str]
    body: bytes
    at: float
    status: int

    @property
    def event(self) -> dict[str, Any]:
        event: dict[str, Any] = json.loads(self.body)
        return event


@dataclass
class Receiver:
    """Answers each POST with `answer(attempt_number, event)`'s status (200 unless told otherwise)."""

    url: str = ""
    attempts: list[Attempt] = field(default_factory=list)
    answer: Callable[[int, dict[str, Any]], int] = lambda number, event: 200
    # Seconds to wait before answering (a slow backend).
    delay: float = 0.0

    def accepted(self) -> list[dict[str, Any]]:
        """The events answered 2xx, in arrival order (duplicates included)."""
        return [a.event for a in self.attempts if 200 <= a.status < 300]

    def accepted_once(self) -> list[dict[str, Any]]:
        """The accepted events as a receiver that deduplicates by Guildlink-Event-Id keeps them."""
        seen: set[str] = set()
        kept = []
        for attempt in self.attempts:
            event_id = attempt.headers["Guildlink-Event-Id"]
            if 200 <= attempt.status < 300 and event_id not in seen:
                seen.add(event_id)
                kept.append(attempt.event)
        return kept


@contextlib.asynccontextmanager
async def receiving(receiver: Receiver | None = None) -> AsyncIterator[Receiver]:
    """The receiver on 127.0.0.1 and a free port; its `url` set."""
    receiver = receiver or Receiver()

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        if receiver.delay:
            await asyncio.sleep(receiver.delay)
        status = receiver.answer(len(receiver.attempts) + 1, json.loads(body))
        receiver.attempts.append(Attempt(dict(request.headers), body, time.monotonic(), status))
        return web.Response(status=status, text="ok" if status < 300 else "not now")

    async with posted_to(handle) as url:
        receiver.url = url
        yield receiver


@contextlib.asynccontextmanager
async def posted_to(handle: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> AsyncIterator[str]:
    """`handle` answering POSTs on 127.0.0.1 and a free port; yields the URL to POST to."""
    app = web.Application()
    app.router.add_post("/hooks/guildlink", handle)
    # No access log: a receiver's lines would muddle tests that read guildlink's own log. A handler still
    # streaming its answer stops when guildlink drops the connection.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}/hooks/guildlink"
    finally:
        await runner.cleanup()
