"""What a batch of member events does to the members table, whatever the engine: one write per member."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from store.models import MemberChange


@dataclass(frozen=True, slots=True)
class MemberWrites:
    """Upserts and removals with no member twice, and how each guild's member count moves."""

    upserts: list[MemberChange]
    removals: list[MemberChange]
    count_deltas: Counter[int]


def member_writes(changes: Sequence[MemberChange], present: Iterable[tuple[int, int]]) -> MemberWrites:
    """Replay `changes` in order over the (guild, user) pairs `present` before them; keep each member's last.

    The last change of a member decides its row (an update then a removal: removed; a removal then a join:
    stored), so the order of updates and removals holds however a batch is collapsed.
    """
    stored = set(present)
    counts: Counter[int] = Counter()
    last: dict[tuple[int, int], MemberChange] = {}
    for change in changes:
        key = (change.guild_id, change.user_id)
        if change.member is None:
            if key in stored:
                stored.discard(key)
                counts[change.guild_id] -= 1
        elif key not in stored:
            stored.add(key)
            counts[change.guild_id] += 1
        last[key] = change
    upserts = [change for change in last.values() if change.member is not None]
    removals = [change for change in last.values() if change.member is None]
    return MemberWrites(upserts, removals, counts)
