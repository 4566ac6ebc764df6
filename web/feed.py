"""The event feed as the backend sees it: each event's JSON, type patterns such as guild.*, and paging."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from config import EVENT_PATTERN
from store import Event, EventType, Store
from web.params import ParameterError

# A filtered page reads at most this many events (in chunks) before it answers, perhaps with fewer than
# `limit`: a filter that matches little must not make one request read the whole feed.
MAX_SCANNED = 10_000
SCAN_CHUNK = 1000


def event_json(event: Event) -> dict[str, Any]:
    """One event as GET /api/events lists it and a webhook POSTs it (ids as strings)."""
    return {
        "id": str(event.id),
        "type": event.type.value,
        "created_at": json_time(event.created_at),
        # 0: an event of no guild (app.deauthorized).
        "guild_id": str(event.guild_id) if event.guild_id else None,
        "data": event.data,
    }


def json_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class EventTypes:
    """The event types that patterns such as `guild.*` or `member.left` match (`*`: any characters)."""

    types: frozenset[EventType]

    @classmethod
    def matching(cls, patterns: Iterable[str]) -> EventTypes:
        return cls(frozenset(kind for pattern in patterns for kind in matched_by(pattern)))

    def __contains__(self, kind: EventType) -> bool:
        return kind in self.types

    @property
    def everything(self) -> bool:
        return self.types == frozenset(EventType)


def matched_by(pattern: str) -> set[EventType]:
    """The event types one pattern matches; empty for a typo such as `gild.*`."""
    return {kind for kind in EventType if wildcard_match(pattern, kind.value)}


def wildcard_match(pattern: str, text: str) -> bool:
    """Whether `text` is `pattern` with each `*` standing for any run of characters.

    Without backtracking: each piece between stars is found once, left to right, so the time grows with
    the pattern's length, never exponentially (a regex of `*****...z` froze the process for a minute).
    """
    first, *middle_and_last = pattern.split("*")
    if not middle_and_last:
        return text == first
    *middle, last = middle_and_last
    if len(text) < len(first) + len(last) or not text.startswith(first) or not text.endswith(last):
        return False
    position, end = len(first), len(text) - len(last)
    for piece in middle:
        found = text.find(piece, position, end)
        if found < 0:
            return False
        position = found + len(piece)
    return True


def parse_event_types(raw: str, parameter: str) -> EventTypes:
    """A query's `types=guild.*,member.left`; ParameterError unless every pattern matches some type."""
    patterns = [part.strip() for part in raw.split(",") if part.strip()]
    known = ", ".join(kind.value for kind in EventType)
    if not patterns or not all(
        EVENT_PATTERN.fullmatch(pattern) and matched_by(pattern) for pattern in patterns
    ):
        raise ParameterError(
            parameter,
            f"{parameter} must be event types or patterns separated by commas, such as guild.* or"
            f" member.left; the types are {known}.",
        )
    return EventTypes.matching(patterns)


@dataclass(frozen=True)
class FeedPage:
    """Events after a cursor, the cursor to ask with next (`next_after`), and whether more are stored now."""

    events: list[Event]
    next_after: int
    has_more: bool


class EventsPrunedError(Exception):
    """Events after a reader's cursor were deleted by the retention: a page would skip them unseen."""

    def __init__(self, after: int, pruned_up_to: int) -> None:
        super().__init__(f"events after {after} up to {pruned_up_to} were pruned")
        self.after = after
        self.pruned_up_to = pruned_up_to


async def read_page(store: Store, *, after: int, limit: int, types: EventTypes | None = None) -> FeedPage:
    """Up to `limit` events after `after`, oldest first, of `types` only if given.

    EventsPrunedError if `after` is a cursor (not 0: from the oldest kept) below events pruning deleted.
    """
    page = await _read_page(store, after=after, limit=limit, types=types)
    # Checked after the read: a prune that committed before it is seen here, and one after it took nothing
    # this page returned (it deletes a prefix of the feed, and the page began right after `after`).
    if after > 0 and after < (pruned_up_to := await store.feed_pruned_up_to()):
        raise EventsPrunedError(after, pruned_up_to)
    return page


async def _read_page(store: Store, *, after: int, limit: int, types: EventTypes | None) -> FeedPage:
    if types is None or types.everything:
        rows = await store.list_events(after=after, limit=limit + 1)
        events = rows[:limit]
        return FeedPage(events, events[-1].id if events else after, len(rows) > limit)
    matched: list[Event] = []
    position = after
    scanned = 0
    while scanned < MAX_SCANNED:
        rows = await store.list_events(after=position, limit=SCAN_CHUNK)
        for event in rows:
            if event.type in types:
                if len(matched) == limit:
                    return FeedPage(matched, position, True)
                matched.append(event)
            # Past events that did not match too: the next page need not read them again.
            position = event.id
        scanned += len(rows)
        if len(rows) < SCAN_CHUNK:
            return FeedPage(matched, position, False)
    return FeedPage(matched, position, True)
