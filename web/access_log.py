"""An access log that never writes a query string (the OAuth2 callback's query holds the code), nor a token in a path."""

from __future__ import annotations

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web import BaseRequest, StreamResponse

from printable import printable

# Routes whose path carries a bearer secret (an invite, a progress link): logged as their template.
SECRET_PATH_PREFIXES = ("/start/", "/progress/")


def loggable_path(request: BaseRequest) -> str:
    """The path, escaped, with the token of a secret-bearing route replaced by a placeholder."""
    for prefix in SECRET_PATH_PREFIXES:
        if request.path.startswith(prefix):
            return prefix + "{token}"
    # The path arrives percent-decoded: escaped, a "%0a" in it cannot start a forged log line.
    return printable(request.path)


class PathOnlyAccessLogger(AbstractAccessLogger):
    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info(
            "web.request method=%s path=%s status=%d ms=%.1f",
            printable(request.method),
            loggable_path(request),
            response.status,
            time * 1000,
        )
