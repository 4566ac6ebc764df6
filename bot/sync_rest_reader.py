"""Reading a guild's member list page by page through REST: no gateway command, no 30 s window."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from bot.payloads import member_from_payload
from bot.sync_progress import SyncProgress, write_members
from store import Store

REST_PAGE_SIZE = 1000


class MemberPageFetcher(Protocol):
    async def fetch_member_page(self, guild_id: int, after: int) -> Sequence[Mapping[str, Any]]:
        """`GET /guilds/{id}/members?limit=1000&after=` through the REST API."""


class RestMemberReader:
    """Reads every member of a guild in pages of 1,000, committing each page as it comes."""

    def __init__(self, store: Store, fetcher: MemberPageFetcher) -> None:
        self._store = store
        self._fetcher = fetcher

    async def read(self, progress: SyncProgress) -> None:
        after = 0
        while True:
            page = await self._fetcher.fetch_member_page(progress.guild_id, after)
            members = [member_from_payload(m) for m in page]
            if members:
                await write_members(self._store, members, progress, datetime.now(UTC))
            if len(page) < REST_PAGE_SIZE:
                return
            after = max(m.user_id for m in members)
