"""Member records from Discord's member payloads (gateway events, chunks and REST pages)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from store import Member


def member_from_payload(data: Mapping[str, Any]) -> Member:
    """A Member from a guild member object (with its nested `user`)."""
    user = data["user"]
    return Member(
        user_id=int(user["id"]),
        username=user["username"],
        global_name=user.get("global_name"),
        nick=data.get("nick"),
        avatar=user.get("avatar"),
        bot=bool(user.get("bot", False)),
        roles=tuple(int(role) for role in data.get("roles", ())),
        joined_at=data.get("joined_at"),
    )
