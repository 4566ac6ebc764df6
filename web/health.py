"""Liveness and readiness probes."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from store import StoreUnavailableError
from web.feed import json_time
from web.keys import BOT_STATUS, DATABASE_PROBE, HANDOFF_STATUS, STORE_COUNTS, SUPERVISOR

log = logging.getLogger(__name__)

routes = web.RouteTableDef()


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    """200 only when the gateway session is ready, the database takes writes, (in a fleet) links can reach
    this process and no background task keeps crashing; else 503 with the reasons."""
    reasons: list[str] = []
    status = request.app[BOT_STATUS].bot_status()
    if not status.ready:
        not_ready = [f"shard {s.shard_id} is {s.state}" for s in status.shards if s.state != "ready"]
        reasons.append(
            f"bot gateway session is {status.state}" + (f" ({', '.join(not_ready)})" if not_ready else "")
        )
    problem = await request.app[DATABASE_PROBE].problem()
    if problem:
        log.warning("readyz.database_problem reason=%s", problem)
        reasons.append(problem)
    handoff = request.app[HANDOFF_STATUS].handoff_status()
    if not handoff.listening:
        reasons.append(
            "not listening for links of this process's shards (PostgreSQL LISTEN is reconnecting;"
            " they are caught up once it is back)"
        )
    failing = request.app[SUPERVISOR].failing()
    reasons.extend(
        f"background task {task.name} keeps failing ({task.crashes} crashes in a row, the last"
        f" {task.error}; restarted after growing waits)"
        for task in failing
    )
    body = {
        "status": "not ready" if reasons else "ready",
        "reasons": reasons,
        "bot": {"state": status.state, "latency_ms": status.latency_ms, "guilds": status.guild_count},
        "shards": [
            {"id": s.shard_id, "state": s.state, "latency_ms": s.latency_ms, "guilds": s.guild_count}
            for s in status.shards
        ],
        "database": problem or "ok",
        "handoff": {
            "mode": handoff.mode,
            "listening": handoff.listening,
            "last_notify_lag_ms": handoff.last_notify_lag_ms,
            "notices_heard": handoff.notices_heard,
            "caught_up": handoff.caught_up,
        },
        "failing_tasks": [
            {"name": task.name, "crashes": task.crashes, "error": task.error} for task in failing
        ],
        "webhooks": await webhook_details(request),
    }
    return web.json_response(body, status=503 if reasons else 200)


async def webhook_details(request: web.Request) -> dict[str, Any] | None:
    """The delivery lag (details only: a receiver that refuses events is no reason to stop serving); None: off."""
    lag_reading = request.app[STORE_COUNTS].webhook_lag
    if lag_reading is None:
        return None
    try:
        lag = await lag_reading.get()
    except StoreUnavailableError as exc:
        return {"error": exc.reason}
    return {
        "backlog_events": lag.backlog.events,
        "oldest_undelivered_age_seconds": round(lag.oldest_age(), 1),
        "failures": lag.cursor.failures,
        "retry_at": json_time(lag.cursor.retry_at) if lag.cursor.retry_at else None,
    }
