"""What a batch of member events does to the members table, whatever the engine: one write per member."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from store.models import MemberChange


@dataclass(frozen=True, slots=True)
class MemberWrites:
    """Upserts and removals with no member twice."""

    upserts: list[MemberChange]
    removals: list[MemberChange]


def member_writes(changes: Sequence[MemberChange]) -> MemberWrites:
    """Keep each member's last change of `changes` (in order): it alone decides the member's row.

    An update then a removal: removed; a removal then a join: stored. So the order of updates and removals
    holds however a batch is collapsed.
    """
    last = {(change.guild_id, change.user_id): change for change in changes}
    upserts = [change for change in last.values() if change.member is not None]
    removals = [change for change in last.values() if change.member is None]
    return MemberWrites(upserts, removals)


def user_ids_by_guild(changes: Iterable[MemberChange]) -> dict[int, list[int]]:
    """The user ids of `changes`, by guild, in order."""
    by_guild: dict[int, list[int]] = {}
    for change in changes:
        by_guild.setdefault(change.guild_id, []).append(change.user_id)
    return by_guild
