"""The sandbox's one exception type."""

from __future__ import annotations


class SandboxError(Exception):
    """An invalid request to the sandbox (bad OAuth2 parameters, unknown guild, ...); the message says why."""
