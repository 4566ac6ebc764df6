"""Bytes that are not valid HTTP: a 400, one DEBUG line without the request line, and the server goes on."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yarl

from main import CHATTY_LIBRARIES, setup_logging
from sandbox import Sandbox, SandboxOptions
from tests.harness import world
from web.malformed_requests import SERVER_LOGGER

CODE = "secretcode123"
HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
MALFORMED = {
    "bad request line": f"GET /authorize-discord?code={CODE} HTTP/1.1 extra\r\nHost: x\r\n\r\n".encode(),
    "bad HTTP version": f"GET /authorize-discord?code={CODE} HTTP/9.9\r\nHost: x\r\n\r\n".encode(),
    "bad header": f"GET /authorize-discord?code={CODE} HTTP/1.1\r\nBad Header\x01: v\r\n\r\n".encode(),
    "invalid chunked encoding": (
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\nhello\r\n0\r\n\r\n"
    ),
    "Content-Length with chunked": (
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "request line too long": f"GET /?code={CODE}{'a' * 9000} HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
    "TLS on the plain port": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(32)),
}
# aiohttp logs garbage at DEBUG only when it is a connection's first request: also send it as the second.
GARBAGE_AFTER_A_GOOD_REQUEST = f"NOT HTTP /?code={CODE}\r\n\r\n".encode()


@pytest.fixture
def main_logging() -> Iterator[None]:
    """The logging setup of main.py (at DEBUG), undone after the test."""
    server_logger = logging.getLogger(SERVER_LOGGER)
    filters = list(server_logger.filters)
    levels = {name: logging.getLogger(name).level for name in CHATTY_LIBRARIES}
    setup_logging("DEBUG")
    yield
    server_logger.filters[:] = filters
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


async def _send(web_url: str, *requests: bytes) -> list[bytes]:
    """Send the requests on one connection, each after the previous one's response; return status lines."""
    url = yarl.URL(web_url)
    reader, writer = await asyncio.open_connection(url.host, url.port)
    statuses = []
    try:
        for request in requests:
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            lines = head.split(b"\r\n")
            statuses.append(lines[0])
            length = next(
                int(line.split(b":")[1]) for line in lines if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
    finally:
        writer.close()
        await writer.wait_closed()
    return statuses


async def _send_every_kind(web_url: str) -> None:
    for request in MALFORMED.values():
        [status] = await _send(web_url, request)
        assert status.split()[1] == b"400"
    assert [s.split()[1] for s in await _send(web_url, HEALTHZ, GARBAGE_AFTER_A_GOOD_REQUEST)] == [
        b"200",
        b"400",
    ]


async def test_malformed_requests_log_one_debug_line_each_without_traceback_or_request_line(
    make_sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture, main_logging: None
) -> None:
    caplog.set_level(logging.DEBUG)
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path, ready=False) as w:
        await _send_every_kind(w.running.web_url)
        async with w.browser.session.get(w.running.web_url + "/healthz") as response:
            assert response.status == 200

    aiohttp_records = [r for r in caplog.records if r.name.startswith("aiohttp")]
    assert [r for r in aiohttp_records if r.levelno >= logging.WARNING] == []
    assert [r for r in caplog.records if r.exc_info or r.exc_text or "Traceback" in r.getMessage()] == []
    assert [r.getMessage() for r in caplog.records if CODE in r.getMessage()] == []
    malformed = [r for r in aiohttp_records if r.getMessage().startswith("web.malformed_request ")]
    assert len(malformed) == len(MALFORMED) + 1
    assert all(r.levelno == logging.DEBUG and "remote=127.0.0.1" in r.getMessage() for r in malformed)


async def test_malformed_requests_leave_no_server_log_line_above_debug(
    make_sandbox, tmp_path: Path, caplog: pytest.LogCaptureFixture, main_logging: None
) -> None:
    caplog.set_level(logging.INFO)
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path, ready=False) as w:
        await _send_every_kind(w.running.web_url)
    assert [r.getMessage() for r in caplog.records if r.name == SERVER_LOGGER] == []
