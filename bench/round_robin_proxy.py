"""A tiny HTTP/1.1 reverse proxy for bench.fleet_flows: each request to the next backend in turn.

Per request, not per connection: a browser keeps its connection alive, and the point is that its /link and
its callback may land on different processes (the state's single use is in the shared database). Bodies
must have a Content-Length, as every answer of guildlink's web app and every request of the load does; it
adds X-Forwarded-For, as a real proxy would. In its own process, so that its CPU is not a server's.

`python -m bench.round_robin_proxy PORT BACKEND_URL [BACKEND_URL ...]`; prints `{"url": ...}` once
listening; stdin's end or SIGTERM stops it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sys
from dataclasses import dataclass, field
from urllib.parse import urlsplit

MAX_HEAD = 64 * 1024


class ProxyError(Exception):
    """A message this proxy does not carry (no Content-Length on a body)."""


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            return int(value.strip())
        if name == b"transfer-encoding":
            raise ProxyError("chunked bodies are not carried")
    return 0


def _keeps_alive(head: bytes) -> bool:
    return b"\r\nconnection: close" not in head.lower()


@dataclass
class Backend:
    """One server, and its idle keep-alive connections."""

    host: str
    port: int
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = field(default_factory=list)

    async def exchange(self, request: bytes) -> bytes:
        """Send one request, return the whole response; the connection goes back to `idle` if it may."""
        if self.idle:
            reader, writer = self.idle.pop()
        else:
            reader, writer = await asyncio.open_connection(self.host, self.port, limit=MAX_HEAD)
        try:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            body = await reader.readexactly(_content_length(head))
        except BaseException:
            writer.close()
            raise
        if _keeps_alive(head):
            self.idle.append((reader, writer))
        else:
            writer.close()
        return head + body


class Proxy:
    def __init__(self, backends: list[Backend]) -> None:
        self._next = itertools.cycle(backends)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")[0].encode()
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = await reader.readexactly(_content_length(head))
                forwarded = head[:-2] + b"X-Forwarded-For: " + peer + b"\r\n\r\n"
                writer.write(await next(self._next).exchange(forwarded + body))
                await writer.drain()
                if not _keeps_alive(head):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the browser closed its connection
        finally:
            writer.close()


async def run(port: int, backend_urls: list[str]) -> None:
    backends = []
    for url in backend_urls:
        parts = urlsplit(url)
        backends.append(Backend(parts.hostname or "127.0.0.1", parts.port or 80))
    server = await asyncio.start_server(Proxy(backends).serve, "127.0.0.1", port, limit=MAX_HEAD)
    print(json.dumps({"url": f"http://localhost:{port}"}), flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def until_stdin_ends() -> None:
        await reader.read()
        stop.set()

    watching = asyncio.create_task(until_stdin_ends())
    async with server:
        await stop.wait()
    watching.cancel()


def main() -> int:
    port, backends = int(sys.argv[1]), sys.argv[2:]
    if not backends:
        raise SystemExit("usage: python -m bench.round_robin_proxy PORT BACKEND_URL [BACKEND_URL ...]")
    asyncio.run(run(port, backends))
    return 0


if __name__ == "__main__":
    sys.exit(main())
