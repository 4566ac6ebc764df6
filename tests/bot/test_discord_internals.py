"""discord.py's private parts are used in one module, reviewed against one release line."""

from __future__ import annotations

import ast
from pathlib import Path

import aiohttp
import discord
from discord.http import HTTPClient

from bot.discord_internals import REVIEWED_DISCORD_PY

ROOT = Path(__file__).resolve().parents[2]
# The module that may use them, and this test, which names them to find them.
ALLOWED = frozenset({ROOT / "bot" / "discord_internals.py", Path(__file__).resolve()})
# discord.py's modules whose every name is private to it (its documented API is re-exported from `discord`).
PRIVATE_MODULES = ("discord.http", "discord.gateway", "discord.state")
# Private or undocumented attributes we have needed, wherever they are read.
PRIVATE_ATTRIBUTES = frozenset(
    {"_connection", "_get_websocket", "_listeners", "_keep_alive", "_stop_ev", "_parent", "parsers"}
    | {"warn_nacl", "warn_dave", "request_chunks", "session_id", "user_agent", "DEFAULT_GATEWAY"}
)
# `x.http.<name>` for a name only discord.py's HTTPClient has (an aiohttp session called http has the others).
HTTP_CLIENT_METHODS = frozenset(name for name in dir(HTTPClient) if not name.startswith("_")) - frozenset(
    dir(aiohttp.ClientSession)
)


def test_discord_py_is_the_release_line_its_internals_were_reviewed_against() -> None:
    installed = ".".join(discord.__version__.split(".")[:2])
    assert installed == REVIEWED_DISCORD_PY, (
        f"discord.py {discord.__version__} is installed, but bot/discord_internals.py was reviewed against"
        f" {REVIEWED_DISCORD_PY}.x: review each of its uses of private names against the new release, then"
        " update REVIEWED_DISCORD_PY"
    )


def private_uses(source: str) -> list[str]:
    """Where `source` reaches into discord.py's private parts, as 'line: what'."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PRIVATE_MODULES):
            found.append(f"{node.lineno}: from {node.module} import")
        elif isinstance(node, ast.Import):
            found += [
                f"{node.lineno}: import {a.name}" for a in node.names if a.name.startswith(PRIVATE_MODULES)
            ]
        elif isinstance(node, ast.Attribute) and _is_private(node):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def _is_private(node: ast.Attribute) -> bool:
    on_http_client = isinstance(node.value, ast.Attribute) and node.value.attr == "http"
    return (
        ast.unparse(node).startswith(PRIVATE_MODULES)
        or node.attr in PRIVATE_ATTRIBUTES
        or (on_http_client and node.attr in HTTP_CLIENT_METHODS)
    )


def test_the_guard_finds_each_kind_of_private_use() -> None:
    source = (
        "from discord.http import Route\n"
        "import discord.gateway\n"
        "bot._connection.parsers\n"
        "await client.http.leave_guild(1)\n"
        "async with self.http.get(url): pass\n"
    )
    assert [use.split(":")[0] for use in private_uses(source)] == ["1", "2", "3", "3", "4"]


def test_no_private_discord_py_name_is_used_outside_the_internals_module() -> None:
    # The top-level sandbox/ never imports discord.py; bench/ keeps bare discord.py baselines of its own.
    sources = [
        path
        for path in ROOT.rglob("*.py")
        if path not in ALLOWED and path.relative_to(ROOT).parts[0] not in {".venv", "sandbox", "bench"}
    ]
    uses = {
        str(path.relative_to(ROOT)): found
        for path in sources
        # Only modules that use discord.py: elsewhere a `_connection` is the module's own.
        if "discord" in (text := path.read_text()) and (found := private_uses(text))
    }
    assert uses == {}, "discord.py's private parts belong in bot/discord_internals.py only"
