"""GET /metrics: Prometheus' text format, off, behind the API token, or open, as METRICS says."""

from __future__ import annotations

import hmac
from collections import Counter

from aiohttp import web

from metrics import CONTENT_TYPE
from store import SyncPhase
from web.keys import BOT_STATUS, HANDOFF_STATUS, METRICS, SETTINGS, STORE
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
    """Gauges read at scrape time: the links and members from the store, the shards from the bot."""
    m = request.app[METRICS]
    guilds = await request.app[STORE].list_linked_guilds()
    states = Counter(
        (g.sync.phase.value if g.sync else "pending") if g.link.active else "removed" for g in guilds
    )
    for state in SyncPhase:
        m.links.labels(state.value).set(states[state.value])
    m.members.set(sum(g.link.member_count for g in guilds if g.link.active))
    status = request.app[BOT_STATUS].bot_status()
    m.event_queue.set(status.event_queue_depth)
    m.handoff_listening.set(1 if request.app[HANDOFF_STATUS].handoff_status().listening else 0)
    for shard in status.shards:
        m.shard_ready.labels(str(shard.shard_id)).set(1 if shard.state == "ready" else 0)
        if shard.latency_ms is not None:
            m.latency.labels(str(shard.shard_id)).set(shard.latency_ms / 1000)
