"""Numbered schema migrations, applied in order at start-up, each inside a transaction."""

from __future__ import annotations

# Snowflakes are INTEGER (they fit a signed 64-bit column); times are ISO 8601 text in UTC.
MIGRATIONS: tuple[str, ...] = (
    # 1: links and pending OAuth2 states
    """
    CREATE TABLE links (
        guild_id INTEGER PRIMARY KEY,
        guild_name TEXT NOT NULL,
        linked_by_id INTEGER NOT NULL,
        linked_by_username TEXT NOT NULL,
        scopes TEXT NOT NULL,
        permissions INTEGER NOT NULL,
        linked_at TEXT NOT NULL,
        ref TEXT,
        active INTEGER NOT NULL DEFAULT 1
    );
    CREATE INDEX links_ref ON links (ref);
    CREATE TABLE pending_states (
        state TEXT PRIMARY KEY,
        browser_hash BLOB NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        ref TEXT
    );
    CREATE INDEX pending_states_expires_at ON pending_states (expires_at);
    CREATE INDEX pending_states_created_at ON pending_states (created_at);
    """,
    # 2: members and each guild's sync state
    """
    CREATE TABLE members (
        guild_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        username TEXT NOT NULL,
        global_name TEXT,
        nick TEXT,
        avatar TEXT,
        bot INTEGER NOT NULL,
        roles TEXT NOT NULL, -- role ids separated by spaces
        joined_at TEXT,
        last_seen TEXT NOT NULL,
        PRIMARY KEY (guild_id, user_id)
    ) WITHOUT ROWID;
    CREATE TABLE sync_states (
        guild_id INTEGER PRIMARY KEY,
        phase TEXT NOT NULL,
        members_stored INTEGER NOT NULL DEFAULT 0,
        member_count INTEGER,
        synced_at TEXT,
        error TEXT,
        updated_at TEXT NOT NULL
    );
    """,
)
