"""The command line's own output: `python main.py status`."""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lifecycle import GC_YOUNG_THRESHOLD, tune_garbage_collector
from main import EXIT_DATABASE, EXIT_SETTINGS, print_status
from store import Link, SyncPhase, SyncState, open_store
from tests.harness import free_port


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


async def test_status_reads_a_postgresql_database_through_the_store(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with open_store(postgres_url) as store:
        await store.save_link(_link(1001, "Plain Guild"))
        await store.save_sync_state(
            SyncState(1001, SyncPhase.SYNCED, synced_at=datetime(2026, 1, 2, tzinfo=UTC))
        )

    assert await print_status(postgres_url) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.startswith("guild id")
    assert row.split()[:4] == ["1001", "yes", "synced", "0"] and row.endswith(" Plain Guild")


async def test_status_of_an_unreachable_postgresql_is_one_line_without_the_password(
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"postgresql://guildlink:pa55word@127.0.0.1:{free_port()}/guildlink"
    assert await print_status(url) == EXIT_DATABASE
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert "pa55word" not in captured.err and "guildlink:***@127.0.0.1" in captured.err
    assert "refused the connection" in captured.err


async def test_status_of_an_unknown_database_names_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert await print_status("mysql://guildlink:pa55word@db/guildlink") == EXIT_SETTINGS
    err = capsys.readouterr().err
    assert "DATABASE_URL" in err and "pa55word" not in err


async def test_status_without_a_sqlite_file_says_nothing_is_linked_and_creates_none(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await print_status(f"sqlite:///{tmp_path / 'missing.db'}") == 0
    assert capsys.readouterr().out.startswith("No database at ")
    assert not (tmp_path / "missing.db").exists()


def test_the_process_collects_young_objects_less_often_than_cpython_by_default() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        tune_garbage_collector()
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 10, 10)
    finally:
        gc.set_threshold(*saved)
