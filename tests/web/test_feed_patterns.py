"""Event type patterns (`types=`, WEBHOOK_EVENTS): `*` matches any run of characters, without backtracking."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from store import EventType, Store, open_store
from tests.web.serving import AUTH, Served, app_settings, serving
from web.feed import matched_by, wildcard_match

pieces = st.text(alphabet="ab.*", max_size=8)


@given(pattern=pieces, text=st.text(alphabet="ab.", max_size=8))
def test_a_pattern_matches_as_the_equivalent_regular_expression_does(pattern: str, text: str) -> None:
    regex = re.escape(pattern).replace(r"\*", ".*")
    assert wildcard_match(pattern, text) == bool(re.fullmatch(regex, text, re.DOTALL))


def test_patterns_pick_the_types_they_name() -> None:
    assert matched_by("guild.*") == {t for t in EventType if t.value.startswith("guild.")}
    assert matched_by("*.left") == {EventType.MEMBER_LEFT}
    assert matched_by("sync.held") == {EventType.SYNC_HELD}
    assert matched_by("gild.*") == set()


@pytest.fixture
async def served(tmp_path, store: Store) -> AsyncIterator[Served]:
    async with serving(app_settings(f"sqlite:///{tmp_path / 'db.sqlite'}"), store) as running:
        yield running


@pytest.fixture
async def store(tmp_path) -> AsyncIterator[Store]:
    async with open_store(f"sqlite:///{tmp_path / 'db.sqlite'}") as opened:
        yield opened


@pytest.mark.timeout(30)
@pytest.mark.parametrize("stars", [20, 5_000])
async def test_a_pattern_of_many_stars_is_answered_at_once(served: Served, stars: int) -> None:
    # With a backtracking regex twenty stars and a z took 51 s, each extra star doubling it.
    async with (
        aiohttp.ClientSession(headers=AUTH) as http,
        http.get(f"{served.url}/api/events", params={"types": "*" * stars + "z"}) as response,
    ):
        body = await response.json()
    assert (response.status, body["parameter"]) == (400, "types")
    async with (
        aiohttp.ClientSession(headers=AUTH) as http,
        http.get(f"{served.url}/api/events", params={"types": "*" * stars + "d"}) as response,
    ):
        assert response.status == 200
