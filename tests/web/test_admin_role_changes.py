"""The console's server page lists the server's latest role changes, with how each one ended."""

from __future__ import annotations

import re
from pathlib import Path

from sandbox import Sandbox, SandboxOptions
from store import RoleAction, RoleChangeRequest, RoleChangeStatus
from tests.harness import eventually, world
from tests.web.test_admin_console import get, sign_in


async def test_a_servers_page_shows_its_latest_role_changes_newest_first(
    make_sandbox, tmp_path: Path
) -> None:
    sandbox: Sandbox = await make_sandbox(SandboxOptions(guilds=1, members=20))
    async with world(sandbox, tmp_path) as w:
        guild = sandbox.managed_guilds()[0]
        await w.link_and_sync(guild.id)
        sandbox.set_bot_permissions(guild.id, manage_roles=True)
        await sign_in(w.browser)
        status, page, _ = await get(w.browser, f"/admin/guilds/{guild.id}")
        assert status == 200 and 'id="no-role-changes"' in page
        store = w.running.store
        user_id = int(sandbox.members(guild.id)[-1]["user"]["id"])
        members_role = next(r.id for r in sandbox.world.guilds[guild.id].roles if r.name == "Members")
        ids = []
        for role, reason in ((members_role, "<b>paid</b>"), (members_role + 999, None)):
            change = await store.queue_role_change(
                RoleChangeRequest(guild.id, user_id, role, RoleAction.ADD, reason)
            )
            assert change is not None
            ids.append(change.id)

        async def settled() -> bool:
            changes = [await store.get_role_change(change_id) for change_id in ids]
            return all(c is not None and c.status is not RoleChangeStatus.PENDING for c in changes)

        await eventually(settled, within=10)
        status, page, _ = await get(w.browser, f"/admin/guilds/{guild.id}")
        assert status == 200
        shown = re.findall(r'data-change="(\d+)" data-status="(\w+)"', page)
        assert shown == [(str(ids[1]), "failed"), (str(ids[0]), "applied")]
        assert f"10011: Discord knows no role {members_role + 999} in this guild" in page
        assert "&lt;b&gt;paid&lt;/b&gt;" in page and "<b>paid</b>" not in page
