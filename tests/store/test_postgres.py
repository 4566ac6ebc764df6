"""What only the PostgreSQL engine promises: upgrades in place, one migrator at a time, failures named safely."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import asyncpg
import pytest

from store import MemberChange, MemberChangeKind, PostgresStore, StoreUnavailableError, open_store
from store.migrations.postgres import MIGRATIONS
from store.postgres import _MEMBER_COLUMNS, _MERGE_CHUNK, _STAGING, _staged
from store.postgres_errors import reason
from tests.harness import eventually, free_port
from tests.store.records import a_link, a_member

# The step that adds the pruned mark, whatever number it ends up with among the steps of other branches.
FEED_PRUNED_STEP = next(
    n for n, step in enumerate(MIGRATIONS, start=1) if step and "CREATE TABLE feed_pruned" in step
)
# The tables the steps after it create.
LATER_TABLES = [
    table
    for step in MIGRATIONS[FEED_PRUNED_STEP:]
    if step
    for table in re.findall(r"CREATE TABLE (\w+)", step)
]


async def test_a_database_written_by_schema_1_is_upgraded_in_place(postgres_url: str) -> None:
    db = await asyncpg.connect(postgres_url)
    try:
        await db.execute(
            "CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at TIMESTAMPTZ NOT NULL)"
        )
        await db.execute(MIGRATIONS[0])
        await db.execute("INSERT INTO schema_version VALUES (1, now())")
        await db.execute(
            "INSERT INTO links VALUES (7, 'Old', 42, 'admin', '{identify,bot}', 8, '2026-01-01T00:00:00Z', 'r', TRUE)"
        )
        await db.execute("INSERT INTO pending_states VALUES ('s', '\\x00', now(), now(), 'r')")
    finally:
        await db.close()

    async with PostgresStore.open(postgres_url) as store:
        link = await store.get_link(7)
        assert link is not None
        assert (link.guild_name, link.scopes, link.permissions, link.ref, link.active, link.member_count) == (
            "Old",
            ("identify", "bot"),
            8,
            "r",
            True,
            0,
        )
        assert link.linked_at == datetime(2026, 1, 1, tzinfo=UTC)
        assert await store.upsert_members(7, [a_member(1), a_member(2)], datetime.now(UTC)) == 2
        assert (await store.get_link(7) or link).member_count == 2

    db = await asyncpg.connect(postgres_url)
    try:
        versions = [row[0] for row in await db.fetch("SELECT version FROM schema_version ORDER BY version")]
        old_states = await db.fetchval("SELECT to_regclass('pending_states')")
    finally:
        await db.close()
    assert versions == list(range(1, len(MIGRATIONS) + 1)) and old_states is None


async def test_processes_starting_at_once_migrate_once(postgres_url: str) -> None:
    async def start() -> None:
        async with PostgresStore.open(postgres_url) as store:
            await store.save_link(a_link())

    await asyncio.gather(*(start() for _ in range(4)))
    db = await asyncpg.connect(postgres_url)
    try:
        versions = [row[0] for row in await db.fetch("SELECT version FROM schema_version ORDER BY version")]
    finally:
        await db.close()
    assert versions == list(range(1, len(MIGRATIONS) + 1))


async def test_the_postgres_scheme_is_the_same_engine(postgres_url: str) -> None:
    async with open_store(postgres_url.replace("postgresql://", "postgres://", 1)) as store:
        assert isinstance(store, PostgresStore)


async def test_a_server_that_refuses_connections_is_unavailable_and_the_reason_hides_the_url() -> None:
    port = free_port()
    with pytest.raises(StoreUnavailableError) as raised:
        async with open_store(f"postgresql://guildlink:pa55word@127.0.0.1:{port}/guildlink"):
            pass
    assert "refused" in raised.value.reason
    assert "pa55word" not in str(raised.value) and str(port) not in str(raised.value)


async def test_a_missing_database_is_named_as_such(postgres_server: str) -> None:
    with pytest.raises(StoreUnavailableError, match="does not exist"):
        async with open_store(postgres_server.rsplit("/", 1)[0] + "/no_such_database"):
            pass


async def _end_sessions(postgres_url: str, *, read_only: bool | None = None) -> None:
    """End every session of the test's database (as a restart would), setting it read-only or not first."""
    name = postgres_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(postgres_url.rsplit("/", 1)[0] + "/postgres")
    try:
        if read_only is not None:
            # A database's settings apply to sessions started after the change.
            await admin.execute(
                f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if read_only else "off"}'
            )
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
    finally:
        await admin.close()


async def test_connections_the_server_ended_are_replaced_without_an_error(postgres_url: str) -> None:
    async with open_store(postgres_url) as store:
        await store.save_link(a_link(7))
        await _end_sessions(postgres_url)
        assert await store.upsert_members(7, [a_member(1)], datetime.now(UTC)) == 1
        await _end_sessions(postgres_url)
        assert await store.get_link(7) is not None
        assert store.recent_write_failure() is None


async def test_a_read_only_database_refuses_writes_with_a_reason_until_it_takes_them_again(
    postgres_url: str,
) -> None:
    async with open_store(postgres_url) as store:
        await store.save_link(a_link(7))
        await _end_sessions(postgres_url, read_only=True)
        with pytest.raises(StoreUnavailableError) as raised:
            await store.upsert_members(7, [a_member(1)], datetime.now(UTC))
        assert raised.value.reason == "the database is read-only"
        assert store.recent_write_failure() == "the database is read-only"
        assert await store.get_link(7) is not None  # reads go on

        with pytest.raises(StoreUnavailableError, match="read-only"):
            async with open_store(postgres_url):
                pass

        await _end_sessions(postgres_url, read_only=False)
        assert await store.upsert_members(7, [a_member(1)], datetime.now(UTC)) == 1
        assert store.recent_write_failure() is None


async def test_merging_a_chunk_probes_the_guilds_members_instead_of_reading_them_all(
    postgres_url: str,
) -> None:
    async with open_store(postgres_url) as store:
        await store.save_link(a_link(7))
        for start in range(0, 20_000, 1000):
            await store.upsert_members(
                7, [a_member(i) for i in range(start, start + 1000)], datetime.now(UTC)
            )
    db = await asyncpg.connect(postgres_url)
    try:
        async with db.transaction():  # EXPLAIN alone plans the merge without running it
            await db.execute(_STAGING)
            chunk = [a_member(i) for i in range(30_000, 31_000)]
            await db.copy_records_to_table(
                "member_chunk", records=[_staged(m) for m in chunk], columns=_MEMBER_COLUMNS
            )
            plan = "\n".join(
                row[0]
                for row in await db.fetch(f"EXPLAIN {_MERGE_CHUNK}", 7, datetime.now(UTC), datetime.now(UTC))
            )
    finally:
        await db.close()
    # Reading all 20,000 to merge or count the chunk's members would make every chunk of a sync slower than
    # the one before: a large guild's sync would take quadratic time.
    assert "members_pkey" in plan and "Hash" not in plan and "Seq Scan on members" not in plan


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute INSERT"), "read-only"),
        (asyncpg.exceptions.DiskFullError("could not extend file base/1/2: No space left"), "full"),
        (
            asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already"),
            "too many connections",
        ),
        (asyncpg.exceptions.AdminShutdownError("terminating connection"), "shut down"),
        (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"), "starting up"),
        (
            asyncpg.exceptions.InvalidPasswordError('password authentication failed for user "bob"'),
            "password",
        ),
        (asyncpg.exceptions.ConnectionFailureError("server closed the connection"), "connection"),
        (asyncpg.exceptions.DeadlockDetectedError("deadlock detected"), "deadlock"),
        (ConnectionRefusedError(111, "Connect call failed ('10.0.0.5', 5432)"), "refused"),
        (TimeoutError(), "in time"),
    ],
)
def test_failures_an_operator_must_fix_are_named_without_their_values(
    failure: BaseException, expected: str
) -> None:
    why = reason(failure)
    assert why is not None and expected in why
    for value in ("base/1/2", "bob", "10.0.0.5", "5432", "INSERT"):
        assert value not in why


def test_guildlinks_own_bugs_are_not_reported_as_an_unavailable_database() -> None:
    assert reason(asyncpg.exceptions.UniqueViolationError("duplicate key")) is None
    assert reason(asyncpg.exceptions.PostgresSyntaxError("syntax error")) is None
    assert reason(asyncpg.exceptions.NumericValueOutOfRangeError("out of range")) is None


async def test_a_webhook_deliverer_whose_connection_ends_hears_it_lost_the_lock(postgres_url: str) -> None:
    async with (
        PostgresStore.open(postgres_url) as first,
        PostgresStore.open(postgres_url) as second,
        first.webhook_delivery_lock() as lost,
    ):
        admin = await asyncpg.connect(postgres_url)
        try:
            # The lock's key is two ints: (classid, objid) with objsubid 2.
            [holder] = await admin.fetch(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 2 AND objid = 4"
                " AND granted"
            )
            await admin.execute("SELECT pg_terminate_backend($1)", holder["pid"])
        finally:
            await admin.close()
        await asyncio.wait_for(lost.wait(), timeout=10)
        # The server let go of the lock with the session: another process delivers from now on.
        async with asyncio.timeout(10), second.webhook_delivery_lock() as second_lost:
            assert not second_lost.is_set()


async def test_a_guild_lock_is_lost_with_its_session_and_taken_by_the_next_process(postgres_url: str) -> None:
    async with open_store(postgres_url) as holder, open_store(postgres_url) as other:
        lock = await holder.try_lock_guild(7)
        assert lock is not None and await other.try_lock_guild(7) is None
        await _end_sessions(postgres_url)  # the holder's lock session among them, as a restart would

        async def lost() -> bool:
            return not lock.held

        await eventually(lost, within=5)
        taken = await other.try_lock_guild(7)
        assert taken is not None and taken.held
        # The holder reconnects for its next lock, and finds this one taken.
        assert await holder.try_lock_guild(7) is None
        assert await holder.try_lock_guild(8) is not None


async def test_migration_4_adds_the_waiting_until_column_as_sqlites_step_4_does(postgres_url: str) -> None:
    assert MIGRATIONS[3] == "ALTER TABLE sync_states ADD COLUMN waiting_until timestamptz"
    async with open_store(postgres_url):
        pass
    db = await asyncpg.connect(postgres_url)
    try:
        kind = await db.fetchval(
            "SELECT data_type FROM information_schema.columns"
            " WHERE table_name = 'sync_states' AND column_name = 'waiting_until'"
        )
    finally:
        await db.close()
    assert kind == "timestamp with time zone"


async def test_a_nul_character_is_refused_as_data_not_as_a_database_that_is_down(postgres_url: str) -> None:
    # PostgreSQL's text cannot hold NUL: the member event writer sets such an event aside (and resyncs its
    # guild) instead of retrying it forever, as it would a StoreUnavailableError.
    async with open_store(postgres_url) as store:
        await store.save_link(a_link(1))
        now = datetime.now(UTC)
        bad = MemberChange(1, 7, MemberChangeKind.JOINED, a_member(7, nick="nul\x00nick"), now)
        with pytest.raises(asyncpg.DataError):
            await store.apply_member_changes([bad])
        assert store.recent_write_failure() is None
        good = MemberChange(1, 8, MemberChangeKind.JOINED, a_member(8, nick="fine"), now)
        assert await store.apply_member_changes([good]) == 1
        assert [(m.user_id, m.nick) for m in await store.list_members(1)] == [(8, "fine")]


async def test_the_pruned_mark_step_marks_the_events_a_database_pruned_before_it_as_pruned(
    postgres_url: str,
) -> None:
    async with PostgresStore.open(postgres_url) as store:
        for guild_id in (1, 2, 3):
            await store.save_link(a_link(guild_id))
    for pruned, expected in (("id <= 2", 2), ("TRUE", 3)):
        # As a database from before the step that pruned events by time: some of them, then all it had.
        db = await asyncpg.connect(postgres_url)
        try:
            # The steps after it go too (PostgreSQL's migrator applies the steps above the highest recorded).
            await db.execute(
                f"DELETE FROM events WHERE {pruned}; DROP TABLE feed_pruned;"
                + "".join(f" DROP TABLE {table};" for table in LATER_TABLES)
                + f" DELETE FROM schema_version WHERE version >= {FEED_PRUNED_STEP}"
            )
        finally:
            await db.close()
        async with PostgresStore.open(postgres_url) as store:
            assert await store.feed_pruned_up_to() == expected
