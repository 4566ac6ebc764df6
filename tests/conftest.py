"""Shared fixtures: a running sandbox, a factory for more, discord.py pointed at one, and PostgreSQL."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bot.discord_internals import discord_endpoint, use_gateway_url
from sandbox import Sandbox, SandboxOptions
from tests.postgres_cluster import PostgresMissingError, ThrowawayCluster, fresh_database

DISCORD_IDENTIFY_INTERVAL = SandboxOptions().identify_interval
ENGINES = ("sqlite", "postgres")

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
def point_discord_py() -> Iterator[Callable[[Sandbox], None]]:
    """`point_discord_py(sandbox)`: discord.py's REST base and gateway URL aimed at the sandbox until teardown."""
    with contextlib.ExitStack() as endpoints:

        def apply(sandbox: Sandbox) -> None:
            endpoints.enter_context(discord_endpoint(sandbox.base_url))
            use_gateway_url(sandbox.gateway_url)

        yield apply


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL superuser URL: GUILDLINK_TEST_POSTGRES_URL, or a throwaway cluster for this session.

    Fails (never skips) when PostgreSQL is not installed: the PostgreSQL engine is part of what is tested.
    """
    given = os.environ.get("GUILDLINK_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    cluster: ThrowawayCluster | None = None
    try:
        cluster = ThrowawayCluster.start()
    except PostgresMissingError as exc:
        missing = str(exc)
    if cluster is None:
        pytest.fail(missing, pytrace=False)
    try:
        yield cluster.url
    finally:
        cluster.stop()


@pytest.fixture
async def postgres_url(postgres_server: str) -> AsyncIterator[str]:
    """The URL of a new, empty database of its own for this test, dropped at teardown."""
    async with fresh_database(postgres_server, "guildlink_test") as url:
        yield url


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A DATABASE_URL for a new, empty database of each engine: a file in tmp_path, or a PostgreSQL database.

    A test that asks for it runs once per engine (the store's conformance suite, and what rests on it).
    """
    if engine == "postgres":
        # Asked for only here, so that the SQLite half needs no PostgreSQL.
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'db.sqlite'}"
