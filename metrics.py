"""What a fleet's operator watches, in Prometheus' text format: one registry per process, owned by no room.

web/ and bot/ both write to it (callbacks; syncs, gateway), so, like handoff.py, it belongs to neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

CONTENT_TYPE = CONTENT_TYPE_LATEST
SYNC_SECONDS_BUCKETS = (0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
# A notice travels in milliseconds; seconds mean a busy database or clocks that disagree.
NOTIFY_LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass
class Metrics:
    """Every metric of one process, registered in its own registry (not prometheus_client's global one)."""

    registry: CollectorRegistry = field(default_factory=lambda: CollectorRegistry(auto_describe=True))

    def __post_init__(self) -> None:
        r = self.registry
        self.callbacks = Counter(
            "guildlink_callbacks", "OAuth2 callbacks answered, by outcome", ["outcome"], registry=r
        )
        self.syncs = Counter("guildlink_syncs", "Member syncs finished, by result", ["result"], registry=r)
        self.syncs_held = Counter(
            "guildlink_syncs_held",
            "Resyncs whose removals were held for confirmation (RECONCILE_HOLD_SHARE, RECONCILE_HOLD_MIN)",
            registry=r,
        )
        self.sync_failures = Counter(
            "guildlink_sync_failures", "Member sync attempts that failed, by reason", ["reason"], registry=r
        )
        self.sync_seconds = Histogram(
            "guildlink_sync_duration_seconds",
            "Time to read a guild's member list",
            buckets=SYNC_SECONDS_BUCKETS,
            registry=r,
        )
        self.rate_limited = Counter(
            "guildlink_gateway_rate_limited",
            "RATE_LIMITED answers to our whole-member-list requests",
            registry=r,
        )
        self.reconnects = Counter(
            "guildlink_gateway_sessions",
            "Gateway sessions started (READY) or resumed, by shard",
            ["shard", "kind"],
            registry=r,
        )
        self.latency = Gauge(
            "guildlink_gateway_latency_seconds",
            "Heartbeat latency of each shard of this process",
            ["shard"],
            registry=r,
        )
        self.shard_ready = Gauge(
            "guildlink_shard_ready", "1 when the shard's session is ready", ["shard"], registry=r
        )
        self.links = Gauge(
            "guildlink_links", "Links by sync state (inactive links as 'removed')", ["state"], registry=r
        )
        self.members = Gauge(
            "guildlink_members_stored", "Members stored across every active link", registry=r
        )
        self.event_queue = Gauge(
            "guildlink_member_event_queue_depth", "Member events received and not yet stored", registry=r
        )
        self.read_pauses = Counter(
            "guildlink_gateway_read_pauses",
            "Pauses of gateway reading while the database caught up, by how they ended: drained, or capped"
            " (buffered members dropped, their guilds to be read again)",
            ["ended"],
            registry=r,
        )
        self.notify_lag = Histogram(
            "guildlink_notify_lag_seconds",
            "From a link's commit to its shard's process hearing of it",
            buckets=NOTIFY_LAG_BUCKETS,
            registry=r,
        )
        self.caught_up = Counter(
            "guildlink_handoff_caught_up",
            "Links of this process's shards found by a catch-up from the database, not by a notice",
            registry=r,
        )
        self.handoff_listening = Gauge(
            "guildlink_handoff_listening",
            "1 while the hand-off's LISTEN connection is up (a fleet's process); 1 in one process",
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "guildlink_webhook_deliveries",
            "Webhook events by outcome: delivered, failed (an attempt, retried), gave_up (skipped after 24 h),"
            " pruned (deleted by the retention before they were delivered)",
            ["result"],
            registry=r,
        )
        self.task_crashes = Counter(
            "guildlink_task_crashes",
            "Unexpected exceptions that ended a background task (each one restarted after a wait), by task",
            ["task"],
            registry=r,
        )
        self.member_events_refused = Counter(
            "guildlink_member_events_refused",
            "Member events the database refused for what they hold (not stored; their guild is resynced), by error",
            ["error"],
            registry=r,
        )
        self.webhook_backlog = Gauge(
            "guildlink_webhook_backlog_events",
            "Events of the feed after the webhook cursor, counted by id (0 while webhooks are off)",
            registry=r,
        )
        self.webhook_oldest_age = Gauge(
            "guildlink_webhook_oldest_undelivered_age_seconds",
            "Age of the oldest event not delivered yet; every later event of every guild waits behind it",
            registry=r,
        )
        self.webhook_failures = Gauge(
            "guildlink_webhook_consecutive_failures",
            "Failed attempts in a row at the event webhooks are trying to deliver now",
            registry=r,
        )
        self.events_pruned = Counter(
            "guildlink_feed_pruned_events", "Events deleted from the feed by EVENT_RETENTION_DAYS", registry=r
        )
        self.events_scrubbed = Counter(
            "guildlink_feed_scrubbed_events",
            "Events whose personal data was scrubbed, by reason (left: MEMBER_DATA_AFTER_LEAVE_HOURS; erased)",
            ["reason"],
            registry=r,
        )
        self.role_changes = Counter(
            "guildlink_role_changes",
            "Role change attempts by outcome: applied, failed (for good), retried (429, 5xx or no answer: tried"
            " again later)",
            ["result"],
            registry=r,
        )
        self.role_writes_paused = Gauge(
            "guildlink_role_writes_paused",
            "1 while this process writes no roles: too many invalid requests (401, 403, 429) in 10 minutes",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
