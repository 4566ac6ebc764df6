"""A webhook receiver for bench.webhooks in its own process (its CPU is not the client's).

`python -m bench.webhook_receiver_worker`: prints `{"url": ...}` once listening. POST /hook answers 200 and
counts; GET /wait?count=N answers once N have arrived, with the count and the receiver's clock at the first
and last POST (so the client need not poll); POST /reset clears them. SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time

from aiohttp import web

STATS = web.AppKey("stats", dict)
ARRIVED = web.AppKey("arrived", asyncio.Condition)


async def hook(request: web.Request) -> web.Response:
    await request.read()
    stats = request.app[STATS]
    now = time.monotonic()
    stats["count"] += 1
    stats["first"] = stats["first"] or now
    stats["last"] = now
    async with request.app[ARRIVED]:
        request.app[ARRIVED].notify_all()
    return web.Response(text="ok")


async def wait(request: web.Request) -> web.Response:
    wanted = int(request.query["count"])
    stats = request.app[STATS]
    async with request.app[ARRIVED]:
        await request.app[ARRIVED].wait_for(lambda: stats["count"] >= wanted)
    return web.json_response(stats)


async def reset(request: web.Request) -> web.Response:
    request.app[STATS].update(count=0, first=0.0, last=0.0)
    return web.json_response(request.app[STATS])


async def main() -> None:
    app = web.Application()
    app[STATS] = {"count": 0, "first": 0.0, "last": 0.0}
    app[ARRIVED] = asyncio.Condition()
    app.router.add_post("/hook", hook)
    app.router.add_get("/wait", wait)
    app.router.add_post("/reset", reset)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(json.dumps({"url": f"http://127.0.0.1:{port}"}), flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
