"""An access log that never writes a query string: the OAuth2 callback's query holds the code."""

from __future__ import annotations

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse


class PathOnlyAccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "web.request method=%s path=%s status=%d ms=%.1f",
            request.method,
            request.path,
            response.status,
            time * 1000,
        )
