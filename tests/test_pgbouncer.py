"""guildlink behind Debian's pgbouncer: in session mode as installed it works; other modes stop start-up."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest

from main import EXIT_DATABASE, serve
from sandbox import Sandbox, SandboxOptions
from store import open_store
from tests.harness import eventually, free_port, settings_for, world
from tests.pgbouncer import ThrowawayPgbouncer, running_pgbouncer
from tests.store.records import a_link
from tests.test_fleet_handoff import SHARD_1_GUILD, process


@pytest.fixture
def pgbouncer(postgres_server: str) -> Iterator[ThrowawayPgbouncer]:
    """pgbouncer in session mode, its default, in front of the tests' PostgreSQL."""
    with running_pgbouncer(postgres_server) as bouncer:
        yield bouncer


async def test_through_pgbouncer_in_session_mode_a_guild_is_linked_synced_and_served(
    make_sandbox, tmp_path: Path, postgres_url: str, pgbouncer: ThrowawayPgbouncer
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=2500))
    env = {"DATABASE_URL": pgbouncer.url_for(postgres_url)}
    async with world(sandbox, tmp_path, env=env) as w:
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id, within=60)
        stored = await w.running.store.list_members(guild.id, limit=100_000)
        assert [m.user_id for m in stored] == sorted(int(m["user"]["id"]) for m in sandbox.members(guild.id))
        async with aiohttp.ClientSession() as session, session.get(w.running.web_url + "/readyz") as response:
            body = await response.json()
            assert response.status == 200 and body["database"] == "ok", body
    # The guild lock's session and LISTEN's connect as the pool's do: with nothing pgbouncer refuses.
    assert "unsupported startup parameter" not in pgbouncer.log


async def test_through_pgbouncer_a_guild_lock_is_one_processs_until_it_stops(
    postgres_url: str, pgbouncer: ThrowawayPgbouncer
) -> None:
    url = pgbouncer.url_for(postgres_url)
    async with open_store(url) as first, open_store(url) as second:
        lock = await first.try_lock_guild(7)
        assert lock is not None and await second.try_lock_guild(7) is None
    # Both closed without unlocking: pgbouncer resets a session its client closed (DISCARD ALL) before
    # another client gets it, so no lock is left behind on a pooled server connection.
    async with open_store(url) as third:
        taken = await third.try_lock_guild(7)
        assert taken is not None and taken.held


async def test_through_pgbouncer_a_link_reaches_its_shards_process_by_notify(
    postgres_url: str, pgbouncer: ThrowawayPgbouncer
) -> None:
    url = pgbouncer.url_for(postgres_url)
    async with process(url, 0) as a, process(url, 1) as b:
        link = await a.store.save_link(a_link(SHARD_1_GUILD))
        await a.linker.guild_linked(link)

        async def heard() -> list[int]:
            return b.local.linked

        assert await eventually(heard, within=5) == [SHARD_1_GUILD]


@pytest.mark.parametrize("pool_mode", ["transaction", "statement"])
async def test_pgbouncer_pooling_per_transaction_stops_start_up_with_one_line_before_anything_runs(
    make_sandbox,
    tmp_path: Path,
    postgres_server: str,
    postgres_url: str,
    pool_mode: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    with running_pgbouncer(postgres_server, pool_mode=pool_mode) as bouncer:
        env = {"DATABASE_URL": bouncer.url_for(postgres_url)}
        code = await serve(settings_for(sandbox, tmp_path, port=free_port(), env=env))
    err = capsys.readouterr().err
    assert code == EXIT_DATABASE
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "pooled per transaction" in err and "pool_mode = session" in err, err
    assert "pooled-pa55word" not in err
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT to_regclass('schema_version')") is None  # nothing was migrated
    finally:
        await conn.close()


async def test_a_startup_parameter_pgbouncer_refuses_is_named_with_the_setting_to_add(
    make_sandbox,
    tmp_path: Path,
    postgres_url: str,
    pgbouncer: ThrowawayPgbouncer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    # asyncpg sends DATABASE_URL's unknown query parameters as startup parameters.
    env = {"DATABASE_URL": pgbouncer.url_for(postgres_url) + "?search_path=public"}
    code = await serve(settings_for(sandbox, tmp_path, port=free_port(), env=env))
    err = capsys.readouterr().err
    assert code == EXIT_DATABASE
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "refused the startup parameter search_path" in err and "ignore_startup_parameters" in err, err
