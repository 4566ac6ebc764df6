"""With a world file the sandbox remembers, across restarts, where its bot is and what happened to members."""

from __future__ import annotations

import json
from pathlib import Path

from sandbox import Sandbox, SandboxOptions


def test_a_restarted_sandbox_keeps_its_bots_guilds_and_the_members_changed_through_its_controls(
    tmp_path: Path,
) -> None:
    options = SandboxOptions(guilds=2, members=20, world_file=tmp_path / "world.json")
    before = Sandbox(options)
    first, second = (g.id for g in before.managed_guilds()[:2])
    before.add_bot(first, permissions=8)
    newcomer = before.add_member(first, username="newcomer")
    generated = [int(m["user"]["id"]) for m in before.members(first)]
    before.update_member(first, generated[0], nick="renamed", roles=[])
    before.remove_member(first, generated[1])
    before.add_bot(second)
    before.kick_bot(second)

    after = Sandbox(options)

    assert after.bot_guild_ids() == {first}
    assert after.members(first) == before.members(first)
    assert after.guild(first).member_count == 20 + 1  # a newcomer and the bot joined, one left
    members = {int(m["user"]["id"]): m for m in after.members(first)}
    assert members[newcomer]["user"]["username"] == "newcomer"
    assert members[generated[0]]["nick"] == "renamed" and generated[1] not in members
    assert after.members(second) == Sandbox(SandboxOptions(guilds=2, members=20)).members(second)


def test_without_a_world_file_every_start_is_fresh(tmp_path: Path) -> None:
    sandbox = Sandbox(SandboxOptions(guilds=1, members=5))
    sandbox.add_bot(sandbox.managed_guilds()[0].id)
    assert Sandbox(SandboxOptions(guilds=1, members=5)).bot_guild_ids() == set()
    assert list(tmp_path.iterdir()) == []


def test_a_world_file_of_another_seed_or_unreadable_is_set_aside(tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    made = Sandbox(SandboxOptions(guilds=1, members=5, seed=1, world_file=path))
    made.add_bot(made.managed_guilds()[0].id)
    assert Sandbox(SandboxOptions(guilds=1, members=5, seed=2, world_file=path)).bot_guild_ids() == set()
    path.write_text("{not json")
    assert Sandbox(SandboxOptions(guilds=1, members=5, seed=1, world_file=path)).bot_guild_ids() == set()


def test_the_world_file_holds_changes_only(tmp_path: Path) -> None:
    path = tmp_path / "world.json"
    sandbox = Sandbox(SandboxOptions(guilds=3, members=100_000, world_file=path))
    sandbox.add_bot(sandbox.managed_guilds()[0].id)
    saved = json.loads(path.read_text())
    assert len(saved["guilds"]) == 1 and path.stat().st_size < 10_000
