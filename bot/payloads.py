"""Member records from Discord's member payloads (gateway events, chunks and REST pages)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, overload

from store import Member


def member_from_payload(data: Mapping[str, Any]) -> Member:
    """A Member from a guild member object (with its nested `user`)."""
    user = data["user"]
    # Called for every member of every chunk: plain lookups, no generator.
    return Member(
        int(user["id"]),
        _storable(user["username"]),
        _storable(user.get("global_name")),
        _storable(data.get("nick")),
        _storable(user.get("avatar")),
        user.get("bot", False) is True,
        tuple(map(int, data.get("roles", ()))),
        data.get("joined_at"),
    )


@overload
def _storable(text: str) -> str: ...
@overload
def _storable(text: str | None) -> str | None: ...
def _storable(text: str | None) -> str | None:
    """`text` with each NUL character as U+FFFD: PostgreSQL's text cannot hold NUL, and one such nick must not
    fail its guild's whole sync; both engines store the same."""
    if text and "\x00" in text:
        return text.replace("\x00", "\ufffd")
    return text
