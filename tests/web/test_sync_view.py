"""The console's words for each sync phase: every phase has a label, and the waiting one counts down."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from store import LinkedGuild, SyncPhase, SyncState
from tests.store.records import a_link
from web.admin.guilds import PHASE_LABELS, sync_view


@pytest.mark.parametrize("phase", list(SyncPhase))
def test_every_sync_phase_has_a_label(phase: SyncPhase) -> None:
    active = phase is not SyncPhase.REMOVED
    view = sync_view(LinkedGuild(a_link(active=active), SyncState(1, phase, held_removals=3)))
    assert view["state"] == phase.value and view["label"] == PHASE_LABELS[phase.value]


def test_a_guild_waiting_for_discords_window_shows_the_seconds_left() -> None:
    until = datetime.now(UTC) + timedelta(seconds=22.4)
    view = sync_view(LinkedGuild(a_link(), SyncState(1, SyncPhase.WAITING, waiting_until=until)))
    assert view["label"] == "Waiting for Discord" and view["detail"] in (
        "member list in 23 s",
        "member list in 22 s",
    )


def test_a_held_guild_says_how_many_would_leave() -> None:
    view = sync_view(LinkedGuild(a_link(), SyncState(1, SyncPhase.HELD, held_removals=1234)))
    assert (view["held_removals"], view["detail"]) == (1234, "1,234 would leave")
