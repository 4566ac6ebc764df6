"""A local Discord (consent page, OAuth2, REST, gateway) for tests and for trying the flow offline."""

from __future__ import annotations

from .app import RequestRecord, Sandbox, SandboxOptions
from .errors import SandboxError
from .gateway import GatewayCommand
from .world import GuildInfo

__all__ = ["GatewayCommand", "GuildInfo", "RequestRecord", "Sandbox", "SandboxError", "SandboxOptions"]
