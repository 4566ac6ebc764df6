"""IDENTIFY pacing across processes: the bucket's slots are booked in the database."""

from __future__ import annotations

import asyncio
import itertools
import time

from bot.identify import IdentifyPacer
from store import open_store


async def test_pacers_of_two_processes_take_turns_per_bucket(database_url: str) -> None:
    async with open_store(database_url) as first_store, open_store(database_url) as second_store:
        first = IdentifyPacer(interval=0.3, max_concurrency=2, slots=first_store)
        second = IdentifyPacer(interval=0.3, max_concurrency=2, slots=second_store)
        turns: list[tuple[int, float]] = []

        async def identify(pacer: IdentifyPacer, shard_id: int) -> None:
            await pacer.wait_turn(shard_id)
            turns.append((pacer.bucket(shard_id), time.monotonic()))

        # Shards 0 and 2 share bucket 0, 1 and 3 bucket 1; each process runs one of each.
        await asyncio.gather(identify(first, 0), identify(second, 2), identify(first, 1), identify(second, 3))
    for bucket in (0, 1):
        times = sorted(at for b, at in turns if b == bucket)
        assert len(times) == 2 and all(
            later - earlier >= 0.28 for earlier, later in itertools.pairwise(times)
        )
    first_of_each = sorted(min(at for b, at in turns if b == bucket) for bucket in (0, 1))
    assert first_of_each[1] - first_of_each[0] < 0.2  # buckets do not wait for each other


async def test_a_restarted_process_waits_for_the_slot_its_predecessor_booked(database_url: str) -> None:
    async with open_store(database_url) as store:
        await IdentifyPacer(interval=0.5, slots=store).wait_turn(0)
    async with open_store(database_url) as store:
        started = time.monotonic()
        await IdentifyPacer(interval=0.5, slots=store).wait_turn(0)
    assert time.monotonic() - started >= 0.4
