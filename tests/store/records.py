"""Records for the store's tests: a link, a member and an invite with plausible defaults."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from store import Invite, Link, Member, MemberChange, MemberChangeKind


def a_link(guild_id: int = 1, **changes: object) -> Link:
    fields: dict = dict(
        guild_id=guild_id,
        guild_name="Guild <b>one</b>",
        linked_by_id=42,
        linked_by_username="admin",
        scopes=("identify", "bot"),
        permissions=0,
        linked_at=datetime.now(UTC),
    )
    fields.update(changes)
    return Link(**fields)


def a_member(user_id: int, **changes: object) -> Member:
    fields: dict = dict(
        user_id=user_id,
        username=f"user{user_id}",
        global_name=None,
        nick=None,
        avatar=None,
        bot=False,
        roles=(5, 6),
        joined_at="2024-01-01T00:00:00+00:00",
    )
    fields.update(changes)
    return Member(**fields)


def an_invite(
    token_hash: bytes, *, age: timedelta = timedelta(0), ttl: timedelta = timedelta(hours=1)
) -> Invite:
    created = datetime.now(UTC) - age
    return Invite(token_hash=token_hash, ref="customer", created_at=created, expires_at=created + ttl)


def a_leave(guild_id: int, user_id: int) -> MemberChange:
    """GUILD_MEMBER_REMOVE as the event writer stores it."""
    return MemberChange(guild_id, user_id, MemberChangeKind.LEFT, None, datetime.now(UTC))


def an_update(guild_id: int, member: Member) -> MemberChange:
    """GUILD_MEMBER_UPDATE (or ADD) as the event writer stores it."""
    return MemberChange(guild_id, member.user_id, MemberChangeKind.UPDATED, member, datetime.now(UTC))
