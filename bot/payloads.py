"""Member records from Discord's member payloads (gateway events, chunks and REST pages)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from store import Member


def member_from_payload(data: Mapping[str, Any]) -> Member:
    """A Member from a guild member object (with its nested `user`)."""
    user = data["user"]
    # Called for every member of every chunk: plain lookups, no generator.
    return Member(
        int(user["id"]),
        user["username"],
        user.get("global_name"),
        data.get("nick"),
        user.get("avatar"),
        user.get("bot", False) is True,
        tuple(map(int, data.get("roles", ()))),
        data.get("joined_at"),
    )
