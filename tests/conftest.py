"""Shared fixtures: a running sandbox, a factory for more, and discord.py pointed at one."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import discord
import pytest
import yarl

from sandbox import Sandbox, SandboxOptions

MakeSandbox = Callable[..., Awaitable[Sandbox]]


@pytest.fixture
async def make_sandbox() -> AsyncIterator[MakeSandbox]:
    """`await make_sandbox(SandboxOptions(...))`: a started sandbox on a free port, stopped at teardown."""
    started: list[Sandbox] = []

    async def factory(options: SandboxOptions | None = None) -> Sandbox:
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
