"""The role-change worker against a scripted Discord, on each engine: applied, read back, retried, refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest

from bot.role_errors import NOT_TAKEN, UNLINKED, RoleWriteError
from bot.role_writer import MAX_ATTEMPTS, InvalidRequestBudget, RoleChangeWriter
from metrics import Metrics
from store import (
    EventType,
    RoleAction,
    RoleChange,
    RoleChangeRequest,
    RoleChangeStatus,
    Store,
    open_store,
)
from supervision import Supervisor
from tests.harness import eventually
from tests.store.records import a_link

GUILD = 7
ADD, REMOVE = RoleAction.ADD, RoleAction.REMOVE


class ScriptedDiscord:
    """Members' roles, the writes it was sent, and errors to answer next (per call, in order)."""

    def __init__(self) -> None:
        self.roles: dict[tuple[int, int], set[int]] = {}
        self.writes: list[tuple[int, str, int, int, str | None]] = []
        self.errors: list[RoleWriteError] = []
        self.silent = 0

    async def write(self, change: RoleChange) -> None:
        self.writes.append((change.id, change.action.value, change.user_id, change.role_id, change.reason))
        if self.errors:
            raise self.errors.pop(0)
        if self.silent:
            self.silent -= 1
            return
        held = self.roles.setdefault((change.guild_id, change.user_id), set())
        if change.action is ADD:
            held.add(change.role_id)
        else:
            held.discard(change.role_id)
        await asyncio.sleep(0)

    async def member_roles(self, guild_id: int, user_id: int) -> frozenset[int]:
        return frozenset(self.roles.get((guild_id, user_id), set()))


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    async with open_store(database_url) as opened:
        await opened.save_link(a_link(GUILD))
        yield opened


@pytest.fixture
def discord() -> ScriptedDiscord:
    return ScriptedDiscord()


def running_writer(
    store: Store, discord: ScriptedDiscord, metrics: Metrics | None = None
) -> AbstractAsyncContextManager[RoleChangeWriter]:
    @asynccontextmanager
    async def run() -> AsyncIterator[RoleChangeWriter]:
        m = metrics or Metrics()
        writer = RoleChangeWriter(
            store, discord, supervisor=Supervisor(m), metrics=m, poll_seconds=0.01, retry_waits=(0.0,) * 7
        )
        writer.start()
        try:
            yield writer
        finally:
            await writer.close()

    return run()


async def queue(
    store: Store, user_id: int, role_id: int = 500, action: RoleAction = ADD, *, reason: str | None = None
) -> int:
    change = await store.queue_role_change(RoleChangeRequest(GUILD, user_id, role_id, action, reason))
    assert change is not None
    return change.id


async def settled(store: Store, change_id: int, *, within: float = 5.0) -> RoleChange:
    """The change once it is applied or failed."""

    async def check() -> RoleChange | None:
        change = await store.get_role_change(change_id)
        assert change is not None
        return change if change.status is not RoleChangeStatus.PENDING else None

    change = await eventually(check, within=within)
    assert change is not None
    return change


async def test_a_change_is_written_with_its_reason_read_back_and_recorded_applied(
    store: Store, discord: ScriptedDiscord
) -> None:
    metrics = Metrics()
    change_id = await queue(store, 1, reason="won the raffle")
    async with running_writer(store, discord, metrics):
        done = await settled(store, change_id)
    assert done.status is RoleChangeStatus.APPLIED and done.attempts == 1 and done.error_code is None
    assert discord.writes == [(change_id, "add", 1, 500, "won the raffle")]
    event = (await store.list_events())[-1]
    assert event.type is EventType.ROLE_CHANGE_APPLIED and event.data["id"] == str(change_id)
    assert metrics.registry.get_sample_value("guildlink_role_changes_total", {"result": "applied"}) == 1


async def test_a_success_that_did_nothing_is_caught_by_the_read_back(
    store: Store, discord: ScriptedDiscord
) -> None:
    discord.silent = 1
    change_id = await queue(store, 1)
    async with running_writer(store, discord):
        done = await settled(store, change_id)
    assert (done.status, done.error_code, done.error_reason) == (RoleChangeStatus.FAILED, None, NOT_TAKEN)
    assert (await store.list_events())[-1].type is EventType.ROLE_CHANGE_FAILED


async def test_missing_permissions_fails_with_a_plain_reason_and_holds_that_role_only(
    store: Store, discord: ScriptedDiscord
) -> None:
    discord.errors = [RoleWriteError(403, 50013, "Missing Permissions")]
    refused = await queue(store, 1)
    async with running_writer(store, discord):
        done = await settled(store, refused)
        assert (done.status, done.error_code) == (RoleChangeStatus.FAILED, 50013)
        assert done.error_reason is not None
        assert done.error_reason.startswith("the bot's highest role must be above role 500")
        # Another change of that role fails without a request; another role is sent.
        same_role = await queue(store, 2)
        other_role = await queue(store, 2, role_id=501)
        held = await settled(store, same_role)
        applied = await settled(store, other_role)
    assert held.error_code == 50013 and held.error_reason and "not sent" in held.error_reason
    assert applied.status is RoleChangeStatus.APPLIED
    assert [write[0] for write in discord.writes] == [refused, other_role]


@pytest.mark.parametrize(
    ("code", "words"), [(10011, "knows no role 500"), (10007, "user 1 is not a member"), (None, "HTTP 400")]
)
async def test_a_4xx_is_final_and_never_sent_again(
    store: Store, discord: ScriptedDiscord, code: int | None, words: str
) -> None:
    discord.errors = [RoleWriteError(404 if code else 400, code, "Bad")]
    change_id = await queue(store, 1)
    async with running_writer(store, discord):
        done = await settled(store, change_id)
        # A later change of the same member goes on after the failed one.
        after = await queue(store, 1, role_id=501)
        await settled(store, after)
    assert done.status is RoleChangeStatus.FAILED and done.error_code == code and done.attempts == 1
    assert done.error_reason is not None and words in done.error_reason
    assert [write[0] for write in discord.writes] == [change_id, after]


async def test_5xx_and_429_are_retried_with_attempts_counted_then_applied(
    store: Store, discord: ScriptedDiscord
) -> None:
    metrics = Metrics()
    discord.errors = [
        RoleWriteError(502, None),
        RoleWriteError(429, None, retry_after=0.01),
        RoleWriteError(0, None),
    ]
    change_id = await queue(store, 1)
    async with running_writer(store, discord, metrics):
        done = await settled(store, change_id)
    assert (done.status, done.attempts) == (RoleChangeStatus.APPLIED, 4)
    assert metrics.registry.get_sample_value("guildlink_role_changes_total", {"result": "retried"}) == 3


async def test_a_change_answered_429_at_every_attempt_fails_saying_so(
    store: Store, discord: ScriptedDiscord
) -> None:
    discord.errors = [RoleWriteError(429, None, retry_after=0.0) for _ in range(MAX_ATTEMPTS)]
    change_id = await queue(store, 1)
    async with running_writer(store, discord):
        done = await settled(store, change_id, within=10)
    assert (done.status, done.error_code, done.attempts) == (RoleChangeStatus.FAILED, None, MAX_ATTEMPTS)
    assert done.error_reason == f"Discord kept answering HTTP 429; gave up after {MAX_ATTEMPTS} attempts"
    assert len(discord.writes) == MAX_ATTEMPTS


async def test_a_members_changes_are_written_in_the_order_they_were_queued(
    store: Store, discord: ScriptedDiscord
) -> None:
    ids = [
        await queue(store, 1, 500, ADD),
        await queue(store, 1, 500, REMOVE),
        await queue(store, 1, 501, ADD),
        await queue(store, 1, 500, ADD),
        await queue(store, 2, 500, ADD),
    ]
    async with running_writer(store, discord):
        for change_id in ids:
            await settled(store, change_id)
    assert [write[0] for write in discord.writes if write[2] == 1] == ids[:4]
    assert discord.roles[(GUILD, 1)] == {500, 501}


async def test_two_workers_on_one_database_never_write_one_change_twice(
    database_url: str, store: Store, discord: ScriptedDiscord
) -> None:
    ids = [await queue(store, user_id, role_id) for user_id in range(1, 21) for role_id in (500, 501, 502)]
    # A second store is a second process's pool on PostgreSQL (on SQLite: a second connection to the file).
    async with (
        open_store(database_url) as other_store,
        running_writer(store, discord),
        running_writer(other_store, discord),
    ):
        for change_id in ids:
            await settled(store, change_id, within=20)
    written = [write[0] for write in discord.writes]
    assert sorted(written) == ids
    for user_id in range(1, 21):
        assert [w[3] for w in discord.writes if w[2] == user_id] == [500, 501, 502]


async def test_past_the_fleets_invalid_request_budget_writes_pause_until_the_window_clears(
    database_url: str, store: Store, discord: ScriptedDiscord
) -> None:
    metrics = Metrics()
    budget = InvalidRequestBudget(limit=3, window=1.0, recheck=0.05, check_every=0.0)
    # Two answered to another process, one to this one: the budget is the fleet's.
    async with open_store(database_url) as other_process:
        await other_process.note_invalid_request(window=budget.window)
        await other_process.note_invalid_request(window=budget.window)
    # Missing Permissions for role 500 holds that role only: the change of role 501 is sent once writes go on.
    discord.errors = [RoleWriteError(403, 50013, "Missing Permissions")]
    refused = await queue(store, 1)
    writer = RoleChangeWriter(
        store, discord, supervisor=Supervisor(metrics), metrics=metrics, poll_seconds=0.01, budget=budget
    )
    writer.start()
    try:
        await settled(store, refused)
        waiting = await queue(store, 2, role_id=501)

        async def paused() -> bool:
            return metrics.registry.get_sample_value("guildlink_role_writes_paused") == 1

        await eventually(paused)
        assert [write[0] for write in discord.writes] == [refused]
        # A second later the three have left the window: writes go on.
        assert (await settled(store, waiting)).status is RoleChangeStatus.APPLIED
        assert metrics.registry.get_sample_value("guildlink_role_writes_paused") == 0
    finally:
        await writer.close()


async def test_a_change_whose_guild_was_unlinked_before_its_turn_fails_without_a_request(
    store: Store, discord: ScriptedDiscord
) -> None:
    change_id = await queue(store, 1)
    await store.deactivate_link(GUILD)
    async with running_writer(store, discord):
        done = await settled(store, change_id)
    assert (done.status, done.error_code, done.error_reason) == (RoleChangeStatus.FAILED, None, UNLINKED)
    assert discord.writes == []
