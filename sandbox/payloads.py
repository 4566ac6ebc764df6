"""Discord-shaped JSON objects built from the world's records (snowflakes as strings)."""

from __future__ import annotations

import json
import logging
from typing import Any

from .world import Guild, Member, Role, User, World, iso_time, snowflake_ms

log = logging.getLogger(__name__)

JSON = dict[str, Any]


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON, as Discord sends it."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def user(u: User) -> JSON:
    """A user object (UserResponse)."""
    data: JSON = {
        "id": str(u.id),
        "username": u.username,
        "avatar": u.avatar,
        "discriminator": u.discriminator,
        "public_flags": 0,
        "flags": 0,
        "banner": None,
        "accent_color": None,
        "global_name": u.global_name,
        "avatar_decoration_data": None,
        "collectibles": None,
        "primary_guild": None,
    }
    if u.bot:
        data["bot"] = True
    return data


def private_user(u: User, *, email: bool = False) -> JSON:
    """The user object /users/@me returns (UserPIIResponse)."""
    data = user(u)
    data.update({"mfa_enabled": False, "locale": "en-US", "premium_type": 0, "verified": True})
    if email or u.bot:
        data["email"] = None if u.bot else f"{u.username}@sandbox.invalid"
    return data


def member(m: Member, guild_id: int | None = None) -> JSON:
    """A guild member object (GuildMemberResponse); with guild_id for gateway member events."""
    data: JSON = {
        "avatar": m.avatar,
        "banner": None,
        "communication_disabled_until": None,
        "flags": 0,
        "joined_at": m.joined_at,
        "nick": m.nick,
        "pending": False,
        "premium_since": m.premium_since,
        "roles": [str(r) for r in m.roles],
        "user": user(m.user),
        "mute": False,
        "deaf": False,
    }
    if guild_id is not None:
        data["guild_id"] = str(guild_id)
    return data


def role(r: Role) -> JSON:
    """A role object (GuildRoleResponse)."""
    data: JSON = {
        "id": str(r.id),
        "name": r.name,
        "permissions": str(r.permissions),
        "position": r.position,
        "color": r.color,
        "colors": {"primary_color": r.color, "secondary_color": None, "tertiary_color": None},
        "hoist": r.hoist,
        "managed": r.managed,
        "mentionable": False,
        "icon": None,
        "unicode_emoji": None,
        "flags": 0,
    }
    if r.bot_id is not None:
        data["tags"] = {"bot_id": str(r.bot_id)}
    return data


def guild(g: Guild, *, with_counts: bool = False) -> JSON:
    """A guild object (GuildResponse; GuildWithCountsResponse with counts)."""
    data: JSON = {
        "id": str(g.id),
        "name": g.name,
        "icon": None,
        "icon_hash": None,
        "description": None,
        "home_header": None,
        "splash": None,
        "discovery_splash": None,
        "features": [],
        "banner": None,
        "owner_id": str(g.owner_id),
        "application_id": None,
        "region": "deprecated",
        "afk_channel_id": None,
        "afk_timeout": 300,
        "system_channel_id": str(text_channel_id(g)),
        "system_channel_flags": 0,
        "widget_enabled": False,
        "widget_channel_id": None,
        "verification_level": 1,
        "roles": [role(r) for r in g.roles],
        "default_message_notifications": 1,
        "mfa_level": 0,
        "explicit_content_filter": 0,
        "max_presences": None,
        "max_members": 25_000_000,
        "max_stage_video_channel_users": 50,
        "max_video_channel_users": 25,
        "vanity_url_code": None,
        "premium_tier": 0,
        "premium_subscription_count": 0,
        "preferred_locale": "en-US",
        "rules_channel_id": None,
        "safety_alerts_channel_id": None,
        "public_updates_channel_id": None,
        "premium_progress_bar_enabled": False,
        "nsfw": False,
        "nsfw_level": 0,
        "emojis": [],
        "stickers": [],
        "incidents_data": None,
    }
    if with_counts:
        data["approximate_member_count"] = g.member_count
        data["approximate_presence_count"] = 0
    return data


def text_channel_id(g: Guild) -> int:
    """The id of the guild's one text channel (#general)."""
    return g.id + 10


def channels(g: Guild) -> list[JSON]:
    """The guild's channels, as GUILD_CREATE carries them."""
    return [
        {
            "id": str(text_channel_id(g)),
            "type": 0,
            "guild_id": str(g.id),
            "name": "general",
            "position": 0,
            "permission_overwrites": [],
            "parent_id": None,
            "nsfw": False,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
    ]


def my_guild(world: World, g: Guild, me: User, *, with_counts: bool = False) -> JSON:
    """A partial guild as /users/@me/guilds lists it (MyGuildResponse)."""
    m = g.get_member(me.id)
    permissions = g.permissions_of(m) if m is not None else 0
    data: JSON = {
        "id": str(g.id),
        "name": g.name,
        "icon": None,
        "banner": None,
        "owner": g.owner_id == me.id,
        "permissions": str(permissions),
        "features": [],
    }
    if with_counts:
        data["approximate_member_count"] = g.member_count
        data["approximate_presence_count"] = 0
    return data


def gateway_guild(world: World, g: Guild, *, large_threshold: int, join: bool) -> JSON:
    """The guild object of a GUILD_CREATE: members only when the guild is small."""
    data = guild(g)
    count = g.member_count
    large = count > large_threshold
    if large:
        me = g.get_member(world.bot_user.id)
        members = [member(me)] if me is not None else []
    else:
        members = [member(m) for m in g.iter_members()]
    bot_member = g.get_member(world.bot_user.id)
    joined = bot_member.joined_at if bot_member is not None else iso_time(snowflake_ms(g.id))
    data.update(
        {
            "joined_at": joined,
            "large": large,
            "member_count": count,
            "members": members,
            "channels": channels(g),
            "threads": [],
            "presences": [],
            "voice_states": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "lazy": True,
            "application_command_counts": {},
        }
    )
    if not join:
        # Only a guild joined while connected arrives without the key (discord.py's on_guild_join).
        data["unavailable"] = False
    return data


def application(
    world: World, redirect_uris: list[str], *, requires_code_grant: bool, members_intent: bool
) -> JSON:
    """The application object /oauth2/applications/@me returns (PrivateApplicationResponse)."""
    return {
        "id": str(world.application_id),
        "name": world.application_name,
        "icon": None,
        "description": "A local stand-in for a Discord application.",
        "summary": "",
        "type": None,
        "bot": user(world.bot_user),
        "bot_public": True,
        "bot_require_code_grant": requires_code_grant,
        "verify_key": world.verify_key,
        # GATEWAY_GUILD_MEMBERS_LIMITED: the portal switch an unverified app has for the members intent.
        "flags": (1 << 15) if members_intent else 0,
        "flags_new": str((1 << 15) if members_intent else 0),
        "redirect_uris": list(redirect_uris),
        "interactions_endpoint_url": None,
        "role_connections_verification_url": None,
        "owner": user(world.admin),
        "approximate_guild_count": len(world.bot_guilds),
        "approximate_user_install_count": 0,
        "approximate_user_authorization_count": 0,
        "explicit_content_filter": 0,
        "team": None,
        "eligible_oauth2_scopes": ["identify", "guilds", "bot", "applications.commands"],
        "rpc_origins": [],
        "tags": [],
        "hook": True,
        "integration_types_config": {"0": {}, "1": {}},
    }


def error(code: int, message: str, errors: JSON | None = None) -> JSON:
    """Discord's REST error body."""
    data: JSON = {"message": message, "code": code}
    if errors is not None:
        data["errors"] = errors
    return data


# Discord's own soundboard sounds, the same in every guild: (id, name, emoji).
DEFAULT_SOUNDS = (
    (1, "quack", "🦆"),
    (2, "airhorn", "🔊"),
    (3, "cricket", "🦗"),
    (4, "golf clap", "⛳"),
    (5, "sad horn", "🎺"),
    (7, "ba dum tss", "🥁"),
)


def default_sounds() -> list[JSON]:
    """GET /soundboard-default-sounds: Discord's sounds, without the guild_id and user of a guild's own."""
    return [
        {
            "name": name,
            "sound_id": str(sound_id),
            "volume": 1.0,
            "emoji_id": None,
            "emoji_name": emoji,
            "available": True,
        }
        for sound_id, name, emoji in DEFAULT_SOUNDS
    ]
