"""The web side's background tasks under the process's supervisor: one that keeps crashing is named by /readyz."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from metrics import Metrics
from store import PrunedEvents, open_store
from supervision import Supervisor
from tests.harness import eventually
from tests.web.serving import AUTH, app_settings, serving
from tests.web.test_metrics import samples


async def test_a_feed_pruner_that_keeps_crashing_makes_readyz_name_it_until_it_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    database_url = f"sqlite:///{tmp_path / 'guildlink.db'}"
    metrics = Metrics()
    supervisor = Supervisor(metrics, first_wait=0.01, max_wait=0.05, stable_after=0.5)
    broken = True
    async with open_store(database_url) as store:
        real_prune = store.prune_events

        async def prune_events(before: datetime) -> PrunedEvents:
            if broken:
                raise RuntimeError("a bug in the pruning")
            return await real_prune(before)

        monkeypatch.setattr(store, "prune_events", prune_events)
        async with (
            serving(app_settings(database_url), store, metrics=metrics, supervisor=supervisor) as served,
            aiohttp.ClientSession() as session,
        ):

            async def readyz() -> tuple[int, dict[str, Any]]:
                async with session.get(served.url + "/readyz") as response:
                    return response.status, await response.json()

            async def not_ready() -> dict[str, Any]:
                status, body = await readyz()
                return body if status == 503 else {}

            body = await eventually(not_ready)
            [failing] = body["failing_tasks"]
            assert failing["name"] == "feed-pruning" and failing["error"] == "RuntimeError"
            assert failing["crashes"] >= 3
            assert any("background task feed-pruning keeps failing" in r for r in body["reasons"])
            async with session.get(served.url + "/metrics", headers=AUTH) as response:
                assert response.status == 200
                counted = samples(await response.text())
            assert counted[("guildlink_task_crashes_total", (("task", "feed-pruning"),))] >= 3

            broken = False

            async def ready() -> dict[str, Any]:
                status, body = await readyz()
                return body if status == 200 else {}

            body = await eventually(ready)
            assert body["failing_tasks"] == [] and body["reasons"] == []
