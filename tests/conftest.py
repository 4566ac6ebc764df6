"""Shared fixtures: a running sandbox, a factory for more, and discord.py pointed at one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace

import discord
import pytest
import yarl

from sandbox import Sandbox, SandboxOptions

DISCORD_IDENTIFY_INTERVAL = SandboxOptions().identify_interval

MakeSandbox = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
async def make_sandbox() -> AsyncIterator[MakeSandbox]:
    """`await make_sandbox(SandboxOptions(...))`: a started sandbox on a free port, stopped at teardown."""
    started: list[Sandbox] = []

    async def factory(options: SandboxOptions | None = None) -> Sandbox:
        options = options or SandboxOptions()
        if options.identify_interval == DISCORD_IDENTIFY_INTERVAL:
            # Tests reconnect and restart far more often than a bot does; those about the rate set their own.
            options = replace(options, identify_interval=0.0)
        sandbox = Sandbox(options)
        await sandbox.start()
        started.append(sandbox)
        return sandbox

    yield factory
    for sandbox in reversed(started):
        await sandbox.stop()


@pytest.fixture
async def sandbox(make_sandbox: MakeSandbox) -> Sandbox:
    """A started sandbox with the default options."""
    return await make_sandbox()


@pytest.fixture
def point_discord_py(monkeypatch: pytest.MonkeyPatch) -> Callable[[Sandbox], None]:
    """`point_discord_py(sandbox)`: discord.py's REST base and gateway URL aimed at the sandbox."""

    def apply(sandbox: Sandbox) -> None:
        monkeypatch.setattr(discord.http.Route, "BASE", f"{sandbox.base_url}/api/v10")
        monkeypatch.setattr(
            discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(sandbox.gateway_url)
        )

    return apply
