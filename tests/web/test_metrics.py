"""/metrics: Prometheus' text format, counting links, syncs and callbacks; off or behind the token unless opened."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from sandbox import Sandbox, SandboxOptions
from tests.harness import world


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_a_link_and_its_sync_are_counted(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=40))
    async with world(sandbox, tmp_path) as w:
        await w.link_and_sync(sandbox.managed_guilds()[0].id)
        token = w.running.settings.api_token
        assert token is not None
        session, url = w.browser.session, w.running.web_url + "/metrics"
        async with session.get(url) as response:
            assert response.status == 401
        async with session.get(url, headers={"Authorization": f"Bearer {token.reveal()}"}) as response:
            assert response.status == 200 and response.content_type == "text/plain"
            found = samples(await response.text())
    assert found[("guildlink_callbacks_total", (("outcome", "linked"),))] == 1
    assert found[("guildlink_syncs_total", (("result", "synced"),))] == 1
    assert found[("guildlink_sync_duration_seconds_count", ())] == 1
    assert found[("guildlink_links", (("state", "synced"),))] == 1
    assert found[("guildlink_members_stored", ())] == 41
    assert found[("guildlink_shard_ready", (("shard", "0"),))] == 1
    assert found[("guildlink_gateway_sessions_total", (("kind", "identify"), ("shard", "0")))] == 1
    assert ("guildlink_gateway_rate_limited_total", ()) in found


async def test_metrics_can_be_off_or_open(make_sandbox, tmp_path: Path) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=5))
    for setting, status in (("off", 404), ("open", 200)):
        async with (
            world(sandbox, tmp_path / setting, env={"METRICS": setting}) as w,
            w.browser.session.get(w.running.web_url + "/metrics") as response,
        ):
            assert response.status == status
