"""SQLite's numbered schema migrations, applied in order at start-up, each inside a transaction."""

from __future__ import annotations

# Snowflakes are INTEGER (they fit a signed 64-bit column); times are ISO 8601 text in UTC.
# None marks a number kept for a step that is not here yet.
MIGRATIONS: tuple[str | None, ...] = (
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
    # 3: hardening. Browser states are signed and stateless now: only their one-time nonces are kept, so a
    # flood of /link stores nothing. Invites get their own table and bound. Each link keeps its member count.
    # Pending states of the old kind are dropped: at worst an admin mid-flow during the upgrade starts again.
    """
    DROP TABLE pending_states;
    CREATE TABLE used_states (
        nonce BLOB PRIMARY KEY,
        expires_at TEXT NOT NULL
    );
    CREATE INDEX used_states_expires_at ON used_states (expires_at);
    CREATE TABLE invites (
        token_hash BLOB PRIMARY KEY,
        ref TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        used_at TEXT,
        guild_id INTEGER
    );
    CREATE INDEX invites_expires_at ON invites (expires_at);
    ALTER TABLE links ADD COLUMN member_count INTEGER NOT NULL DEFAULT 0;
    UPDATE links SET member_count = (SELECT COUNT(*) FROM members WHERE members.guild_id = links.guild_id);
    CREATE TABLE health (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        checked_at TEXT NOT NULL
    );
    """,
    # 4: a sync that waits for Discord's one-member-list-per-30-s window says until when (phase 'waiting'),
    # so that the success page can count down instead of showing no progress.
    """
    ALTER TABLE sync_states ADD COLUMN waiting_until TEXT;
    """,
    # 5: what PostgreSQL's fleet shares in its database, here too, so that both engines keep one schema:
    # each guild's whole-member-list cooldown and each IDENTIFY bucket's last IDENTIFY.
    """
    CREATE TABLE member_list_cooldowns (
        guild_id INTEGER PRIMARY KEY,
        until TEXT NOT NULL
    );
    CREATE TABLE identify_buckets (
        bucket INTEGER PRIMARY KEY,
        identified_at TEXT NOT NULL
    );
    """,
    # 6: the event feed (a transactional outbox), the webhook's delivery cursor, and when a gateway event last
    # changed a member (a full sync's older chunk must not overwrite it).
    """
    ALTER TABLE members ADD COLUMN changed_at TEXT;
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        type TEXT NOT NULL,
        guild_id INTEGER NOT NULL,
        data TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE INDEX events_created_at ON events (created_at);
    CREATE TABLE webhook_cursor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        delivered_up_to INTEGER NOT NULL,
        failures INTEGER NOT NULL DEFAULT 0,
        retry_at TEXT
    );
    """,
    # 7: a resync whose removals are held for confirmation (phase 'held') keeps how many and its cut-off.
    """
    ALTER TABLE sync_states ADD COLUMN held_removals INTEGER;
    ALTER TABLE sync_states ADD COLUMN held_before TEXT;
    """,
    # 8: the highest event id pruning deleted, so that a reader whose cursor is older learns of the gap. A file
    # pruned before this step: every id below the oldest kept event (or, with none kept, every id drawn).
    """
    CREATE TABLE feed_pruned (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        pruned_up_to INTEGER NOT NULL,
        pruned_at TEXT NOT NULL
    );
    INSERT INTO feed_pruned (id, pruned_up_to, pruned_at)
    SELECT 1, up_to, strftime('%Y-%m-%dT%H:%M:%f+00:00', 'now') FROM (
        SELECT COALESCE(
            (SELECT MIN(id) - 1 FROM events),
            (SELECT seq FROM sqlite_sequence WHERE name = 'events'),
            0
        ) AS up_to
    ) WHERE up_to > 0;
    """,
    # 9: the queue of role changes the backend asked for (PUT/DELETE .../roles/{role_id}). A change is claimed
    # by one worker until `claimed_until` (a lease: one whose holder died is taken again after it); a member's
    # changes are applied in id order. Discord's invalid answers (401, 403, 429) to the bot's role writes, kept
    # 10 minutes, so that every process of a fleet counts them together.
    """
    CREATE TABLE role_changes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        guild_id INTEGER NOT NULL,
        user_id INTEGER NOT NULL,
        role_id INTEGER NOT NULL,
        action TEXT NOT NULL CHECK (action IN ('add', 'remove')),
        reason TEXT CHECK (length(reason) <= 512),
        status TEXT NOT NULL CHECK (status IN ('pending', 'applied', 'failed')),
        error_code INTEGER,
        error_reason TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        applied_at TEXT,
        next_attempt_at TEXT NOT NULL,
        claimed_by TEXT,
        claimed_until TEXT
    );
    CREATE INDEX role_changes_pending ON role_changes (guild_id, user_id, id) WHERE status = 'pending';
    CREATE INDEX role_changes_of_guild ON role_changes (guild_id, id);
    CREATE TABLE discord_invalid_requests (
        at TEXT NOT NULL
    );
    CREATE INDEX discord_invalid_requests_at ON discord_invalid_requests (at);
    """,
    # 10: whose data each event holds, so that erasing a user, unlinking a guild and a member's leave can scrub it.
    # user_id: the member (member.*) or the admin who linked (guild.linked); personal: the data holds more of
    # them than the id, until scrubbed. feed_scrub: how far the scrub of departed members' data has walked.
    """
    ALTER TABLE events ADD COLUMN user_id INTEGER;
    ALTER TABLE events ADD COLUMN personal INTEGER NOT NULL DEFAULT 0;
    UPDATE events SET user_id = CAST(json_extract(data, '$.member.id') AS INTEGER), personal = 1
        WHERE type IN ('member.joined', 'member.updated');
    UPDATE events SET user_id = CAST(json_extract(data, '$.user_id') AS INTEGER) WHERE type = 'member.left';
    UPDATE events SET user_id = CAST(json_extract(data, '$.linked_by.id') AS INTEGER), personal = 1
        WHERE type = 'guild.linked';
    UPDATE events SET data = json_object('user_id', CAST(user_id AS TEXT), 'scrubbed', 'unlinked'), personal = 0
        WHERE personal = 1 AND type IN ('member.joined', 'member.updated')
        AND guild_id NOT IN (SELECT guild_id FROM links WHERE active = 1);
    CREATE INDEX events_user ON events (user_id) WHERE user_id IS NOT NULL;
    CREATE INDEX events_personal_guild ON events (guild_id) WHERE personal = 1;
    CREATE INDEX events_left ON events (id) WHERE type = 'member.left';
    CREATE TABLE feed_scrub (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        departed_up_to INTEGER NOT NULL
    );
    """,
    # 11: who told us of a link: our callback, or only Discord's APPLICATION_AUTHORIZED webhook event.
    """
    ALTER TABLE links ADD COLUMN source TEXT NOT NULL DEFAULT 'callback';
    """,
)
