"""The command line's own output: `python main.py status`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from main import print_status
from store import Link, SyncPhase, SyncState, open_store


def _link(guild_id: int, name: str) -> Link:
    return Link(guild_id, name, 42, "admin", ("identify", "guilds", "bot"), 0, datetime.now(UTC))


async def test_status_shows_control_characters_in_names_and_errors_as_escapes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    database_url = f"sqlite:///{tmp_path / 'guildlink.db'}"
    async with open_store(database_url) as store:
        await store.save_link(_link(1001, "\x1b[31mred\nfake row"))
        await store.save_link(_link(1002, "Plain Guild"))
        await store.save_sync_state(
            SyncState(1001, SyncPhase.FAILED, error="gateway said \x1b]0;pwned\x07\r")
        )

    assert await print_status(database_url) == 0
    output = capsys.readouterr().out

    assert "\x1b" not in output and "\r" not in output and "\x07" not in output
    header, *rows = output.splitlines()
    assert header.startswith("guild id")
    # One row per link, and the error's row under its link: the name's newline forged none.
    assert [row[:20].strip() for row in rows] == ["1001", "", "1002"]
    assert rows[0].endswith(" \\x1b[31mred\\nfake row")
    assert rows[1].endswith("error: gateway said \\x1b]0;pwned\\x07\\r")
    assert rows[2].endswith(" Plain Guild")
