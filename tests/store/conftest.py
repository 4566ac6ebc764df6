"""The conformance suite's fixtures: every test that asks for `store` or `database_url` runs on each engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from store import Store, open_store

ENGINES = ("sqlite", "postgres")


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(engine: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A DATABASE_URL for a new, empty database of `engine`: a file in tmp_path, or a PostgreSQL database."""
    if engine == "postgres":
        # Asked for only here, so that the SQLite half of the suite needs no PostgreSQL.
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path / 'db.sqlite'}"


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """The store on a new database of each engine, migrated and open."""
    async with open_store(database_url) as opened:
        yield opened
