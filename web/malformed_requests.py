"""Malformed HTTP requests logged as one DEBUG line, not as an ERROR with a traceback."""

from __future__ import annotations

import logging

from aiohttp.http import HttpProcessingError

# Where aiohttp's RequestHandler.handle_error logs a request it could not parse ("Error handling request
# from %s"): at ERROR with a traceback, except a first request with a bad method, which it logs at DEBUG
# (still with the traceback).
SERVER_LOGGER = "aiohttp.server"
_AIOHTTP_MESSAGE = "Error handling request from %s"


class MalformedRequestFilter(logging.Filter):
    """On aiohttp's server logger: a request that is not valid HTTP becomes one DEBUG line.

    Scanners and TLS probes send these all day; they are the client's fault, not ours, so they do not
    belong at ERROR. The traceback goes: aiohttp's parser quotes the offending bytes in the exception's
    message, request line included, and that line may hold an OAuth2 code in its query string.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        # The logger let the record through at its original level: decide again at DEBUG.
        if not logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return False
        remote = record.args[0] if record.msg == _AIOHTTP_MESSAGE and isinstance(record.args, tuple) else "-"
        record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        record.msg = "web.malformed_request remote=%s error=%s"
        record.args = (remote, type(exc).__name__)
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def quiet_malformed_requests() -> None:
    """Install MalformedRequestFilter on aiohttp's server logger, once."""
    server_logger = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(f, MalformedRequestFilter) for f in server_logger.filters):
        server_logger.addFilter(MalformedRequestFilter())
