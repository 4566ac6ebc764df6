"""PostgreSQL's numbered schema migrations, applied in order at start-up, each inside a transaction.

They mirror SQLite's steps one for one, so that schema version N means the same tables on both engines.
"""

from __future__ import annotations

# Snowflakes are BIGINT (signed 64-bit, as Discord promises); times are timestamptz. Each script runs as one
# simple query, so it may hold several statements.
# None marks a number kept for a step that is not here yet.
MIGRATIONS: tuple[str | None, ...] = (
    # 1: links and pending OAuth2 states
    """
    CREATE TABLE links (
        guild_id BIGINT PRIMARY KEY,
        guild_name TEXT NOT NULL,
        linked_by_id BIGINT NOT NULL,
        linked_by_username TEXT NOT NULL,
        scopes TEXT[] NOT NULL,
        permissions BIGINT NOT NULL,
        linked_at TIMESTAMPTZ NOT NULL,
        ref TEXT,
        active BOOLEAN NOT NULL DEFAULT TRUE
    );
    CREATE INDEX links_ref ON links (ref);
    CREATE TABLE pending_states (
        state TEXT PRIMARY KEY,
        browser_hash BYTEA NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        ref TEXT
    );
    CREATE INDEX pending_states_expires_at ON pending_states (expires_at);
    CREATE INDEX pending_states_created_at ON pending_states (created_at);
    """,
    # 2: members and each guild's sync state
    """
    CREATE TABLE members (
        guild_id BIGINT NOT NULL,
        user_id BIGINT NOT NULL,
        username TEXT NOT NULL,
        global_name TEXT,
        nick TEXT,
        avatar TEXT,
        bot BOOLEAN NOT NULL,
        roles BIGINT[] NOT NULL,
        -- Discord's own text, handed back as it came (the API passes it on unparsed).
        joined_at TEXT,
        last_seen TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (guild_id, user_id)
    );
    CREATE TABLE sync_states (
        guild_id BIGINT PRIMARY KEY,
        phase TEXT NOT NULL,
        members_stored INTEGER NOT NULL DEFAULT 0,
        member_count INTEGER,
        synced_at TIMESTAMPTZ,
        error TEXT,
        updated_at TIMESTAMPTZ NOT NULL
    );
    """,
    # 3: hardening, as SQLite's step 3: single-use state nonces instead of pending states, bounded invites,
    # each link's member count, and a row for the write probe.
    """
    DROP TABLE pending_states;
    CREATE TABLE used_states (
        nonce BYTEA PRIMARY KEY,
        expires_at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX used_states_expires_at ON used_states (expires_at);
    CREATE TABLE invites (
        token_hash BYTEA PRIMARY KEY,
        ref TEXT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        expires_at TIMESTAMPTZ NOT NULL,
        used_at TIMESTAMPTZ,
        guild_id BIGINT
    );
    CREATE INDEX invites_expires_at ON invites (expires_at);
    ALTER TABLE links ADD COLUMN member_count INTEGER NOT NULL DEFAULT 0;
    UPDATE links SET member_count = (SELECT COUNT(*) FROM members WHERE members.guild_id = links.guild_id);
    CREATE TABLE health (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        checked_at TIMESTAMPTZ NOT NULL
    );
    """,
    # 4: a sync that waits for Discord's one-member-list-per-30-s window says until when (phase 'waiting'),
    # as SQLite's step 4.
    "ALTER TABLE sync_states ADD COLUMN waiting_until timestamptz",
    # 5: what the processes of a fleet share, as SQLite's step 5: each guild's whole-member-list cooldown
    # (Discord counts it per bot, not per process) and each IDENTIFY bucket's last IDENTIFY.
    """
    CREATE TABLE member_list_cooldowns (
        guild_id BIGINT PRIMARY KEY,
        until TIMESTAMPTZ NOT NULL
    );
    CREATE TABLE identify_buckets (
        bucket INTEGER PRIMARY KEY,
        identified_at TIMESTAMPTZ NOT NULL
    );
    """,
    # 6: the event feed (a transactional outbox), the webhook's delivery cursor, and when a gateway event last
    # changed a member (a full sync's older chunk must not overwrite it). As SQLite's step 6.
    """
    ALTER TABLE members ADD COLUMN changed_at TIMESTAMPTZ;
    CREATE TABLE events (
        id BIGSERIAL PRIMARY KEY,
        type TEXT NOT NULL,
        guild_id BIGINT NOT NULL,
        data JSONB NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX events_created_at ON events (created_at);
    CREATE TABLE webhook_cursor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        delivered_up_to BIGINT NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0,
        retry_at TIMESTAMPTZ
    );
    """,
    # 7: a resync whose removals are held for confirmation (phase 'held') keeps how many and its cut-off.
    # As SQLite's step 7.
    """
    ALTER TABLE sync_states ADD COLUMN held_removals INTEGER;
    ALTER TABLE sync_states ADD COLUMN held_before TIMESTAMPTZ;
    """,
    # 8: the highest event id pruning deleted. As SQLite's step 8.
    """
    CREATE TABLE feed_pruned (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        pruned_up_to BIGINT NOT NULL,
        pruned_at TIMESTAMPTZ NOT NULL
    );
    INSERT INTO feed_pruned (id, pruned_up_to, pruned_at)
    SELECT 1, up_to, now() FROM (
        SELECT COALESCE(
            (SELECT MIN(id) - 1 FROM events),
            (SELECT last_value FROM events_id_seq WHERE is_called),
            0
        ) AS up_to
    ) AS drawn WHERE up_to > 0;
    """,
    # 9: the queue of role changes, as SQLite's step 9; workers of every process claim with FOR UPDATE SKIP
    # LOCKED and a lease; the invalid answers every process counts together.
    """
    CREATE TABLE role_changes (
        id BIGSERIAL PRIMARY KEY,
        guild_id BIGINT NOT NULL,
        user_id BIGINT NOT NULL,
        role_id BIGINT NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('add', 'remove')),
        reason TEXT CHECK (length(reason) <= 512),
        status TEXT NOT NULL CHECK (status IN ('pending', 'applied', 'failed')),
        error_code INTEGER,
        error_reason TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        applied_at TIMESTAMPTZ,
        next_attempt_at TIMESTAMPTZ NOT NULL,
        claimed_by TEXT,
        claimed_until TIMESTAMPTZ
    );
    CREATE INDEX role_changes_pending ON role_changes (guild_id, user_id, id) WHERE status = 'pending';
    CREATE INDEX role_changes_of_guild ON role_changes (guild_id, id);
    CREATE TABLE discord_invalid_requests (
        at TIMESTAMPTZ NOT NULL
    );
    CREATE INDEX discord_invalid_requests_at ON discord_invalid_requests (at);
    """,
    # 10: whose data each event holds (user_id, personal) and the departed-data scrub's mark. As SQLite's step 10.
    """
    ALTER TABLE events ADD COLUMN user_id BIGINT;
    ALTER TABLE events ADD COLUMN personal BOOLEAN NOT NULL DEFAULT false;
    UPDATE events SET user_id = (data -> 'member' ->> 'id')::bigint, personal = true
        WHERE type IN ('member.joined', 'member.updated');
    UPDATE events SET user_id = (data ->> 'user_id')::bigint WHERE type = 'member.left';
    UPDATE events SET user_id = (data -> 'linked_by' ->> 'id')::bigint, personal = true WHERE type = 'guild.linked';
    UPDATE events SET data = jsonb_build_object('user_id', user_id::text, 'scrubbed', 'unlinked'), personal = false
        WHERE personal AND type IN ('member.joined', 'member.updated')
        AND guild_id NOT IN (SELECT guild_id FROM links WHERE active);
    CREATE INDEX events_user ON events (user_id) WHERE user_id IS NOT NULL;
    CREATE INDEX events_personal_guild ON events (guild_id) WHERE personal;
    CREATE INDEX events_left ON events (id) WHERE type = 'member.left';
    CREATE TABLE feed_scrub (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        departed_up_to BIGINT NOT NULL
    );
    """,
    # 11: who told us of a link. As SQLite's step 11.
    """
    ALTER TABLE links ADD COLUMN source TEXT NOT NULL DEFAULT 'callback';
    """,
)
