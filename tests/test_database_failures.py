"""A read-only or full disk: a plain exit at start-up; at run time 503s with the reason, and nothing lost after."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from main import EXIT_DATABASE, serve
from sandbox import Sandbox, SandboxOptions
from tests.harness import eventually, free_port, settings_for, world


@contextlib.contextmanager
def small_disk(path: Path, size: str, *, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of `size` mounted at `path` (the tests run as root, as CI does): a real disk that fills up."""
    path.mkdir()
    options = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(disk: Path) -> Path:
    """Write a file until the disk has no byte left."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for block in (65536, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * block)
    finally:
        os.close(fd)
    return filler


async def test_a_read_only_database_stops_start_up_with_one_line(
    make_sandbox, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    with small_disk(tmp_path / "ro", "1m", read_only=True) as disk:
        settings = settings_for(
            sandbox, tmp_path, port=free_port(), env={"DATABASE_URL": f"sqlite:///{disk}/guildlink.db"}
        )
        code = await serve(settings)
    err = capsys.readouterr().err
    assert code == EXIT_DATABASE
    assert err.count("\n") == 1 and "read-only" in err.lower() and "Traceback" not in err


async def test_a_full_disk_is_reported_and_nothing_is_lost_once_space_returns(
    make_sandbox, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=2, members=20_000))
    with small_disk(tmp_path / "disk", "12m") as disk:
        env = {"DATABASE_URL": f"sqlite:///{disk}/guildlink.db"}
        async with world(sandbox, tmp_path, env=env) as w:
            first, second = sandbox.managed_guilds()[:2]
            await w.link_and_sync(first.id, within=60)
            filler = fill(disk)

            status, _ = await w.browser.link_guild(second.id)
            session = w.browser.session
            ready_url = w.running.web_url + "/readyz"

            async def not_ready_for_the_disk() -> bool:
                async with session.get(ready_url) as response:
                    body = await response.json()
                    return response.status == 503 and "full" in body["database"]

            await eventually(not_ready_for_the_disk, within=30)
            # Whatever the link's page said (its row may have fit), the guild is stored whole once space returns.
            os.remove(filler)

            async def ready() -> bool:
                async with session.get(ready_url) as response:
                    return response.status == 200

            await eventually(ready, within=60)
            if status != 200:  # the link did not fit: the admin is told to try again, and does
                status, page = await w.browser.link_guild(second.id)
                assert status == 200, page
            for guild in (first, second):

                async def synced(guild_id: int = guild.id) -> bool:
                    sync = await w.running.store.get_sync_state(guild_id)
                    return sync is not None and sync.phase.value == "synced"

                await eventually(synced, within=90)
                stored = await w.running.store.list_members(guild.id, limit=100_000)
                assert [m.user_id for m in stored] == sorted(
                    int(m["user"]["id"]) for m in sandbox.members(guild.id)
                )


async def test_the_api_answers_503_with_the_reason_when_the_store_fails(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    async with world(sandbox, tmp_path) as w:
        token = w.running.settings.api_token
        assert token is not None

        async def refuse(*args: object, **kwargs: object) -> bool:
            from store import StoreUnavailableError

            raise StoreUnavailableError("the disk holding the database is full")

        w.running.store.add_invite = refuse  # type: ignore[method-assign]
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                w.running.web_url + "/api/links",
                json={"ref": "r"},
                headers={"Authorization": f"Bearer {token.reveal()}"},
            ) as response,
        ):
            body = await response.json()
            assert response.status == 503 and response.headers["Retry-After"] == "30"
        assert body["error"] == "store_unavailable" and "disk" in body["message"]
