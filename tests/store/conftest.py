"""The conformance suite's fixtures: every test that asks for `store` runs on each engine (see `database_url`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from store import Store, open_store


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    """The store on a new database of each engine, migrated and open."""
    async with open_store(database_url) as opened:
        yield opened
