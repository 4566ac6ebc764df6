"""What the store raises that its callers must act on; each is turned into a page, JSON error or exit at the edge."""

from __future__ import annotations


class StoreError(Exception):
    """Base of the store's errors."""


class StoreUnavailableError(StoreError):
    """The database cannot be read or written (read-only, disk full, I/O error, locked): answer 503, retry later.

    `reason` is safe to show to operators and clients: it names the condition, never a value.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TransactionPoolingError(StoreUnavailableError):
    """DATABASE_URL leads to a pooler that hands one client's statements to several server sessions.

    pgbouncer's pool_mode = transaction or statement: session locks would stay behind on a session that
    then serves other clients, LISTEN would hear nothing, and prepared statements would go missing.
    """

    def __init__(self) -> None:
        super().__init__(
            "its connections are pooled per transaction (pgbouncer's pool_mode = transaction or statement),"
            " but guildlink's guild locks, LISTEN and prepared statements need sessions of their own"
        )


class InviteUnusableError(StoreError):
    """The invite a link was started from is unknown, expired or already used by another link."""


class RefConflictError(StoreError):
    """The guild is actively linked for another `ref`: moving it silently to a new customer is refused."""

    def __init__(self, guild_id: int) -> None:
        super().__init__(f"guild {guild_id} is linked for another ref")
        self.guild_id = guild_id
