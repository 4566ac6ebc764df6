"""The sandbox's world across restarts: which guilds the bot is in, and members added, changed or removed.

Generated members come back from the seed; only what happened since is kept, in one small JSON file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .world import Guild, Member, Role, User, World

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def save(world: World, path: Path) -> None:
    """Write what differs from the seeded world; atomically, so a crash leaves the old file or the new."""
    guilds = {
        str(guild.id): _guild(guild)
        for guild in world.guilds.values()
        if guild.id in world.bot_guilds or guild.changed or guild.removed or len(guild.added) > 1
    }
    data = {
        "version": FORMAT_VERSION,
        "seed": world.seed,
        "bot_guilds": sorted(str(gid) for gid in world.bot_guilds),
        "guilds": guilds,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
    os.replace(partial, path)


def load(world: World, path: Path) -> bool:
    """Bring back a saved world made from the same seed; False (the world untouched) if there is none."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return False
    except (OSError, ValueError) as exc:
        log.warning("sandbox.saved_world_unreadable path=%s error=%s: starting afresh", path, exc)
        return False
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION or data.get("seed") != world.seed:
        log.warning("sandbox.saved_world_ignored path=%s: made for another seed or format", path)
        return False
    # Guilds missing from this world (fewer --guilds than last time) are skipped.
    for raw_id, saved in data.get("guilds", {}).items():
        guild = world.guilds.get(int(raw_id))
        if guild is not None:
            _restore_guild(guild, saved)
    world.bot_guilds = {int(gid) for gid in data.get("bot_guilds", ()) if int(gid) in world.guilds}
    log.info("sandbox.world_restored path=%s bot_guilds=%d", path, len(world.bot_guilds))
    return True


def _guild(guild: Guild) -> dict[str, Any]:
    return {
        "roles": [asdict(role) for role in guild.roles],
        "members": [asdict(m) for m in (*guild.added.values(), *guild.changed.values())],
        "removed": sorted(guild.removed),
    }


def _restore_guild(guild: Guild, saved: dict[str, Any]) -> None:
    guild.roles = [Role(**role) for role in saved["roles"]]
    for raw in saved["members"]:
        # add() files a generated id under `changed` and any other under `added`, whatever --members is now.
        guild.add(Member(**{**raw, "user": User(**raw["user"]), "roles": tuple(raw["roles"])}))
    guild.removed.update(saved["removed"])
