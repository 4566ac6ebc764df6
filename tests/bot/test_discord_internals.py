"""discord.py's private parts are used in one module, reviewed against one release line."""

from __future__ import annotations

import discord

from bot.discord_internals import REVIEWED_DISCORD_PY


def test_discord_py_is_the_release_line_its_internals_were_reviewed_against() -> None:
    installed = ".".join(discord.__version__.split(".")[:2])
    assert installed == REVIEWED_DISCORD_PY, (
        f"discord.py {discord.__version__} is installed, but bot/discord_internals.py was reviewed against"
        f" {REVIEWED_DISCORD_PY}.x: review each of its uses of private names against the new release, then"
        " update REVIEWED_DISCORD_PY"
    )
