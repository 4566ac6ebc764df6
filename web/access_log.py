"""An access log that never writes a query string: the OAuth2 callback's query holds the code."""

from __future__ import annotations

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from printable import printable


class PathOnlyAccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        # The path arrives percent-decoded: escaped, a "%0a" in it cannot start a forged log line.
        self.logger.info(
            "web.request method=%s path=%s status=%d ms=%.1f",
            printable(request.method),
            printable(request.path),
            response.status,
            time * 1000,
        )
