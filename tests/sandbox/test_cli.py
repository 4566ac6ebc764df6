"""`python -m sandbox` as a process: the JSON first line, the HTTP controls, and a 100k-member chunk."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.discord_internals import discord_endpoint, use_gateway_url
from sandbox.__main__ import build_parser, options_from, parse_args
from tests.sandbox.helpers import make_client

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
async def cli() -> AsyncIterator[tuple[dict[str, Any], float]]:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sandbox",
        "--members",
        "100000",
        "--port",
        "0",
        "--redirect-uri",
        "https://localhost:8080/authorize-discord",
        "--redirect-uri",
        "http://127.0.0.1:9999/cb",
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        first = await asyncio.wait_for(proc.stdout.readline(), 30)
        elapsed = time.perf_counter() - started
        yield json.loads(first), elapsed
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 15)
        assert proc.returncode == 0


async def test_cli_serves_a_100k_member_guild_to_discord_py(cli: tuple[dict[str, Any], float]) -> None:
    info, startup = cli
    print(f"\npython -m sandbox --members 100000: first line after {startup:.2f}s")
    assert set(info) == {
        "base_url",
        "client_id",
        "client_secret",
        "bot_token",
        "verify_key",
        "redirect_uris",
        "guilds",
    }
    assert info["redirect_uris"] == ["https://localhost:8080/authorize-discord", "http://127.0.0.1:9999/cb"]
    assert len(info["guilds"]) == 3
    assert all(isinstance(g["id"], str) and g["member_count"] == 100_000 for g in info["guilds"])
    base = info["base_url"]
    guild_id = info["guilds"][0]["id"]
    async with aiohttp.ClientSession() as http:
        query = {
            "client_id": info["client_id"],
            "response_type": "code",
            "scope": "bot",
            "redirect_uri": "http://127.0.0.1:9999/cb",
            "state": "s",
        }
        async with http.post(f"{base}/_sandbox/authorize", json={**query, "guild_id": guild_id}) as resp:
            assert resp.status == 200
            location = (await resp.json())["location"]
        assert location.startswith("http://127.0.0.1:9999/cb?code=")
        async with http.post(f"{base}/_sandbox/authorize", json={**query, "deny": True}) as resp:
            assert "error=access_denied" in (await resp.json())["location"]
        async with http.post(
            f"{base}/_sandbox/authorize", json={**query, "redirect_uri": "https://x/"}
        ) as resp:
            assert resp.status == 400
            assert "redirect_uri" in (await resp.json())["error"]
        async with http.put(f"{base}/_sandbox/guilds/{guild_id}/bot") as resp:
            assert resp.status == 200
        async with http.get(
            f"{base}/api/v10/gateway/bot", headers={"Authorization": f"Bot {info['bot_token']}"}
        ) as r:
            gateway_url = (await r.json())["url"]

        with discord_endpoint(base):
            use_gateway_url(gateway_url)
            client = make_client(chunk_guilds_at_startup=False)
            task = asyncio.create_task(client.start(info["bot_token"]))
            try:
                await asyncio.wait_for(client.wait_until_ready(), 30)
                guild = client.get_guild(int(guild_id))
                assert guild is not None
                started = time.perf_counter()
                members = await asyncio.wait_for(guild.chunk(), 90)
                print(f"discord.py chunked {len(members)} members in {time.perf_counter() - started:.2f}s")
            finally:
                await client.close()
                await asyncio.wait_for(task, 10)

        async with http.get(f"{base}/_sandbox/guilds/{guild_id}/members") as resp:
            expected = [int(m["user"]["id"]) for m in await resp.json()]
    assert len(expected) == 100_001
    assert sorted(m.id for m in members) == expected


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--members", "-5"], "--members: -5 is not between 1"),
        (["--guilds", "0"], "--guilds: 0 is not between 1"),
        (["--port", "70000"], "--port: 70000 is not between 0 and 65,535"),
        (["--members", "many"], "--members: 'many' is not a whole number"),
    ],
)
def test_a_bad_number_exits_2_with_one_line(args: list[str], named: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sandbox", *args], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and named in done.stderr


def test_help_explains_every_option() -> None:
    undocumented = [action.dest for action in build_parser()._actions if not action.help]
    assert undocumented == []
    done = subprocess.run(
        [sys.executable, "-m", "sandbox", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert (
        done.returncode == 0 and "the world's seed" in done.stdout and "address to listen on" in done.stdout
    )


def test_discords_session_limits_can_be_set_on_the_command_line() -> None:
    limits = (
        "--identify-interval 1 --max-concurrency 2 --max-guilds-per-session 10 --member-list-cooldown 0.5"
    )
    options = options_from(parse_args(limits.split()))
    assert (options.identify_interval, options.max_concurrency, options.max_guilds_per_session) == (
        1.0,
        2,
        10,
    )
    assert options.member_list_cooldown == 0.5
    defaults = options_from(parse_args([]))
    assert (defaults.identify_interval, defaults.max_concurrency, defaults.max_guilds_per_session) == (
        5.0,
        1,
        2500,
    )
