"""Helpers for driving the real discord.py client against the sandbox."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import discord

from sandbox import Sandbox


def intents(*, members: bool = True) -> discord.Intents:
    """The default intents, with or without the privileged members intent."""
    value = discord.Intents.default()
    value.members = members
    return value


def make_client(*, members: bool = True, **options: Any) -> discord.Client:
    """A discord.Client with a short guild_ready_timeout (discord.py waits that long after the last GUILD_CREATE)."""
    options.setdefault("guild_ready_timeout", 0.3)
    return discord.Client(intents=intents(members=members), **options)


class EventLog:
    """Records discord.py events by name and lets a test wait for one."""

    def __init__(self, client: discord.Client, *names: str) -> None:
        self.events: dict[str, list[tuple[Any, ...]]] = {name: [] for name in names}
        self._changed = asyncio.Condition()
        for name in names:
            client.event(self._recorder(name))

    def _recorder(self, name: str) -> Callable[..., Any]:
        async def record(*args: Any) -> None:
            self.events[name].append(args)
            async with self._changed:
                self._changed.notify_all()

        record.__name__ = f"on_{name}"
        return record

    async def wait(
        self, name: str, predicate: Callable[..., bool] = lambda *a: True, *, within: float = 10.0
    ) -> tuple[Any, ...]:
        """The first recorded `name` event whose arguments satisfy the predicate."""

        def find() -> tuple[Any, ...] | None:
            return next((args for args in self.events[name] if predicate(*args)), None)

        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: find() is not None)
        found = find()
        assert found is not None
        return found


def raw_dispatches(client_events: EventLog, event: str) -> list[dict[str, Any]]:
    """Gateway dispatches of one type seen through `on_socket_raw_receive` (needs enable_debug_events)."""
    found = []
    for (raw,) in client_events.events["socket_raw_receive"]:
        msg = json.loads(raw)
        if msg.get("t") == event:
            found.append(msg)
    return found


@contextlib.asynccontextmanager
async def running(
    client: discord.Client, sandbox: Sandbox, *, within: float = 30.0
) -> AsyncIterator[discord.Client]:
    """Run `client.start` against the sandbox until READY; close it afterwards."""
    ready = asyncio.Event()

    async def on_ready() -> None:
        ready.set()

    client.event(on_ready)
    task = asyncio.create_task(client.start(sandbox.bot_token))
    waiter = asyncio.create_task(ready.wait())
    try:
        done, _ = await asyncio.wait({task, waiter}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            task.result()
            raise AssertionError("client.start returned before READY")
        if waiter not in done:
            raise TimeoutError("discord.py did not become ready")
        yield client
    finally:
        waiter.cancel()
        await client.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
