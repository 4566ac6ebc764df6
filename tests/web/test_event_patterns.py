"""Event type patterns (`guild.*`): matched without a regular expression, as one would expect `*` to match."""

from __future__ import annotations

import random
import re

from store import EventType
from web.feed import glob_matches, matched_by


def by_regex(pattern: str, text: str) -> bool:
    return re.fullmatch(re.escape(pattern).replace(r"\*", ".*"), text) is not None


def test_patterns_match_as_a_regular_expression_of_dot_stars_would() -> None:
    chances = random.Random(17)
    alphabet = "*ab."
    texts = ["", "a", "b", "ab", "ba", "a.b", "aab.bba", "abab.ab", "....", "*"]
    for _ in range(20_000):
        pattern = "".join(chances.choice(alphabet) for _ in range(chances.randint(0, 8)))
        for text in texts:
            assert glob_matches(pattern, text) == by_regex(pattern, text), (pattern, text)


def test_patterns_pick_their_types_among_the_known_ones() -> None:
    assert matched_by("guild.*") == {
        EventType.GUILD_LINKED,
        EventType.GUILD_SYNCED,
        EventType.GUILD_UNLINKED,
        EventType.GUILD_REMOVED,
    }
    assert matched_by("*.left") == {EventType.MEMBER_LEFT}
    assert matched_by("*") == set(EventType)
    assert matched_by("gild.*") == set()


def test_a_pattern_that_backtracking_would_take_hours_over_matches_nothing_at_once() -> None:
    # 2**40 steps for a backtracking matcher; pytest-timeout ends the test if this were one.
    assert matched_by("*" * 40 + "z") == set()
    assert matched_by("*" * 10_000 + "." + "*" * 10_000 + "d") == matched_by("*d")
