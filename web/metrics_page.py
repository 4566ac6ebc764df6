"""GET /metrics: Prometheus' text format, off, behind the API token, or open, as METRICS says."""

from __future__ import annotations

import hmac

from aiohttp import web

from metrics import CONTENT_TYPE
from store import SyncPhase
from web.keys import BOT_STATUS, HANDOFF_STATUS, METRICS, SETTINGS, STORE_COUNTS
from web.middleware import json_error

routes = web.RouteTableDef()


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    if settings.metrics == "off":
        raise web.HTTPNotFound()
    if settings.metrics == "token":
        token = settings.api_token
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        if token is None:
            return json_error(
                503, "metrics_need_api_token", "METRICS=token needs API_TOKEN; or set METRICS=open."
            )
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            presented.encode(errors="replace"), token.reveal().encode()
        ):
            return json_error(401, "unauthorized", "Send Authorization: Bearer <API_TOKEN>.")
    await _refresh(request)
    return web.Response(body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE})


async def _refresh(request: web.Request) -> None:
    """Gauges read at scrape time: link counts and the webhook lag from the store (at most once every few
    seconds, however many scrape), the shards from the bot."""
    m, counts = request.app[METRICS], request.app[STORE_COUNTS]
    links = await counts.links.get()
    for state in SyncPhase:
        m.links.labels(state.value).set(links.states.get(state.value, 0))
    m.members.set(links.members)
    if counts.webhook_lag is not None:
        lag = await counts.webhook_lag.get()
        m.webhook_backlog.set(lag.backlog.events)
        m.webhook_oldest_age.set(lag.oldest_age())
        m.webhook_failures.set(lag.cursor.failures)
    status = request.app[BOT_STATUS].bot_status()
    m.event_queue.set(status.event_queue_depth)
    m.handoff_listening.set(1 if request.app[HANDOFF_STATUS].handoff_status().listening else 0)
    for shard in status.shards:
        m.shard_ready.labels(str(shard.shard_id)).set(1 if shard.state == "ready" else 0)
        if shard.latency_ms is not None:
            m.latency.labels(str(shard.shard_id)).set(shard.latency_ms / 1000)
