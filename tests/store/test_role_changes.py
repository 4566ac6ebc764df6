"""The role-change queue, on each engine: queued durably with its event, claimed once, in order per member."""

from __future__ import annotations

import asyncio

from store import (
    EventType,
    RoleAction,
    RoleChangeOutcome,
    RoleChangeRequest,
    RoleChangeStatus,
    Store,
    open_store,
)
from tests.harness import eventually
from tests.store.records import a_link

ADD, REMOVE = RoleAction.ADD, RoleAction.REMOVE
APPLIED = RoleChangeOutcome(RoleChangeStatus.APPLIED)
LEASE = 60.0


def asked(
    user_id: int, role_id: int = 500, action: RoleAction = ADD, guild_id: int = 7, reason: str | None = None
) -> RoleChangeRequest:
    return RoleChangeRequest(guild_id, user_id, role_id, action, reason)


async def queued(store: Store, request: RoleChangeRequest) -> int:
    change = await store.queue_role_change(request)
    assert change is not None
    return change.id


async def test_a_change_is_queued_pending_with_its_event_only_for_a_linked_guild(store: Store) -> None:
    assert await store.queue_role_change(asked(1)) is None
    await store.save_link(a_link(7))
    before = (await store.list_events())[-1].id
    change = await store.queue_role_change(asked(1, reason="won the raffle"))
    assert change is not None
    assert (change.status, change.action, change.reason, change.attempts) == (
        RoleChangeStatus.PENDING,
        ADD,
        "won the raffle",
        0,
    )
    assert await store.get_role_change(change.id) == change
    [event] = await store.list_events(after=before)
    assert event.type is EventType.ROLE_CHANGE_QUEUED and event.guild_id == 7
    assert event.data == {
        "id": str(change.id),
        "user_id": "1",
        "role_id": "500",
        "action": "add",
        "status": "pending",
        "error": None,
    }
    await store.deactivate_link(7)
    assert await store.queue_role_change(asked(2)) is None
    assert await store.get_role_change(change.id + 1000) is None


async def test_repeating_a_pending_request_returns_the_same_change_and_a_different_one_queues_anew(
    store: Store,
) -> None:
    await store.save_link(a_link(7))
    first = await queued(store, asked(1))
    assert await queued(store, asked(1)) == first
    removal = await queued(store, asked(1, action=REMOVE))
    assert removal != first
    # The latest pending change of the role is a removal: adding again is a new change, after it.
    again = await queued(store, asked(1))
    assert again not in (first, removal) and again > removal
    assert await queued(store, asked(1, role_id=501)) not in (first, removal, again)
    events = await store.list_events()
    assert sum(e.type is EventType.ROLE_CHANGE_QUEUED for e in events) == 4


async def test_a_finished_change_is_not_returned_for_a_repeated_request(store: Store) -> None:
    await store.save_link(a_link(7))
    first = await queued(store, asked(1))
    [claimed] = await store.claim_role_changes("worker", lease=LEASE, limit=10)
    assert await store.finish_role_change(claimed.id, "worker", APPLIED) is not None
    assert await queued(store, asked(1)) != first


async def test_a_members_changes_are_claimed_one_at_a_time_in_order(store: Store) -> None:
    await store.save_link(a_link(7))
    a1 = await queued(store, asked(1, role_id=500))
    a2 = await queued(store, asked(1, role_id=501))
    b1 = await queued(store, asked(2, role_id=500))
    other_guild_same_user = await queued(store, asked(1, guild_id=7, role_id=502, action=REMOVE))
    claimed = await store.claim_role_changes("worker", lease=LEASE, limit=10)
    assert [c.id for c in claimed] == [a1, b1]
    # Held by "worker": nobody else claims them, and the member's later ones stay behind.
    assert await store.claim_role_changes("other", lease=LEASE, limit=10) == []
    assert await store.finish_role_change(a1, "worker", APPLIED) is not None
    [next_one] = await store.claim_role_changes("other", lease=LEASE, limit=10)
    assert next_one.id == a2
    failed = RoleChangeOutcome(RoleChangeStatus.FAILED, 10011, "Discord knows no role 501 in this guild")
    change = await store.finish_role_change(a2, "other", failed)
    assert change is not None and (change.status, change.error_code, change.attempts) == (
        RoleChangeStatus.FAILED,
        10011,
        1,
    )
    [last] = await store.claim_role_changes("other", lease=LEASE, limit=10)
    assert last.id == other_guild_same_user


async def test_the_outcome_is_written_with_its_event_only_by_the_changes_holder(store: Store) -> None:
    await store.save_link(a_link(7))
    change_id = await queued(store, asked(1))
    assert await store.finish_role_change(change_id, "nobody", APPLIED) is None  # never claimed
    await store.claim_role_changes("worker", lease=LEASE, limit=10)
    before = (await store.list_events())[-1].id
    assert await store.finish_role_change(change_id, "thief", APPLIED) is None
    assert await store.list_events(after=before) == []
    done = await store.finish_role_change(change_id, "worker", APPLIED)
    assert done is not None and done.status is RoleChangeStatus.APPLIED and done.applied_at is not None
    [event] = await store.list_events(after=before)
    assert event.type is EventType.ROLE_CHANGE_APPLIED and event.data["status"] == "applied"
    assert event.data["error"] is None
    assert await store.finish_role_change(change_id, "worker", APPLIED) is None  # once
    failed_id = await queued(store, asked(2))
    await store.claim_role_changes("worker", lease=LEASE, limit=10)
    reason = "the bot's highest role must be above role 500"
    await store.finish_role_change(
        failed_id, "worker", RoleChangeOutcome(RoleChangeStatus.FAILED, 50013, reason)
    )
    event = (await store.list_events())[-1]
    assert event.type is EventType.ROLE_CHANGE_FAILED
    assert event.data["error"] == {"code": 50013, "reason": reason}


async def test_a_change_whose_holder_died_is_claimed_again_after_its_lease(store: Store) -> None:
    await store.save_link(a_link(7))
    change_id = await queued(store, asked(1))
    [held] = await store.claim_role_changes("dead-process", lease=0.2, limit=10)
    assert held.id == change_id
    assert await store.claim_role_changes("survivor", lease=LEASE, limit=10) == []
    taken = await eventually(lambda: store.claim_role_changes("survivor", lease=LEASE, limit=10))
    assert [c.id for c in taken] == [change_id]
    # The dead holder's late answer is not recorded: the survivor holds it now.
    assert await store.finish_role_change(change_id, "dead-process", APPLIED) is None
    assert await store.finish_role_change(change_id, "survivor", APPLIED) is not None


async def test_a_retried_change_stays_pending_counts_its_attempt_and_waits(store: Store) -> None:
    await store.save_link(a_link(7))
    change_id = await queued(store, asked(1))
    later = await queued(store, asked(1, role_id=501))
    await store.claim_role_changes("worker", lease=LEASE, limit=10)
    assert not await store.retry_role_change(change_id, "other", after=0)
    assert await store.retry_role_change(change_id, "worker", after=3600)
    change = await store.get_role_change(change_id)
    assert change is not None and (change.status, change.attempts) == (RoleChangeStatus.PENDING, 1)
    # Not due for an hour, and the member's later change waits behind it.
    assert await store.claim_role_changes("worker", lease=LEASE, limit=10) == []
    assert later > change_id
    change_id_now = await queued(store, asked(2))
    await store.claim_role_changes("worker", lease=LEASE, limit=10)
    assert await store.retry_role_change(change_id_now, "worker", after=0)
    [again] = await store.claim_role_changes("worker", lease=LEASE, limit=10)
    assert again.id == change_id_now and again.attempts == 1


async def test_concurrent_claims_never_hand_out_one_change_twice(store: Store) -> None:
    await store.save_link(a_link(7))
    ids = {await queued(store, asked(user_id)) for user_id in range(1, 41)}
    claims = await asyncio.gather(
        *(store.claim_role_changes(f"worker-{n}", lease=LEASE, limit=7) for n in range(8))
    )
    handed_out = [change.id for claim in claims for change in claim]
    assert len(handed_out) == len(set(handed_out)) and set(handed_out) <= ids
    rest = await store.claim_role_changes("late", lease=LEASE, limit=100)
    assert set(handed_out) | {c.id for c in rest} == ids


async def test_a_guilds_changes_are_listed_newest_first(store: Store) -> None:
    await store.save_link(a_link(7))
    await store.save_link(a_link(8))
    ids = [await queued(store, asked(user_id)) for user_id in range(1, 5)]
    await queued(store, asked(1, guild_id=8))
    assert [c.id for c in await store.list_role_changes(7, limit=3)] == ids[::-1][:3]


async def test_invalid_requests_are_counted_for_every_process_within_their_window(
    store: Store, database_url: str
) -> None:
    assert await store.count_invalid_requests(window=600) == 0
    async with open_store(database_url) as other_process:
        for _ in range(3):
            await store.note_invalid_request(window=600)
        await other_process.note_invalid_request(window=600)
        assert (
            await store.count_invalid_requests(window=600)
            == 4
            == await other_process.count_invalid_requests(window=600)
        )

    async def forgotten() -> bool:
        return await store.count_invalid_requests(window=0.2) == 0

    await eventually(forgotten)
    assert await store.count_invalid_requests(window=600) == 4
    # A note prunes what is past its window.
    await store.note_invalid_request(window=0.2)
    assert await store.count_invalid_requests(window=600) == 1
