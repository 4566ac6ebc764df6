"""LIKE patterns built from user text: its own %, _ and \\ match themselves, never as wildcards."""

from __future__ import annotations

# Both engines are told ESCAPE '\', so one escaping serves SQLite and PostgreSQL alike.
LIKE_ESCAPE = "\\"


def contains_pattern(text: str) -> str:
    """A LIKE pattern matching any value that contains `text` literally."""
    escaped = text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
